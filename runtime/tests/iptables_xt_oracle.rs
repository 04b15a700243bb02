//! The direct x_tables loader (`iptables::xt`) against the tools it
//! replaces, in both families: the same restore text loaded with
//! `iptables-legacy-restore --noflush` (`ip6tables-legacy-restore`) in
//! one namespace and with the loader in another (the same sets created
//! first in both) must give the same `iptables-legacy-save`
//! (`ip6tables-legacy-save`) text and the same entries read back with
//! GET_ENTRIES, byte for byte (but counters, `comefrom` and jump offsets,
//! compared as chain names). Cases: a hand-written text per family with
//! every extension the loader writes and the runtime's `-I`/`-D`/`-X`
//! lines, every example that compiles for iptables (its IPv4 and IPv6
//! texts), and generated models with sets (IPv4, and dual-stack for
//! IPv6). And: rules the runtime does not own — a foreign chain, rules in
//! built-in chains, a match the loader does not know, counters — are kept
//! as they were, counters included, by a direct replace; an IPv6 rule
//! naming an IPv4 set is not loaded directly.

mod bundle_common;
mod examples_common;
mod iptables_common;
mod xt_hand;

use weir_runtime::bundle::Family;
use weir_runtime::iptables::xt::{self, XtMode};
use weir_runtime::netns::Netns;

use examples_common::{examples, synth_300, synth_300_dual, texts, texts6};
use iptables_common::{fresh_ns, ready_legacy, run_with};

fn ns(tag: &str) -> Netns {
    fresh_ns("wxo", tag)
}

/// The family's legacy restore and save tools.
fn tools(family: Family) -> (&'static str, &'static str) {
    match family {
        Family::Ipv4 => ("iptables-legacy-restore", "iptables-legacy-save"),
        Family::Ipv6 => ("ip6tables-legacy-restore", "ip6tables-legacy-save"),
    }
}

/// `iptables-legacy-save` without its comment lines.
fn save(ns: &Netns, args: &[&str]) -> String {
    save_family(ns, Family::Ipv4, args)
}

/// The family's save tool without its comment lines.
fn save_family(ns: &Netns, family: Family, args: &[&str]) -> String {
    run_with(ns, tools(family).1, args, None)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The text's COMMIT blocks.
fn blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for l in text.lines() {
        cur.push_str(l);
        cur.push('\n');
        if l.trim() == "COMMIT" {
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

fn tables(text: &str) -> Vec<String> {
    let mut t: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix('*'))
        .map(|s| s.trim().to_string())
        .collect();
    t.sort();
    t.dedup();
    t
}

/// Loads `text` with the tool in one namespace and with the loader in
/// another (a block it does not write goes to the tool there too, as in
/// the runtime), then compares. Returns (direct, tool) block counts.
fn compare(name: &str, family: Family, sets: &str, text: &str) -> (usize, usize) {
    let a = ns("a");
    let b = ns("b");
    for n in [&a, &b] {
        if !sets.trim().is_empty() {
            run_with(n, "ipset", &["restore"], Some(sets));
        }
    }
    let restore = tools(family).0;
    run_with(&a, restore, &["--noflush", "-w"], Some(text));
    let (mut direct, mut tool) = (0, 0);
    for block in blocks(text) {
        match xt::load_direct(Some(b.name()), family, &block) {
            Ok(_) => direct += 1,
            Err(why) => {
                eprintln!("{name}: block to the tool: {why}");
                run_with(&b, restore, &["--noflush", "-w"], Some(&block));
                tool += 1;
            }
        }
    }
    let (sa, sb) = (save_family(&a, family, &[]), save_family(&b, family, &[]));
    if sa != sb {
        let diff: Vec<String> = sa
            .lines()
            .zip(sb.lines())
            .filter(|(x, y)| x != y)
            .take(5)
            .map(|(x, y)| format!("tool:   {x}\nloader: {y}"))
            .collect();
        panic!("{name}: iptables-save differs:\n{}", diff.join("\n"));
    }
    for t in tables(text) {
        let (da, db) = (
            xt::dump(Some(a.name()), family, &t).unwrap(),
            xt::dump(Some(b.name()), family, &t).unwrap(),
        );
        assert_eq!(da.len(), db.len(), "{name}: {t}: chain count");
        for (ca, cb) in da.iter().zip(&db) {
            assert_eq!(ca.name, cb.name, "{name}: {t}: chain order");
            assert_eq!(ca.policy, cb.policy, "{name}: {t}: policy of {}", ca.name);
            assert_eq!(
                ca.rules.len(),
                cb.rules.len(),
                "{name}: {t}: rules of {}",
                ca.name
            );
            for (i, (ra, rb)) in ca.rules.iter().zip(&cb.rules).enumerate() {
                assert_eq!(
                    ra, rb,
                    "{name}: {t}: chain {} rule {i}: entry bytes (tool, loader)",
                    ca.name
                );
            }
        }
    }
    (direct, tool)
}

/// Every extension and option the loader writes, and the runtime's
/// commands (`-I 1`, `-D`, `-X`, a declaration flushing a chain).
const FILTER: &str = r#"*filter
:WEIR1-A - [0:0]
:WEIR1-B - [0:0]
:WEIR1-Z - [0:0]
:WEIR-HOOK-FORWARD - [0:0]
-A WEIR1-A -s 10.1.2.3/16 -d 192.168.0.0/255.255.255.0 -j ACCEPT
-A WEIR1-A ! -s 10.0.0.1 ! -d 10.0.0.2/32 -p udp -m udp --sport 53 ! --dport 1000:2000 -j DROP
-A WEIR1-A -i eth0 -o veth+ -p 47 -j RETURN
-A WEIR1-A ! -i lo ! -o eth1 ! -p tcp -m comment --comment "a b: c" -g WEIR1-B
-A WEIR1-A -p tcp -m tcp --dport 80 -m comment --comment "weir:3" -g WEIR1-B
-A WEIR1-A -p udp --dport 53 -m set --match-set xa src -j ACCEPT
-A WEIR1-A -p tcp -m tcp ! --sport 1024: --dport :99 -j WEIR1-Z
-A WEIR1-A -m set --match-set xa src -m comment --comment "x" -j RETURN
-A WEIR1-A -m set ! --match-set xb dst -j ACCEPT
-A WEIR1-A -m set --match-set xc src,dst -j ACCEPT
-A WEIR1-A -m set --match-set xc dst,src -j ACCEPT
-A WEIR1-A -m comment --comment "ev" -m limit --limit 5/sec --limit-burst 10 -j NFLOG --nflog-group 7 --nflog-prefix "weir-ev 1"
-A WEIR1-A -m limit --limit 3/min -j NFLOG --nflog-group 1 --nflog-size 128 --nflog-threshold 2
-A WEIR1-A -m limit -j NFLOG
-A WEIR1-A -p icmp -m icmp --icmp-type 8 -j ACCEPT
-A WEIR1-A -p icmp -m icmp ! --icmp-type 3/4 -j DROP
-A WEIR1-A -p tcp -m multiport --dports 80,8081:8099,443 -m comment --comment "m" -g WEIR1-B
-A WEIR1-A -p udp -m multiport ! --sports 53,5353 -j DROP
-A WEIR1-A -p tcp -m multiport --ports 1,2,3 -j DROP
-A WEIR1-A -p sctp -m sctp --dport 80 -j ACCEPT
-A WEIR1-A -p sctp -m sctp ! --sport 1000:2000 --dport 5:6 -j DROP
-A WEIR1-A -p sctp --dport 7 -j DROP
-A WEIR1-A -p sctp -m sctp ! --dport 0:65535 -j DROP
-A WEIR1-A -m conntrack --ctstate INVALID -j DROP
-A WEIR1-A -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A WEIR1-A -m conntrack ! --ctstate NEW -j ACCEPT
-A WEIR1-A -m comment --comment "count"
-A WEIR1-A
-A WEIR1-B -j DROP
-A WEIR1-B -p tcp -j REJECT --reject-with tcp-reset
-A WEIR1-B -j REJECT --reject-with icmp-admin-prohibited
-A WEIR1-B -j REJECT
-A WEIR-HOOK-FORWARD -j WEIR1-A
-I FORWARD 1 -j WEIR-HOOK-FORWARD
-A FORWARD -s 10.9.0.0/16 -j WEIR1-Z
COMMIT
*filter
:WEIR1-Z - [0:0]
-D FORWARD -j WEIR-HOOK-FORWARD
-I FORWARD 1 -j WEIR-HOOK-FORWARD
-A WEIR1-A -j WEIR1-Z
-D WEIR1-A -j WEIR1-Z
-D WEIR1-A -p tcp -m tcp ! --sport 1024: --dport :99 -j WEIR1-Z
-D FORWARD -s 10.9.0.0/16 -j WEIR1-Z
-X WEIR1-Z
COMMIT
"#;

#[test]
fn iptables_xt_oracle_hand_written() {
    if !ready_legacy("iptables_xt_oracle_hand_written") {
        return;
    }
    let (direct, tool) = compare(
        "hand-written",
        Family::Ipv4,
        xt_hand::SETS,
        &xt_hand::text(FILTER),
    );
    assert_eq!(
        (direct, tool),
        (5, 0),
        "every block of the hand-written text is direct"
    );
}

#[test]
fn iptables_xt_oracle_hand_written_ipv6() {
    if !ready_legacy("iptables_xt_oracle_hand_written_ipv6") {
        return;
    }
    let (direct, tool) = compare(
        "hand-written-v6",
        Family::Ipv6,
        xt_hand::SETS6,
        &xt_hand::text6(),
    );
    assert_eq!(
        (direct, tool),
        (5, 0),
        "every block of the hand-written IPv6 text is direct"
    );
}

/// An IPv6 rule that names an IPv4 set, or an IPv4 rule an IPv6 set: the
/// tools refuse it (the set's family), so the loader must not write it
/// (the kernel would take the index).
#[test]
fn iptables_xt_oracle_set_family() {
    if !ready_legacy("iptables_xt_oracle_set_family") {
        return;
    }
    let n = ns("s");
    run_with(&n, "ipset", &["restore"], Some(xt_hand::SETS6));
    for (family, set) in [(Family::Ipv6, "xv4"), (Family::Ipv4, "ya")] {
        let text = format!(
            "*filter\n:WEIR1-S - [0:0]\n-A WEIR1-S -m set --match-set {set} src -j DROP\nCOMMIT\n"
        );
        let e = xt::load_direct(Some(n.name()), family, &text).unwrap_err();
        assert!(e.contains(set), "{e}");
        let o = n
            .exec_with_input(tools(family).0, &["--noflush", "-w"], Some(&text))
            .unwrap();
        assert!(!o.status.success(), "the tool refuses it too");
    }
}

#[test]
fn iptables_xt_oracle_examples_and_synth() {
    if !ready_legacy("iptables_xt_oracle_examples_and_synth") {
        return;
    }
    let mut cases = Vec::new();
    for (name, model) in examples() {
        match texts(&model) {
            Some(t) => cases.push((name, t)),
            None => eprintln!("{name}: the iptables back end refuses it"),
        }
    }
    assert!(cases.len() >= 4, "most examples compile for iptables");
    cases.push((
        "synth-300".into(),
        texts(&synth_300()).expect("synth compiles"),
    ));
    let mut direct = 0;
    for (name, (sets, text)) in &cases {
        let (d, t) = compare(name, Family::Ipv4, sets, text);
        eprintln!("{name}: {d} blocks direct, {t} by the tool");
        direct += d;
        if name == "synth-300" {
            // Its filter (sets, comments, ports, NFLOG, conntrack) and
            // nat (DNAT, statistic, recent) tables are direct.
            assert_eq!((d, t), (2, 0), "{name}");
        }
    }
    assert!(direct >= 12, "{direct} blocks direct");
}

/// The examples' IPv6 texts and a dual-stack generated model's (IPv6
/// addresses and sets).
#[test]
fn iptables_xt_oracle_examples_and_synth_ipv6() {
    if !ready_legacy("iptables_xt_oracle_examples_and_synth_ipv6") {
        return;
    }
    let mut cases = Vec::new();
    for (name, model) in examples() {
        if let Some(t) = texts6(&model) {
            cases.push((name, t));
        }
    }
    assert!(cases.len() >= 4, "most examples compile for iptables");
    cases.push((
        "synth-300-dual".into(),
        texts6(&synth_300_dual()).expect("synth compiles"),
    ));
    let (mut direct, mut tool) = (0, 0);
    for (name, (sets, text)) in &cases {
        let (d, t) = compare(name, Family::Ipv6, sets, text);
        eprintln!("{name}: {d} IPv6 blocks direct, {t} by the tool");
        direct += d;
        tool += t;
        if name == "synth-300-dual" {
            assert!(text.contains("v6 src"), "IPv6 sets in the rules");
            assert_eq!((d, t), (2, 0), "{name}");
        }
    }
    // dual-stack's nat, and every filter.
    assert!(direct >= 8, "{direct} blocks direct");
    assert_eq!(tool, 0, "no IPv6 block of an example goes to the tool");
}

/// A direct replace keeps what it does not own: a foreign chain, rules in
/// built-in chains (one with a match the loader does not write), their
/// counters and the policies' counters.
#[test]
fn iptables_xt_keeps_foreign_state() {
    if !ready_legacy("iptables_xt_keeps_foreign_state") {
        return;
    }
    keeps_foreign_state(Family::Ipv4, "10.9.9.9/32");
}

#[test]
fn iptables_xt_keeps_foreign_state_ipv6() {
    if !ready_legacy("iptables_xt_keeps_foreign_state_ipv6") {
        return;
    }
    keeps_foreign_state(Family::Ipv6, "fd09::9/128");
}

fn keeps_foreign_state(family: Family, addr: &str) {
    let n = ns("f");
    let foreign = format!("*filter\n:INPUT ACCEPT [11:1100]\n:FORWARD DROP [12:1200]\n:OUTPUT ACCEPT [13:1300]\n:FOREIGN - [0:0]\n[5:500] -A INPUT -s {addr} -j FOREIGN\n[6:600] -A FORWARD -p tcp -m u32 --u32 \"0x0>>0x16&0x3c@0x0>>0x10=0x50\" -j ACCEPT\n[7:700] -A FORWARD -j FOREIGN\n[8:800] -A FOREIGN -m length --length 100:200 -j RETURN\n[9:900] -A FOREIGN -j ACCEPT\nCOMMIT\n");
    run_with(&n, tools(family).0, &["-c"], Some(&foreign));
    let before = save_family(&n, family, &["-c"]);
    let weir = "*filter\n:WEIR1-A - [0:0]\n:WEIR-HOOK-FORWARD - [0:0]\n-A WEIR1-A -p tcp -m tcp --dport 80 -j ACCEPT\n-A WEIR-HOOK-FORWARD -j WEIR1-A\n-I FORWARD 1 -j WEIR-HOOK-FORWARD\nCOMMIT\n";
    xt::load_direct(Some(n.name()), family, weir).expect("direct load");
    let after = save_family(&n, family, &["-c"]);
    let kept: String = after
        .lines()
        .filter(|l| !l.contains("WEIR"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(before, kept, "after:\n{after}");
    assert!(after.contains("-A FORWARD -j WEIR-HOOK-FORWARD"), "{after}");
    // And once more, removing ours again: the same table as before.
    let undo = "*filter\n-D FORWARD -j WEIR-HOOK-FORWARD\n:WEIR1-A - [0:0]\n:WEIR-HOOK-FORWARD - [0:0]\n-X WEIR1-A\n-X WEIR-HOOK-FORWARD\nCOMMIT\n";
    xt::load_direct(Some(n.name()), family, undo).expect("direct load");
    assert_eq!(save_family(&n, family, &["-c"]), before);
}

/// Through the runtime: an apply's IPv4 restore is written directly (one
/// block, no tool run); a block the kernel refuses from the loader (a
/// limit whose burst overflows the kernel's credit, ERANGE) goes to the
/// tool, whose message the apply's error carries, and the previous
/// generation stays in force; with `XtMode::Tools` the tool does it all.
#[test]
fn iptables_xt_runtime_direct_and_fallback() {
    if !ready_legacy("iptables_xt_runtime_direct_and_fallback") {
        return;
    }
    let n = ns("r");
    let work = std::env::temp_dir().join(format!("weir-xt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let rt = |mode| xt_hand::runtime(n.name(), &work, mode);
    let rules = xt_hand::set_filter;
    let direct = rt(XtMode::Direct);
    let b = bundle_common::filter_bundle(&work.join("a"), &rules(""), "10.1.0.0/16");
    let r = direct.apply(&b).unwrap();
    assert_eq!((r.xtables.direct, r.xtables.tool), (1, 0), "{r:?}");
    let log = direct.exec().log();
    assert!(
        log.iter().all(|x| x.program != "iptables-legacy-restore"),
        "no tool restore: {log:?}"
    );
    assert!(save(&n, &[]).contains(
        "-A WEIR1-FWD -p tcp -m set --match-set weir1-a src -m tcp --dport 80 -j ACCEPT"
    ));

    // A rule the kernel refuses (SET_REPLACE fails): the block goes to
    // the tool, whose error fails the apply. Step 1 runs (the set's
    // member changed), so the table was read ahead and the hold must be
    // dropped before the tool runs.
    let bad = bundle_common::filter_bundle(
        &work.join("b"),
        &rules("-A WEIR-FWD -m limit --limit 1/day --limit-burst 10000 -j ACCEPT\n"),
        "10.3.0.0/16",
    );
    let (rt_bad, e) = xt_hand::apply_or_deadlock(rt(XtMode::Direct), bad);
    let e = e.unwrap_err();
    assert!(
        e.contains("iptables-legacy-restore"),
        "the tool's error: {e}"
    );
    let log = rt_bad.exec().log();
    assert!(
        log.iter().any(|x| x.program == "iptables-legacy-restore"),
        "{log:?}"
    );
    assert!(log.iter().any(|x| x.program == "ipset (direct)"), "{log:?}");
    assert_eq!(rt_bad.exec().fallbacks(), 1);
    assert!(
        direct.status().unwrap().in_force,
        "generation 1 still in force"
    );

    // A rule naming a set that step 1 does not create. The loader encodes
    // the rules before step 1, the set indexes left out (`xt/pre.rs`),
    // and writes them after it: the missing set is still met before the
    // table is touched, the block goes to the tool, and the tool's error
    // fails the apply with generation 1 in force. Its set's member
    // changed, so step 1 runs and step 2's table is read ahead under the
    // xtables lock (`xt/ahead.rs`): the hold must be dropped before the
    // tool (`-w`) runs, or the tool waits for it for ever.
    let nope = bundle_common::filter_bundle(
        &work.join("nope"),
        &rules("-A WEIR-FWD -m set --match-set weir-nope src -j ACCEPT\n"),
        "10.2.0.0/16",
    );
    let (rt_nope, e) = xt_hand::apply_or_deadlock(rt(XtMode::Direct), nope);
    let e = e.unwrap_err();
    assert!(
        e.contains("iptables-legacy-restore") && e.contains("nope"),
        "the tool's error: {e}"
    );
    assert_eq!(rt_nope.exec().fallbacks(), 1);
    assert!(
        rt_nope
            .exec()
            .log()
            .iter()
            .any(|x| x.program == "ipset (direct)"),
        "step 1 ran, so the table was read ahead"
    );
    assert!(
        direct.status().unwrap().in_force,
        "generation 1 still in force"
    );

    // A block the loader cannot parse (an interface name it refuses) was
    // read beside its parse: the read, and the xtables lock with it, is
    // dropped before the tool (`-w`) runs, which would otherwise wait
    // for the lock for ever.
    let odd = bundle_common::filter_bundle(
        &work.join("odd"),
        &rules("-A WEIR-FWD -i a@b -j ACCEPT\n"),
        "10.1.0.0/16",
    );
    let before = direct.exec().fallbacks();
    let r = direct.apply(&odd).unwrap();
    assert_eq!((r.xtables.direct, r.xtables.tool), (0, 1), "{r:?}");
    assert_eq!(direct.exec().fallbacks(), before + 1);
    assert!(save(&n, &[]).contains("-i a@b -j ACCEPT"));

    let tools = rt(XtMode::Tools);
    let c = bundle_common::filter_bundle(
        &work.join("c"),
        &rules("-A WEIR-FWD -p udp -j ACCEPT\n"),
        "10.1.0.0/16",
    );
    let r = tools.apply(&c).unwrap();
    assert_eq!((r.xtables.direct, r.xtables.tool), (0, 0), "{r:?}");
    assert!(tools.exec().log().iter().all(|x| x.program != xt::DIRECT));
    assert!(tools
        .exec()
        .log()
        .iter()
        .any(|x| x.program == "iptables-legacy-restore"));
    let _ = std::fs::remove_dir_all(&work);
}

/// The loader's one ipset dump (past a few dozen sets) gives each set the
/// index and family the kernel's per-name lookup gives: gaps left by
/// destroyed sets, an IPv6 set (no IPv4 index), a name with no set.
#[test]
fn iptables_xt_set_dump_agrees_with_lookups() {
    if !ready_legacy("iptables_xt_set_dump_agrees_with_lookups") {
        return;
    }
    let n = ns("d");
    let mut text: String = (0..80)
        .map(|i| format!("create t{i} hash:net family inet\n"))
        .collect();
    text.push_str("create v6set hash:net family inet6\ndestroy t3\ndestroy t10\n");
    text.push_str("create u3 hash:ip family inet\n");
    run_with(&n, "ipset", &["restore"], Some(&text));
    let mut names: Vec<String> = (0..80).map(|i| format!("t{i}")).collect();
    names.extend(["v6set".into(), "u3".into(), "none".into()]);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (dumped, asked) = xt::set_indexes_both_ways(Some(n.name()), Family::Ipv4, &names).unwrap();
    assert_eq!(dumped, asked);
    let present = asked.iter().filter(|i| i.is_some()).count();
    // t0..t79 but t3 and t10, and u3 (in t3's slot).
    assert_eq!(present, 79, "{asked:?}");
    assert_eq!(asked[80], None, "an IPv6 set has no IPv4 index");
    assert_eq!(asked[82], None, "no such set");
    // And as IPv6 sets: only v6set.
    let (dumped, asked) = xt::set_indexes_both_ways(Some(n.name()), Family::Ipv6, &names).unwrap();
    assert_eq!(dumped, asked);
    assert_eq!(asked.iter().filter(|i| i.is_some()).count(), 1, "{asked:?}");
    assert!(asked[80].is_some(), "v6set");
}
