//! Kernel test of the old generation's removal inside the switch
//! transaction (issue 21; runtime/src/iptables/fold.rs), with the legacy
//! tools (the nf_tables tools keep the removal apart):
//!
//! - an update runs one `iptables-legacy-restore` for IPv4 (load, switch
//!   and removal in one COMMIT), and afterwards the kernel holds exactly
//!   the new generation's chains;
//! - an update whose read-back fails (after that COMMIT removed the old
//!   generation's chains) puts the old generation back exactly:
//!   `iptables-legacy-save` of our chains, rule for rule, as before it,
//!   the hooks jumping into it, `weir status` in force;
//! - applies killed at points spread evenly over an update (so also
//!   between the folded switch and the state record) are rolled back or
//!   finished by the next command, with exactly the recorded chains in
//!   the kernel.
//!
//! Needs root; skipped without, unless `CI` is set (then it fails).

mod bundle_common;
mod iptables_common;
use bundle_common::filter_bundle;
use iptables_common::{run, weir_chains};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use weir_runtime::iptables::{Iptables, Options, Variant};
use weir_runtime::netns::Netns;
use weir_runtime::Bundle;

/// A bundle: `WEIR-FWD` (the FORWARD hook's target) jumps to `n` chains
/// `WEIR-T<i>` that accept TCP port `port + i` from set `weir-a`, then
/// `extra` rules of `WEIR-FWD`, then DROP.
fn bundle(dir: &Path, port: u16, n: u16, extra: &[&str]) -> Bundle {
    let mut r = String::from("*filter\n:WEIR-FWD - [0:0]\n");
    for i in 0..n {
        r.push_str(&format!(":WEIR-T{i} - [0:0]\n"));
    }
    for i in 0..n {
        r.push_str(&format!(
            "-A WEIR-FWD -p tcp -m tcp --dport {} -j WEIR-T{i}\n",
            port + i
        ));
        r.push_str(&format!(
            "-A WEIR-T{i} -m set --match-set weir-a src -m comment --comment \"weir:{i}\" -j ACCEPT\n"
        ));
    }
    for e in extra {
        r.push_str(&format!("-A WEIR-FWD {e}\n"));
    }
    r.push_str("-A WEIR-FWD -j DROP\nCOMMIT\n");
    filter_bundle(dir, &r, &format!("10.{}.0.0/24", port % 250))
}

/// Every `WEIR…` chain of the IPv4 filter table with its rules, as
/// `iptables-legacy-save` prints them, the hook chains included.
fn ours(ns: &Netns) -> BTreeMap<String, Vec<String>> {
    weir_chains(&run(ns, "iptables-legacy-save", &["-t", "filter"]))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-fold-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn runtime(ns: &Netns, state: &Path) -> Iptables {
    Iptables::new(
        Options::netns(ns.name())
            .with_state_dir(state)
            .with_variant(Variant::Legacy),
    )
}

/// The recorded chains (and the hook chain) against the kernel's.
fn only_recorded(rt: &Iptables, ns: &Netns) {
    let st = rt.read_state().unwrap().expect("a generation is recorded");
    let mut want: Vec<String> = st.chains.iter().map(|c| c.chain.clone()).collect();
    want.push("WEIR-HOOK-FORWARD".into());
    want.sort();
    let have: Vec<String> = ours(ns)
        .into_keys()
        .filter(|c| c.starts_with("WEIR"))
        .collect();
    assert_eq!(have, want);
}

#[test]
fn old_generation_goes_in_the_switch_and_comes_back_on_a_failed_read_back() {
    if !iptables_common::ready_legacy(
        "old_generation_goes_in_the_switch_and_comes_back_on_a_failed_read_back",
    ) {
        return;
    }
    let n = Netns::create(&format!("weir-fold{}", std::process::id())).unwrap();
    let work = scratch("fold");
    let rt = runtime(&n, &work.join("state"));
    assert_eq!(
        rt.apply(&bundle(&work.join("a"), 80, 4, &[]))
            .unwrap()
            .generation,
        1
    );
    let gen1 = ours(&n);
    assert!(gen1.contains_key("WEIR1-T3"), "{gen1:?}");

    // An update (other ports: no chain kept) in one IPv4 restore run.
    let before = rt.exec().log().len();
    let r = rt.apply(&bundle(&work.join("b"), 90, 4, &[])).unwrap();
    assert_eq!((r.generation, r.kept_chains), (2, 0), "{r:?}");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let restores: Vec<_> = rt.exec().log()[before..]
        .iter()
        // The direct x_tables loader's replace (runtime/src/iptables/xt)
        // stands for the tool's run, unless WEIR_XTABLES=tools.
        .filter(|x| {
            x.program
                == match weir_runtime::iptables::xt::XtMode::from_env() {
                    weir_runtime::iptables::xt::XtMode::Direct => {
                        weir_runtime::iptables::xt::DIRECT
                    }
                    weir_runtime::iptables::xt::XtMode::Tools => "iptables-legacy-restore",
                }
        })
        .cloned()
        .collect();
    assert_eq!(restores.len(), 1, "{restores:?}");
    assert!(
        restores[0]
            .stdin
            .as_deref()
            .is_some_and(|t| t.contains("-X WEIR1-T0")),
        "{restores:?}"
    );
    only_recorded(&rt, &n);
    assert!(rt.status().unwrap().in_force);
    let gen2 = ours(&n);

    // The kernel's icmp match takes type 255 as "any": the read-back
    // refuses generation 3 after its COMMIT removed generation 2's
    // chains, and the rollback must load them again.
    let widened = bundle(
        &work.join("c"),
        100,
        4,
        &["-p icmp -m icmp --icmp-type 255 -j ACCEPT"],
    );
    let e = rt.apply(&widened).unwrap_err().to_string();
    assert!(e.contains("reading back generation 3"), "{e}");
    assert_eq!(ours(&n), gen2, "generation 2 is not back exactly");
    let s = rt.status().unwrap();
    assert!(s.in_force, "{s:?}");
    assert_eq!(s.state.unwrap().generation, 2);
    only_recorded(&rt, &n);
    assert!(!work.join("state/applied.next.json").exists());

    // And a good update after it.
    let r = rt.apply(&bundle(&work.join("d"), 110, 4, &[])).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    only_recorded(&rt, &n);
    assert!(rt.status().unwrap().in_force);
    rt.detach().unwrap();
    assert!(ours(&n).is_empty(), "{:?}", ours(&n));
    let _ = std::fs::remove_dir_all(&work);
}

/// The child of [`killed_applies_are_rolled_back_or_finished`]: one apply
/// (a no-op unless the variables are set).
#[test]
fn fold_crash_child() {
    let (Ok(dir), Ok(netns), Ok(state)) = (
        std::env::var("WEIR_FOLD_BUNDLE"),
        std::env::var("WEIR_FOLD_NETNS"),
        std::env::var("WEIR_FOLD_STATE"),
    ) else {
        return;
    };
    let rt = Iptables::new(
        Options::netns(&netns)
            .with_state_dir(state)
            .with_variant(Variant::Legacy),
    );
    rt.apply(&Bundle::read(Path::new(&dir)).unwrap()).unwrap();
}

#[test]
fn killed_applies_are_rolled_back_or_finished() {
    if !iptables_common::ready_legacy("killed_applies_are_rolled_back_or_finished") {
        return;
    }
    const KILLS: u64 = 24;
    let n = Netns::create(&format!("weir-foldk{}", std::process::id())).unwrap();
    let work = scratch("kill");
    let state = work.join("state");
    let rt = runtime(&n, &state);
    let bundles = [
        bundle(&work.join("a"), 80, 40, &[]),
        bundle(&work.join("b"), 200, 40, &[]),
    ];
    let child = |b: &Bundle| {
        Command::new(std::env::current_exe().unwrap())
            .args(["fold_crash_child", "--exact", "--test-threads=1", "--quiet"])
            .env("WEIR_FOLD_BUNDLE", &b.dir)
            .env("WEIR_FOLD_NETNS", n.name())
            .env("WEIR_FOLD_STATE", &state)
            .env_remove("CI")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    assert!(child(&bundles[0]).wait().unwrap().success());
    // How long an update takes here, to spread the kills over it.
    let t = Instant::now();
    assert!(child(&bundles[1]).wait().unwrap().success());
    let span = t.elapsed().as_micros() as u64 + 1;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut rolled_back, mut finished) = (0, 0);
    for k in 0..KILLS {
        assert!(Instant::now() < deadline, "kill {k}: out of time");
        let mut c = child(&bundles[(k % 2) as usize]);
        // Spread evenly over the update (the late part holds the switch).
        std::thread::sleep(Duration::from_micros(span * (k + 1) / (KILLS + 1)));
        let _ = c.kill();
        let _ = c.wait();
        let s = rt.status().unwrap();
        assert!(s.in_force, "kill {k}: {s:?}");
        only_recorded(&rt, &n);
        for r in &s.recovered {
            if r.contains("rolled back") {
                rolled_back += 1;
            } else {
                finished += 1;
            }
        }
    }
    eprintln!("{rolled_back} rolled back, {finished} finished of {KILLS} kills");
    rt.detach().unwrap();
    assert!(ours(&n).is_empty(), "{:?}", ours(&n));
    let _ = std::fs::remove_dir_all(&work);
}
