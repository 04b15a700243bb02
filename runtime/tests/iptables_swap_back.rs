//! `weir endpoints` on iptables writes the touched sets with one `ipset
//! restore` batch of `swap` lines (`iptables/sets.rs`). A batch stops at
//! its first failing line, leaving the sets before it swapped: the update
//! must then swap back every set found holding the new members, so the
//! live sets are exactly as before, no temporary set is left, and the
//! update fails. An `ipset` in front of the real one on `PATH` fails the
//! swap batch after its first line; the test runs alone in its binary
//! because it changes the process's `PATH`.

mod bundle_common;

use std::net::IpAddr;
use std::path::Path;

use weir_compiler::bundle::Target;
use weir_compiler::churn::EndpointRec;
use weir_runtime::endpoints;
use weir_runtime::iptables::{exec, Iptables, Options};
use weir_runtime::Bundle;

/// Two atoms on `web` (`app` and `tier`) with different members (`cache`
/// is `tier: front` only), so that a web endpoint added changes at least
/// two sets (a set whose members would not change is not swapped).
const SRC: &str = r#"
inventory "inventory.json"
policy db-in {
  applies to app == "db"
  ingress {
    allow tcp 5432 from app == "web"
    allow tcp 9187 from tier == "front"
    deny from any
  }
}
"#;

const INVENTORY: &str = r#"{ "endpoints": [
  { "name": "web", "labels": { "app": "web", "tier": "front" }, "addrs": ["10.1.0.10"] },
  { "name": "cache", "labels": { "app": "cache", "tier": "front" }, "addrs": ["10.1.0.11"] },
  { "name": "db",  "labels": { "app": "db" },                   "addrs": ["10.2.0.20"] }
] }"#;

fn ep(name: &str, labels: &[(&str, &str)], addr: &str) -> EndpointRec {
    EndpointRec {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ready: true,
        addrs: vec![addr.parse::<IpAddr>().unwrap()],
    }
}

fn base() -> Vec<EndpointRec> {
    vec![
        ep("web", &[("app", "web"), ("tier", "front")], "10.1.0.10"),
        ep("cache", &[("app", "cache"), ("tier", "front")], "10.1.0.11"),
        ep("db", &[("app", "db")], "10.2.0.20"),
    ]
}

fn write_bundle(dir: &Path) {
    bundle_common::write_source(
        dir,
        SRC,
        Some(INVENTORY),
        Target::Iptables,
        &Default::default(),
    );
}

/// An `ipset` that runs the real one, but fails a `restore` batch of
/// `swap` lines after its first line (as ipset does when a later line
/// fails).
fn write_shim(dir: &Path, real: &Path) {
    let shim = dir.join("ipset");
    let real = real.display();
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\n\
             if [ \"$1\" = restore ]; then\n\
               input=$(cat)\n\
               case \"$input\" in\n\
                 swap*) printf '%s\\n' \"$input\" | head -n 1 | {real} restore\n\
                        echo 'ipset: Error in line 2: injected by the test' >&2; exit 1 ;;\n\
               esac\n\
               printf '%s\\n' \"$input\" | {real} \"$@\"; exit $?\n\
             fi\n\
             exec {real} \"$@\"\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_swap_batch_that_stops_part_way_is_swapped_back() {
    if !weir_runtime::kernel_test::may_run(
        "a_swap_batch_that_stops_part_way_is_swapped_back",
        &["ip", "iptables-restore", "ip6tables-restore", "ipset"],
    ) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir("swap-back").unwrap();
    let dir = work.join("bundle");
    write_bundle(&dir);
    let node =
        weir_runtime::netns::Netns::create(&format!("weir-swapb-{}", std::process::id())).unwrap();
    let rt = Iptables::new(Options::netns(node.name()).with_state_dir(work.join("state")));
    let b = Bundle::read(&dir).unwrap();
    rt.apply(&b).unwrap();
    let sets = || {
        let o = node.exec("ipset", &["save"]).unwrap();
        String::from_utf8(o.stdout).unwrap()
    };
    let before = sets();
    let mut more = base();
    more.push(ep(
        "web-2",
        &[("app", "web"), ("tier", "front")],
        "10.1.0.12",
    ));

    // The swap batch fails after its first line.
    let real = exec::find_program("ipset").unwrap();
    let shim_dir = work.join("shim");
    std::fs::create_dir_all(&shim_dir).unwrap();
    write_shim(&shim_dir, &real);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let shimmed =
        std::env::join_paths(std::iter::once(shim_dir.clone()).chain(std::env::split_paths(&path)))
            .unwrap();
    // This binary's only test: no other thread reads the environment
    // while it is changed.
    std::env::set_var("PATH", &shimmed);
    let failed = endpoints::iptables(&rt, &b, &more);
    std::env::set_var("PATH", &path);
    let log = rt.exec().log();
    let swaps = log
        .iter()
        .rev()
        .find_map(|c| c.stdin.as_deref().filter(|t| t.starts_with("swap ")))
        .expect("a swap batch ran");
    // The batch reads the swapped sets back after its `swap` lines.
    assert!(
        swaps.lines().filter(|l| l.starts_with("swap ")).count() >= 2,
        "the update touches two sets or more: {swaps}"
    );
    assert!(failed.is_err(), "the update must fail: {failed:?}");
    assert_eq!(sets(), before, "every set as before the update");
    assert!(!sets().contains("weirt"), "no temporary set left");
    assert!(rt.status().unwrap().in_force);

    // Without the fault the same update goes through.
    let r = endpoints::iptables(&rt, &b, &more).unwrap();
    assert_eq!(r.changes.len(), 1, "{r:?}");
    assert!(sets().contains("10.1.0.12"));
    assert!(rt.status().unwrap().in_force);
    rt.detach().unwrap();
    let _ = std::fs::remove_dir_all(&work);
}
