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
//! count: it carries the comment `weir:ev:<id>`, which `weir stats` does
//! not read, and every counted id keeps a rule of its own — a logged id
//! is counted by a rule with no target (`weir:<id>`, evaluation goes on)
//! before its event.
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
use crate::graph::ir::VerdictLeaf;
use crate::model::Model;
use crate::provenance::{Provenance, ProvenanceTable};
use std::collections::BTreeSet;

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
    /// One event rule: rate-limited NFLOG with the event's prefix.
    pub fn rule(&self, id: u32, verdict: EventVerdict, audit: bool) -> String {
        format!(
            "{} -m limit --limit {}/sec --limit-burst {} -j NFLOG --nflog-group {} --nflog-prefix \"{}\"",
            comment(&format!("ev:{id}")),
            self.rate,
            self.burst,
            self.group,
            nflog_prefix(id, verdict, audit)
        )
    }

    /// The rules of an enforced side's leaf before its verdict target:
    /// for each logged id a counting rule and its event (`L` for a `log`
    /// rule passed, `A` for the allowing rule's `log` flag; a denying
    /// rule's flag is reported by the deny event), then the deny event.
    pub fn enforced_leaf(&self, v: &VerdictLeaf) -> Vec<String> {
        let mut rules = Vec::new();
        for &id in &v.logged {
            rules.push(comment(&id.to_string()));
            if id != v.decided {
                rules.push(self.rule(id, EventVerdict::Log, false));
            } else if v.allow {
                rules.push(self.rule(id, EventVerdict::Allow, false));
            }
        }
        if !v.allow {
            rules.push(self.rule(v.decided, EventVerdict::Deny, false));
        }
        rules
    }

    /// The event rule of an audit side's leaf, if it reports one (see the
    /// module docs); `audit_only`: is its deciding provenance one of
    /// [`audit_only`]'s.
    pub fn audit_leaf(&self, v: &VerdictLeaf, audit_only: bool) -> Option<String> {
        if !audit_only {
            None
        } else if !v.allow {
            Some(self.rule(v.decided, EventVerdict::Deny, true))
        } else if v.logged.contains(&v.decided) {
            Some(self.rule(v.decided, EventVerdict::Allow, true))
        } else {
            None
        }
    }
}

/// The provenance ids only the audit evaluation can decide by: rules of
/// audit policies and defaults of audit tiers (the enforced program has
/// neither, so a side they decide differs from the enforced one).
pub fn audit_only(model: &Model, table: &ProvenanceTable) -> BTreeSet<u32> {
    (0..table.len() as u32)
        .filter(|&id| match table.get(id) {
            Some(Provenance::Rule { policy, .. }) => model.policies[*policy].audit,
            Some(Provenance::TierDefault { tier, .. }) => model.tiers[*tier].audit,
            _ => false,
        })
        .collect()
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
    fn enforced_leaves_count_every_logged_id_and_report_once() {
        let ev = Events::default();
        // Deny by 7 with its log flag, after log rule 3.
        let deny = VerdictLeaf {
            allow: false,
            decided: 7,
            logged: vec![3, 7],
        };
        let r = ev.enforced_leaf(&deny);
        assert_eq!(r.iter().filter(|r| r.contains("NFLOG")).count(), 2, "{r:?}");
        assert_eq!(r[0], comment("3"));
        assert!(r[1].contains("\"weir:3:L \""), "{}", r[1]);
        assert_eq!(r[2], comment("7"));
        assert!(r[3].contains("\"weir:7:D \""), "{}", r[3]);
        let allow = VerdictLeaf {
            allow: true,
            decided: 9,
            logged: vec![9],
        };
        let r = ev.enforced_leaf(&allow);
        assert_eq!(r.len(), 2);
        assert!(r[1].contains("\"weir:9:A \"") && r[1].contains("weir:ev:9"));
        let quiet = VerdictLeaf {
            allow: true,
            decided: 9,
            logged: vec![],
        };
        assert!(ev.enforced_leaf(&quiet).is_empty());
    }
}
