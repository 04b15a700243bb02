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

use super::text::{FastMap, Tables};

/// Jumps below an entry chain nf_tables still accepts (see the module
/// docs).
pub const MAX_DEPTH: usize = 13;

/// Calls `f` with every token that follows a `-j` or `-g` token of
/// `rule` (tokens are runs of non-whitespace; a token taken as a target
/// is not itself looked at as `-j` / `-g`). The scan looks for `-`
/// eight bytes at a time: rules are long and jumps are few.
pub(super) fn jump_tokens<'a>(rule: &'a str, mut f: impl FnMut(&'a str)) {
    let b = rule.as_bytes();
    let n = b.len();
    let ws = |i: usize| b[i].is_ascii_whitespace();
    // Targets end before this position; dashes before it are skipped.
    let mut skip = 0;
    let mut at_dash = |p: usize, f: &mut dyn FnMut(&'a str)| {
        if p < skip
            || p + 1 >= n
            || !(b[p + 1] == b'j' || b[p + 1] == b'g')
            || (p > 0 && !ws(p - 1))
            || (p + 2 < n && !ws(p + 2))
        {
            return;
        }
        let mut q = p + 2;
        while q < n && ws(q) {
            q += 1;
        }
        let start = q;
        while q < n && !ws(q) {
            q += 1;
        }
        skip = q;
        if q > start {
            f(&rule[start..q]);
        }
    };
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let dash = LO * u64::from(b'-');
    let mut i = 0;
    while i + 8 <= n {
        let w = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes")) ^ dash;
        // A set high bit for every zero byte of `w` (and maybe for some
        // bytes after one: each candidate is checked).
        let mut m = w.wrapping_sub(LO) & !w & HI;
        while m != 0 {
            let p = i + (m.trailing_zeros() / 8) as usize;
            if b[p] == b'-' {
                at_dash(p, &mut f);
            }
            m &= m - 1;
        }
        i += 8;
    }
    for (p, &c) in b.iter().enumerate().skip(i) {
        if c == b'-' {
            at_dash(p, &mut f);
        }
    }
}

/// The chains (indexes into the table's chain list) a rule jumps or goes
/// to.
fn targets(rule: &str, index: &FastMap<&str, usize>, mut f: impl FnMut(usize)) {
    jump_tokens(rule, |t| {
        if let Some(&i) = index.get(t) {
            f(i)
        }
    });
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
            Some(rest) => {
                let mut s = String::with_capacity(4 + into.len() + rest.len());
                s.push_str("-A ");
                s.push_str(into);
                s.push(' ');
                s.push_str(rest);
                s
            }
            None => r.clone(),
        })
        .collect()
}

fn index_of(chains: &[String]) -> FastMap<&str, usize> {
    chains
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect()
}

/// Every chain's jump targets (indexes into `chains`), in rule order, one
/// per `-j` / `-g` to a chain of the table: one scan of the rules' text.
fn edge_lists(chains: &[String], rules: &FastMap<String, Vec<String>>) -> Vec<Vec<usize>> {
    let index = index_of(chains);
    chains
        .iter()
        .map(|c| {
            let mut e = Vec::new();
            for r in rules.get(c).into_iter().flatten() {
                targets(r, &index, |k| e.push(k));
            }
            e
        })
        .collect()
}

/// The jump targets of each table's chains after [`inline`] ([`edge_lists`]
/// of the chains it kept, by table), so that [`limit`] need not scan the
/// rules again.
pub struct Edges(std::collections::BTreeMap<&'static str, Vec<Vec<usize>>>);

/// Inlines every chain that is only entered by the unconditional last rule
/// of one other chain (see the module docs).
pub fn inline(out: &mut Tables) -> Edges {
    let mut all_edges = std::collections::BTreeMap::new();
    for (&name, t) in out.tables.iter_mut() {
        let chains = std::mem::take(&mut t.chains);
        let index = index_of(&chains);
        // Rules that name a chain of another table (none do) are not
        // edges; rules of chains not declared are not scanned, as before.
        let mut edges = edge_lists(&chains, &t.rules);
        let mut refs = vec![0usize; chains.len()];
        for rules in t
            .rules
            .iter()
            .filter(|(c, _)| !index.contains_key(c.as_str()))
            .map(|(_, rs)| rs)
        {
            for r in rules {
                targets(r, &index, |c| refs[c] += 1);
            }
        }
        for &k in edges.iter().flatten() {
            refs[k] += 1;
        }
        let mut gone = vec![false; chains.len()];
        for (ai, a) in chains.iter().enumerate() {
            if gone[ai] {
                continue;
            }
            while let Some(bi) = t
                .rules
                .get(a)
                .and_then(|rs| rs.last())
                .and_then(|r| tail_goto(r, a))
                .and_then(|b| index.get(b).copied())
                .filter(|&bi| bi != ai && refs[bi] == 1)
            {
                let b = &chains[bi];
                let body = t.rules.remove(b).unwrap_or_default();
                let body = moved(&body, b, a);
                let rules = t.rules.get_mut(a).expect("`a` has the tail goto");
                rules.pop();
                rules.extend(body);
                gone[bi] = true;
                // The tail goto was `a`'s last edge; `b`'s edges follow.
                let popped = edges[ai].pop();
                debug_assert_eq!(popped, Some(bi));
                let moved_edges = std::mem::take(&mut edges[bi]);
                edges[ai].extend(moved_edges);
            }
        }
        // Chains kept, renumbered (no edge points at an inlined chain:
        // its one reference was the tail goto removed).
        let mut renumber = vec![usize::MAX; chains.len()];
        let mut next = 0;
        for (i, g) in gone.iter().enumerate() {
            if !g {
                renumber[i] = next;
                next += 1;
            }
        }
        let kept: Vec<Vec<usize>> = edges
            .into_iter()
            .zip(&gone)
            .filter(|(_, g)| !**g)
            .map(|(e, _)| e.into_iter().map(|k| renumber[k]).collect())
            .collect();
        debug_assert!(kept.iter().flatten().all(|&k| k < next));
        all_edges.insert(name, kept);
        t.chains = chains
            .into_iter()
            .zip(gone)
            .filter(|(_, g)| !g)
            .map(|(c, _)| c)
            .collect();
    }
    Edges(all_edges)
}

/// Jumps on the longest path below `root` in `table` (0 for a chain
/// that jumps nowhere): what placing `root` one level deeper adds to
/// the table's depth. Only the chains `root` reaches are scanned.
pub fn height(table: &super::text::Table, root: &str) -> usize {
    let index = index_of(&table.chains);
    let Some(&start) = index.get(root) else {
        return 0;
    };
    let mut height: Vec<Option<usize>> = vec![None; table.chains.len()];
    let mut stack = vec![(start, false)];
    while let Some((c, done)) = stack.pop() {
        if height[c].is_some() {
            continue;
        }
        let mut below = Vec::new();
        for r in table.rules.get(&table.chains[c]).into_iter().flatten() {
            targets(r, &index, |k| below.push(k));
        }
        if done {
            let h = below.iter().filter_map(|&k| height[k]).max();
            height[c] = Some(h.map_or(0, |h| h + 1));
            continue;
        }
        stack.push((c, true));
        stack.extend(
            below
                .into_iter()
                .filter(|&k| height[k].is_none())
                .map(|k| (k, false)),
        );
    }
    height[start].unwrap_or(0)
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

fn deepest(chains: &[String], rules: &FastMap<String, Vec<String>>) -> (usize, Vec<String>) {
    deepest_of(chains, edge_lists(chains, rules))
}

/// [`deepest`] given the chains' [`edge_lists`].
fn deepest_of(chains: &[String], mut edges: Vec<Vec<usize>>) -> (usize, Vec<String>) {
    // Edges in name order (as the paths' tie-breaks have always been).
    for e in &mut edges {
        e.sort_unstable_by(|&x, &y| chains[x].cmp(&chains[y]));
        e.dedup();
    }
    // Height of every chain (longest path down), iteratively: the graph is
    // a DAG but may be deep.
    let mut height: Vec<Option<(usize, Option<usize>)>> = vec![None; chains.len()];
    let mut stack: Vec<(usize, bool)> = Vec::new();
    for c in 0..chains.len() {
        stack.push((c, false));
        while let Some((n, done)) = stack.pop() {
            if height[n].is_some() {
                continue;
            }
            if done {
                let best = edges[n]
                    .iter()
                    .map(|&k| (height[k].map_or(0, |h| h.0) + 1, Some(k)))
                    .max_by_key(|x| x.0)
                    .unwrap_or((0, None));
                height[n] = Some(best);
                continue;
            }
            stack.push((n, true));
            for &k in &edges[n] {
                if height[k].is_none() {
                    stack.push((k, false));
                }
            }
        }
    }
    let mut referenced = vec![false; chains.len()];
    for &k in edges.iter().flatten() {
        referenced[k] = true;
    }
    let h = |c: usize| height[c].expect("every chain visited");
    let Some(root) = (0..chains.len())
        .filter(|&c| !referenced[c])
        .max_by_key(|&c| h(c).0)
    else {
        return (0, Vec::new());
    };
    let mut path = vec![chains[root].clone()];
    let mut at = root;
    while let (_, Some(next)) = h(at) {
        path.push(chains[next].clone());
        at = next;
    }
    (h(root).0, path)
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
/// still too deep, and the deepest chain path of all tables afterwards
/// (what [`depths`] would say).
#[cfg(test)]
pub fn limit(out: &mut Tables) -> (Vec<TooDeep>, usize) {
    limit_from(out, Edges(Default::default()))
}

/// [`limit`] given the [`Edges`] that [`inline`] returned for these
/// tables (a table missing from them is scanned).
pub fn limit_from(out: &mut Tables, mut known: Edges) -> (Vec<TooDeep>, usize) {
    let mut refused = Vec::new();
    let mut max_depth = 0;
    for (&name, t) in out.tables.iter_mut() {
        let start: usize = t.rules.values().map(Vec::len).sum();
        let mut budget = start + 1000;
        let mut copied = false;
        let mut depth;
        let mut first = known.0.remove(name);
        loop {
            let (d, path) = match first.take() {
                Some(edges) => deepest_of(&t.chains, edges),
                None => deepest(&t.chains, &t.rules),
            };
            depth = d;
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
        if copied {
            loop {
                let index = index_of(&t.chains);
                let mut referenced = vec![false; t.chains.len()];
                for r in t.rules.values().flatten() {
                    targets(r, &index, |c| referenced[c] = true);
                }
                let entry = |c: &String| super::entries::ENTRIES.contains(&c.as_str());
                let dead: Vec<bool> = t
                    .chains
                    .iter()
                    .zip(&referenced)
                    .map(|(c, &r)| !r && !entry(c))
                    .collect();
                if !dead.contains(&true) {
                    break;
                }
                for (c, _) in t.chains.iter().zip(&dead).filter(|x| *x.1) {
                    t.rules.remove(c);
                }
                let mut d = dead.into_iter();
                t.chains.retain(|_| !d.next().unwrap_or(false));
            }
            depth = deepest(&t.chains, &t.rules).0;
        }
        max_depth = max_depth.max(depth);
    }
    (refused, max_depth)
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

    /// `jump_tokens` is the whitespace tokenizer's "token after -j/-g".
    #[test]
    fn jump_tokens_match_split_whitespace() {
        fn reference(rule: &str) -> Vec<&str> {
            let mut out = Vec::new();
            let mut it = rule.split_whitespace();
            while let Some(t) = it.next() {
                if t == "-j" || t == "-g" {
                    if let Some(c) = it.next() {
                        out.push(c);
                    }
                }
            }
            out
        }
        let rules = [
            "-A WEIR-F1 -m comment --comment \"weir:n1\" -g WEIR-F2",
            "-A WEIR-F1 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.1:80",
            "-j X",
            "  -g  Y  ",
            "-j",
            "-j -g Z -j W",
            "-A a-j -jx -gg --j -j\tT\n-g U",
            "-A WEIR-NAT-PRE -m set --match-set weir-fe dst,dst -m comment --comment \"weir:services\" -j WEIR-SVC1",
            "-A B -j LOG --log-prefix \"weir:5 \" -j",
            "-------j-g-j -g -------- -j ab-cd-ef-gh-ij-kl",
        ];
        for r in rules {
            let mut got = Vec::new();
            jump_tokens(r, |t| got.push(t));
            assert_eq!(got, reference(r), "{r:?}");
        }
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
        let (refused, _) = limit(&mut t);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].depth, n);
        assert_eq!(refused[0].path.len(), n + 1);
    }
}
