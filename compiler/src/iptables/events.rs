//! Verdict events in iptables: the NFLOG rules that report judgements to
//! `weir monitor` (docs/events-iptables.md).
//!
//! **Which judgements.** Exactly those of docs/language.md §4 ("Verdict
//! events"), placed where the chains make each judgement, just before its
//! verdict target:
//!
//! - a policy side's leaf that denies: one `D` event with the deciding
//!   provenance (rule, tier default, `default deny`, …); a service
//!   without backends: one `R` event before its REJECT;
//! - on the way to a side's verdict, each `log` rule passed: an `L` event;
//!   a side allowed by a rule with the `log` flag: an `A` event;
//! - established packets (accepted first in `WEIR-FWD`) and bypassed
//!   packets: nothing;
//! - audit leaves (`WEIR-A<n>`): an event with the audit flag when the
//!   side is decided by an audit policy (one of its rules, or an audit
//!   tier's default) — then the audit decision cannot be the enforced one
//!   — and it denies or its deciding rule has the `log` flag.
//!
//! **Counters stay exact.** An event rule is rate-limited, so it cannot
//! count: it carries no comment (its NFLOG prefix names the id), so `weir
//! stats`, which reads only rules commented `weir:<id>`, skips it, and
//! every counted id keeps a rule of its own — a logged id is counted by a
//! rule with no target (`weir:<id>`, evaluation goes on) before its
//! event. (Until issue 21's round 2 event rules carried `weir:ev:<id>`:
//! one more match call for every denied packet, and 288 bytes per rule,
//! 8 MB of the 100,000-rule model's table.)
//!
//! **Flood bound.** Each event rule has `-m limit --limit R/sec
//! --limit-burst B`: x_tables keeps one token bucket per rule, so a flood
//! costs at most R events per second per rule (a packet over the limit
//! skips the NFLOG and costs one failed token check). Events over the
//! limit are lost, and nothing counts them (the reader cannot know).
//!
//! **Prefix.** `--nflog-prefix` is [`crate::contract::event::nflog_prefix`];
//! x_tables keeps 63 bytes of it (iptables-nft's `log` expression 127), so
//! the longest one we can write is checked to fit the smaller (tests), and
//! `weir apply` reads every prefix back.

use super::text::comment;
use crate::contract::event::{nflog_prefix, EventVerdict};
use crate::graph;
use crate::graph::ir::VerdictLeaf;
use crate::model::Model;
use crate::provenance::ProvenanceTable;

/// The NFLOG group events go to unless `weir compile --event-group` says
/// otherwise.
pub const DEFAULT_GROUP: u16 = 100;
/// Events per second each event rule may report (its token bucket's rate).
pub const DEFAULT_RATE: u32 = 100;
/// Events an event rule may report at once after a quiet spell.
pub const DEFAULT_BURST: u32 = 200;
/// The highest `--limit` and `--limit-burst` x_tables takes (`limit`
/// counts in 1/10,000 s).
pub const MAX_RATE: u32 = 10_000;
/// The most bytes of an NFLOG prefix x_tables keeps (`char prefix[64]`
/// with its terminating NUL in `struct xt_nflog_info`; nf_tables keeps
/// more).
pub const PREFIX_MAX: usize = 63;

/// Where and how fast the chains report events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Events {
    /// NFLOG group (`--nflog-group`).
    pub group: u16,
    /// Per event rule: events per second (1..=[`MAX_RATE`])…
    pub rate: u32,
    /// …and burst (1..=[`MAX_RATE`]).
    pub burst: u32,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            group: DEFAULT_GROUP,
            rate: DEFAULT_RATE,
            burst: DEFAULT_BURST,
        }
    }
}

impl Events {
    /// One event rule: rate-limited NFLOG with the event's prefix. The
    /// options come in the order `iptables-save` prints them, so the
    /// apply's read-back finds the line byte for byte and does not parse
    /// it (28,754 such rules at 100,000 rules).
    pub fn rule(&self, id: u32, verdict: EventVerdict, audit: bool) -> String {
        format!(
            "-m limit --limit {}/sec --limit-burst {} -j NFLOG --nflog-prefix \"{}\" --nflog-group {}",
            self.rate,
            self.burst,
            nflog_prefix(id, verdict, audit),
            self.group
        )
    }

    /// The rules of an enforced side's leaf before its verdict target:
    /// for each logged id a counting rule and its event, then the side's
    /// own event — [`graph::events::leaf_events`], the side's judgement
    /// (`L` for a `log` rule passed, `A` for an allowing rule with the
    /// `log` flag, `D` for a denial; a denying rule's flag is reported by
    /// the deny event).
    pub fn enforced_leaf(
        &self,
        model: &Model,
        table: &ProvenanceTable,
        v: &VerdictLeaf,
    ) -> Vec<String> {
        let evs = graph::events::leaf_events(model, table, v);
        let mut rules = Vec::new();
        for &id in &v.logged {
            rules.push(comment(&id.to_string()));
            for &(e, _) in evs.iter().filter(|(_, p)| *p == id) {
                rules.push(self.rule(id, e, false));
            }
        }
        for &(e, id) in evs.iter().filter(|(_, p)| !v.logged.contains(p)) {
            rules.push(self.rule(id, e, false));
        }
        rules
    }

    /// The event rule of an audit side's leaf, if it reports one
    /// ([`graph::events::audit_leaf_event`]).
    pub fn audit_leaf(
        &self,
        model: &Model,
        table: &ProvenanceTable,
        v: &VerdictLeaf,
    ) -> Option<String> {
        graph::events::audit_leaf_event(model, table, v).map(|(e, id)| self.rule(id, e, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_fits_what_the_kernel_keeps() {
        for v in [
            EventVerdict::Allow,
            EventVerdict::Deny,
            EventVerdict::Reject,
            EventVerdict::Log,
        ] {
            let p = nflog_prefix(u32::MAX, v, true);
            assert!(p.len() <= PREFIX_MAX, "{p:?} is {} bytes", p.len());
        }
    }

    #[test]
    fn each_side_reports_its_own_judgement() {
        // Egress allowed by a rule with `log`, ingress allowed by a rule
        // too: each side reports its `A` (the egress one is no `L`).
        let m = crate::check::model_of(
            r#"
endpoint web { labels { app: "web" } addr 10.0.0.1 }
endpoint db { labels { app: "db" } addr 10.0.0.2 }
policy web-out {
  applies to app == "web"
  egress {
    allow tcp 5432 to app == "db" log
  }
}
policy db-in {
  applies to app == "db"
  ingress {
    log tcp from any
    deny tcp 22 from any log
    allow tcp 5432 from app == "web" log
  }
}
"#,
        );
        let g = crate::graph::build(&m);
        let text = super::super::generate_text(&g, &m, &super::super::Options::default())
            .unwrap()
            .iptables;
        let id = |s: &str| {
            (0..g.provenance.len() as u32)
                .find(|&i| g.provenance.get(i).unwrap().describe(&m) == s)
                .unwrap()
        };
        let has = |p: String| assert!(text.contains(&p), "{p} not in\n{text}");
        let (eg, log, deny, allow) = (
            id("web-out egress rule #1"),
            id("db-in ingress rule #1"),
            id("db-in ingress rule #2"),
            id("db-in ingress rule #3"),
        );
        has(format!("\"weir:{eg}:A \""));
        has(format!("\"weir:{log}:L \""));
        has(format!("\"weir:{deny}:D \""));
        has(format!("\"weir:{allow}:A \""));
        assert!(!text.contains(&format!("weir:{eg}:L ")), "{text}");
        assert!(!text.contains(&format!("weir:{deny}:L ")), "{text}");
    }
}
