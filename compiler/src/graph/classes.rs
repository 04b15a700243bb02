//! Address classes: partition refinement of selectors and address sets.
//!
//! A rule's peer is a selector or an address set, and a policy's subject is
//! a selector. Instead of expanding them into cross products of
//! identities × CIDRs × ports, the compiler partitions the address space
//! into **classes**: addresses that no peer test and no `applies to` can
//! tell apart.
//!
//! - **Atoms** are every distinct [`Sel`] used as a rule or steering peer
//!   or as a policy's `applies to`, every distinct [`AddrSet`] used as a
//!   peer, the named-port selectors of [`crate::named_ports::rule_atoms`]
//!   (so a class knows the port its endpoints declare under each name a
//!   rule uses), and always `Sel::All` (which an address satisfies exactly when
//!   it belongs to an endpoint — the "is an endpoint" bit that separates
//!   "not selected" from "not an endpoint"). Atoms are deduplicated by
//!   value and numbered in value order.
//! - An address's **signature** is the set of atoms it satisfies: a
//!   selector atom when the address belongs to an endpoint whose labels
//!   match it, a set atom when the address is in the set.
//! - **Classes** are the distinct signatures, numbered densely; class 0 is
//!   always the empty signature ("matches no atom": most of the internet).
//! - `self` needs no atom: it is a relation between the two addresses of
//!   a packet ("both belong to the same endpoint", `Cond::SameEndpoint`),
//!   decided in the data path from endpoint membership kept as data
//!   ([`super::same_endpoint`]), so an endpoint under a `self` policy
//!   shares its class with its label siblings and endpoint churn never
//!   needs a recompile because of `self`. (`Atom::Endpoint`, an identity
//!   atom per endpoint, is what earlier versions used; it stays readable
//!   in manifests but is no longer made.) `world` needs no atom: it is
//!   "not the endpoint atom" (and the set atom, for `world SET`).
//!
//! The **class map** sends an address to its class. It is a list of
//! `(prefix, class)` entries with longest-prefix-match semantics and "no
//! match = class 0": every prefix that appears in some set (include or
//! except part) with the signature of the addresses whose longest set
//! prefix it is — addresses under the same longest set prefix are in the
//! same sets, because set prefixes nest or are disjoint — plus every
//! endpoint address as a host route. Entries whose class equals that of
//! their nearest enclosing entry are dropped. That is exactly an eBPF
//! `LPM_TRIE`; for data paths without longest-prefix priority (one ipset
//! per class, say) [`Classes::disjoint_entries`] splits the same map into
//! disjoint prefixes (`10.0.0.0/8 except 10.99.0.0/16` becomes the eight
//! covering prefixes `10.0.0.0/9 … 10.98.0.0/16`, `10.100.0.0/14 …`), never
//! enumerating addresses. IPv6 uses the same entries with 128-bit prefixes.
//!
//! ## Endpoints that appear at run time
//!
//! The manifest carries the atoms (selector text and set prefixes), each
//! class's atom row, and the class map. When the runtime learns of a new
//! endpoint (inventory update) it computes the endpoint's signature
//! itself: the set atoms from the class map entry that covers the address
//! (the LPM lookup *before* inserting the host route), the selector atoms
//! by evaluating each selector atom on the new labels, plus the endpoint
//! bit. Then:
//!
//! - **The signature is an existing class** (the common case: a new
//!   replica of a deployment has the same labels as its siblings): the
//!   runtime inserts one host entry `addr/32 → class` into the LPM map (eBPF)
//!   or adds the address to that class's ipset (iptables). Nothing else
//!   changes; no program or rule is regenerated. Removal deletes the entry.
//! - **The signature is new**: the runtime takes a spare class id (the
//!   manifest reserves `spare_classes` ids after the compiled ones), writes
//!   its atom row, and fills the class-keyed tables: each class-keyed
//!   table node records the decision list over atoms it was built from
//!   (`Node::Table::rule`), so the entry for the new class is the first
//!   atom of that list in the new signature (else the default). Peer tests
//!   are atom tests, so the endpoint is correctly matched as a *peer*
//!   everywhere. As a *subject*, the endpoint needs the chain of its
//!   active policies; if the subject table already has a class with the
//!   same set of satisfied `applies to` atoms the runtime reuses that
//!   chain (an entry copy). Otherwise its set of active policies is a
//!   combination the compiler never built: the runtime refuses the update
//!   with "endpoint NAME needs a recompile: its labels select a new
//!   combination of policies" and keeps the running generation. Policy
//!   sets that expect such churn compile with the inventory that covers
//!   it (the subject side is decided by `applies to` selectors only, so
//!   one representative endpoint per label combination suffices).
//!
//! Status: `weir endpoints` ([`crate::churn`]) implements the existing-class
//! case; a new signature is refused ("needs a recompile") for now — the
//! spare-class path needs the class-keyed tables' decision lists in the
//! manifest and inline class tables that route spare ids correctly.

use super::bits::Bits;
use crate::model::{AddrSet, Cidr, Model, PeerMatch, Sel};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
// FxHash: these maps are hot and keyed by ids, nodes and short strings;
// nothing iterates them into output.
use rustc_hash::FxHashMap as HashMap;
use std::net::IpAddr;

pub type AtomId = u32;
pub type ClassId = u32;

/// Something a peer or subject test asks about an address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Atom {
    Sel(Sel),
    Set(AddrSet),
    /// The addresses of the endpoint of this name (identity for `self`).
    Endpoint(String),
}

/// What a policy rule's peer asks of the peer address's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerTest {
    Any,
    /// The class satisfies the atom.
    Atom(AtomId),
    /// The class satisfies the subject endpoint's identity atom.
    SelfEndpoint,
    /// The class lacks the endpoint atom (and satisfies the set atom).
    World(Option<AtomId>),
    /// `node`: the subject's node's set atom; lowering replaces it per
    /// subject ([`Classes::node_of`]), alone it matches no class.
    OwnNode,
}

impl std::fmt::Display for Atom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Atom::Sel(s) => write!(f, "selector {s}"),
            Atom::Set(s) => {
                let inc: Vec<String> = s.include.iter().map(|c| c.to_string()).collect();
                write!(f, "set {{{}}}", inc.join(", "))?;
                if !s.exclude.is_empty() {
                    let exc: Vec<String> = s.exclude.iter().map(|c| c.to_string()).collect();
                    write!(f, " except {{{}}}", exc.join(", "))?;
                }
                Ok(())
            }
            Atom::Endpoint(n) => write!(f, "endpoint {n}"),
        }
    }
}

/// One class-map entry: addresses whose longest matching entry is `cidr`
/// are in `class`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ClassEntry {
    pub cidr: Cidr,
    pub class: ClassId,
}

/// The partition of addresses into classes (see the module docs).
#[derive(Debug, Clone)]
pub struct Classes {
    /// Atoms in value order; index = [`AtomId`].
    pub atoms: Vec<Atom>,
    atom_index: BTreeMap<Atom, AtomId>,
    /// The atom `Sel::All`: "the address belongs to an endpoint".
    pub endpoint_atom: AtomId,
    /// The set atom of every declared node's addresses, when a `world`
    /// peer needs it (`world` excludes nodes; [`crate::nodes`]).
    pub nodes_atom: Option<AtomId>,
    /// Class → the atoms its addresses satisfy. Class 0 is empty.
    pub classes: Vec<Bits>,
    class_index: BTreeMap<Bits, ClassId>,
    /// The class map, sorted by prefix (IPv4 first), LPM semantics.
    pub entries: Vec<ClassEntry>,
    /// Per model endpoint (same index), the class of each of its addresses.
    pub endpoint_classes: Vec<Vec<(IpAddr, ClassId)>>,
    /// Atom → the set of classes that satisfy it.
    atom_classes: Vec<Bits>,
    lpm: Lpm<ClassId>,
    /// LPM over the set prefixes only, with their set-atom signatures.
    set_lpm: Lpm<Bits>,
    /// Per declared node (when a rule uses the `node` peer): the atom
    /// `node == NAME` of its endpoints and the set atom of its addresses.
    own_nodes: Vec<(AtomId, AtomId)>,
    /// Endpoint membership of addresses, for `self` (empty without one).
    pub same: super::same_endpoint::SameEndpoint,
}

/// Longest-prefix match by one hash lookup per prefix length in use.
#[derive(Debug, Clone)]
struct Lpm<T> {
    map: HashMap<(bool, u128, u8), T>,
    lens4: Vec<u8>,
    lens6: Vec<u8>,
}

fn key(addr: IpAddr) -> (bool, u128) {
    match addr {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

fn mask(v6: bool, x: u128, len: u8) -> u128 {
    let bits = if v6 { 128 } else { 32 };
    if len == 0 {
        0
    } else {
        x & (u128::MAX << (bits - u32::from(len)))
            & if v6 { u128::MAX } else { u128::from(u32::MAX) }
    }
}

impl<T> Lpm<T> {
    fn new() -> Lpm<T> {
        Lpm {
            map: HashMap::default(),
            lens4: Vec::new(),
            lens6: Vec::new(),
        }
    }

    fn insert(&mut self, c: Cidr, v: T) {
        let (v6, x) = key(c.addr);
        self.map.insert((v6, x, c.len), v);
        let lens = if v6 { &mut self.lens6 } else { &mut self.lens4 };
        if let Err(i) = lens.binary_search_by(|l| c.len.cmp(l)) {
            lens.insert(i, c.len);
        }
    }

    fn get(&self, addr: IpAddr) -> Option<&T> {
        let (v6, x) = key(addr);
        let lens = if v6 { &self.lens6 } else { &self.lens4 };
        lens.iter()
            .find_map(|&len| self.map.get(&(v6, mask(v6, x, len), len)))
    }
}

/// The atom a peer tests directly: none for `any` and `self` (whose atom
/// is the subject's identity) and `world` alone (the endpoint atom, always
/// present); the set for `world SET`.
fn peer_atom(p: &PeerMatch) -> Option<Atom> {
    match p {
        PeerMatch::Any | PeerMatch::SelfEndpoint | PeerMatch::World(None) | PeerMatch::OwnNode => {
            None
        }
        PeerMatch::Selector(s) => Some(Atom::Sel(s.clone())),
        PeerMatch::Set(s) | PeerMatch::World(Some(s)) => Some(Atom::Set(s.clone())),
    }
}

/// Every atom of the model, in value order, deduplicated.
pub fn collect_atoms(model: &Model) -> Vec<Atom> {
    let mut atoms = std::collections::BTreeSet::new();
    atoms.insert(Atom::Sel(Sel::All));
    for p in &model.policies {
        atoms.insert(Atom::Sel(p.applies_to.clone()));
        for rules in [&p.ingress, &p.egress].into_iter().flatten() {
            atoms.extend(rules.iter().filter_map(|r| peer_atom(&r.peer)));
        }
    }
    for s in &model.steers {
        for r in &s.rules {
            atoms.extend(peer_atom(&r.from));
            atoms.extend(peer_atom(&r.to));
        }
    }
    // `node`: a class tells its endpoints' node, and each node's
    // addresses are a set atom (crate::nodes).
    if crate::nodes::uses_own_node(model) {
        atoms.extend(
            crate::nodes::subject_atoms(model)
                .into_iter()
                .map(Atom::Sel),
        );
        atoms.extend(
            model
                .nodes
                .iter()
                .map(|n| Atom::Set(crate::nodes::node_set(n))),
        );
    }
    // `world` excludes the declared nodes' addresses: one set atom.
    atoms.extend(crate::nodes::world_nodes_atom(model).map(Atom::Set));
    // Named ports: a class tells the port its endpoints declare under each
    // name a rule uses (crate::named_ports).
    atoms.extend(
        crate::named_ports::rule_atoms(model)
            .into_iter()
            .map(Atom::Sel),
    );
    atoms.into_iter().collect()
}

/// Each exact set prefix with the atoms it is in: the atoms including it
/// or an enclosing prefix, less those excluding it or an enclosing one
/// (a pre-order walk, sorted by (addr, len), with a stack of enclosing
/// prefixes carrying cumulative include / exclude atoms).
fn set_signatures(atoms: &[Atom]) -> Vec<(Cidr, Bits)> {
    // Set prefixes: which atoms include / exclude each exact prefix.
    let mut prefixes: BTreeMap<Cidr, (Bits, Bits)> = BTreeMap::new();
    for (i, a) in atoms.iter().enumerate() {
        if let Atom::Set(s) = a {
            for c in &s.include {
                prefixes.entry(*c).or_default().0.insert(i);
            }
            for c in &s.exclude {
                prefixes.entry(*c).or_default().1.insert(i);
            }
        }
    }
    let mut set_sigs: Vec<(Cidr, Bits)> = Vec::with_capacity(prefixes.len());
    let mut stack: Vec<(Cidr, Bits, Bits)> = Vec::new();
    for (c, (inc, exc)) in &prefixes {
        while stack.last().is_some_and(|(p, _, _)| !p.covers(c)) {
            stack.pop();
        }
        let (ci, ce) = match stack.last() {
            Some((_, i, e)) => (i.or(inc), e.or(exc)),
            None => (inc.clone(), exc.clone()),
        };
        set_sigs.push((*c, ci.and_not(&ce)));
        stack.push((*c, ci, ce));
    }
    set_sigs
}

/// The class map's entries: `raw` without the entries equal to their
/// nearest enclosing entry (or to the implicit class 0 at the root).
fn minimal_entries(raw: BTreeMap<Cidr, ClassId>) -> Vec<ClassEntry> {
    let mut entries = Vec::with_capacity(raw.len());
    let mut stack: Vec<(Cidr, ClassId)> = Vec::new();
    for (c, id) in raw {
        while stack.last().is_some_and(|(p, _)| !p.covers(&c)) {
            stack.pop();
        }
        let parent = stack.last().map_or(0, |&(_, k)| k);
        if parent != id {
            entries.push(ClassEntry { cidr: c, class: id });
        }
        // The effective class below `c` is `id` either way.
        stack.push((c, id));
    }
    entries
}

impl Classes {
    pub fn build(model: &Model) -> Classes {
        let index = crate::endpoint_index::EndpointIndex::new(&model.endpoints);
        Classes::build_indexed(model, &index)
    }

    /// [`Classes::build`] with `model.endpoints`' label index made by the
    /// caller (the lowering shares one with the service table).
    pub fn build_indexed(
        model: &Model,
        index: &crate::endpoint_index::EndpointIndex<'_>,
    ) -> Classes {
        let atoms = collect_atoms(model);
        let atom_index: BTreeMap<Atom, AtomId> = atoms
            .iter()
            .enumerate()
            .map(|(i, a)| (a.clone(), i as AtomId))
            .collect();
        let endpoint_atom = atom_index[&Atom::Sel(Sel::All)];
        let nodes_atom = crate::nodes::world_nodes_atom(model).map(|s| atom_index[&Atom::Set(s)]);

        let set_sigs = set_signatures(&atoms);
        let mut set_lpm = Lpm::new();
        for (c, s) in &set_sigs {
            set_lpm.insert(*c, s.clone());
        }

        let mut classes = vec![Bits::new()];
        let mut class_index = BTreeMap::new();
        class_index.insert(Bits::new(), 0);
        let mut intern = |b: Bits| -> ClassId {
            if let Some(&c) = class_index.get(&b) {
                return c;
            }
            let c = classes.len() as ClassId;
            classes.push(b.clone());
            class_index.insert(b, c);
            c
        };

        // Raw entries: set prefixes, then endpoint host routes (which win).
        let mut raw: BTreeMap<Cidr, ClassId> = BTreeMap::new();
        for (c, s) in set_sigs {
            let id = intern(s);
            raw.insert(c, id);
        }
        let sel_atoms: Vec<(usize, &Sel)> = atoms
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match a {
                Atom::Sel(s) => Some((i, s)),
                Atom::Set(_) | Atom::Endpoint(_) => None,
            })
            .collect();
        // Selector bits per endpoint through the label index: each atom
        // touches only the endpoints it matches.
        let mut all_sel_bits = vec![Bits::new(); model.endpoints.len()];
        for &(i, s) in &sel_atoms {
            for e in index.select(s) {
                all_sel_bits[e as usize].insert(i);
            }
        }
        for (e, bits) in model.endpoints.iter().zip(all_sel_bits.iter_mut()) {
            if let Some(&i) = atom_index.get(&Atom::Endpoint(e.name.clone())) {
                bits.insert(i as usize);
            }
        }
        let mut endpoint_classes = Vec::with_capacity(model.endpoints.len());
        for (e, sel_bits) in model.endpoints.iter().zip(all_sel_bits) {
            let mut per = Vec::new();
            for &a in &e.addrs {
                let sig = match set_lpm.get(a) {
                    Some(s) => s.or(&sel_bits),
                    None => sel_bits.clone(),
                };
                let id = intern(sig);
                raw.insert(Cidr::host(a), id);
                per.push((a, id));
            }
            endpoint_classes.push(per);
        }

        let entries = minimal_entries(raw);
        let mut lpm = Lpm::new();
        for e in &entries {
            lpm.insert(e.cidr, e.class);
        }

        let mut atom_classes = vec![Bits::new(); atoms.len()];
        for (c, sig) in classes.iter().enumerate() {
            for a in sig.iter() {
                atom_classes[a].insert(c);
            }
        }
        let own_nodes = if crate::nodes::uses_own_node(model) {
            model
                .nodes
                .iter()
                .map(|n| {
                    let on = Atom::Sel(Sel::Eq(crate::nodes::KEY.into(), n.name.clone()));
                    let set = Atom::Set(crate::nodes::node_set(n));
                    (atom_index[&on], atom_index[&set])
                })
                .collect()
        } else {
            Vec::new()
        };
        Classes {
            atoms,
            atom_index,
            endpoint_atom,
            nodes_atom,
            classes,
            class_index,
            entries,
            endpoint_classes,
            atom_classes,
            lpm,
            set_lpm,
            own_nodes,
            same: super::same_endpoint::SameEndpoint::build(model),
        }
    }

    /// Classes given only as rows (class → the atoms it satisfies), for a
    /// graph read from its text form (`super::text`), which has no model:
    /// the atoms are stand-ins (`has(a0)`, `has(a1)`, … in id order, so
    /// value order is id order), and the class map is empty.
    pub fn from_rows(n_atoms: usize, rows: Vec<Bits>) -> Classes {
        let atoms: Vec<Atom> = (0..n_atoms)
            .map(|i| Atom::Sel(Sel::Has(format!("a{i:08}"))))
            .collect();
        let atom_index = atoms
            .iter()
            .enumerate()
            .map(|(i, a)| (a.clone(), i as AtomId))
            .collect();
        let class_index = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.clone(), i as ClassId))
            .collect();
        let mut atom_classes = vec![Bits::new(); n_atoms];
        for (c, sig) in rows.iter().enumerate() {
            for a in sig.iter().filter(|&a| a < n_atoms) {
                atom_classes[a].insert(c);
            }
        }
        Classes {
            atoms,
            atom_index,
            endpoint_atom: 0,
            nodes_atom: None,
            classes: rows,
            class_index,
            entries: Vec::new(),
            endpoint_classes: Vec::new(),
            atom_classes,
            lpm: Lpm::new(),
            set_lpm: Lpm::new(),
            own_nodes: Vec::new(),
            same: Default::default(),
        }
    }

    pub fn atom_id(&self, a: &Atom) -> Option<AtomId> {
        self.atom_index.get(a).copied()
    }

    /// The atom a steering peer tests, or None for `any`. Steering peers
    /// are never `self` or `world` (the checker refuses them, E0260 /
    /// E0261); policy rules ask [`Classes::peer_test`].
    pub fn peer_atom(&self, p: &PeerMatch) -> Option<AtomId> {
        debug_assert!(!matches!(
            p,
            PeerMatch::SelfEndpoint | PeerMatch::World(_) | PeerMatch::OwnNode
        ));
        peer_atom(p).map(|a| self.atom_index[&a])
    }

    /// What a policy rule's peer tests.
    pub fn peer_test(&self, p: &PeerMatch) -> PeerTest {
        match p {
            PeerMatch::Any => PeerTest::Any,
            PeerMatch::SelfEndpoint => PeerTest::SelfEndpoint,
            PeerMatch::OwnNode => PeerTest::OwnNode,
            PeerMatch::World(_) => PeerTest::World(peer_atom(p).map(|a| self.atom_index[&a])),
            PeerMatch::Selector(_) | PeerMatch::Set(_) => {
                PeerTest::Atom(self.atom_index[&peer_atom(p).expect("selector or set")])
            }
        }
    }

    /// The classes a policy rule's peer matches whatever the subject:
    /// `self` (a relation of the two addresses, not of one class) and an
    /// unlowered `node` match none here; the lowering decides them.
    pub fn peer_classes(&self, t: PeerTest) -> Bits {
        match t {
            PeerTest::Any => Bits::full(self.len()),
            PeerTest::Atom(a) => self.classes_with(a).clone(),
            PeerTest::SelfEndpoint | PeerTest::OwnNode => Bits::new(),
            PeerTest::World(set) => {
                let mut outside = Bits::full(self.len()).and_not(self.endpoint_classes_set());
                if let Some(n) = self.nodes_atom {
                    outside = outside.and_not(self.classes_with(n));
                }
                match set {
                    None => outside,
                    Some(a) => outside.and(self.classes_with(a)),
                }
            }
        }
    }

    /// The set atom of the node class `c`'s endpoints run on (the `node`
    /// peer of a subject in class `c`), if they name a declared node.
    pub fn node_of(&self, c: ClassId) -> Option<AtomId> {
        self.own_nodes
            .iter()
            .find(|&&(on, _)| self.has(c, on))
            .map(|&(_, set)| set)
    }

    /// Do `a` and `b` belong to the same endpoint (`self`)? Known for
    /// programs with a `self` rule ([`super::same_endpoint`]).
    pub fn same_endpoint(&self, a: IpAddr, b: IpAddr) -> bool {
        self.same.same(a, b)
    }

    pub fn len(&self) -> usize {
        self.classes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// The class of an address: longest-prefix match over [`Self::entries`],
    /// class 0 when nothing matches.
    pub fn classify(&self, addr: IpAddr) -> ClassId {
        self.lpm.get(addr).copied().unwrap_or(0)
    }

    /// The signature of an address computed from the definitions (what
    /// the runtime does for a new endpoint): `owner` is the name and
    /// labels of the endpoint owning the address, if any.
    pub fn signature(
        &self,
        addr: IpAddr,
        owner: Option<(&str, &BTreeMap<String, String>)>,
    ) -> Bits {
        let mut b = Bits::new();
        for (i, a) in self.atoms.iter().enumerate() {
            let hit = match a {
                Atom::Sel(s) => owner.is_some_and(|(_, l)| s.matches(l)),
                Atom::Set(s) => s.contains(addr),
                Atom::Endpoint(n) => owner.is_some_and(|(name, _)| name == n),
            };
            if hit {
                b.insert(i);
            }
        }
        b
    }

    /// The set atoms an address is in, by the class map's set prefixes (what
    /// the runtime's LPM lookup gives before a host route is inserted).
    pub fn set_signature(&self, addr: IpAddr) -> Bits {
        self.set_lpm.get(addr).cloned().unwrap_or_default()
    }

    pub fn class_of_signature(&self, sig: &Bits) -> Option<ClassId> {
        self.class_index.get(sig).copied()
    }

    /// Whether some IPv6 address has a class other than 0 (the class map
    /// has an IPv6 prefix). When not, every IPv6 address is class 0 (the
    /// empty signature): a back end may decide every address test of an
    /// IPv6 packet as the interpreter would, without looking it up.
    pub fn classifies_v6(&self) -> bool {
        !self.lpm.lens6.is_empty()
    }

    /// Does class `c` satisfy atom `a`?
    pub fn has(&self, c: ClassId, a: AtomId) -> bool {
        self.classes
            .get(c as usize)
            .is_some_and(|s| s.contains(a as usize))
    }

    /// The classes that satisfy atom `a`.
    pub fn classes_with(&self, a: AtomId) -> &Bits {
        &self.atom_classes[a as usize]
    }

    /// Classes whose addresses belong to endpoints.
    pub fn endpoint_classes_set(&self) -> &Bits {
        self.classes_with(self.endpoint_atom)
    }

    /// The same map as disjoint prefixes (class-0 space omitted): for back
    /// ends without longest-prefix priority. Computed by prefix splitting.
    pub fn disjoint_entries(&self) -> Vec<ClassEntry> {
        let mut out = Vec::new();
        // Children of each entry = maximal entries strictly inside it.
        let n = self.entries.len();
        let mut children: Vec<Vec<Cidr>> = vec![Vec::new(); n];
        let mut stack: Vec<usize> = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            while stack
                .last()
                .is_some_and(|&p| !self.entries[p].cidr.covers(&e.cidr))
            {
                stack.pop();
            }
            if let Some(&p) = stack.last() {
                children[p].push(e.cidr);
            }
            stack.push(i);
        }
        for (i, e) in self.entries.iter().enumerate() {
            if e.class == 0 {
                continue;
            }
            for c in subtract(e.cidr, &children[i]) {
                out.push(ClassEntry {
                    cidr: c,
                    class: e.class,
                });
            }
        }
        out.sort();
        out
    }
}

/// The prefixes covering `p` minus the union of `holes` (all inside `p`).
pub fn subtract(p: Cidr, holes: &[Cidr]) -> Vec<Cidr> {
    crate::cidrs::minus(&[p], holes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen;

    fn cidr(s: &str) -> Cidr {
        let (a, l) = s.split_once('/').unwrap();
        Cidr {
            addr: a.parse().unwrap(),
            len: l.parse().unwrap(),
        }
    }

    #[test]
    fn except_splits_into_covering_prefixes() {
        let v = subtract(cidr("10.0.0.0/8"), &[cidr("10.99.0.0/16")]);
        let text: Vec<String> = v.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            text,
            [
                "10.0.0.0/10",
                "10.64.0.0/11",
                "10.96.0.0/15",
                "10.98.0.0/16",
                "10.100.0.0/14",
                "10.104.0.0/13",
                "10.112.0.0/12",
                "10.128.0.0/9"
            ]
        );
    }

    /// LPM classification equals classification by signature, on
    /// addresses drawn from generated models (endpoints, set boundaries ± 1,
    /// random), and the disjoint form agrees with the LPM form.
    #[test]
    fn lpm_equals_signature() {
        for seed in 0..200 {
            let model = gen::model(seed);
            let cl = Classes::build(&model);
            let interp = crate::interp::Interp::new(&model);
            let mut rng = gen::Rng::new(seed ^ 0xC1A55);
            let addrs = gen::interesting_addrs(&model, &mut rng, 60);
            let disjoint = cl.disjoint_entries();
            for a in addrs {
                let owner = interp.endpoint_of(a).map(|e| (e.name.as_str(), &*e.labels));
                let sig = cl.signature(a, owner);
                let c = cl.classify(a);
                assert_eq!(
                    cl.classes[c as usize], sig,
                    "seed {seed}: {a} classified {c} but signature differs"
                );
                let d = disjoint
                    .iter()
                    .find(|e| e.cidr.contains(a))
                    .map_or(0, |e| e.class);
                assert_eq!(d, c, "seed {seed}: disjoint map disagrees at {a}");
            }
        }
    }

    #[test]
    fn class_zero_is_empty_and_endpoints_have_the_endpoint_bit() {
        let model = gen::model(7);
        let cl = Classes::build(&model);
        assert!(cl.classes[0].is_empty());
        for per in &cl.endpoint_classes {
            for &(_, c) in per {
                assert!(cl.has(c, cl.endpoint_atom));
            }
        }
    }
}
