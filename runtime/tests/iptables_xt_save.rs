//! The start state's direct read (`iptables::xt::saved`, the printer
//! `xt::save`) against the tools it replaces, in both families: tables
//! loaded with `iptables-legacy-restore` (`ip6tables-legacy-restore`;
//! sets created first), then the decoder's tables must equal
//! `iptables-legacy-save`'s (`ip6tables-legacy-save`'s) as
//! `restore::parse_save` parses them (counters and header comments
//! dropped), line for line — but for placeholders, which only a chain we
//! did not make may have. Cases: a hand-written text per family with
//! every printer, every example that compiles for iptables (IPv4 and
//! IPv6 texts), generated models with sets (IPv4, and dual-stack for
//! IPv6), and a table with foreign rules (u32, length, a foreign chain,
//! jumps from FORWARD into our hook), where what the apply reads of them
//! (hook jumps, jump counts, chain names) must be the same. And through
//! the runtime: a replace's start is the direct read of each family (its
//! exec-log line), and `XtMode::Tools` turns it off.

mod bundle_common;
mod examples_common;
mod iptables_common;
mod xt_hand;

use std::collections::BTreeMap;

use weir_runtime::bundle::Family;
use weir_runtime::iptables::restore::{parse_save, SavedTable};
use weir_runtime::iptables::xt::{saved, XtMode};
use weir_runtime::iptables::{names, Iptables};
use weir_runtime::netns::Netns;

use examples_common::{examples, synth_300, synth_300_dual, texts, texts6};
use iptables_common::{fresh_ns, ready_legacy, run_with};

fn ns(tag: &str) -> Netns {
    fresh_ns("wxs", tag)
}

/// Compares the decoder's tables with the tool's; returns how many
/// placeholders the decoder kept.
fn same(
    name: &str,
    tool: &BTreeMap<String, SavedTable>,
    ours: &BTreeMap<String, SavedTable>,
) -> usize {
    assert_eq!(
        tool.keys().collect::<Vec<_>>(),
        ours.keys().collect::<Vec<_>>(),
        "{name}: tables"
    );
    let mut placeholders = 0;
    for (t, a) in tool {
        let b = &ours[t];
        assert_eq!(a.chains, b.chains, "{name}: {t}: chains");
        assert_eq!(a.rules.len(), b.rules.len(), "{name}: {t}: rule count");
        for (x, y) in a.rules.iter().zip(&b.rules) {
            let words: Vec<&str> = y.split_whitespace().collect();
            if words.get(2) == Some(&"#") {
                assert!(
                    !names::is_our_chain(words[1]),
                    "{name}: placeholder in ours: {y}"
                );
                assert_eq!(x.split_whitespace().nth(1), Some(words[1]), "{name}: {y}");
                eprintln!("{name}: tool `{x}`, decoder `{y}`");
                placeholders += 1;
                continue;
            }
            assert_eq!(x, y, "{name}: {t}: (tool, decoder)");
        }
        for hook in ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"] {
            assert_eq!(
                a.jumps(hook, "WEIR-HOOK-FORWARD"),
                b.jumps(hook, "WEIR-HOOK-FORWARD"),
                "{name}"
            );
        }
        assert_eq!(a.hook_jumps(), b.hook_jumps(), "{name}: {t}: hook jumps");
        assert_eq!(a.our_chains(), b.our_chains(), "{name}");
    }
    placeholders
}

/// Loads `text` with the tool (after `sets`), then compares.
fn compare(name: &str, sets: &str, text: &str) -> usize {
    compare_family(name, Family::Ipv4, sets, text)
}

/// [`compare`] for `family`'s tools and tables.
fn compare_family(name: &str, family: Family, sets: &str, text: &str) -> usize {
    let (restore, save) = match family {
        Family::Ipv4 => ("iptables-legacy-restore", "iptables-legacy-save"),
        Family::Ipv6 => ("ip6tables-legacy-restore", "ip6tables-legacy-save"),
    };
    let n = ns("c");
    if !sets.trim().is_empty() {
        run_with(&n, "ipset", &["restore"], Some(sets));
    }
    run_with(&n, restore, &["--noflush", "-w"], Some(text));
    let tool = parse_save(&run_with(&n, save, &[], None));
    let (ours, stats) =
        saved::read(Some(n.name()), family).unwrap_or_else(|e| panic!("{name}: {e}"));
    let p = same(name, &tool, &ours);
    assert_eq!(p, stats.placeholders, "{name}");
    p
}

/// The generator writes each rule of our filter chains as `iptables-save`
/// prints it back, so an apply's read-back finds the line byte for byte
/// and never parses it (`readback::compare_chain`): the lines of `text`
/// the tool does not print back as they are.
fn not_saved_as_written(name: &str, sets: &str, text: &str) -> Vec<String> {
    let n = ns("w");
    if !sets.trim().is_empty() {
        run_with(&n, "ipset", &["restore"], Some(sets));
    }
    run_with(
        &n,
        "iptables-legacy-restore",
        &["--noflush", "-w"],
        Some(text),
    );
    let tool = parse_save(&run_with(&n, "iptables-legacy-save", &[], None));
    let saved: std::collections::BTreeSet<&str> = tool
        .get("filter")
        .map(|t| t.rules.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let mut filter = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('*') {
            filter = line == "*filter";
        } else if filter && line.starts_with("-A WEIR") && !saved.contains(line) {
            out.push(format!("{name}: {line}"));
        }
    }
    out
}

/// Every printer.
const FILTER: &str = r#"*filter
:WEIR1-A - [0:0]
:WEIR1-B - [0:0]
:WEIR1-Z - [0:0]
:WEIR-HOOK-FORWARD - [0:0]
-A WEIR1-A -s 10.1.2.3/16 -d 192.168.0.0/255.255.0.255 -j ACCEPT
-A WEIR1-A ! -s 10.0.0.1 ! -d 10.0.0.2/32 -p udp -m udp --sport 53 ! --dport 1000:2000 -j DROP
-A WEIR1-A -s 0.0.0.0/0 -i eth0 -o veth+ -p esp -j RETURN
-A WEIR1-A ! -i lo ! -o eth1 ! -p tcp -m comment --comment "a b: c \"q\"" -g WEIR1-B
-A WEIR1-A -p tcp -m tcp --dport 80 -m comment --comment "weir:3" -g WEIR1-B
-A WEIR1-A -p udp --dport 53 -m set --match-set xa src -j ACCEPT
-A WEIR1-A -p tcp -m tcp ! --sport 1024: --dport :99 -j WEIR1-Z
-A WEIR1-A -p sctp -m set --match-set xa src -m comment --comment plain -j RETURN
-A WEIR1-A -m set ! --match-set xb dst -j ACCEPT
-A WEIR1-A -m set --match-set xc src,dst -j ACCEPT
-A WEIR1-A -m set --match-set xc dst,src -j QUEUE
-A WEIR1-A -m comment --comment "ev" -m limit --limit 5/sec --limit-burst 10 -j NFLOG --nflog-group 7 --nflog-prefix "weir-ev 1"
-A WEIR1-A -m limit --limit 3/min -j NFLOG --nflog-group 1 --nflog-size 128 --nflog-threshold 2
-A WEIR1-A -m limit --limit 7/hour -j NFLOG --nflog-prefix plain
-A WEIR1-A -m limit --limit 2/day -j NFLOG --nflog-range 64
-A WEIR1-A -m limit -j NFLOG
-A WEIR1-A -p icmp -m icmp --icmp-type 8 -j ACCEPT
-A WEIR1-A -p icmp -m icmp ! --icmp-type 3/4 -j DROP
-A WEIR1-A -p icmp -m icmp --icmp-type any -j DROP
-A WEIR1-A -p tcp -m multiport --dports 80,8081:8099,443 -m comment --comment "m" -g WEIR1-B
-A WEIR1-A -p udp -m multiport ! --sports 53,5353 -j DROP
-A WEIR1-A -p tcp -m multiport --ports 1,2,3 -j DROP
-A WEIR1-A -p sctp -m sctp --dport 80 -j ACCEPT
-A WEIR1-A -p sctp -m sctp ! --sport 1000:2000 --dport 5:6 -j DROP
-A WEIR1-A -p sctp --dport 7 -j DROP
-A WEIR1-A -p sctp -m sctp ! --dport 0:65535 -j DROP
-A WEIR1-A -m conntrack --ctstate INVALID -j DROP
-A WEIR1-A -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A WEIR1-A -m conntrack ! --ctstate NEW,UNTRACKED,SNAT,DNAT -j ACCEPT
-A WEIR1-A -m comment --comment "count"
-A WEIR1-A
-A WEIR1-B -j DROP
-A WEIR1-B -p tcp -j REJECT --reject-with tcp-reset
-A WEIR1-B -j REJECT --reject-with icmp-admin-prohibited
-A WEIR1-B -j REJECT --reject-with icmp-net-unreachable
-A WEIR1-B -j REJECT
-A WEIR1-Z -p udplite -j RETURN
-A WEIR-HOOK-FORWARD -j WEIR1-A
-I FORWARD 1 -j WEIR-HOOK-FORWARD
-A FORWARD -s 10.9.0.0/16 -j WEIR1-Z
COMMIT
"#;

#[test]
fn iptables_xt_save_hand_written() {
    if !ready_legacy("iptables_xt_save_hand_written") {
        return;
    }
    assert_eq!(
        compare("hand-written", xt_hand::SETS, &xt_hand::text(FILTER)),
        0
    );
}

#[test]
fn iptables_xt_save_hand_written_ipv6() {
    if !ready_legacy("iptables_xt_save_hand_written_ipv6") {
        return;
    }
    assert_eq!(
        compare_family(
            "hand-written-v6",
            Family::Ipv6,
            xt_hand::SETS6,
            &xt_hand::text6()
        ),
        0
    );
}

/// IPv6 rules the printer does not print exactly (a DNAT address range,
/// a `-m u32`) in a foreign chain: placeholders; in our chain: the read
/// is `Err`, and the runtime asks the tool.
#[test]
fn iptables_xt_save_ipv6_refusals() {
    if !ready_legacy("iptables_xt_save_ipv6_refusals") {
        return;
    }
    let foreign = "*filter\n:FOREIGN - [0:0]\n-A FOREIGN -m u32 --u32 \"0x0>>0x16&0x3c@0x0>>0x10=0x50\" -j RETURN\n-A FOREIGN -j REJECT --reject-with icmp6-adm-prohibited\nCOMMIT\n*nat\n:FOREIGN - [0:0]\n-A FOREIGN -p tcp -j DNAT --to-destination [fd00::1-fd00::2]:80\n-A FOREIGN -j DNAT --to-destination fd00::1-fd00::2\n-A FOREIGN -p tcp -j DNAT --to-destination [fd00::1]:80\nCOMMIT\n";
    assert_eq!(compare_family("foreign-v6", Family::Ipv6, "", foreign), 3);
    let n = ns("e");
    run_with(
        &n,
        "ip6tables-legacy-restore",
        &["-w"],
        Some(
            "*nat\n:WEIR1-X - [0:0]\n-A WEIR1-X -j DNAT --to-destination fd00::1-fd00::2\nCOMMIT\n",
        ),
    );
    let e = saved::read(Some(n.name()), Family::Ipv6).unwrap_err();
    assert!(e.contains("WEIR1-X"), "{e}");
}

/// Rules we did not make: the decoder keeps placeholders for the ones it
/// cannot print (u32, length), prints the rest, and the hook jumps and
/// chain names the apply reads are the tool's.
#[test]
fn iptables_xt_save_foreign_rules() {
    if !ready_legacy("iptables_xt_save_foreign_rules") {
        return;
    }
    let text = "*filter\n:FOREIGN - [0:0]\n:WEIR-HOOK-FORWARD - [0:0]\n:WEIR2-X - [0:0]\n-A WEIR-HOOK-FORWARD -j WEIR2-X\n-A WEIR2-X -j ACCEPT\n-A INPUT -s 10.9.9.9/32 -j FOREIGN\n-A FORWARD -p tcp -m u32 --u32 \"0x0>>0x16&0x3c@0x0>>0x10=0x50\" -j WEIR-HOOK-FORWARD\n-A FORWARD -j WEIR-HOOK-FORWARD\n-A FORWARD -m length --length 100:200 -j WEIR-HOOK-FORWARD\n-A FORWARD -j FOREIGN\n-A FOREIGN -m length --length 100:200 -j RETURN\n-A FOREIGN -m ttl --ttl-eq 3 -j LOG --log-prefix x\n-A FOREIGN -j ACCEPT\nCOMMIT\n";
    let p = compare("foreign", "", text);
    assert_eq!(p, 4, "u32, two length, ttl+LOG");
}

#[test]
fn iptables_xt_save_examples_and_synth() {
    if !ready_legacy("iptables_xt_save_examples_and_synth") {
        return;
    }
    let mut n = 0;
    let mut rewritten = Vec::new();
    for (name, model) in examples() {
        if let Some((sets, text)) = texts(&model) {
            assert_eq!(compare(&name, &sets, &text), 0, "{name}");
            rewritten.extend(not_saved_as_written(&name, &sets, &text));
            n += 1;
        }
    }
    assert!(n >= 4, "most examples compile for iptables");
    let (sets, text) = texts(&synth_300()).expect("synth compiles");
    assert_eq!(compare("synth-300", &sets, &text), 0);
    rewritten.extend(not_saved_as_written("synth-300", &sets, &text));
    assert!(
        rewritten.is_empty(),
        "filter rules iptables-save prints otherwise:\n{}",
        rewritten.join("\n")
    );
}

#[test]
fn iptables_xt_save_examples_and_synth_ipv6() {
    if !ready_legacy("iptables_xt_save_examples_and_synth_ipv6") {
        return;
    }
    let mut n = 0;
    for (name, model) in examples() {
        if let Some((sets, text)) = texts6(&model) {
            assert_eq!(
                compare_family(&name, Family::Ipv6, &sets, &text),
                0,
                "{name}"
            );
            n += 1;
        }
    }
    assert!(n >= 4, "most examples compile for iptables");
    let (sets, text) = texts6(&synth_300_dual()).expect("synth compiles");
    assert!(text.contains("v6 src"), "IPv6 sets in the rules");
    assert_eq!(
        compare_family("synth-300-dual", Family::Ipv6, &sets, &text),
        0
    );
}

/// Through the runtime: a replace starts from the direct read and reads
/// back directly (the exec log's lines, no `iptables-legacy-save` at
/// all), and `XtMode::Tools` uses the tools for both.
#[test]
fn iptables_xt_save_runtime_start() {
    if !ready_legacy("iptables_xt_save_runtime_start") {
        return;
    }
    let n = ns("r");
    let work = std::env::temp_dir().join(format!("weir-xts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let rt = |mode| xt_hand::runtime(n.name(), &work, mode);
    let rules = xt_hand::set_filter;
    let saves = |r: &Iptables| {
        let log = r.exec().log();
        (
            log.iter()
                .filter(|x| x.program == saved::SAVE_DIRECT)
                .count(),
            log.iter()
                .filter(|x| x.program.ends_with("tables-legacy-save"))
                .count(),
        )
    };
    let direct = rt(XtMode::Direct);
    let a = bundle_common::filter_bundle(&work.join("a"), &rules(""), "10.1.0.0/16");
    direct.apply(&a).unwrap();
    let b = bundle_common::filter_bundle(
        &work.join("b"),
        &rules("-A WEIR-FWD -p udp -j ACCEPT\n"),
        "10.1.0.0/16",
    );
    let direct = rt(XtMode::Direct);
    direct.apply(&b).unwrap();
    // Two direct reads per family (the start, the read-back), no save
    // tool.
    assert_eq!(saves(&direct).0, 4, "{:?}", direct.exec().log());
    assert_eq!(saves(&direct).1, 0, "{:?}", direct.exec().log());
    assert_eq!(direct.exec().fallbacks(), 0);
    assert!(direct.status().unwrap().in_force);

    let tools = rt(XtMode::Tools);
    tools.apply(&a).unwrap();
    assert_eq!(saves(&tools).0, 0);
    assert_eq!(saves(&tools).1, 4, "{:?}", tools.exec().log());
    let _ = std::fs::remove_dir_all(&work);
}
