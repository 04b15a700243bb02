use super::*;
use crate::gen;

fn out(seed: u64) -> Result<Output, Vec<Unsupported>> {
    let model = gen::model(seed);
    let g = crate::graph::build(&model);
    generate_text(&g, &model, &Options::default())
}

/// Default options, Maglev balanced randomly (which iptables can do).
fn random_lb() -> Options {
    Options {
        maglev_as_random: true,
        ..Options::default()
    }
}

#[test]
fn deterministic_and_names_fit() {
    let opts = random_lb();
    let mut done = 0;
    for seed in 0..80 {
        let model = gen::model(seed);
        let g = crate::graph::build(&model);
        let Ok(a) = generate_text(&g, &model, &opts) else {
            continue;
        };
        done += 1;
        let g2 = crate::graph::build(&model);
        let b = generate_text(&g2, &model, &opts).unwrap();
        assert_eq!(a, b, "seed {seed}");
        for text in [&a.iptables, &a.ip6tables] {
            for line in text.lines() {
                if let Some(c) = line.strip_prefix(':') {
                    let name = c.split_whitespace().next().unwrap();
                    assert!(name.starts_with("WEIR-") && name.len() <= 24, "{name}");
                }
                // Every rule but a branching one (a goto or call of one of
                // weir's chains, or a `RETURN` that leaves the decision to
                // the caller, `chains.rs`) names its provenance.
                let branching = line.rsplit_once(' ').is_some_and(|(h, x)| {
                    (x.starts_with("WEIR-") && (h.ends_with(" -g") || h.ends_with(" -j")))
                        || (x == "RETURN" && h.ends_with(" -j"))
                });
                // (An event rule names it by its NFLOG prefix, `events.rs`.)
                if line.starts_with("-A ") && !branching {
                    assert!(
                        line.contains("--comment \"weir:")
                            || line.contains("--nflog-prefix \"weir:"),
                        "no provenance: {line}"
                    );
                }
                assert!(
                    !line.contains("weir:ev:"),
                    "an event rule's comment: {line}"
                );
                let node_comment = line
                    .split("--comment \"weir:n")
                    .nth(1)
                    .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()));
                if node_comment {
                    panic!("a node comment: {line}");
                }
            }
        }
        for line in a.ipset.lines().filter(|l| l.starts_with("create ")) {
            let name = line.split_whitespace().nth(1).unwrap();
            assert!(name.starts_with("weir-") && name.len() <= 26, "{name}");
        }
    }
    assert!(done >= 60, "only {done} seeds generate");
}

#[test]
fn maglev_is_refused_unless_trivial() {
    let mut refused = 0;
    for seed in 0..60 {
        if let Err(e) = out(seed) {
            refused += 1;
            for u in e {
                let d = u.diagnostic();
                assert_eq!(d.code.as_str(), "E0501");
                assert!(d.message.contains("iptables"), "{}", d.message);
            }
        }
    }
    assert!(refused > 0);
}

/// Generated policies whose chains nested deeper than nf_tables allows
/// (one chain per graph node) fit after tail inlining; one whose depth is
/// in conditional gotos alone is refused with E0510 at compile time
/// instead of failing at apply. (runtime/tests/iptables_diff.rs applies
/// the first ones on nf_tables.)
#[test]
fn deep_generated_policies_fit_nftables() {
    let opts = random_lb();
    for (seed, was) in [(1316, 19), (1526, 18), (396, 17), (863, 17), (122, 16)] {
        let model = gen::base_model(seed);
        let g = crate::graph::build(&model);
        assert_eq!(super::emit::depth_without_passes(&g, &model, &opts), was);
        let out = generate_text(&g, &model, &opts).unwrap();
        for counts in out.manifest["counts"].as_array().unwrap() {
            let d = counts["depth"].as_u64().unwrap() as usize;
            assert!(d <= super::depth::MAX_DEPTH, "seed {seed}: depth {d}");
        }
    }
    let model = gen::base_model(2111);
    let g = crate::graph::build(&model);
    let e = generate_text(&g, &model, &opts).unwrap_err();
    let d = e[0].diagnostic();
    assert_eq!(d.code.as_str(), "E0510");
    assert!(d.message.contains("table `nat`"), "{}", d.message);
}

/// The set and direction (`src` / `dst`) of a rule's set test, negated
/// or not.
fn set_and_dir(rule: &str) -> (&str, &str) {
    let w: Vec<&str> = rule.split_whitespace().collect();
    let i = w.iter().position(|x| *x == "--match-set").unwrap();
    (w[i + 1], w[i + 2])
}

/// A class table's own group tests: the set tests in direction `dir`
/// that `rules` start with (after them comes the table's default, or a
/// child's rules inlined at the chain's tail; branching rules carry no
/// node comment to tell them apart, `chains.rs`).
fn own_tests<'a>(rules: &'a [&'a str], dir: &'a str) -> impl Iterator<Item = &'a &'a str> {
    rules
        .iter()
        .take_while(move |r| r.contains("-m set --match-set") && set_and_dir(r).1 == dir)
}

/// A class table at the root of a stage with several groups first sends
/// every address outside all groups to the fall-through with one lookup in
/// their union: that rule comes first in its chain, and its set holds
/// every member of the sets the table tests after it (the last group is
/// not tested: it is what is left).
#[test]
fn root_class_tables_test_the_union_first() {
    let opts = random_lb();
    let (mut tables, mut groups) = (0, 0);
    for seed in 0..40 {
        let model = gen::model(seed);
        let g = crate::graph::build(&model);
        let Ok(a) = generate_text(&g, &model, &opts) else {
            continue;
        };
        let (chains, members) = parsed(&a);
        // Every member of each of the table's own group tests that
        // `rules` start with is in the union `all`.
        let mut in_union = |rules: &[&str], all: &str, dir: &str, name: &str| {
            for r in own_tests(rules, dir) {
                groups += 1;
                let s = set_and_dir(r).0;
                for m in members.get(s).into_iter().flatten() {
                    assert!(
                        members[all].contains(m),
                        "seed {seed}: {m} of {s} is not in {all} ({name})"
                    );
                }
            }
        };
        let mut unions = std::collections::BTreeSet::new();
        for (name, rules) in &chains {
            for (i, r) in rules.iter().enumerate() {
                // (`self`'s mangle chain has a negated match too.)
                if !r.contains("-m set ! --match-set")
                    || r.contains(&format!("--match-set {}", super::self_set::SET))
                {
                    continue;
                }
                tables += 1;
                let (all, dir) = set_and_dir(r);
                unions.insert(all);
                // A policy root's union test moved into the filter entry
                // (`hoist.rs`): before it only the entry's own rules; its
                // groups are tested in the root it calls next.
                if [super::entries::FWD, super::hoist::FWD_IN].contains(name) {
                    assert!(
                        rules[..i].iter().all(|r| !r.contains("--match-set")),
                        "seed {seed}: a set test before the union in {name}"
                    );
                    let root = rules[i + 1..]
                        .iter()
                        .find_map(|r| r.split(" -j WEIR-F").nth(1))
                        .map(|n| format!("WEIR-F{n}"))
                        .unwrap();
                    // The root's own group tests are its leading set tests
                    // in the union's direction.
                    in_union(&chains[root.as_str()], all, dir, name);
                    continue;
                }
                assert_eq!(i, 0, "seed {seed}: union test not first in {name}");
                // The table's own tests (tail inlining may append a
                // child's rules after them).
                in_union(&rules[i + 1..], all, dir, name);
            }
        }
        // At most one per stage root (steer, egress, ingress).
        assert!(unions.len() <= 3, "seed {seed}: {unions:?}");
    }
    assert!(tables >= 10, "{tables} class tables with a union test");
    assert!(
        groups >= tables,
        "{groups} group tests checked in {tables} tables"
    );
}

/// Programs without bypass or mark/DSCP steering install no raw or mangle
/// chains and no hooks into them (a new flow pays for no table it does
/// not need); the kernel differential tests check their verdicts.
#[test]
fn no_steering_no_raw_or_mangle_hooks() {
    use crate::model::SteerAction;
    let opts = random_lb();
    let mut plain = 0;
    for seed in 0..40 {
        let model = gen::model(seed);
        let g = crate::graph::build(&model);
        let Ok(a) = generate_text(&g, &model, &opts) else {
            continue;
        };
        let actions = || g.steer_actions.iter().flatten();
        let bypass = actions().any(|a| matches!(a, SteerAction::Bypass));
        let mark = actions().any(|a| matches!(a, SteerAction::Mark(_) | SteerAction::Dscp(_)));
        let hooks: Vec<&str> = a.manifest["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["table"].as_str().unwrap())
            .collect();
        for text in [&a.iptables, &a.ip6tables] {
            if !bypass {
                assert!(!text.contains("*raw"), "seed {seed}");
                assert!(!hooks.contains(&"raw"), "seed {seed}");
            }
            // (`self` computes its relation in mangle FORWARD.)
            if !mark && !crate::graph::same_endpoint::uses_self(&model) {
                assert!(!text.contains("*mangle"), "seed {seed}");
                assert!(!hooks.contains(&"mangle"), "seed {seed}");
            }
        }
        if !bypass && !mark {
            plain += 1;
        }
    }
    assert!(plain >= 5, "{plain} programs without steering");
}

/// Rules of each chain of a restore text, and the members of each set of
/// an ipset text.
type Chains<'a> = std::collections::BTreeMap<&'a str, Vec<&'a str>>;
type Members<'a> = std::collections::BTreeMap<&'a str, std::collections::BTreeSet<&'a str>>;

fn parsed(o: &Output) -> (Chains<'_>, Members<'_>) {
    let mut chains: Chains = Default::default();
    for l in o.iptables.lines().filter(|l| l.starts_with("-A ")) {
        chains
            .entry(l.split_whitespace().nth(1).unwrap())
            .or_default()
            .push(l);
    }
    let mut members: Members = Default::default();
    for l in o.ipset.lines() {
        if let Some(rest) = l.strip_prefix("add ") {
            let (set, m) = rest.split_once(' ').unwrap();
            members.entry(set).or_default().insert(m);
        }
    }
    (chains, members)
}

/// `(set, goto target)` of a `-m set --match-set` rule.
fn set_test(rule: &str) -> Option<(&str, &str)> {
    let w: Vec<&str> = rule.split_whitespace().collect();
    let i = w.iter().position(|x| *x == "--match-set")?;
    if w[i - 1] == "!" {
        return None;
    }
    let g = w.iter().position(|x| *x == "-g" || *x == "-j")?;
    Some((w[i + 1], w[g + 1]))
}

/// A root class table with many groups (here ~100 policies' worth)
/// tests them in chunks: no chain tests more than about √G + 1 sets one
/// after the other, and a chunk's set holds exactly the members of the
/// groups its sub-chain tells apart (the one it does not test is the
/// rest of the chunk). Without chunks, the ingress root of this model
/// tested ~100 sets in a row: a new flow to an endpoint late in the
/// table made a set lookup (~0.2 µs) for every group before its own.
#[test]
fn big_root_class_tables_test_groups_in_chunks() {
    let params = crate::synth::Params {
        seed: 3,
        services: 3,
        policies: 100,
        rules: 5,
        endpoints: 400,
        deployments: 120,
        ..crate::synth::Params::default()
    };
    let model = crate::synth::model(&params);
    let g = crate::graph::build(&model);
    let opts = random_lb();
    let o = generate_text(&g, &model, &opts).unwrap();
    let (chains, members) = parsed(&o);
    let mut chunks = 0;
    let mut longest = 0;
    for (name, rules) in &chains {
        let tests: Vec<(&str, &str)> = rules.iter().filter_map(|r| set_test(r)).collect();
        longest = longest.max(tests.len());
        for (set, target) in tests {
            // A chunk: a set test going to a sub-chain of set tests.
            let own = target
                .strip_prefix(*name)
                .is_some_and(|t| t.starts_with('-'));
            let Some(sub) = chains.get(target).filter(|_| own) else {
                continue;
            };
            let inner: Vec<(&str, &str)> = sub.iter().filter_map(|r| set_test(r)).collect();
            if inner.is_empty() {
                continue;
            }
            chunks += 1;
            let all = &members[set];
            let mut tested = std::collections::BTreeSet::new();
            for (s, _) in &inner {
                for m in &members[s] {
                    assert!(all.contains(m), "{m} of {s} is not in chunk {set}");
                    tested.insert(*m);
                }
            }
            assert!(
                tested.len() < all.len(),
                "{set}: its last group is not left"
            );
        }
    }
    assert!(chunks >= 10, "{chunks} chunks");
    assert!(longest <= 14, "a chain tests {longest} sets in a row");
}

/// A program with no IPv6 address has no IPv6 set and no IPv6 `-m set`
/// rule (every IPv6 address is class 0), and says so in the manifest;
/// one with IPv6 prefixes keeps each set in both families.
#[test]
fn ipv6_sets_only_where_an_ipv6_address_has_a_class() {
    let opts = random_lb();
    let (mut v4_only, mut dual) = (0, 0);
    let models = (0..120)
        .map(|seed| (seed, gen::model(seed)))
        .chain((0..20).map(|seed| (seed, gen::dual_stack(seed))));
    for (seed, model) in models {
        let g = crate::graph::build(&model);
        let Ok(o) = generate_text(&g, &model, &opts) else {
            continue;
        };
        let v6_sets = o.ipset.contains("family inet6");
        if g.classes.classifies_v6() {
            dual += 1;
            let n = |f: &str| o.ipset.matches(&format!("family {f} ")).count();
            assert_eq!(n("inet"), n("inet6"), "seed {seed}: a set per family");
            assert!(o.manifest.get("ipv6_class0").is_none(), "seed {seed}");
        } else {
            v4_only += 1;
            assert!(
                !v6_sets && !o.ip6tables.contains("--match-set"),
                "seed {seed}"
            );
            assert_eq!(o.manifest["ipv6_class0"], true, "seed {seed}");
            let v6: Vec<_> = o.manifest["sets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["family"] == "ipv6")
                .collect();
            assert!(v6.is_empty(), "seed {seed}: {v6:?}");
        }
    }
    assert!(
        v4_only >= 5 && dual >= 20,
        "{v4_only} IPv4-only, {dual} dual"
    );
}
