//! Audit policies in the eBPF back end, as a user runs them: a
//! hand-written program whose audit policy would deny some of the flows
//! its enforced policy allows is compiled with `weir compile --target
//! ebpf`, applied with `weir apply --backend ebpf` in a network namespace,
//! and UDP probes (one new flow, so one packet through policy, each) must
//! all get through — an audit policy never changes enforcement — while
//! `weir stats` reports, apart from the enforced counters, audit counters
//! equal id by id to the interpreter's audit provenance of each packet
//! sent (`AuditOutcome::counted`), in JSON (`audit`), human (`would: …`)
//! and Prometheus (`weir_audit_rule_packets_total`) form. Generated
//! programs are in `runtime/tests/ebpf_diff.rs`.
//!
//! Needs root and `ip`; skipped without, unless `CI` is set (then it fails).

#[path = "support/run.rs"]
mod run;
use run::{ok, s, weir};

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use weir_compiler::check::check_program;
use weir_compiler::interp::{Interp, Packet};
use weir_compiler::model::{Proto, Verdict};
use weir_compiler::provenance::ProvenanceTable;
use weir_compiler::source::MemoryLoader;
use weir_runtime::netns::{Topology, NODE_CLIENT_IF};

const PROGRAM: &str = r#"
endpoint web   { labels { app: "web" }   addr 10.1.0.10 }
endpoint other { labels { app: "other" } addr 10.1.0.11 }
endpoint db    { labels { app: "db" }    addr 10.2.0.20 }

policy db-in {
  applies to app == "db"
  ingress { allow udp 5000 from any }
}

policy db-tighten priority 10 audit {
  applies to app == "db"
  ingress {
    allow udp 5000 from app == "web"
    deny from any
  }
}
"#;

#[test]
fn ebpf_audit_counts_in_weir_stats_and_never_blocks() {
    if !weir_runtime::kernel_test::may_run(
        "ebpf_audit_counts_in_weir_stats_and_never_blocks",
        &["ip"],
    ) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir("cli-ebpf-audit").unwrap();
    let src = work.join("audit.weir");
    std::fs::write(&src, PROGRAM).unwrap();
    let bundle = work.join("bundle");
    ok(weir(&[
        "compile",
        s(&src),
        "--target",
        "ebpf",
        "-o",
        s(&bundle),
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

    let loader = MemoryLoader::new().with("main.weir", PROGRAM);
    let c = check_program(&[PathBuf::from("main.weir")], &loader, None);
    let model = c.model;
    let prov = ProvenanceTable::new(&model);
    let interp = Interp::new(&model);
    let db: IpAddr = "10.2.0.20".parse().unwrap();
    topo.serve_udp(db, 5000).unwrap();
    let mut want: BTreeMap<u64, u64> = BTreeMap::new();
    let mut would_deny = 0;
    for (src, n) in [("10.1.0.10", 3), ("10.1.0.11", 5), ("10.9.0.9", 2)] {
        let src: IpAddr = src.parse().unwrap();
        for _ in 0..n {
            let got = topo
                .udp_probe(src, db, 5000, Duration::from_millis(2500))
                .is_some();
            let o = interp.evaluate(&Packet::new(Proto::Udp, src, 40000, db, 5000));
            assert_eq!(o.verdict, Verdict::Allow);
            assert!(
                got,
                "{src} → {db}:5000/udp blocked: audit changed enforcement"
            );
            let a = o.audit.expect("the program has audit policies");
            would_deny += usize::from(a.verdict == Verdict::Deny);
            for by in a.counted() {
                *want.entry(u64::from(prov.id(&by))).or_default() += 1;
            }
        }
    }
    assert_eq!(would_deny, 7, "other and the stranger would be denied");

    let json: Value = serde_json::from_str(&ok(run("stats", &["--json"]))).unwrap();
    // The links' own IPv6 traffic (neighbour discovery, MLD) crosses the
    // hook too, decided as `unrestricted` whenever the kernel sends it:
    // those ids are left out of both sides of the comparison.
    let unrestricted: std::collections::BTreeSet<u64> = json["rules"]
        .as_array()
        .unwrap_or_else(|| panic!("rules in {json}"))
        .iter()
        .filter(|c| c["kind"] == "unrestricted")
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    want.retain(|id, _| !unrestricted.contains(id));
    let counted = |k: &str| -> BTreeMap<u64, u64> {
        json[k]
            .as_array()
            .unwrap_or_else(|| panic!("{k} in {json}"))
            .iter()
            .filter(|c| c["packets"].as_u64().unwrap() > 0)
            .map(|c| (c["id"].as_u64().unwrap(), c["packets"].as_u64().unwrap()))
            .filter(|(id, _)| !unrestricted.contains(id))
            .collect()
    };
    assert_eq!(counted("audit"), want, "weir stats: audit counters");
    let rules = counted("rules");
    assert_eq!(
        rules.values().sum::<u64>(),
        10,
        "enforced: each flow counted once by db-in: {rules:?}"
    );
    let human = ok(run("stats", &[]));
    assert!(
        human.contains("audit (would have decided; not enforced):")
            && human.contains("would: db-tighten ingress rule #2"),
        "{human}"
    );
    let prom = ok(run("stats", &["--format", "prometheus"]));
    assert!(
        prom.lines()
            .any(|l| l.starts_with("weir_audit_rule_packets_total{")
                && l.contains("db-tighten ingress rule #2")
                && l.ends_with(" 7")),
        "{prom}"
    );
    ok(run("detach", &[]));
    let _ = std::fs::remove_dir_all(work);
}
