//! Both programs' decisions over the joint space, and the pieces where
//! the verdict changes.
//!
//! [`decide`] runs one program's fixed pipeline symbolically, in the
//! order of docs/language.md §4 (as `graph::eval` does for one packet):
//! the steer entry (a `bypass` allows), then egress, then — where egress
//! allowed — ingress, combined by `provenance::combine_sides` (the one
//! rule for it). [`changed`] runs OLD's pipeline on the whole space (every
//! same-family pair, every protocol the rules can see) and
//! NEW's on each of OLD's pieces, so every final piece has one OLD and one
//! NEW decision, and keeps the pieces whose verdicts differ.

use super::region::{walk, JointMap, Region};
use crate::graph::ir::{Graph, Node, SteerLeaf};
use crate::model::{SteerAction, Verdict};
use crate::provenance::{combine_sides, Provenance};

/// What decided one side of the diff for a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Decision {
    pub allow: bool,
    pub by: Provenance,
}

impl Decision {
    pub fn of(verdict: Verdict, by: Provenance) -> Decision {
        Decision {
            allow: verdict == Verdict::Allow,
            by,
        }
    }

    pub fn verdict(&self) -> Verdict {
        if self.allow {
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    }
}

/// One program's decisions on the pieces of `region`, packets as sent to
/// their destination (no service translation).
pub fn decide(g: &Graph, m: &JointMap, region: Region) -> Vec<(Region, Decision)> {
    let mut out = Vec::new();
    for (r, bypass) in steer(g, m, region) {
        match bypass {
            Some(d) => out.push((r, d)),
            None => out.extend(policy(g, m, r)),
        }
    }
    out
}

/// The steer entry: each piece with its `bypass` decision, if any.
pub fn steer(g: &Graph, m: &JointMap, region: Region) -> Vec<(Region, Option<Decision>)> {
    walk(g, m, g.dag.roots.steer, region)
        .into_iter()
        .map(|(r, leaf)| {
            let bypass = match *leaf {
                Node::Steer(SteerLeaf::Hit { steer, index })
                    if g.steer_actions[steer][index] == SteerAction::Bypass =>
                {
                    Some(Decision::of(
                        Verdict::Allow,
                        Provenance::Bypass { steer, index },
                    ))
                }
                _ => None,
            };
            (r, bypass)
        })
        .collect()
}

/// Egress, then — where egress allowed — ingress.
pub fn policy(g: &Graph, m: &JointMap, region: Region) -> Vec<(Region, Decision)> {
    let prov = |id: u32| *g.provenance.get(id).expect("provenance id in range");
    let mut out = Vec::new();
    for (r, eg) in walk(g, m, g.dag.roots.egress, region) {
        let Node::Verdict(eg) = eg else {
            panic!("internal compiler error: egress entry ended in {eg:?}")
        };
        let e = (eg.allow, prov(eg.decided));
        if !eg.allow {
            let (verdict, by) = combine_sides(Some(e), None);
            out.push((r, Decision::of(verdict, by)));
            continue;
        }
        for (r, ing) in walk(g, m, g.dag.roots.ingress, r) {
            let Node::Verdict(ing) = ing else {
                panic!("internal compiler error: ingress entry ended in {ing:?}")
            };
            let (verdict, by) = combine_sides(Some(e), Some((ing.allow, prov(ing.decided))));
            out.push((r, Decision::of(verdict, by)));
        }
    }
    out
}

/// A piece of packet space whose verdict differs between the programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedRegion {
    pub region: Region,
    pub old: Decision,
    pub new: Decision,
}

/// Every piece of `regions` (the space's [`super::space::Space::slices`])
/// whose OLD and NEW verdicts differ.
pub fn changed(
    regions: Vec<Region>,
    old: (&Graph, &JointMap),
    new: (&Graph, &JointMap),
) -> Vec<ChangedRegion> {
    let mut out = Vec::new();
    for region in regions {
        for (r, o) in decide(old.0, old.1, region) {
            for (r, nw) in decide(new.0, new.1, r) {
                if o.allow != nw.allow {
                    out.push(ChangedRegion {
                        region: r,
                        old: o,
                        new: nw,
                    });
                }
            }
        }
    }
    out
}
