//! The iptables/ipset back end: the decision graph as `iptables-restore`
//! and `ipset restore` text. Pure: text in, text out.
//!
//! # Where each pipeline stage runs (docs/language.md §4, graph/eval.rs)
//!
//! | stage | table / hook | how |
//! |---|---|---|
//! | 1 conntrack | filter `WEIR-FWD` (FORWARD) | `RELATED,ESTABLISHED` → ACCEPT, `INVALID` → DROP |
//! | 2 bypass | raw `WEIR-RAW-PRE` (PREROUTING) | steer tree, bypass leaf → `CT --notrack`; in filter, `UNTRACKED` packets walk the steer tree again and bypass leaves ACCEPT |
//! | 3 service | nat `WEIR-NAT-PRE` (PREROUTING) | `-m iprange` over the frontends' addresses → address tree of chains (exact address, protocol and port at the leaves) → per-frontend chain → `-m statistic` / `-m recent` → DNAT; up to 16 frontend addresses and no redirect: the leaf rules in `WEIR-NAT-PRE` itself |
//! | 3 no backends | filter `WEIR-FWD` | `-m iprange` → address tree → REJECT (`tcp-reset`, else port-unreachable) |
//! | 4 policy | filter `WEIR-FWD` | `-j` egress root, `-j` ingress root (allow leaves RETURN, deny leaves DROP), then ACCEPT; each root's leading verdict rules (the union test's default) moved into `WEIR-FWD` / `WEIR-FWD-IN` (`hoist.rs`) |
//! | 5 mark, dscp | mangle `WEIR-MANGLE-PRE` (PREROUTING) | `NEW` packets walk the steer tree; MARK / DSCP |
//! | 5 redirect | nat `WEIR-NAT-PRE` | steer tree; a redirect leaf evaluates the policy (nat copies of the egress and ingress trees: deny → ACCEPT = leave untranslated, allow → RETURN) and then REDIRECT (loopback proxy) or DNAT (other local address) |
//!
//! raw and mangle are hooked only when some steering rule bypasses (raw)
//! or marks / sets DSCP (mangle), nat only with services or redirects: a
//! new flow pays for no table the program does not use.
//!
//! Policy is enforced on forwarded traffic (filter FORWARD): the node is a
//! router for its endpoints. Traffic the node itself sends or receives is
//! not policed (no INPUT/OUTPUT hooks), which also means a connection
//! redirected to the local proxy is delivered without a second policy
//! check (its policy was checked in nat before the REDIRECT).
//!
//! MARK and DSCP are written in mangle PREROUTING before policy ran; a
//! denied packet is dropped in FORWARD, so the mark is never observed on
//! it (unless a fwmark routing rule makes it local). Only `NEW` packets
//! are marked: established packets skip every stage after conntrack.
//!
//! # Graph → chains
//!
//! Every reachable graph node becomes one chain per stage that needs it
//! (`WEIR-<stage><n>`, `n` = the node's number in `graph.txt`), so the
//! hash-consed DAG becomes shared chains. Edges are gotos (`-g`): a leaf's
//! `RETURN` goes back to the stage's entry chain, which called the root
//! with `-j`. Tests on atoms are one `-m set` match on a `hash:net` set of
//! the atom's classes; class tables are one set per distinct target (the
//! classes that go there) — at a stage's root, with three targets or more,
//! the union of those sets is tested first, so an address in none of them
//! (most traffic) costs one lookup, and more than eight groups are tested in
//! about √G chunks (a chunk's union, then its groups in a sub-chain), so an
//! address a big table singles out costs about 2√G lookups rather than up
//! to G; protocol / port / ICMP tables are a few rules,
//! or a binary tree of chains over the port space for big tables. Nothing
//! is a linear list that grows with the number of rules or services.
//!
//! The chain graph is then flattened (`depth.rs`): a chain that ends by
//! going to a chain nothing else enters continues in that chain's rules
//! (a decision list's else-spine becomes one chain), and since nf_tables
//! refuses chains nested more than 15 jumps below a built-in chain, a
//! graph still deeper than 13 jumps below its entry chain is
//! refused at compile time (E0510).
//!
//! Two passes shorten what a new flow walks without changing what it
//! gets: a goto to a chain that is only a verdict (`-j RETURN`, `DROP`,
//! `ACCEPT` with its provenance comment) becomes that verdict in the
//! branching rule (`terminal.rs`), and the policy roots' leading verdict
//! rules move into the filter entry (`hoist.rs`), so a new flow between
//! addresses no policy singles out is decided there with one set lookup
//! per side and no call. The address tree of service frontends keeps up
//! to 16 addresses in a leaf (`services.rs`: a `-d` that does not match
//! costs less than a tree level), so a small cluster's dispatch is one
//! chain; with no redirect rule after it, that chain's rules are
//! `WEIR-NAT-PRE`'s own (no range guard, no chain entered: kube-proxy's
//! hook → `KUBE-SERVICES` → per-service chain depth).
//!
//! # IPv4-only programs
//!
//! When no IPv6 address has a class other than 0 (the class map has no
//! IPv6 prefix: the program names no IPv6 address and no endpoint has
//! one, [`crate::graph::classes::Classes::classifies_v6`]), every IPv6
//! packet's addresses are class 0 to the interpreter. The IPv6 stages
//! then decide every address test as class 0 instead of emitting it
//! (`Stage::unclassified` in `chains.rs`), so ip6tables gets the graph
//! specialised to class 0 — conntrack, whatever steering or service
//! applies to any address, and for policy whatever class 0 gets (no
//! policy side applies to an address no endpoint owns, so normally
//! nothing) — and there are no IPv6 sets (`ipv6_class0` in the
//! manifest). At 100,000 rules that halves the sets and removes the
//! IPv6 copy of every `-m set` rule.
//!
//! Every rule carries `-m comment --comment "weir:…"`: `weir:<id>` with
//! the provenance id on leaf rules (counters per decision), `weir:n<N>` on
//! internal nodes.
//!
//! # Events
//!
//! By default the chains report verdict events through NFLOG
//! (`events.rs`, [`Events`]): a rate-limited `-j NFLOG` rule with prefix
//! `weir:<id>:<V>[a] ` before each judgement that reports one (denies,
//! `log` rules, allows by a rule with the `log` flag, audit decisions of
//! audit policies); `log` rules report as `L` events and are counted by a
//! rule of their own. With events off ([`Options::events`] `None`),
//! logging is `LOG --log-prefix "weir:<id> "` by default, or `NFLOG`
//! ([`LogTarget`]), and no other judgement is reported.
//!
//! # Audit policies
//!
//! Counted, never enforced: `audit.rs` emits the audit sides' graph as
//! chains `WEIR-A<n>` in filter whose leaves only count
//! (`weir:audit:<id>`) and return; `WEIR-FWD` calls them before the
//! enforced sides.
//!
//! # Refused
//!
//! Chains nested too deep for nf_tables (E0510, see above); Maglev
//! balancing over two or more backends (iptables cannot compute the
//! flow hash; `-m statistic` would choose other backends than the
//! interpreter and break consistency), and a redirect steering rule that
//! can match a service frontend's traffic (one connection cannot be both
//! DNATed to a backend and redirected). See [`Unsupported`].

mod audit;
mod chains;
mod depth;
mod emit;
mod entries;
mod events;
mod flow;
pub mod frontend_chain;
mod hoist;
mod manifest;
pub mod self_set;
mod services;
mod sets;
mod terminal;
mod text;

#[cfg(test)]
mod dispatch_tests;
#[cfg(test)]
mod self_mark_tests;
#[cfg(test)]
mod tests;

use crate::bundle::{BackendArtifacts, IP6TABLES_RULES, IPSET_RULES, IPTABLES_RULES};
use crate::graph::Graph;
use crate::model::Model;
use weir_grammar::Span;

pub use events::{Events, DEFAULT_BURST, DEFAULT_GROUP, DEFAULT_RATE, MAX_RATE, PREFIX_MAX};
pub use text::Family;

/// How `log` rules log when events are off ([`Options::events`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogTarget {
    /// `-j LOG --log-prefix "weir:<id> "` (kernel log; in a non-initial
    /// network namespace only with `net.netfilter.nf_log_all_netns=1`).
    #[default]
    Log,
    /// `-j NFLOG --nflog-prefix "weir:<id> " --nflog-group G` (userspace,
    /// e.g. ulogd).
    Nflog { group: u16 },
}

/// Generator options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Verdict events (NFLOG), on by default; `None`: no events, and
    /// `log` rules log through [`Options::log`].
    pub events: Option<Events>,
    pub log: LogTarget,
    /// Balance Maglev services randomly instead of refusing them (not
    /// faithful: flows are not consistently hashed). Off by default.
    pub maglev_as_random: bool,
    /// The packet-mark bits of `self` (`self_set.rs`; default
    /// 0xffff0000).
    pub self_mark: self_set::SelfMark,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            events: Some(Events::default()),
            log: LogTarget::default(),
            maglev_as_random: false,
            self_mark: self_set::SelfMark::default(),
        }
    }
}

/// What the iptables back end refuses: a construct it cannot express
/// faithfully (E0501) or a capacity limit (E0510), as data
/// ([`crate::diagnostics::Refusal`], worded in the diagnostics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The offending declaration (the program's span for a limit).
    pub span: Span,
    pub refusal: crate::diagnostics::Refusal,
}

impl Unsupported {
    /// The E05xx diagnostic for it.
    pub fn diagnostic(&self) -> crate::diagnostics::Diagnostic {
        crate::diagnostics::Kind::Refused {
            span: self.span,
            refusal: self.refusal.clone(),
        }
        .into_diagnostic()
    }

    /// A table whose chains nest deeper than nf_tables allows: a limit of
    /// the program as a whole.
    fn too_deep(model: &Model, d: &depth::TooDeep) -> Unsupported {
        let path = match d.path.as_slice() {
            [first, .., last] => Some((first.clone(), last.clone())),
            _ => None,
        };
        Unsupported {
            span: model.program_span(),
            refusal: crate::diagnostics::Refusal::ChainsTooDeep {
                table: d.table.to_string(),
                depth: d.depth,
                max: depth::MAX_DEPTH,
                path,
            },
        }
    }
}

/// The generated texts and manifest section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub iptables: String,
    pub ip6tables: String,
    pub ipset: String,
    pub manifest: serde_json::Value,
}

/// Generates with default [`Options`].
pub fn generate(graph: &Graph, model: &Model) -> Result<BackendArtifacts, Vec<Unsupported>> {
    generate_with(graph, model, &Options::default())
}

/// Generates the bundle files `iptables.rules`, `ip6tables.rules`,
/// `ipset.rules` and the manifest section `backends.iptables`.
pub fn generate_with(
    graph: &Graph,
    model: &Model,
    opts: &Options,
) -> Result<BackendArtifacts, Vec<Unsupported>> {
    let out = generate_text(graph, model, opts)?;
    let mut a = BackendArtifacts::default();
    a.files
        .insert(IPTABLES_RULES.to_string(), out.iptables.into_bytes());
    a.files
        .insert(IP6TABLES_RULES.to_string(), out.ip6tables.into_bytes());
    a.files
        .insert(IPSET_RULES.to_string(), out.ipset.into_bytes());
    a.manifest = out.manifest.into();
    Ok(a)
}

/// The same as [`generate_with`], as texts.
pub fn generate_text(
    graph: &Graph,
    model: &Model,
    opts: &Options,
) -> Result<Output, Vec<Unsupported>> {
    let mut refused = services::check(graph, model, opts);
    refused.extend(audit::check(model));
    refused.extend(self_set::check(model, graph, opts.self_mark));
    if !refused.is_empty() {
        return Err(refused);
    }
    emit::emit(graph, model, opts).map_err(|deep| {
        deep.iter()
            .map(|d| Unsupported::too_deep(model, d))
            .collect()
    })
}
