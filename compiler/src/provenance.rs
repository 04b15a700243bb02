//! Provenance: which piece of source decided a packet's fate.
//!
//! Every verdict — from the interpreter, a decision-graph leaf, an eBPF
//! counter slot or an iptables rule comment — names one [`Provenance`].
//! [`ProvenanceTable`] gives each possible provenance of a model a dense,
//! deterministic id, so that back ends can index counters by it and the
//! runtime can map a counter back to a rule and its source span.

use crate::model::{Direction, Model, PolicyId, TierId};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use weir_grammar::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Provenance {
    /// A packet of an established connection (or related to one).
    Established,
    /// Rule `index` of policy `policy`'s `dir` block.
    Rule {
        policy: PolicyId,
        dir: Direction,
        index: usize,
    },
    /// Isolation: the endpoint is selected in tier `tier` for `dir` and no
    /// rule there decided or passed.
    TierDefault { tier: TierId, dir: Direction },
    /// No policy selects the endpoint for `dir` (or all passed).
    Unrestricted { dir: Direction },
    /// `default deny dir` applies.
    DefaultDeny { dir: Direction },
    /// A `bypass` steering rule.
    Bypass { steer: usize, index: usize },
    /// A service frontend with no usable backend: rejected.
    NoBackends { service: usize },
    /// A non-first fragment: no transport header to judge (denied where
    /// fragments are seen; docs/language.md §4, "Headers").
    Fragment,
    /// A packet whose headers cannot be parsed up to the transport header
    /// (truncated, or too long an IPv6 extension-header chain): denied.
    Unparsed,
}

const DIRS: [Direction; 2] = [Direction::Ingress, Direction::Egress];

impl Provenance {
    /// The name a `by NAME` test clause matches: the policy, steer or
    /// service name, or `default` for every built-in default.
    pub fn owner_name(&self, model: &Model) -> String {
        match *self {
            Provenance::Rule { policy, .. } => model.policies[policy].name.clone(),
            Provenance::Bypass { steer, .. } => model.steers[steer].name.clone(),
            Provenance::NoBackends { service } => model.services[service].name.clone(),
            Provenance::Established
            | Provenance::TierDefault { .. }
            | Provenance::Unrestricted { .. }
            | Provenance::DefaultDeny { .. }
            | Provenance::Fragment
            | Provenance::Unparsed => "default".to_string(),
        }
    }

    /// Where in the source this provenance was written, if anywhere.
    pub fn span(&self, model: &Model) -> Option<Span> {
        match *self {
            Provenance::Rule { policy, dir, index } => model.policies[policy]
                .rules(dir)
                .and_then(|r| r.get(index))
                .map(|r| r.span),
            Provenance::TierDefault { tier, .. } => model.tiers[tier].span,
            Provenance::DefaultDeny { dir } => model.default_deny.get(dir),
            Provenance::Bypass { steer, index } => Some(model.steers[steer].rules[index].span),
            Provenance::NoBackends { service } => Some(model.services[service].span),
            Provenance::Established
            | Provenance::Unrestricted { .. }
            | Provenance::Fragment
            | Provenance::Unparsed => None,
        }
    }

    /// A one-line human description, e.g. `db-ingress ingress rule #2`.
    pub fn describe(&self, model: &Model) -> String {
        match *self {
            Provenance::Established => "conntrack: established connection".into(),
            Provenance::Rule { policy, dir, index } => {
                format!("{} {} rule #{}", model.policies[policy].name, dir_name(dir), index + 1)
            }
            Provenance::TierDefault { tier, dir } => format!(
                "default deny ({}): endpoint is selected by policies in tier {} and no rule allowed it",
                dir_name(dir),
                model.tiers[tier].name
            ),
            Provenance::Unrestricted { dir } => {
                format!("no policy selects the endpoint for {}", dir_name(dir))
            }
            Provenance::DefaultDeny { dir } => format!("default deny {} declaration", dir_name(dir)),
            Provenance::Bypass { steer, index } => {
                format!("steer {} rule #{} (bypass)", model.steers[steer].name, index + 1)
            }
            Provenance::NoBackends { service } => {
                format!("service {} has no backends", model.services[service].name)
            }
            Provenance::Fragment => {
                "non-first fragment: no transport header to judge (denied)".into()
            }
            Provenance::Unparsed => {
                "headers not parsed to the transport header (truncated, or more than 8 IPv6 extension headers): denied".into()
            }
        }
    }
}

pub fn dir_name(dir: Direction) -> &'static str {
    match dir {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Dense ids for every provenance a model can produce, in a fixed order:
/// established, per direction the unrestricted and default-deny defaults,
/// tier defaults, policy rules in model order, bypass rules, services,
/// then the fragment and unparsed denials (last, so that adding them kept
/// every other id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProvenanceTable {
    pub entries: Vec<Provenance>,
    #[serde(skip)]
    index: BTreeMap<Provenance, u32>,
}

impl ProvenanceTable {
    pub fn new(model: &Model) -> ProvenanceTable {
        let mut entries = vec![Provenance::Established];
        for dir in DIRS {
            entries.push(Provenance::Unrestricted { dir });
            entries.push(Provenance::DefaultDeny { dir });
        }
        for tier in 0..model.tiers.len() {
            for dir in DIRS {
                entries.push(Provenance::TierDefault { tier, dir });
            }
        }
        for (policy, p) in model.policies.iter().enumerate() {
            for dir in DIRS {
                for index in 0..p.rules(dir).map_or(0, |r| r.len()) {
                    entries.push(Provenance::Rule { policy, dir, index });
                }
            }
        }
        for (steer, s) in model.steers.iter().enumerate() {
            for (index, r) in s.rules.iter().enumerate() {
                if r.action == crate::model::SteerAction::Bypass {
                    entries.push(Provenance::Bypass { steer, index });
                }
            }
        }
        for service in 0..model.services.len() {
            entries.push(Provenance::NoBackends { service });
        }
        entries.extend([Provenance::Fragment, Provenance::Unparsed]);
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, i as u32))
            .collect();
        ProvenanceTable { entries, index }
    }

    pub fn id(&self, p: &Provenance) -> u32 {
        self.index[p]
    }

    pub fn get(&self, id: u32) -> Option<&Provenance> {
        self.entries.get(id as usize)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// How the two sides' decisions make the packet's verdict and the one
/// provenance reported for it (docs/language.md §4, step 4): denied by the
/// first side that denies (egress first); allowed, naming the rule that
/// allowed it (ingress side first), else the ingress side's default, else
/// the egress side's. Each side is `(allowed, provenance)`; at least one
/// side must be present.
pub fn combine_sides(
    egress: Option<(bool, Provenance)>,
    ingress: Option<(bool, Provenance)>,
) -> (crate::model::Verdict, Provenance) {
    use crate::model::Verdict;
    if let Some((_, by)) = [egress, ingress]
        .into_iter()
        .flatten()
        .find(|(allowed, _)| !allowed)
    {
        return (Verdict::Deny, by);
    }
    let by_rule = [ingress, egress]
        .into_iter()
        .flatten()
        .map(|(_, p)| p)
        .find(|p| matches!(p, Provenance::Rule { .. }));
    let by = by_rule
        .or(ingress.map(|(_, p)| p))
        .or(egress.map(|(_, p)| p))
        .expect("at least one side is evaluated");
    (Verdict::Allow, by)
}
