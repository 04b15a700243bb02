//! Kernel tests of the iptables runtime and the namespace harness: a
//! hand-written bundle is applied in the node namespace of a client — node —
//! server topology and checked with real TCP, UDP and ICMP traffic.
//!
//! Needs root. Without root the tests are skipped, unless `CI` is set, in
//! which case they fail. Nothing here touches the host's rules: every
//! program runs inside the test's own namespaces.

mod bundle_common;
use bundle_common::seal;

/// The set `weir-clients` (class 1, IPv4).
const CLIENTS: &[(&str, weir_compiler::contract::iptables::Family)] = &[(
    "weir-clients",
    weir_compiler::contract::iptables::Family::Ipv4,
)];

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use weir_runtime::bundle::Family;
use weir_runtime::iptables::{Iptables, Options, Variant};
use weir_runtime::netns::Topology;
use weir_runtime::{Bundle, Error};

/// `true` if the test may touch the kernel; panics under `CI` without root
/// or without the programs.
fn ready(test: &str) -> bool {
    weir_runtime::kernel_test::may_run(test, &["ip", "iptables", "iptables-restore", "ipset"])
}

const ALLOW_WAIT: Duration = Duration::from_secs(2);
const DENY_WAIT: Duration = Duration::from_millis(300);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A fresh scratch directory for this test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "weir-runtime-test-{}-{}-{name}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a bundle: sets, and a FORWARD chain that accepts established
/// traffic, `allowed` (protocol, port) from the source set, and drops the
/// rest.
fn write_bundle(
    dir: &Path,
    allowed: &[(&str, u16)],
    extra_rule: Option<&str>,
    extra_set_line: Option<&str>,
) -> Bundle {
    std::fs::create_dir_all(dir).unwrap();
    let mut ipset = String::from(
        "create weir-clients hash:net family inet hashsize 64 maxelem 1024\nadd weir-clients 10.1.0.0/24\n",
    );
    if let Some(l) = extra_set_line {
        ipset.push_str(l);
        ipset.push('\n');
    }
    std::fs::write(dir.join("ipset.rules"), ipset).unwrap();
    let mut rules = String::from(
        "*filter\n:WEIR-FWD - [0:0]\n:WEIR-ALLOW - [0:0]\n\
         -A WEIR-FWD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
         -A WEIR-FWD -m conntrack --ctstate INVALID -j DROP\n",
    );
    for (proto, port) in allowed {
        rules.push_str(&format!(
            "-A WEIR-FWD -p {proto} --dport {port} -m set --match-set weir-clients src -m comment --comment \"weir:rule {proto}/{port}\" -j WEIR-ALLOW\n"
        ));
    }
    if let Some(r) = extra_rule {
        rules.push_str(r);
        rules.push('\n');
    }
    rules.push_str("-A WEIR-FWD -j DROP\n-A WEIR-ALLOW -j ACCEPT\nCOMMIT\n");
    std::fs::write(dir.join("iptables.rules"), rules).unwrap();
    std::fs::write(dir.join("ip6tables.rules"), "").unwrap();
    seal(dir, &[("filter", "FORWARD", "WEIR-FWD", "ipv4")], CLIENTS);
    Bundle::read(dir).unwrap()
}

/// What the node has, without counters, comments or empty default tables
/// (iptables-nft creates a table with its built-in chains on first use;
/// that table holds nothing).
fn dump(topo: &Topology, variant: Variant) -> String {
    let (v4, v6) = match variant {
        Variant::Legacy => ("iptables-legacy-save", "ip6tables-legacy-save"),
        Variant::Nft => ("iptables-nft-save", "ip6tables-nft-save"),
        Variant::System => ("iptables-save", "ip6tables-save"),
    };
    let mut out = String::new();
    for program in [v4, v6] {
        let o = topo.node.exec(program, &[]).unwrap();
        assert!(
            o.status.success(),
            "{program}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = String::from_utf8(o.stdout).unwrap();
        let mut table: Vec<String> = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let line = match line.split_once(" [") {
                Some((decl, _)) if line.starts_with(':') => decl.to_string(),
                _ => line.to_string(),
            };
            table.push(line.clone());
            if line == "COMMIT" {
                let trivial = table
                    .iter()
                    .all(|l| l.starts_with('*') || l == "COMMIT" || l.ends_with(" ACCEPT"));
                if !trivial {
                    out.push_str(&format!("{program}:\n{}\n", table.join("\n")));
                }
                table.clear();
            }
        }
    }
    let o = topo.node.exec("ipset", &["list", "-n"]).unwrap();
    out.push_str("ipset:\n");
    out.push_str(&String::from_utf8(o.stdout).unwrap());
    out
}

fn node_has(topo: &Topology, needle: &str) -> bool {
    dump(topo, Variant::System).contains(needle)
}

/// The node's own rules and sets that a weir apply/detach must not touch.
fn foreign_rules(topo: &Topology, variant: Variant) {
    let ipt = match variant {
        Variant::Legacy => "iptables-legacy",
        Variant::Nft => "iptables-nft",
        Variant::System => "iptables",
    };
    for args in [
        &["-w", "-A", "FORWARD", "-s", "192.0.2.1", "-j", "ACCEPT"][..],
        &[
            "-w", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT",
        ],
        &["-w", "-N", "SOMEONE-ELSE"],
        &["-w", "-A", "SOMEONE-ELSE", "-j", "RETURN"],
    ] {
        let o = topo.node.exec(ipt, args).unwrap();
        assert!(
            o.status.success(),
            "{ipt} {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let o = topo
        .node
        .exec("ipset", &["create", "other-set", "hash:ip"])
        .unwrap();
    assert!(o.status.success());
}

#[test]
fn harness_forwards_and_a_drop_rule_blocks() {
    if !ready("harness_forwards_and_a_drop_rule_blocks") {
        return;
    }
    let topo = Topology::new().unwrap();
    assert_eq!(topo.node.read_sysctl("net/ipv4/ip_forward").unwrap(), "1");
    let (c, s) = (ip("10.1.0.5"), ip("10.2.0.10"));
    assert!(
        topo.tcp_connect(c, s, 8080, ALLOW_WAIT),
        "tcp without rules"
    );
    assert_eq!(topo.tcp_probe(c, s, 8080, ALLOW_WAIT), Some(s));
    assert!(
        topo.udp_exchange(c, s, 5353, ALLOW_WAIT),
        "udp without rules"
    );
    assert!(topo.icmp_echo(c, s, ALLOW_WAIT), "icmp without rules");
    let (c6, s6) = (ip("fd00:1::5"), ip("fd00:2::10"));
    assert!(topo.tcp_connect(c6, s6, 8080, ALLOW_WAIT), "tcp over IPv6");
    assert!(topo.udp_exchange(c6, s6, 5353, ALLOW_WAIT), "udp over IPv6");
    assert!(topo.icmp_echo(c6, s6, ALLOW_WAIT), "icmpv6");
    // Nothing listens on this port: refused, not connected.
    assert_eq!(topo.tcp_probe(c, s, 9, ALLOW_WAIT), None);

    let o = topo
        .node
        .exec("iptables", &["-w", "-A", "FORWARD", "-j", "DROP"])
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!topo.tcp_connect(c, s, 8080, DENY_WAIT), "tcp through DROP");
    assert!(
        !topo.udp_exchange(c, s, 5353, DENY_WAIT),
        "udp through DROP"
    );
    assert!(!topo.icmp_echo(c, s, DENY_WAIT), "icmp through DROP");
    assert!(
        topo.tcp_connect(c6, s6, 8080, ALLOW_WAIT),
        "the v4 rule leaves v6 alone"
    );
}

/// The whole life cycle, for one iptables variant.
fn life_cycle(variant: Variant) {
    let topo = Topology::new().unwrap();
    foreign_rules(&topo, variant);
    let before = dump(&topo, variant);
    let work = scratch("life");
    let opts = Options::netns(topo.node.name())
        .with_state_dir(work.join("state"))
        .with_variant(variant);
    let rt = Iptables::new(opts);

    eprintln!("before apply ({variant:?}):\n{before}");
    let (client, outsider, server) = (ip("10.1.0.5"), ip("10.9.0.5"), ip("10.2.0.10"));
    let tcp = |src, port, wait| topo.tcp_connect(src, server, port, wait);

    // Generation 1: tcp/80 and udp/53 from 10.1.0.0/24.
    let a = write_bundle(&work.join("a"), &[("tcp", 80), ("udp", 53)], None, None);
    let r = rt.apply(&a).unwrap();
    assert_eq!((r.generation, r.unchanged), (1, false));
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert!(tcp(client, 80, ALLOW_WAIT), "gen 1 allows tcp/80");
    assert!(
        topo.udp_exchange(client, server, 53, ALLOW_WAIT),
        "gen 1 allows udp/53"
    );
    assert!(!tcp(client, 8080, DENY_WAIT), "gen 1 denies tcp/8080");
    assert!(
        !tcp(outsider, 80, DENY_WAIT),
        "gen 1 denies sources outside the set"
    );
    assert!(
        !topo.icmp_echo(client, server, DENY_WAIT),
        "gen 1 denies icmp"
    );
    let status = rt.status().unwrap();
    assert!(status.in_force, "{status:?}");
    assert_eq!(status.hooks.len(), 1);
    assert_eq!(status.hooks[0].jumps, 1);

    // Re-applying the same bundle changes nothing: no restore runs.
    let ran = rt.exec().log().len();
    let r = rt.apply(&a).unwrap();
    assert!(r.unchanged);
    assert_eq!(r.generation, 1);
    let log = rt.exec().log();
    assert!(
        log[ran..].iter().all(|c| c.program.ends_with("-save")
            || c.program == weir_runtime::iptables::xt::saved::SAVE_DIRECT
            || c.args == ["list", "-n"]
            || c.args == ["save"]),
        "re-apply ran {:?}",
        &log[ran..]
    );

    // Endpoint churn: the outsider's network joins the set and leaves it,
    // with ipset commands only and no rule change.
    let ran = rt.exec().log().len();
    rt.update_set("weir-clients", &["10.9.0.0/24".into()], &[])
        .unwrap();
    assert!(tcp(outsider, 80, ALLOW_WAIT), "added endpoint allowed");
    rt.update_set("weir-clients", &[], &["10.9.0.0/24".into()])
        .unwrap();
    assert!(
        !tcp(outsider, 80, DENY_WAIT),
        "removed endpoint denied again"
    );
    // Only ipset runs (each update builds a set and swaps it in: `swap`
    // lines in an `ipset restore` batch; the temporary sets are destroyed
    // over netlink, `ipset (direct)`); no rule changes.
    let log = rt.exec().log();
    assert!(log[ran..]
        .iter()
        .any(|c| c.args.first().is_some_and(|a| a == "restore")
            && c.stdin
                .as_deref()
                .is_some_and(|t| t.starts_with("swap weirt"))));
    assert!(log[ran..].iter().all(|c| c.program == "ipset"
        || c.program == weir_runtime::iptables::xt::ipset_load::IPSET_DIRECT
        || c.program.ends_with("-save")));
    assert!(matches!(
        rt.update_set("weir-nope", &["10.0.0.1".into()], &[]),
        Err(Error::State { .. })
    ));

    // Generation 2: tcp/8080 instead of tcp/80.
    let b = write_bundle(&work.join("b"), &[("tcp", 8080), ("udp", 53)], None, None);
    let ran = rt.exec().log().len();
    let r = rt.apply(&b).unwrap();
    assert_eq!((r.generation, r.previous, r.unchanged), (2, Some(1), false));
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    // Every x_tables transaction and save costs the whole table
    // (runtime/src/iptables/load.rs): per family one save to start from
    // and one read-back save; for IPv4 (the bundle has no IPv6 rules) one
    // restore that loads and switches and, with the nf_tables tools, one
    // that removes generation 1 (the legacy tools remove it in the
    // switch's COMMIT, runtime/src/iptables/fold.rs) — and no more.
    let log = rt.exec().log();
    let legacy = match variant {
        Variant::Legacy => true,
        Variant::Nft => false,
        Variant::System => {
            let o = topo.node.exec("iptables", &["--version"]).unwrap();
            !String::from_utf8_lossy(&o.stdout).contains("nf_tables")
        }
    };
    let ipv4_restores = if legacy { 1 } else { 2 };
    for (family, restores) in [(Family::Ipv4, ipv4_restores), (Family::Ipv6, 0)] {
        // (Runs with input: `--version` asks which tools these are.)
        let count = |program: String| {
            log[ran..]
                .iter()
                .filter(|c| {
                    c.program == program && (c.stdin.is_some() || program.ends_with("-save"))
                })
                .count()
        };
        // With the legacy tools each family's restore is written to
        // x_tables directly (runtime/src/iptables/xt), one replace per
        // COMMIT block: the same count, under the loader's name (and this
        // bundle's filter table is all the loader writes: no fallback).
        let direct = legacy
            && weir_runtime::iptables::xt::XtMode::from_env()
                == weir_runtime::iptables::xt::XtMode::Direct;
        let (tool, loader) = if direct { (0, restores) } else { (restores, 0) };
        // The exec log's direct lines of this family (their arguments
        // name it).
        let of_family = |program: &str| {
            log[ran..]
                .iter()
                .filter(|c| c.program == program && c.args.iter().any(|a| a == family.name()))
                .count()
        };
        // And each family's rules are read directly there too
        // (xt/saved.rs): the start's read and the read-back, both under
        // its name.
        let read = of_family(weir_runtime::iptables::xt::saved::SAVE_DIRECT);
        assert_eq!(
            read,
            2 * usize::from(direct),
            "{family:?}: the start's and the read-back's direct reads"
        );
        assert_eq!(
            (
                count(variant.save(family)) + read,
                count(variant.restore(family)),
                of_family(weir_runtime::iptables::xt::DIRECT),
            ),
            (2, tool, loader),
            "{family:?}: {:?}",
            log[ran..].iter().map(|c| &c.program).collect::<Vec<_>>()
        );
    }
    assert_eq!(rt.exec().fallbacks(), 0, "no block went to the tool");
    // The sets are read with one netlink dump (xt/ipset_save.rs), with any
    // tools, at the start (generation 1 has sets: which to keep) and in
    // the read-back — never by `ipset save` unless WEIR_XTABLES=tools.
    let set_reads = |program: &str| {
        log[ran..]
            .iter()
            .filter(|c| c.program == program && c.args == ["save"])
            .count()
    };
    let sets_direct = weir_runtime::iptables::xt::XtMode::from_env()
        == weir_runtime::iptables::xt::XtMode::Direct;
    assert_eq!(
        (
            set_reads(weir_runtime::iptables::xt::ipset_load::IPSET_DIRECT),
            set_reads("ipset")
        ),
        if sets_direct { (2, 0) } else { (0, 2) },
        "the start's and the read-back's set reads"
    );
    assert!(!r.phases.0.is_empty() && r.phases.get("iptables-restore") > Duration::ZERO);
    assert!(tcp(client, 8080, ALLOW_WAIT), "gen 2 allows tcp/8080");
    assert!(!tcp(client, 80, DENY_WAIT), "gen 2 denies tcp/80");
    // The set's members are unchanged (the churn above put them back), so
    // generation 2 keeps generation 1's set (runtime/src/iptables/reuse.rs;
    // iptables_set_reuse.rs tests sharing and removal in detail).
    assert_eq!(r.kept_sets, 1);
    let d = dump(&topo, variant);
    assert!(
        d.contains("WEIR2-FWD") && d.contains("--match-set weir1-clients src"),
        "{d}"
    );
    // Its unchanged chain too (runtime/src/iptables/keep.rs;
    // iptables_chain_keep.rs): generation 1's ALLOW chain stays, the rest
    // of generation 1 is gone.
    assert_eq!(r.kept_chains, 1);
    let recorded: Vec<String> = rt
        .read_state()
        .unwrap()
        .unwrap()
        .chains
        .iter()
        .map(|c| c.chain.clone())
        .collect();
    assert!(
        recorded.contains(&"WEIR1-ALLOW".to_string()),
        "{recorded:?}"
    );
    assert!(
        !d.contains("WEIR1-FWD") && !d.contains("weir2-clients"),
        "old generation left, or the set made twice: {d}"
    );
    for chain in d.lines().filter_map(|l| l.strip_prefix(':')) {
        let chain = chain.split(' ').next().unwrap();
        assert!(
            !chain.starts_with("WEIR1-") || recorded.iter().any(|c| c == chain),
            "old generation's {chain} left: {d}"
        );
    }
    assert_eq!(d.matches("-j WEIR-HOOK-FORWARD").count(), 1, "{d}");

    // A broken rule: the transaction fails, generation 2 stays in force.
    let broken = write_bundle(
        &work.join("broken"),
        &[("tcp", 443)],
        Some("-A WEIR-FWD -p tcp --dport notaport -j ACCEPT"),
        None,
    );
    let e = rt.apply(&broken).unwrap_err();
    let msg = e.to_string();
    eprintln!("broken rule: {msg}");
    assert!(matches!(e, Error::Step { .. }), "{e:?}");
    assert!(msg.contains("step 2") && msg.contains("restore"), "{msg}");
    assert!(msg.contains("notaport") || msg.contains("line"), "{msg}");
    assert!(tcp(client, 8080, ALLOW_WAIT), "gen 2 still allows tcp/8080");
    assert!(!tcp(client, 443, DENY_WAIT), "broken gen 3 not in force");
    let d = dump(&topo, variant);
    assert!(
        !d.contains("WEIR3-") && !d.contains("weir3-"),
        "half-made generation left: {d}"
    );
    assert_eq!(rt.read_state().unwrap().unwrap().generation, 2);
    assert!(rt.status().unwrap().in_force);

    // A broken set entry: step 1 fails, generation 2 stays in force.
    let broken = write_bundle(
        &work.join("broken-set"),
        &[("tcp", 443)],
        None,
        Some("add weir-clients 300.1.2.3"),
    );
    let e = rt.apply(&broken).unwrap_err();
    eprintln!("broken set: {e}");
    assert!(e.to_string().contains("step 1"), "{e}");
    assert!(tcp(client, 8080, ALLOW_WAIT), "gen 2 survives a broken set");
    assert!(!dump(&topo, variant).contains("weir3-"));

    // A bundle that would touch a chain not its own is refused up front.
    let evil = work.join("evil");
    write_bundle(&evil, &[("tcp", 80)], None, None);
    std::fs::write(
        evil.join("iptables.rules"),
        "*filter\n-A FORWARD -j ACCEPT\nCOMMIT\n",
    )
    .unwrap();
    seal(&evil, &[("filter", "FORWARD", "WEIR-FWD", "ipv4")], CLIENTS);
    let e = rt.apply(&Bundle::read(&evil).unwrap()).unwrap_err();
    assert!(matches!(e, Error::Bundle { .. }), "{e:?}");

    eprintln!("before detach:\n{}", dump(&topo, variant));
    // Detach leaves exactly what was there before.
    let report = rt.detach().unwrap();
    assert!(
        report.sets.contains(&"weir1-clients".to_string()),
        "{report:?}"
    );
    assert_eq!(dump(&topo, variant), before);
    assert!(rt.read_state().unwrap().is_none());
    assert!(!rt.status().unwrap().in_force);
    assert!(tcp(client, 80, ALLOW_WAIT), "no policy after detach");
    // Detach again is harmless.
    rt.detach().unwrap();
    assert_eq!(dump(&topo, variant), before);
    let _ = std::fs::remove_dir_all(work);
}

#[test]
fn apply_change_break_and_detach_system_iptables() {
    if !ready("apply_change_break_and_detach_system_iptables") {
        return;
    }
    life_cycle(Variant::System);
}

#[test]
fn apply_change_break_and_detach_legacy_iptables() {
    if !ready("apply_change_break_and_detach_legacy_iptables") {
        return;
    }
    if weir_runtime::iptables::exec::find_program("iptables-legacy-restore").is_none() {
        eprintln!("iptables-legacy not installed: skipped");
        return;
    }
    life_cycle(Variant::Legacy);
}

#[test]
fn detach_after_rehook() {
    if !ready("detach_after_rehook") {
        return;
    }
    let topo = Topology::new().unwrap();
    let before = dump(&topo, Variant::System);
    let work = scratch("lost");
    let rt = Iptables::new(Options::netns(topo.node.name()).with_state_dir(work.join("state")));
    let (client, server) = (ip("10.1.0.7"), ip("10.2.0.11"));
    let a = write_bundle(&work.join("a"), &[("tcp", 80)], None, None);
    rt.apply(&a).unwrap();
    assert!(!topo.tcp_connect(client, server, 81, DENY_WAIT));

    // Someone deletes our jump: the same bundle is re-applied, not skipped.
    let o = topo
        .node
        .exec(
            "iptables",
            &["-w", "-D", "FORWARD", "-j", "WEIR-HOOK-FORWARD"],
        )
        .unwrap();
    assert!(o.status.success());
    assert!(topo.tcp_connect(client, server, 81, ALLOW_WAIT), "unhooked");
    assert!(!rt.status().unwrap().in_force);
    let r = rt.apply(&a).unwrap();
    assert!(!r.unchanged);
    assert_eq!(r.generation, 2);
    assert!(
        !topo.tcp_connect(client, server, 81, DENY_WAIT),
        "re-hooked"
    );
    assert!(node_has(&topo, "-A FORWARD -j WEIR-HOOK-FORWARD"));

    rt.detach().unwrap();
    assert_eq!(dump(&topo, Variant::System), before);
    assert!(!work.join("state").exists(), "detach leaves no state dir");
    let _ = std::fs::remove_dir_all(work);
}

#[test]
fn missing_netns_is_a_clear_error() {
    if !ready("missing_netns_is_a_clear_error") {
        return;
    }
    let work = scratch("nons");
    let rt =
        Iptables::new(Options::netns("weir-no-such-namespace").with_state_dir(work.join("state")));
    let a = write_bundle(&work.join("a"), &[("tcp", 80)], None, None);
    let e = rt.apply(&a).unwrap_err();
    assert!(matches!(e, Error::NoNetns { .. }), "{e:?}");
    assert!(e.to_string().contains("weir-no-such-namespace"));
    let _ = std::fs::remove_dir_all(work);
}

#[test]
fn ipv6_and_several_tables() {
    if !ready("ipv6_and_several_tables") {
        return;
    }
    let topo = Topology::new().unwrap();
    let before = dump(&topo, Variant::System);
    let work = scratch("v6");
    let rt = Iptables::new(Options::netns(topo.node.name()).with_state_dir(work.join("state")));
    let (c4, s4, c6, s6) = (
        ip("10.1.0.8"),
        ip("10.2.0.12"),
        ip("fd00:1::8"),
        ip("fd00:2::12"),
    );
    let write = |dir: &Path, v6: bool| {
        std::fs::create_dir_all(dir).unwrap();
        let filter_family = if v6 { "both" } else { "ipv4" };
        let mut hooks = vec![("filter", "FORWARD", "WEIR-FWD", filter_family)];
        if v6 {
            hooks.push(("mangle", "PREROUTING", "WEIR-MANGLE-PRE", "ipv4"));
        }
        let filter = "*filter\n:WEIR-FWD - [0:0]\n-A WEIR-FWD -p tcp --dport 81 -j DROP\nCOMMIT\n";
        let mangle = "*mangle\n:WEIR-MANGLE-PRE - [0:0]\n-A WEIR-MANGLE-PRE -p tcp --dport 82 -j MARK --set-mark 0x10\nCOMMIT\n";
        let v4 = if v6 {
            format!("{mangle}{filter}")
        } else {
            filter.to_string()
        };
        std::fs::write(dir.join("iptables.rules"), v4).unwrap();
        std::fs::write(dir.join("ip6tables.rules"), if v6 { filter } else { "" }).unwrap();
        seal(dir, &hooks, &[]);
        Bundle::read(dir).unwrap()
    };

    let both = write(&work.join("both"), true);
    assert_eq!(
        both.hooks[0].families.len(),
        2,
        "filter hook on both families"
    );
    assert_eq!(both.hooks[1].families.len(), 1, "mangle hook on IPv4 only");
    rt.apply(&both).unwrap();
    assert!(!topo.tcp_connect(c4, s4, 81, DENY_WAIT));
    assert!(!topo.tcp_connect(c6, s6, 81, DENY_WAIT));
    assert!(topo.tcp_connect(c4, s4, 82, ALLOW_WAIT));
    assert!(topo.tcp_connect(c6, s6, 82, ALLOW_WAIT));
    let d = dump(&topo, Variant::System);
    assert!(d.contains("-A PREROUTING -j WEIR-HOOK-PREROUTING"), "{d}");
    assert!(rt.status().unwrap().in_force);

    // The next generation drops IPv6 and the mangle hook: both go.
    let v4 = write(&work.join("v4"), false);
    let r = rt.apply(&v4).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert!(!topo.tcp_connect(c4, s4, 81, DENY_WAIT));
    assert!(
        topo.tcp_connect(c6, s6, 81, ALLOW_WAIT),
        "IPv6 hook removed"
    );
    let d = dump(&topo, Variant::System);
    assert!(!d.contains("PREROUTING") && !d.contains("WEIR1-"), "{d}");
    assert!(!d.contains("ip6tables-save"), "{d}");

    rt.detach().unwrap();
    assert_eq!(dump(&topo, Variant::System), before);
    let _ = std::fs::remove_dir_all(work);
}
