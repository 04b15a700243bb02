//! Kernel tests of a replace's start (issue 21;
//! runtime/src/iptables/apply/start.rs):
//! - the sets are created only once the rules' save is done (the two
//!   serialise on the kernel's ipset mutex when they overlap): the exec
//!   log's order, with a table whose save takes long (many `-m set`
//!   rules, made by hand and left alone);
//! - the bundle is planned for the likely generation number beside the
//!   saves, so a chain of that number left in the kernel (made by hand)
//!   must make the apply pick the next free number, creating no set under
//!   the taken one and leaving that chain alone.
//!
//! Checked with `ipset save` and `iptables-save` in the namespace.
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

/// Foreign `-m set` rules (not weir's, left alone) that make the
/// namespace's `iptables-save` take tens of milliseconds: libxt_set asks
/// the kernel for each rule's set name.
const FOREIGN_RULES: usize = 10_000;

/// The replacing bundle both tests apply second: it keeps `shared` (the
/// same members as the first bundle's) and needs a new set `fresh`.
fn shared_and_fresh(dir: &Path) -> Bundle {
    bundle(
        dir,
        &[
            ("weir-shared", "10.1.0.0/24"),
            ("weir-fresh", "10.3.0.0/24"),
        ],
        81,
    )
}
#[test]
fn the_replace_creates_its_sets_after_the_rules_save() {
    if !ready("the_replace_creates_its_sets_after_the_rules_save") {
        return;
    }
    let n = Netns::create(&format!("weir-order{}", std::process::id())).unwrap();
    let work = scratch("order");
    run(&n, "ipset", &["create", "other", "hash:net"]);
    let mut foreign = String::from("*filter\n:OTHER - [0:0]\n");
    for i in 0..FOREIGN_RULES {
        foreign.push_str(&format!(
            "-A OTHER -p tcp --dport {} -m set --match-set other src -j RETURN\n",
            1 + i % 60_000
        ));
    }
    foreign.push_str("COMMIT\n");
    let restore = n
        .exec_with_input("iptables-restore", &["--noflush"], Some(&foreign))
        .unwrap();
    assert!(restore.status.success(), "{restore:?}");

    let rt = Iptables::new(Options::netns(n.name()).with_state_dir(work.join("state")));
    let a = bundle(
        &work.join("a"),
        &[("weir-shared", "10.1.0.0/24"), ("weir-old", "10.2.0.0/24")],
        80,
    );
    rt.apply(&a).unwrap();
    let b = shared_and_fresh(&work.join("b"));
    let before = rt.exec().log().len();
    let r = rt.apply(&b).unwrap();
    assert_eq!((r.generation, r.kept_sets), (2, 1), "{r:?}");
    // The log is in order of completion: the set restore must start
    // after both families' saves have ended, so it is logged after them.
    let log = rt.exec().log();
    let log = &log[before..];
    let restore = log
        .iter()
        .position(|c| {
            (c.program == "ipset"
                || c.program == weir_runtime::iptables::xt::ipset_load::IPSET_DIRECT)
                && c.args.first().is_some_and(|a| a == "restore")
        })
        .expect("the replace creates a set");
    let saves: Vec<usize> = (0..log.len())
        .filter(|&i| log[i].program.contains("tables") && log[i].program.ends_with("-save"))
        .take(2)
        .collect();
    assert_eq!(saves.len(), 2, "{log:?}");
    assert!(
        saves.iter().all(|&s| s < restore),
        "ipset restore (log entry {restore}) ran before the rules' saves ended ({saves:?}): {:?}",
        log.iter().map(|c| &c.program).collect::<Vec<_>>()
    );
    assert!(rt.status().unwrap().in_force);
    rt.detach().unwrap();
    // The foreign chain and set are left alone.
    let save = run(&n, "iptables-save", &["-t", "filter"]);
    assert_eq!(
        save.lines().filter(|l| l.starts_with("-A OTHER ")).count(),
        FOREIGN_RULES
    );
    assert_eq!(
        run(&n, "ipset", &["list", "-n"]).trim(),
        "other",
        "weir's sets are gone, the foreign one stays"
    );
    let _ = std::fs::remove_dir_all(&work);
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
    let b = shared_and_fresh(&work.join("b"));
    let before = rt.exec().log().len();
    let r = rt.apply(&b).unwrap();
    assert_eq!((r.generation, r.kept_sets), (3, 1), "{r:?}");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    // The number is known before any set is created: none was created
    // under the taken one (and destroyed again).
    let log = rt.exec().log();
    let created_under_2 = log[before..].iter().any(|c| {
        (c.program == "ipset" || c.program == weir_runtime::iptables::xt::ipset_load::IPSET_DIRECT)
            && c.stdin
                .as_deref()
                .is_some_and(|t| t.contains("create weir2-"))
    });
    assert!(!created_under_2, "{:?}", &log[before..]);
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
