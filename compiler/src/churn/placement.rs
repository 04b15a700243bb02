//! Class placement: which compiled address class an endpoint address
//! belongs to (its signature: the set atoms that contain it, the
//! selector atoms its labels match, the endpoint atom), from the class
//! data of a manifest.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::contract::Manifest;
use crate::graph::classes::{Atom, ClassId};

/// The class data of a manifest (`classes`), with the atoms deserialized.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(into = "ClassData", from = "ClassData")]
pub struct ClassView {
    pub atoms: Vec<Atom>,
    pub endpoint_atom: u32,
    /// Class → sorted atom ids.
    pub rows: Vec<Vec<u32>>,
    index: HashMap<Vec<u32>, ClassId>,
}

/// Where an address goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// A compiled class: one map entry / ipset member.
    Existing(ClassId),
    /// A signature (sorted atom ids) no compiled class has.
    New(Vec<u32>),
}

/// What [`ClassView`] is made of, as the runtime stores it (the index
/// is rebuilt on reading).
#[derive(Serialize, Deserialize)]
struct ClassData {
    atoms: Vec<Atom>,
    endpoint_atom: u32,
    rows: Vec<Vec<u32>>,
}

impl From<ClassView> for ClassData {
    fn from(v: ClassView) -> ClassData {
        ClassData {
            atoms: v.atoms,
            endpoint_atom: v.endpoint_atom,
            rows: v.rows,
        }
    }
}

impl From<ClassData> for ClassView {
    fn from(d: ClassData) -> ClassView {
        ClassView::from_parts(d.atoms, d.endpoint_atom, d.rows)
    }
}

impl ClassView {
    /// The class data of a manifest (`classes`).
    pub fn from_manifest(m: &Manifest) -> ClassView {
        let c = &m.classes;
        ClassView::from_parts(
            c.atoms.iter().map(|a| a.value.clone()).collect(),
            c.endpoint_atom,
            c.rows.clone(),
        )
    }

    /// A view of `atoms` and class `rows` (class → atom ids).
    pub fn from_parts(atoms: Vec<Atom>, endpoint_atom: u32, rows: Vec<Vec<u32>>) -> ClassView {
        let index = rows
            .iter()
            .enumerate()
            .map(|(c, r)| {
                let mut r = r.clone();
                r.sort_unstable();
                (r, c as ClassId)
            })
            .collect();
        ClassView {
            atoms,
            endpoint_atom,
            rows,
            index,
        }
    }

    /// The signature (sorted atom ids) of `addr`, owned by an endpoint
    /// with this name and labels (or by none).
    pub fn signature(
        &self,
        addr: IpAddr,
        owner: Option<(&str, &BTreeMap<String, String>)>,
    ) -> Vec<u32> {
        self.atoms
            .iter()
            .enumerate()
            .filter(|(_, a)| match a {
                Atom::Sel(s) => owner.is_some_and(|(_, l)| s.matches(l)),
                Atom::Set(s) => s.contains(addr),
                // An identity atom: only in manifests of bundles compiled
                // before `self` was decided in the data path
                // (graph/same_endpoint.rs); there a new endpoint a `self`
                // policy selects has no compiled class (needs a recompile).
                Atom::Endpoint(n) => owner.is_some_and(|(name, _)| name == n),
            })
            .map(|(i, _)| i as u32)
            .collect()
    }

    pub fn class_of(&self, sig: &[u32]) -> Option<ClassId> {
        self.index.get(sig).copied()
    }

    /// The class of an address of the endpoint `name` with `labels`.
    pub fn place(&self, addr: IpAddr, name: &str, labels: &BTreeMap<String, String>) -> Placement {
        let sig = self.signature(addr, Some((name, labels)));
        match self.class_of(&sig) {
            Some(c) => Placement::Existing(c),
            None => Placement::New(sig),
        }
    }

    /// The class of `addr` when no endpoint owns it (its set atoms only):
    /// what the class map gives once its host entry is gone. Every set
    /// signature is a compiled class (class 0 when in no set).
    pub fn base_class(&self, addr: IpAddr) -> ClassId {
        self.class_of(&self.signature(addr, None)).unwrap_or(0)
    }

    /// `atom #i (selector app == "web")`, for messages.
    pub fn describe(&self, sig: &[u32]) -> String {
        let parts: Vec<String> = sig
            .iter()
            .filter(|&&a| a != self.endpoint_atom)
            .map(|&a| self.atoms[a as usize].to_string())
            .collect();
        if parts.is_empty() {
            "no selector or set besides `all`".into()
        } else {
            parts.join("; ")
        }
    }
}
