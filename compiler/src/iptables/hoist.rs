//! The policy roots' leading verdicts, moved into `WEIR-FWD`.
//!
//! `WEIR-FWD` ends by calling the egress root, then the ingress root,
//! then accepting:
//!
//! ```text
//! -A WEIR-FWD … "weir:egress"  -j WEIR-F<e>
//! -A WEIR-FWD … "weir:ingress" -j WEIR-F<i>
//! -A WEIR-FWD … "weir:allow"   -j ACCEPT
//! ```
//!
//! A root class table's first rule sends every address no policy singles
//! out to the side's default with one set lookup, and after
//! [`super::terminal`] that rule is the verdict itself
//! (`-m set ! --match-set U src … "weir:<id>" -j RETURN`). A new flow
//! between such addresses (most traffic, and every new flow from outside
//! the cluster to a service) still pays two calls, two returns and the
//! final rule for it. Here the leading rules of each root whose target is
//! a verdict (`RETURN`, `DROP`, `ACCEPT`; no chain) move into the entry
//! chain, in order, before the call to what is left of the root:
//!
//! - in the ingress root, `RETURN` becomes `ACCEPT` (a `RETURN` from the
//!   root continues at the final `ACCEPT`);
//! - in the egress root, `RETURN` becomes `-g WEIR-FWD-IN` — a chain that
//!   holds the ingress part (its moved rules, the call, the final
//!   `ACCEPT`), which `WEIR-FWD` also goes to after the egress call —
//!   or `ACCEPT` when there is no ingress call;
//! - `DROP` and `ACCEPT` stay;
//! - a `RETURN` with no match (a root that is a leaf: every packet gets
//!   the side's default) becomes a rule that only counts, and the
//!   ingress part follows it in `WEIR-FWD` (rules after a verdict with no
//!   match are never reached and are dropped).
//!
//! Each moved rule keeps its match, comment (its provenance id, so
//! `weir stats` counts the same packets) and meaning: a packet it takes
//! would have taken the same rule first thing in the root, and one it
//! does not take enters the root's remaining rules as before. A root is
//! only changed when nothing else enters it. `WEIR-FWD-IN` puts the
//! ingress tree one jump deeper, so it is made only when that stays
//! within [`depth::MAX_DEPTH`] (the egress rules are left in place
//! otherwise).

use super::depth::{self, MAX_DEPTH};
use super::entries::FWD;
use super::text::{comment, Table, Tables};

/// The chain holding the ingress part of `WEIR-FWD`.
pub const FWD_IN: &str = "WEIR-FWD-IN";

/// `rule`'s chain name and the rest, for `-A CHAIN rest`.
fn body<'a>(rule: &'a str, chain: &str) -> Option<&'a str> {
    rule.strip_prefix("-A ")?
        .strip_prefix(chain)?
        .strip_prefix(' ')
}

/// The rule's verdict target if it ends in one (`RETURN`, `DROP`,
/// `ACCEPT`), and the rule before it.
fn verdict(rest: &str) -> Option<(&str, &'static str)> {
    ["RETURN", "DROP", "ACCEPT"].iter().find_map(|v| {
        let head = rest.strip_suffix(v)?.strip_suffix(" -j ")?;
        Some((head, *v))
    })
}

/// A rule head that is only a comment: the rule matches every packet.
fn unconditional(head: &str) -> bool {
    head.strip_prefix("-m comment --comment \"")
        .and_then(|r| r.strip_suffix('"'))
        .is_some_and(|c| !c.contains('"'))
}

/// How many rules of `t` go or jump to `chain`.
fn refs(t: &Table, chain: &str) -> usize {
    let (g, j) = (format!(" -g {chain}"), format!(" -j {chain}"));
    t.rules
        .values()
        .flatten()
        .filter(|r| r.ends_with(&g) || r.ends_with(&j))
        .count()
}

/// One root call of `WEIR-FWD`: the root, and its leading verdict rules
/// (match and comment, target) taken out of it.
struct Root {
    chain: String,
    moved: Vec<(String, &'static str)>,
    /// Nothing left in the root: no call.
    empty: bool,
}

/// Takes the leading verdict rules out of `chain` (entered only by the
/// entry's call), at most all of them.
fn take_leading(t: &mut Table, chain: &str) -> Root {
    let mut moved = Vec::new();
    let only = refs(t, chain) == 1;
    if only {
        if let Some(rules) = t.rules.get_mut(chain) {
            let mut n = rules
                .iter()
                .take_while(|r| body(r, chain).and_then(verdict).is_some())
                .count();
            // Nothing after a verdict without a match is reached.
            if let Some(k) = rules[..n].iter().position(|r| {
                body(r, chain)
                    .and_then(verdict)
                    .is_some_and(|(h, _)| unconditional(h))
            }) {
                n = k + 1;
                rules.truncate(n);
            }
            moved = rules
                .drain(..n)
                .map(|r| {
                    let (head, v) = body(&r, chain).and_then(verdict).expect("counted");
                    (head.to_string(), v)
                })
                .collect();
        }
    }
    // (A chain entered from elsewhere too is kept, even if empty.)
    let empty = only && t.rules.get(chain).is_none_or(Vec::is_empty);
    Root {
        chain: chain.to_string(),
        moved,
        empty,
    }
}

/// The call `-A WEIR-FWD <comment(what)> -j ROOT` at `rules[i]`: ROOT.
fn call_at<'a>(rules: &'a [String], i: usize, what: &str) -> Option<&'a str> {
    let rest = body(rules.get(i)?, FWD)?;
    let root = rest.strip_prefix(&comment(what))?.strip_prefix(" -j ")?;
    (!root.contains(char::is_whitespace)).then_some(root)
}

/// Moves the policy roots' leading verdicts into the filter entry chain
/// (see the module docs). `depth` is the deepest jump path of `out` as
/// it is; returns the deepest after the change.
pub fn hoist(out: &mut Tables, depth: usize) -> usize {
    let Some(t) = out.tables.get_mut("filter") else {
        return depth;
    };
    let Some(fwd) = t.rules.get(FWD) else {
        return depth;
    };
    let n = fwd.len();
    let allow = format!("-A {FWD} {} -j ACCEPT", comment("allow"));
    if n == 0 || fwd[n - 1] != allow {
        return depth;
    }
    // The calls just before the final ACCEPT: ingress last, egress before.
    let ingress = call_at(fwd, n.wrapping_sub(2), "ingress").map(str::to_string);
    let e_at = if ingress.is_some() {
        n.wrapping_sub(3)
    } else {
        n.wrapping_sub(2)
    };
    let egress = call_at(fwd, e_at, "egress").map(str::to_string);
    if ingress.is_none() && egress.is_none() {
        return depth;
    }
    let first_call = if egress.is_some() { e_at } else { n - 2 };
    let mut depth = depth;
    let ingress = ingress.map(|c| take_leading(t, &c));
    // The egress root's RETURNs go to the ingress part: in a chain of its
    // own (one level deeper) when there is an ingress call.
    let in_chain = match &ingress {
        Some(i) => {
            let below = if i.empty {
                0
            } else {
                depth::height(t, &i.chain) + 1
            };
            // WEIR-FWD → WEIR-FWD-IN → the ingress root.
            let d = 1 + below;
            (d <= MAX_DEPTH).then_some(d)
        }
        None => None,
    };
    let egress = match egress {
        Some(e) if ingress.is_none() || in_chain.is_some() => Some(take_leading(t, &e)),
        Some(e) => Some(Root {
            chain: e,
            moved: Vec::new(),
            empty: false,
        }),
        None => None,
    };
    let c_e = comment("egress");
    let c_i = comment("ingress");
    let line = |chain: &str, head: &str, target: &str| format!("-A {chain} {head} {target}");
    let ingress_part = |chain: &str| -> Vec<String> {
        let mut v = Vec::new();
        if let Some(i) = &ingress {
            for (h, t) in &i.moved {
                let t = if *t == "RETURN" { "ACCEPT" } else { t };
                v.push(line(chain, h, &format!("-j {t}")));
            }
            if !i.empty {
                v.push(format!("-A {chain} {c_i} -j {}", i.chain));
            }
        }
        v.push(format!("-A {chain} {} -j ACCEPT", comment("allow")));
        v
    };
    let fwd = t.rules.get_mut(FWD).expect("checked");
    fwd.truncate(first_call);
    let mut need_in = false;
    if let Some(e) = &egress {
        let to_in = ingress.is_some();
        for (h, v) in &e.moved {
            let target = match (*v, to_in) {
                // The root's last rule (see `take_leading`): count and
                // go on to the ingress part, which follows.
                ("RETURN", true) if unconditional(h) && e.empty => String::new(),
                ("RETURN", true) => {
                    need_in = true;
                    format!("-g {FWD_IN}")
                }
                ("RETURN", false) => "-j ACCEPT".to_string(),
                (v, _) => format!("-j {v}"),
            };
            if target.is_empty() {
                fwd.push(format!("-A {FWD} {h}"));
            } else {
                fwd.push(line(FWD, h, &target));
            }
        }
        if !e.empty {
            fwd.push(format!("-A {FWD} {c_e} -j {}", e.chain));
        }
    }
    if need_in {
        fwd.push(format!("-A {FWD} {c_i} -g {FWD_IN}"));
        let part = ingress_part(FWD_IN);
        t.rules.insert(FWD_IN.to_string(), part);
        t.chains.push(FWD_IN.to_string());
        depth = depth.max(in_chain.expect("checked"));
    } else {
        let part = ingress_part(FWD);
        t.rules.get_mut(FWD).expect("checked").extend(part);
    }
    for r in [&egress, &ingress].into_iter().flatten() {
        if r.empty {
            t.rules.remove(&r.chain);
            t.chains.retain(|c| *c != r.chain);
        }
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(chains: &[(&str, &[&str])]) -> Tables {
        let mut t = Tables::default();
        for (c, rules) in chains {
            t.chain("filter", c);
            for r in *rules {
                t.rule("filter", c, &[r]);
            }
        }
        t
    }

    fn rules(t: &Tables, c: &str) -> Vec<String> {
        t.tables["filter"].rules.get(c).cloned().unwrap_or_default()
    }

    const EST: &str =
        "-m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"weir:0\" -j ACCEPT";

    fn fwd() -> Vec<&'static str> {
        vec![
            EST,
            "-m comment --comment \"weir:egress\" -j WEIR-F1",
            "-m comment --comment \"weir:ingress\" -j WEIR-F9",
            "-m comment --comment \"weir:allow\" -j ACCEPT",
        ]
    }

    #[test]
    fn leading_verdicts_move_into_the_entry() {
        let f = fwd();
        let mut t = tables(&[
            (FWD, &f),
            (
                "WEIR-F1",
                &[
                    "-m set ! --match-set weir-s1 src -m comment --comment \"weir:3\" -j RETURN",
                    "-m set --match-set weir-s2 src -m comment --comment \"weir:5\" -j DROP",
                    "-m set --match-set weir-s3 src -m comment --comment \"weir:n1\" -g WEIR-F2",
                ],
            ),
            ("WEIR-F2", &["-m comment --comment \"weir:6\" -j DROP"]),
            (
                "WEIR-F9",
                &[
                    "-m set ! --match-set weir-s1 dst -m comment --comment \"weir:1\" -j RETURN",
                    "-m set --match-set weir-s4 dst -m comment --comment \"weir:n9\" -g WEIR-F2",
                ],
            ),
        ]);
        assert_eq!(hoist(&mut t, 2), 3);
        assert_eq!(
            rules(&t, FWD),
            vec![
                format!("-A {FWD} {EST}"),
                format!("-A {FWD} -m set ! --match-set weir-s1 src -m comment --comment \"weir:3\" -g {FWD_IN}"),
                format!("-A {FWD} -m set --match-set weir-s2 src -m comment --comment \"weir:5\" -j DROP"),
                format!("-A {FWD} -m comment --comment \"weir:egress\" -j WEIR-F1"),
                format!("-A {FWD} -m comment --comment \"weir:ingress\" -g {FWD_IN}"),
            ]
        );
        assert_eq!(
            rules(&t, FWD_IN),
            vec![
                format!("-A {FWD_IN} -m set ! --match-set weir-s1 dst -m comment --comment \"weir:1\" -j ACCEPT"),
                format!("-A {FWD_IN} -m comment --comment \"weir:ingress\" -j WEIR-F9"),
                format!("-A {FWD_IN} -m comment --comment \"weir:allow\" -j ACCEPT"),
            ]
        );
        assert_eq!(
            rules(&t, "WEIR-F1"),
            vec!["-A WEIR-F1 -m set --match-set weir-s3 src -m comment --comment \"weir:n1\" -g WEIR-F2"]
        );
        assert_eq!(rules(&t, "WEIR-F9").len(), 1);
    }

    #[test]
    fn shared_roots_and_too_deep_ingress_parts_stay() {
        let f = fwd();
        let root = ["-m set ! --match-set weir-s1 src -m comment --comment \"weir:3\" -j RETURN"];
        let ingress = [
            "-m set ! --match-set weir-s1 dst -m comment --comment \"weir:1\" -j RETURN",
            "-m comment --comment \"weir:n9\" -g WEIR-F1",
        ];
        let base = tables(&[(FWD, &f), ("WEIR-F1", &root), ("WEIR-F9", &ingress)]);
        // WEIR-F1 is also entered from the ingress root: not changed; the
        // ingress root's leading verdict moves (no chain of its own).
        let mut t = base.clone();
        assert_eq!(hoist(&mut t, 2), 2);
        assert_eq!(rules(&t, "WEIR-F1"), base.tables["filter"].rules["WEIR-F1"]);
        assert_eq!(
            rules(&t, FWD)[2..],
            [
                format!("-A {FWD} -m set ! --match-set weir-s1 dst -m comment --comment \"weir:1\" -j ACCEPT"),
                format!("-A {FWD} -m comment --comment \"weir:ingress\" -j WEIR-F9"),
                format!("-A {FWD} -m comment --comment \"weir:allow\" -j ACCEPT"),
            ]
        );
        assert!(!t.tables["filter"].chains.contains(&FWD_IN.to_string()));
    }

    #[test]
    fn no_ingress_chain_beyond_the_depth_limit() {
        let f = fwd();
        let e = [
            "-m set ! --match-set weir-s1 src -m comment --comment \"weir:3\" -j RETURN",
            "-m comment --comment \"weir:n1\" -g WEIR-F2",
        ];
        let mut chains: Vec<(String, Vec<String>)> = Vec::new();
        // The ingress root's tree reaches MAX_DEPTH: one level more under
        // WEIR-FWD-IN would be MAX_DEPTH + 1.
        let deep = MAX_DEPTH - 2;
        for k in 0..deep {
            chains.push((
                format!("WEIR-D{k}"),
                vec![format!(
                    "-m comment --comment \"weir:n{k}\" -g WEIR-D{}",
                    k + 1
                )],
            ));
        }
        chains.push((
            format!("WEIR-D{deep}"),
            vec!["-m comment --comment \"weir:7\" -j DROP".into()],
        ));
        let i = [
            "-m set ! --match-set weir-s1 dst -m comment --comment \"weir:1\" -j RETURN"
                .to_string(),
            "-p tcp -m comment --comment \"weir:n9\" -g WEIR-D0".to_string(),
        ];
        let mut t = tables(&[
            (FWD, &f),
            ("WEIR-F1", &e),
            ("WEIR-F2", &["-m comment --comment \"weir:4\" -j DROP"]),
        ]);
        for (c, rs) in chains
            .iter()
            .chain([("WEIR-F9".to_string(), i.to_vec())].iter())
        {
            t.chain("filter", c);
            for r in rs {
                t.rule("filter", c, &[r]);
            }
        }
        let before = depth::depths(&t).iter().map(|d| d.1).max().unwrap_or(0);
        assert_eq!(before, MAX_DEPTH);
        assert_eq!(hoist(&mut t, before), MAX_DEPTH);
        assert_eq!(depth::depths(&t).iter().map(|d| d.1).max(), Some(MAX_DEPTH));
        // Egress untouched, ingress's leading verdict moved.
        assert_eq!(rules(&t, "WEIR-F1").len(), 2);
        assert_eq!(rules(&t, "WEIR-F9").len(), 1);
        assert!(!t.tables["filter"].chains.contains(&FWD_IN.to_string()));
    }

    #[test]
    fn a_leaf_egress_root_counts_in_the_entry() {
        let f = fwd();
        let ingress = [
            "-m set ! --match-set weir-s1 dst -m comment --comment \"weir:1\" -j RETURN",
            "-m comment --comment \"weir:n9\" -g WEIR-F2",
        ];
        let mut t = tables(&[
            (FWD, &f),
            ("WEIR-F1", &["-m comment --comment \"weir:3\" -j RETURN"]),
            ("WEIR-F2", &["-m comment --comment \"weir:6\" -j DROP"]),
            ("WEIR-F9", &ingress),
        ]);
        assert_eq!(hoist(&mut t, 2), 2);
        assert_eq!(
            rules(&t, FWD)[1..],
            [
                format!("-A {FWD} -m comment --comment \"weir:3\""),
                format!("-A {FWD} -m set ! --match-set weir-s1 dst -m comment --comment \"weir:1\" -j ACCEPT"),
                format!("-A {FWD} -m comment --comment \"weir:ingress\" -j WEIR-F9"),
                format!("-A {FWD} -m comment --comment \"weir:allow\" -j ACCEPT"),
            ]
        );
        let chains = &t.tables["filter"].chains;
        assert!(!chains.contains(&"WEIR-F1".to_string()));
        assert!(!chains.contains(&FWD_IN.to_string()));
    }
}
