//! The direct set loader (`iptables::xt::ipset_load`) against the tool it
//! replaces: the same `ipset restore` text loaded with `ipset restore
//! -exist` in one namespace and with the loader in another must give the
//! same `ipset save` (members compared as sets: their order follows the
//! hash's random `initval`, which is left out) and the same `ipset list
//! -t` headers (name, type, **revision**, header options, references,
//! entries; not `initval` nor the memory size). Cases: a hand text with
//! every option the loader writes (both families, host and shorter
//! prefixes, an address with host bits, `nomatch`, `skbinfo` with
//! `skbmark` with and without a mask, `hashsize` rounded by the kernel,
//! `maxelem`, defaults), every example's bundle set text, and generated
//! models' (IPv4 and dual-stack, several thousand members). And `-exist`:
//! loading again over what is there is no error. And through the
//! runtime: an apply's step 1 is written directly (no `ipset restore`
//! run), a batch the loader refuses goes to the tool whose message the
//! apply's error carries, and `WEIR_XTABLES=tools` uses the tool only.

mod bundle_common;
mod examples_common;
mod iptables_common;
mod xt_hand;

use weir_runtime::iptables::xt::{ipset_load, XtMode};
use weir_runtime::netns::Netns;

use examples_common::{examples, synth_300, synth_300_dual, texts};
use iptables_common::{fresh_ns, ready, run_with};

fn ns(tag: &str) -> Netns {
    fresh_ns("wipsetnl", tag)
}

/// Drops `initval 0x…` (random per set) from a line.
fn no_initval(l: &str) -> String {
    let mut w: Vec<&str> = l.split(' ').collect();
    if let Some(i) = w.iter().position(|x| *x == "initval") {
        w.drain(i..(i + 2).min(w.len()));
    }
    w.join(" ")
}

/// `ipset save`, each set's create line (without its initval) then its
/// members sorted.
fn save(n: &Netns) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for l in run_with(n, "ipset", &["save"], None).lines() {
        if l.starts_with("create ") {
            out.push((no_initval(l), Vec::new()));
        } else if let Some(last) = out.last_mut() {
            last.1.push(l.to_string());
        } else {
            panic!("a member before any set: {l}");
        }
    }
    for s in &mut out {
        s.1.sort();
    }
    out
}

/// `ipset list -t` without initval and the memory size.
fn headers(n: &Netns) -> String {
    run_with(n, "ipset", &["list", "-t"], None)
        .lines()
        .filter(|l| !l.starts_with("Size in memory"))
        .map(|l| format!("{}\n", no_initval(l)))
        .collect()
}

/// Loads `text` with the tool in one namespace and directly in another;
/// compares. Returns the number of sets.
fn compare(name: &str, text: &str) -> usize {
    let a = ns("a");
    let b = ns("b");
    run_with(&a, "ipset", &["restore", "-exist"], Some(text));
    ipset_load::load_direct(Some(b.name()), text)
        .unwrap_or_else(|e| panic!("{name}: direct load: {e}"));
    let (sa, sb) = (save(&a), save(&b));
    assert!(!sa.is_empty() || text.trim().is_empty(), "{name}: no sets");
    for (x, y) in sa.iter().zip(&sb) {
        assert_eq!(x, y, "{name}: ipset save differs");
    }
    assert_eq!(sa.len(), sb.len(), "{name}: set count");
    assert_eq!(headers(&a), headers(&b), "{name}: ipset list -t differs");
    // -exist: the same text again, directly, over either is no error and
    // changes nothing.
    ipset_load::load_direct(Some(a.name()), text)
        .unwrap_or_else(|e| panic!("{name}: direct load over the tool's: {e}"));
    ipset_load::load_direct(Some(b.name()), text)
        .unwrap_or_else(|e| panic!("{name}: direct load again: {e}"));
    assert_eq!(save(&a), sa, "{name}: reloading changed the tool's sets");
    assert_eq!(save(&b), sb, "{name}: reloading changed the sets");
    sa.len()
}

const HAND: &str = "# every option the loader writes
create h-net4 hash:net family inet hashsize 64 maxelem 65536
add h-net4 10.0.0.0/8
add h-net4 10.1.2.3
add h-net4 10.1.2.3/32
add h-net4 192.168.7.9/24
add h-net4 10.9.0.0/16 nomatch
add h-net4 10.9.1.1 nomatch
create h-net6 hash:net family inet6 hashsize 100 maxelem 70000
add h-net6 2001:db8::/32
add h-net6 2001:db8:1::1
add h-net6 2001:db8:2::5/64
add h-net6 2001:db8:1::/48 nomatch
add h-net6 ::ffff:10.0.0.1/128
create h-ip4 hash:ip family inet hashsize 64 maxelem 65536 skbinfo
add h-ip4 10.0.0.1 skbmark 0x1000/0x0
add h-ip4 10.0.0.2 skbmark 0x10
add h-ip4 10.0.0.3 skbmark 0xffffffff/0xff00
add h-ip4 10.0.0.4
create h-ip6 hash:ip family inet6 hashsize 64 maxelem 65536 skbinfo
add h-ip6 fe80::1 skbmark 0x2000/0x0
add h-ip6 2001:db8::2 skbmark 0x7
create h-plain hash:ip
add h-plain 10.0.0.7
create h-empty hash:net family inet maxelem 131072
create h-default hash:net
add h-default 172.16.0.0/12
";

#[test]
fn ipset_direct_oracle_hand_written() {
    if !ready("ipset_direct_oracle_hand_written") {
        return;
    }
    assert_eq!(compare("hand", HAND), 7);
}

#[test]
fn ipset_direct_oracle_examples_and_synth() {
    if !ready("ipset_direct_oracle_examples_and_synth") {
        return;
    }
    let mut sets = 0;
    let mut members = 0;
    for (name, m) in examples() {
        let Some((ipset, _)) = texts(&m) else {
            continue;
        };
        if ipset.lines().any(|l| l.starts_with("create ")) {
            sets += compare(&name, &ipset);
            members += ipset.lines().filter(|l| l.starts_with("add ")).count();
        }
    }
    assert!(sets >= 10, "examples gave {sets} sets");
    let skb = examples()
        .into_iter()
        .filter_map(|(_, m)| texts(&m))
        .any(|(i, _)| i.contains(" skbinfo"));
    eprintln!("examples: {sets} sets, {members} members, skbinfo set: {skb}");
    for (name, m) in [("synth", synth_300()), ("synth-dual", synth_300_dual())] {
        let (ipset, _) = texts(&m).expect("the synth model compiles for iptables");
        let n = compare(name, &ipset);
        let adds = ipset.lines().filter(|l| l.starts_with("add ")).count();
        eprintln!("{name}: {n} sets, {adds} members");
        assert!(n > 0 && adds > 0);
    }
}

/// What the loader refuses, it refuses before touching the kernel or
/// with the kernel's refusal: the runtime then sends the batch to the
/// tool.
#[test]
fn ipset_direct_refuses_what_it_does_not_know() {
    if !ready("ipset_direct_refuses_what_it_does_not_know") {
        return;
    }
    let n = ns("x");
    for bad in [
        "create x hash:ip,port family inet\n",
        "create x hash:net family inet timeout 10\n",
        "create x hash:net family inet\nadd x 10.0.0.0/0\n",
        "create x hash:net family inet\nadd y 10.0.0.1\n",
    ] {
        assert!(
            ipset_load::load_direct(Some(n.name()), bad).is_err(),
            "{bad}"
        );
    }
    // The kernel's refusals: a set of the same name and another type; a
    // member past maxelem.
    run_with(&n, "ipset", &["create", "t", "hash:ip"], None);
    let e = ipset_load::load_direct(Some(n.name()), "create t hash:net family inet\n");
    assert!(e.is_err_and(|e| e.contains("create t")), "clash refused");
    let mut full = String::from("create f hash:net family inet maxelem 2\n");
    for i in 0..3 {
        full.push_str(&format!("add f 10.0.0.{i}\n"));
    }
    let e = ipset_load::load_direct(Some(n.name()), &full);
    assert!(e.is_err_and(|e| e.contains("add to f")), "maxelem refused");
}

/// Through the runtime (see the module doc).
#[test]
fn ipset_direct_runtime_and_fallback() {
    if !ready("ipset_direct_runtime_and_fallback") {
        return;
    }
    let n = ns("r");
    let work = std::env::temp_dir().join(format!("weir-ipsetnl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let rules = xt_hand::set_filter("");
    let rt = xt_hand::runtime(n.name(), &work, XtMode::Direct);
    let a = bundle_common::filter_bundle(&work.join("a"), &rules, "10.1.0.0/16");
    rt.apply(&a).unwrap();
    assert_eq!(rt.exec().ipset_counts().direct, 1);
    assert_eq!(rt.exec().ipset_counts().tool, 0);
    let log = rt.exec().log();
    assert!(
        !log.iter()
            .any(|x| x.program == "ipset" && x.args.first().is_some_and(|a| a == "restore")),
        "no ipset restore: {log:?}"
    );
    assert!(log.iter().any(|x| x.program == ipset_load::IPSET_DIRECT));
    let saved = run_with(&n, "ipset", &["save"], None);
    assert!(saved.contains("add weir1-a 10.1.0.0/16"), "{saved}");

    // A member the loader refuses (/0, which hash:net does not take)
    // sends the batch to the tool, whose error fails the apply;
    // generation 1 stays in force.
    // Step 2's table was read ahead while step 1 ran (`xt/ahead.rs`): the
    // failed step 1 must drop that hold of the xtables lock before the
    // rollback, which would otherwise wait for it for ever.
    let c = bundle_common::filter_bundle(&work.join("c"), &rules, "0.0.0.0/0");
    let (rt, e) = xt_hand::apply_or_deadlock(rt, c);
    let e = e.unwrap_err();
    assert!(e.contains("ipset"), "{e}");
    assert_eq!(rt.exec().ipset_counts().tool, 1);
    assert!(rt
        .exec()
        .log()
        .iter()
        .any(|x| x.program == "ipset" && x.args == ["restore", "-exist"]));
    let st = rt.status().unwrap();
    assert!(st.in_force, "{st:?}");

    // The tools only.
    let m = ns("t");
    let tools = xt_hand::runtime(m.name(), &work.join("t"), XtMode::Tools);
    tools.apply(&a).unwrap();
    assert_eq!(tools.exec().ipset_counts().direct, 0);
    assert!(!tools
        .exec()
        .log()
        .iter()
        .any(|x| x.program == ipset_load::IPSET_DIRECT));
    let _ = std::fs::remove_dir_all(&work);
}
