//! Data-driven checker tests.
//!
//! - `tests/check/bad/*.weir`: the rendered diagnostics (no colour) are
//!   snapshotted; every file must produce at least one diagnostic.
//! - `tests/check/good/*.weir`: must check without errors or warnings;
//!   the model is snapshotted as pretty JSON.
//!
//! A `NAME.json` beside `NAME.weir` is passed as the endpoint inventory.
//! Imports of `std.X` load `tests/check/std/X.weir`. Snapshots live in the
//! workspace's `snapshots/check/`.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use weir_compiler::check::{check_program, Checked};
use weir_compiler::diagnostics::{render, Code};
use weir_compiler::source::SourceLoader;

/// Reads files relative to `tests/check`, so that paths in snapshots are
/// short and machine-independent.
struct TestLoader {
    base: PathBuf,
}

impl SourceLoader for TestLoader {
    fn load(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(self.base.join(path))
    }
    fn stdlib_dir(&self) -> Option<PathBuf> {
        Some(PathBuf::from("std"))
    }
}

fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check")
}

fn check(path: &Path) -> Checked {
    let base = base();
    let rel = path
        .strip_prefix(&base)
        .expect("under tests/check")
        .to_path_buf();
    let inv = rel.with_extension("json");
    let inv = base.join(&inv).exists().then_some(inv);
    // The driver: the checker plus the decision graph's findings (W04xx).
    weir_compiler::driver::analyze(&[rel], &TestLoader { base }, inv.as_deref()).checked
}

#[test]
fn bad() {
    insta::with_settings!({
        snapshot_path => "../../snapshots/check/bad",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::glob!("check/bad/*.weir", |path| {
            let checked = check(path);
            assert!(
                !checked.diagnostics.is_empty(),
                "{} produced no diagnostics",
                path.display()
            );
            let text = render::human(&checked.diagnostics, &checked.sources, false);
            insta::assert_snapshot!(text);
        });
    });
}

#[test]
fn good() {
    insta::with_settings!({
        snapshot_path => "../../snapshots/check/good",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::glob!("check/good/*.weir", |path| {
            let checked = check(path);
            let text = render::human(&checked.diagnostics, &checked.sources, false);
            assert!(checked.diagnostics.is_empty(), "{}:\n{text}", path.display());
            insta::assert_json_snapshot!(checked.model);
        });
    });
}

/// Codes this harness cannot trigger: E0212/E0235 are rejected by the
/// grammar first; E05xx come from the back ends, whose own tests trigger
/// them (compiler/tests/iptables.rs, compiler/tests/ebpf_codegen.rs,
/// compiler/tests/ebpf_sctp_redirect.rs);
/// E0014–E0016 come from a file-system loader's inventory policy
/// (cli/tests/inventory_files.rs).
const UNREACHABLE: &[Code] = &[
    Code::E0014,
    Code::E0015,
    Code::E0016,
    Code::E0212,
    Code::E0235,
    Code::E0501,
    Code::E0510,
    Code::E0525,
    // `weir apply` refuses a bundle whose node-address redirect proxy
    // this host does not hold (weir_runtime::proxy_local; the kernel
    // test runtime/tests/proxy_on_host.rs triggers it).
    Code::E0570,
    // `weir apply` refuses a bundle calling a kernel function this kernel
    // lacks (weir_runtime::ebpf::kfunc; runtime/tests/ebpf_ct_gc.rs
    // checks the refusal's text).
    Code::E0555,
    // `weir import k8s` reports these about Kubernetes input, never about
    // a .weir file: compiler/src/k8s's tests and cli/tests/import_k8s.rs
    // trigger each.
    Code::E0601,
    Code::E0602,
    Code::W0601,
    Code::W0602,
    Code::W0603,
    Code::W0604,
    // `weir import k8s` without `--node` on a `Local` Service
    // (compiler/src/k8s/tests_services.rs, cli/tests/import_k8s_services.rs).
    Code::W0330,
    // Retired: nothing emits it (docs/diagnostics.md says since when);
    // the code stays so that `weir explain` and SARIF rule indexes do.
    Code::E0267,
];

#[test]
fn every_code_has_a_bad_example_and_docs() {
    let mut seen = BTreeSet::new();
    for entry in std::fs::read_dir(base().join("bad")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "weir") {
            for d in check(&path).diagnostics {
                seen.insert(d.code);
            }
        }
    }
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/diagnostics.md"),
    )
    .unwrap_or_default();
    let mut missing = Vec::new();
    for code in Code::ALL {
        if !seen.contains(code) && !UNREACHABLE.contains(code) {
            missing.push(format!("{code}: no bad example"));
        }
        if !docs.contains(&format!("## {code}")) {
            missing.push(format!("{code}: not in docs/diagnostics.md"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn stdlib_and_examples_check_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["stdlib-policies", "examples"] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "weir") {
                    files.push(p);
                }
            }
        }
    }
    struct Fs(PathBuf);
    impl SourceLoader for Fs {
        fn load(&self, path: &Path) -> io::Result<String> {
            std::fs::read_to_string(path)
        }
        fn stdlib_dir(&self) -> Option<PathBuf> {
            Some(self.0.clone())
        }
    }
    let loader = Fs(root.join("stdlib-policies"));
    files.sort();
    for f in files {
        let inv = f.with_file_name("inventory.json");
        let inv = inv.exists().then_some(inv);
        let checked = check_program(std::slice::from_ref(&f), &loader, inv.as_deref());
        let errors: Vec<_> = checked
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .cloned()
            .collect();
        assert!(
            errors.is_empty(),
            "{}",
            render::human(&errors, &checked.sources, false)
        );
    }
}
