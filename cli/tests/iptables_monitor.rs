//! Verdict events from the iptables back end, as a user sees them: the
//! program of `ebpf_events.rs` compiled with `weir compile --target
//! iptables`, applied with `weir apply --backend iptables` in a network
//! namespace's node, and `weir monitor --backend iptables --netns NODE
//! --json` started before the traffic (NFLOG delivers to a bound socket;
//! nothing queues). The same flows as the eBPF test must give exactly the
//! events of the interpreter's event function: verdict, audit flag,
//! provenance id, 5-tuple, endpoint names, rule and source line. The
//! program judges both sides: a connection allowed by a `log` rule on
//! each side (each side reports its own `allow`), and a datagram both
//! audit sides would deny (one audit event per side).
//!
//! Needs root, `ip` and `iptables`; skipped without, unless `CI` is set
//! (then it fails).

#[path = "support/run.rs"]
mod run;
use run::{ok, s, weir};
#[path = "support/events_program.rs"]
mod events_program;
use events_program::{addrs, expected, flows, model, seen, Want, PROGRAM};

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_compiler::model::Proto;
use weir_runtime::netns::Topology;

#[test]
fn iptables_events_match_the_interpreter_in_weir_monitor() {
    if !weir_runtime::kernel_test::may_run(
        "iptables_events_match_the_interpreter_in_weir_monitor",
        &["ip", "iptables-restore", "ipset"],
    ) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir("cli-ipt-events").unwrap();
    let src = work.join("events.weir");
    std::fs::write(&src, PROGRAM).unwrap();
    let bundle = work.join("bundle");
    ok(weir(&[
        "compile",
        s(&src),
        "--target",
        "iptables",
        "-o",
        s(&bundle),
    ]));
    let topo = Topology::new().expect("netns topology");
    let state = work.join("state");
    let target = [
        "--backend",
        "iptables",
        "--netns",
        topo.node.name(),
        "--state-dir",
        s(&state),
    ];
    let mut apply = vec!["apply", s(&bundle)];
    apply.extend_from_slice(&target);
    ok(weir(&apply));

    let (model, prov) = model();
    let (_, _, db) = addrs();
    topo.serve_tcp(db, 5432).unwrap();
    topo.serve_udp(db, 5000).unwrap();
    topo.serve_udp(db, 6000).unwrap();
    let mut want = expected(&model, &prov);
    assert_eq!(want.len(), 12, "{want:?}");

    // The monitor first: NFLOG only delivers to a bound group.
    let count = want.len().to_string();
    let mut args = vec!["monitor", "--json", "--count", &count, "--timeout", "20"];
    args.extend_from_slice(&target);
    let mut monitor = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bound once it has read the manifest and joined the group: wait for
    // the group to appear in the kernel's table of NFLOG instances.
    let started = Instant::now();
    while !nflog_bound(&topo) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "weir monitor did not bind its NFLOG group"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for (proto, from, port, passes) in flows() {
        // Short enough that a denied SYN is not retransmitted.
        let t = Duration::from_millis(if passes { 2000 } else { 300 });
        let got = match proto {
            Proto::Tcp => topo.tcp_probe(from, db, port, t).is_some(),
            _ => topo.udp_probe(from, db, port, t).is_some(),
        };
        assert_eq!(got, passes, "{proto:?} {from} -> {db}:{port}");
    }
    let status = monitor.wait().unwrap();
    let mut out = String::new();
    monitor
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    monitor
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "weir monitor: {status}\n{out}\n{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let mut got: Vec<Want> = lines.iter().map(seen).collect();
    for l in &lines {
        assert_ne!(l["sport"], 0, "{l}");
        assert_eq!(l["dst_endpoint"], "db", "{l}");
        assert!(l["src_endpoint"] == "web" || l["src_endpoint"] == "other");
        if l["rule"].as_str().is_some_and(|r| r.contains('#')) {
            assert!(
                l["location"].as_str().unwrap().contains("events.weir:"),
                "{l}"
            );
        }
    }
    want.sort();
    got.sort();
    assert_eq!(got, want, "weir monitor:\n{out}");
    let mut detach = vec!["detach"];
    detach.extend_from_slice(&target);
    ok(weir(&detach));
    let _ = std::fs::remove_dir_all(&work);
}

/// Whether some process has bound an NFLOG group in the node namespace
/// (the namespace thread's `/proc/thread-self/net/netfilter/nfnetlink_log`
/// lists one line per instance).
fn nflog_bound(topo: &Topology) -> bool {
    topo.node
        .run(|| std::fs::read_to_string("/proc/thread-self/net/netfilter/nfnetlink_log"))
        .ok()
        .and_then(Result::ok)
        .is_some_and(|t| !t.trim().is_empty())
}
