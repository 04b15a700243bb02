//! The common refinement of two programs' address classes.
//!
//! Each program's class map (graph/classes.rs) sends every address to one
//! of its classes. Two addresses in the same class of OLD *and* the same
//! class of NEW are decided alike by both graphs, so the diff ranges over
//! **joint classes**: the distinct pairs (OLD class, NEW class) that some
//! address has, split by address family — a class of either program may
//! hold IPv4 and IPv6 addresses, but a packet's source and destination
//! are of one family, so the diff pairs only joint classes of the same
//! family (see [`super::region::slices`]). They are computed from the
//! class maps' prefixes, never by enumerating addresses: the prefixes of
//! both maps (plus every endpoint and service frontend address of both
//! programs, so that names and frontends stay exact) form a tree; each
//! prefix minus its children is a **piece** on which both maps are
//! constant, and a piece's joint class is that of any one of its
//! addresses (and its family). A service frontend address is a joint
//! class of its own, so that rows can leave out the packets the service
//! stage translates (see [`super`]).
//!
//! When a program has a `self` rule, a joint class also holds addresses
//! of one owning endpoint only (in each program): `self` is a relation
//! between the two addresses, and with joint classes split by owner the
//! walk decides it exactly per (source, destination) joint class pair
//! ([`super::region`]).

use super::region::JointMap;
use crate::cidrs;
use crate::graph::bits::Bits;
use crate::graph::{ClassId, Graph};
use crate::model::{Cidr, Model};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A joint class's identity: (OLD class, NEW class, IPv6, frontend,
/// owning endpoint in OLD and in NEW for `self`).
type Key = (ClassId, ClassId, bool, Option<IpAddr>, Owners);

/// The endpoint owning a joint class's addresses in OLD and in NEW (model
/// indices), known for programs with a `self` rule.
pub type Owners = (Option<u32>, Option<u32>);

/// One joint class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joint {
    pub old: ClassId,
    pub new: ClassId,
    /// Its addresses are IPv6 (else IPv4): a joint class holds one family.
    pub v6: bool,
    /// A service frontend address (in either program): a class of its own.
    pub frontend: Option<IpAddr>,
    /// The owning endpoints, for `self`.
    pub owners: Owners,
    /// The pieces, sorted.
    pub cidrs: Vec<Cidr>,
    /// True for the class holding the pieces left of its family's address
    /// space once every named prefix is taken out ("any other IPv4
    /// address").
    pub other: bool,
    /// Those pieces (the complement of every named prefix), sorted.
    pub rest: Vec<Cidr>,
}

/// The joint classes of two programs, and each program's view of them.
#[derive(Debug, Clone)]
pub struct Space {
    pub joints: Vec<Joint>,
    pub old: JointMap,
    pub new: JointMap,
    index: BTreeMap<Key, usize>,
}

fn roots() -> [Cidr; 2] {
    [
        Cidr {
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            len: 0,
        },
        Cidr {
            addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            len: 0,
        },
    ]
}

/// Every address that must stay exact: endpoints and frontends.
fn hosts(model: &Model) -> impl Iterator<Item = IpAddr> + '_ {
    let eps = model.endpoints.iter().flat_map(|e| e.addrs.iter().copied());
    let fes = model
        .services
        .iter()
        .flat_map(|s| s.frontends.iter().map(|f| f.addr));
    eps.chain(fes)
}

fn frontends(model: &Model) -> impl Iterator<Item = IpAddr> + '_ {
    model
        .services
        .iter()
        .flat_map(|s| s.frontends.iter().map(|f| f.addr))
}

impl Space {
    pub fn build(old: (&Model, &Graph), new: (&Model, &Graph)) -> Space {
        let mut prefixes: BTreeSet<Cidr> = roots().into_iter().collect();
        for (m, g) in [old, new] {
            prefixes.extend(g.classes.entries.iter().map(|e| e.cidr));
            prefixes.extend(hosts(m).map(Cidr::host));
        }
        let fe: BTreeSet<IpAddr> = frontends(old.0).chain(frontends(new.0)).collect();
        // Direct children of each prefix, by a pre-order walk.
        let list: Vec<Cidr> = prefixes.into_iter().collect();
        let mut children: Vec<Vec<Cidr>> = vec![Vec::new(); list.len()];
        let mut stack: Vec<usize> = Vec::new();
        for (i, c) in list.iter().enumerate() {
            while stack.last().is_some_and(|&p| !list[p].covers(c)) {
                stack.pop();
            }
            if let Some(&p) = stack.last() {
                children[p].push(*c);
            }
            stack.push(i);
        }
        let mut by_key: BTreeMap<Key, (Vec<Cidr>, Vec<Cidr>)> = BTreeMap::new();
        for (i, c) in list.iter().enumerate() {
            let root = c.len == 0;
            for piece in cidrs::minus(&[*c], &children[i]) {
                let a = piece.addr;
                let host = piece.len == Cidr::host(a).len;
                let owners = if host {
                    (old.1.classes.same.owner(a), new.1.classes.same.owner(a))
                } else {
                    (None, None)
                };
                let key = (
                    old.1.classes.classify(a),
                    new.1.classes.classify(a),
                    a.is_ipv6(),
                    (host && fe.contains(&a)).then_some(a),
                    owners,
                );
                let e = by_key.entry(key).or_default();
                if root {
                    e.1.push(piece);
                } else {
                    e.0.push(piece);
                }
            }
        }
        let mut joints: Vec<Joint> = by_key
            .into_iter()
            .map(|((o, n, v6, frontend, owners), (mut cidrs, mut rest))| {
                cidrs.sort();
                rest.sort();
                Joint {
                    old: o,
                    new: n,
                    v6,
                    frontend,
                    owners,
                    cidrs,
                    other: !rest.is_empty(),
                    rest,
                }
            })
            .collect();
        // Named things first, in address order; the rest of the space last
        // (IPv4, then IPv6).
        let order = |j: &Joint| (j.other, j.other && j.v6, j.cidrs.first().copied());
        joints.sort_by_key(order);
        let index = joints
            .iter()
            .enumerate()
            .map(|(i, j)| ((j.old, j.new, j.v6, j.frontend, j.owners), i))
            .collect();
        let view = |g: &Graph, pick: fn(&Joint) -> ClassId, own: fn(&Joint) -> Option<u32>| {
            let mut class = vec![Bits::new(); g.classes.classes.len()];
            for (i, j) in joints.iter().enumerate() {
                class[pick(j) as usize].insert(i);
            }
            let atom = (0..g.classes.atoms.len())
                .map(|a| {
                    g.classes
                        .classes_with(a as u32)
                        .iter()
                        .fold(Bits::new(), |acc, c| acc.or(&class[c]))
                })
                .collect();
            let owner: Vec<Option<u32>> = joints.iter().map(own).collect();
            let mut by_owner: BTreeMap<u32, Bits> = BTreeMap::new();
            for (i, o) in owner.iter().enumerate() {
                if let Some(o) = o {
                    by_owner.entry(*o).or_default().insert(i);
                }
            }
            JointMap {
                class,
                atom,
                owner,
                by_owner,
            }
        };
        let old_map = view(old.1, |j| j.old, |j| j.owners.0);
        let new_map = view(new.1, |j| j.new, |j| j.owners.1);
        Space {
            joints,
            old: old_map,
            new: new_map,
            index,
        }
    }

    /// The joint class of one address.
    pub fn classify(&self, old: &Graph, new: &Graph, a: IpAddr) -> usize {
        let o = old.classes.classify(a);
        let n = new.classes.classify(a);
        let v6 = a.is_ipv6();
        let owners = (old.classes.same.owner(a), new.classes.same.owner(a));
        self.index
            .get(&(o, n, v6, Some(a), owners))
            .or_else(|| self.index.get(&(o, n, v6, None, owners)))
            .copied()
            .expect("every address is in a joint class")
    }

    /// The joint classes of one family (IPv6 when `v6`).
    pub fn family(&self, v6: bool) -> Bits {
        let mut b = Bits::new();
        for (i, j) in self.joints.iter().enumerate() {
            if j.v6 == v6 {
                b.insert(i);
            }
        }
        b
    }

    /// The regions a diff walks: per family, its protocols between its
    /// classes ([`super::region::slices`]).
    pub fn slices(&self) -> Vec<super::region::Region> {
        let fams = [
            (IpAddr::V4(Ipv4Addr::UNSPECIFIED), self.family(false)),
            (IpAddr::V6(Ipv6Addr::UNSPECIFIED), self.family(true)),
        ];
        super::region::slices(&fams)
    }

    pub fn len(&self) -> usize {
        self.joints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.joints.is_empty()
    }
}
