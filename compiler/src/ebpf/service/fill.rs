//! What the runtime writes into the service maps: computed here, purely,
//! from the [`ServiceTable`], and kept as [`LbState`] so that run-time
//! backend changes ([`LbState::set_backends`]) are computed the same way.
//!
//! Everything the data path reads is reached from the frontend entry, and
//! a backend change never edits anything a frontend entry points at:
//!
//! 1. a **new backend set** is written: its slots (`weir_lb_slot`, key
//!    `(set, slot)`; set ids are never reused) and, for Maglev, a table in
//!    a **free** `weir_lb_mgl` index;
//! 2. each frontend entry of the service is replaced (one hash-map update,
//!    which the kernel does atomically: a reader sees the old or the new
//!    entry, never a mix) — this is the generation swap;
//! 3. the old set's slots are deleted and its table index goes to the back
//!    of a FIFO free list, so it is rewritten only after
//!    [`Options::spare_tables`] further swaps (a packet that read the old
//!    frontend entry just before the swap finishes long before that).
//!
//! A generation-indexed array was chosen over map-in-map because the
//! object writer has no inner-map BTF and an array of 64 KiB values is all
//! the swap needs; the cost is that tables are preallocated:
//! `(maglev (service, family) pairs + spare_tables) × 64 KiB`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::layout::{self, be, fe, map, Capacity, FLAG_AFFINITY, FLAG_MAGLEV, MAGLEV_M};
use crate::graph::ir::ServiceTable;
use crate::maglev;
use crate::model::{Backend, Balance, Frontend};

/// Sizing options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Extra Maglev tables for swaps (each 64 KiB, preallocated).
    pub spare_tables: u32,
    /// Extra slot / backend entries for backends added at run time.
    pub spare_slots: u32,
    pub affinity_entries: u32,
    pub conntrack_entries: u32,
    pub socket_entries: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            spare_tables: 8,
            spare_slots: 4096,
            affinity_entries: 65_536,
            conntrack_entries: 65_536,
            socket_entries: 65_536,
        }
    }
}

/// One map write, in the order the runtime must apply them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapOp {
    Update {
        map: String,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        map: String,
        key: Vec<u8>,
    },
}

impl MapOp {
    pub fn map(&self) -> &str {
        match self {
            MapOp::Update { map, .. } | MapOp::Delete { map, .. } => map,
        }
    }
}

// The maps' data as the manifest and the endpoints record hold it: the
// contract's types; their behaviour is here.
pub use crate::contract::ebpf::{Be, FeAddr, LbState, SetState, SvcState};
pub use crate::contract::BackendGroup;

fn family(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        4
    } else {
        6
    }
}

fn addr16(a: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match a {
        IpAddr::V4(v) => out[..4].copy_from_slice(&v.octets()),
        IpAddr::V6(v) => out = v.octets(),
    }
    out
}

/// `weir_lb_fe` key of a frontend.
pub fn fe_key(f: &Frontend) -> Vec<u8> {
    fe_key_of(&FeAddr::from(f))
}

/// `weir_lb_fe` key.
pub fn fe_key_of(f: &FeAddr) -> Vec<u8> {
    let mut k = addr16(f.addr).to_vec();
    k.extend_from_slice(&f.port.to_ne_bytes());
    k.push(f.proto);
    k.push(family(f.addr));
    k
}

/// A backend value ([`be`] layout).
pub fn be_value(b: &Be, id: u32) -> Vec<u8> {
    let mut v = addr16(b.addr).to_vec();
    v.extend_from_slice(&b.port.to_ne_bytes());
    v.push(family(b.addr));
    v.push(0);
    v.extend_from_slice(&id.to_ne_bytes());
    debug_assert_eq!(v.len(), be::SIZE as usize);
    v
}

/// Decodes a backend value: (addr, port, id).
pub fn decode_be(v: &[u8]) -> Option<(IpAddr, u16, u32)> {
    if v.len() < be::SIZE as usize {
        return None;
    }
    let addr = match v[18] {
        4 => IpAddr::from([v[0], v[1], v[2], v[3]]),
        6 => IpAddr::from(<[u8; 16]>::try_from(&v[..16]).ok()?),
        _ => return None,
    };
    let port = u16::from_ne_bytes([v[16], v[17]]);
    let id = u32::from_ne_bytes([v[20], v[21], v[22], v[23]]);
    Some((addr, port, id))
}

pub fn slot_key(set: u32, slot: u32) -> Vec<u8> {
    let mut k = set.to_ne_bytes().to_vec();
    k.extend_from_slice(&slot.to_ne_bytes());
    k
}

/// A frontend value ([`fe`] layout).
pub fn fe_value(service: usize, s: &SvcState, set: Option<&SetState>) -> Vec<u8> {
    let mut flags = 0;
    if s.maglev {
        flags |= FLAG_MAGLEV;
    }
    if s.affinity.is_some() {
        flags |= FLAG_AFFINITY;
    }
    let (id, count, table) = match set {
        Some(x) => (x.id, x.slots.len() as u32, x.table.unwrap_or(u32::MAX)),
        None => (u32::MAX, 0, u32::MAX),
    };
    let words = [
        service as u32,
        id,
        count,
        table,
        flags,
        s.affinity.unwrap_or(0),
        s.no_backends,
        0,
    ];
    let v: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    debug_assert_eq!(v.len(), fe::SIZE as usize);
    v
}

/// Decoded frontend value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeValue {
    pub service: u32,
    pub set: u32,
    pub count: u32,
    pub table: u32,
    pub flags: u32,
    pub affinity_secs: u32,
    pub no_backends: u32,
}

pub fn decode_fe(v: &[u8]) -> Option<FeValue> {
    let w = |i: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(
            v.get(i * 4..i * 4 + 4)?.try_into().ok()?,
        ))
    };
    Some(FeValue {
        service: w(0)?,
        set: w(1)?,
        count: w(2)?,
        table: w(3)?,
        flags: w(4)?,
        affinity_secs: w(5)?,
        no_backends: w(6)?,
    })
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Slots of a random set: backend `i` repeated `weight / gcd` times.
pub fn weighted_slots(backends: &[Be]) -> Vec<u32> {
    let g = backends.iter().fold(0, |g, b| gcd(g, u32::from(b.weight)));
    let mut out = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        for _ in 0..u32::from(b.weight) / g.max(1) {
            out.push(i as u32);
        }
    }
    out
}

fn as_model(b: &[Be]) -> Vec<Backend> {
    b.iter()
        .map(|b| Backend {
            addr: b.addr,
            port: b.port,
            weight: b.weight,
            endpoint: None,
        })
        .collect()
}

/// The Maglev table (slot numbers = indexes into `backends`), exactly the
/// interpreter's.
pub fn maglev_table(backends: &[Be]) -> Vec<u32> {
    maglev::table(&as_model(backends), MAGLEV_M)
}

fn table_bytes(t: &[u32]) -> Vec<u8> {
    let mut out = vec![0u8; t.len() * 4];
    for (o, w) in out.chunks_exact_mut(4).zip(t) {
        o.copy_from_slice(&w.to_ne_bytes());
    }
    out
}

/// [`maglev_table`]s as map values, in order; split over the available
/// cores when there are many.
fn maglev_tables_bytes(lists: &[&[Be]]) -> Vec<Vec<u8>> {
    let one = |b: &&[Be]| table_bytes(&maglev_table(b));
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(lists.len() / 16)
        .max(1);
    if threads == 1 {
        return lists.iter().map(one).collect();
    }
    let chunk = lists.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = lists
            .chunks(chunk)
            .map(|c| {
                let spec = crate::threads::named("weir-maglev");
                crate::threads::scoped(s, spec, move || c.iter().map(one).collect::<Vec<_>>())
            })
            .collect();
        parts.into_iter().flat_map(|p| p.join()).collect()
    })
}

impl LbState {
    /// The state for a compiled service table. `no_backends(service)` is
    /// the provenance id of `NoBackends { service }`.
    pub fn new(t: &ServiceTable, no_backends: &dyn Fn(usize) -> u32, opts: &Options) -> LbState {
        let mut services: Vec<SvcState> = t
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| SvcState {
                name: s.name.clone(),
                maglev: s.balance == Balance::Maglev,
                affinity: s.affinity,
                no_backends: no_backends(i),
                per_protocol: s.per_protocol,
                frontends: Vec::new(),
                sets: BTreeMap::new(),
            })
            .collect();
        // The frontends of one group have the same backends (contract::
        // backend_group says why): the first one's set is the group's.
        let mut per: BTreeMap<(usize, BackendGroup), Vec<Be>> = BTreeMap::new();
        for f in &t.frontends {
            let svc = &mut services[f.service];
            let fe = FeAddr::from(&f.frontend);
            svc.frontends.push(fe);
            let set = &t.backend_sets[f.backends];
            per.entry((f.service, svc.group_of(&fe)))
                .or_insert_with(|| set.backends.iter().map(Be::from).collect());
        }
        let maglev_pairs = per.keys().filter(|(s, _)| services[*s].maglev).count() as u32;
        let tables = maglev_pairs + opts.spare_tables;
        let mut st = LbState {
            capacity: Capacity {
                frontends: t.frontends.len() as u32,
                slots: 0,
                backends: 0,
                tables,
                affinity: opts.affinity_entries,
                conntrack: opts.conntrack_entries,
                sockets: opts.socket_entries,
                services: t.services.len() as u32,
            },
            services: Vec::new(),
            next_set: 0,
            free_tables: (0..tables).collect(),
            next_backend_id: 0,
            backend_ids: BTreeMap::new(),
        };
        let mut total_slots = 0u32;
        for ((s, fam), backends) in per {
            if let Some(set) = st.new_set(s, services[s].maglev, backends) {
                total_slots += set.slots.len() as u32;
                services[s].sets.insert(fam, set);
            }
        }
        st.services = services;
        st.capacity.slots = 2 * total_slots + opts.spare_slots;
        st.capacity.backends = st.next_backend_id + opts.spare_slots;
        st
    }

    /// Allocates a set (ids, table) for `backends`; `None` when empty.
    fn new_set(&mut self, service: usize, maglev: bool, mut backends: Vec<Be>) -> Option<SetState> {
        backends.retain(|b| b.weight > 0);
        backends.sort();
        backends.dedup();
        if backends.is_empty() {
            return None;
        }
        for b in &backends {
            let next = &mut self.next_backend_id;
            self.backend_ids
                .entry((service, b.addr, b.port))
                .or_insert_with(|| {
                    *next += 1;
                    *next - 1
                });
        }
        let id = self.next_set;
        self.next_set = self.next_set.wrapping_add(1);
        let (slots, table) = if maglev {
            let t = self.free_tables.pop_front();
            ((0..backends.len() as u32).collect(), t)
        } else {
            (weighted_slots(&backends), None)
        };
        Some(SetState {
            id,
            backends,
            slots,
            table,
        })
    }

    /// The backend id of `(service, b)`.
    pub fn backend_id(&self, service: usize, addr: IpAddr, port: u16) -> Option<u32> {
        self.backend_ids.get(&(service, addr, port)).copied()
    }

    fn set_ops(&self, service: usize, set: &SetState, ops: &mut Vec<MapOp>) {
        let table = set.table.map(|_| table_bytes(&maglev_table(&set.backends)));
        self.set_ops_with(service, set, ops, table);
    }

    /// [`LbState::set_ops`] with the Maglev table's value (when the set
    /// has a table) given.
    fn set_ops_with(
        &self,
        service: usize,
        set: &SetState,
        ops: &mut Vec<MapOp>,
        table: Option<Vec<u8>>,
    ) {
        for (i, &b) in set.slots.iter().enumerate() {
            let be = &set.backends[b as usize];
            let id = self.backend_ids[&(service, be.addr, be.port)];
            ops.push(MapOp::Update {
                map: map::SLOT.into(),
                key: slot_key(set.id, i as u32),
                value: be_value(be, id),
            });
        }
        if let (Some(t), Some(value)) = (set.table, table) {
            ops.push(MapOp::Update {
                map: map::MGL.into(),
                key: t.to_ne_bytes().to_vec(),
                value,
            });
        }
    }

    /// Every write of a fresh load, in order (backends, slots, tables,
    /// then frontends).
    pub fn initial_ops(&self) -> Vec<MapOp> {
        let mut ops = Vec::new();
        for (&(s, addr, port), &id) in &self.backend_ids {
            let w = self.services[s]
                .sets
                .values()
                .flat_map(|x| &x.backends)
                .find(|b| b.addr == addr && b.port == port)
                .map_or(1, |b| b.weight);
            ops.push(MapOp::Update {
                map: map::BE.into(),
                key: id.to_ne_bytes().to_vec(),
                value: be_value(
                    &Be {
                        addr,
                        port,
                        weight: w,
                    },
                    id,
                ),
            });
        }
        // The Maglev tables: one per distinct backend list (services on
        // several ports of one workload share it), computed on every core.
        let mut lists: Vec<&[Be]> = Vec::new();
        let mut uses: Vec<usize> = Vec::new();
        let mut index: HashMap<&[Be], usize> = HashMap::new();
        for s in &self.services {
            for set in s.sets.values().filter(|x| x.table.is_some()) {
                let i = *index.entry(&set.backends).or_insert_with(|| {
                    lists.push(&set.backends);
                    uses.push(0);
                    lists.len() - 1
                });
                uses[i] += 1;
            }
        }
        let mut tables = maglev_tables_bytes(&lists);
        for (i, s) in self.services.iter().enumerate() {
            for set in s.sets.values() {
                let table = set.table.map(|_| {
                    let k = index[set.backends.as_slice()];
                    uses[k] -= 1;
                    if uses[k] == 0 {
                        std::mem::take(&mut tables[k])
                    } else {
                        tables[k].clone()
                    }
                });
                self.set_ops_with(i, set, &mut ops, table);
            }
        }
        for (i, s) in self.services.iter().enumerate() {
            for f in &s.frontends {
                ops.push(MapOp::Update {
                    map: map::FE.into(),
                    key: fe_key_of(f),
                    value: fe_value(i, s, s.sets.get(&s.group_of(f))),
                });
            }
        }
        ops
    }

    /// How many updates [`LbState::initial_ops`] makes in each map it
    /// writes, without computing them (the Maglev tables are the expensive
    /// part: what a compiler needs for sizes and the manifest is only
    /// their number).
    pub fn initial_counts(&self) -> BTreeMap<&'static str, u64> {
        let sets = || self.services.iter().flat_map(|s| s.sets.values());
        let mut counts = BTreeMap::from([
            (map::BE, self.backend_ids.len() as u64),
            (map::SLOT, sets().map(|x| x.slots.len() as u64).sum()),
            (
                map::MGL,
                sets().filter(|x| x.table.is_some()).count() as u64,
            ),
            (
                map::FE,
                self.services.iter().map(|s| s.frontends.len() as u64).sum(),
            ),
        ]);
        counts.retain(|_, n| *n > 0);
        counts
    }

    /// Replaces the backends of `service` for the frontends of `group`
    /// (a family, 4 or 6, and for a named target port a protocol:
    /// [`BackendGroup`]) and returns the writes that take the maps there
    /// without disturbing readers (see the module docs). `backends` are
    /// filtered (weight > 0), sorted and deduplicated like the
    /// interpreter's candidates. Errors when `service` is unknown or no
    /// Maglev table is free.
    pub fn set_backends(
        &mut self,
        service: usize,
        group: impl Into<BackendGroup>,
        backends: Vec<Be>,
    ) -> Result<Vec<MapOp>, String> {
        let group = group.into();
        let Some(svc) = self.services.get(service) else {
            return Err(format!("no service #{service}"));
        };
        let maglev = svc.maglev;
        let old = svc.sets.get(&group).cloned();
        if maglev && self.free_tables.is_empty() && backends.iter().any(|b| b.weight > 0) {
            return Err("no free Maglev table (raise spare_tables)".into());
        }
        let new = self.new_set(service, maglev, backends);
        let mut ops = Vec::new();
        // 1. New backend ids, the new set's slots and table.
        if let Some(set) = &new {
            for be in &set.backends {
                let id = self.backend_ids[&(service, be.addr, be.port)];
                let known = old.as_ref().is_some_and(|o| {
                    o.backends
                        .iter()
                        .any(|b| b.addr == be.addr && b.port == be.port && b.weight == be.weight)
                });
                if !known {
                    ops.push(MapOp::Update {
                        map: map::BE.into(),
                        key: id.to_ne_bytes().to_vec(),
                        value: be_value(be, id),
                    });
                }
            }
            self.set_ops(service, set, &mut ops);
        }
        // 2. The swap: every frontend of this group.
        let svc = &mut self.services[service];
        match &new {
            Some(s) => {
                svc.sets.insert(group, s.clone());
            }
            None => {
                svc.sets.remove(&group);
            }
        }
        let svc = &self.services[service];
        for f in svc.frontends.iter().filter(|f| svc.group_of(f) == group) {
            ops.push(MapOp::Update {
                map: map::FE.into(),
                key: fe_key_of(f),
                value: fe_value(service, svc, new.as_ref()),
            });
        }
        // 3. Retire the old set; forget removed backends (invalidates
        // affinity entries that point at them).
        if let Some(o) = old {
            for i in 0..o.slots.len() as u32 {
                ops.push(MapOp::Delete {
                    map: map::SLOT.into(),
                    key: slot_key(o.id, i),
                });
            }
            if let Some(t) = o.table {
                self.free_tables.push_back(t);
            }
            for b in &o.backends {
                let kept = new.as_ref().is_some_and(|n| {
                    n.backends
                        .iter()
                        .any(|x| x.addr == b.addr && x.port == b.port)
                });
                if !kept {
                    if let Some(id) = self.backend_ids.remove(&(service, b.addr, b.port)) {
                        ops.push(MapOp::Delete {
                            map: map::BE.into(),
                            key: id.to_ne_bytes().to_vec(),
                        });
                    }
                }
            }
        }
        Ok(ops)
    }

    /// The map definitions for this state's capacity.
    pub fn maps(&self) -> Vec<crate::ebpf::MapDef> {
        self.capacity.maps()
    }

    /// The backend the data path picks for a Maglev service at `hash`, or
    /// a random service at slot `hash % count` (what the maps encode).
    pub fn pick(&self, service: usize, group: impl Into<BackendGroup>, hash: u32) -> Option<&Be> {
        let set = self.services.get(service)?.sets.get(&group.into())?;
        let slot = if set.table.is_some() {
            maglev_table(&set.backends)[(hash % MAGLEV_M) as usize]
        } else {
            set.slots[(hash % set.slots.len() as u32) as usize]
        };
        set.backends.get(slot as usize)
    }
}

/// Applies `ops` to an in-memory model of the maps (tests, dry runs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapsModel {
    pub maps: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MapsModel {
    pub fn apply(&mut self, ops: &[MapOp]) {
        for op in ops {
            match op {
                MapOp::Update { map, key, value } => {
                    self.maps
                        .entry(map.clone())
                        .or_default()
                        .insert(key.clone(), value.clone());
                }
                MapOp::Delete { map, key } => {
                    if let Some(m) = self.maps.get_mut(map) {
                        m.remove(key);
                    }
                }
            }
        }
    }

    pub fn get(&self, map: &str, key: &[u8]) -> Option<&Vec<u8>> {
        self.maps.get(map)?.get(key)
    }

    /// What the data path does for a new flow to `f` with flow hash `hash`
    /// (Maglev) or random draw `hash` (random): the backend, or `None` for
    /// no backends / not a frontend.
    pub fn choose(&self, f: &Frontend, hash: u32) -> Option<(IpAddr, u16)> {
        let v = decode_fe(self.get(map::FE, &fe_key(f))?)?;
        if v.count == 0 {
            return None;
        }
        let slot = if v.flags & FLAG_MAGLEV != 0 {
            let t = self.get(map::MGL, &v.table.to_ne_bytes())?;
            let i = (hash % MAGLEV_M) as usize * 4;
            u32::from_ne_bytes(t[i..i + 4].try_into().ok()?)
        } else {
            hash % v.count
        };
        let b = decode_be(self.get(map::SLOT, &slot_key(v.set, slot))?)?;
        Some((b.0, b.1))
    }
}

/// Size of one Maglev table value in bytes.
pub const TABLE_BYTES: usize = layout::MAGLEV_M as usize * 4;
