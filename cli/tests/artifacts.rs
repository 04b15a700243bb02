//! Snapshots of the compiled artifacts of every example and stdlib module
//! (issue 8, item 3): the decision-graph dump, iptables and ipset restore
//! text, the eBPF listing and the capacity report, so that a change in
//! generated code shows up in review. Snapshots live under
//! `snapshots/artifacts/`; with `CI=true` a changed snapshot fails.
//!
//! A back end that refuses a program (iptables and `balance maglev`, say)
//! is part of the record too: the snapshot then holds the exit code and
//! the rendered diagnostics. After an intended change, run
//! `INSTA_UPDATE=always cargo test -p weir --test artifacts`, review the
//! diff, commit.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `weir compile FILE ARGS...` from the repository root (so file names in
/// the output are relative and stable): its stdout, or, when it fails,
/// the exit code and what it printed on stderr.
fn compile(file: &Path, args: &[&str]) -> String {
    let rel = file
        .strip_prefix(root().canonicalize().unwrap())
        .unwrap_or(file);
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .current_dir(root())
        .arg("compile")
        .arg(rel)
        .args(args)
        .output()
        .unwrap();
    match out.status.code() {
        Some(0) => String::from_utf8(out.stdout).unwrap(),
        Some(1) => format!("exit 1\n{}", String::from_utf8_lossy(&out.stderr)),
        other => panic!(
            "weir compile {} {args:?} exited with {other:?}:\n{}",
            rel.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Every artifact of one program, one snapshot each, named after the
/// program's path (`examples/three-tier/three-tier.weir` →
/// `examples__three-tier__three-tier__iptables.snap`).
fn snapshot_all(path: &Path) {
    let rel = path
        .strip_prefix(root().canonicalize().unwrap())
        .unwrap_or(path)
        .with_extension("");
    let stem = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("__");
    let artifacts: &[(&str, &[&str])] = &[
        ("graph", &["--emit", "graph"]),
        ("iptables", &["--target", "iptables", "--emit", "iptables"]),
        ("ipset", &["--target", "iptables", "--emit", "ipset"]),
        ("bpf", &["--target", "ebpf", "--emit", "asm"]),
        (
            "capacity-ebpf",
            &["--target", "ebpf", "--report", "--format", "json"],
        ),
        (
            "capacity-iptables",
            &["--target", "iptables", "--report", "--format", "json"],
        ),
    ];
    for (name, args) in artifacts {
        let text = compile(path, args);
        insta::with_settings!({
            snapshot_path => "../../snapshots/artifacts",
            prepend_module_to_snapshot => false,
            input_file => path,
        }, {
            insta::assert_snapshot!(format!("{stem}__{name}"), text);
        });
    }
}

fn programs(dir: &str, depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(root().canonicalize().unwrap().join(dir), 0)];
    while let Some((d, level)) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && level < depth {
                stack.push((p, level + 1));
            } else if p.extension().is_some_and(|x| x == "weir") && level == depth {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn example_artifacts() {
    let files = programs("examples", 1);
    assert!(files.len() >= 6, "examples went missing");
    for f in files {
        snapshot_all(&f);
    }
}

#[test]
fn stdlib_artifacts() {
    let files = programs("stdlib-policies", 0);
    assert!(files.len() >= 10, "stdlib modules went missing");
    for f in files {
        snapshot_all(&f);
    }
}
