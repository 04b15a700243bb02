//! ns per packet with BPF_PROG_TEST_RUN (repeat 1M) for generated
//! policies of 10 / 1,000 / 100,000 rules, next to an empty program and a
//! parse + one-hash-lookup program built with the same assembler, in the
//! same run. Ignored by default (it measures, it does not check):
//!
//! ```text
//! cargo test --release -p weir-runtime --test ebpf_bench -- --ignored --nocapture
//! ```

mod ebpf_common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use aya::programs::SchedClassifier;
use aya::Ebpf;
use ebpf_common::*;
use weir_compiler::ebpf::codegen::Mode;
use weir_compiler::ebpf::*;
use weir_compiler::graph;
use weir_compiler::interp::Packet;
use weir_compiler::model::*;

const REPEAT: u32 = 1_000_000;

fn time(p: &SchedClassifier, frame: &[u8]) -> (f64, u32) {
    let mut out = vec![0u8; frame.len() + 256];
    let r = weir_runtime::ebpf::test_run::repeat(p, frame, &mut out, REPEAT).unwrap();
    (r.duration.as_nanos() as f64, r.return_value)
}

fn baseline(name: &str, code: Assembled, maps: Vec<MapDef>, frame: &[u8]) -> f64 {
    let bytes = write_object(&ObjectDef {
        programs: vec![ProgramDef {
            name: name.into(),
            section: "classifier".into(),
            code,
        }],
        maps,
        license: "GPL".into(),
    })
    .unwrap();
    let mut ebpf = Ebpf::load(&bytes).unwrap();
    let p: &mut SchedClassifier = ebpf.program_mut(name).unwrap().try_into().unwrap();
    p.load().unwrap();
    time(p, frame).0
}

fn empty() -> Assembled {
    let mut a = Asm::new();
    a.push(Op::mov64(Reg::R0, 0));
    a.push(Op::Exit);
    a.assemble().unwrap()
}

/// Parse Ethernet/IPv4 bounds, look the destination up in a hash map.
fn one_lookup() -> Assembled {
    let mut a = Asm::new();
    let out = a.new_label("out");
    a.push(Op::mov64(Reg::R6, Reg::R1));
    a.push(Op::load(Size::U32, Reg::R2, Reg::R6, 76));
    a.push(Op::load(Size::U32, Reg::R3, Reg::R6, 80));
    a.push(Op::mov64(Reg::R4, Reg::R2));
    a.push(Op::alu64(AluOp::Add, Reg::R4, 34));
    a.push(Op::jmp(JmpCond::Gt, Reg::R4, Reg::R3, out));
    a.push(Op::load(Size::U16, Reg::R4, Reg::R2, 12));
    a.push(Op::jmp(JmpCond::Ne, Reg::R4, 0x0008, out));
    a.push(Op::load(Size::U32, Reg::R4, Reg::R2, 30));
    a.push(Op::store(Size::U32, Reg::R10, -4, Reg::R4));
    a.push(Op::mov64(Reg::R2, Reg::R10));
    a.push(Op::alu64(AluOp::Add, Reg::R2, -4));
    a.push(Op::ld_map_fd(Reg::R1, "verdicts"));
    a.push(Op::Call {
        helper: helper::MAP_LOOKUP_ELEM,
    });
    a.push(Op::jmp(JmpCond::Eq, Reg::R0, 0, out));
    a.push(Op::load(Size::U32, Reg::R0, Reg::R0, 0));
    a.push(Op::Exit);
    a.bind(out);
    a.push(Op::mov64(Reg::R0, 0));
    a.push(Op::Exit);
    a.assemble().unwrap()
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d))
}

/// `subjects` server endpoints, each selected by its own policy with
/// `rules / subjects` port rules (allow, every 7th a deny) from the
/// client selector, then `deny from any`.
fn model(rules: usize) -> Model {
    let base = Model::default();
    let subjects = rules.div_ceil(1000).max(1);
    let per = rules / subjects;
    let mut m = base;
    m.tiers = vec![Tier {
        name: "default".into(),
        order: 1000,
        audit: false,
        default_pass: false,
        span: None,
    }];
    let mut client_labels = BTreeMap::new();
    client_labels.insert("app".to_string(), "client".to_string());
    m.endpoints.push(Endpoint {
        name: "client".into(),
        labels: client_labels.into(),
        addrs: vec![v4(10, 1, 0, 10)],
        ready: true,
        span: None,
    });
    for s in 0..subjects {
        let mut labels = BTreeMap::new();
        labels.insert("app".to_string(), format!("svc{s}"));
        m.endpoints.push(Endpoint {
            name: format!("svc{s:04}"),
            labels: labels.clone().into(),
            addrs: vec![v4(10, 2, (s / 250) as u8, (s % 250) as u8 + 1)],
            ready: true,
            span: None,
        });
        let mut ingress = Vec::new();
        for r in 0..per {
            ingress.push(Rule {
                action: if r % 7 == 3 {
                    Action::Deny
                } else {
                    Action::Allow
                },
                proto: ProtoMatch::Ports {
                    proto: Proto::Tcp,
                    ports: vec![PortRange {
                        lo: 1 + r as u16 * 2,
                        hi: 1 + r as u16 * 2,
                    }],
                },
                peer: PeerMatch::Selector(Sel::Eq("app".into(), "client".into())),
                log: false,
                span: Default::default(),
            });
        }
        ingress.push(Rule {
            action: Action::Deny,
            proto: ProtoMatch::Any,
            peer: PeerMatch::Any,
            log: false,
            span: Default::default(),
        });
        m.policies.push(Policy {
            name: format!("p{s:04}"),
            tier: 0,
            priority: 1000,
            applies_to: Sel::Eq("app".into(), format!("svc{s}")),
            ingress: Some(ingress),
            egress: None,
            audit: false,
            span: Default::default(),
            name_span: Default::default(),
        });
    }
    m.endpoints.sort_by(|a, b| a.name.cmp(&b.name));
    m
}

#[test]
#[ignore]
fn ebpf_bench_ns_per_packet() {
    if !have_root("ebpf_bench_ns_per_packet") {
        return;
    }
    let client = v4(10, 1, 0, 10);
    let mut rows = Vec::new();
    let syn = |dst: IpAddr, port: u16| frame(&Packet::new(Proto::Tcp, client, 40000, dst, port));
    let probe = syn(v4(10, 2, 0, 1), 80);
    rows.push((
        "empty program".to_string(),
        baseline("weir_empty", empty(), vec![], &probe),
        String::new(),
    ));
    rows.push((
        "parse + 1 hash lookup".to_string(),
        baseline(
            "weir_lookup",
            one_lookup(),
            vec![MapDef::new("verdicts", MapType::Hash, 4, 4, 1024)],
            &probe,
        ),
        String::new(),
    ));
    for rules in [10usize, 1_000, 40_000, 100_000] {
        let t0 = Instant::now();
        let m = model(rules);
        let g = graph::build(&m);
        let cap = weir_compiler::graph::cost::capacity(&g);
        eprintln!("{rules} rules: {}", cap.report());
        let out = match weir_compiler::ebpf::codegen::generate(
            &m,
            &g,
            &weir_compiler::ebpf::codegen::Options {
                mode: Mode::Node,
                ..Default::default()
            },
        ) {
            Ok(o) => o,
            Err(l) => {
                eprintln!("{rules} rules: refused: {l:?}");
                rows.push((
                    format!("{rules} rules: refused (E0510)"),
                    0.0,
                    format!("{l:?}"),
                ));
                continue;
            }
        };
        let compile_s = t0.elapsed().as_secs_f64();
        let gen = load_output(&out);
        let p: &SchedClassifier = gen.ebpf.program("weir_main").unwrap().try_into().unwrap();
        let subjects = rules.div_ceil(1000).max(1);
        let per = rules / subjects;
        let s = subjects / 2;
        let dst = v4(10, 2, (s / 250) as u8, (s % 250) as u8 + 1);
        // New flow denied by the last rule (full walk; no conntrack entry).
        let (deny_ns, r1) = time(p, &syn(dst, 60000));
        // An allowed port in the middle: the first run inserts the flow,
        // the rest hit conntrack (established path).
        let mid = 1 + (per / 2) as u16 * 2;
        let mid = if (per / 2) % 7 == 3 { mid + 2 } else { mid };
        let (est_ns, r2) = time(p, &syn(dst, mid));
        assert_eq!((r1, r2), (2, 0), "verdicts");
        let insns: usize = out.manifest.programs.iter().map(|p| p.insns).sum();
        rows.push((
            format!("{rules} rules: new flow (deny, full walk)"),
            deny_ns,
            format!(
                "{} programs, {insns} insns, compile {compile_s:.1}s",
                out.manifest.programs.len()
            ),
        ));
        rows.push((
            format!("{rules} rules: established (conntrack hit)"),
            est_ns,
            String::new(),
        ));
    }
    eprintln!("\nBPF_PROG_TEST_RUN, repeat {REPEAT}, ns per packet:");
    for (name, ns, note) in rows {
        eprintln!("  {name:<44} {ns:>7.1} ns  {note}");
    }
}

/// Verdict events' cost (docs/monitor.md): ns per denied new flow of the
/// 1,000-rule model with events off, on with the default rate limit (the
/// bucket empties after its burst: the flood's steady state), and on
/// with no effective limit and a ring large enough that every event is
/// written (nobody reads it); then the drop count of a flood of
/// [`REPEAT`] denied packets nobody reads.
///
/// ```text
/// cargo test --release -p weir-runtime --test ebpf_bench events -- --ignored --nocapture
/// ```
#[test]
#[ignore]
fn ebpf_bench_events_on_off() {
    use weir_compiler::ebpf::codegen::events::{EventOptions, STATE_MAP};
    let m = model(1_000);
    let g = graph::build(&m);
    if !have_root("ebpf_bench_events_on_off") {
        return;
    }
    let dst = v4(10, 2, 0, 1);
    let frame = frame(&Packet::new(
        Proto::Tcp,
        v4(10, 1, 0, 10),
        40000,
        dst,
        60000,
    ));
    let variants = [
        ("events off", None, REPEAT),
        (
            "events on (default limit)",
            Some(EventOptions::default()),
            REPEAT,
        ),
        (
            "events on, every event written",
            Some(EventOptions {
                burst: 1_000_000,
                rate: 1_000_000_000,
                ring_bytes: 64 << 20,
            }),
            // 64 MiB holds 838,860 records of 80 bytes.
            500_000,
        ),
    ];
    eprintln!("\nBPF_PROG_TEST_RUN, 1,000 rules, denied new flow, ns per packet:");
    for (name, events, repeat) in variants {
        let out = weir_compiler::ebpf::codegen::generate(
            &m,
            &g,
            &weir_compiler::ebpf::codegen::Options {
                mode: Mode::Node,
                events,
                ..Default::default()
            },
        )
        .unwrap();
        let gen = load_output(&out);
        let p: &SchedClassifier = gen.ebpf.program("weir_main").unwrap().try_into().unwrap();
        let mut buf = vec![0u8; frame.len() + 256];
        let r = weir_runtime::ebpf::test_run::repeat(p, &frame, &mut buf, repeat).unwrap();
        assert_eq!(r.return_value, 2, "denied");
        let ns = r.duration.as_nanos() as f64;
        let dropped = match gen.ebpf.map(STATE_MAP) {
            Some(m) => {
                let a: aya::maps::PerCpuArray<_, [u64; 3]> =
                    aya::maps::PerCpuArray::try_from(m).unwrap();
                let v = a.get(&0, 0).unwrap();
                format!(
                    "{} of {repeat} events dropped",
                    v.iter().map(|x| x[2]).sum::<u64>()
                )
            }
            None => String::new(),
        };
        eprintln!("  {name:<34} {ns:>7.1} ns  {dropped}");
    }
}
