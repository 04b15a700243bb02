//! Kernel test of a replace that creates its sets while the rules are
//! still being saved (issue 21; runtime/src/iptables/apply/start.rs). The
//! generation number is picked from the sets before the chains are known,
//! so a chain of that number left in the kernel (here made by hand) must
//! make the apply destroy the sets it created and pick the next free
//! number, leaving that chain alone. Checked with `ipset save` and
//! `iptables-save` in the namespace.
//!
//! Needs root; skipped without, unless `CI` is set (then it fails).

mod bundle_common;
mod iptables_common;
use bundle_common::seal;
use iptables_common::{ready, run};
use weir_compiler::contract::iptables::Family;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use weir_runtime::iptables::{Iptables, Options};
use weir_runtime::netns::Netns;
use weir_runtime::Bundle;

/// A bundle: one IPv4 set per `(name, member)`, each tested by one rule
/// accepting tcp to `port`.
fn bundle(dir: &Path, sets: &[(&str, &str)], port: u16) -> Bundle {
    std::fs::create_dir_all(dir).unwrap();
    let mut ipset = String::new();
    let mut rules = String::from("*filter\n:WEIR-FWD - [0:0]\n");
    for (name, member) in sets {
        ipset.push_str(&format!(
            "create {name} hash:net family inet hashsize 64 maxelem 1024\nadd {name} {member}\n"
        ));
        rules.push_str(&format!(
            "-A WEIR-FWD -p tcp --dport {port} -m set --match-set {name} src -j ACCEPT\n"
        ));
    }
    rules.push_str("-A WEIR-FWD -j DROP\nCOMMIT\n");
    std::fs::write(dir.join("ipset.rules"), ipset).unwrap();
    std::fs::write(dir.join("iptables.rules"), rules).unwrap();
    std::fs::write(dir.join("ip6tables.rules"), "").unwrap();
    let names: Vec<(&str, Family)> = sets.iter().map(|(n, _)| (*n, Family::Ipv4)).collect();
    seal(dir, &[("filter", "FORWARD", "WEIR-FWD", "ipv4")], &names);
    Bundle::read(dir).unwrap()
}

/// Every `weir…` set in the namespace.
fn kernel_sets(ns: &Netns) -> BTreeSet<String> {
    run(ns, "ipset", &["list", "-n"])
        .lines()
        .filter(|l| l.starts_with("weir"))
        .map(str::to_string)
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-early-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_chain_of_the_next_generation_makes_the_replace_pick_another() {
    if !ready("a_chain_of_the_next_generation_makes_the_replace_pick_another") {
        return;
    }
    let n = Netns::create(&format!("weir-early{}", std::process::id())).unwrap();
    let work = scratch("stale");
    let rt = Iptables::new(Options::netns(n.name()).with_state_dir(work.join("state")));
    let a = bundle(
        &work.join("a"),
        &[("weir-shared", "10.1.0.0/24"), ("weir-old", "10.2.0.0/24")],
        80,
    );
    assert_eq!(rt.apply(&a).unwrap().generation, 1);

    // A chain named like generation 2's, which no record knows.
    run(&n, "iptables", &["-t", "filter", "-N", "WEIR2-STALE"]);
    run(
        &n,
        "iptables",
        &["-t", "filter", "-A", "WEIR2-STALE", "-j", "RETURN"],
    );

    // The replace keeps `shared` and creates `fresh`: under generation 3,
    // not 2, and nothing of generation 2 is left or touched.
    let b = bundle(
        &work.join("b"),
        &[
            ("weir-shared", "10.1.0.0/24"),
            ("weir-fresh", "10.3.0.0/24"),
        ],
        81,
    );
    let r = rt.apply(&b).unwrap();
    assert_eq!((r.generation, r.kept_sets), (3, 1), "{r:?}");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let want: BTreeSet<String> = ["weir1-shared", "weir3-fresh"]
        .into_iter()
        .map(str::to_string)
        .collect();
    assert_eq!(kernel_sets(&n), want);
    let save = run(&n, "iptables-save", &["-t", "filter"]);
    assert!(
        save.lines().any(|l| l == "-A WEIR2-STALE -j RETURN"),
        "{save}"
    );
    assert!(save.contains("--match-set weir3-fresh src"), "{save}");
    assert!(rt.status().unwrap().in_force);

    // Without a stale chain the next replace takes the next number.
    let r = rt.apply(&a).unwrap();
    assert_eq!(r.generation, 4, "{r:?}");
    assert!(rt.status().unwrap().in_force);
    rt.detach().unwrap();
    assert!(kernel_sets(&n).is_empty(), "{:?}", kernel_sets(&n));
    let _ = std::fs::remove_dir_all(&work);
}
