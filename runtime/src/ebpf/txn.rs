//! Writes to a running generation's pinned maps as one transaction:
//! capacity is checked before anything is written, every write remembers
//! the value it replaced, and a failed write puts every earlier one back.
//!
//! Why: `weir endpoints` edits the maps the data path is reading. A
//! capacity error (`E2BIG` when a hash map is full) halfway through left
//! some hosts classified and others not — a state that matches neither the
//! old nor the new inventory. With this, an update is applied whole or
//! not at all (as far as the kernel lets a rollback write succeed; if one
//! fails, the error says so).
//!
//! Every write also records what it promised (the value, or absence for
//! a delete), and [`PinnedMaps::read_back`] looks each written key up
//! again: a command reports success only after the kernel is seen to
//! hold what it wrote (another writer, a map replaced under the pin, a
//! write the kernel dropped are caught there, not trusted away). One
//! lookup per written key: an endpoint update writes a handful of keys,
//! and a batch lookup (`BPF_MAP_LOOKUP_BATCH`) would read the whole map
//! to find them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use aya::maps::{Map, MapData};

use super::load::{delete_raw, lookup_raw, map_data, update_raw};
use super::map_count::count_entries;
use super::EbpfError;

/// Pinned maps of one generation, opened on demand, with an undo log.
pub struct PinnedMaps {
    dir: PathBuf,
    maps: BTreeMap<String, Map>,
    /// (key size, value size, max entries) of each map opened: read once
    /// (a `BPF_OBJ_GET_INFO_BY_FD` per lookup was most of the lookups'
    /// system calls).
    sizes: BTreeMap<String, (usize, usize, u32)>,
    /// (map, key, value before) of every write, in order.
    undo: Vec<(String, Vec<u8>, Option<Vec<u8>>)>,
    /// (map, key) → what the last write of it promised (`None`: absent).
    promised: BTreeMap<(String, Vec<u8>), Option<Vec<u8>>>,
}

/// A written key the kernel holds something else for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Differs {
    pub map: String,
    pub key: Vec<u8>,
    /// What the update wrote (`None`: it deleted the key).
    pub wrote: Option<Vec<u8>>,
    /// What the kernel holds (`None`: no such key).
    pub holds: Option<Vec<u8>>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Differs {
    /// "map M key K (WHAT): the update wrote …, the kernel holds …".
    pub fn describe(&self, what: Option<&str>) -> String {
        let v = |x: &Option<Vec<u8>>| x.as_deref().map_or("no entry".to_string(), hex);
        format!(
            "map {} key {}{}: the update wrote {}, the kernel holds {}",
            self.map,
            hex(&self.key),
            what.map(|w| format!(" ({w})")).unwrap_or_default(),
            v(&self.wrote),
            v(&self.holds)
        )
    }
}

fn aya(step: String) -> impl FnOnce(String) -> EbpfError {
    move |message| EbpfError::Aya { step, message }
}

impl PinnedMaps {
    pub fn new(dir: PathBuf) -> PinnedMaps {
        PinnedMaps {
            dir,
            maps: BTreeMap::new(),
            sizes: BTreeMap::new(),
            undo: Vec::new(),
            promised: BTreeMap::new(),
        }
    }

    fn get(&mut self, name: &str) -> Result<&Map, EbpfError> {
        if !self.maps.contains_key(name) {
            let path = self.dir.join(name);
            let step = format!("opening pinned map {}", path.display());
            let data = MapData::from_pin(&path).map_err(|e| aya(step.clone())(e.to_string()))?;
            let map = Map::from_map_data(data).map_err(|e| aya(step)(e.to_string()))?;
            self.maps.insert(name.to_string(), map);
        }
        Ok(&self.maps[name])
    }

    fn sizes(&mut self, name: &str) -> Result<(usize, usize, u32), EbpfError> {
        if let Some(s) = self.sizes.get(name) {
            return Ok(*s);
        }
        let m = self.get(name)?;
        let info = map_data(m)
            .info()
            .map_err(|e| aya(format!("reading map {name}'s info"))(e.to_string()))?;
        let s = (
            info.key_size() as usize,
            info.value_size() as usize,
            info.max_entries(),
        );
        self.sizes.insert(name.to_string(), s);
        Ok(s)
    }

    fn current(&mut self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, EbpfError> {
        let (_, vsize, _) = self.sizes(name)?;
        let m = self.get(name)?;
        lookup_raw(m, key, vsize).map_err(|e| aya(format!("reading map {name}"))(e.to_string()))
    }

    /// Refuses (before anything is written) when inserting `keys` into
    /// the hash map `name` would exceed its `max_entries`.
    pub fn check_capacity(&mut self, name: &str, keys: &[Vec<u8>]) -> Result<(), String> {
        let mut new = 0u64;
        for k in keys {
            if self.current(name, k).map_err(|e| e.to_string())?.is_none() {
                new += 1;
            }
        }
        if new == 0 {
            return Ok(());
        }
        let (ksize, vsize, max) = self.sizes(name).map_err(|e| e.to_string())?;
        let m = self.get(name).map_err(|e| e.to_string())?;
        let have =
            count_entries(m, ksize, vsize).map_err(|e| format!("counting map {name}: {e}"))?;
        let after = have as u64 + new;
        if after > u64::from(max) {
            return Err(format!(
                "map {name} holds {have} of {max} entries; this update adds {new}: {after} would exceed its capacity (recompile with a larger capacity)"
            ));
        }
        Ok(())
    }

    pub fn update(&mut self, name: &str, key: &[u8], value: &[u8]) -> Result<(), EbpfError> {
        let before = self.current(name, key)?;
        let m = self.get(name)?;
        update_raw(m, key, value)
            .map_err(|e| aya(format!("updating map {name}"))(e.to_string()))?;
        self.undo.push((name.to_string(), key.to_vec(), before));
        self.promised
            .insert((name.to_string(), key.to_vec()), Some(value.to_vec()));
        Ok(())
    }

    pub fn delete(&mut self, name: &str, key: &[u8]) -> Result<(), EbpfError> {
        self.promised.insert((name.to_string(), key.to_vec()), None);
        let Some(before) = self.current(name, key)? else {
            return Ok(());
        };
        let m = self.get(name)?;
        match delete_raw(m, key) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                return Err(aya(format!("deleting from map {name}"))(e.to_string()))
            }
            _ => {}
        }
        self.undo
            .push((name.to_string(), key.to_vec(), Some(before)));
        Ok(())
    }

    /// Looks every key written or deleted so far up again: the ones the
    /// kernel holds something else for (empty: everything promised is in
    /// force).
    pub fn read_back(&mut self) -> Result<Vec<Differs>, EbpfError> {
        let promised = std::mem::take(&mut self.promised);
        let mut out = Vec::new();
        for ((map, key), wrote) in &promised {
            let holds = self.current(map, key)?;
            if holds != *wrote {
                out.push(Differs {
                    map: map.clone(),
                    key: key.clone(),
                    wrote: wrote.clone(),
                    holds,
                });
            }
        }
        self.promised = promised;
        Ok(out)
    }

    /// Number of writes made so far.
    pub fn writes(&self) -> usize {
        self.undo.len()
    }

    /// Puts back every write, last first. Returns the failures.
    pub fn rollback(&mut self) -> Vec<String> {
        self.promised.clear();
        let mut failed = Vec::new();
        for (name, key, before) in std::mem::take(&mut self.undo).into_iter().rev() {
            let Ok(m) = self.get(&name) else {
                failed.push(format!("reopening map {name}"));
                continue;
            };
            let r = match &before {
                Some(v) => update_raw(m, &key, v),
                // Already absent is what a rollback of an insert wants.
                None => match delete_raw(m, &key) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
                    r => r,
                },
            };
            if let Err(e) = r {
                failed.push(format!("restoring an entry of {name}: {e}"));
            }
        }
        failed
    }
}
