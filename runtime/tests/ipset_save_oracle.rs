//! The sets' direct read (`iptables::xt::ipset_save`: one netlink dump,
//! printed as `ipset save` prints it) against the tool: in one namespace,
//! the printer's text and `ipset save`'s must be the same, line for line
//! and in the same order (initval included: the same sets are read).
//! Cases: a hand text with every option weir's bundles write (both
//! families, host and shorter prefixes, addresses with host bits,
//! `nomatch`, `skbinfo` with `skbmark` with and without a mask, a mark of
//! 0, `hashsize` rounded by the kernel, defaults, an `initval` with
//! leading zeros and another `bucketsize`, IPv6 addresses glibc
//! prints in its own ways, a set large enough to span many netlink
//! messages), loaded with the tool; every example's bundle set text and
//! generated models' (IPv4 and dual-stack), loaded with the direct set
//! loader as an apply does. Refusals: a set of another type or with an
//! option weir does not write is refused when it is to be printed, and
//! skipped when it is not a weir set. And through the runtime: an apply
//! and `weir status` read the sets directly (no `ipset save` run), a weir
//! set the printer does not know sends the read to the tool, the old
//! generation's sets are destroyed over netlink, and `WEIR_XTABLES=tools`
//! uses the tool only. And the destroys alone: a missing set is no error,
//! a referenced one is refused and left (for the tool's retries).

mod bundle_common;
mod examples_common;
mod iptables_common;
mod xt_hand;

use std::time::Instant;

use weir_runtime::iptables::xt::{ipset_load, ipset_save, XtMode};
use weir_runtime::netns::Netns;

use examples_common::{examples, synth_300, synth_300_dual, texts};
use iptables_common::{fresh_ns, ready, ready_legacy, run_with};

fn ns(tag: &str) -> Netns {
    fresh_ns("wsetdump", tag)
}

/// The printer's text (every set) and the tool's, compared line by
/// line; returns the number of lines.
fn compare(name: &str, n: &Netns) -> usize {
    let t = Instant::now();
    let (direct, stats) = ipset_save::save(Some(n.name()), &|_| true)
        .unwrap_or_else(|e| panic!("{name}: direct read: {e}"));
    let direct_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let tool = run_with(n, "ipset", &["save"], None);
    let tool_s = t.elapsed().as_secs_f64();
    let (a, b): (Vec<&str>, Vec<&str>) = (direct.lines().collect(), tool.lines().collect());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "{name}: line {} differs", i + 1);
    }
    assert_eq!(a.len(), b.len(), "{name}: line count");
    assert_eq!(direct, tool, "{name}: text");
    assert_eq!(stats.skipped, 0);
    eprintln!(
        "{name}: {} sets, {} members; direct {direct_s:.3}s, ipset save {tool_s:.3}s",
        stats.sets, stats.members
    );
    a.len()
}

const HAND: &str = "# every option weir's bundles write, and what glibc prints its way
create h-net4 hash:net family inet hashsize 64 maxelem 65536
add h-net4 10.0.0.0/8
add h-net4 10.1.2.3
add h-net4 10.1.2.3/32
add h-net4 192.168.7.9/24
add h-net4 10.9.0.0/16 nomatch
add h-net4 10.9.1.1 nomatch
add h-net4 0.0.0.0/1
add h-net4 255.255.255.255
create h-net6 hash:net family inet6 hashsize 100 maxelem 70000
add h-net6 2001:db8::/32
add h-net6 2001:db8:1::1
add h-net6 2001:db8:2::5/64
add h-net6 2001:db8:1::/48 nomatch
add h-net6 ::ffff:10.0.0.1/128
add h-net6 ::1.2.3.4
add h-net6 ::2
add h-net6 ::
add h-net6 2001:0:0:1:1:0:0:1
add h-net6 2001:db8:0:1:0:0:0:1
add h-net6 1::/16
add h-net6 fe80::1:0:0:1/127 nomatch
create h-ip4 hash:ip family inet hashsize 64 maxelem 65536 skbinfo
add h-ip4 10.0.0.1 skbmark 0x1000/0x0
add h-ip4 10.0.0.2 skbmark 0x10
add h-ip4 10.0.0.3 skbmark 0xffffffff/0xff00
add h-ip4 10.0.0.4
add h-ip4 10.0.0.5 skbmark 0x0
add h-ip4 10.0.0.6 skbmark 0x0/0xff
create h-ip6 hash:ip family inet6 hashsize 64 maxelem 65536 skbinfo
add h-ip6 fe80::1 skbmark 0x2000/0x0
add h-ip6 2001:db8::2 skbmark 0x7
add h-ip6 ::ffff:1.2.3.4
create h-plain hash:ip
add h-plain 10.0.0.7
create h-plain6 hash:ip family inet6
add h-plain6 2001:db8::7
create h-empty hash:net family inet maxelem 131072
create h-default hash:net
add h-default 172.16.0.0/12
create h-init hash:net family inet hashsize 64 initval 0x00001234 bucketsize 4
add h-init 10.0.0.0/8
";

/// A hash:net set of `n` members (several netlink messages) and a
/// hash:ip skbinfo one.
fn big(n: u32) -> String {
    let mut t = String::from("create big hash:net family inet hashsize 1024 maxelem 200000\n");
    for i in 0..n {
        let p = 24 + i % 9;
        t.push_str(&format!("add big 10.{}.{}.0/{p}\n", i >> 8 & 255, i & 255));
    }
    t.push_str("create bigip hash:ip family inet6 hashsize 1024 maxelem 200000 skbinfo\n");
    for i in 0..n {
        t.push_str(&format!(
            "add bigip 2001:db8::{:x}:{:x} skbmark {:#x}/0x0\n",
            i >> 4,
            i & 15,
            (i % 50) << 16
        ));
    }
    t
}

#[test]
fn ipset_save_oracle_hand_written() {
    if !ready("ipset_save_oracle_hand_written") {
        return;
    }
    let n = ns("h");
    run_with(&n, "ipset", &["restore", "-exist"], Some(HAND));
    assert_eq!(compare("hand", &n), 41);
    let m = ns("b");
    run_with(&m, "ipset", &["restore"], Some(&big(20_000)));
    assert_eq!(compare("big", &m), 40_002);
}

#[test]
fn ipset_save_oracle_examples_and_synth() {
    if !ready("ipset_save_oracle_examples_and_synth") {
        return;
    }
    let n = ns("e");
    let mut loaded = 0;
    for (i, (name, m)) in examples().into_iter().enumerate() {
        let Some((ipset, _)) = texts(&m) else {
            continue;
        };
        if ipset.lines().any(|l| l.starts_with("create ")) {
            // Each example's sets under their own names.
            let text = ipset.replace(" weir-", &format!(" weir{}-", i + 1));
            ipset_load::load_direct(Some(n.name()), &text)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            loaded += 1;
        }
    }
    assert!(loaded >= 5, "examples with sets: {loaded}");
    let lines = compare("examples", &n);
    let saved = run_with(&n, "ipset", &["save"], None);
    // (No example makes an `skbinfo` set: the hand text has them.)
    eprintln!(
        "examples: skbinfo {}, nomatch {}",
        saved.contains(" skbinfo"),
        saved.contains(" nomatch")
    );
    assert!(lines > 20);
    for (name, m) in [("synth", synth_300()), ("synth-dual", synth_300_dual())] {
        let (ipset, _) = texts(&m).expect("the synth model compiles for iptables");
        let s = ns("s");
        ipset_load::load_direct(Some(s.name()), &ipset).unwrap();
        assert!(compare(name, &s) > 0);
    }
}

/// A set the printer does not know is refused when it is to be printed
/// and skipped when its name is not weir's; the weir sets around it are
/// printed as the tool prints them.
#[test]
fn ipset_save_refuses_what_it_does_not_know() {
    if !ready("ipset_save_refuses_what_it_does_not_know") {
        return;
    }
    let n = ns("x");
    run_with(
        &n,
        "ipset",
        &["restore"],
        Some("create weir1-a hash:net family inet\nadd weir1-a 10.0.0.0/8\n"),
    );
    for (i, foreign) in [
        "create F hash:ip,port family inet\nadd F 10.0.0.1,tcp:80\n",
        "create F hash:net family inet timeout 10\nadd F 10.0.0.0/8\n",
        "create F hash:net family inet counters\nadd F 10.0.0.0/8\n",
        "create F hash:net family inet comment\nadd F 10.0.0.0/8 comment \"x\"\n",
        "create F hash:ip family inet netmask 24\nadd F 10.0.0.0\n",
        "create F hash:net family inet skbinfo\nadd F 10.0.0.0/8 skbmark 0x1\n",
        "create F hash:net family inet forceadd\n",
        "create F list:set\n",
        "create F bitmap:port range 1-100\n",
    ]
    .into_iter()
    .enumerate()
    {
        let other = foreign
            .replace(" F ", &format!(" other{i} "))
            .replace(" F\n", &format!(" other{i}\n"));
        let ours = foreign
            .replace(" F ", &format!(" weir2-f{i} "))
            .replace(" F\n", &format!(" weir2-f{i}\n"));
        run_with(&n, "ipset", &["restore"], Some(&format!("{other}{ours}")));
        let e = ipset_save::save(Some(n.name()), &|_| true);
        assert!(e.is_err(), "{foreign}: {e:?}");
        let e = ipset_save::save_ours(Some(n.name()));
        assert!(
            e.as_ref()
                .is_err_and(|e| e.contains(&format!("weir2-f{i}"))),
            "{foreign}: {e:?}"
        );
        run_with(&n, "ipset", &["destroy", &format!("weir2-f{i}")], None);
        let (text, stats) = ipset_save::save_ours(Some(n.name())).unwrap();
        let weir: String = run_with(&n, "ipset", &["save"], None)
            .lines()
            .filter(|l| l.split(' ').nth(1).is_some_and(|s| s.starts_with("weir")))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(text, weir, "{foreign}");
        assert_eq!(stats.skipped, i + 1);
    }
}

/// Through the runtime (see the module doc).
#[test]
fn ipset_save_runtime_and_fallback() {
    if !ready("ipset_save_runtime_and_fallback") {
        return;
    }
    let n = ns("r");
    let work = std::env::temp_dir().join(format!("weir-setdump-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let rules = xt_hand::set_filter("");
    let rt = xt_hand::runtime(n.name(), &work, XtMode::Direct);
    let saves = |rt: &weir_runtime::iptables::Iptables| {
        let log = rt.exec().log();
        let direct = log
            .iter()
            .filter(|x| x.program == ipset_load::IPSET_DIRECT && x.args == ["save"])
            .count();
        let tool = log
            .iter()
            .filter(|x| x.program == "ipset" && x.args == ["save"])
            .count();
        (direct, tool)
    };
    let a = bundle_common::filter_bundle(&work.join("a"), &rules, "10.1.0.0/16");
    rt.apply(&a).unwrap();
    // The read-back (a first apply reads only names at its start).
    assert_eq!(saves(&rt), (1, 0), "{:?}", rt.exec().log());
    // A replace: its start (the generation in force has sets) and its
    // read-back; then status.
    let b = bundle_common::filter_bundle(&work.join("b"), &rules, "10.2.0.0/16");
    rt.apply(&b).unwrap();
    assert_eq!(saves(&rt), (3, 0), "{:?}", rt.exec().log());
    assert!(rt.status().unwrap().in_force);
    assert_eq!(saves(&rt), (4, 0));

    // A weir-named set the printer does not know: the read goes to the
    // tool (whose text the callers read the same way); the apply and
    // status still succeed.
    run_with(&n, "ipset", &["create", "weir77-x", "hash:ip,port"], None);
    rt.apply(&a).unwrap();
    assert!(rt.status().unwrap().in_force);
    let (direct, tool) = saves(&rt);
    assert_eq!(direct, 4);
    assert!(tool >= 3, "{tool}");
    run_with(&n, "ipset", &["destroy", "weir77-x"], None);
    // A foreign set of any type is skipped, not a fallback.
    run_with(&n, "ipset", &["create", "other", "hash:ip,port"], None);
    rt.apply(&b).unwrap();
    assert_eq!(saves(&rt).0, 6);
    assert_eq!(saves(&rt).1, tool);

    // The old generation's sets were destroyed over netlink, not by an
    // `ipset restore` of `destroy` lines.
    let log = rt.exec().log();
    assert!(log
        .iter()
        .any(|x| x.program == ipset_load::IPSET_DIRECT && x.args == ["destroy"]));
    assert!(
        !log.iter()
            .any(|x| x.program == "ipset"
                && x.stdin.as_deref().is_some_and(|i| i.contains("destroy "))),
        "{log:?}"
    );
    let left = run_with(&n, "ipset", &["list", "-n"], None);
    assert_eq!(
        left.lines().filter(|l| l.starts_with("weir")).count(),
        1,
        "only the generation in force's set is left: {left}"
    );

    // The tools only.
    let m = ns("t");
    let tools = xt_hand::runtime(m.name(), &work.join("t"), XtMode::Tools);
    tools.apply(&a).unwrap();
    tools.apply(&b).unwrap();
    assert_eq!(saves(&tools), (0, 3));
    assert!(!tools
        .exec()
        .log()
        .iter()
        .any(|x| x.program == ipset_load::IPSET_DIRECT));
    let _ = std::fs::remove_dir_all(&work);
}

/// The removal's destroys over netlink: a set that is gone is no error
/// (no `NLM_F_EXCL`: the kernel's `-exist`), a set the kernel will not destroy (a rule references it)
/// is returned with its errno and left for the tool, the others are gone.
#[test]
fn ipset_destroy_direct() {
    if !ready_legacy("ipset_destroy_direct") {
        return;
    }
    let n = ns("d");
    let mut text = String::new();
    for i in 0..600 {
        text.push_str(&format!(
            "create d{i} hash:net family inet\nadd d{i} 10.0.0.0/8\n"
        ));
    }
    run_with(&n, "ipset", &["restore"], Some(&text));
    run_with(
        &n,
        "iptables-legacy",
        &[
            "-A",
            "INPUT",
            "-m",
            "set",
            "--match-set",
            "d7",
            "src",
            "-j",
            "ACCEPT",
        ],
        None,
    );
    let mut names: Vec<String> = (0..600).map(|i| format!("d{i}")).collect();
    names.push("missing".into());
    let left = ipset_load::destroy_direct(Some(n.name()), &names).unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].0, "d7");
    assert_ne!(left[0].1, 0);
    assert_eq!(run_with(&n, "ipset", &["list", "-n"], None).trim(), "d7");
}
