//! Audit policies in the iptables back end, with real traffic: a
//! hand-written program whose audit policy would deny some of the flows
//! its enforced policy allows. UDP probes (one new flow, so one packet
//! through FORWARD's policy chains, each) must all get through — an audit
//! policy never changes enforcement — and the `weir:audit:<id>` rule
//! counters read back with `iptables-save -c` must equal, id by id, the
//! interpreter's audit provenance of each packet sent
//! (`AuditOutcome::counted`). Generated programs with random audit
//! policies are in `iptables_diff.rs`.
//!
//! Needs root; skipped without, unless `CI` is set (then it fails).

mod bundle_common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_compiler::check::check_program;
use weir_compiler::graph;
use weir_compiler::interp::{Interp, Packet};
use weir_compiler::model::{Proto, Verdict};
use weir_compiler::source::MemoryLoader;
use weir_runtime::iptables::{Iptables, Options};
use weir_runtime::netns::Topology;
use weir_runtime::Bundle;

const PROGRAM: &str = r#"
endpoint web   { labels { app: "web" }   addr 10.1.0.1 }
endpoint other { labels { app: "other" } addr 10.1.0.2 }
endpoint db    { labels { app: "db" }    addr 10.2.0.1 }

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

fn write_bundle(dir: &Path) -> (weir_compiler::model::Model, Bundle) {
    let loader = MemoryLoader::new().with("main.weir", PROGRAM);
    let c = check_program(&[PathBuf::from("main.weir")], &loader, None);
    assert!(!c.has_errors(), "{:?}", c.diagnostics);
    let model = c.model;
    let g = graph::build(&model);
    let sources = vec![("main.weir".to_string(), PROGRAM.to_string())];
    let b = bundle_common::write_iptables(&model, &g, &sources, dir);
    (model, b)
}

/// Packet counts of the `weir:audit:<id>` rules in `iptables-save -c`,
/// summed per id.
fn audit_counters(save: &str) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for line in save.lines() {
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let Some(at) = line.find("\"weir:audit:") else {
            continue;
        };
        let packets: u64 = rest.split(':').next().unwrap().parse().unwrap();
        let id: u32 = line[at + 12..].split('"').next().unwrap().parse().unwrap();
        *out.entry(id).or_default() += packets;
    }
    out
}

#[test]
fn audit_counts_and_never_blocks_in_netns() {
    if !weir_runtime::kernel_test::may_run(
        "audit_counts_and_never_blocks_in_netns",
        &["ip", "iptables-restore", "iptables-save", "ipset"],
    ) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir("ipt-audit").unwrap();
    let (model, b) = write_bundle(&work.join("bundle"));
    let topo = Topology::new().unwrap();
    let rt = Iptables::new(Options::netns(topo.node.name()).with_state_dir(work.join("state")));
    let r = rt.apply(&b).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);

    let db: IpAddr = "10.2.0.1".parse().unwrap();
    topo.serve_udp(db, 5000).unwrap();
    let interp = Interp::new(&model);
    let mut want: BTreeMap<u32, u64> = BTreeMap::new();
    let mut would_deny = 0;
    let sends = [("10.1.0.1", 3), ("10.1.0.2", 5), ("10.9.0.9", 2)];
    for (src, n) in sends {
        let src: IpAddr = src.parse().unwrap();
        for _ in 0..n {
            let got = topo
                .udp_probe(src, db, 5000, Duration::from_millis(2500))
                .is_some();
            let p = Packet::new(Proto::Udp, src, 40000, db, 5000);
            let o = interp.evaluate(&p);
            assert_eq!(o.verdict, Verdict::Allow);
            assert!(
                got,
                "{src} → {db}:5000/udp was blocked: audit changed enforcement"
            );
            let a = o.audit.expect("the program has audit policies");
            if a.verdict == Verdict::Deny {
                would_deny += 1;
            }
            for by in a.counted() {
                *want.entry(model_id(&model, by)).or_default() += 1;
            }
        }
    }
    assert_eq!(would_deny, 7, "other and the stranger would be denied");
    let save = topo
        .node
        .exec("iptables-save", &["-c", "-t", "filter"])
        .unwrap();
    assert!(save.status.success());
    let got = audit_counters(&String::from_utf8_lossy(&save.stdout));
    let got: BTreeMap<u32, u64> = got.into_iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(got, want, "audit counters (provenance id → packets)");
    // `weir stats` reads the same, audit apart from enforced.
    let stats = rt.stats().unwrap();
    let audit: BTreeMap<u32, u64> = stats
        .audit
        .iter()
        .filter(|c| c.packets > 0)
        .map(|c| (c.id, c.packets))
        .collect();
    assert_eq!(audit, want, "runtime stats: audit counters");
    let db_in = model_id(
        &model,
        weir_compiler::provenance::Provenance::Rule {
            policy: model
                .policies
                .iter()
                .position(|p| p.name == "db-in")
                .unwrap(),
            dir: weir_compiler::model::Direction::Ingress,
            index: 0,
        },
    );
    assert_eq!(
        stats.rules[db_in as usize].packets, 10,
        "every flow allowed by db-in"
    );
    rt.detach().unwrap();
    let _ = std::fs::remove_dir_all(work);
}

fn model_id(model: &weir_compiler::model::Model, p: weir_compiler::provenance::Provenance) -> u32 {
    weir_compiler::provenance::ProvenanceTable::new(model).id(&p)
}
