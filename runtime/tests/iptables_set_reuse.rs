//! Kernel test of set sharing across generations (issue 21;
//! runtime/src/iptables/reuse.rs): a replace keeps the sets of the
//! generation in force whose members are unchanged, under their old names,
//! and creates only the others; the old generation's own sets go; a set
//! changed by `weir endpoints` afterwards is not taken for the bundle's
//! original one; a failed apply's rollback keeps the shared sets. All
//! checked with `ipset save` / `iptables-save` in the namespace.
//!
//! Needs root; skipped without, unless `CI` is set (then it fails).

mod bundle_common;
mod iptables_common;
use bundle_common::seal;
use iptables_common::{ready, run};
use weir_compiler::contract::iptables::Family;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use weir_runtime::iptables::{Iptables, Options};
use weir_runtime::netns::Netns;
use weir_runtime::Bundle;

/// A bundle: one IPv4 set per `(name, members)`, each tested by one rule
/// accepting tcp to `port`; `rule` added (a broken one fails step 2).
fn bundle(dir: &Path, sets: &[(&str, &[&str])], port: u16, rule: Option<&str>) -> Bundle {
    std::fs::create_dir_all(dir).unwrap();
    let mut ipset = String::new();
    let mut rules = String::from("*filter\n:WEIR-FWD - [0:0]\n");
    for (name, members) in sets {
        ipset.push_str(&format!(
            "create {name} hash:net family inet hashsize 64 maxelem 1024\n"
        ));
        for m in *members {
            ipset.push_str(&format!("add {name} {m}\n"));
        }
        rules.push_str(&format!(
            "-A WEIR-FWD -p tcp --dport {port} -m set --match-set {name} src -j ACCEPT\n"
        ));
    }
    if let Some(r) = rule {
        rules.push_str(r);
        rules.push('\n');
    }
    rules.push_str("-A WEIR-FWD -j DROP\nCOMMIT\n");
    std::fs::write(dir.join("ipset.rules"), ipset).unwrap();
    std::fs::write(dir.join("iptables.rules"), rules).unwrap();
    std::fs::write(dir.join("ip6tables.rules"), "").unwrap();
    let names: Vec<(&str, Family)> = sets.iter().map(|(n, _)| (*n, Family::Ipv4)).collect();
    seal(dir, &[("filter", "FORWARD", "WEIR-FWD", "ipv4")], &names);
    Bundle::read(dir).unwrap()
}

/// Every `weir…` set in the namespace with its members (`ipset save`).
fn kernel_sets(ns: &Netns) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for l in run(ns, "ipset", &["save"]).lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["create", name, ..] if name.starts_with("weir") => {
                out.entry(name.to_string()).or_default();
            }
            ["add", name, m, ..] if name.starts_with("weir") => {
                out.entry(name.to_string())
                    .or_default()
                    .insert(m.to_string());
            }
            _ => {}
        }
    }
    out
}

fn sets(list: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
    list.iter()
        .map(|(n, m)| (n.to_string(), m.iter().map(|s| s.to_string()).collect()))
        .collect()
}

/// The sets the rules name (`iptables-save`).
fn matched(ns: &Netns) -> BTreeSet<String> {
    run(ns, "iptables-save", &["-t", "filter"])
        .lines()
        .filter_map(|l| l.split("--match-set ").nth(1))
        .filter_map(|r| r.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The state record's kernel set names.
fn recorded(rt: &Iptables) -> BTreeSet<String> {
    let s = rt.read_state().unwrap().expect("a generation is applied");
    s.sets.iter().map(|s| s.kernel_name.clone()).collect()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-reuse-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn unchanged_sets_are_kept_across_generations() {
    if !ready("unchanged_sets_are_kept_across_generations") {
        return;
    }
    let n = Netns::create(&format!("weir-reuse{}", std::process::id())).unwrap();
    let work = scratch("keep");
    let rt = Iptables::new(Options::netns(n.name()).with_state_dir(work.join("state")));
    let a_sets: &[(&str, &[&str])] = &[
        ("weir-shared", &["10.1.0.0/24"]),
        ("weir-gone", &["10.3.0.0/24"]),
        ("weir-changed", &["10.4.0.0/24"]),
        ("weir-moved", &["10.7.0.0/24"]),
    ];
    let a = bundle(&work.join("a"), a_sets, 80, None);
    assert_eq!(rt.apply(&a).unwrap().generation, 1);

    // Generation 2 keeps `shared` (same name, same members) and `moved`
    // (same members under another bundle name); `changed` gains a member,
    // `fresh` is new, `gone` is not in it.
    let b = bundle(
        &work.join("b"),
        &[
            ("weir-shared", &["10.1.0.0/24"]),
            ("weir-changed", &["10.4.0.0/24", "10.5.0.0/24"]),
            ("weir-fresh", &["10.6.0.0/24"]),
            ("weir-moved2", &["10.7.0.0/24"]),
        ],
        81,
        None,
    );
    let r = rt.apply(&b).unwrap();
    assert_eq!((r.generation, r.kept_sets), (2, 2), "{r:?}");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let want = sets(&[
        ("weir1-shared", &["10.1.0.0/24"]),
        ("weir1-moved", &["10.7.0.0/24"]),
        ("weir2-changed", &["10.4.0.0/24", "10.5.0.0/24"]),
        ("weir2-fresh", &["10.6.0.0/24"]),
    ]);
    // Each shared set exists once; the old generation's own sets are gone.
    assert_eq!(kernel_sets(&n), want);
    assert_eq!(matched(&n), want.keys().cloned().collect());
    assert_eq!(recorded(&rt), want.keys().cloned().collect());
    assert!(rt.status().unwrap().in_force);

    // An endpoint update of the shared set (one generation exists now).
    rt.update_set("weir-shared", &["10.9.0.0/24".into()], &[])
        .unwrap();
    assert_eq!(
        kernel_sets(&n)["weir1-shared"],
        sets(&[("x", &["10.1.0.0/24", "10.9.0.0/24"])])["x"]
    );
    assert!(rt.status().unwrap().in_force);

    // Generation 3 is bundle A again: its `shared` wants 10.1.0.0/24 only,
    // which the edited set no longer is, so it gets its own; `moved` is
    // still A's content and is kept (bundle name `weir-moved2` in
    // generation 2's record, `weir-moved` in A).
    let r = rt.apply(&a).unwrap();
    assert_eq!((r.generation, r.kept_sets), (3, 1), "{r:?}");
    let want = sets(&[
        ("weir1-moved", &["10.7.0.0/24"]),
        ("weir3-shared", &["10.1.0.0/24"]),
        ("weir3-gone", &["10.3.0.0/24"]),
        ("weir3-changed", &["10.4.0.0/24"]),
    ]);
    assert_eq!(kernel_sets(&n), want);
    assert_eq!(matched(&n), want.keys().cloned().collect());
    assert_eq!(recorded(&rt), want.keys().cloned().collect());
    assert!(rt.status().unwrap().in_force);

    // A broken generation 4 sharing `moved` and `shared`: its rollback
    // removes only what it created, and generation 3 stays whole.
    let broken = bundle(
        &work.join("broken"),
        &[
            ("weir-shared", &["10.1.0.0/24"]),
            ("weir-moved", &["10.7.0.0/24"]),
            ("weir-new", &["10.8.0.0/24"]),
        ],
        82,
        Some("-A WEIR-FWD -p tcp --dport notaport -j ACCEPT"),
    );
    let e = rt.apply(&broken).unwrap_err().to_string();
    assert!(e.contains("step 2"), "{e}");
    assert_eq!(kernel_sets(&n), want);
    let s = rt.status().unwrap();
    assert!(s.in_force, "{s:?}");
    assert_eq!(s.state.unwrap().generation, 3);

    // Detach removes the shared set too.
    rt.detach().unwrap();
    assert!(kernel_sets(&n).is_empty(), "{:?}", kernel_sets(&n));
    let _ = std::fs::remove_dir_all(&work);
}
