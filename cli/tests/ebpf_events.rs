//! Verdict events from the eBPF data path, as a user sees them: a
//! hand-written program is compiled with `weir compile --target ebpf`,
//! applied with `weir apply --backend ebpf` in a network namespace, and
//! real traffic crosses the node — a denied TCP connect, a denied UDP
//! datagram, an allowed TCP connection to a rule with `log`, a UDP flow
//! past a `log` rule, an allowed flow that emits nothing — while an audit
//! policy would deny most of it. Then `weir monitor --json --count N`
//! must print exactly the events the interpreter's event function
//! (`interp::events::events`) gives for each packet sent: verdict,
//! audit flag, provenance id, rule name and source line, 5-tuple,
//! endpoint names. The kernel's timestamp of each event must lie between
//! clock readings taken around its packet, and a denied packet sent last
//! must be readable from the ring buffer within one second.
//! `bpftool map show` must list `weir_events` as a ring buffer.
//!
//! Needs root, `ip` and `bpftool`; skipped without, unless `CI` is set
//! (then it fails).

#[path = "support/run.rs"]
mod run;
use run::{ok, s, weir};
#[path = "support/events_program.rs"]
mod events_program;
use events_program::{addrs, expected, flows, model, seen, Want, PROGRAM};

use std::time::Duration;

use serde_json::Value;
use weir_compiler::contract::event::EventVerdict;
use weir_compiler::model::Proto;
use weir_runtime::events::EventSource;
use weir_runtime::netns::{Topology, NODE_CLIENT_IF};

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[test]
fn ebpf_events_match_the_interpreter_in_weir_monitor() {
    if !weir_runtime::kernel_test::may_run(
        "ebpf_events_match_the_interpreter_in_weir_monitor",
        &["ip", "bpftool"],
    ) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir("cli-ebpf-events").unwrap();
    let src = work.join("events.weir");
    std::fs::write(&src, PROGRAM).unwrap();
    let bundle = work.join("bundle");
    ok(weir(&[
        "compile",
        s(&src),
        "--target",
        "ebpf",
        "-o",
        s(&bundle),
        // A bucket every event of the checked flows fits in, and a
        // flood at the end overruns (`weir stats` counts the drops).
        "--events-rate",
        "1",
        "--events-burst",
        "20",
    ]));
    let topo = Topology::new().expect("netns topology");
    let target = [
        "--backend",
        "ebpf",
        "--netns",
        topo.node.name(),
        "--iface",
        NODE_CLIENT_IF,
    ];
    let run = |verb: &str, extra: &[&str]| {
        let mut a = vec![verb];
        a.extend_from_slice(extra);
        a.extend_from_slice(&target);
        weir(&a)
    };
    ok(run("apply", &[s(&bundle)]));

    // The kernel's view of the pinned map: a ring buffer of the
    // compiled size.
    let inst = weir_runtime::ebpf::Instance::new(NODE_CLIENT_IF, Some(topo.node.name()));
    let generation = weir_runtime::ebpf::record::read_state(&inst)
        .unwrap()
        .generation;
    let pin = inst
        .pin_dir()
        .join(format!("gen-{generation}"))
        .join("weir_events");
    let shown = std::process::Command::new("bpftool")
        .args(["-j", "map", "show", "pinned", s(&pin)])
        .output()
        .expect("bpftool");
    let ring: Value = serde_json::from_slice(&shown.stdout)
        .unwrap_or_else(|e| panic!("bpftool map show pinned {}: {e}: {shown:?}", pin.display()));
    assert_eq!(ring["name"], "weir_events", "{ring}");
    assert_eq!(ring["type"], "ringbuf", "{ring}");
    assert_eq!(ring["max_entries"], 256 * 1024, "{ring}");

    let (model, prov) = model();
    let (_, other, db) = addrs();
    topo.serve_tcp(db, 5432).unwrap();
    topo.serve_udp(db, 5000).unwrap();
    topo.serve_udp(db, 6000).unwrap();
    for (proto, from, port, passes) in flows() {
        // Short enough that a denied SYN is not retransmitted.
        let t = Duration::from_millis(if passes { 2000 } else { 300 });
        let got = match proto {
            Proto::Tcp => topo.tcp_probe(from, db, port, t).is_some(),
            _ => topo.udp_probe(from, db, port, t).is_some(),
        };
        assert_eq!(got, passes, "{proto:?} {from} -> {db}:{port}");
    }
    let want = expected(&model, &prov);
    // The program's meaning, spelled out: this is what the test checks.
    assert_eq!(
        want.iter()
            .map(|w| format!("{}{}", if w.audit { "would " } else { "" }, w.verdict))
            .collect::<Vec<_>>(),
        [
            "deny",
            "would deny",
            "deny",
            "would deny",
            "would deny",
            "allow",
            "allow",
            "would deny",
            "allow",
            "log",
            "would deny",
            "allow"
        ]
    );

    let out = ok(run(
        "monitor",
        &[
            "--json",
            "--count",
            &want.len().to_string(),
            "--timeout",
            "10",
        ],
    ));
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), want.len(), "{out}");
    let mut got: Vec<Want> = lines.iter().map(seen).collect();
    // Each line names its rule and line, endpoints, a real source port.
    for l in &lines {
        assert_ne!(l["sport"], 0, "{l}");
        assert_eq!(l["dst_endpoint"], "db", "{l}");
        assert!(l["src_endpoint"] == "web" || l["src_endpoint"] == "other");
        let id = l["provenance"].as_u64().unwrap() as u32;
        let p = prov.get(id).unwrap();
        if let weir_compiler::provenance::Provenance::Rule { policy, .. } = p {
            let name = &model.policies[*policy].name;
            assert!(
                l["rule"].as_str().unwrap().starts_with(&format!("{name}/")),
                "{l}"
            );
            assert!(
                l["location"].as_str().unwrap().contains("events.weir:"),
                "{l}"
            );
        }
    }
    let mut sorted_want = want.clone();
    sorted_want.sort();
    got.sort();
    assert_eq!(got, sorted_want, "weir monitor:\n{out}");

    // The reader directly: a denied datagram is readable within one
    // second, its kernel time inside the window of its sending, its
    // 5-tuple the one sent.
    let mut reader = weir_runtime::events::ringbuf::open_applied(&inst)
        .expect("open the ring buffer")
        .expect("compiled with events");
    let before = monotonic_ns();
    assert!(topo
        .udp_probe(other, db, 7001, Duration::from_millis(200))
        .is_none());
    let after = monotonic_ns();
    let mut seen = Vec::new();
    while let Some(e) = reader.next_event(Duration::from_secs(1)).unwrap() {
        seen.push(e);
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    for e in &seen {
        assert!(before <= e.time_ns && e.time_ns <= after, "{e:?}");
        assert_eq!((e.src, e.dst, e.dport, e.proto), (other, db, 7001, 17));
        assert_ne!(e.sport, 0);
        assert_eq!(e.backend, None);
    }
    // The audit leaf reports before the enforced side's denial; the
    // order of one packet's events is not part of the meaning.
    seen.sort_by_key(|e| e.audit);
    assert_eq!(seen[0].verdict, EventVerdict::Deny);
    assert!(!seen[0].audit && seen[1].audit);
    assert_eq!(reader.dropped().unwrap(), 0);
    let dropped = |out: String| -> u64 {
        let v: Value = serde_json::from_str(&out).unwrap();
        v["events_dropped"]
            .as_u64()
            .unwrap_or_else(|| panic!("{v}"))
    };
    assert_eq!(dropped(ok(run("stats", &["--json"]))), 0);

    // A flood of denied datagrams (two events each: the denial and the
    // audit side's would-deny) overruns the bucket: what the data path
    // could not write, `weir stats` shows, as the reader counts it.
    for port in 7100..7140 {
        topo.udp_probe(other, db, port, Duration::from_millis(5));
    }
    let n = dropped(ok(run("stats", &["--json"])));
    assert!((40..=80).contains(&n), "{n} of 80 events dropped");
    assert_eq!(n, reader.dropped().unwrap());
    let human = ok(run("stats", &[]));
    assert!(
        human.contains(&format!("{n:>12}  verdict events dropped")),
        "{human}"
    );
    ok(run("detach", &[]));
}
