//! The chain graph after generation: tail inlining, and the jump depth
//! nf_tables allows.
//!
//! nf_tables refuses a ruleset in which a chain is reached through more
//! than 15 jumps/gotos from a built-in (base) chain (`NFT_JUMP_STACK_SIZE`
//! = 16; `-g` counts like `-j`: `RULE_APPEND failed (Too many links)`).
//! The runtime enters our entry chains through two of them, `FORWARD →
//! WEIR-HOOK-FORWARD → WEIR<g>-FWD`, so a chain may be at most
//! [`MAX_DEPTH`] = 13 jumps below an entry chain.
//!
//! [`inline`] runs first: a chain whose last rule is an unconditional
//! `-g B` (a graph node's else / default branch) continues in `B`'s rules
//! instead, when that rule is the only reference to `B`. Every branch rule
//! ends in a goto or `RETURN`, so falling off the end of the inlined rules
//! is the same as falling off `B`: nothing changes for a packet, and a
//! straight-line sequence of tests (a decision list's else-spine) becomes
//! one chain. If the graph is still too deep, [`limit`] inlines shared
//! chains along the deepest path (copies, within a size budget), and
//! reports the depth it could not reduce.

use super::text::Tables;
use std::collections::{HashMap, HashSet};

/// Jumps below an entry chain nf_tables still accepts (see the module
/// docs).
pub const MAX_DEPTH: usize = 13;

/// The chains a rule jumps or goes to, among `known`.
fn targets<'a>(rule: &'a str, known: &HashSet<String>) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut it = rule.split_whitespace();
    while let Some(t) = it.next() {
        if t == "-j" || t == "-g" {
            if let Some(c) = it.next() {
                if known.contains(c) {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// `B` if `rule` (of chain `a`) is `-A a [comment] -g B` and nothing else.
fn tail_goto<'a>(rule: &'a str, a: &str) -> Option<&'a str> {
    let rest = rule.strip_prefix("-A ")?.strip_prefix(a)?.trim_start();
    let rest = match rest.strip_prefix("-m comment --comment \"") {
        Some(r) => r.split_once('"')?.1.trim_start(),
        None => rest,
    };
    let b = rest.strip_prefix("-g ")?;
    (!b.contains(char::is_whitespace)).then_some(b)
}

/// `chain`'s rules as rules of `into`.
fn moved(rules: &[String], chain: &str, into: &str) -> Vec<String> {
    let from = format!("-A {chain} ");
    rules
        .iter()
        .map(|r| match r.strip_prefix(&from) {
            Some(rest) => format!("-A {into} {rest}"),
            None => r.clone(),
        })
        .collect()
}

/// Inlines every chain that is only entered by the unconditional last rule
/// of one other chain (see the module docs).
pub fn inline(out: &mut Tables) {
    for t in out.tables.values_mut() {
        let known: HashSet<String> = t.chains.iter().cloned().collect();
        let mut refs: HashMap<String, usize> = HashMap::new();
        for rules in t.rules.values() {
            for r in rules {
                for c in targets(r, &known) {
                    *refs.entry(c.to_string()).or_default() += 1;
                }
            }
        }
        let mut gone: HashSet<String> = HashSet::new();
        for a in t.chains.clone() {
            if gone.contains(&a) {
                continue;
            }
            while let Some(b) = t
                .rules
                .get(&a)
                .and_then(|rs| rs.last())
                .and_then(|r| tail_goto(r, &a))
                .filter(|b| known.contains(*b) && *b != a && refs.get(*b) == Some(&1))
                .map(str::to_string)
            {
                let body = t.rules.remove(&b).unwrap_or_default();
                let body = moved(&body, &b, &a);
                let rules = t.rules.entry(a.clone()).or_default();
                rules.pop();
                rules.extend(body);
                gone.insert(b);
            }
        }
        t.chains.retain(|c| !gone.contains(c));
    }
}

/// Longest jump path below an entry chain (a chain nothing in its table
/// refers to), per table, and one such path.
pub fn depths(out: &Tables) -> Vec<(&'static str, usize, Vec<String>)> {
    out.tables
        .iter()
        .map(|(&name, t)| {
            let (d, path) = deepest(&t.chains, &t.rules);
            (name, d, path)
        })
        .collect()
}

fn deepest(
    chains: &[String],
    rules: &std::collections::BTreeMap<String, Vec<String>>,
) -> (usize, Vec<String>) {
    let known: HashSet<String> = chains.iter().cloned().collect();
    let edges: HashMap<&str, Vec<&str>> = chains
        .iter()
        .map(|c| {
            let mut e: Vec<&str> = rules
                .get(c)
                .into_iter()
                .flatten()
                .flat_map(|r| targets(r, &known))
                .collect();
            e.sort_unstable();
            e.dedup();
            (c.as_str(), e)
        })
        .collect();
    // Height of every chain (longest path down), iteratively: the graph is
    // a DAG but may be deep.
    let mut height: HashMap<&str, (usize, Option<&str>)> = HashMap::new();
    for c in chains {
        let mut stack: Vec<(&str, bool)> = vec![(c.as_str(), false)];
        while let Some((n, done)) = stack.pop() {
            if height.contains_key(n) {
                continue;
            }
            if done {
                let best = edges[n]
                    .iter()
                    .map(|&k| (height.get(k).map_or(0, |h| h.0) + 1, Some(k)))
                    .max_by_key(|x| x.0)
                    .unwrap_or((0, None));
                height.insert(n, best);
                continue;
            }
            stack.push((n, true));
            for &k in &edges[n] {
                if !height.contains_key(k) {
                    stack.push((k, false));
                }
            }
        }
    }
    let referenced: HashSet<&str> = edges.values().flatten().copied().collect();
    let Some(root) = chains
        .iter()
        .map(String::as_str)
        .filter(|c| !referenced.contains(c))
        .max_by_key(|c| height[c].0)
    else {
        return (0, Vec::new());
    };
    let mut path = vec![root.to_string()];
    let mut at = root;
    while let (_, Some(next)) = height[at] {
        path.push(next.to_string());
        at = next;
    }
    (height[root].0, path)
}

/// A table whose chain graph is deeper than nf_tables allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooDeep {
    pub table: &'static str,
    pub depth: usize,
    /// The deepest path, entry chain first.
    pub path: Vec<String>,
}

/// Brings every table within [`MAX_DEPTH`] by copying shared chains into
/// the chains that end by going to them, along the deepest path, while the
/// table grows by at most as many rules as it had (plus 1,000); the tables
/// still too deep.
pub fn limit(out: &mut Tables) -> Vec<TooDeep> {
    let mut refused = Vec::new();
    for (&name, t) in out.tables.iter_mut() {
        let start: usize = t.rules.values().map(Vec::len).sum();
        let mut budget = start + 1000;
        let mut copied = false;
        loop {
            let (d, path) = deepest(&t.chains, &t.rules);
            if d <= MAX_DEPTH {
                break;
            }
            // The cheapest unconditional tail goto on the path.
            let best = path
                .windows(2)
                .filter(|w| {
                    t.rules
                        .get(&w[0])
                        .and_then(|rs| rs.last())
                        .and_then(|r| tail_goto(r, &w[0]))
                        == Some(w[1].as_str())
                })
                .min_by_key(|w| t.rules.get(&w[1]).map_or(0, Vec::len));
            let Some(w) = best else {
                refused.push(TooDeep {
                    table: name,
                    depth: d,
                    path,
                });
                break;
            };
            let (a, b) = (w[0].clone(), w[1].clone());
            let body = moved(t.rules.get(&b).map_or(&[][..], Vec::as_slice), &b, &a);
            if body.len() > budget {
                refused.push(TooDeep {
                    table: name,
                    depth: d,
                    path,
                });
                break;
            }
            budget -= body.len();
            copied = true;
            let rules = t.rules.entry(a).or_default();
            rules.pop();
            rules.extend(body);
        }
        // Chains no longer referenced after copying.
        if !copied {
            continue;
        }
        loop {
            let known: HashSet<String> = t.chains.iter().cloned().collect();
            let referenced: HashSet<String> = t
                .rules
                .values()
                .flatten()
                .flat_map(|r| targets(r, &known))
                .map(str::to_string)
                .collect();
            let entry = |c: &String| super::emit::ENTRIES.contains(&c.as_str());
            let dead: Vec<String> = t
                .chains
                .iter()
                .filter(|c| !referenced.contains(*c) && !entry(c))
                .cloned()
                .collect();
            if dead.is_empty() {
                break;
            }
            for c in &dead {
                t.rules.remove(c);
            }
            t.chains.retain(|c| !dead.contains(c));
        }
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(lines: &[(&str, &[&str])]) -> Tables {
        let mut t = Tables::default();
        for (c, rules) in lines {
            t.chain("filter", c);
            for r in *rules {
                t.rule("filter", c, &[r]);
            }
        }
        t
    }

    #[test]
    fn tail_gotos() {
        assert_eq!(
            tail_goto(
                "-A WEIR-F1 -m comment --comment \"weir:n1\" -g WEIR-F2",
                "WEIR-F1"
            ),
            Some("WEIR-F2")
        );
        assert_eq!(
            tail_goto("-A WEIR-F1 -g WEIR-F2", "WEIR-F1"),
            Some("WEIR-F2")
        );
        assert_eq!(tail_goto("-A WEIR-F1 -p tcp -g WEIR-F2", "WEIR-F1"), None);
        assert_eq!(
            tail_goto(
                "-A WEIR-F1 -m comment --comment \"weir:n1\" -j WEIR-F2",
                "WEIR-F1"
            ),
            None
        );
    }

    #[test]
    fn single_parent_tails_are_inlined_shared_ones_are_not() {
        let mut t = table(&[
            ("WEIR-FWD", &["-j WEIR-F1", "-j ACCEPT"]),
            ("WEIR-F1", &["-p tcp -g WEIR-F9", "-g WEIR-F2"]),
            ("WEIR-F2", &["-p udp -g WEIR-F9", "-g WEIR-F3"]),
            ("WEIR-F3", &["-s 10.0.0.1/32 -j DROP", "-g WEIR-F4"]),
            ("WEIR-F4", &["-p icmp -j DROP"]),
            ("WEIR-F9", &["-j DROP"]),
        ]);
        inline(&mut t);
        let f = &t.tables["filter"];
        assert_eq!(f.chains, vec!["WEIR-FWD", "WEIR-F1", "WEIR-F9"]);
        assert_eq!(
            f.rules["WEIR-F1"],
            vec![
                "-A WEIR-F1 -p tcp -g WEIR-F9",
                "-A WEIR-F1 -p udp -g WEIR-F9",
                "-A WEIR-F1 -s 10.0.0.1/32 -j DROP",
                "-A WEIR-F1 -p icmp -j DROP",
            ]
        );
        assert_eq!(depths(&t)[0].1, 2);
    }

    #[test]
    fn too_deep_chains_are_copied_then_refused() {
        // A ladder: every chain tests, goes to the next on a match, and
        // ends by going to a shared chain.
        let n = 20;
        let mut chains: Vec<(String, Vec<String>)> = Vec::new();
        chains.push(("WEIR-FWD".into(), vec!["-j WEIR-F0".into()]));
        for i in 0..n {
            chains.push((format!("WEIR-F{i}"), vec![format!("-g WEIR-S{i}")]));
            let next = if i + 1 < n {
                format!("-g WEIR-F{}", i + 1)
            } else {
                "-j DROP".into()
            };
            chains.push((format!("WEIR-S{i}"), vec![format!("-p tcp {next}")]));
        }
        // Share every S chain so that nothing is inlined for free.
        chains.push((
            "WEIR-X".into(),
            (0..n).map(|i| format!("-p udp -g WEIR-S{i}")).collect(),
        ));
        let mut t = Tables::default();
        for (c, rules) in &chains {
            t.chain("filter", c);
            for r in rules {
                t.rule("filter", c, &[r]);
            }
        }
        inline(&mut t);
        assert_eq!(depths(&t)[0].1, 2 * n);
        // Copies of the S chains into the F chains halve the depth, which
        // is still too deep.
        let refused = limit(&mut t);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].depth, n);
        assert_eq!(refused[0].path.len(), n + 1);
    }
}
