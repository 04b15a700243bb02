//! `weir compile -o DIR` writes its files as they are made into a staging
//! directory and commits them only when the whole bundle is written
//! (`compiler/src/bundle/sink.rs`, issue 21): what it writes is what the
//! in-memory path (`--emit`) prints, and a compile that fails leaves the
//! bundle already in `DIR` exactly as it was, with nothing of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-bundle-output-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Every entry of `dir`, sorted, with its bytes.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            (e.file_name().into_string().unwrap(), bytes)
        })
        .collect();
    v.sort();
    v
}

const PROGRAM: &str = "examples/three-tier/three-tier.weir";

#[test]
fn the_written_bundle_is_what_the_in_memory_path_prints() {
    let dir = scratch("same");
    let d = dir.to_str().unwrap();
    let out = weir(&["compile", PROGRAM, "-o", d, "--color", "never"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (emit, file) in [
        ("asm", "weir.asm"),
        ("iptables", "iptables.rules"),
        ("ipset", "ipset.rules"),
        ("graph", "graph.txt"),
    ] {
        let printed = weir(&["compile", PROGRAM, "--emit", emit]);
        assert!(printed.status.success());
        assert_eq!(
            printed.stdout,
            std::fs::read(dir.join(file)).unwrap(),
            "--emit {emit} and {file}"
        );
    }
    let printed = weir(&["compile", PROGRAM, "--emit", "manifest"]);
    let a: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
    let b: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(a, b);
    // The hashes bind the files as written.
    for (name, hash) in b["artifacts"].as_object().unwrap() {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        assert_eq!(
            hash.as_str().unwrap(),
            weir_compiler::contract::sha256_hex(&bytes),
            "{name}"
        );
    }
    let names: Vec<String> = contents(&dir).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "graph.txt",
            "ip6tables.rules",
            "ipset.rules",
            "iptables.rules",
            "manifest.json",
            "weir.asm",
            "weir.o"
        ],
        "no staging directory is left"
    );
    // -o with --emit: both, the same bytes.
    let both = weir(&["compile", PROGRAM, "-o", d, "--emit", "asm"]);
    assert!(both.status.success());
    assert_eq!(both.stdout, std::fs::read(dir.join("weir.asm")).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_refused_compile_leaves_the_old_bundle_as_it_was() {
    let dir = scratch("refused");
    let d = dir.to_str().unwrap();
    let good = weir(&["compile", PROGRAM, "-o", d]);
    assert!(good.status.success());
    let before = contents(&dir);
    // The iptables back end refuses `balance maglev`, after the eBPF one
    // has written its files.
    let refused = weir(&[
        "compile",
        "examples/kube-proxy/kube-proxy.weir",
        "-o",
        d,
        "--target",
        "all",
        "--color",
        "never",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("E05"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(contents(&dir) == before, "the old bundle changed");
    // A refused compile into a new directory creates none.
    let fresh = dir.join("new").join("bundle");
    let refused = weir(&[
        "compile",
        "examples/kube-proxy/kube-proxy.weir",
        "-o",
        fresh.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(!dir.join("new").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
