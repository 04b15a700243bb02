//! Every `--format json` output of the `weir` binary, validated against
//! its JSON Schema in docs/schemas/ (docs/json.md), on real output: the
//! examples, a program with errors, a failing test, services and steering
//! in traces. The runtime outputs (apply, status, stats, endpoints,
//! detach) are checked in network namespaces (root; skipped without it
//! unless `CI` is set). The schemas forbid the Rust shapes the JSON once
//! had (`"proto": "Tcp"`, `{"Rule": {...}}`, `"5 filled / 1029 max"`).

mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::schema::assert_valid;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn weir<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap()
}

/// stdout as JSON, whatever the exit code (checked by the caller).
fn json_of<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> (Option<i32>, Value) {
    let out = weir(args);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "weir {args:?}: stdout is not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_json_matches_its_schema() {
    let (code, v) = json_of(&["check", "--format", "json", "examples"]);
    assert_eq!(code, Some(0));
    assert_valid("check", &v);
    let bad = scratch(
        "bad.weir",
        "selector a = app == \"x\" @\nset s = {10.1.0.1/8}\n",
    );
    let (code, v) = json_of(&["check", "--format", "json", bad.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(v["errors"].as_u64().unwrap() >= 2, "{v}");
    assert_valid("check", &v);
    // A grouped refusal: one diagnostic, many labels.
    let (code, v) = json_of(&[
        "check",
        "--format",
        "json",
        "--target",
        "iptables",
        "examples/kube-proxy/kube-proxy.weir",
    ]);
    assert_eq!(code, Some(1));
    assert_valid("check", &v);
    assert!(v["diagnostics"][0]["labels"].as_array().unwrap().len() > 1);
}

#[test]
fn compile_report_json_has_plain_numbers() {
    for (file, target) in [
        ("examples/three-tier/three-tier.weir", "all"),
        ("examples/kube-proxy/kube-proxy.weir", "ebpf"),
        ("examples/host-firewall/host-firewall.weir", "iptables"),
    ] {
        let (code, v) = json_of(&[
            "compile", file, "--target", target, "--report", "--format", "json",
        ]);
        assert_eq!(code, Some(0), "{file}");
        assert_valid("compile-report", &v);
    }
    // The shape before: numbers inside strings. The schema refuses it.
    let old =
        json!({"graph": null, "backends": {"ebpf": {"map weir_atoms": "5 filled / 1029 max"}}});
    let errors = support::schema::validate(&support::schema::load("compile-report"), &old);
    assert!(!errors.is_empty());
}

#[test]
fn compile_files_json() {
    let out = std::env::temp_dir().join(format!("weir-json-bundle-{}", std::process::id()));
    let (code, v) = json_of(&[
        "compile",
        "examples/three-tier/three-tier.weir",
        "-o",
        out.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(0));
    assert_valid("compile-files", &v);
    let files = v["files"].as_array().unwrap();
    assert!(files
        .iter()
        .any(|f| f["path"].as_str().unwrap().ends_with("weir.o")));
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn trace_json_has_no_rust_shapes() {
    for (file, packet) in [
        (
            "examples/three-tier/three-tier.weir",
            "tcp web-1 -> 10.96.0.20:80",
        ),
        (
            "examples/service-mesh/service-mesh.weir",
            "tcp 10.30.0.10:40000 -> 10.30.1.10:8080",
        ),
        (
            "examples/zero-trust/zero-trust.weir",
            "udp 10.0.0.1:5000 -> 10.0.0.2:53 established",
        ),
        (
            "examples/host-firewall/host-firewall.weir",
            "icmp 192.0.2.1 -> 192.0.2.2 type 8 code 0 at ingress",
        ),
    ] {
        let (code, v) = json_of(&["trace", file, "--packet", packet, "--format", "json"]);
        assert_eq!(code, Some(0), "{file} {packet}: {v}");
        assert_valid("trace", &v);
    }
    let (_, v) = json_of(&[
        "trace",
        "examples/three-tier/three-tier.weir",
        "--packet",
        "tcp web-1 -> 10.96.0.20:80",
        "--format",
        "json",
    ]);
    assert_eq!(v["packet"]["proto"], "tcp");
    assert_eq!(v["decided_by"]["kind"], "rule");
    assert_eq!(v["decided_by"]["owner"], "api-ingress");
    assert_eq!(v["service"]["frontend"]["port"], 80);
}

#[test]
fn test_json_and_junit() {
    let (code, v) = json_of(&["test", "--format", "json", "examples"]);
    assert_eq!(code, Some(0));
    assert_valid("test", &v);
    assert!(v["passed"].as_u64().unwrap() >= 80);
    let failing = scratch(
        "failing.weir",
        "endpoint a { labels { app: \"a\" } addr 10.0.0.1 }\nendpoint b { labels { app: \"b\" } addr 10.0.0.2 }\ntest \"wrong on purpose\" {\n  expect deny tcp from a to b port 80\n}\n",
    );
    let (code, v) = json_of(&["test", "--format", "json", failing.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert_valid("test", &v);
    assert_eq!(v["failed"], 1);
    let case = &v["programs"][0]["cases"][0];
    assert_eq!(case["passed"], false);
    assert!(!case["explanation"].as_array().unwrap().is_empty());
    // A program with errors carries its diagnostics.
    let broken = scratch("broken-test.weir", "selector a = = x\n");
    let (code, v) = json_of(&["test", "--format", "json", broken.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert_valid("test", &v);
    assert_eq!(v["programs"][0]["diagnostics"][0]["code"], "E0010", "{v}");

    let out = weir(&["test", "--format", "junit", failing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let xml = String::from_utf8(out.stdout).unwrap();
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(
        xml.contains("<testsuites name=\"weir test\" tests=\"1\" failures=\"1\">"),
        "{xml}"
    );
    assert!(xml.contains("<failure message="), "{xml}");
    // Well-formed: every opened element is closed, in order.
    let mut stack = Vec::new();
    for tag in xml.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap();
        if tag.starts_with('?') || tag.ends_with('/') {
            continue;
        }
        match tag.strip_prefix('/') {
            Some(name) => assert_eq!(stack.pop(), Some(name.to_string()), "{xml}"),
            None => stack.push(tag.split_whitespace().next().unwrap().to_string()),
        }
    }
    assert!(stack.is_empty(), "{xml}");
}

#[test]
fn explain_and_fmt_json() {
    let (code, v) = json_of(&["explain", "E0202", "--format", "json"]);
    assert_eq!(code, Some(0));
    assert_valid("explain", &v);
    let messy = scratch("messy.weir", "selector   a=app==\"x\"\n");
    let (code, v) = json_of(&[
        "fmt",
        "--check",
        "--format",
        "json",
        messy.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert_valid("fmt", &v);
    assert_eq!(v["changed"].as_array().unwrap().len(), 1);
}

// ---- runtime outputs (root, network namespaces) ----

const SRC: &str = r#"
endpoint web   { labels { app: "web" }   addr 10.1.0.10 }
endpoint db    { labels { app: "db" }    addr 10.2.0.20 }
endpoint api-1 { labels { app: "api" }   addr 10.3.0.1 }

policy db-in {
  applies to app == "db"
  ingress {
    allow tcp 5432 from app == "web"
    deny from any
  }
}

service api {
  frontend 10.96.0.1:80/tcp
  backends select app == "api" port 8080
}
"#;

const INVENTORY: &str = r#"{"endpoints": [
  {"name": "web", "labels": {"app": "web"}, "addrs": ["10.1.0.10"]},
  {"name": "web-2", "labels": {"app": "web"}, "addrs": ["10.1.0.12"]},
  {"name": "db", "labels": {"app": "db"}, "addrs": ["10.2.0.20"]},
  {"name": "api-1", "labels": {"app": "api"}, "addrs": ["10.3.0.1"]}
]}"#;

fn ok_json<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> Value {
    let out = weir(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "weir {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "weir {args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn compile_to(work: &Path, target: &str) -> PathBuf {
    let file = work.join("policy.weir");
    std::fs::write(&file, SRC).unwrap();
    let dir = work.join(format!("bundle-{target}"));
    let out = weir(&[
        "compile",
        file.to_str().unwrap(),
        "--target",
        target,
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    dir
}

#[test]
fn runtime_json_iptables() {
    if !weir_runtime::kernel_test::may_run(
        "runtime_json_iptables",
        &["ip", "iptables-restore", "ip6tables-restore", "ipset"],
    ) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir("cli-json-ipt").unwrap();
    let bundle = compile_to(&work, "iptables");
    let topo = weir_runtime::netns::Topology::new().expect("netns topology");
    let state = work.join("state");
    let target = [
        "--backend",
        "iptables",
        "--netns",
        topo.node.name(),
        "--state-dir",
        state.to_str().unwrap(),
        "--format",
        "json",
    ];
    let with = |cmd: &[&str]| -> Vec<String> {
        cmd.iter().chain(&target).map(|s| s.to_string()).collect()
    };
    let (_, v) = json_of(&with(&["status"]));
    assert_valid("status", &v);
    assert_valid(
        "apply",
        &ok_json(&with(&["apply", bundle.to_str().unwrap()])),
    );
    let v = ok_json(&with(&["status"]));
    assert_valid("status", &v);
    assert_eq!(v["in_force"], true);
    let inv = work.join("inventory.json");
    std::fs::write(&inv, INVENTORY).unwrap();
    let out = weir(&with(&[
        "endpoints",
        bundle.to_str().unwrap(),
        inv.to_str().unwrap(),
    ]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_valid("endpoints", &v);
    assert_valid("detach", &ok_json(&with(&["detach"])));
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn runtime_json_ebpf() {
    if !weir_runtime::kernel_test::may_run("runtime_json_ebpf", &["ip"]) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir("cli-json-ebpf").unwrap();
    let bundle = compile_to(&work, "ebpf");
    let topo = weir_runtime::netns::Topology::new().expect("netns topology");
    let target = [
        "--backend",
        "ebpf",
        "--netns",
        topo.node.name(),
        "--iface",
        weir_runtime::netns::NODE_CLIENT_IF,
    ];
    let with = |cmd: &[&str]| -> Vec<String> {
        cmd.iter()
            .chain(&target)
            .chain(&["--format", "json"])
            .map(|s| s.to_string())
            .collect()
    };
    assert_valid("status", &ok_json(&with(&["status"])));
    assert_valid(
        "apply",
        &ok_json(&with(&["apply", bundle.to_str().unwrap()])),
    );
    let v = ok_json(&with(&["status"]));
    assert_valid("status", &v);
    assert_eq!(v["attached"], true);
    let v = ok_json(&with(&["stats"]));
    assert_valid("stats", &v);
    // --json is kept as a hidden alias of --format json.
    let alias: Vec<&str> = ["stats"]
        .iter()
        .chain(&target)
        .chain(&["--json"])
        .copied()
        .collect();
    assert_valid("stats", &ok_json(&alias));
    let inv = work.join("inventory.json");
    std::fs::write(&inv, INVENTORY).unwrap();
    let v = ok_json(&with(&[
        "endpoints",
        bundle.to_str().unwrap(),
        inv.to_str().unwrap(),
    ]));
    assert_valid("endpoints", &v);
    assert_valid("detach", &ok_json(&with(&["detach"])));
    let _ = std::fs::remove_dir_all(&work);
}
