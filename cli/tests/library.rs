//! The policy library and the CI interface, end to end through the built
//! binary: every stdlib module's and example's `test` blocks pass (and
//! none silently stop running), they are warning-free and formatted, the
//! examples are complete, steering shows up where the examples promise it,
//! and `weir check --format sarif` writes a valid SARIF 2.1.0 log.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Expectations written in `stdlib-policies/` (modules and `tests/`). Raise
/// it when you add some; a drop means tests stopped running.
const STDLIB_EXPECTATIONS: usize = 159;
/// Expectations written in `examples/`.
const EXAMPLE_EXPECTATIONS: usize = 102;
/// The examples the documentation promises.
const EXAMPLES: &[&str] = &[
    "three-tier",
    "kube-proxy",
    "zero-trust",
    "service-mesh",
    "egress-gateway",
    "host-firewall",
    "dual-stack",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn weir() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.env_remove("NO_COLOR").current_dir(root());
    c
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `weir test PATH` and returns (passed, failed) from its last line.
fn weir_test(path: &str) -> (usize, usize) {
    let out = weir().args(["test", path]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = stdout.lines().last().unwrap_or_default().to_string();
    let nums: Vec<usize> = last
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(
        last.ends_with(" failed") && nums.len() == 2,
        "unexpected last line {last:?}\n{}",
        text(&out)
    );
    let (passed, failed) = (nums[0], nums[1]);
    assert_eq!(
        out.status.code(),
        Some(if failed == 0 { 0 } else { 1 }),
        "{}",
        text(&out)
    );
    (passed, failed)
}

/// Counts `expect` lines in the `.weir` files under `dir`.
fn written_expectations(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            n += written_expectations(&p);
        } else if p.extension().is_some_and(|e| e == "weir") {
            let src = std::fs::read_to_string(&p).unwrap();
            n += src
                .lines()
                .filter(|l| l.trim_start().starts_with("expect "))
                .count();
        }
    }
    n
}

#[test]
fn stdlib_tests_all_pass() {
    let (passed, failed) = weir_test("stdlib-policies");
    assert_eq!(failed, 0);
    assert!(
        passed >= STDLIB_EXPECTATIONS,
        "only {passed} stdlib expectations ran (at least {STDLIB_EXPECTATIONS} were written)"
    );
    // Every expectation written is one that ran.
    assert_eq!(
        passed,
        written_expectations(&root().join("stdlib-policies"))
    );
}

#[test]
fn example_tests_all_pass() {
    let (passed, failed) = weir_test("examples");
    assert_eq!(failed, 0);
    assert!(
        passed >= EXAMPLE_EXPECTATIONS,
        "only {passed} example expectations ran (at least {EXAMPLE_EXPECTATIONS} were written)"
    );
    assert_eq!(passed, written_expectations(&root().join("examples")));
}

#[test]
fn every_stdlib_module_is_documented_and_tested() {
    let dir = root().join("stdlib-policies");
    let doc = std::fs::read_to_string(root().join("docs/stdlib.md")).unwrap();
    let mut modules = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_none_or(|e| e != "weir") {
            continue;
        }
        modules += 1;
        let name = p.file_stem().unwrap().to_str().unwrap().to_string();
        let src = std::fs::read_to_string(&p).unwrap();
        assert!(
            src.starts_with(&format!("# std.{name} — ")),
            "{name}.weir must start with its `# std.{name} — …` header"
        );
        assert!(src.contains("\ntest \""), "{name}.weir has no test block");
        assert!(
            doc.contains(&format!("import std.{name}\n")),
            "docs/stdlib.md has no `import std.{name}` section"
        );
        // Names a module declares start with `std-`.
        for line in src.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let ["selector" | "set" | "policy" | "steer" | "service" | "endpoint", n, ..] =
                words[..]
            {
                assert!(n.starts_with("std-"), "{name}.weir declares `{n}`");
            }
        }
    }
    assert!(modules >= 10, "only {modules} stdlib modules");
}

#[test]
fn examples_are_complete() {
    for name in EXAMPLES {
        let dir = root().join("examples").join(name);
        let src = std::fs::read_to_string(dir.join(format!("{name}.weir")))
            .unwrap_or_else(|e| panic!("examples/{name}/{name}.weir: {e}"));
        assert!(
            dir.join("README.md").is_file(),
            "examples/{name} has no README.md"
        );
        assert!(src.contains("\ntest \""), "examples/{name} has no test");
        if src.contains("inventory \"inventory.json\"") {
            let inv: Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("inventory.json")).unwrap())
                    .unwrap();
            assert!(!inv["endpoints"].as_array().unwrap().is_empty());
        } else {
            assert!(
                src.contains("\nendpoint "),
                "examples/{name} has neither an inventory nor endpoints"
            );
        }
    }
}

#[test]
fn library_is_warning_free_and_formatted() {
    let out = weir()
        .args(["check", "--deny-warnings", "examples", "stdlib-policies"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stderr.is_empty(), "{}", text(&out));
    let out = weir()
        .args(["fmt", "--check", "examples", "stdlib-policies"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

fn trace_json(file: &str, packet: &str) -> Value {
    let out = weir()
        .args(["trace", file, "--format", "json", "--packet", packet])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn examples_steer_what_they_promise() {
    let mesh = "examples/service-mesh/service-mesh.weir";
    // Allowed meshed HTTP is redirected to the local proxy.
    let v = trace_json(mesh, "tcp 10.30.0.10:40000 -> 10.30.1.10:8080");
    assert_eq!(v["verdict"], "allow");
    assert_eq!(v["steering"]["steer"], "mesh");
    assert_eq!(v["steering"]["action"], "redirect to proxy 127.0.0.1:15001");
    // Through the service VIP too (load-balanced first).
    let v = trace_json(mesh, "tcp 10.30.0.10:40000 -> 10.96.1.10:80");
    assert_eq!(v["verdict"], "allow");
    assert_eq!(v["steering"]["steer"], "mesh");
    // A denied packet is never steered.
    let v = trace_json(mesh, "tcp 10.30.1.10:40000 -> 10.30.1.11:8080");
    assert_eq!(v["verdict"], "deny");
    assert!(v["steering"].is_null(), "{v}");
    // Non-HTTP is not steered.
    let v = trace_json(mesh, "tcp 10.30.1.10:40000 -> 10.30.2.10:5432");
    assert_eq!(v["verdict"], "allow");
    assert!(v["steering"].is_null(), "{v}");

    let gw = "examples/egress-gateway/egress-gateway.weir";
    let v = trace_json(gw, "tcp 10.40.0.10:40000 -> 203.0.113.5:443");
    assert_eq!(v["verdict"], "allow");
    assert_eq!(v["steering"]["action"], "mark 0x10");
    let v = trace_json(gw, "tcp 10.40.1.10:40000 -> 198.51.100.25:587");
    assert_eq!(v["verdict"], "allow");
    assert_eq!(v["steering"]["action"], "mark 0x20");
    // Internal traffic is not marked.
    let v = trace_json(gw, "udp 10.40.0.10:40000 -> 10.40.9.53:53");
    assert_eq!(v["verdict"], "allow");
    assert!(v["steering"].is_null(), "{v}");
}

// ---- SARIF -------------------------------------------------------------

/// Five errors, one with a secondary label, one after a non-ASCII letter.
const BAD: &str = "# sarif test\nselector api = app == \"api\"\nset corp = {10.0.0.1/8}\nselector api = has(app)\nset unused-set = {10.0.0.0/8}\npolicy p {\n  applies to \u{e1}pi\n  ingress { allow from nowhere }\n}\n";

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-cli-library-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    dir
}

fn sarif_of(dir: &Path, args: &[&str]) -> (Option<i32>, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .current_dir(dir)
        .args([
            "check",
            "--format",
            "sarif",
            "--docs-url",
            "https://docs.example/weir",
        ])
        .args(args)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", text(&out)));
    (out.status.code(), v)
}

fn positive(v: &Value, what: &str) -> u64 {
    let n = v
        .as_u64()
        .unwrap_or_else(|| panic!("{what} is not an integer: {v}"));
    assert!(n >= 1, "{what} must be ≥ 1");
    n
}

fn is_absolute_uri(s: &str) -> bool {
    s.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme.chars().next().unwrap().is_ascii_alphabetic()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    })
}

fn check_location(loc: &Value) {
    let pl = &loc["physicalLocation"];
    let uri = pl["artifactLocation"]["uri"]
        .as_str()
        .expect("artifact uri");
    assert!(
        !uri.is_empty() && !uri.contains(' ') && !uri.contains('\\'),
        "bad uri {uri}"
    );
    let r = &pl["region"];
    let sl = positive(&r["startLine"], "startLine");
    let sc = positive(&r["startColumn"], "startColumn");
    let el = positive(&r["endLine"], "endLine");
    let ec = positive(&r["endColumn"], "endColumn");
    assert!((el, ec) >= (sl, sc), "region ends before it starts: {r}");
}

/// The SARIF 2.1.0 schema's requirements that the log could break, checked
/// by hand, plus the typed model of `serde-sarif` (generated from the
/// schema) as a second opinion.
fn validate_sarif(v: &Value) {
    let typed: Result<serde_sarif::sarif::Sarif, _> = serde_json::from_value(v.clone());
    if let Err(e) = typed {
        panic!("not a SARIF log per serde-sarif: {e}\n{v:#}");
    }
    assert_eq!(v["version"], "2.1.0");
    assert!(is_absolute_uri(v["$schema"].as_str().unwrap()));
    let runs = v["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1);
    let driver = &runs[0]["tool"]["driver"];
    assert_eq!(driver["name"], "weir");
    assert!(is_absolute_uri(driver["informationUri"].as_str().unwrap()));
    let rules = driver["rules"].as_array().expect("rules");
    let mut ids = Vec::new();
    for r in rules {
        let id = r["id"].as_str().expect("rule id");
        assert!(!r["shortDescription"]["text"].as_str().unwrap().is_empty());
        assert!(is_absolute_uri(r["helpUri"].as_str().unwrap()));
        assert!(["none", "note", "warning", "error"]
            .contains(&r["defaultConfiguration"]["level"].as_str().unwrap()));
        ids.push(id.to_string());
    }
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "rule ids are unique");
    assert!(
        ["utf16CodeUnits", "unicodeCodePoints"].contains(&runs[0]["columnKind"].as_str().unwrap())
    );
    for res in runs[0]["results"].as_array().expect("results") {
        let id = res["ruleId"].as_str().expect("ruleId");
        let idx = res["ruleIndex"].as_u64().expect("ruleIndex") as usize;
        assert_eq!(ids.get(idx).map(String::as_str), Some(id), "ruleIndex");
        assert!(["none", "note", "warning", "error"].contains(&res["level"].as_str().unwrap()));
        assert!(!res["message"]["text"].as_str().unwrap().is_empty());
        let locs = res["locations"].as_array().unwrap();
        assert!(!locs.is_empty());
        locs.iter().for_each(check_location);
        if let Some(rel) = res.get("relatedLocations") {
            for (i, l) in rel.as_array().unwrap().iter().enumerate() {
                check_location(l);
                assert_eq!(l["id"].as_u64(), Some(i as u64));
                assert!(!l["message"]["text"].as_str().unwrap().is_empty());
            }
        }
    }
}

#[test]
fn sarif_log_is_valid_and_stable() {
    let dir = scratch_dir();
    std::fs::write(dir.join("policies/bad.weir"), BAD).unwrap();
    let (code, mut v) = sarif_of(&dir, &["policies/bad.weir"]);
    assert_eq!(code, Some(1), "errors exit 1");
    validate_sarif(&v);
    let results = v["runs"][0]["results"].as_array().unwrap();
    let got: Vec<(&str, u64, u64)> = results
        .iter()
        .map(|r| {
            let reg = &r["locations"][0]["physicalLocation"]["region"];
            (
                r["ruleId"].as_str().unwrap(),
                reg["startLine"].as_u64().unwrap(),
                reg["startColumn"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("E0202", 3, 13),
            ("E0203", 4, 10),
            ("E0230", 6, 8),
            ("E0001", 7, 14),
            ("E0201", 8, 24)
        ],
        "{v:#}"
    );
    assert_eq!(
        results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "policies/bad.weir"
    );
    let related = &results[1]["relatedLocations"][0];
    assert_eq!(related["physicalLocation"]["region"]["startLine"], 2);
    assert_eq!(related["message"]["text"], "first defined here");
    // The version changes with every release, and the rule list with every
    // new diagnostic code (validated above); the rest must not change
    // without review.
    let used: BTreeSet<String> = got.iter().map(|g| g.0.to_string()).collect();
    v["runs"][0]["tool"]["driver"]["version"] = Value::from("[version]");
    let rules = &mut v["runs"][0]["tool"]["driver"]["rules"];
    let kept: Vec<Value> = rules
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| used.contains(r["id"].as_str().unwrap()))
        .cloned()
        .collect();
    *rules = Value::Array(kept);
    insta::with_settings!({
        snapshot_path => "../../snapshots/ci",
        prepend_module_to_snapshot => false,
    }, {
        insta::assert_json_snapshot!("sarif-bad", v);
    });
}

#[test]
fn sarif_warnings_and_clean_runs() {
    let dir = scratch_dir();
    std::fs::write(
        dir.join("policies/warn.weir"),
        "selector unused = app == \"x\"\n",
    )
    .unwrap();
    let (code, v) = sarif_of(&dir, &["policies/warn.weir"]);
    assert_eq!(code, Some(0), "warnings alone exit 0");
    validate_sarif(&v);
    assert_eq!(v["runs"][0]["results"][0]["level"], "warning");
    assert_eq!(v["runs"][0]["results"][0]["ruleId"], "W0301");
    let (code, _) = sarif_of(&dir, &["--deny-warnings", "policies/warn.weir"]);
    assert_eq!(code, Some(1), "--deny-warnings");

    // A clean run is still one valid log, with no results.
    let (code, v) = sarif_of(&root(), &["stdlib-policies"]);
    assert_eq!(code, Some(0));
    validate_sarif(&v);
    assert_eq!(v["runs"][0]["results"], Value::Array(vec![]));
}

/// Every rule's `helpUri` anchor is a heading of docs/diagnostics.md.
#[test]
fn sarif_help_uris_point_at_documented_codes() {
    let doc = std::fs::read_to_string(root().join("docs/diagnostics.md")).unwrap();
    let anchors: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| {
            h.to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let (_, v) = sarif_of(&root(), &["stdlib-policies/tiers.weir"]);
    for r in v["runs"][0]["tool"]["driver"]["rules"].as_array().unwrap() {
        let uri = r["helpUri"].as_str().unwrap();
        let (_, anchor) = uri.split_once('#').unwrap();
        assert!(
            anchors.contains(anchor),
            "{} has no `## {}: {}` heading in docs/diagnostics.md",
            r["id"],
            r["id"].as_str().unwrap(),
            r["shortDescription"]["text"].as_str().unwrap()
        );
    }
}
