//! `weir check` end to end: the built binary on files with errors.

use std::path::PathBuf;
use std::process::Command;

fn weir() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.env_remove("NO_COLOR");
    c
}

fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-cli-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Three independent lexical/syntax errors on lines 2, 3 and 5.
const BROKEN: &str = "# three mistakes\nselector api = app == \"api\" @\nset corp = {10.1.0.300}\nselector ok = has(app)\nselector db = app == == \"x\"\n";

#[test]
fn reports_every_syntax_error_with_position() {
    let p = scratch("broken.weir", BROKEN);
    let out = weir().arg("check").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        !err.contains('\u{1b}'),
        "no colour when not a terminal:\n{err}"
    );
    let name = p.display().to_string();
    for (code, line, col) in [("E0001", 2, 29), ("E0003", 3, 13), ("E0010", 5, 22)] {
        assert!(
            err.contains(&format!("error[{code}]")),
            "missing {code}:\n{err}"
        );
        assert!(
            err.contains(&format!("{name}:{line}:{col}")),
            "missing {code} at {line}:{col}:\n{err}"
        );
    }
    assert!(err.contains("3 errors, 0 warnings"), "{err}");
}

#[test]
fn json_format() {
    let p = scratch("broken-json.weir", BROKEN);
    let out = weir()
        .args(["check", "--format", "json"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let diags = v["diagnostics"].as_array().unwrap();
    assert_eq!(diags.len(), 3);
    assert_eq!(v["errors"], 3);
    for d in diags {
        for field in [
            "code",
            "severity",
            "message",
            "file",
            "line",
            "column",
            "end_line",
            "end_column",
            "span",
            "labels",
            "help",
        ] {
            assert!(d.get(field).is_some(), "missing {field} in {d}");
        }
        assert!(d["span"]["start"].is_u64() && d["span"]["end"].is_u64());
    }
    assert_eq!(diags[0]["code"], "E0001");
    assert_eq!(diags[0]["line"], 2);
    assert_eq!(diags[0]["column"], 29);
    assert_eq!(diags[1]["code"], "E0003");
    assert_eq!(diags[1]["line"], 3);
    assert_eq!(diags[1]["column"], 13);
    assert_eq!(diags[1]["end_column"], 23);
    assert_eq!(diags[2]["code"], "E0010");
    assert_eq!(diags[2]["line"], 5);
    assert_eq!(diags[2]["column"], 22);
}

#[test]
fn clean_is_quiet_and_warnings_can_fail() {
    let p = scratch("warn.weir", "selector unused = app == \"x\"\n");
    let out = weir().arg("check").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("W0301"));
    let out = weir()
        .args(["check", "--deny-warnings"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    let p = scratch(
        "clean.weir",
        "policy p {\n  applies to all\n  ingress { allow }\n}\n",
    );
    let out = weir().arg("check").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

#[test]
fn io_problems_exit_2() {
    let out = weir()
        .args(["check", "/nonexistent/weir/x.weir"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = weir().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "usage error");
}

#[test]
fn checks_directories_and_inventory() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = weir()
        .arg("check")
        .arg(root.join("examples/kube-proxy"))
        .arg("--endpoints")
        .arg(root.join("examples/kube-proxy/inventory.json"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
