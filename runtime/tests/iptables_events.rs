//! Verdict events from the iptables back end, with real traffic: a small
//! dual-stack program compiled with events (the default) and applied in
//! the node namespace; the NFLOG reader (`weir_runtime::events::nflog`)
//! bound to the bundle's group there; then a denied TCP connect over IPv4
//! and over IPv6, a denied UDP datagram whose egress side a rule with
//! `log` allowed (that side reports its `allow`), an allowed connection
//! that passes a `log` rule and is allowed by a rule with the `log` flag
//! on each side, a UDP flow an audit policy would deny, and a connection
//! to a service without backends (rejected). Every event read must be one
//! of the interpreter's events for that packet (`interp::events::events`,
//! not the emitter), and every one of them must arrive, once.
//!
//! Needs root; skipped without, unless `CI` is set (then it fails).

mod bundle_common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weir_compiler::check::check_program;
use weir_compiler::contract::event::{nflog_prefix, EventVerdict, VerdictEvent};
use weir_compiler::graph;
use weir_compiler::interp::events::events;
use weir_compiler::interp::{Interp, Outcome, Packet};
use weir_compiler::model::{Direction, Model, Proto};
use weir_compiler::provenance::{Provenance, ProvenanceTable};
use weir_compiler::source::MemoryLoader;
use weir_runtime::events::nflog::NflogSource;
use weir_runtime::events::EventSource;
use weir_runtime::iptables::{Iptables, Options};
use weir_runtime::netns::Topology;
use weir_runtime::Bundle;

const PROGRAM: &str = r#"
endpoint web   { labels { app: "web" }   addr 10.1.0.1 addr fd00:1::1 }
endpoint other { labels { app: "other" } addr 10.1.0.2 addr fd00:1::2 }
endpoint db    { labels { app: "db" }    addr 10.2.0.1 addr fd00:2::1 }

policy db-in {
  applies to app == "db"
  ingress {
    log tcp 5432 from any
    allow tcp 5432 from app == "web" log
    allow udp 5000 from any
  }
}

policy web-out {
  applies to app == "web"
  egress {
    allow to any log
  }
}

service empty {
  frontend 10.96.0.99:80/tcp
  backends select app == "nothing" port 80
}

policy db-tighten priority 10 audit {
  applies to app == "db"
  ingress {
    allow udp 5000 from app == "web"
    deny from any
  }
}
"#;

fn write_bundle(dir: &Path) -> (Model, Bundle) {
    let loader = MemoryLoader::new().with("main.weir", PROGRAM);
    let c = check_program(&[PathBuf::from("main.weir")], &loader, None);
    assert!(!c.has_errors(), "{:?}", c.diagnostics);
    let model = c.model;
    let g = graph::build(&model);
    let sources = vec![("main.weir".to_string(), PROGRAM.to_string())];
    let b = bundle_common::write_iptables(&model, &g, &sources, dir);
    (model, b)
}

/// (verdict, audit, provenance id) of one event.
type Ev = (EventVerdict, bool, u32);

/// The interpreter's events for a packet with this outcome
/// (`interp::events::events`, docs/language.md §4), sorted.
fn expected(model: &Model, ids: &ProvenanceTable, o: &Outcome) -> Vec<Ev> {
    let mut out: Vec<Ev> = events(model, o)
        .into_iter()
        .map(|e| (e.verdict, e.audit, ids.id(&e.by)))
        .collect();
    out.sort_by_key(|e| (e.0.code(), e.1, e.2));
    out
}

fn proto_of(n: u8) -> Proto {
    match n {
        6 => Proto::Tcp,
        17 => Proto::Udp,
        other => panic!("unexpected protocol {other}"),
    }
}

#[test]
fn events_match_the_interpreter_in_netns() {
    if !weir_runtime::kernel_test::may_run(
        "events_match_the_interpreter_in_netns",
        &[
            "ip",
            "iptables-restore",
            "iptables-save",
            "ip6tables-save",
            "ipset",
        ],
    ) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir("ipt-events").unwrap();
    let (model, b) = write_bundle(&work.join("bundle"));
    let section = b
        .manifest
        .backends
        .iptables
        .clone()
        .expect("iptables section");
    let events = section.events.expect("events are on by default");
    let topo = Topology::new().unwrap();
    let rt = Iptables::new(Options::netns(topo.node.name()).with_state_dir(work.join("state")));
    let r = rt.apply(&b).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let ids = ProvenanceTable::new(&model);

    // What the kernel kept of the event rules: the prefixes as written
    // (NFLOG cuts a prefix silently at 63 bytes).
    let deny_default = (0..ids.len() as u32)
        .find(|&i| {
            matches!(
                ids.get(i),
                Some(Provenance::TierDefault {
                    dir: Direction::Ingress,
                    ..
                })
            )
        })
        .expect("db is isolated");
    for save in ["iptables-save", "ip6tables-save"] {
        let out = topo.node.exec(save, &["-t", "filter"]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let want = format!(
            "--nflog-prefix \"{}\" --nflog-group {}",
            nflog_prefix(deny_default, EventVerdict::Deny, false),
            events.group
        );
        assert!(text.contains(&want), "{save}: no `{want}` in\n{text}");
    }

    let sec = section.clone();
    let mut source = topo
        .node
        .run(move || NflogSource::for_bundle(&sec))
        .unwrap()
        .expect("bind the events group");

    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let (db4, db6) = (ip("10.2.0.1"), ip("fd00:2::1"));
    topo.serve_tcp(db4, 5432).unwrap();
    topo.serve_tcp(db6, 5432).unwrap();
    topo.serve_udp(db4, 5000).unwrap();
    topo.serve_udp(db4, 53).unwrap();
    // The node routes the frontend toward the server side (and rejects).
    let vip = ip("10.96.0.99");
    topo.add_server_addr(vip).unwrap();
    let short = Duration::from_millis(300);
    let long = Duration::from_millis(2500);
    // (what, sent, whether it must get through)
    let probes = [
        ("denied TCP v4", ("tcp", "10.9.0.9", db4, 5432), false),
        ("denied TCP v6", ("tcp", "fd00:9::9", db6, 5432), false),
        ("denied UDP", ("udp", "10.1.0.1", db4, 53), false),
        ("logged allow", ("tcp", "10.1.0.1", db4, 5432), true),
        ("audit would deny", ("udp", "10.1.0.2", db4, 5000), true),
        ("no backends", ("tcp", "10.1.0.1", vip, 80), false),
    ];
    let mut sent = Vec::new();
    for (what, (proto, src, dst, port), ok) in probes {
        let src = ip(src);
        let wait = if ok { long } else { short };
        let got = match proto {
            "tcp" => topo.tcp_probe(src, dst, port, wait).is_some(),
            _ => topo.udp_probe(src, dst, port, wait).is_some(),
        };
        assert_eq!(got, ok, "{what}: {src} → {dst}:{port}/{proto}");
        sent.push((what, src, dst, port));
    }

    // Read until every flow's events are in (or two quiet seconds).
    let mut got: Vec<VerdictEvent> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match source.next_event(Duration::from_millis(700)).unwrap() {
            Some(e) => got.push(e),
            None if !got.is_empty() => break,
            None => {}
        }
    }
    assert_eq!(source.dropped().unwrap(), 0, "events lost or undecodable");

    // Group by flow (the 5-tuple the event names) and check each flow
    // against the interpreter's outcome for exactly that packet.
    let interp = Interp::new(&model);
    let mut flows: BTreeMap<(u8, IpAddr, u16, IpAddr, u16), Vec<Ev>> = BTreeMap::new();
    for e in &got {
        assert!(e.wall && e.time_ns > 0, "{e:?}");
        assert_eq!(e.backend, None, "nothing is translated: {e:?}");
        flows
            .entry((e.proto, e.src, e.sport, e.dst, e.dport))
            .or_default()
            .push((e.verdict, e.audit, e.provenance));
    }
    for (what, src, dst, port) in &sent {
        let mine: Vec<_> = flows
            .iter()
            .filter(|(k, _)| k.1 == *src && k.3 == *dst && k.4 == *port)
            .collect();
        assert_eq!(mine.len(), 1, "{what}: one flow of events, got {flows:?}");
        let ((proto, s, sport, d, dport), evs) = mine[0];
        let o = interp.evaluate(&Packet::new(proto_of(*proto), *s, *sport, *d, *dport));
        let mut evs = evs.clone();
        evs.sort_by_key(|e| (e.0.code(), e.1, e.2));
        let want = expected(&model, &ids, &o);
        assert!(
            !want.is_empty(),
            "{what}: the program must report something"
        );
        assert_eq!(evs, want, "{what}: events (verdict, audit, provenance id)");
    }
    assert_eq!(flows.len(), sent.len(), "events of unsent flows: {flows:?}");
    rt.detach().unwrap();
    let _ = std::fs::remove_dir_all(work);
}
