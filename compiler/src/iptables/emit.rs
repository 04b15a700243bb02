//! The stages put together, per family (see the table in [`super`]).

use super::chains::{Leaf, Stage};
use super::depth::{self, TooDeep};
use super::entries::{FWD, MANGLE_PRE, NAT_PRE, RAW_PRE};
use super::flow::{self, Ctx};
use super::sets::Sets;
use super::text::{comment, Family, FastMap, Tables};
use super::{manifest, services, LogTarget, Options, Output};
use crate::graph::ir::{Node, NodeId, SteerLeaf};
use crate::graph::Graph;
use crate::model::{Model, SteerAction};
use crate::provenance::Provenance;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// `-g X` → `-j X` (a call from an entry chain); `None` for `-j RETURN`.
fn call(target: &str) -> Option<String> {
    target.strip_prefix("-g ").map(|c| format!("-j {c}"))
}

fn steer_action<'g>(g: &'g Graph, n: &Node) -> Option<(usize, usize, &'g SteerAction)> {
    match n {
        Node::Steer(SteerLeaf::Hit { steer, index }) => {
            Some((*steer, *index, &g.steer_actions[*steer][*index]))
        }
        _ => None,
    }
}

/// Which steering actions some reachable steer leaf has.
#[derive(Default)]
struct SteerKinds {
    bypass: bool,
    mark: bool,
    redirect: bool,
}

fn steer_kinds(g: &Graph) -> SteerKinds {
    let mut k = SteerKinds::default();
    let mut stack = vec![g.dag.roots.steer];
    let mut seen = std::collections::HashSet::new();
    while let Some(n) = stack.pop() {
        if !seen.insert(n) {
            continue;
        }
        let node = g.node(n);
        if let Some((_, _, a)) = steer_action(g, node) {
            match a {
                SteerAction::Bypass => k.bypass = true,
                SteerAction::Mark(_) | SteerAction::Dscp(_) => k.mark = true,
                SteerAction::Redirect { .. } => k.redirect = true,
            }
        }
        stack.extend(node.children().into_iter().map(|c| c.1));
    }
    k
}

fn log_rule(opts: &Options, id: u32) -> String {
    let c = comment(&id.to_string());
    match opts.log {
        LogTarget::Log => format!("{c} -j LOG --log-prefix \"weir:{id} \""),
        LogTarget::Nflog { group } => {
            format!("{c} -j NFLOG --nflog-prefix \"weir:{id} \" --nflog-group {group}")
        }
    }
}

pub fn emit(g: &Graph, model: &Model, opts: &Options) -> Result<Output, Vec<TooDeep>> {
    crate::graph::with_stack(|| emit_here(g, model, opts, true))
}

/// The deepest chain path of the IPv4 tables as the stages make them,
/// before [`depth::inline`] and [`depth::limit`] (for tests that measure
/// what those passes do).
#[cfg(test)]
pub fn depth_without_passes(g: &Graph, model: &Model, opts: &Options) -> usize {
    let out = crate::graph::with_stack(|| emit_here(g, model, opts, false));
    out.ok()
        .and_then(|o| o.manifest["counts"][0]["depth"].as_u64())
        .unwrap_or(0) as usize
}

fn emit_here(
    g: &Graph,
    model: &Model,
    opts: &Options,
    passes: bool,
) -> Result<Output, Vec<TooDeep>> {
    let audit = super::audit::AuditGraph::new(model);
    let (_, num) = g.dag.numbering();
    let num: FastMap<NodeId, usize> = num.into_iter().collect();
    let r = g.dag.roots;
    let kinds = steer_kinds(g);
    let mut sets = Sets::default();
    sets.v4_only = !g.classes.classifies_v6();
    let st = &g.services;
    let (with, without): (Vec<_>, Vec<_>) = st
        .frontends
        .iter()
        .partition(|f| !st.backend_sets[f.backends].backends.is_empty());
    let has_services = !with.is_empty();
    let has_reject = !without.is_empty();
    // Every family's tables first (they name the ipsets they test), then
    // the ipset text on a thread of its own while the families' chains
    // are finished and rendered: for BENCHMARKS.md's headline model the
    // 13 MB ipset text was ~55 ms at the end of the back end that
    // `weir compile` waits for last (issue 21).
    let mut families = Vec::new();
    for fam in [Family::V4, Family::V6] {
        let ctx = flow::contexts(g, &[r.steer, r.egress, r.ingress], fam);
        let t = FamilyGen {
            g,
            model,
            opts,
            fam,
            num: &num,
            ctx: &ctx,
            kinds: &kinds,
            has_services,
            has_reject,
            audit: audit.as_ref(),
        }
        .tables(&mut sets);
        families.push((fam, t));
    }
    let sets = sets;
    let mut texts = Vec::new();
    let mut stats = Vec::new();
    let mut too_deep = Vec::new();
    let ipset = std::thread::scope(|s| {
        let spec = crate::threads::with_stack("weir-ipset", 64 << 20);
        let ipset = crate::threads::scoped(s, spec, || {
            let mut ipset = sets.render(&g.classes);
            ipset.push_str(&super::self_set::render(
                model,
                g,
                sets.families(),
                opts.self_mark,
            ));
            ipset
        });
        for (fam, mut t) in families {
            let depth = if passes {
                super::terminal::inline_verdicts(&mut t);
                let edges = depth::inline(&mut t);
                let (refused, depth) = depth::limit_from(&mut t, edges);
                let depth = if refused.is_empty() {
                    super::hoist::hoist(&mut t, depth)
                } else {
                    depth
                };
                too_deep.extend(refused.into_iter().map(|d| (fam, d)));
                depth
            } else {
                depth::depths(&t).iter().map(|d| d.1).max().unwrap_or(0)
            };
            stats.push((fam, t.chain_count(), t.rule_count(), depth));
            texts.push(t.render(&format!(
                "# weir: generated by the iptables back end ({})\n",
                fam.name()
            )));
        }
        ipset.join()
    });
    if !too_deep.is_empty() {
        // IPv4 and IPv6 have the same chains: report each table once.
        let mut seen = std::collections::BTreeSet::new();
        return Err(too_deep
            .into_iter()
            .filter(|(_, d)| seen.insert(d.table))
            .map(|(_, d)| d)
            .collect());
    }
    let mut hooks = Vec::new();
    if kinds.bypass {
        hooks.push(("raw", "PREROUTING", RAW_PRE));
    }
    if kinds.mark || (kinds.redirect && crate::graph::same_endpoint::uses_self(model)) {
        hooks.push(("mangle", "PREROUTING", MANGLE_PRE));
    }
    if has_services || kinds.redirect {
        hooks.push(("nat", "PREROUTING", NAT_PRE));
    }
    if crate::graph::same_endpoint::uses_self(model) {
        hooks.push(("mangle", "FORWARD", super::self_set::MANGLE_FWD));
    }
    hooks.push(("filter", "FORWARD", FWD));
    let manifest = manifest::section(g, opts, &hooks, &sets, &stats);
    let ip6tables = texts.pop().expect("two families");
    let iptables = texts.pop().expect("two families");
    Ok(Output {
        iptables,
        ip6tables,
        ipset,
        manifest,
    })
}

/// A redirect leaf: the policy calls (which leave the chain unless the
/// policy allows), then the redirect to the proxy (TCP, UDP, SCTP; other
/// protocols cannot be redirected to a socket and pass untranslated).
fn redirect_rules(fam: Family, c: &str, calls: &[String], addr: IpAddr, port: u16) -> Vec<String> {
    let mut rules: Vec<String> = calls.iter().map(|x| format!("{c} {x}")).collect();
    for p in ["tcp", "udp", "sctp"] {
        let action = if crate::proxy_addr::is_host_local(addr) || Family::of(addr) != fam {
            format!("-j REDIRECT --to-ports {port}")
        } else {
            format!("-j DNAT --to-destination {}", fam.socket(addr, port))
        };
        rules.push(format!("-p {p} {c} {action}"));
    }
    rules
}

/// One family's tables: the generator of every stage, with what all the
/// stages share (the graph, the options, node numbering and flow
/// contexts, which steering actions and services exist). One method per
/// table, in the order the packet meets them.
struct FamilyGen<'a> {
    model: &'a Model,
    g: &'a Graph,
    opts: &'a Options,
    fam: Family,
    num: &'a FastMap<NodeId, usize>,
    ctx: &'a FastMap<NodeId, Ctx>,
    kinds: &'a SteerKinds,
    has_services: bool,
    has_reject: bool,
    /// The audit sides (programs with audit policies).
    audit: Option<&'a super::audit::AuditGraph<'a>>,
}

fn steer_cmt(s: usize, i: usize) -> String {
    comment(&format!("steer{s}.{i}"))
}

impl<'a> FamilyGen<'a> {
    fn tables(&self, sets: &mut Sets) -> Tables {
        let mut out = Tables::default();
        if self.kinds.bypass {
            self.raw(sets, &mut out);
        }
        // `self` beside `redirect`: a redirected connection is judged in
        // nat PREROUTING, so the relation is computed in mangle PREROUTING
        // too, after the steering marks (`self_set.rs`).
        let self_pre = self.kinds.redirect && crate::graph::same_endpoint::uses_self(self.model);
        if self.kinds.mark || self_pre {
            self.mangle(sets, &mut out);
        }
        if self_pre {
            let jump = format!("-j {}", super::self_set::MANGLE_FWD);
            out.rule("mangle", MANGLE_PRE, &[&comment("self"), &jump]);
        }
        // nat: services, then redirects (which never overlap: services::check).
        if self.has_services || self.kinds.redirect {
            out.chain("nat", NAT_PRE);
        }
        if self.has_services {
            self.nat_services(sets, &mut out);
        }
        if self.kinds.redirect {
            self.nat_redirects(sets, &mut out);
        }
        if crate::graph::same_endpoint::uses_self(self.model) {
            out.chain("mangle", super::self_set::MANGLE_FWD);
            let c = comment("self");
            // No IPv6 address is an endpoint's when none has a class
            // (`Sets::v4_only`): the IPv6 chain stays empty, with no set.
            if sets.families().contains(&self.fam) {
                for (m, t) in super::self_set::mangle_rules(self.fam, self.opts.self_mark) {
                    out.rule("mangle", super::self_set::MANGLE_FWD, &[&m, &c, &t]);
                }
            }
        }
        self.filter(sets, &mut out);
        out
    }

    fn stage<'s>(
        &self,
        table: &'static str,
        prefix: &str,
        leaf: &'s dyn Fn(&Node) -> Leaf,
    ) -> Stage<'s>
    where
        'a: 's,
    {
        let mut s = Stage::new(self.g, self.fam, table, prefix, self.num, self.ctx, leaf);
        s.self_mark = self.opts.self_mark;
        s
    }

    fn prov(&self, p: Provenance) -> u32 {
        self.g.provenance.id(&p)
    }

    /// raw: bypass → NOTRACK.
    fn raw(&self, sets: &mut Sets, out: &mut Tables) {
        let g = self.g;
        let leaf = |n: &Node| match steer_action(g, n) {
            Some((s, i, SteerAction::Bypass)) => {
                let id = self.prov(Provenance::Bypass { steer: s, index: i });
                Leaf::Rules(vec![format!(
                    "{} -j CT --notrack",
                    comment(&id.to_string())
                )])
            }
            _ => Leaf::Return,
        };
        let mut stage = self.stage("raw", "R", &leaf);
        out.chain("raw", RAW_PRE);
        let t = stage.target(g.dag.roots.steer, sets, out);
        if let Some(c) = call(&t) {
            out.rule("raw", RAW_PRE, &[&comment("bypass"), &c]);
        }
    }

    /// mangle: mark and DSCP on new packets.
    fn mangle(&self, sets: &mut Sets, out: &mut Tables) {
        let g = self.g;
        let leaf = |n: &Node| match steer_action(g, n) {
            Some((s, i, SteerAction::Mark(v))) => Leaf::Rules(vec![format!(
                "{} -j MARK --set-xmark 0x{v:x}/0xffffffff",
                steer_cmt(s, i)
            )]),
            Some((s, i, SteerAction::Dscp(d))) => {
                Leaf::Rules(vec![format!("{} -j DSCP --set-dscp {d}", steer_cmt(s, i))])
            }
            _ => Leaf::Return,
        };
        let mut stage = self.stage("mangle", "M", &leaf);
        out.chain("mangle", MANGLE_PRE);
        let t = stage.target(g.dag.roots.steer, sets, out);
        if let Some(c) = call(&t) {
            out.rule(
                "mangle",
                MANGLE_PRE,
                &["-m conntrack --ctstate NEW", &comment("steering"), &c],
            );
        }
    }

    /// nat: the service tree. Backends of frontends a redirect can match:
    /// steering and the policy for that backend (deny → DNAT to it, so
    /// filter denies; allow → the redirect) before the DNAT. One pair of
    /// stages per backend socket.
    fn nat_services(&self, sets: &mut Sets, out: &mut Tables) {
        let (g, fam) = (self.g, self.fam);
        let mut per_backend: BTreeMap<(IpAddr, u16), Option<String>> = BTreeMap::new();
        let mut before_dnat = |k: usize, i: usize, out: &mut Tables| -> Option<String> {
            let fe = &g.services.frontends[k];
            if !self.kinds.redirect || !services::redirect_overlaps(g, &fe.frontend) {
                return None;
            }
            let b = &g.services.backend_sets[fe.backends].backends[i];
            if let Some(c) = per_backend.get(&(b.addr, b.port)) {
                return c.clone();
            }
            let j = per_backend.len();
            let dnat = format!("-j DNAT --to-destination {}", fam.socket(b.addr, b.port));
            let pleaf = |n: &Node| match n {
                Node::Verdict(v) if !v.allow => Leaf::Rules(vec![format!(
                    "{} -p {} {dnat}",
                    comment(&v.decided.to_string()),
                    fam.proto(fe.frontend.proto)
                )]),
                _ => Leaf::Return,
            };
            let mut pstage = self.stage("nat", &format!("Q{j}-"), &pleaf);
            pstage.known = Some((g.classes.classify(b.addr), u32::from(b.port)));
            let calls = self.policy_calls(&mut pstage, sets, out);
            let leaf = |n: &Node| self.redirect_leaf(n, &calls);
            let mut stage = self.stage("nat", &format!("S{j}-"), &leaf);
            let c = call(&stage.target(g.dag.roots.steer, sets, out));
            per_backend.insert((b.addr, b.port), c.clone());
            c
        };
        // Redirect rules follow the services in `WEIR-NAT-PRE`: the
        // dispatch is inlined only when nothing does.
        let inline = (!self.kinds.redirect).then_some(NAT_PRE);
        if let Some(tree) = services::nat(g, fam, out, &mut before_dnat, inline) {
            out.rule(
                "nat",
                NAT_PRE,
                &[
                    &tree.range,
                    &comment("services"),
                    &format!("-j {}", tree.root),
                ],
            );
        }
    }

    /// nat: redirects to a local proxy. Policy in nat first: deny →
    /// ACCEPT (no translation; filter drops it), allow → RETURN (go on to
    /// the redirect).
    fn nat_redirects(&self, sets: &mut Sets, out: &mut Tables) {
        let pleaf = |n: &Node| match n {
            Node::Verdict(v) if !v.allow => Leaf::Rules(vec![format!(
                "{} -j ACCEPT",
                comment(&v.decided.to_string())
            )]),
            _ => Leaf::Return,
        };
        let mut pstage = self.stage("nat", "P", &pleaf);
        let calls = self.policy_calls(&mut pstage, sets, out);
        let leaf = |n: &Node| self.redirect_leaf(n, &calls);
        let mut stage = self.stage("nat", "N", &leaf);
        let t = stage.target(self.g.dag.roots.steer, sets, out);
        if let Some(c) = call(&t) {
            out.rule("nat", NAT_PRE, &[&comment("redirect"), &c]);
        }
    }

    /// Calls into the egress and ingress walks of a policy stage.
    fn policy_calls(&self, stage: &mut Stage, sets: &mut Sets, out: &mut Tables) -> Vec<String> {
        let r = self.g.dag.roots;
        [r.egress, r.ingress]
            .iter()
            .filter_map(|&root| call(&stage.target(root, sets, out)))
            .collect()
    }

    fn redirect_leaf(&self, n: &Node, calls: &[String]) -> Leaf {
        match steer_action(self.g, n) {
            Some((s, i, SteerAction::Redirect { addr, port })) => Leaf::Rules(redirect_rules(
                self.fam,
                &steer_cmt(s, i),
                calls,
                *addr,
                *port,
            )),
            _ => Leaf::Return,
        }
    }

    /// filter: conntrack, bypass, no-backend reject, egress, ingress.
    fn filter(&self, sets: &mut Sets, out: &mut Tables) {
        out.chain("filter", FWD);
        let est = comment(&self.prov(Provenance::Established).to_string());
        // States in the order `iptables-save` prints them (as every rule
        // here: the read-back then compares bytes).
        out.rule(
            "filter",
            FWD,
            &[
                "-m conntrack --ctstate RELATED,ESTABLISHED",
                &est,
                "-j ACCEPT",
            ],
        );
        out.rule(
            "filter",
            FWD,
            &[
                "-m conntrack --ctstate INVALID",
                &comment("invalid"),
                "-j DROP",
            ],
        );
        if self.kinds.bypass {
            self.filter_bypass(sets, out);
        }
        if self.has_reject {
            if let Some(tree) = services::reject(self.g, self.fam, self.opts.events.as_ref(), out) {
                out.rule(
                    "filter",
                    FWD,
                    &[
                        &tree.range,
                        &comment("no-backends"),
                        &format!("-j {}", tree.root),
                    ],
                );
            }
        }
        if let Some(a) = self.audit {
            a.emit(self.fam, self.opts, sets, out);
        }
        let opts = self.opts;
        let (model, table) = (self.model, &self.g.provenance);
        let leaf = |n: &Node| match n {
            Node::Verdict(v) => {
                let mut rules: Vec<String> = match &opts.events {
                    Some(ev) => ev.enforced_leaf(model, table, v),
                    None => v.logged.iter().map(|&id| log_rule(opts, id)).collect(),
                };
                let c = comment(&v.decided.to_string());
                rules.push(if v.allow {
                    format!("{c} -j RETURN")
                } else {
                    format!("{c} -j DROP")
                });
                Leaf::Rules(rules)
            }
            _ => Leaf::Return,
        };
        let mut stage = self.stage("filter", "F", &leaf);
        let r = self.g.dag.roots;
        for (root, what) in [(r.egress, "egress"), (r.ingress, "ingress")] {
            let t = stage.target(root, sets, out);
            if let Some(c) = call(&t) {
                out.rule("filter", FWD, &[&comment(what), &c]);
            }
        }
        out.rule("filter", FWD, &[&comment("allow"), "-j ACCEPT"]);
    }

    /// filter: untracked (bypassed) packets are accepted by their steering
    /// rule.
    fn filter_bypass(&self, sets: &mut Sets, out: &mut Tables) {
        let g = self.g;
        let leaf = |n: &Node| match steer_action(g, n) {
            Some((s, i, SteerAction::Bypass)) => {
                let id = self.prov(Provenance::Bypass { steer: s, index: i });
                Leaf::Rules(vec![format!("{} -j ACCEPT", comment(&id.to_string()))])
            }
            _ => Leaf::Return,
        };
        let mut stage = self.stage("filter", "B", &leaf);
        let t = stage.target(g.dag.roots.steer, sets, out);
        if let Some(c) = call(&t) {
            out.rule(
                "filter",
                FWD,
                &["-m conntrack --ctstate UNTRACKED", &comment("bypass"), &c],
            );
        }
    }
}
