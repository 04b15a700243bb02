//! Kernel test of chains kept across generations (issue 21;
//! runtime/src/iptables/keep.rs): a new generation whose chains are
//! renumbered but mostly unchanged keeps the unchanged ones under their
//! old names and loads only the others; the old generation's other
//! chains go; a kept candidate someone changed in the kernel is loaded
//! anew instead; a failed apply's rollback keeps the kept chains. All
//! checked with `iptables-save` in the namespace and `weir status`'s
//! read-back.
//!
//! Needs root; skipped without, unless `CI` is set (then it fails).

mod bundle_common;
mod iptables_common;
use bundle_common::filter_bundle;
use iptables_common::{ready, run, weir_chains};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use weir_runtime::iptables::{Iptables, Options};
use weir_runtime::netns::Netns;
use weir_runtime::Bundle;

/// A bundle of one filter chain tree: `WEIR-FWD` (the hook target) jumps
/// to `chains` (`(name, rules)`; a rule names other chains by their bundle
/// names); `extra` rules of `WEIR-FWD` after the jumps.
fn bundle(dir: &Path, jumps: &[&str], chains: &[(&str, &[&str])]) -> Bundle {
    let mut rules = String::from("*filter\n:WEIR-FWD - [0:0]\n");
    for (c, _) in chains {
        rules.push_str(&format!(":{c} - [0:0]\n"));
    }
    for j in jumps {
        rules.push_str(&format!("-A WEIR-FWD {j}\n"));
    }
    for (c, lines) in chains {
        for l in *lines {
            rules.push_str(&format!("-A {c} {l}\n"));
        }
    }
    rules.push_str("COMMIT\n");
    filter_bundle(dir, &rules, "10.1.0.0/24")
}

/// Every `WEIR…` chain of the filter table but the hooks, with its rules,
/// as `iptables-save` prints them (chain name word dropped).
fn kernel_chains(ns: &Netns) -> BTreeMap<String, Vec<String>> {
    weir_chains(&run(ns, "iptables-save", &["-t", "filter"]))
        .into_iter()
        .filter(|(c, _)| c.starts_with("WEIR") && !c.starts_with("WEIR-HOOK"))
        .collect()
}

fn names(m: &BTreeMap<String, Vec<String>>) -> BTreeSet<&str> {
    m.keys().map(String::as_str).collect()
}

/// The state record's chains.
fn recorded(rt: &Iptables) -> BTreeSet<String> {
    let s = rt.read_state().unwrap().expect("a generation is applied");
    s.chains.iter().map(|c| c.chain.clone()).collect()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-keep-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Program A: `WEIR-N1` → `WEIR-N2` (a set test and an accept), `WEIR-N3`
/// (udp), `WEIR-N4` (an address that B changes).
fn program_a(dir: &Path) -> Bundle {
    bundle(
        dir,
        &[
            "-p tcp -m tcp --dport 80 -j WEIR-N1",
            "-p udp -j WEIR-N3",
            "-j WEIR-N4",
            "-j DROP",
        ],
        &[
            (
                "WEIR-N1",
                &["-m set --match-set weir-a src -j WEIR-N2", "-j RETURN"],
            ),
            ("WEIR-N2", &["-m comment --comment \"weir:1\" -j ACCEPT"]),
            ("WEIR-N3", &["-p udp -m udp --dport 53 -j ACCEPT"]),
            ("WEIR-N4", &["-s 10.9.0.0/16 -j ACCEPT"]),
        ],
    )
}

#[test]
fn unchanged_chains_are_kept_across_generations() {
    if !ready("unchanged_chains_are_kept_across_generations") {
        return;
    }
    let n = Netns::create(&format!("weir-keep{}", std::process::id())).unwrap();
    let work = scratch("keep");
    let rt = Iptables::new(Options::netns(n.name()).with_state_dir(work.join("state")));
    let r = rt.apply(&program_a(&work.join("a"))).unwrap();
    assert_eq!((r.generation, r.kept_chains), (1, 0));
    let gen1 = kernel_chains(&n);

    // B: the same chains renumbered, N4's address changed.
    let b = bundle(
        &work.join("b"),
        &[
            "-p tcp -m tcp --dport 80 -j WEIR-N7",
            "-p udp -j WEIR-N6",
            "-j WEIR-N8",
            "-j DROP",
        ],
        &[
            ("WEIR-N5", &["-m comment --comment \"weir:1\" -j ACCEPT"]),
            ("WEIR-N6", &["-p udp -m udp --dport 53 -j ACCEPT"]),
            (
                "WEIR-N7",
                &["-m set --match-set weir-a src -j WEIR-N5", "-j RETURN"],
            ),
            ("WEIR-N8", &["-s 10.8.0.0/16 -j ACCEPT"]),
        ],
    );
    let r = rt.apply(&b).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(
        (r.generation, r.kept_chains, r.kept_sets),
        (2, 3, 1),
        "{r:?}"
    );
    let have = kernel_chains(&n);
    let want: BTreeSet<&str> = ["WEIR1-N1", "WEIR1-N2", "WEIR1-N3", "WEIR2-FWD", "WEIR2-N8"].into();
    assert_eq!(names(&have), want, "{have:?}");
    // The kept chains are untouched, and the new root jumps into them.
    for c in ["WEIR1-N1", "WEIR1-N2", "WEIR1-N3"] {
        assert_eq!(have[c], gen1[c], "{c}");
    }
    assert!(
        have["WEIR2-FWD"].iter().any(|r| r.ends_with("-j WEIR1-N1")),
        "{have:?}"
    );
    assert_eq!(
        recorded(&rt),
        want.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>()
    );
    let s = rt.status().unwrap();
    assert!(s.in_force, "{s:?}");

    // Someone changes a chain in force; A again wants N1..N4 with A's
    // content: N1 and N2 are kept (still as generation 1 left them), N3
    // differs in the kernel, so it is loaded anew and the changed one
    // goes; N4's content is not B's N8, so it is new too.
    run(&n, "iptables", &["-w", "-A", "WEIR1-N3", "-j", "ACCEPT"]);
    let r = rt.apply(&program_a(&work.join("a3"))).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!((r.generation, r.kept_chains), (3, 2), "{r:?}");
    let have = kernel_chains(&n);
    let want: BTreeSet<&str> = ["WEIR1-N1", "WEIR1-N2", "WEIR3-FWD", "WEIR3-N3", "WEIR3-N4"].into();
    assert_eq!(names(&have), want, "{have:?}");
    assert_eq!(have["WEIR3-N3"], gen1["WEIR1-N3"]);
    assert!(rt.status().unwrap().in_force);

    // A broken generation 4 that would keep N1 and N2: its rollback
    // removes only what it loaded, and generation 3 stays whole.
    let broken = bundle(
        &work.join("broken"),
        &[
            "-p tcp -m tcp --dport 80 -j WEIR-N1",
            "-j WEIR-N9",
            "-j DROP",
        ],
        &[
            (
                "WEIR-N1",
                &["-m set --match-set weir-a src -j WEIR-N2", "-j RETURN"],
            ),
            ("WEIR-N2", &["-m comment --comment \"weir:1\" -j ACCEPT"]),
            ("WEIR-N9", &["-p tcp --dport notaport -j ACCEPT"]),
        ],
    );
    let e = rt.apply(&broken).unwrap_err().to_string();
    assert!(e.contains("step 2"), "{e}");
    assert_eq!(names(&kernel_chains(&n)), want);
    let s = rt.status().unwrap();
    assert!(s.in_force, "{s:?}");
    assert_eq!(s.state.unwrap().generation, 3);

    // Detach removes the kept chains too.
    rt.detach().unwrap();
    assert!(kernel_chains(&n).is_empty(), "{:?}", kernel_chains(&n));
    let _ = std::fs::remove_dir_all(&work);
}
