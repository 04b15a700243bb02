//! One side of the policy decision (docs/language.md §4, "One side of the
//! policy decision"): tiers in order, active policies by priority, first
//! deciding rule, `pass` to the next tier, isolation default per tier.

use super::{proto_matches, Interp, Packet, SideDecision};
use crate::model::{Action, Direction, Verdict};
use crate::provenance::Provenance;

impl Interp<'_> {
    /// Evaluate direction `dir` for the packet: egress for its source
    /// endpoint (peer = destination), ingress for its destination endpoint
    /// (peer = source).
    pub fn side(&self, dir: Direction, p: &Packet) -> SideDecision {
        self.side_as(dir, p, false)
    }

    /// [`Interp::side`], with the audit policies enforced too when
    /// `with_audit` (the audit verdict's side; language.md §4, "Audit
    /// policies"). Without it audit policies do not exist.
    pub fn side_as(&self, dir: Direction, p: &Packet, with_audit: bool) -> SideDecision {
        let (subject_addr, peer_addr) = match dir {
            Direction::Egress => (p.src, p.dst),
            Direction::Ingress => (p.dst, p.src),
        };
        let Some(subject) = self.endpoint_of(subject_addr) else {
            return SideDecision {
                verdict: Verdict::Allow,
                by: Provenance::Unrestricted { dir },
                logged: Vec::new(),
                subject: None,
            };
        };
        let model = self.model;
        let dst = self.endpoint_of(p.dst);
        let mut logged = Vec::new();
        for tier in 0..model.tiers.len() {
            let active = model.policies.iter().enumerate().filter(|(_, pol)| {
                pol.tier == tier
                    && (with_audit || !pol.audit)
                    && pol.rules(dir).is_some()
                    && pol.applies_to.matches(&subject.labels)
            });
            let mut any_active = false;
            let mut passed = false;
            'tier: for (pid, pol) in active {
                any_active = true;
                for (index, rule) in pol.rules(dir).unwrap_or(&[]).iter().enumerate() {
                    if !proto_matches(&rule.proto, p, dst)
                        || !self.rule_peer_matches(&rule.peer, peer_addr, Some(subject))
                    {
                        continue;
                    }
                    let here = Provenance::Rule {
                        policy: pid,
                        dir,
                        index,
                    };
                    match rule.action {
                        Action::Log => logged.push(here),
                        Action::Pass => {
                            if rule.log {
                                logged.push(here);
                            }
                            passed = true;
                            break 'tier;
                        }
                        Action::Allow | Action::Deny => {
                            if rule.log {
                                logged.push(here);
                            }
                            let verdict = if rule.action == Action::Allow {
                                Verdict::Allow
                            } else {
                                Verdict::Deny
                            };
                            return SideDecision {
                                verdict,
                                by: here,
                                logged,
                                subject: Some(subject.name.clone()),
                            };
                        }
                    }
                }
            }
            // A `default pass` tier goes on to the next tier when nothing
            // decided, as if a rule had passed.
            if any_active && !passed && !model.tiers[tier].default_pass {
                return SideDecision {
                    verdict: Verdict::Deny,
                    by: Provenance::TierDefault { tier, dir },
                    logged,
                    subject: Some(subject.name.clone()),
                };
            }
        }
        let (verdict, by) = match model.default_deny.get(dir) {
            Some(_) => (Verdict::Deny, Provenance::DefaultDeny { dir }),
            None => (Verdict::Allow, Provenance::Unrestricted { dir }),
        };
        SideDecision {
            verdict,
            by,
            logged,
            subject: Some(subject.name.clone()),
        }
    }
}
