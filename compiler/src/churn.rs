//! Endpoint churn at run time, computed purely: given a bundle's manifest,
//! the endpoints currently applied and a new inventory, which addresses
//! change class and which selector-backed services change backends. The
//! runtime (`weir endpoints`) only applies the result: LPM map entries or
//! ipset members, and service-map writes — never a recompile.
//!
//! Placement follows [`crate::graph::classes`] ("Endpoints that appear at
//! run time"): an address's signature is the set atoms that contain it,
//! the selector atoms its endpoint's labels match, and the endpoint atom
//! (`Sel::All`); its class is the compiled class with that signature.
//!
//! A signature no compiled class has is **refused** ("needs a
//! recompile"): adding a class at run time needs a row in every
//! class-keyed table of the program, and the bundle carries neither the
//! tables' atom decision lists nor a guarantee that inline class tables
//! send spare class ids to the right branch. The whole update is then
//! refused and the running state stays as it is.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::contract::Manifest;
use crate::ebpf::service::fill::Be;
use crate::graph::classes::{Atom, ClassId};
use crate::inventory::Inventory;
use crate::model::Sel;

/// An endpoint as the runtime records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default = "yes")]
    pub ready: bool,
    pub addrs: Vec<IpAddr>,
}

fn yes() -> bool {
    true
}

/// An inventory file as [`crate::inventory::parse_inventory`] reads it,
/// straight into [`EndpointRec`]s.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FastInventory {
    endpoints: Vec<FastEndpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FastEndpoint {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    addrs: Vec<IpAddr>,
    #[serde(default = "yes")]
    ready: bool,
}

impl From<FastEndpoint> for EndpointRec {
    fn from(e: FastEndpoint) -> EndpointRec {
        EndpointRec {
            name: e.name,
            labels: e.labels,
            ready: e.ready,
            addrs: e.addrs,
        }
    }
}

impl EndpointRec {
    /// The endpoints of an inventory file (docs/language.md §3) without
    /// locating anything in the text: `None` when the file has any
    /// problem [`crate::inventory::parse_inventory`] would report (then
    /// that gives the diagnostics). The same endpoints as
    /// `from_inventory(&parse_inventory(..).0)` otherwise.
    pub fn parse_inventory(text: &str) -> Option<Vec<EndpointRec>> {
        let raw: FastInventory = serde_json::from_str(text).ok()?;
        raw.endpoints
            .into_iter()
            .map(|e| crate::inventory::valid_name(&e.name).then(|| e.into()))
            .collect()
    }

    pub fn from_inventory(inv: &Inventory) -> Vec<EndpointRec> {
        inv.endpoints
            .iter()
            .map(|e| EndpointRec {
                name: e.name.clone(),
                labels: e.labels.clone(),
                ready: e.ready,
                addrs: e.addrs.clone(),
            })
            .collect()
    }
}

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
    /// with `labels` (or by none).
    pub fn signature(&self, addr: IpAddr, labels: Option<&BTreeMap<String, String>>) -> Vec<u32> {
        self.atoms
            .iter()
            .enumerate()
            .filter(|(_, a)| match a {
                Atom::Sel(s) => labels.is_some_and(|l| s.matches(l)),
                Atom::Set(s) => s.contains(addr),
            })
            .map(|(i, _)| i as u32)
            .collect()
    }

    pub fn class_of(&self, sig: &[u32]) -> Option<ClassId> {
        self.index.get(sig).copied()
    }

    /// The class of an endpoint address with `labels`.
    pub fn place(&self, addr: IpAddr, labels: &BTreeMap<String, String>) -> Placement {
        let sig = self.signature(addr, Some(labels));
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

/// The endpoints a manifest was compiled with (`endpoints`).
pub fn manifest_endpoints(m: &Manifest) -> Vec<EndpointRec> {
    m.endpoints
        .iter()
        .map(|e| EndpointRec {
            name: e.name.clone(),
            labels: e.labels.clone(),
            ready: e.ready,
            addrs: e.addrs.iter().map(|a| a.addr).collect(),
        })
        .collect()
}

/// The manifest's endpoints split by origin: (from an inventory file,
/// declared in the source). `weir endpoints` replaces only the first:
/// a runtime inventory is the inventory file's new version, and the
/// source's `endpoint` statements stay until the next compile.
pub fn split_declared(m: &Manifest) -> (Vec<EndpointRec>, Vec<EndpointRec>) {
    let (declared, inv): (Vec<_>, Vec<_>) = manifest_endpoints(m)
        .into_iter()
        .zip(&m.endpoints)
        .partition(|(_, e)| e.declared);
    (
        inv.into_iter().map(|(r, _)| r).collect(),
        declared.into_iter().map(|(r, _)| r).collect(),
    )
}

/// Source-declared endpoints out of an update: `old` loses every
/// endpoint named like a declared one (an inventory that leaves it out
/// does not remove it), `new` loses those identical to a declared one (an
/// inventory may list it unchanged). Refused: a new endpoint with a
/// declared endpoint's name but other labels, readiness or addresses, or
/// with a declared endpoint's address.
pub fn filter_declared(
    declared: &[EndpointRec],
    old: Vec<EndpointRec>,
    new: Vec<EndpointRec>,
) -> (Vec<EndpointRec>, Vec<EndpointRec>, Vec<String>) {
    if declared.is_empty() {
        return (old, new, Vec::new());
    }
    let names: HashMap<&str, &EndpointRec> =
        declared.iter().map(|e| (e.name.as_str(), e)).collect();
    let addrs: HashMap<IpAddr, &str> = declared
        .iter()
        .flat_map(|e| e.addrs.iter().map(move |a| (*a, e.name.as_str())))
        .collect();
    let old = old
        .into_iter()
        .filter(|e| !names.contains_key(e.name.as_str()))
        .collect();
    let mut refused = Vec::new();
    let mut kept = Vec::with_capacity(new.len());
    for e in new {
        match names.get(e.name.as_str()) {
            Some(d) if **d == e => continue,
            Some(_) => refused.push(format!(
                "endpoint `{}` is declared in the source; an inventory cannot change it (change the source and recompile)",
                e.name
            )),
            None => {}
        }
        for a in &e.addrs {
            if let Some(owner) = addrs.get(a).filter(|o| **o != e.name) {
                refused.push(format!(
                    "address {a} of `{}` belongs to `{owner}`, declared in the source",
                    e.name
                ));
            }
        }
        kept.push(e);
    }
    (old, kept, refused)
}

/// An inventory update in endpoint names, for `weir endpoints --dry-run`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NamePlan {
    /// Endpoints that appear.
    pub added: Vec<EndpointRec>,
    /// Endpoints that disappear.
    pub removed: Vec<EndpointRec>,
    /// Endpoints whose labels, readiness or addresses change: (before,
    /// after).
    pub changed: Vec<(EndpointRec, EndpointRec)>,
}

/// [`NamePlan`] of the endpoints that differ (`old`, `new`: the changed
/// endpoints' versions, or two whole inventories).
pub fn name_plan(old: &[EndpointRec], new: &[EndpointRec]) -> NamePlan {
    let before: BTreeMap<&str, &EndpointRec> = old.iter().map(|e| (e.name.as_str(), e)).collect();
    let after: BTreeMap<&str, &EndpointRec> = new.iter().map(|e| (e.name.as_str(), e)).collect();
    let mut p = NamePlan::default();
    for (name, e) in &after {
        match before.get(name) {
            None => p.added.push((*e).clone()),
            Some(b) if b != e => p.changed.push(((*b).clone(), (*e).clone())),
            Some(_) => {}
        }
    }
    for (name, e) in &before {
        if !after.contains_key(name) {
            p.removed.push((*e).clone());
        }
    }
    p
}

/// A selector-backed service of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectorService {
    /// Index in the manifest's (and `LbState`'s) service list.
    pub index: usize,
    pub name: String,
    pub selector: Sel,
    pub port: u16,
    /// Address families (4 / 6) of its frontends.
    pub families: BTreeSet<u8>,
    /// Backends compiled into the bundle, per family.
    pub compiled: BTreeMap<u8, Vec<Be>>,
}

fn fam(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        4
    } else {
        6
    }
}

/// The manifest's selector-backed services (`services[].backend_selector`).
pub fn selector_services(m: &Manifest) -> Vec<SelectorService> {
    let mut out = Vec::new();
    for s in &m.services {
        let Some(bs) = &s.backend_selector else {
            continue;
        };
        let mut families = BTreeSet::new();
        let mut compiled: BTreeMap<u8, Vec<Be>> = BTreeMap::new();
        for f in &s.frontends {
            let family = fam(f.frontend.addr.ip());
            families.insert(family);
            let bes: Vec<Be> = f
                .backends
                .iter()
                .map(|b| Be {
                    addr: b.addr.ip(),
                    port: b.addr.port(),
                    weight: b.weight,
                })
                .collect();
            compiled.entry(family).or_insert(bes);
        }
        out.push(SelectorService {
            index: s.index,
            name: s.name.clone(),
            selector: bs.selector.clone(),
            port: bs.port,
            families,
            compiled,
        });
    }
    out
}

/// The backends a selector service has over `endpoints` for one family,
/// exactly as the interpreter chooses candidates (ready, matching, sorted).
pub fn backends_for(s: &SelectorService, family: u8, endpoints: &[EndpointRec]) -> Vec<Be> {
    let mut v: Vec<Be> = endpoints
        .iter()
        .filter(|e| e.ready && s.selector.matches(&e.labels))
        .flat_map(|e| {
            e.addrs.iter().filter(|a| fam(**a) == family).map(|a| Be {
                addr: *a,
                port: s.port,
                weight: 1,
            })
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// [`backends_for`] through an [`EndpointIndex`](crate::endpoint_index::EndpointIndex)
/// of `endpoints` (built with `from_labels` over the same slice): the same
/// result without evaluating the selector on every endpoint.
pub fn backends_indexed(
    s: &SelectorService,
    family: u8,
    endpoints: &[EndpointRec],
    index: &crate::endpoint_index::EndpointIndex<'_>,
) -> Vec<Be> {
    let mut v: Vec<Be> = index
        .select(&s.selector)
        .into_iter()
        .map(|i| &endpoints[i as usize])
        .filter(|e| e.ready)
        .flat_map(|e| {
            e.addrs.iter().filter(|a| fam(**a) == family).map(|a| Be {
                addr: *a,
                port: s.port,
                weight: 1,
            })
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The endpoints that differ between `old` and `new` (by name: present in
/// one only, or with other labels, readiness or addresses), each side in
/// its inventory's order. `None` when a name or an address appears twice
/// in either inventory (then only the full comparison is exact).
pub fn changed_endpoints(
    old: &[EndpointRec],
    new: &[EndpointRec],
) -> Option<(Vec<EndpointRec>, Vec<EndpointRec>)> {
    if !unique(old) || !unique(new) {
        return None;
    }
    let by_name: HashMap<&str, &EndpointRec> = old.iter().map(|e| (e.name.as_str(), e)).collect();
    let same: std::collections::HashSet<&str> = new
        .iter()
        .filter(|e| by_name.get(e.name.as_str()).is_some_and(|o| *o == *e))
        .map(|e| e.name.as_str())
        .collect();
    let pick = |eps: &[EndpointRec]| -> Vec<EndpointRec> {
        eps.iter()
            .filter(|e| !same.contains(e.name.as_str()))
            .cloned()
            .collect()
    };
    Some((pick(old), pick(new)))
}

/// [`plan`] when `old` was accepted before against the same view (every
/// address placed in a compiled class, no name or address twice — the
/// inventory recorded after an update, or the bundle's compiled one):
/// endpoints identical in both inventories keep their addresses and
/// classes, so only the others are placed. Falls back to [`plan`] when a
/// name or address appears twice in either inventory.
pub fn plan_update(view: &ClassView, old: &[EndpointRec], new: &[EndpointRec]) -> Plan {
    match changed_endpoints(old, new) {
        Some((o, n)) => plan(view, &o, &n),
        None => plan(view, old, new),
    }
}

/// One address whose class changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddrChange {
    pub addr: IpAddr,
    /// The endpoint that owns it now (or owned it, for a removal).
    pub endpoint: String,
    /// Class before (`None`: not an endpoint address).
    pub old: Option<ClassId>,
    /// Class after (`None`: no longer an endpoint address).
    pub new: Option<ClassId>,
    /// Class of the address without an endpoint (its set atoms): what
    /// the class map must give after a removal.
    pub base: ClassId,
}

/// What an inventory update changes.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Addresses that appear, disappear or change class (sorted).
    pub changes: Vec<AddrChange>,
    /// Reasons the update cannot be applied without a recompile or is
    /// malformed; when non-empty nothing may be applied.
    pub refused: Vec<String>,
}

/// Compares the applied endpoints with the new inventory.
pub fn plan(view: &ClassView, old: &[EndpointRec], new: &[EndpointRec]) -> Plan {
    let mut refused = Vec::new();
    let index = |eps: &[EndpointRec], refused: &mut Vec<String>, check: bool| {
        let mut m: BTreeMap<IpAddr, (String, ClassId)> = BTreeMap::new();
        let mut names = BTreeSet::new();
        for e in eps {
            if check && !names.insert(e.name.clone()) {
                refused.push(format!("endpoint `{}` appears twice", e.name));
            }
            for &a in &e.addrs {
                let class = match view.place(a, &e.labels) {
                    Placement::Existing(c) => c,
                    Placement::New(sig) => {
                        if check {
                            refused.push(format!(
                                "endpoint `{}` needs a recompile: address {a} with labels {} satisfies a combination of selectors and sets that no compiled class has ({}); classes cannot be added at run time",
                                e.name,
                                serde_json::to_string(&e.labels).unwrap_or_default(),
                                view.describe(&sig)
                            ));
                        }
                        continue;
                    }
                };
                if let Some((other, _)) = m.get(&a) {
                    if check && other != &e.name {
                        refused.push(format!(
                            "address {a} belongs to both `{other}` and `{}`",
                            e.name
                        ));
                    }
                    continue;
                }
                m.insert(a, (e.name.clone(), class));
            }
        }
        m
    };
    let before = index(old, &mut refused, false);
    let after = index(new, &mut refused, true);
    let mut changes = Vec::new();
    let addrs: BTreeSet<IpAddr> = before.keys().chain(after.keys()).copied().collect();
    for a in addrs {
        let (b, n) = (before.get(&a), after.get(&a));
        let (old_c, new_c) = (b.map(|x| x.1), n.map(|x| x.1));
        if old_c == new_c {
            continue;
        }
        changes.push(AddrChange {
            addr: a,
            endpoint: n.or(b).map(|x| x.0.clone()).unwrap_or_default(),
            old: old_c,
            new: new_c,
            base: view.base_class(a),
        });
    }
    Plan { changes, refused }
}

/// A fast, non-keyed hasher (FxHash) for the comparisons of whole
/// inventories: the keys are the operator's own names and addresses.
#[derive(Default, Clone, Copy)]
struct Fx(u64);

impl std::hash::Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        let mut last = [0u8; 8];
        let rest = chunks.remainder();
        if !rest.is_empty() {
            last[..rest.len()].copy_from_slice(rest);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(last)).wrapping_mul(K);
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, i: usize) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn finish(&self) -> u64 {
        // The product's high bits are the well mixed ones; hash tables
        // index by the low bits.
        self.0.rotate_left(26)
    }
}

type FxBuild = std::hash::BuildHasherDefault<Fx>;

/// Does every name and every address appear once in `eps`?
pub fn unique(eps: &[EndpointRec]) -> bool {
    let mut names: std::collections::HashSet<&str, FxBuild> =
        std::collections::HashSet::with_capacity_and_hasher(eps.len(), FxBuild::default());
    let mut addrs: std::collections::HashSet<IpAddr, FxBuild> =
        std::collections::HashSet::with_capacity_and_hasher(eps.len(), FxBuild::default());
    eps.iter()
        .all(|e| names.insert(e.name.as_str()) && e.addrs.iter().all(|a| addrs.insert(*a)))
}

/// The endpoints in force as the runtime records them: per endpoint its
/// JSON text as the inventory gave it (with the text between it and the
/// previous one), its name and its addresses, then what followed the
/// last one. A new inventory is compared with them text to text
/// ([`diff_text`]): endpoints whose text did not change are neither
/// parsed nor decoded, and the unchanged start and end of the file are
/// not even scanned.
///
/// Layout: the trailer (a `u32` length and UTF-8), then the entries, each
/// a little-endian `u32` length, then: the gap before the object, the
/// object's text, the name (each a `u32` length + UTF-8), the addresses
/// (`u32` count, then `4` + 4 bytes or `6` + 16 bytes each).
pub mod entries {
    use super::{EndpointRec, FastEndpoint};
    use std::net::IpAddr;

    const BAD: &str = "malformed endpoint record";

    fn put_u32(buf: &mut Vec<u8>, v: usize) {
        buf.extend_from_slice(&(v as u32).to_le_bytes());
    }

    fn put_str(buf: &mut Vec<u8>, s: &str) {
        put_u32(buf, s.len());
        buf.extend_from_slice(s.as_bytes());
    }

    /// Starts a section with the text after the last object.
    pub fn start(buf: &mut Vec<u8>, trailer: &str) {
        put_str(buf, trailer);
    }

    /// Appends the entry of `e`: its object's text `text`, preceded in the
    /// file by `gap`.
    pub fn push(buf: &mut Vec<u8>, gap: &str, text: &str, e: &EndpointRec) {
        let start = buf.len();
        put_u32(buf, 0);
        put_str(buf, gap);
        put_str(buf, text);
        put_str(buf, &e.name);
        put_u32(buf, e.addrs.len());
        for a in &e.addrs {
            match a {
                IpAddr::V4(a) => {
                    buf.push(4);
                    buf.extend_from_slice(&a.octets());
                }
                IpAddr::V6(a) => {
                    buf.push(6);
                    buf.extend_from_slice(&a.octets());
                }
            }
        }
        let len = (buf.len() - start - 4) as u32;
        buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// The section of `eps` in the inventory file text of
    /// [`super::inventory_text`].
    pub fn encode_all(eps: &[EndpointRec]) -> Vec<u8> {
        let text = super::inventory_text(eps);
        let ranges = super::scan_ranges(text.as_bytes()).expect("own JSON");
        from_ranges(&text, &ranges, eps)
    }

    /// The section of `eps`, whose objects are at `ranges` of `text`.
    pub fn from_ranges(text: &str, ranges: &[(usize, usize)], eps: &[EndpointRec]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(text.len() + eps.len() * 40);
        let last = ranges.last().map_or(0, |r| r.1);
        start(&mut buf, &text[last..]);
        let mut prev = 0;
        for (&(s, e), ep) in ranges.iter().zip(eps) {
            push(&mut buf, &text[prev..s], &text[s..e], ep);
            prev = e;
        }
        buf
    }

    /// One entry, borrowed from the record.
    #[derive(Debug, Clone, Copy)]
    pub struct Entry<'a> {
        /// The whole entry (length prefix included): copied as it is.
        pub raw: &'a [u8],
        pub gap: &'a str,
        pub text: &'a str,
        pub name: &'a str,
        addrs: &'a [u8],
    }

    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        let (x, rest) = b.split_at_checked(n).ok_or(BAD)?;
        *b = rest;
        Ok(x)
    }

    fn u32(b: &mut &[u8]) -> Result<usize, String> {
        Ok(u32::from_le_bytes(take(b, 4)?.try_into().expect("4 bytes")) as usize)
    }

    fn str<'a>(b: &mut &'a [u8]) -> Result<&'a str, String> {
        let n = u32(b)?;
        std::str::from_utf8(take(b, n)?).map_err(|_| BAD.to_string())
    }

    /// The trailer and the entries of a section, in order.
    pub fn split(mut bytes: &[u8]) -> Result<(&str, Vec<Entry<'_>>), String> {
        let trailer = str(&mut bytes)?;
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let all = bytes;
            let n = u32(&mut bytes)?;
            let mut body = take(&mut bytes, n)?;
            let gap = str(&mut body)?;
            let text = str(&mut body)?;
            let name = str(&mut body)?;
            out.push(Entry {
                raw: &all[..4 + n],
                gap,
                text,
                name,
                addrs: body,
            });
        }
        Ok((trailer, out))
    }

    impl Entry<'_> {
        /// Is one of the addresses `pred`?
        pub fn any_addr(&self, mut pred: impl FnMut(IpAddr) -> bool) -> Result<bool, String> {
            let mut b = self.addrs;
            let n = u32(&mut b)?;
            let mut hit = false;
            for _ in 0..n {
                let a = match take(&mut b, 1)?[0] {
                    4 => IpAddr::from(<[u8; 4]>::try_from(take(&mut b, 4)?).expect("4 bytes")),
                    6 => IpAddr::from(<[u8; 16]>::try_from(take(&mut b, 16)?).expect("16")),
                    _ => return Err(BAD.into()),
                };
                hit |= pred(a);
            }
            Ok(hit)
        }

        /// The endpoint (its text parsed).
        pub fn decode(&self) -> Result<EndpointRec, String> {
            let e: FastEndpoint =
                serde_json::from_str(self.text).map_err(|e| format!("{BAD}: {e}"))?;
            Ok(e.into())
        }
    }
}

fn ws(b: &[u8], i: &mut usize) {
    while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\n' | b'\r') {
        *i += 1;
    }
}

fn lit(b: &[u8], i: &mut usize, s: &[u8]) -> Option<()> {
    b.get(*i..*i + s.len()).filter(|x| *x == s)?;
    *i += s.len();
    Some(())
}

/// The end of the JSON object (or array) at `i`: brackets balanced
/// outside strings. The object itself is not checked.
fn object_end(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_str = false;
    loop {
        let c = *b.get(i)?;
        i += 1;
        if in_str {
            match c {
                b'\\' => i += 1,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
}

/// Scans the endpoint objects from `i`, just after an object (or after
/// the list's `[` when `first`), to the end of the document, or until
/// `stop` (a position just after an object, where the rest is known).
/// The objects' ranges, and whether it stopped at `stop`.
fn scan_from(
    b: &[u8],
    mut i: usize,
    mut first: bool,
    stop: Option<usize>,
) -> Option<(Vec<(usize, usize)>, bool)> {
    let mut out = Vec::new();
    loop {
        if stop == Some(i) {
            return Some((out, true));
        }
        ws(b, &mut i);
        if b.get(i) == Some(&b']') {
            if stop.is_some() {
                return None;
            }
            i += 1;
            ws(b, &mut i);
            lit(b, &mut i, b"}")?;
            ws(b, &mut i);
            return (i == b.len()).then_some((out, false));
        }
        if !first {
            lit(b, &mut i, b",")?;
            ws(b, &mut i);
        }
        if b.get(i) != Some(&b'{') {
            return None;
        }
        let end = object_end(b, i)?;
        out.push((i, end));
        i = end;
        first = false;
        if stop.is_some_and(|s| i > s) {
            return None;
        }
    }
}

/// The ranges of the endpoint objects of an inventory file shaped
/// plainly (`{"endpoints": [ {…}, … ]}`, whitespace anywhere, the key
/// without escapes); `None` for anything else. Only the structure is
/// checked: the objects are not parsed.
fn scan_ranges(b: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut i = 0;
    ws(b, &mut i);
    lit(b, &mut i, b"{")?;
    ws(b, &mut i);
    lit(b, &mut i, b"\"endpoints\"")?;
    ws(b, &mut i);
    lit(b, &mut i, b":")?;
    ws(b, &mut i);
    lit(b, &mut i, b"[")?;
    scan_from(b, i, true, None).map(|(r, _)| r)
}

/// The texts of the endpoint objects of an inventory file shaped plainly
/// (see [`diff_text`]), in order; `None` for anything else.
pub fn scan_inventory(text: &str) -> Option<Vec<&str>> {
    Some(
        scan_ranges(text.as_bytes())?
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect(),
    )
}

/// A new inventory (text) compared with the recorded [`entries`].
#[derive(Debug, Clone)]
pub struct TextDiff {
    /// The entries of the new inventory: what to record once applied.
    pub entries: Vec<u8>,
    /// The new inventory has every name and address once.
    pub unique: bool,
    /// The endpoints that differ (by name, as [`changed_endpoints`]):
    /// the recorded versions and the new ones; the others are
    /// unchanged. `None` when a name or an address appears twice in
    /// either inventory: then `full` holds the new inventory, and only
    /// [`plan`] over both whole inventories is exact.
    pub changed: Option<(Vec<EndpointRec>, Vec<EndpointRec>)>,
    /// The whole new inventory, when it was parsed.
    pub full: Option<Vec<EndpointRec>>,
}

/// Why [`diff_text`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffError {
    /// The inventory has a problem: [`crate::inventory::parse_inventory`]
    /// reports it.
    Inventory,
    /// The record is unreadable.
    Record(String),
}

/// Compares an inventory file's text with the recorded entries `old`
/// (`old_unique`: every name and address appears once in them). The
/// start and the end of the file that equal the recorded text are taken
/// as they are; in between, objects are found by their brackets, and
/// those whose text equals a recorded entry's of the same name are
/// unchanged; the others are parsed and checked as
/// [`crate::inventory::parse_inventory`] checks them. Anything unusual
/// (a file not shaped `{"endpoints": [ {…}, … ]}`, a name or address
/// twice) is parsed whole.
pub fn diff_text(old: &[u8], old_unique: bool, text: &str) -> Result<TextDiff, DiffError> {
    let (trailer, olds) = entries::split(old).map_err(DiffError::Record)?;
    if !old_unique {
        return diff_full(text);
    }
    let b = text.as_bytes();
    // The unchanged start: whole recorded entries, gap and object.
    let (mut pos, mut prefix) = (0, 0);
    for o in &olds {
        let rest = &b[pos..];
        if rest.starts_with(o.gap.as_bytes()) && rest[o.gap.len()..].starts_with(o.text.as_bytes())
        {
            pos += o.gap.len() + o.text.len();
            prefix += 1;
        } else {
            break;
        }
    }
    // The unchanged end: the trailer, then whole entries (not when the
    // start changed: the first entry's gap holds the list's start).
    let trailer_kept =
        prefix > 0 && b.len() >= pos + trailer.len() && b.ends_with(trailer.as_bytes());
    let mut end = b.len() - if trailer_kept { trailer.len() } else { 0 };
    let mut suffix_from = olds.len();
    if trailer_kept {
        while suffix_from > prefix {
            let o = &olds[suffix_from - 1];
            let n = o.gap.len() + o.text.len();
            if end >= pos + n
                && b[..end].ends_with(o.text.as_bytes())
                && b[..end - o.text.len()].ends_with(o.gap.as_bytes())
            {
                end -= n;
                suffix_from -= 1;
            } else {
                break;
            }
        }
    }
    let ranges = if prefix == 0 {
        scan_ranges(b)
    } else {
        scan_from(b, pos, false, trailer_kept.then_some(end)).map(|(r, _)| r)
    };
    let Some(ranges) = ranges else {
        return diff_full(text);
    };
    let parse = |t: &str| -> Result<EndpointRec, DiffError> {
        let e: FastEndpoint = serde_json::from_str(t).map_err(|_| DiffError::Inventory)?;
        if !crate::inventory::valid_name(&e.name) {
            return Err(DiffError::Inventory);
        }
        Ok(e.into())
    };
    let old_mid = prefix..suffix_from;
    // Recorded entries still in force unchanged.
    let mut kept = vec![false; olds.len()];
    kept[..prefix].fill(true);
    kept[suffix_from..].fill(true);
    let mut by_name: HashMap<&str, usize, FxBuild> =
        HashMap::with_capacity_and_hasher(old_mid.len(), FxBuild::default());
    for j in old_mid.clone() {
        by_name.insert(olds[j].name, j);
    }
    // The new middle: parsed; (gap, text, endpoint).
    let mut mid: Vec<(&str, &str, EndpointRec)> = Vec::with_capacity(ranges.len());
    let mut new_changed = Vec::new();
    let mut prev = pos;
    for &(s, e) in &ranges {
        let (gap, obj) = (&text[prev..s], &text[s..e]);
        prev = e;
        let ep = parse(obj)?;
        let same = match by_name.get(ep.name.as_str()) {
            Some(&j) if !kept[j] => {
                let same =
                    olds[j].text == obj || olds[j].decode().map_err(DiffError::Record)? == ep;
                kept[j] = same;
                same
            }
            _ => false,
        };
        if !same {
            new_changed.push(ep.clone());
        }
        mid.push((gap, obj, ep));
    }
    let mut old_changed = Vec::new();
    for j in old_mid {
        if !kept[j] {
            old_changed.push(olds[j].decode().map_err(DiffError::Record)?);
        }
    }
    // Every name and address once: the changed endpoints among
    // themselves, and against the unchanged ones.
    let mut unique = self::unique(&new_changed);
    if unique && !new_changed.is_empty() {
        let mut names: std::collections::HashSet<&str, FxBuild> = Default::default();
        let mut addrs: std::collections::HashSet<IpAddr, FxBuild> = Default::default();
        for e in &new_changed {
            names.insert(e.name.as_str());
            addrs.extend(e.addrs.iter().copied());
        }
        for (j, o) in olds.iter().enumerate() {
            if kept[j]
                && (names.contains(o.name)
                    || o.any_addr(|a| addrs.contains(&a))
                        .map_err(DiffError::Record)?)
            {
                unique = false;
                break;
            }
        }
    }
    if !unique {
        return diff_full(text);
    }
    let mut out = Vec::with_capacity(old.len() + 256);
    if trailer_kept {
        entries::start(&mut out, trailer);
    } else {
        entries::start(&mut out, &text[prev..]);
    }
    for o in &olds[..prefix] {
        out.extend_from_slice(o.raw);
    }
    for (gap, obj, e) in &mid {
        entries::push(&mut out, gap, obj, e);
    }
    for o in &olds[suffix_from..] {
        out.extend_from_slice(o.raw);
    }
    Ok(TextDiff {
        entries: out,
        unique: true,
        changed: Some((old_changed, new_changed)),
        full: None,
    })
}

/// [`diff_text`] by parsing the whole inventory.
fn diff_full(text: &str) -> Result<TextDiff, DiffError> {
    let all = EndpointRec::parse_inventory(text).ok_or(DiffError::Inventory)?;
    let entries = match scan_ranges(text.as_bytes()).filter(|r| r.len() == all.len()) {
        Some(r) => entries::from_ranges(text, &r, &all),
        None => entries::encode_all(&all),
    };
    Ok(TextDiff {
        entries,
        unique: unique(&all),
        changed: None,
        full: Some(all),
    })
}

/// The inventory file text of `eps` (the records' own JSON).
pub fn inventory_text(eps: &[EndpointRec]) -> String {
    #[derive(Serialize)]
    struct Inv<'a> {
        endpoints: &'a [EndpointRec],
    }
    serde_json::to_string(&Inv { endpoints: eps }).expect("JSON")
}

/// The backends of `s` for `family` after a change, from those it had
/// (`have`, over the recorded endpoints) and the changed endpoints (both
/// versions): exact when every address appears once in each inventory
/// (an address of a changed endpoint belongs to no other).
pub fn backends_delta(
    s: &SelectorService,
    family: u8,
    have: &[Be],
    old_changed: &[EndpointRec],
    new_changed: &[EndpointRec],
) -> Vec<Be> {
    let gone: BTreeSet<IpAddr> = old_changed
        .iter()
        .flat_map(|e| e.addrs.iter().copied())
        .collect();
    let mut v: Vec<Be> = have
        .iter()
        .filter(|b| !gone.contains(&b.addr))
        .cloned()
        .collect();
    v.extend(backends_for(s, family, new_changed));
    v.sort();
    v.dedup();
    v
}

/// The backends of `s` over `endpoints` for `family`: a scan for a few
/// services, [`backends_indexed`] through `index` (built on first use)
/// for many.
pub fn backends_auto<'a>(
    s: &SelectorService,
    family: u8,
    endpoints: &'a [EndpointRec],
    index: &mut Option<crate::endpoint_index::EndpointIndex<'a>>,
    many: bool,
) -> Vec<Be> {
    if !many && index.is_none() {
        return backends_for(s, family, endpoints);
    }
    let index = index.get_or_insert_with(|| {
        crate::endpoint_index::EndpointIndex::from_labels(endpoints.iter().map(|e| &e.labels))
    });
    backends_indexed(s, family, endpoints, index)
}

/// The selector-backed services of a bundle in a form the runtime reads
/// fast: each service's selector in a compact binary form that is
/// evaluated without decoding it ([`selcode`]), and the service itself
/// as JSON, decoded only for the services an update affects.
///
/// Layout: `u32` count, then per service a `u32` length and the encoded
/// selector, a `u32` length and the JSON of the [`SelectorService`].
pub mod service_table {
    use super::{selcode, EndpointRec, SelectorService};

    const BAD: &str = "malformed service table";

    fn put(buf: &mut Vec<u8>, b: &[u8]) {
        buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
        buf.extend_from_slice(b);
    }

    pub fn encode(services: &[SelectorService]) -> Vec<u8> {
        let mut buf = Vec::new();
        buf.extend_from_slice(&(services.len() as u32).to_le_bytes());
        let mut sel = Vec::new();
        for s in services {
            sel.clear();
            selcode::encode(&mut sel, &s.selector);
            put(&mut buf, &sel);
            put(&mut buf, &serde_json::to_vec(s).expect("JSON"));
        }
        buf
    }

    fn take<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], String> {
        let (n, rest) = b.split_at_checked(4).ok_or(BAD)?;
        let n = u32::from_le_bytes(n.try_into().expect("4 bytes")) as usize;
        let (x, rest) = rest.split_at_checked(n).ok_or(BAD)?;
        *b = rest;
        Ok(x)
    }

    /// The services for which `keep(selector)` holds, decoded.
    fn select(
        mut b: &[u8],
        keep: impl Fn(&[u8]) -> Result<bool, String>,
    ) -> Result<Vec<SelectorService>, String> {
        let n = u32::from_le_bytes(b.get(..4).ok_or(BAD)?.try_into().expect("4 bytes"));
        b = &b[4..];
        let mut out = Vec::new();
        for _ in 0..n {
            let sel = take(&mut b)?;
            let json = take(&mut b)?;
            if keep(sel)? {
                out.push(serde_json::from_slice(json).map_err(|e| format!("{BAD}: {e}"))?);
            }
        }
        Ok(out)
    }

    /// Every service.
    pub fn decode_all(b: &[u8]) -> Result<Vec<SelectorService>, String> {
        select(b, |_| Ok(true))
    }

    /// The services whose selector matches one of `eps`: those whose
    /// backends may change when `eps` (both versions of the changed
    /// endpoints) change.
    pub fn affected(b: &[u8], eps: &[EndpointRec]) -> Result<Vec<SelectorService>, String> {
        select(b, |sel| {
            for e in eps {
                if selcode::matches(sel, &e.labels)? {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }
}

/// Label selectors ([`Sel`]) in a compact binary form, evaluated in
/// place: a tag byte, then strings as a `u32` length and UTF-8, sets as
/// a `u32` count and strings, operands in order.
pub mod selcode {
    use crate::model::Sel;
    use std::collections::BTreeMap;

    const BAD: &str = "malformed selector";

    fn put_str(buf: &mut Vec<u8>, s: &str) {
        buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
        buf.extend_from_slice(s.as_bytes());
    }

    pub fn encode(buf: &mut Vec<u8>, s: &Sel) {
        match s {
            Sel::All => buf.push(0),
            Sel::Eq(k, v) | Sel::Ne(k, v) => {
                buf.push(if matches!(s, Sel::Eq(..)) { 1 } else { 2 });
                put_str(buf, k);
                put_str(buf, v);
            }
            Sel::In(k, vs) | Sel::NotIn(k, vs) => {
                buf.push(if matches!(s, Sel::In(..)) { 3 } else { 4 });
                put_str(buf, k);
                buf.extend_from_slice(&(vs.len() as u32).to_le_bytes());
                for v in vs {
                    put_str(buf, v);
                }
            }
            Sel::Has(k) => {
                buf.push(5);
                put_str(buf, k);
            }
            Sel::Not(e) => {
                buf.push(6);
                encode(buf, e);
            }
            Sel::And(a, b) | Sel::Or(a, b) => {
                buf.push(if matches!(s, Sel::And(..)) { 7 } else { 8 });
                encode(buf, a);
                encode(buf, b);
            }
        }
    }

    fn u32(b: &mut &[u8]) -> Result<usize, String> {
        let (n, rest) = b.split_at_checked(4).ok_or(BAD)?;
        *b = rest;
        Ok(u32::from_le_bytes(n.try_into().expect("4 bytes")) as usize)
    }

    fn str<'a>(b: &mut &'a [u8]) -> Result<&'a str, String> {
        let n = u32(b)?;
        let (s, rest) = b.split_at_checked(n).ok_or(BAD)?;
        *b = rest;
        std::str::from_utf8(s).map_err(|_| BAD.to_string())
    }

    /// Evaluates the selector at the start of `b`, consuming it.
    fn eval(b: &mut &[u8], labels: &BTreeMap<String, String>) -> Result<bool, String> {
        let (&tag, rest) = b.split_first().ok_or(BAD)?;
        *b = rest;
        Ok(match tag {
            0 => true,
            1 | 2 => {
                let k = str(b)?;
                let v = str(b)?;
                let eq = labels.get(k).is_some_and(|x| x == v);
                eq == (tag == 1)
            }
            3 | 4 => {
                let k = str(b)?;
                let have = labels.get(k);
                let mut hit = false;
                for _ in 0..u32(b)? {
                    let v = str(b)?;
                    hit |= have.is_some_and(|x| x == v);
                }
                hit == (tag == 3)
            }
            5 => labels.contains_key(str(b)?),
            6 => !eval(b, labels)?,
            7 | 8 => {
                let x = eval(b, labels)?;
                let y = eval(b, labels)?;
                if tag == 7 {
                    x && y
                } else {
                    x || y
                }
            }
            _ => return Err(BAD.into()),
        })
    }

    /// The meaning of an encoded selector (as [`Sel::matches`]).
    pub fn matches(mut b: &[u8], labels: &BTreeMap<String, String>) -> Result<bool, String> {
        let r = eval(&mut b, labels)?;
        if b.is_empty() {
            Ok(r)
        } else {
            Err(BAD.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{bundle, BundleInput, MANIFEST};

    const SRC: &str = r#"
endpoint web   { labels { app: "web" }   addr 10.1.0.10 }
endpoint other { labels { app: "other" } addr 10.1.0.11 }
endpoint db    { labels { app: "db" }    addr 10.2.0.20 }
policy db-in {
  applies to app == "db"
  ingress { allow tcp 5432 from app == "web" }
}
policy outside {
  applies to app == "web"
  egress { allow to { 192.168.0.0/16 } except { 192.168.7.7/32 } }
}
service api {
  frontend 10.96.0.1:80/tcp
  backends select app == "web" port 8080
}
"#;

    fn manifest_of(src: &str) -> Manifest {
        let model = crate::check::model_of(src);
        let g = crate::graph::build(&model);
        read(&BundleInput {
            model: &model,
            graph: &g,
            sources: &[],
            targets: &[],
            locate: &|_| None,
            backends: BTreeMap::new(),
        })
    }

    /// The manifest of a bundle, as a reader gets it.
    fn read(input: &BundleInput) -> Manifest {
        crate::contract::parse(&bundle(input)[MANIFEST]).unwrap()
    }

    fn ep(name: &str, app: &str, addr: &str) -> EndpointRec {
        EndpointRec {
            name: name.into(),
            labels: [("app".to_string(), app.to_string())].into(),
            ready: true,
            addrs: vec![addr.parse().unwrap()],
        }
    }

    #[test]
    fn declared_endpoints_are_kept_apart_and_not_replaced() {
        let src = "endpoint db-1 { labels { app: \"db\" } addr 10.2.0.5 }\n";
        let m = manifest_of(&format!("{SRC}{src}"));
        let (inv, declared) = split_declared(&m);
        assert!(declared.iter().any(|e| e.name == "db-1"), "{declared:?}");
        assert!(inv.iter().all(|e| e.name != "db-1"));
        let db1 = declared.iter().find(|e| e.name == "db-1").unwrap().clone();
        let web3 = ep("web-3", "web", "10.1.0.9");
        // A partial inventory: db-1 is not removed.
        let (o, n, r) = filter_declared(&declared, declared.clone(), vec![web3.clone()]);
        assert!(o.is_empty() && r.is_empty() && n == vec![web3.clone()]);
        // Listed unchanged: nothing to do; changed or shadowed: refused.
        let (_, n, r) = filter_declared(&declared, Vec::new(), vec![db1]);
        assert!(n.is_empty() && r.is_empty());
        let (_, _, r) = filter_declared(&declared, Vec::new(), vec![ep("db-1", "db", "10.2.0.6")]);
        assert_eq!(r.len(), 1);
        let (_, _, r) = filter_declared(&declared, Vec::new(), vec![ep("x", "db", "10.2.0.5")]);
        assert_eq!(r.len(), 1);
        let p = name_plan(&inv, &[web3]);
        assert_eq!(p.added.len(), 1);
        assert_eq!(p.removed.len(), inv.len());
    }

    #[test]
    fn places_replicas_in_existing_classes_and_refuses_new_ones() {
        let m = manifest_of(SRC);
        let view = ClassView::from_manifest(&m);
        let old = manifest_endpoints(&m);
        assert_eq!(old.len(), 3);
        let web_class = m.endpoints.iter().find(|e| e.name == "web").unwrap().addrs[0].class;
        // A new web replica: the web class.
        let mut new = old.clone();
        new.push(ep("web-2", "web", "10.1.0.12"));
        let p = plan(&view, &old, &new);
        assert!(p.refused.is_empty(), "{:?}", p.refused);
        assert_eq!(p.changes.len(), 1);
        assert_eq!(p.changes[0].new, Some(web_class));
        assert_eq!(p.changes[0].old, None);
        // Unknown labels: the class of `other` (endpoint bit only).
        let mut new2 = old.clone();
        new2.push(ep("x", "unknown", "10.1.0.13"));
        let p = plan(&view, &old, &new2);
        assert!(p.refused.is_empty(), "{:?}", p.refused);
        // Removal and relabel.
        let new3 = vec![ep("web", "other", "10.1.0.10"), ep("db", "db", "10.2.0.20")];
        let p = plan(&view, &old, &new3);
        assert_eq!(p.changes.len(), 2, "{:?}", p.changes);
        assert!(p
            .changes
            .iter()
            .any(|c| c.addr.to_string() == "10.1.0.11" && c.new.is_none()));
        // An endpoint inside a set prefix: web labels + set atom is new.
        let mut new4 = old.clone();
        new4.push(ep("inside", "web", "192.168.1.1"));
        let p = plan(&view, &old, &new4);
        assert_eq!(p.refused.len(), 1, "{:?}", p.changes);
        assert!(
            p.refused[0].contains("needs a recompile"),
            "{}",
            p.refused[0]
        );
        // Base class of a set address is the set's class, not 0.
        assert_ne!(view.base_class("192.168.1.1".parse().unwrap()), 0);
        assert_eq!(view.base_class("192.168.7.7".parse().unwrap()), 0);
        // Duplicate address.
        let mut new5 = old.clone();
        new5.push(ep("dup", "web", "10.1.0.10"));
        assert!(!plan(&view, &old, &new5).refused.is_empty());
    }

    #[test]
    fn selector_service_backends_follow_the_inventory() {
        let m = manifest_of(SRC);
        let svcs = selector_services(&m);
        assert_eq!(svcs.len(), 1);
        let s = &svcs[0];
        assert_eq!(s.compiled[&4].len(), 1);
        let old = manifest_endpoints(&m);
        assert_eq!(backends_for(s, 4, &old), s.compiled[&4]);
        let mut new = old.clone();
        new.push(ep("web-2", "web", "10.1.0.12"));
        let mut notready = ep("web-3", "web", "10.1.0.13");
        notready.ready = false;
        new.push(notready);
        let b = backends_for(s, 4, &new);
        assert_eq!(b.len(), 2);
        assert!(b.iter().all(|b| b.port == 8080));
    }

    fn eps_text(eps: &[EndpointRec], pretty: bool) -> String {
        if pretty {
            serde_json::to_string_pretty(&serde_json::json!({ "endpoints": eps })).unwrap()
        } else {
            inventory_text(eps)
        }
    }

    /// The text diff finds exactly the endpoints [`changed_endpoints`]
    /// finds, parsing only what changed; anything unusual takes the full
    /// parse.
    #[test]
    fn text_diff_agrees_with_the_record_diff() {
        let m = manifest_of(SRC);
        let old = manifest_endpoints(&m);
        let rec = entries::encode_all(&old);
        let check = |new: &[EndpointRec], text: &str| {
            let d = diff_text(&rec, true, text).unwrap();
            let (o, n) = d.changed.clone().expect("unique inventories");
            let (eo, en) = changed_endpoints(&old, new).unwrap();
            assert_eq!((o, n), (eo, en), "{text}");
            let decoded: Vec<EndpointRec> = entries::split(&d.entries)
                .unwrap()
                .1
                .iter()
                .map(|e| e.decode().unwrap())
                .collect();
            assert_eq!(decoded, new);
            d
        };
        // Unchanged, in another layout, in another order.
        let d = check(&old, &eps_text(&old, false));
        assert_eq!(d.entries, rec, "unchanged entries are copied");
        check(&old, &eps_text(&old, true));
        let mut rev = old.clone();
        rev.reverse();
        check(&rev, &eps_text(&rev, false));
        // Added, removed, relabeled, not ready.
        let mut new = old.clone();
        new.insert(1, ep("web-2", "web", "10.1.0.12"));
        check(&new, &eps_text(&new, false));
        check(&old[1..], &eps_text(&old[1..], false));
        check(&old[..2], &eps_text(&old[..2], false));
        let mut last = old.clone();
        last[2].labels.insert("tier".into(), "y".into());
        last.push(ep("web-3", "web", "10.1.0.13"));
        check(&last, &eps_text(&last, false));
        let spaced = eps_text(&old, false).replacen("},{", "} ,\n {", 1);
        check(&old, &spaced);
        // After an update, the record is the new text's.
        let d = diff_text(&rec, true, &spaced).unwrap();
        let d2 = diff_text(&d.entries, true, &eps_text(&new, false)).unwrap();
        let (o, n) = d2.changed.unwrap();
        assert!(o.is_empty() && n.len() == 1 && n[0].name == "web-2");
        let mut relabeled = old.clone();
        relabeled[0].labels.insert("tier".into(), "x".into());
        relabeled[2].ready = false;
        let d = check(&relabeled, &eps_text(&relabeled, true));
        assert_eq!(d.changed.unwrap().1.len(), 2);
        // A name twice, or an address of an unchanged endpoint again:
        // the whole inventory, for plan's messages.
        for extra in [ep("web", "web", "10.1.0.99"), ep("x", "web", "10.1.0.10")] {
            let mut dup = old.clone();
            dup.push(extra);
            let d = diff_text(&rec, true, &eps_text(&dup, false)).unwrap();
            assert!(d.changed.is_none() && !d.unique);
            assert_eq!(d.full.unwrap(), dup);
        }
        // Problems parse_inventory reports.
        let bad_name = eps_text(&[ep("1bad", "web", "10.1.0.12")], false);
        for text in [
            "{ \"endpoints\": [ ",
            "{ \"endpoints\": [ { \"name\": \"a\", \"addrs\": [\"x\"] } ] }",
            "{ \"endpoints\": [ { \"name\": \"a\", \"extra\": 1 } ] }",
            "{ \"endpoints\": [], \"x\": 1 }",
            bad_name.as_str(),
        ] {
            assert_eq!(
                diff_text(&rec, true, text).unwrap_err(),
                DiffError::Inventory,
                "{text}"
            );
            let (_, problems) = crate::inventory::parse_inventory(weir_grammar::FileId(0), text);
            assert!(!problems.is_empty(), "{text}");
        }
        // The full parse gives what parse_inventory gives.
        let text = eps_text(&new, true);
        let (inv, problems) = crate::inventory::parse_inventory(weir_grammar::FileId(0), &text);
        assert!(problems.is_empty());
        assert_eq!(
            EndpointRec::parse_inventory(&text).unwrap(),
            EndpointRec::from_inventory(&inv)
        );
        assert_eq!(scan_inventory("{\"endpoints\":[]}"), Some(vec![]));
        assert_eq!(
            scan_inventory(r#" { "endpoints" : [ {"name":"a\"}"} , {"b":[{}]} ] } "#),
            Some(vec![r#"{"name":"a\"}"}"#, r#"{"b":[{}]}"#])
        );
    }

    #[test]
    fn encoded_selectors_mean_what_selectors_mean() {
        use crate::model::Sel::*;
        let b = |s: Sel| Box::new(s);
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        let sels = vec![
            All,
            Eq("app".into(), "web".into()),
            Ne("app".into(), "web".into()),
            In("app".into(), set(&["web", "db"])),
            NotIn("app".into(), set(&["web"])),
            Has("tier".into()),
            Not(b(Has("tier".into()))),
            And(b(Eq("app".into(), "web".into())), b(Has("tier".into()))),
            Or(b(Eq("app".into(), "db".into())), b(Not(b(All)))),
        ];
        let labels: Vec<BTreeMap<String, String>> = vec![
            BTreeMap::new(),
            [("app".to_string(), "web".to_string())].into(),
            [
                ("app".to_string(), "db".to_string()),
                ("tier".to_string(), "1".to_string()),
            ]
            .into(),
            [
                ("app".to_string(), "web".to_string()),
                ("tier".to_string(), "".to_string()),
            ]
            .into(),
        ];
        for s in &sels {
            let mut buf = Vec::new();
            selcode::encode(&mut buf, s);
            for l in &labels {
                assert_eq!(
                    selcode::matches(&buf, l).unwrap(),
                    s.matches(l),
                    "{s:?} {l:?}"
                );
            }
        }
        let svcs = selector_services(&manifest_of(SRC));
        let table = service_table::encode(&svcs);
        assert_eq!(service_table::decode_all(&table).unwrap(), svcs);
        assert_eq!(
            service_table::affected(&table, &[ep("w", "web", "10.9.9.9")]).unwrap(),
            svcs
        );
        assert!(
            service_table::affected(&table, &[ep("d", "db", "10.9.9.9")])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn backends_after_a_change_follow_the_inventory() {
        let m = manifest_of(SRC);
        let s = &selector_services(&m)[0];
        let old = manifest_endpoints(&m);
        let have = backends_for(s, 4, &old);
        let mut new = old.clone();
        new.push(ep("web-2", "web", "10.1.0.12"));
        new[0].ready = false;
        let (o, n) = changed_endpoints(&old, &new).unwrap();
        assert_eq!(
            backends_delta(s, 4, &have, &o, &n),
            backends_for(s, 4, &new)
        );
    }

    /// Placement by the view equals the compiler's classification for
    /// every endpoint of generated models.
    #[test]
    fn view_agrees_with_compiled_classes() {
        for seed in 0..100 {
            let model = crate::gen::model(seed);
            let g = crate::graph::build(&model);
            let m = read(&BundleInput {
                model: &model,
                graph: &g,
                sources: &[],
                targets: &[],
                locate: &|_| None,
                backends: BTreeMap::new(),
            });
            let view = ClassView::from_manifest(&m);
            for (e, per) in model.endpoints.iter().zip(&g.classes.endpoint_classes) {
                for &(a, c) in per {
                    assert_eq!(
                        view.place(a, &e.labels),
                        Placement::Existing(c),
                        "seed {seed}"
                    );
                    assert_eq!(
                        view.base_class(a),
                        g.classes
                            .class_of_signature(&g.classes.signature(a, None))
                            .unwrap_or(0)
                    );
                }
            }
        }
    }
}
