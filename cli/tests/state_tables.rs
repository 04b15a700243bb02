//! `weir compile --ct-entries N --lb-entries N` (issue 21): the eBPF
//! per-flow tables take the declared sizes, the manifest and the report
//! say so, and sizes that cannot be honoured are refused (0 and
//! iptables-only compiles as usage errors, more than the largest map as
//! E0510).

#[path = "support/run.rs"]
mod run;
mod support;

use run::{ok, s, show, weir};
use serde_json::Value;
use std::path::PathBuf;

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/kube-proxy/kube-proxy.weir")
}

fn inventory() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/kube-proxy/inventory.json")
}

fn report(extra: &[&str]) -> Value {
    let (file, inv) = (example(), inventory());
    let mut args = vec![
        "compile",
        s(&file),
        "--endpoints",
        s(&inv),
        "--target",
        "ebpf",
        "--report",
        "--format",
        "json",
    ];
    args.extend(extra);
    serde_json::from_str(&ok(weir(&args))).unwrap()
}

fn max_of(r: &Value, map: &str) -> u64 {
    r["backends"]["ebpf"]["maps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == map)
        .unwrap_or_else(|| panic!("no map {map}"))["max_entries"]
        .as_u64()
        .unwrap()
}

fn type_of(r: &Value, map: &str) -> String {
    r["backends"]["ebpf"]["maps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == map)
        .unwrap_or_else(|| panic!("no map {map}"))["type"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn table_sizes_default_like_a_node_and_follow_the_flags() {
    let d = report(&[]);
    support::schema::assert_valid("compile-report", &d);
    assert_eq!(
        d["backends"]["ebpf"]["state_tables"],
        serde_json::json!({"conntrack": 524288, "translation": 262144, "kind": "hash"})
    );
    // A preallocated hash by default, with its in-kernel collector.
    assert_eq!(type_of(&d, "weir_ct"), "hash");
    assert_eq!(type_of(&d, "weir_ct_gc"), "array");
    // One table: a translated flow's forward entry is in `weir_ct`, the
    // pipeline has no `weir_lb_ct` (issue 21).
    let names = |r: &Value| -> Vec<String> {
        r["backends"]["ebpf"]["maps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        !names(&d).iter().any(|n| n == "weir_lb_ct"),
        "{:?}",
        names(&d)
    );
    // `--ct-table lru`: the per-flow table an LRU, no collector.
    let h = report(&["--ct-table", "lru"]);
    support::schema::assert_valid("compile-report", &h);
    assert_eq!(h["backends"]["ebpf"]["state_tables"]["kind"], "lru");
    assert_eq!(type_of(&h, "weir_ct"), "lru_hash");
    assert_eq!(type_of(&h, "weir_lb_aff"), "lru_hash");
    assert!(!names(&h).iter().any(|n| n == "weir_ct_gc"));
    assert_eq!(max_of(&d, "weir_ct"), 524_288);
    let r = report(&["--ct-entries", "1000", "--lb-entries", "3000"]);
    support::schema::assert_valid("compile-report", &r);
    assert_eq!(
        r["backends"]["ebpf"]["state_tables"],
        serde_json::json!({"conntrack": 1000, "translation": 3000, "kind": "hash"})
    );
    assert_eq!(max_of(&r, "weir_ct"), 1000);
    for m in ["weir_lb_aff", "weir_lb_sk"] {
        assert_eq!(max_of(&r, m), 3000, "{m}");
    }
}

#[test]
fn the_manifest_declares_the_sizes() {
    let dir = std::env::temp_dir().join(format!("weir-state-tables-{}", std::process::id()));
    let (file, inv) = (example(), inventory());
    ok(weir(&[
        "compile",
        s(&file),
        "--endpoints",
        s(&inv),
        "--target",
        "ebpf",
        "--ct-entries",
        "4096",
        "-o",
        s(&dir),
    ]));
    let m: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        m["backends"]["ebpf"]["state_tables"],
        serde_json::json!({"conntrack": 4096, "translation": 262144, "kind": "hash"})
    );
}

#[test]
fn sizes_that_cannot_be_honoured_are_refused() {
    let (file, inv) = (example(), inventory());
    let base = ["compile", s(&file), "--endpoints", s(&inv), "--report"];
    let run = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend(extra);
        weir(&a)
    };
    // Zero entries: a usage error (clap).
    let o = run(&["--target", "ebpf", "--ct-entries", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    // iptables keeps no such tables: the flags would do nothing.
    let o = run(&["--target", "iptables", "--lb-entries", "10"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--target iptables"),
        "{}",
        show(&o)
    );
    // Larger than the largest map weir creates: E0510 naming the map.
    let o = run(&["--target", "ebpf", "--ct-entries", "2000000"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("E0510") && err.contains("weir_ct"),
        "{}",
        show(&o)
    );
}
