//! `weir endpoints`: endpoint churn at run time is a map / ipset update,
//! never a recompile.
//!
//! The caller hands over the **full** new inventory. What changes is
//! computed purely by [`weir_compiler::churn`] against the endpoints
//! currently applied — recorded in `endpoints.json` next to the back end's
//! state (the bundle's compiled inventory when nothing was recorded for
//! the generation in force) — and only the differences are written:
//!
//! - **iptables** ([`iptables`]): for every address that appears,
//!   disappears or changes class, one host entry in each of the
//!   generation's address sets, all in one `ipset restore -exist` batch:
//!   `del` then `add ADDR` when the set holds the new class, `add ADDR
//!   nomatch` when it does not but a covering prefix of the address's
//!   base class is in it (so membership is exactly "the class is one of
//!   the set's classes"). No rule changes. Selector-backed service
//!   backends are DNAT rules in chains, so a backend change cannot be
//!   applied here: the report lists those services
//!   ([`Report::needs_recompile`]) and the CLI exits 1 after applying the
//!   class part.
//! - **eBPF** ([`ebpf`]): host entries in the pinned LPM tries
//!   `weir_cls4` / `weir_cls6` (added or changed first), then the
//!   backends of selector-backed services through
//!   [`LbState::set_backends`] (new backend set and Maglev table, frontend
//!   swap, old set retired), then removals. Programs are not reloaded; the
//!   service allocation state is recorded with the endpoints.
//!
//! Refused (nothing written): an address whose signature no compiled
//! class has ("needs a recompile", see [`weir_compiler::churn`]), an
//! address claimed by two endpoints, a name used twice, an inventory for
//! a bundle that is not the one in force.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_compiler::churn::{self, AddrChange, ClassView, EndpointRec};
use weir_compiler::ebpf::service::{Be, LbState};

/// What [`iptables`] / [`ebpf`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The generation in force (unchanged by an endpoint update).
    pub generation: u64,
    /// Addresses that appeared, disappeared or changed class.
    pub changes: Vec<AddrChange>,
    /// Services whose backends were updated in place (eBPF).
    pub services: Vec<ServiceUpdate>,
    /// Services whose backends differ from the compiled ones but cannot be
    /// changed without a new generation (iptables: `weir compile` +
    /// `weir apply`).
    pub needs_recompile: Vec<ServiceUpdate>,
    /// Kernel writes (ipset lines, map updates / deletes).
    pub writes: usize,
    /// Time spent writing to the kernel (JSON: microseconds).
    #[serde(with = "micros", rename = "apply_us")]
    pub apply_time: Duration,
    /// Total time, reading state included (JSON: microseconds).
    #[serde(with = "micros", rename = "total_us")]
    pub total_time: Duration,
}

mod micros {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }
}

/// One service's backends for one address family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceUpdate {
    pub service: String,
    pub family: u8,
    /// `addr:port` (weight 1: selector backends).
    pub backends: Vec<String>,
}

fn socket(b: &Be) -> String {
    match b.addr {
        std::net::IpAddr::V4(_) => format!("{}:{}", b.addr, b.port),
        std::net::IpAddr::V6(_) => format!("[{}]:{}", b.addr, b.port),
    }
}

#[derive(Debug)]
pub enum EndpointsError {
    /// The update needs a recompile or is malformed; nothing was written.
    Refused(Vec<String>),
    /// Nothing applied, or DIR is not the bundle in force.
    NotInForce(String),
    /// The manifest lacks what the update needs.
    Bundle(String),
    Iptables(crate::Error),
    Ebpf(crate::ebpf::EbpfError),
}

impl std::fmt::Display for EndpointsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointsError::Refused(r) => {
                write!(
                    f,
                    "endpoint update refused, nothing changed (the running generation stays as it is):"
                )?;
                for x in r {
                    write!(f, "\n  {x}")?;
                }
                Ok(())
            }
            EndpointsError::NotInForce(m) | EndpointsError::Bundle(m) => f.write_str(m),
            EndpointsError::Iptables(e) => write!(f, "{e}"),
            EndpointsError::Ebpf(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for EndpointsError {}

impl From<crate::Error> for EndpointsError {
    fn from(e: crate::Error) -> Self {
        EndpointsError::Iptables(e)
    }
}

impl From<crate::ebpf::EbpfError> for EndpointsError {
    fn from(e: crate::ebpf::EbpfError) -> Self {
        EndpointsError::Ebpf(e)
    }
}

/// `endpoints.json`: the endpoints in force for one generation (and, for
/// eBPF, the service-map allocation state).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recorded {
    pub generation: u64,
    /// Identifies the applied bundle (iptables content hash, eBPF source
    /// hash).
    pub bundle: String,
    pub endpoints: Vec<EndpointRec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb: Option<LbState>,
}

pub const RECORD: &str = "endpoints.json";

fn read_recorded(dir: &Path, generation: u64, bundle: &str) -> Option<Recorded> {
    let text = std::fs::read_to_string(dir.join(RECORD)).ok()?;
    let r: Recorded = serde_json::from_str(&text).ok()?;
    (r.generation == generation && r.bundle == bundle).then_some(r)
}

fn write_recorded(dir: &Path, r: &Recorded) -> Result<(), EndpointsError> {
    let path = dir.join(RECORD);
    let tmp = path.with_extension("json.tmp");
    // Compact: the file holds the whole inventory and is rewritten on
    // every update.
    let text = serde_json::to_string(r).expect("JSON");
    std::fs::write(&tmp, text + "\n")
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            EndpointsError::Bundle(format!(
                "the update is in force but recording it in {} failed: {e}",
                path.display()
            ))
        })
}

fn plan(
    view: &ClassView,
    old: &[EndpointRec],
    new: &[EndpointRec],
) -> Result<Vec<AddrChange>, EndpointsError> {
    let p = churn::plan_update(view, old, new);
    if !p.refused.is_empty() {
        return Err(EndpointsError::Refused(p.refused));
    }
    Ok(p.changes)
}

/// Does some set atom name exactly the host prefix of `addr` (then the
/// class map has a host entry of its own, which a removal restores)?
fn set_host_prefix(view: &ClassView, addr: std::net::IpAddr) -> bool {
    let host = weir_compiler::model::Cidr::host(addr);
    view.atoms.iter().any(|a| match a {
        weir_compiler::graph::classes::Atom::Set(s) => {
            s.include.contains(&host) || s.exclude.contains(&host)
        }
        _ => false,
    })
}

/// Applies `inventory` to the iptables generation in force (see the
/// module docs). `bundle` must be the applied bundle.
pub fn iptables(
    rt: &crate::iptables::Iptables,
    bundle: &crate::Bundle,
    inventory: &[EndpointRec],
) -> Result<Report, EndpointsError> {
    use crate::iptables::{exec, names};
    let t0 = Instant::now();
    exec::require_root()?;
    exec::require_program("ipset")?;
    let _lock = rt.lock()?;
    let state = rt.read_state()?.ok_or_else(|| {
        EndpointsError::NotInForce("nothing is applied (iptables): run `weir apply` first".into())
    })?;
    if state.bundle_hash != bundle.content_hash {
        return Err(EndpointsError::NotInForce(format!(
            "{} is not the bundle in force (generation {} was applied from {}); apply it first",
            bundle.dir.display(),
            state.generation,
            state.bundle_dir
        )));
    }
    let generation = u64::from(state.generation);
    let view = ClassView::from_manifest(&bundle.manifest).map_err(EndpointsError::Bundle)?;
    let dir = rt.options().state_dir.clone();
    let old = match read_recorded(&dir, generation, &state.bundle_hash) {
        Some(r) => r.endpoints,
        None => churn::manifest_endpoints(&bundle.manifest).map_err(EndpointsError::Bundle)?,
    };
    let changes = plan(&view, &old, inventory)?;

    // Address sets of the generation: (kernel name, family, classes).
    let mut sets: Vec<(String, u8, Vec<u32>)> = Vec::new();
    for s in &bundle.sets {
        let Some(classes) = s.raw.get("classes").and_then(Value::as_array) else {
            continue;
        };
        let family = match s.raw.get("family").and_then(Value::as_str) {
            Some("ipv6") => 6,
            _ => 4,
        };
        let kernel = state
            .sets
            .iter()
            .find(|k| k.name == s.name)
            .map(|k| k.kernel_name.clone())
            .unwrap_or_else(|| names::generation_set(&s.name, state.generation));
        let classes = classes
            .iter()
            .filter_map(|c| c.as_u64().map(|c| c as u32))
            .collect();
        sets.push((kernel, family, classes));
    }
    let mut text = String::new();
    for c in &changes {
        let family = if c.addr.is_ipv4() { 4 } else { 6 };
        for (kernel, f, classes) in &sets {
            if *f != family {
                continue;
            }
            let a = c.addr;
            text.push_str(&format!("del {kernel} {a}\n"));
            match c.new {
                Some(n) if classes.contains(&n) => text.push_str(&format!("add {kernel} {a}\n")),
                Some(_) if classes.contains(&c.base) => {
                    text.push_str(&format!("add {kernel} {a} nomatch\n"))
                }
                None if classes.contains(&c.base) => text.push_str(&format!("add {kernel} {a}\n")),
                _ => {}
            }
        }
    }

    // Services: DNAT rules, fixed at compile time. Every service is
    // compared with its compiled backends (earlier updates count too),
    // through a label index of the inventory.
    let mut needs_recompile = Vec::new();
    let index = weir_compiler::endpoint_index::EndpointIndex::from_labels(
        inventory.iter().map(|e| &e.labels),
    );
    for s in churn::selector_services(&bundle.manifest).map_err(EndpointsError::Bundle)? {
        for &family in &s.families {
            let want = churn::backends_indexed(&s, family, inventory, &index);
            let compiled = s.compiled.get(&family).cloned().unwrap_or_default();
            if want != compiled {
                needs_recompile.push(ServiceUpdate {
                    service: s.name.clone(),
                    family,
                    backends: want.iter().map(socket).collect(),
                });
            }
        }
    }

    let t1 = Instant::now();
    let writes = text.lines().count();
    if !text.is_empty() {
        rt.exec()
            .run_ok(
                &format!("updating endpoint sets of generation {}", state.generation),
                "ipset",
                &["restore", "-exist"],
                Some(&text),
            )
            .map_err(|e| crate::iptables::annotate(e, &text))?;
    }
    let apply_time = t1.elapsed();
    write_recorded(
        &dir,
        &Recorded {
            generation,
            bundle: state.bundle_hash.clone(),
            endpoints: inventory.to_vec(),
            lb: None,
        },
    )?;
    Ok(Report {
        generation,
        changes,
        services: Vec::new(),
        needs_recompile,
        writes,
        apply_time,
        total_time: t0.elapsed(),
    })
}

/// The eBPF generation in force: number, recorded manifest.
fn ebpf_in_force(inst: &crate::ebpf::Instance) -> Result<(u64, Value), EndpointsError> {
    ebpf_in_force_text(inst).map(|(g, m, _)| (g, m))
}

/// [`ebpf_in_force`] with the recorded manifest's text.
fn ebpf_in_force_text(
    inst: &crate::ebpf::Instance,
) -> Result<(u64, Value, String), EndpointsError> {
    let sd = inst.state_dir();
    let not = || {
        EndpointsError::NotInForce(format!(
            "nothing is applied for eBPF instance `{}`: run `weir apply --backend ebpf` first",
            inst.name()
        ))
    };
    let st: Value = std::fs::read_to_string(sd.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(not)?;
    let generation = st["generation"].as_u64().ok_or_else(not)?;
    let text = std::fs::read_to_string(sd.join("manifest.json")).map_err(|_| not())?;
    let manifest: Value = serde_json::from_str(&text).map_err(|_| not())?;
    Ok((generation, manifest, text))
}

fn bundle_id(m: &Value) -> String {
    m["source_hash"].as_str().unwrap_or("").to_string()
}

fn manifest_lb(m: &Value) -> Option<LbState> {
    m.pointer("/backends/ebpf/lb")
        .filter(|v| !v.is_null())
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// The service-map state of the eBPF generation in force (after any
/// endpoint updates): for `weir status`.
pub fn ebpf_services(inst: &crate::ebpf::Instance) -> Option<LbState> {
    let (generation, manifest) = ebpf_in_force(inst).ok()?;
    match read_recorded(&inst.state_dir(), generation, &bundle_id(&manifest)) {
        Some(r) => r.lb,
        None => manifest_lb(&manifest),
    }
}

/// Pinned maps of one generation, opened on demand.
struct Pinned {
    dir: PathBuf,
    maps: BTreeMap<String, aya::maps::Map>,
}

impl Pinned {
    fn get(&mut self, name: &str) -> Result<&aya::maps::Map, EndpointsError> {
        if !self.maps.contains_key(name) {
            let path = self.dir.join(name);
            let err = |e: String| crate::ebpf::EbpfError::Aya {
                step: format!("opening pinned map {}", path.display()),
                message: e,
            };
            let data = aya::maps::MapData::from_pin(&path).map_err(|e| err(e.to_string()))?;
            let map = aya::maps::Map::from_map_data(data).map_err(|e| err(e.to_string()))?;
            self.maps.insert(name.to_string(), map);
        }
        Ok(&self.maps[name])
    }

    fn update(&mut self, name: &str, key: &[u8], value: &[u8]) -> Result<(), EndpointsError> {
        let m = self.get(name)?;
        crate::ebpf::load::update_raw(m, key, value).map_err(|e| {
            EndpointsError::Ebpf(crate::ebpf::EbpfError::Aya {
                step: format!("updating map {name}"),
                message: e.to_string(),
            })
        })
    }

    fn delete(&mut self, name: &str, key: &[u8]) -> Result<(), EndpointsError> {
        let m = self.get(name)?;
        match crate::ebpf::load::delete_raw(m, key) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                Err(EndpointsError::Ebpf(crate::ebpf::EbpfError::Aya {
                    step: format!("deleting from map {name}"),
                    message: e.to_string(),
                }))
            }
            _ => Ok(()),
        }
    }
}

fn lpm_key(addr: std::net::IpAddr) -> (&'static str, Vec<u8>) {
    use weir_compiler::ebpf::codegen::layout::map;
    match addr {
        std::net::IpAddr::V4(a) => {
            let mut k = 32u32.to_ne_bytes().to_vec();
            k.extend_from_slice(&a.octets());
            (map::CLS4, k)
        }
        std::net::IpAddr::V6(a) => {
            let mut k = 128u32.to_ne_bytes().to_vec();
            k.extend_from_slice(&a.octets());
            (map::CLS6, k)
        }
    }
}

/// Applies `inventory` to the eBPF generation in force on `inst` (see
/// the module docs). `dir` must be the applied bundle (its manifest is
/// compared with the one recorded at apply).
pub fn ebpf(
    inst: &crate::ebpf::Instance,
    dir: &Path,
    inventory: &[EndpointRec],
) -> Result<Report, EndpointsError> {
    let t0 = Instant::now();
    if unsafe { libc::geteuid() } != 0 {
        return Err(crate::ebpf::EbpfError::NotPrivileged {
            detail: "run as root".into(),
        }
        .into());
    }
    let (generation, manifest, recorded_text) = ebpf_in_force_text(inst)?;
    let unreadable =
        || EndpointsError::Bundle(format!("{}/manifest.json is unreadable", dir.display()));
    let given_text =
        std::fs::read_to_string(dir.join("manifest.json")).map_err(|_| unreadable())?;
    // Identical text is the same manifest: parse it once.
    let same = given_text == recorded_text || {
        let given: Value = serde_json::from_str(&given_text).map_err(|_| unreadable())?;
        given == manifest
    };
    if !same {
        return Err(EndpointsError::NotInForce(format!(
            "{} is not the bundle in force on `{}` (generation {generation}); apply it first",
            dir.display(),
            inst.name()
        )));
    }
    let view = ClassView::from_manifest(&manifest).map_err(EndpointsError::Bundle)?;
    let id = bundle_id(&manifest);
    let sd = inst.state_dir();
    let (old, mut lb) = match read_recorded(&sd, generation, &id) {
        Some(r) => (r.endpoints, r.lb),
        None => (
            churn::manifest_endpoints(&manifest).map_err(EndpointsError::Bundle)?,
            manifest_lb(&manifest),
        ),
    };
    let changes = plan(&view, &old, inventory)?;
    let services = churn::selector_services(&manifest).map_err(EndpointsError::Bundle)?;
    // The service maps hold the backends over `old`: only services whose
    // selector matches an endpoint that changed (either version) can
    // differ. `None`: every service is compared.
    let changed: Option<Vec<EndpointRec>> =
        churn::changed_endpoints(&old, inventory).map(|(mut o, n)| {
            o.extend(n);
            o
        });
    let affected = |s: &churn::SelectorService| {
        changed
            .as_ref()
            .is_none_or(|c| c.iter().any(|e| s.selector.matches(&e.labels)))
    };
    let index = weir_compiler::endpoint_index::EndpointIndex::from_labels(
        inventory.iter().map(|e| &e.labels),
    );

    let t1 = Instant::now();
    let mut pinned = Pinned {
        dir: inst.pin_dir().join(format!("gen-{generation}")),
        maps: BTreeMap::new(),
    };
    let mut writes = 0;
    // 1. New and re-classed addresses: a backend must be classified
    // before the service maps can send traffic to it.
    for c in &changes {
        if let Some(n) = c.new {
            let (map, key) = lpm_key(c.addr);
            pinned.update(map, &key, &n.to_ne_bytes())?;
            writes += 1;
        }
    }
    // 2. Services.
    let mut updated = Vec::new();
    if let Some(lb) = lb.as_mut() {
        for s in services.iter().filter(|s| affected(s)) {
            for &family in &s.families {
                let want = churn::backends_indexed(s, family, inventory, &index);
                let have = lb
                    .services
                    .get(s.index)
                    .and_then(|x| x.sets.get(&family))
                    .map(|x| x.backends.clone())
                    .unwrap_or_default();
                if want == have {
                    continue;
                }
                let ops = lb
                    .set_backends(s.index, family, want.clone())
                    .map_err(|e| EndpointsError::Bundle(format!("service `{}`: {e}", s.name)))?;
                for op in &ops {
                    match op {
                        weir_compiler::ebpf::service::MapOp::Update { map, key, value } => {
                            pinned.update(map, key, value)?
                        }
                        weir_compiler::ebpf::service::MapOp::Delete { map, key } => {
                            pinned.delete(map, key)?
                        }
                    }
                    writes += 1;
                }
                updated.push(ServiceUpdate {
                    service: s.name.clone(),
                    family,
                    backends: want.iter().map(socket).collect(),
                });
            }
        }
    }
    // 3. Removals: the host entry goes (or falls back to the class of a
    // set prefix naming exactly this host).
    for c in &changes {
        if c.new.is_none() {
            let (map, key) = lpm_key(c.addr);
            if set_host_prefix(&view, c.addr) {
                pinned.update(map, &key, &c.base.to_ne_bytes())?;
            } else {
                pinned.delete(map, &key)?;
            }
            writes += 1;
        }
    }
    let apply_time = t1.elapsed();
    write_recorded(
        &sd,
        &Recorded {
            generation,
            bundle: id,
            endpoints: inventory.to_vec(),
            lb,
        },
    )?;
    Ok(Report {
        generation,
        changes,
        services: updated,
        needs_recompile: Vec::new(),
        writes,
        apply_time,
        total_time: t0.elapsed(),
    })
}
