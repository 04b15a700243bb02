//! Kernel tests of the iptables runtime's promise never to claim what is
//! not in force (issue 15): the read-back refuses a rule the kernel
//! widens, objects that only look like ours are never touched, detach
//! returns the node to exactly its state before the first apply, and
//! `kill -9` of an apply at random moments is always finished or rolled
//! back by the next command.
//!
//! Every test runs in its own network namespaces. Needs root; skipped
//! without, unless `CI` is set (then it fails).

mod bundle_common;
mod iptables_common;
use bundle_common::seal;
use iptables_common::run;
use weir_compiler::contract::iptables::Family;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use weir_runtime::iptables::xt::XtMode;
use weir_runtime::iptables::{Iptables, Options, Variant};
use weir_runtime::netns::Netns;
use weir_runtime::Bundle;

fn ready(test: &str) -> bool {
    weir_runtime::kernel_test::may_run(
        test,
        &[
            "ip",
            "iptables",
            "iptables-restore",
            "ip6tables",
            "ipset",
            "nft",
        ],
    )
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-failclosed-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ns(name: &str) -> Netns {
    let name = format!("weir-fc{}-{name}", std::process::id());
    Netns::create(&name).unwrap()
}

/// A dual-stack bundle: a FORWARD chain per family accepting `port` from
/// a set, `extra` chains per family (a longer apply), and `rule` added to
/// the IPv4 chain.
fn bundle(dir: &Path, port: u16, extra: usize, rule: Option<&str>) -> Bundle {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("ipset.rules"),
        "create weir-c4 hash:net family inet hashsize 64 maxelem 1024\nadd weir-c4 10.1.0.0/24\n\
         create weir-c6 hash:net family inet6 hashsize 64 maxelem 1024\nadd weir-c6 fd00:1::/64\n",
    )
    .unwrap();
    for (file, set) in [
        ("iptables.rules", "weir-c4"),
        ("ip6tables.rules", "weir-c6"),
    ] {
        let mut r = String::from("*filter\n:WEIR-FWD - [0:0]\n");
        for i in 0..extra {
            r.push_str(&format!(":WEIR-X{i} - [0:0]\n"));
        }
        r.push_str(&format!(
            "-A WEIR-FWD -p tcp --dport {port} -m set --match-set {set} src -m comment --comment \"weir:rule {port}\" -j ACCEPT\n"
        ));
        for i in 0..extra {
            r.push_str(&format!(
                "-A WEIR-FWD -p udp --dport {} -j WEIR-X{i}\n",
                1000 + i
            ));
            r.push_str(&format!("-A WEIR-X{i} -j DROP\n"));
        }
        if let (Some(extra), "iptables.rules") = (rule, file) {
            r.push_str(extra);
            r.push('\n');
        }
        r.push_str("-A WEIR-FWD -j DROP\nCOMMIT\n");
        std::fs::write(dir.join(file), r).unwrap();
    }
    seal(
        dir,
        &[("filter", "FORWARD", "WEIR-FWD", "both")],
        &[("weir-c4", Family::Ipv4), ("weir-c6", Family::Ipv6)],
    );
    Bundle::read(dir).unwrap()
}

/// Our chains (any `WEIR…` chain) per family and our sets.
fn ours(ns: &Netns) -> (Vec<String>, Vec<String>) {
    ours_with(ns, Variant::System)
}

/// [`ours`], the rules read with `variant`'s save tools.
fn ours_with(ns: &Netns, variant: Variant) -> (Vec<String>, Vec<String>) {
    let mut chains = Vec::new();
    for (f, family) in [("4", Family::Ipv4), ("6", Family::Ipv6)] {
        for l in run(ns, &variant.save(family), &[]).lines() {
            if let Some(c) = l
                .strip_prefix(':')
                .and_then(|d| d.split_whitespace().next())
            {
                if c.starts_with("WEIR") {
                    chains.push(format!("{f}:{c}"));
                }
            }
        }
    }
    let sets = run(ns, "ipset", &["list", "-n"])
        .lines()
        .filter(|s| s.starts_with("weir"))
        .map(str::to_string)
        .collect();
    (chains, sets)
}

/// The generation each family's hook chain jumps into.
fn hooked(ns: &Netns) -> Vec<Option<String>> {
    hooked_with(ns, Variant::System)
}

/// [`hooked`], read with `variant`'s save tools.
fn hooked_with(ns: &Netns, variant: Variant) -> Vec<Option<String>> {
    [variant.save(Family::Ipv4), variant.save(Family::Ipv6)]
        .iter()
        .map(|p| {
            run(ns, p, &[]).lines().find_map(|l| {
                l.strip_prefix("-A WEIR-HOOK-FORWARD -j WEIR")
                    .and_then(|r| r.split('-').next())
                    .map(str::to_string)
            })
        })
        .collect()
}

/// With the system's tools, and with the legacy ones, whose rules are
/// loaded and read back directly (runtime/src/iptables/xt): the kernel's
/// widening must show in the direct read-back as it does in
/// `iptables-legacy-save`.
#[test]
fn widened_rule_is_refused_and_the_old_generation_stays() {
    if !ready_legacy("widened_rule_is_refused_and_the_old_generation_stays") {
        return;
    }
    widened_rule_is_refused(Variant::System, "widen");
    assert_direct_reads(&widened_rule_is_refused(Variant::Legacy, "widen-x"));
}

/// A namespace, a scratch directory and a runtime of `variant` for it
/// (its state in the scratch directory), all named `name`.
fn setup(variant: Variant, name: &str) -> (Netns, PathBuf, Iptables) {
    let n = ns(name);
    let work = scratch(name);
    let rt = Iptables::new(
        Options::netns(n.name())
            .with_variant(variant)
            .with_state_dir(work.join("state")),
    );
    (n, work, rt)
}

fn ready_legacy(test: &str) -> bool {
    ready(test)
        && weir_runtime::kernel_test::may_run(
            test,
            &["iptables-legacy-restore", "iptables-legacy-save"],
        )
}

/// Every read of the rules in `rt`'s log went to x_tables directly
/// (`XtMode::from_env()`: unless `WEIR_XTABLES=tools`).
fn assert_direct_reads(rt: &Iptables) {
    if XtMode::from_env() != XtMode::Direct {
        return;
    }
    let log = rt.exec().log();
    let direct = log
        .iter()
        .filter(|x| x.program == weir_runtime::iptables::xt::saved::SAVE_DIRECT)
        .count();
    let tool = log
        .iter()
        .filter(|x| x.program.ends_with("tables-legacy-save"))
        .count();
    assert!(
        direct >= 4 && tool == 0,
        "{direct} direct reads, {tool} by the tool: {log:?}"
    );
    // And the sets, wherever they were read (xt/ipset_save.rs).
    let set_reads = |program: &str| {
        log.iter()
            .filter(|x| x.program == program && x.args == ["save"])
            .count()
    };
    let direct_sets = set_reads(weir_runtime::iptables::xt::ipset_load::IPSET_DIRECT);
    assert!(
        direct_sets >= 1 && set_reads("ipset") == 0,
        "{direct_sets} direct set reads: {log:?}"
    );
}

fn widened_rule_is_refused(variant: Variant, name: &str) -> Iptables {
    let (n, work, rt) = setup(variant, name);
    let good = bundle(&work.join("a"), 80, 0, None);
    assert_eq!(rt.apply(&good).unwrap().generation, 1);
    // The kernel's icmp match takes type 255 as "any": it comes back as
    // `--icmp-type any`, which allows every ICMP type.
    let widened = bundle(
        &work.join("b"),
        81,
        0,
        Some("-A WEIR-FWD -p icmp -m icmp --icmp-type 255 -j ACCEPT"),
    );
    let e = rt.apply(&widened).unwrap_err().to_string();
    eprintln!("{e}");
    assert!(e.contains("reading back generation 2"), "{e}");
    assert!(e.contains("--icmp-type 255") && e.contains("any"), "{e}");
    // Generation 1 is in force, and nothing of generation 2 is left.
    let s = rt.status().unwrap();
    assert!(s.in_force, "{s:?}");
    assert_eq!(s.state.unwrap().generation, 1);
    assert_eq!(
        hooked_with(&n, variant),
        vec![Some("1".into()), Some("1".into())]
    );
    let (chains, sets) = ours_with(&n, variant);
    assert!(chains.iter().all(|c| !c.contains("WEIR2-")), "{chains:?}");
    assert!(sets.iter().all(|s| !s.starts_with("weir2-")), "{sets:?}");
    rt.detach().unwrap();
    let _ = std::fs::remove_dir_all(work);
    rt
}

/// With the system's tools, and with the legacy ones (the rules read
/// directly).
#[test]
fn status_says_what_differs_per_family() {
    if !ready_legacy("status_says_what_differs_per_family") {
        return;
    }
    status_says_what_differs(Variant::System, "differ");
    assert_direct_reads(&status_says_what_differs(Variant::Legacy, "differ-x"));
}

fn status_says_what_differs(variant: Variant, name: &str) -> Iptables {
    let (n, work, rt) = setup(variant, name);
    rt.apply(&bundle(&work.join("a"), 80, 0, None)).unwrap();
    // Someone rewrites a rule of ours in the IPv6 chain.
    let ip6tables = match variant {
        Variant::Legacy => "ip6tables-legacy",
        _ => "ip6tables",
    };
    run(
        &n,
        ip6tables,
        &["-w", "-R", "WEIR1-FWD", "1", "-j", "ACCEPT"],
    );
    let s = rt.status().unwrap();
    assert!(!s.in_force);
    let v6 = s
        .families
        .iter()
        .find(|f| f.family.name() == "ipv6")
        .unwrap();
    let v4 = s
        .families
        .iter()
        .find(|f| f.family.name() == "ipv4")
        .unwrap();
    assert!(v4.difference.is_none(), "{v4:?}");
    let d = v6.difference.as_deref().unwrap_or_default();
    assert!(
        d.contains("WEIR1-FWD rule 1") && d.contains("-j ACCEPT"),
        "{d}"
    );
    assert_eq!(v6.generations, vec![1]);
    rt.detach().unwrap();
    let _ = std::fs::remove_dir_all(work);
    rt
}

#[test]
fn objects_named_like_ours_are_not_ours() {
    if !ready("objects_named_like_ours_are_not_ours") {
        return;
    }
    let (n, work, rt) = setup(Variant::System, "names");
    run(&n, "iptables", &["-w", "-N", "WEIR12-MINE"]);
    run(&n, "iptables", &["-w", "-A", "WEIR12-MINE", "-j", "ACCEPT"]);
    run(&n, "iptables", &["-w", "-A", "INPUT", "-j", "WEIR12-MINE"]);
    run(&n, "ipset", &["create", "weir7-mine", "hash:ip"]);
    run(
        &n,
        "iptables",
        &[
            "-w",
            "-A",
            "INPUT",
            "-m",
            "set",
            "--match-set",
            "weir7-mine",
            "src",
            "-j",
            "DROP",
        ],
    );
    rt.apply(&bundle(&work.join("a"), 80, 0, None)).unwrap();
    rt.apply(&bundle(&work.join("b"), 81, 0, None)).unwrap();
    rt.detach().unwrap();
    let (chains, sets) = ours(&n);
    assert_eq!(chains, vec!["4:WEIR12-MINE".to_string()]);
    assert_eq!(sets, vec!["weir7-mine".to_string()]);
    let _ = std::fs::remove_dir_all(work);
}

#[test]
fn detach_returns_the_node_to_its_state_before_the_first_apply() {
    if !ready("detach_returns_the_node_to_its_state_before_the_first_apply") {
        return;
    }
    let n = ns("baseline");
    let work = scratch("baseline");
    let state = work.join("state");
    let rt = Iptables::new(Options::netns(n.name()).with_state_dir(&state));
    let tables_before = run(&n, "nft", &["list", "ruleset"]);
    rt.apply(&bundle(&work.join("a"), 80, 0, None)).unwrap();
    endpoints_record_exists(&state);
    rt.detach().unwrap();
    assert_eq!(run(&n, "nft", &["list", "ruleset"]), tables_before);
    assert!(
        !state.exists(),
        "{:?}",
        std::fs::read_dir(&state).map(|d| d.count())
    );
    let _ = std::fs::remove_dir_all(work);
}

fn endpoints_record_exists(state: &Path) {
    // The apply wrote its records (the endpoint record among them), so
    // detach has files to remove.
    let names: Vec<String> = std::fs::read_dir(state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "state.json"), "{names:?}");
    assert!(names.iter().any(|n| n == "lock"), "{names:?}");
}

#[test]
fn set_update_over_capacity_writes_nothing() {
    if !ready("set_update_over_capacity_writes_nothing") {
        return;
    }
    let (n, work, rt) = setup(Variant::System, "capacity");
    rt.apply(&bundle(&work.join("a"), 80, 0, None)).unwrap();
    let members = |n: &Netns| {
        run(n, "ipset", &["save", "weir1-c4"])
            .matches("\nadd ")
            .count()
    };
    assert_eq!(members(&n), 1);
    // 1,100 hosts into a set of maxelem 1024: refused, nothing written.
    let many: Vec<String> = (0..1100)
        .map(|i| format!("10.9.{}.{}", i / 250, 1 + i % 250))
        .collect();
    let e = rt
        .update_set("weir-c4", &many, &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("refused, nothing changed") && e.contains("maxelem"),
        "{e}"
    );
    assert_eq!(members(&n), 1, "the live set is unchanged");
    assert_eq!(
        ours(&n).1,
        vec!["weir1-c4".to_string(), "weir1-c6".to_string()]
    );
    // An update that fits is swapped in, and status reads it back.
    rt.update_set("weir-c4", &many[..1000], &["10.1.0.0/24".into()])
        .unwrap();
    assert_eq!(members(&n), 1000);
    assert!(rt.status().unwrap().in_force);
    assert_eq!(ours(&n).1.len(), 2, "no temporary set left");
    rt.detach().unwrap();
    let _ = std::fs::remove_dir_all(work);
}

/// The child of [`kill_apply_at_random_points`] and
/// [`a_killed_applys_tools_are_stopped_before_recovery`]: applies the
/// bundle named by the environment, and nothing when run as an ordinary
/// test.
#[test]
fn crash_child() {
    let (Ok(dir), Ok(netns), Ok(state)) = (
        std::env::var("WEIR_CRASH_BUNDLE"),
        std::env::var("WEIR_CRASH_NETNS"),
        std::env::var("WEIR_CRASH_STATE"),
    ) else {
        return;
    };
    let rt = Iptables::new(Options::netns(&netns).with_state_dir(state));
    rt.apply(&Bundle::read(Path::new(&dir)).unwrap()).unwrap();
}

/// xorshift64*: a seeded sequence of delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn kill_apply_at_random_points() {
    if !ready("kill_apply_at_random_points") {
        return;
    }
    const KILLS: usize = 24;
    let n = ns("kill");
    let work = scratch("kill");
    let state = work.join("state");
    let rt = Iptables::new(Options::netns(n.name()).with_state_dir(&state));
    let before = run(&n, "nft", &["list", "ruleset"]);
    let bundles = [
        bundle(&work.join("a"), 80, 60, None),
        bundle(&work.join("b"), 81, 60, None),
    ];
    // How long one apply takes here, to spread the kills over it.
    let child = |b: &Bundle| {
        Command::new(std::env::current_exe().unwrap())
            .args(["crash_child", "--exact", "--test-threads=1", "--quiet"])
            .env("WEIR_CRASH_BUNDLE", &b.dir)
            .env("WEIR_CRASH_NETNS", n.name())
            .env("WEIR_CRASH_STATE", &state)
            .env_remove("CI")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let t = Instant::now();
    assert!(child(&bundles[0]).wait().unwrap().success());
    let span = t.elapsed().as_micros() as u64 + 1;
    let mut rng = Rng(0x5eed_1515);
    let deadline = Instant::now() + Duration::from_secs(240);
    let (mut half_switched, mut rolled_back, mut finished) = (0, 0, 0);
    for k in 0..KILLS {
        assert!(Instant::now() < deadline, "kill {k}: out of time");
        let b = &bundles[(k + 1) % 2];
        let mut c = child(b);
        std::thread::sleep(Duration::from_micros(rng.next() % span));
        let _ = c.kill();
        let _ = c.wait();
        let hooks = hooked(&n);
        if hooks[0] != hooks[1] {
            half_switched += 1;
        }
        // The next command (status, apply or detach, in turn) recovers.
        match rng.next() % 3 {
            0 => {
                let s = rt.status().unwrap();
                let st = s.state.clone().expect("a generation is recorded");
                assert!(s.in_force, "kill {k}: {s:?}");
                let g = st.generation.to_string();
                assert_eq!(
                    hooked(&n),
                    vec![Some(g.clone()), Some(g.clone())],
                    "kill {k}"
                );
                for f in &s.families {
                    assert_eq!(f.generations, vec![st.generation], "kill {k}: {f:?}");
                }
                for r in &s.recovered {
                    if r.contains("rolled back") {
                        rolled_back += 1;
                    } else {
                        finished += 1;
                    }
                }
                let (chains, sets) = ours(&n);
                // Exactly the recorded chains (and the hook chains): the
                // two bundles' chains below the entry chain are the same,
                // so a generation keeps those of the one it replaced
                // (runtime/src/iptables/keep.rs) under its names.
                let mut recorded: Vec<String> = st
                    .chains
                    .iter()
                    .map(|c| {
                        let f = match c.family {
                            weir_runtime::bundle::Family::Ipv4 => "4",
                            weir_runtime::bundle::Family::Ipv6 => "6",
                        };
                        format!("{f}:{}", c.chain)
                    })
                    .collect();
                recorded.sort();
                let mut mine: Vec<String> = chains
                    .into_iter()
                    .filter(|c| !c.contains("WEIR-HOOK-"))
                    .collect();
                mine.sort();
                assert_eq!(mine, recorded, "kill {k}: leftovers or missing chains");
                assert!(
                    st.chains.iter().any(|c| c.chain == format!("WEIR{g}-FWD")),
                    "kill {k}: {st:?}"
                );
                // Exactly the recorded sets: the two bundles' sets have
                // the same members, so a generation keeps the sets of the
                // one it replaced (runtime/src/iptables/reuse.rs) and
                // their names need not carry its number.
                let mut recorded: Vec<String> =
                    st.sets.iter().map(|s| s.kernel_name.clone()).collect();
                recorded.sort();
                let mut sets = sets;
                sets.sort();
                assert_eq!(sets, recorded, "kill {k}: leftovers or missing sets");
            }
            1 => {
                let r = rt.apply(b).unwrap();
                let g = r.generation.to_string();
                assert_eq!(hooked(&n), vec![Some(g.clone()), Some(g)], "kill {k}");
                assert!(rt.status().unwrap().in_force);
            }
            _ => {
                rt.detach().unwrap();
                assert_eq!(ours(&n), (vec![], vec![]), "kill {k}");
                assert!(!state.exists());
                rt.apply(b).unwrap();
            }
        }
    }
    eprintln!(
        "{KILLS} kills: {half_switched} left the families on different generations, status rolled back {rolled_back} and finished {finished}"
    );
    rt.detach().unwrap();
    assert_eq!(ours(&n), (vec![], vec![]));
    assert_eq!(run(&n, "nft", &["list", "ruleset"]), before);
    assert!(!state.exists());
    let _ = std::fs::remove_dir_all(work);
}

/// Processes in the namespace `name`.
fn processes_in(name: &str) -> usize {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata(format!("/var/run/netns/{name}")).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::metadata(e.path().join("ns/net")).is_ok_and(|m| m.ino() == ns.ino()))
        .count()
}

/// Why [`kill_apply_at_random_points`] once failed under load ("Set
/// cannot be destroyed: in use by a kernel component"): a tool of the
/// killed apply outlives it and commits after the next command has
/// started its recovery. Made certain here: the apply's first
/// `iptables-restore` transaction (the switch to the new generation) waits 1.5 s
/// before running, and the apply is killed in that wait. The next command
/// must stop that tool (runtime/src/iptables/orphans.rs) before it
/// recovers; otherwise, once every process in the namespace has ended,
/// the orphan has switched IPv4 to the generation the recovery rolled
/// back.
#[test]
fn a_killed_applys_tools_are_stopped_before_recovery() {
    if !ready("a_killed_applys_tools_are_stopped_before_recovery") {
        return;
    }
    let n = ns("orphan");
    let work = scratch("orphan");
    let state = work.join("state");
    let rt = Iptables::new(Options::netns(n.name()).with_state_dir(&state));
    let a = bundle(&work.join("a"), 80, 0, None);
    let b = bundle(&work.join("b"), 81, 0, None);
    let g1 = rt.apply(&a).unwrap().generation.to_string();
    // The wrapper: a restore (not the `--version` probe) marks that it
    // runs and waits; then it is the real tool.
    let real = weir_runtime::iptables::exec::find_program("iptables-restore").unwrap();
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let started = work.join("started");
    let wrapper = bin.join("iptables-restore");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ \"$1\" = --noflush ] && touch '{}' && sleep 1.5\nexec '{}' \"$@\"\n",
            started.display(),
            real.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--test-threads=1", "--quiet"])
        .env("WEIR_CRASH_BUNDLE", &b.dir)
        .env("WEIR_CRASH_NETNS", n.name())
        .env("WEIR_CRASH_STATE", &state)
        .env("PATH", path)
        .env_remove("CI")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let give_up = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        assert!(
            Instant::now() < give_up,
            "the apply never ran iptables-restore"
        );
        if let Some(s) = c.try_wait().unwrap() {
            panic!("the apply ended before iptables-restore: {s:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = c.kill();
    let _ = c.wait();
    // The next command recovers: the switch never happened, so it rolls
    // generation 2 back.
    let s = rt.status().unwrap();
    assert!(s.in_force, "{s:?}");
    assert_eq!(s.state.as_ref().unwrap().generation.to_string(), g1);
    // Once nothing runs in the namespace any more (the wrapper's `sleep`
    // ends in 1.5 s), the kernel still holds what the recovery left.
    while processes_in(n.name()) > 0 {
        assert!(Instant::now() < give_up, "processes left in the namespace");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(hooked(&n), vec![Some(g1.clone()), Some(g1.clone())]);
    let s = rt.status().unwrap();
    assert!(
        s.in_force,
        "a tool of the killed apply changed the kernel after the recovery: {s:?}"
    );
    let (chains, _) = ours(&n);
    assert!(
        chains.iter().all(|c| !c.contains("WEIR2-")),
        "generation 2's chains after its rollback: {chains:?}"
    );
    rt.detach().unwrap();
    assert_eq!(ours(&n), (vec![], vec![]));
    assert!(!state.exists(), "detach removes the tools' marks too");
    let _ = std::fs::remove_dir_all(work);
}
