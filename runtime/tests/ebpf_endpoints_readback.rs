//! `weir endpoints` on the eBPF back end reports success only after
//! reading back what it wrote: when the kernel holds something else for a
//! written key (here `bpftool`, another writer, changes a class-map entry
//! or deletes a `self` entry between the writes and the read-back), the
//! update fails naming the entry, its writes are rolled back (the maps
//! are what they were, read with `bpftool map dump`), and nothing is
//! recorded: the same inventory applied again without interference is
//! still a change, and then the kernel holds the new entries.
//!
//! Needs root, `ip` and `bpftool`; skipped without them unless `CI` is set
//! (then it fails).

mod bundle_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use weir_compiler::bundle::Target;
use weir_compiler::ebpf::layout::map::{HOST4, SELF4};
use weir_runtime::endpoints::{self, EndpointsError};
use weir_runtime::netns::{Topology, NODE_CLIENT_IF};

const SRC: &str = r#"
endpoint web   { labels { app: "web" }   addr 10.1.0.10 }
endpoint db    { labels { app: "db" }    addr 10.2.0.20 }

policy db-in {
  applies to app == "db"
  ingress {
    allow tcp 5432 from app == "web"
    allow from self
    deny from any
  }
}
"#;

/// The compiled endpoints (declared in the source) plus web-1.
const INVENTORY: &str = r#"{ "endpoints": [
  { "name": "web-1", "labels": { "app": "web" }, "addrs": ["10.1.1.1"] }
] }"#;

fn write_bundle(dir: &Path) {
    bundle_common::write_source(dir, SRC, None, Target::Ebpf, &Default::default());
}

fn bpftool(args: &[&str], map: &Path) -> Vec<u8> {
    let o = Command::new("bpftool")
        .args(&args[..2])
        .arg("pinned")
        .arg(map)
        .args(&args[2..])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// A map as the kernel has it (bpftool's dump, sorted).
fn dump(map: &Path) -> Vec<String> {
    let o = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(map)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.to_string())
        .collect();
    out.sort();
    out
}

/// The value bpftool reads for `key` (hex bytes), `None` when absent.
fn lookup(map: &Path, key: &[&str]) -> Option<Vec<String>> {
    let o = Command::new("bpftool")
        .args(["-j", "map", "lookup", "pinned"])
        .arg(map)
        .arg("key")
        .args(key)
        .output()
        .unwrap();
    if !o.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    v["value"]
        .as_array()
        .map(|a| a.iter().map(|b| b.as_str().unwrap().to_string()).collect())
}

#[test]
fn ebpf_endpoints_fail_when_the_kernel_does_not_hold_the_writes() {
    if !weir_runtime::kernel_test::may_run(
        "ebpf_endpoints_fail_when_the_kernel_does_not_hold_the_writes",
        &["ip", "bpftool"],
    ) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir("ebpf-readback").unwrap();
    let dir = work.join("bundle");
    write_bundle(&dir);
    let topo = Topology::new().expect("netns topology");
    let pid = std::process::id();
    let mut inst = weir_runtime::ebpf::Instance::new(NODE_CLIENT_IF, Some(topo.node.name()));
    inst.pin_root = PathBuf::from(format!("/sys/fs/bpf/weir-test-readback-{pid}"));
    inst.state_root = work.join("state");
    let g = weir_runtime::ebpf::apply(&dir, &inst).unwrap().generation;
    let gen = inst.pin_dir().join(format!("gen-{g}"));
    let (host, same) = (gen.join(HOST4), gen.join(SELF4));
    let before = (dump(&host), dump(&same));
    let web1 = ["10", "1", "1", "1"];

    // Another writer gives web-1's class-map entry another value.
    let r = endpoints::ebpf_text_with_hook(&inst, &dir, INVENTORY, &mut || {
        bpftool(
            &[
                "map", "update", "key", "10", "1", "1", "1", "value", "hex", "7f", "00", "00", "00",
            ],
            &host,
        );
    });
    match r {
        Err(EndpointsError::NotHeld { differ, .. }) => {
            assert_eq!(differ.len(), 1, "{differ:?}");
            assert!(differ[0].contains(HOST4), "{differ:?}");
            assert!(differ[0].contains("address 10.1.1.1"), "{differ:?}");
            assert!(
                differ[0].contains("the kernel holds 7f000000"),
                "{differ:?}"
            );
        }
        other => panic!("the kernel disagrees, the update must fail: {other:?}"),
    }
    assert!(
        (dump(&host), dump(&same)) == before,
        "the failed update's writes are rolled back"
    );

    // Another writer deletes web-1's `self` entry.
    let r = endpoints::ebpf_text_with_hook(&inst, &dir, INVENTORY, &mut || {
        bpftool(&["map", "delete", "key", "10", "1", "1", "1"], &same);
    });
    match r {
        Err(e @ EndpointsError::NotHeld { .. }) => {
            let m = e.to_string();
            assert!(m.contains(SELF4) && m.contains("10.1.1.1"), "{m}");
            assert!(m.contains("the kernel holds no entry"), "{m}");
            assert!(m.contains("rolled back"), "{m}");
        }
        other => panic!("the kernel disagrees, the update must fail: {other:?}"),
    }
    assert!((dump(&host), dump(&same)) == before);

    // Nothing was recorded: the same inventory is still a change, and
    // applied undisturbed it is in force.
    let r = endpoints::ebpf_text(&inst, &dir, INVENTORY).unwrap();
    assert_eq!(r.changes.len(), 1, "{:?}", r.changes);
    let class = r.changes[0].new.expect("web-1 has a class");
    let want: Vec<String> = class
        .to_ne_bytes()
        .iter()
        .map(|b| format!("0x{b:02x}"))
        .collect();
    assert_eq!(lookup(&host, &web1), Some(want));
    assert_eq!(
        lookup(&same, &web1),
        Some(vec![
            "0x0a".into(),
            "0x01".into(),
            "0x01".into(),
            "0x01".into()
        ])
    );
    assert_eq!(dump(&host).len(), before.0.len() + 1);

    weir_runtime::ebpf::detach(&inst).unwrap();
    let _ = std::fs::remove_dir_all(&work);
}
