//! A bundle is read only when its manifest is this weir's format, its
//! values are in range and every file used is the one the manifest
//! hashes (issue 15, items 8 and 16). Compiled bundles are written to a
//! scratch directory and tampered with; no kernel is involved: each
//! refusal happens while reading, before anything is applied.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};
use weir_compiler::backends;
use weir_compiler::bundle::{bundle, BundleInput, Target};
use weir_compiler::check::check_program;
use weir_compiler::source::MemoryLoader;

use super::*;
use crate::ebpf::attach::read_bundle;

const A: &str = r#"
endpoint web   { labels { app: "web" } addr 10.1.0.10 }
endpoint db    { labels { app: "db" }  addr 10.2.0.20 }
endpoint db6   { labels { app: "db" }  addr fd00::20 }
policy db-in {
  applies to app == "db"
  ingress { allow tcp 5432 from app == "web" }
}
service api {
  frontend 10.96.0.1:8080/tcp
  backends select app == "web" port 8080
}
"#;

/// Program B: the same endpoints, another port.
fn program_b() -> String {
    A.replace("tcp 5432", "tcp 22")
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "weir-bundle-test-{}-{}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compiles `src` for `targets` into a fresh directory.
fn compiled(src: &str, targets: &[Target]) -> PathBuf {
    let path = PathBuf::from("p.weir");
    let loader = MemoryLoader::new().with(&path, src);
    let c = check_program(std::slice::from_ref(&path), &loader, None);
    assert!(!c.has_errors(), "{:?}", c.diagnostics);
    let g = weir_compiler::graph::build(&c.model);
    let arts: BTreeMap<_, _> = backends::generate_all(targets, &c.model, &g)
        .into_iter()
        .map(|(t, r)| (t, r.expect("the back end accepts the program")))
        .collect();
    let sources = vec![("p.weir".to_string(), src.to_string())];
    let files = bundle(&BundleInput {
        model: &c.model,
        graph: &g,
        sources: &sources,
        targets,
        locate: &|_| None,
        backends: arts,
    });
    let dir = scratch();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    dir
}

fn both(src: &str) -> PathBuf {
    compiled(src, &[Target::Ebpf, Target::Iptables])
}

/// Edits `dir`'s manifest as JSON.
fn edit(dir: &Path, f: impl FnOnce(&mut Value)) {
    let p = dir.join(MANIFEST);
    let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

/// Both readers refuse `dir`, saying `says`.
fn refused(dir: &Path, says: &str) {
    let e = Bundle::read(dir).unwrap_err().to_string();
    assert!(e.contains(says), "iptables: {e}");
    let e = read_bundle(dir)
        .err()
        .expect("the eBPF reader refuses")
        .to_string();
    assert!(e.contains(says), "ebpf: {e}");
}

#[test]
fn a_compiled_bundle_is_read_by_both_back_ends() {
    let dir = both(A);
    let b = Bundle::read(&dir).unwrap();
    assert_eq!(b.hooks.len(), 2, "{:?}", b.hooks);
    assert!(!b.sets.is_empty());
    let e = read_bundle(&dir).unwrap();
    assert_eq!(e.object, std::fs::read(dir.join("weir.o")).unwrap());
}

#[test]
fn a_manifest_with_another_bundles_object_is_refused() {
    // Manifest B beside object and rules of A.
    let (a, b) = (both(A), both(&program_b()));
    std::fs::copy(b.join(MANIFEST), a.join(MANIFEST)).unwrap();
    refused(&a, "SHA-256 is not the one the manifest lists");
    // An artifact edited in place.
    let c = both(A);
    let mut rules = std::fs::read_to_string(c.join(IPTABLES_RULES)).unwrap();
    rules = rules.replace("--dport 5432", "--dport 5433");
    std::fs::write(c.join(IPTABLES_RULES), rules).unwrap();
    let e = Bundle::read(&c).unwrap_err().to_string();
    assert!(e.contains("iptables.rules") && e.contains("SHA-256"), "{e}");
}

#[test]
fn values_out_of_range_are_refused() {
    let dir = both(A);
    edit(&dir, |v| {
        v["backends"]["ebpf"]["fill"]["cls4"][0]["class"] = json!(99_999)
    });
    refused(&dir, "class 99999");
    let dir = both(A);
    edit(&dir, |v| {
        v["backends"]["ebpf"]["fill"]["cls4"][0]["addr"] = json!([10, 1, 0, 10, 0])
    });
    refused(&dir, "5-byte address");
}

#[test]
fn a_hook_moved_to_input_is_refused() {
    let dir = both(A);
    edit(&dir, |v| {
        for h in v["backends"]["iptables"]["hooks"].as_array_mut().unwrap() {
            if h["chain"] == "FORWARD" {
                h["chain"] = json!("INPUT");
            }
        }
    });
    refused(&dir, "filter INPUT → WEIR-FWD is not a hook weir writes");
}

#[test]
fn no_file_is_read_from_outside_the_bundle() {
    let dir = both(A);
    edit(&dir, |v| {
        v["backends"]["ebpf"]["object"] = json!("../../../../../etc/hostname")
    });
    let e = read_bundle(&dir).err().unwrap().to_string();
    assert!(e.contains("is not a file the manifest lists"), "{e}");
    // Listed, with the hash of what it points at: still not read.
    let dir = both(A);
    let outside = scratch().join("hostname");
    std::fs::write(&outside, b"node-1\n").unwrap();
    edit(&dir, |v| {
        v["artifacts"]["../hostname"] = json!(weir_compiler::contract::sha256_hex(b"node-1\n"));
        v["backends"]["ebpf"]["object"] = json!("../hostname");
    });
    let e = read_bundle(&dir).err().unwrap().to_string();
    assert!(e.contains("not a plain file name"), "{e}");
    // A symlink in the bundle that leads out of it, with the right hash.
    let dir = both(A);
    std::fs::remove_file(dir.join("weir.o")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("weir.o")).unwrap();
    edit(&dir, |v| {
        v["artifacts"]["weir.o"] = json!(weir_compiler::contract::sha256_hex(b"node-1\n"))
    });
    let e = read_bundle(&dir).err().unwrap().to_string();
    assert!(e.contains("is a symlink"), "{e}");
    // Not a regular file.
    assert!(read_file(Path::new("/dev"), "zero")
        .unwrap_err()
        .to_string()
        .contains("not a regular file"));
}

#[test]
fn a_bundle_without_the_back_end_is_refused_naming_what_it_has() {
    let ebpf_only = compiled(A, &[Target::Ebpf]);
    let e = Bundle::read(&ebpf_only).unwrap_err().to_string();
    assert!(
        e.contains("has no iptables back end (it was compiled for ebpf)")
            && e.contains("--backend ebpf"),
        "{e}"
    );
    let ipt_only = compiled(A, &[Target::Iptables]);
    let e = read_bundle(&ipt_only).err().unwrap().to_string();
    assert!(
        e.contains("has no ebpf back end (it was compiled for iptables)"),
        "{e}"
    );
    // `{}`: no format version.
    let dir = both(A);
    std::fs::write(dir.join(MANIFEST), "{}").unwrap();
    refused(&dir, "has no `format_version`");
    // Another version.
    let dir = both(A);
    edit(&dir, |v| v["format_version"] = json!(1));
    refused(&dir, "bundle format version 1");
}

/// Bundle format 4 writes the class rows sparse (`fill.atom_rows`,
/// `contract::atom_rows`): a bundle of format 3 (dense rows) is refused
/// for its version, a format-3 row shape under version 4 for its shape,
/// and a sparse row that would write outside its row for its values.
#[test]
fn class_rows_are_read_only_in_the_sparse_form_of_format_4() {
    let dir = both(A);
    let mut sparse = Value::Null;
    edit(&dir, |v| {
        sparse = v["backends"]["ebpf"]["fill"]["atom_rows"].clone()
    });
    let width = sparse["width"].as_u64().unwrap();
    assert!(width > 0 && sparse["rows"].as_array().is_some(), "{sparse}");
    read_bundle(&dir).unwrap();
    // The previous format: refused for its version, saying what to do.
    edit(&dir, |v| v["format_version"] = json!(3));
    refused(
        &dir,
        &format!(
            "bundle format version 3, but this weir reads only format version {}; recompile the bundle",
            weir_compiler::contract::FORMAT_VERSION
        ),
    );
    // Dense rows under version 4 and later: not the manifest's shape.
    let dir = both(A);
    edit(&dir, |v| {
        v["backends"]["ebpf"]["fill"]["atom_rows"] = json!([[0, 1], [2, 0]]);
    });
    let e = read_bundle(&dir).err().unwrap().to_string();
    assert!(e.contains("not a valid bundle manifest"), "{e}");
    // A word index at the width: refused before anything is written.
    let dir = both(A);
    edit(&dir, |v| {
        v["backends"]["ebpf"]["fill"]["atom_rows"]["rows"][0] = json!([[width, 1]]);
    });
    let e = read_bundle(&dir).err().unwrap().to_string();
    assert!(
        e.contains("inconsistent bundle manifest")
            && e.contains(&format!("rows are {width} words wide")),
        "{e}"
    );
    // Rows as wide as the map's values, or refused.
    let dir = both(A);
    edit(&dir, |v| {
        v["backends"]["ebpf"]["fill"]["atom_rows"]["width"] = json!(width + 1);
    });
    let e = read_bundle(&dir).err().unwrap().to_string();
    assert!(e.contains("map weir_atoms holds"), "{e}");
}
