//! Steering and service rejects of the eBPF pipeline, each checked with
//! BPF_PROG_TEST_RUN against the interpreter's `Outcome`:
//!
//! - `mark`: `skb->mark` in the output context (`ctx_out`);
//! - `dscp`: the DSCP bits of the output frame (IPv4 with a valid header
//!   checksum; IPv6 traffic class), ECN bits kept;
//! - `bypass`: passes before policy and services, counted under its rule;
//! - a denied packet is not steered;
//! - a service without backends: a TCP segment is answered with a reset
//!   (`TC_ACT_REDIRECT`; RST|ACK acking SYN + payload, or RST with the
//!   segment's ack as its sequence number), a UDP datagram with an ICMP
//!   port unreachable (checked byte by byte in ebpf_udp_reject.rs);
//! - `redirect … to proxy`: end to end in a network namespace — a
//!   connection to an address with no listener reaches the local proxy's
//!   socket (`bpf_sk_assign`), which sees the original destination;
//! - services through the whole pipeline, end to end in namespaces: the
//!   kube-proxy example (37 frontends) over real TCP and UDP, answers only
//!   from backends the interpreter allows, resets for empty services;
//! - (ignored) ns per packet of the pipeline with and without a service.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use ebpf_common::*;
use weir_compiler::check::check_program;
use weir_compiler::ebpf::codegen::Mode;
use weir_compiler::ebpf::layout;
use weir_compiler::graph::{self, Graph};
use weir_compiler::interp::{Interp, Packet};
use weir_compiler::model::{Model, Proto, SteerAction, Verdict};
use weir_compiler::provenance::Provenance;
use weir_compiler::source::MemoryLoader;
use weir_runtime::ebpf::Generation;
use weir_runtime::netns::tcp_connect_from;

const SRC: &str = r#"
endpoint web { labels { app: "web" } addr 10.1.0.10 addr fd00::10 }
endpoint db  { labels { app: "db" }  addr 10.2.0.20 addr fd00::20 }
endpoint voice { labels { app: "voice" } addr 10.3.0.30 addr fd00::30 }

service empty {
  frontend 10.96.0.9:80/tcp
  frontend 10.96.0.9:53/udp
  backends select app == "nothing" port 80
}

policy db-in {
  applies to app == "db"
  ingress {
    allow tcp 5432 from app == "web"
    allow udp 53 from any
    deny log
  }
}

steer qos priority 10 {
  bypass tcp 179 to 10.2.0.20
  dscp 46 udp 5004 from app == "voice"
  mark 0x10 udp 53 from any
  redirect tcp 8080 from app == "web" to proxy 127.0.0.1:15001
}
"#;

fn compile_src(src: &str) -> (Model, Graph) {
    let path = PathBuf::from("main.weir");
    let loader = MemoryLoader::new().with(&path, src);
    let checked = check_program(std::slice::from_ref(&path), &loader, None);
    assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
    let g = graph::build(&checked.model);
    (checked.model, g)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn delta(gen: &Generation, f: impl FnOnce() -> RunOut) -> (RunOut, Vec<(u32, u64)>) {
    let before = counts(gen);
    let out = f();
    let after = counts(gen);
    let d = before
        .iter()
        .zip(&after)
        .enumerate()
        .filter(|(_, (b, a))| a != b)
        .map(|(i, (b, a))| (i as u32, a - b))
        .collect();
    (out, d)
}

#[test]
fn ebpf_steering_mark_dscp_bypass_agree_with_interpreter() {
    if !have_root("ebpf_steering_mark_dscp_bypass_agree_with_interpreter") {
        return;
    }
    let (model, g) = compile_src(SRC);
    let interp = Interp::new(&model);
    let gen = load_output(&compile(&model, &g, Mode::Node));
    let cases = [
        // dscp 46 (IPv4 and IPv6), allowed (voice → web: no policy).
        Packet::new(Proto::Udp, ip("10.3.0.30"), 4000, ip("10.1.0.10"), 5004),
        Packet::new(Proto::Udp, ip("fd00::30"), 4000, ip("fd00::10"), 5004),
        // mark 0x10, allowed by db-in.
        Packet::new(Proto::Udp, ip("10.1.0.10"), 4001, ip("10.2.0.20"), 53),
        Packet::new(Proto::Udp, ip("fd00::10"), 4001, ip("fd00::20"), 53),
        // mark rule matches, but denied: no mark.
        Packet::new(Proto::Udp, ip("10.3.0.30"), 4002, ip("10.2.0.20"), 5004),
        // bypass: allowed although db-in denies tcp 179.
        Packet::new(Proto::Tcp, ip("10.1.0.10"), 4003, ip("10.2.0.20"), 179),
        // nothing steered.
        Packet::new(Proto::Tcp, ip("10.1.0.10"), 4004, ip("10.2.0.20"), 5432),
    ];
    let mut seen = (0, 0, 0);
    for p in &cases {
        clear_conntrack(&gen);
        let o = interp.evaluate(p);
        let mut input = frame(p);
        // ECN bits set: the rewrite keeps them.
        if p.src.is_ipv4() {
            input[15] = 0x01;
        } else {
            input[15] |= 0x10;
        }
        set_checksums(&mut input);
        let (out, counted) = delta(&gen, || run_full(&gen, &input));
        let want_ret = if o.verdict == Verdict::Allow {
            layout::TC_ACT_OK as u32
        } else {
            layout::TC_ACT_SHOT as u32
        };
        assert_eq!(out.ret, want_ret, "{p:?}");
        let mut want: std::collections::BTreeMap<u32, u64> = Default::default();
        for l in o.logged.iter().chain([&o.decided_by]) {
            *want.entry(g.provenance.id(l)).or_default() += 1;
        }
        assert_eq!(counted, want.into_iter().collect::<Vec<_>>(), "{p:?}");
        let action = o.steering.as_ref().map(|s| s.action.clone());
        match action {
            Some(SteerAction::Mark(m)) => {
                assert_eq!(out.mark, m, "{p:?}");
                assert_eq!(out.data, input, "mark leaves the frame alone");
                seen.0 += 1;
            }
            Some(SteerAction::Dscp(d)) => {
                assert_eq!(out.mark, 0);
                let f = &out.data;
                if p.src.is_ipv4() {
                    assert_eq!(f[15], (d << 2) | 0x01, "TOS: DSCP {d}, ECN kept");
                    checksums_ok(f).unwrap();
                } else {
                    let tc = (f[14] & 0x0f) << 4 | f[15] >> 4;
                    assert_eq!(tc, (d << 2) | 0x01, "traffic class: DSCP {d}, ECN kept");
                    assert_eq!(f[14] >> 4, 6, "version kept");
                    assert_eq!(f[15] & 0x0f, input[15] & 0x0f, "flow label kept");
                }
                if p.src.is_ipv4() {
                    assert_eq!(f[16..24], input[16..24]);
                    assert_eq!(f[26..], input[26..]);
                } else {
                    assert_eq!(f[16..], input[16..]);
                }
                seen.1 += 1;
            }
            Some(SteerAction::Bypass) => {
                assert!(matches!(o.decided_by, Provenance::Bypass { .. }));
                assert_eq!(conntrack_len(&gen), 0, "bypass skips conntrack");
                assert_eq!(out.data, input);
                seen.2 += 1;
            }
            None => {
                assert_eq!(out.mark, 0, "{p:?}: not steered");
                if out.ret == layout::TC_ACT_OK as u32 {
                    assert_eq!(out.data, input, "{p:?}: not steered");
                }
            }
            Some(other) => panic!("unexpected steering {other:?}"),
        }
    }
    assert_eq!(seen, (2, 2, 1), "mark, dscp, bypass cases");
}

#[test]
fn ebpf_service_without_backends_resets_tcp_and_answers_udp() {
    if !have_root("ebpf_service_without_backends_resets_tcp_and_answers_udp") {
        return;
    }
    let (model, g) = compile_src(SRC);
    let interp = Interp::new(&model);
    let gen = load_output(&compile(&model, &g, Mode::Node));
    let client = ip("10.1.0.10");
    let vip = ip("10.96.0.9");

    // A SYN: RST|ACK, ack = seq + 1.
    let syn = Packet::new(Proto::Tcp, client, 40000, vip, 80);
    let o = interp.evaluate(&syn);
    assert!(o.reject);
    let mut f = frame(&syn);
    f[38..42].copy_from_slice(&1000u32.to_be_bytes()); // seq
    set_checksums(&mut f);
    let (out, counted) = delta(&gen, || run_full(&gen, &f));
    assert_eq!(out.ret, layout::TC_ACT_REDIRECT as u32);
    assert_eq!(counted, vec![(g.provenance.id(&o.decided_by), 1)]);
    let r = &out.data;
    assert_eq!(r.len(), 54, "Ethernet + IPv4 + TCP, no payload");
    checksums_ok(r).unwrap();
    assert_eq!(&r[0..6], &f[6..12], "back to the sender's MAC");
    assert_eq!(&r[26..30], &f[30..34], "from the frontend");
    assert_eq!(&r[30..34], &f[26..30], "to the client");
    assert_eq!(&r[34..36], &f[36..38]);
    assert_eq!(&r[36..38], &f[34..36]);
    assert_eq!(u16::from_be_bytes([r[16], r[17]]), 40, "IP total length");
    assert_eq!(r[47], 0x14, "RST|ACK");
    assert_eq!(u32::from_be_bytes(r[38..42].try_into().unwrap()), 0, "seq");
    assert_eq!(
        u32::from_be_bytes(r[42..46].try_into().unwrap()),
        1001,
        "ack = seq + SYN"
    );

    // A data segment with ACK and a 10-byte payload: RST, seq = its ack.
    let mut d = f[..54].to_vec();
    d[47] = 0x18; // PSH|ACK
    d[42..46].copy_from_slice(&77u32.to_be_bytes());
    d.extend_from_slice(b"0123456789");
    d[16..18].copy_from_slice(&(20u16 + 20 + 10).to_be_bytes());
    set_checksums(&mut d);
    let out = run_full(&gen, &d);
    assert_eq!(out.ret, layout::TC_ACT_REDIRECT as u32);
    let r = &out.data;
    assert_eq!(r.len(), 54);
    checksums_ok(r).unwrap();
    assert_eq!(r[47], 0x04, "RST");
    assert_eq!(u32::from_be_bytes(r[38..42].try_into().unwrap()), 77);

    // A reset is never answered.
    let mut rst = f.clone();
    rst[47] = 0x04;
    set_checksums(&mut rst);
    assert_eq!(run_full(&gen, &rst).ret, layout::TC_ACT_SHOT as u32);

    // UDP: an ICMP port unreachable back out (ebpf_udp_reject.rs checks
    // its bytes), counted the same.
    let udp = Packet::new(Proto::Udp, client, 40001, vip, 53);
    let o = interp.evaluate(&udp);
    assert!(o.reject);
    let (out, counted) = delta(&gen, || run_full(&gen, &frame(&udp)));
    assert_eq!(out.ret, layout::TC_ACT_REDIRECT as u32);
    assert_eq!(out.data.len(), 70);
    assert_eq!(counted, vec![(g.provenance.id(&o.decided_by), 1)]);
}

/// `redirect tcp 8080 from app == "web" to proxy 127.0.0.1:15001`, end to
/// end: in a namespace whose loopback routes everything locally, a
/// connection from `web` to 10.2.0.20:8080 (nobody listens there) lands on
/// the proxy's listener, which sees the original destination; the same
/// connection to port 8081 (not steered) is refused.
#[test]
fn ebpf_redirect_to_local_proxy_in_netns() {
    if !have_root("ebpf_redirect_to_local_proxy_in_netns") {
        return;
    }
    let Some(_) = tool("ip") else { return };
    let src = SRC.replace(
        "policy db-in {",
        "policy allow-8080 priority 1 {\n  applies to app == \"db\"\n  ingress { allow tcp { 8080, 8081 } from app == \"web\" }\n}\npolicy db-in {",
    );
    let (model, g) = compile_src(&src);
    let out = compile(&model, &g, Mode::Node);
    let ns = weir_runtime::netns::Netns::create("weir-steer").expect("netns");
    for args in [
        &["link", "set", "dev", "lo", "up"][..],
        &["route", "add", "local", "default", "dev", "lo"],
        &["addr", "add", "10.1.0.10/32", "dev", "lo"],
    ] {
        let o = ns.exec("ip", args).unwrap();
        assert!(o.status.success(), "ip {args:?}: {o:?}");
    }
    let result = ns
        .run(move || -> Result<(SocketAddr, bool), String> {
            use aya::programs::{tc, SchedClassifier, TcAttachType};
            let mut gen = load_output(&out);
            let _ = tc::qdisc_add_clsact("lo");
            let p: &mut SchedClassifier = gen
                .ebpf
                .program_mut(layout::MAIN_PROGRAM)
                .unwrap()
                .try_into()
                .unwrap();
            p.attach("lo", TcAttachType::Ingress)
                .map_err(|e| e.to_string())?;
            let proxy = TcpListener::bind("127.0.0.1:15001").map_err(|e| e.to_string())?;
            let t = Duration::from_secs(3);
            let connect = |port: u16| {
                tcp_connect_from(ip("10.1.0.10"), SocketAddr::new(ip("10.2.0.20"), port), t)
            };
            let mut c = match connect(8080) {
                Ok(c) => c,
                Err(e) => {
                    let c: Vec<(usize, u64)> = counts(&gen)
                        .into_iter()
                        .enumerate()
                        .filter(|x| x.1 > 0)
                        .collect();
                    let ks: Vec<_> = ct_all(&gen).into_iter().map(|e| e.0).collect();
                    return Err(format!("connect 8080: {e}; counters {c:?}; ct {ks:?}"));
                }
            };
            let (mut a, _) = proxy.accept().map_err(|e| e.to_string())?;
            let local = a.local_addr().map_err(|e| e.to_string())?;
            c.write_all(b"ping").map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            a.set_read_timeout(Some(t)).unwrap();
            a.read_exact(&mut buf).map_err(|e| e.to_string())?;
            a.write_all(b"pong").map_err(|e| e.to_string())?;
            c.set_read_timeout(Some(t)).unwrap();
            c.read_exact(&mut buf).map_err(|e| e.to_string())?;
            if &buf != b"pong" {
                return Err("no reply through the proxy".into());
            }
            let refused = connect(8081).is_err();
            drop(gen);
            Ok((local, refused))
        })
        .expect("run in netns");
    let (local, refused) = result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        local,
        SocketAddr::new(ip("10.2.0.20"), 8080),
        "the proxy sees the original destination"
    );
    assert!(refused, "port 8081 is not steered: nobody listens");
}

/// The policy pipeline with services, end to end: the kube-proxy example
/// (37 frontends, policy on the backends) compiled for eBPF, loaded once
/// and attached to the node's ingress on both links (requests and
/// replies); real TCP and UDP from clients to every frontend. A probe
/// that gets an answer reached a candidate backend that the interpreter
/// (pinned to it) allows; a frontend without backends refuses TCP at
/// once (the reset); the same probes without an answer are ones the
/// interpreter denies for some candidate.
#[test]
fn ebpf_pipeline_services_end_to_end_in_netns() {
    if !have_root("ebpf_pipeline_services_end_to_end_in_netns") {
        return;
    }
    use weir_compiler::interp::BackendChoice;
    use weir_runtime::netns::{Topology, NODE_CLIENT_IF, NODE_SERVER_IF};
    let checked = load_policy(std::path::Path::new("examples/kube-proxy"));
    assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
    let model = checked.model;
    let g = graph::build(&model);
    let out = compile(&model, &g, Mode::Node);
    let topo = Topology::new().unwrap();
    for fe in &g.services.frontends {
        for b in &g.services.backend_sets[fe.backends].backends {
            let _ = match fe.frontend.proto {
                Proto::Tcp => topo.serve_tcp(b.addr, b.port),
                _ => topo.serve_udp(b.addr, b.port),
            };
        }
    }
    let gen = attach_at_node_ingress(&topo, out, &[NODE_CLIENT_IF, NODE_SERVER_IF]);
    let interp = Interp::new(&model);
    let timeout = Duration::from_millis(1500);
    let clients = [ip("10.244.200.1"), ip("10.244.200.2")];
    let (mut answered, mut refused, mut denied) = (0, 0, 0);
    for fe in &g.services.frontends {
        let (vip, port, proto) = (fe.frontend.addr, fe.frontend.port, fe.frontend.proto);
        if !vip.is_ipv4() || !matches!(proto, Proto::Tcp | Proto::Udp) {
            continue;
        }
        for &c in &clients {
            let p = Packet::new(proto, c, 40000, vip, port);
            let hit = interp.evaluate(&p).service.expect("a frontend");
            let verdict_for = |b: &weir_compiler::model::Backend| {
                interp
                    .evaluate_with(&p, BackendChoice::Pinned(b.addr, b.port))
                    .verdict
            };
            if hit.candidates.is_empty() && proto == Proto::Tcp {
                topo.add_client_addr(c).unwrap();
                let started = std::time::Instant::now();
                let r = topo
                    .client
                    .run(move || {
                        tcp_connect_from(c, SocketAddr::new(vip, port), timeout)
                            .map(|_| ())
                            .map_err(|e| e.kind())
                    })
                    .unwrap();
                assert_eq!(
                    r,
                    Err(std::io::ErrorKind::ConnectionRefused),
                    "{vip}:{port} has no backends: reset"
                );
                assert!(started.elapsed() < timeout, "the reset comes at once");
                refused += 1;
                continue;
            }
            let got = match proto {
                Proto::Tcp => topo.tcp_probe(c, vip, port, timeout),
                _ => topo.udp_probe(c, vip, port, timeout),
            };
            match got {
                Some(b) => {
                    let cand = hit
                        .candidates
                        .iter()
                        .find(|x| x.addr == b)
                        .unwrap_or_else(|| panic!("{b} is not a backend of {vip}:{port}"));
                    assert_eq!(
                        verdict_for(cand),
                        Verdict::Allow,
                        "{c} → {vip}:{port} via {b}"
                    );
                    answered += 1;
                }
                None => {
                    assert!(
                        hit.candidates.is_empty()
                            || hit
                                .candidates
                                .iter()
                                .any(|b| verdict_for(b) == Verdict::Deny),
                        "{c} → {vip}:{port}/{proto:?}: no answer, but every backend is allowed"
                    );
                    denied += 1;
                }
            }
        }
    }
    drop(gen);
    eprintln!(
        "pipeline services end to end: {answered} answered, {refused} reset, {denied} denied"
    );
    assert!(answered >= 20, "{answered}");
    assert!(refused >= 1, "{refused}");
}

/// ns per packet of the pipeline's service paths (BPF_PROG_TEST_RUN,
/// repeat 1M): `cargo test -p weir-runtime --test ebpf_steer -- --ignored
/// --nocapture`.
#[test]
#[ignore]
fn ebpf_pipeline_services_ns_per_packet() {
    if !have_root("ebpf_pipeline_services_ns_per_packet") {
        return;
    }
    use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
    let src = r#"
endpoint c  { labels { app: "c" }  addr 10.1.0.1 }
endpoint b1 { labels { app: "b" }  addr 10.2.0.1 }
endpoint b2 { labels { app: "b" }  addr 10.2.0.2 }
endpoint x  { labels { app: "x" }  addr 10.1.0.9 }
service s {
  frontend 10.96.0.1:80/tcp
  backends select app == "b" port 8080
  balance maglev
}
policy b-in {
  applies to app == "b"
  ingress {
    allow tcp 8080 from app == "c"
    deny
  }
}
"#;
    // The same program without the service: the fixed cost of the
    // service hooks (established-DNAT and reverse-NAT lookups).
    let no_svc = src.replace("service s {", "service s-gone {").replace(
        "  frontend 10.96.0.1:80/tcp\n  backends select app == \"b\" port 8080\n  balance maglev\n}",
        "",
    );
    let no_svc = no_svc.replace("service s-gone {\n", "");
    let (m0, g0) = compile_src(&no_svc);
    assert!(g0.services.frontends.is_empty());
    let gen0 = load_output(&compile(&m0, &g0, Mode::Node));
    let (model, g) = compile_src(src);
    let gen = load_output(&compile(&model, &g, Mode::Node));
    for (label, gen) in [("without services", &gen0), ("with the service", &gen)] {
        let p: &SchedClassifier = gen
            .ebpf
            .program(layout::MAIN_PROGRAM)
            .unwrap()
            .try_into()
            .unwrap();
        let time = |f: &[u8]| {
            let mut out = vec![0u8; f.len() + 64];
            let r = p
                .test_run(TestRunOptions {
                    data_in: Some(f),
                    data_out: Some(&mut out),
                    repeat: 1_000_000,
                    ..Default::default()
                })
                .unwrap();
            (r.duration.as_nanos() as f64, r.return_value)
        };
        let plain = frame(&Packet::new(
            Proto::Tcp,
            ip("10.1.0.1"),
            1000,
            ip("10.2.0.1"),
            8080,
        ));
        let svc = frame(&Packet::new(
            Proto::Tcp,
            ip("10.1.0.1"),
            1001,
            ip("10.96.0.1"),
            80,
        ));
        let denied = frame(&Packet::new(
            Proto::Tcp,
            ip("10.1.0.9"),
            1002,
            ip("10.96.0.1"),
            80,
        ));
        for (name, f) in [
            (
                "client → backend address, established (conntrack hit)",
                &plain,
            ),
            (
                "client → frontend, repeated (steady state: test runs reuse the translated skb)",
                &svc,
            ),
            ("denied client → frontend, repeated (steady state)", &denied),
        ] {
            let (ns, ret) = time(f);
            eprintln!("{ns:>6.0} ns  ret {ret}  {label}: {name}");
        }
    }
}
