//! `weir endpoints`: endpoint churn at run time is a map / ipset update,
//! never a recompile.
//!
//! The caller hands over the **full** new inventory. What changes is
//! computed purely by [`weir_compiler::churn`] against the endpoints
//! currently applied — recorded in `endpoints.state` next to the back
//! end's state (see [`RECORD`]) — and only the differences are written:
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
//! - **eBPF** ([`ebpf`]): host entries in the pinned host hashes
//!   `weir_host4` / `weir_host6` (added or changed first), then the
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
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weir_compiler::churn::{self, entries, AddrChange, ClassView, EndpointRec, SelectorService};
use weir_compiler::contract::Manifest;
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
    /// `--dry-run`: the update in endpoint names; nothing was written
    /// (`writes` counts the writes the update would make).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<churn::NamePlan>,
}

mod micros {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }
}

/// One service's backends for one address family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The inventory text has problems (`weir_compiler::inventory::
    /// parse_inventory` reports them); nothing was written.
    Inventory,
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
            EndpointsError::Inventory => {
                f.write_str("the inventory has problems (run `weir check` on it), nothing changed")
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

/// The record of the endpoints in force for one generation, next to the
/// back end's state: everything `weir endpoints` needs, so an update
/// neither reads nor parses the bundle's manifest.
///
/// One file, replaced by rename (so it is always whole): a magic line,
/// then five sections, each a little-endian `u64` length and the bytes:
/// 1. the header (JSON [`Header`]: generation, bundle identity);
/// 2. the manifest's class data and selector-backed services (JSON,
///    written once per generation, parsed only when an endpoint changed);
/// 3. the eBPF service-map allocation state (JSON `LbState`, parsed only
///    when a service's backends change; `null` for iptables);
/// 4. the services whose backends differ from the compiled ones (JSON,
///    iptables);
/// 5. the endpoints in force ([`churn::entries`]: each endpoint's JSON
///    text as the inventory gave it, its name and addresses): a new
///    inventory is compared with them text to text, and only the
///    endpoints whose text differs are parsed.
///
/// Both back ends write it at `weir apply` (the bundle's compiled
/// inventory; [`iptables_applied`], [`ebpf_applied`]); when it is missing
/// or belongs to another generation (an instance applied by an earlier
/// weir) the first update builds it from the manifest (and an
/// `endpoints.json` of an earlier weir).
pub const RECORD: &str = "endpoints.state";
/// The record of earlier weir versions (JSON), read when [`RECORD`] is
/// missing.
const LEGACY_RECORD: &str = "endpoints.json";
const MAGIC: &[u8] = b"weir-endpoints 1\n";

/// A file's identity: equal identities mean equal contents (a write
/// changes the change time, a replacement the inode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileIdentity {
    /// The later of the modification and change times (ns since the
    /// epoch).
    pub fn changed_ns(&self) -> i128 {
        let ns = |(s, n): (i64, i64)| s as i128 * 1_000_000_000 + n as i128;
        ns(self.mtime).max(ns(self.ctime))
    }

    /// Times in whole seconds (a file system without finer times).
    pub fn coarse(&self) -> bool {
        self.mtime.1 == 0 && self.ctime.1 == 0
    }
}

/// The identity of `path`, if it exists.
pub fn file_identity(path: &Path) -> Option<FileIdentity> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileIdentity {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    generation: u64,
    /// Identifies the applied bundle (iptables content hash, eBPF source
    /// hash).
    bundle: String,
    /// eBPF: the identity of the applied bundle's `manifest.json`, known
    /// to hold the manifest in force; iptables: the identity of the
    /// `state.json` the apply wrote.
    #[serde(default)]
    manifest: Option<FileIdentity>,
    /// Every name and address appears once in the recorded endpoints.
    unique: bool,
    /// The side files holding the class view and selector services, and
    /// the eBPF service-map state.
    statics: String,
    lb: String,
    /// iptables: the identities of the applied bundle's files
    /// ([`crate::bundle::HASHED`]), known to hold the content whose hash
    /// is `bundle`: a `DIR` whose files have them is the bundle in force
    /// without reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    files: Option<BundleFiles>,
    /// iptables: the generation's address sets (kernel name, family,
    /// classes), from the manifest and `state.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sets: Option<Vec<(String, u8, Vec<u32>)>>,
    /// The endpoints declared in the source: an inventory never removes
    /// or changes them ([`churn::filter_declared`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    declared: Vec<EndpointRec>,
}

type BundleFiles = Vec<(String, Option<FileIdentity>)>;

impl Header {
    fn new(generation: u64, bundle: String, manifest: Option<FileIdentity>) -> Header {
        Header {
            generation,
            bundle,
            manifest,
            unique: false,
            statics: String::new(),
            lb: String::new(),
            files: None,
            sets: None,
            declared: Vec::new(),
        }
    }
}

/// The manifest's part (section 2): a `u32` length and the JSON of the
/// class view, then the selector services
/// ([`churn::service_table`]).
fn encode_statics(view: &ClassView, services: &[SelectorService]) -> Vec<u8> {
    let view = serde_json::to_vec(view).expect("JSON");
    let mut out = (view.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&view);
    out.extend_from_slice(&churn::service_table::encode(services));
    out
}

/// A service whose backends differ from the compiled ones (section 4).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stale {
    index: usize,
    update: ServiceUpdate,
    /// Its backends over the endpoints in force.
    backends: Vec<Be>,
}

/// The record, its sections as bytes (parsed on demand).
struct Record {
    header: Header,
    statics: Side,
    lb: Side,
    stale: Bytes,
    endpoints: Bytes,
}

/// A side file of the record: written once under a fresh name, never
/// changed, read on first use.
struct Side {
    name: String,
    data: std::cell::OnceCell<Vec<u8>>,
    /// Not written yet.
    new: bool,
}

impl Side {
    fn new(kind: &str, data: Vec<u8>) -> Side {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = N.fetch_add(1, Ordering::Relaxed);
        Side {
            name: format!("{SIDE}{kind}.{t:x}-{:x}-{n}", std::process::id()),
            data: data.into(),
            new: true,
        }
    }

    fn existing(name: &str) -> Side {
        Side {
            name: name.to_string(),
            data: std::cell::OnceCell::new(),
            new: false,
        }
    }

    fn get(&self, dir: &Path) -> Result<&[u8], EndpointsError> {
        if let Some(d) = self.data.get() {
            return Ok(d);
        }
        let d = crate::statefs::read_file(&dir.join(&self.name))
            .map_err(|e| bad_record(format!("{}: {e}", self.name)))?;
        Ok(self.data.get_or_init(|| d))
    }
}

/// Prefix of the side files' names.
const SIDE: &str = "endpoints.side.";

/// Removes the endpoint record, its side files and an earlier weir's
/// record from the state directory `dir` (detach), with the back end's
/// own files `names`, and the directory when nothing else is left.
pub fn remove_state(dir: &Path, names: &[&str]) -> std::io::Result<()> {
    let mut all = vec![RECORD, LEGACY_RECORD];
    all.extend_from_slice(names);
    crate::statefs::remove_ours(dir, &all, &[SIDE])
}

/// A section: part of the record file read, or new bytes.
enum Bytes {
    Read(std::rc::Rc<Vec<u8>>, std::ops::Range<usize>),
    New(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Read(b, r) => &b[r.clone()],
            Bytes::New(v) => v,
        }
    }
}

fn bad_record(e: impl std::fmt::Display) -> EndpointsError {
    EndpointsError::Bundle(format!("{RECORD}: {e}"))
}

impl Record {
    fn read(dir: &Path) -> Option<Record> {
        let bytes = std::rc::Rc::new(crate::statefs::read_file(&dir.join(RECORD)).ok()?);
        if !bytes.starts_with(MAGIC) {
            return None;
        }
        let mut at = MAGIC.len();
        let mut sections = Vec::with_capacity(3);
        for _ in 0..3 {
            let len = bytes.get(at..at + 8)?;
            let len = usize::try_from(u64::from_le_bytes(len.try_into().ok()?)).ok()?;
            let end = at.checked_add(8 + len).filter(|&e| e <= bytes.len())?;
            sections.push(Bytes::Read(bytes.clone(), at + 8..end));
            at = end;
        }
        let mut s = sections.into_iter();
        let header: Header = serde_json::from_slice(&s.next()?).ok()?;
        Some(Record {
            statics: Side::existing(&header.statics),
            lb: Side::existing(&header.lb),
            header,
            stale: s.next()?,
            endpoints: s.next()?,
        })
    }

    fn write(&self, dir: &Path) -> std::io::Result<()> {
        use crate::statefs;
        statefs::secure_dir(dir)?;
        // Side files first: the record names them.
        for side in [&self.statics, &self.lb] {
            if side.new {
                statefs::write_file(&dir.join(&side.name), side.data.get().expect("new data"))?;
            }
        }
        let header = serde_json::to_vec(&Header {
            statics: self.statics.name.clone(),
            lb: self.lb.name.clone(),
            ..self.header.clone()
        })
        .expect("JSON");
        let parts: [&[u8]; 3] = [&header, &self.stale, &self.endpoints];
        let mut bytes = MAGIC.to_vec();
        for p in parts {
            bytes.extend_from_slice(&(p.len() as u64).to_le_bytes());
            bytes.extend_from_slice(p);
        }
        statefs::write_file(&dir.join(RECORD), &bytes)?;
        // Side files no longer named go, and an earlier weir's record is
        // superseded.
        if self.statics.new || self.lb.new {
            for e in std::fs::read_dir(dir)?.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(SIDE) && name != self.statics.name && name != self.lb.name {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            let _ = std::fs::remove_file(dir.join(LEGACY_RECORD));
        }
        Ok(())
    }

    /// The record of a generation just applied from `manifest`:
    /// `endpoints` and `lb` in force (the compiled ones unless an earlier
    /// weir recorded others). `stale`: compare every selector service
    /// with its compiled backends (iptables).
    fn from_manifest(
        manifest: &Manifest,
        header: Header,
        recorded: Option<(Vec<EndpointRec>, Option<LbState>)>,
        stale: bool,
    ) -> Result<Record, String> {
        let view = ClassView::from_manifest(manifest);
        let services = churn::selector_services(manifest);
        let (endpoints, lb) = match recorded {
            Some(r) => r,
            None => (churn::manifest_endpoints(manifest), manifest_lb(manifest)),
        };
        let stale = if stale {
            let index = weir_compiler::endpoint_index::EndpointIndex::from_labels(
                endpoints.iter().map(|e| &e.labels),
            );
            let mut out = Vec::new();
            for s in &services {
                for &family in &s.families {
                    let want = churn::backends_indexed(s, family, &endpoints, &index);
                    if let Some(u) = stale_update(s, family, want) {
                        out.push(u);
                    }
                }
            }
            out
        } else {
            Vec::new()
        };
        let (_, declared) = churn::split_declared(manifest);
        Ok(Record {
            header: Header {
                unique: churn::unique(&endpoints),
                declared,
                ..header
            },
            statics: Side::new("static", encode_statics(&view, &services)),
            lb: Side::new("lb", serde_json::to_vec(&lb).expect("JSON")),
            stale: Bytes::New(serde_json::to_vec(&stale).expect("JSON")),
            endpoints: Bytes::New(entries::encode_all(&endpoints)),
        })
    }

    /// Section 2: the class view, and the service table's bytes.
    fn statics(&self, dir: &Path) -> Result<(ClassView, &[u8]), EndpointsError> {
        let s = self.statics.get(dir)?;
        let n = s.get(..4).ok_or_else(|| bad_record("truncated"))?;
        let n = u32::from_le_bytes(n.try_into().expect("4 bytes")) as usize;
        let view = s.get(4..4 + n).ok_or_else(|| bad_record("truncated"))?;
        let view = serde_json::from_slice(view).map_err(bad_record)?;
        Ok((view, &s[4 + n..]))
    }
}

/// `Some` when `s`'s backends over the inventory (`want`) differ from
/// the compiled ones.
fn stale_update(s: &SelectorService, family: u8, want: Vec<Be>) -> Option<Stale> {
    let compiled = s.compiled.get(&family).map_or(&[][..], Vec::as_slice);
    (want != compiled).then(|| Stale {
        index: s.index,
        update: ServiceUpdate {
            service: s.name.clone(),
            family,
            backends: want.iter().map(socket).collect(),
        },
        backends: want,
    })
}

/// `endpoints.json` of an earlier weir.
#[derive(Deserialize)]
struct LegacyRecord {
    generation: u64,
    bundle: String,
    endpoints: Vec<EndpointRec>,
    #[serde(default)]
    lb: Option<LbState>,
}

fn read_legacy(
    dir: &Path,
    generation: u64,
    bundle: &str,
) -> Option<(Vec<EndpointRec>, Option<LbState>)> {
    let text = std::fs::read(dir.join(LEGACY_RECORD)).ok()?;
    let r: LegacyRecord = serde_json::from_slice(&text).ok()?;
    (r.generation == generation && r.bundle == bundle).then_some((r.endpoints, r.lb))
}

fn write_failed(dir: &Path, e: std::io::Error) -> EndpointsError {
    EndpointsError::Bundle(format!(
        "the update is in force but recording it in {} failed: {e}",
        dir.join(RECORD).display()
    ))
}

/// What an inventory changes against a record.
struct Planned {
    diff: churn::TextDiff,
    changes: Vec<AddrChange>,
    /// Parsed when something changed.
    view: Option<ClassView>,
    /// The selector services whose backends may differ: their selector
    /// matches a changed endpoint (either version), or every one when
    /// the whole inventory was compared.
    affected: Vec<SelectorService>,
    /// The update in endpoint names (`--dry-run`).
    names: churn::NamePlan,
}

fn decode_all(entries_: &[u8]) -> Result<Vec<EndpointRec>, EndpointsError> {
    entries::split(entries_)
        .and_then(|(_, es)| es.iter().map(entries::Entry::decode).collect())
        .map_err(bad_record)
}

fn plan(rec: &Record, dir: &Path, text: &str) -> Result<Planned, EndpointsError> {
    let mut diff =
        churn::diff_text(&rec.endpoints, rec.header.unique, text).map_err(|e| match e {
            churn::DiffError::Inventory => EndpointsError::Inventory,
            churn::DiffError::Record(m) => bad_record(m),
        })?;
    keep_declared(&mut diff, &rec.header.declared)?;
    if let Some((o, n)) = &diff.changed {
        if o.is_empty() && n.is_empty() {
            return Ok(Planned {
                diff,
                changes: Vec::new(),
                view: None,
                affected: Vec::new(),
                names: churn::NamePlan::default(),
            });
        }
    }
    let (view, table) = rec.statics(dir)?;
    let (p, names) = match (&diff.changed, &diff.full) {
        (Some((o, n)), _) => (churn::plan(&view, o, n), churn::name_plan(o, n)),
        (None, Some(all)) => {
            let mut old = decode_all(&rec.endpoints)?;
            let (o, _, _) = churn::filter_declared(&rec.header.declared, old, Vec::new());
            old = o;
            old.extend(rec.header.declared.iter().cloned());
            (churn::plan(&view, &old, all), churn::name_plan(&old, all))
        }
        (None, None) => unreachable!("diff_text gives the changes or the inventory"),
    };
    if !p.refused.is_empty() {
        return Err(EndpointsError::Refused(p.refused));
    }
    let affected = match &diff.changed {
        Some((o, n)) => {
            let both: Vec<EndpointRec> = o.iter().chain(n).cloned().collect();
            churn::service_table::affected(table, &both)
        }
        None => churn::service_table::decode_all(table),
    }
    .map_err(bad_record)?;
    Ok(Planned {
        diff,
        changes: p.changes,
        view: Some(view),
        affected,
        names,
    })
}

/// Takes the source-declared endpoints out of `diff` (see
/// [`churn::filter_declared`]): the changed endpoints lose them, a whole
/// inventory gets them back as they were declared. Refuses an inventory
/// that changes or shadows one.
fn keep_declared(
    diff: &mut churn::TextDiff,
    declared: &[EndpointRec],
) -> Result<(), EndpointsError> {
    if declared.is_empty() {
        return Ok(());
    }
    if let Some((o, n)) = diff.changed.take() {
        let (o, n, refused) = churn::filter_declared(declared, o, n);
        if !refused.is_empty() {
            return Err(EndpointsError::Refused(refused));
        }
        diff.changed = Some((o, n));
    }
    if let Some(all) = diff.full.take() {
        let (_, mut n, refused) = churn::filter_declared(declared, Vec::new(), all);
        if !refused.is_empty() {
            return Err(EndpointsError::Refused(refused));
        }
        n.extend(declared.iter().cloned());
        diff.full = Some(n);
    }
    Ok(())
}

/// The backends `s` has for `family` after the update: from those it
/// had (`have`) and the changed endpoints, or over the whole inventory
/// when that was parsed (through a label index for many services).
fn backends_after<'a>(
    diff: &'a churn::TextDiff,
    s: &SelectorService,
    family: u8,
    have: &[Be],
    index: &mut Option<weir_compiler::endpoint_index::EndpointIndex<'a>>,
    many: bool,
) -> Vec<Be> {
    match (&diff.changed, &diff.full) {
        (Some((o, n)), _) => churn::backends_delta(s, family, have, o, n),
        (None, Some(all)) => churn::backends_auto(s, family, all, index, many),
        (None, None) => unreachable!("diff_text gives the changes or the inventory"),
    }
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

/// Services affected by more than this are computed through a label
/// index of the inventory instead of one scan each.
const SCAN_LIMIT: usize = 8;

/// Applies `inventory` to the iptables generation in force (see the
/// module docs). `bundle` must be the applied bundle.
pub fn iptables(
    rt: &crate::iptables::Iptables,
    bundle: &crate::Bundle,
    inventory: &[EndpointRec],
) -> Result<Report, EndpointsError> {
    iptables_text(rt, bundle, &churn::inventory_text(inventory))
}

/// [`iptables`] given the inventory file's text: only the endpoints
/// whose text changed are parsed.
pub fn iptables_text(
    rt: &crate::iptables::Iptables,
    bundle: &crate::Bundle,
    inventory: &str,
) -> Result<Report, EndpointsError> {
    iptables_update(rt, Given::Read(bundle), inventory, false)
}

/// [`iptables_text`] given the bundle directory (what `weir endpoints`
/// runs): when `dir`'s files are the ones recorded for the generation in
/// force (same device, inode, size, modification and change time), the
/// bundle is neither read nor hashed; otherwise it is read
/// ([`crate::Bundle::read`]) and its content hash compared with the
/// applied one, as [`iptables_text`] does.
pub fn iptables_dir(
    rt: &crate::iptables::Iptables,
    dir: &Path,
    inventory: &str,
) -> Result<Report, EndpointsError> {
    iptables_dir_mode(rt, dir, inventory, false)
}

/// [`iptables_dir`] without writing anything: the report's `dry_run`
/// holds the update in endpoint names.
pub fn iptables_dry_run(
    rt: &crate::iptables::Iptables,
    dir: &Path,
    inventory: &str,
) -> Result<Report, EndpointsError> {
    iptables_dir_mode(rt, dir, inventory, true)
}

fn iptables_dir_mode(
    rt: &crate::iptables::Iptables,
    dir: &Path,
    inventory: &str,
    dry_run: bool,
) -> Result<Report, EndpointsError> {
    let ids = crate::bundle::identities(dir);
    if ids[0].1.is_none() {
        // No manifest: the reader's error.
        let b = crate::Bundle::read(dir)?;
        return iptables_update(rt, Given::Read(&b), inventory, dry_run);
    }
    iptables_update(rt, Given::Dir(dir, ids), inventory, dry_run)
}

/// The bundle `weir endpoints` was given.
enum Given<'a> {
    Read(&'a crate::Bundle),
    /// A directory and its files' identities (taken before anything
    /// else).
    Dir(&'a Path, BundleFiles),
}

/// The generation's address sets: (kernel name, family, classes).
fn iptables_sets(
    bundle: &crate::Bundle,
    state: &crate::iptables::State,
) -> Vec<(String, u8, Vec<u32>)> {
    let mut sets = Vec::new();
    for s in &bundle.sets {
        let family = match crate::Bundle::set_family(s) {
            crate::bundle::Family::Ipv4 => 4,
            crate::bundle::Family::Ipv6 => 6,
        };
        let kernel = state
            .sets
            .iter()
            .find(|k| k.name == s.name)
            .map(|k| k.kernel_name.clone())
            .unwrap_or_else(|| crate::iptables::names::generation_set(&s.name, state.generation));
        sets.push((kernel, family, s.classes.clone()));
    }
    sets
}

/// The record of an iptables generation just applied from `bundle`
/// (`state`, written to `state.json`): the compiled inventory, with the
/// bundle files' identities when they can be trusted, so the first
/// `weir endpoints` neither builds the record nor reads the bundle.
/// Best effort: without a record, the next update builds it.
pub fn iptables_applied(
    rt: &crate::iptables::Iptables,
    bundle: &crate::Bundle,
    state: &crate::iptables::State,
) {
    let dir = &rt.options().state_dir;
    let applied = file_identity(&dir.join("state.json"));
    let header = Header {
        files: bundle.files.clone(),
        sets: Some(iptables_sets(bundle, state)),
        ..Header::new(
            u64::from(state.generation),
            state.bundle_hash.clone(),
            applied,
        )
    };
    match Record::from_manifest(&bundle.manifest, header, None, true) {
        Ok(r) => {
            let _ = r.write(dir);
        }
        Err(_) => {
            let _ = std::fs::remove_file(dir.join(RECORD));
        }
    }
}

fn iptables_update(
    rt: &crate::iptables::Iptables,
    given: Given<'_>,
    inventory: &str,
    dry_run: bool,
) -> Result<Report, EndpointsError> {
    use crate::iptables::exec;
    let t0 = Instant::now();
    exec::require_root()?;
    exec::require_program("ipset")?;
    let _lock = rt.lock()?;
    rt.recover()?;
    let state = rt.read_state()?.ok_or_else(|| {
        EndpointsError::NotInForce("nothing is applied (iptables): run `weir apply` first".into())
    })?;
    let generation = u64::from(state.generation);
    let dir = rt.options().state_dir.clone();
    // `state.json` is replaced by every apply (and removed by detach):
    // a record made after another apply is not this generation's, even
    // when the generation number repeats.
    let applied = file_identity(&dir.join("state.json"));
    let recorded = Record::read(&dir).filter(|r| {
        r.header.generation == generation
            && r.header.bundle == state.bundle_hash
            && r.header.manifest == applied
    });
    // The bundle's files are the ones recorded for this generation: it
    // is the bundle in force, and the record holds what the update needs.
    let known = match (&given, &recorded) {
        (Given::Dir(_, ids), Some(r)) => {
            r.header.sets.is_some() && r.header.files.as_ref() == Some(ids)
        }
        _ => false,
    };
    let rec = if known {
        recorded.expect("a record")
    } else {
        let read;
        let bundle = match given {
            Given::Read(b) => b,
            Given::Dir(d, _) => {
                read = crate::Bundle::read(d)?;
                &read
            }
        };
        if state.bundle_hash != bundle.content_hash {
            return Err(EndpointsError::NotInForce(format!(
                "{} is not the bundle in force (generation {} was applied from {}); apply it first",
                bundle.dir.display(),
                state.generation,
                state.bundle_dir
            )));
        }
        let mut rec = match recorded {
            Some(r) => r,
            None => Record::from_manifest(
                &bundle.manifest,
                Header::new(generation, state.bundle_hash.clone(), applied.clone()),
                read_legacy(&dir, generation, &state.bundle_hash).map(|(e, _)| (e, None)),
                true,
            )
            .map_err(EndpointsError::Bundle)?,
        };
        if bundle.files.is_some() {
            rec.header.files = bundle.files.clone();
        }
        rec.header.sets = Some(iptables_sets(bundle, &state));
        rec
    };
    let planned = plan(&rec, &dir, inventory)?;
    let changes = &planned.changes;

    // Address sets of the generation: (kernel name, family, classes).
    let sets = rec.header.sets.clone().unwrap_or_default();
    let mut text = String::new();
    for c in changes {
        use std::fmt::Write;
        let family = if c.addr.is_ipv4() { 4 } else { 6 };
        for (kernel, f, classes) in &sets {
            if *f != family {
                continue;
            }
            let a = c.addr;
            let _ = writeln!(text, "del {kernel} {a}");
            match c.new {
                Some(n) if classes.contains(&n) => {
                    let _ = writeln!(text, "add {kernel} {a}");
                }
                Some(_) if classes.contains(&c.base) => {
                    let _ = writeln!(text, "add {kernel} {a} nomatch");
                }
                None if classes.contains(&c.base) => {
                    let _ = writeln!(text, "add {kernel} {a}");
                }
                _ => {}
            }
        }
    }

    // Services: DNAT rules, fixed at compile time. The record lists the
    // services whose backends differ from the compiled ones (earlier
    // updates count too); only those whose selector matches a changed
    // endpoint are compared again.
    let affected = &planned.affected;
    let mut stale: Vec<Stale> = serde_json::from_slice(&rec.stale).map_err(bad_record)?;
    let stale_bytes = if affected.is_empty() {
        None
    } else {
        let ids: std::collections::BTreeSet<usize> = affected.iter().map(|s| s.index).collect();
        let (before, mut kept): (Vec<Stale>, Vec<Stale>) =
            stale.into_iter().partition(|s| ids.contains(&s.index));
        let mut index = None;
        let many = affected.len() > SCAN_LIMIT;
        for s in affected {
            for &family in &s.families {
                let have = before
                    .iter()
                    .find(|x| x.index == s.index && x.update.family == family)
                    .map(|x| x.backends.as_slice())
                    .or_else(|| s.compiled.get(&family).map(Vec::as_slice))
                    .unwrap_or_default();
                let want = backends_after(&planned.diff, s, family, have, &mut index, many);
                kept.extend(stale_update(s, family, want));
            }
        }
        stale = kept;
        stale.sort_by_key(|s| (s.index, s.update.family));
        Some(serde_json::to_vec(&stale).expect("JSON"))
    };
    let needs_recompile = stale.into_iter().map(|s| s.update).collect();
    let writes = text.lines().count();
    if dry_run {
        return Ok(dry_report(generation, planned, needs_recompile, writes, t0));
    }

    let t1 = Instant::now();
    swap_in(rt, &state, &text)?;
    let apply_time = t1.elapsed();
    let Planned { diff, changes, .. } = planned;
    Record {
        header: Header {
            unique: diff.unique,
            ..rec.header
        },
        statics: rec.statics,
        lb: rec.lb,
        stale: stale_bytes.map_or(rec.stale, Bytes::New),
        endpoints: Bytes::New(diff.entries),
    }
    .write(&dir)
    .map_err(|e| write_failed(&dir, e))?;
    Ok(Report {
        generation,
        changes,
        services: Vec::new(),
        needs_recompile,
        writes,
        apply_time,
        total_time: t0.elapsed(),
        dry_run: None,
    })
}

/// The report of a `--dry-run`: nothing was written.
fn dry_report(
    generation: u64,
    planned: Planned,
    needs_recompile: Vec<ServiceUpdate>,
    writes: usize,
    t0: Instant,
) -> Report {
    Report {
        generation,
        changes: planned.changes,
        services: Vec::new(),
        needs_recompile,
        writes,
        apply_time: Duration::ZERO,
        total_time: t0.elapsed(),
        dry_run: Some(planned.names),
    }
}

/// Writes `text` (ipset `del`/`add` lines) by building the touched sets
/// beside the live ones and swapping them in: a refused or failed update
/// writes nothing ([`crate::iptables::sets`]).
fn swap_in(
    rt: &crate::iptables::Iptables,
    state: &crate::iptables::State,
    text: &str,
) -> Result<(), EndpointsError> {
    use crate::iptables::sets::SwapError;
    if text.is_empty() {
        return Ok(());
    }
    match rt.swap_sets(text) {
        Ok(_) => Ok(rt.refresh_applied_sets(state)?),
        Err(SwapError::Capacity(m)) => Err(EndpointsError::Refused(vec![m])),
        Err(SwapError::Failed(e)) => Err(e.into()),
    }
}

/// The generation in force on an eBPF instance (`state.json`).
fn ebpf_generation(inst: &crate::ebpf::Instance) -> Result<u64, EndpointsError> {
    let not = || {
        EndpointsError::NotInForce(format!(
            "nothing is applied for eBPF instance `{}`: run `weir apply --backend ebpf` first",
            inst.name()
        ))
    };
    /// The part of the eBPF state record read here.
    #[derive(serde::Deserialize)]
    struct Generation {
        generation: u64,
    }
    let st: Generation = std::fs::read(inst.state_dir().join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
        .ok_or_else(not)?;
    Ok(st.generation)
}

/// The manifest recorded at apply (its text and contents).
fn ebpf_manifest(inst: &crate::ebpf::Instance) -> Result<(String, Manifest), EndpointsError> {
    let not = || {
        EndpointsError::NotInForce(format!(
            "nothing is applied for eBPF instance `{}`: run `weir apply --backend ebpf` first",
            inst.name()
        ))
    };
    let text =
        std::fs::read_to_string(inst.state_dir().join("manifest.json")).map_err(|_| not())?;
    let manifest = weir_compiler::contract::parse(text.as_bytes()).map_err(|e| {
        EndpointsError::Bundle(format!(
            "the manifest recorded at apply for `{}`: {e} (apply the bundle again)",
            inst.name()
        ))
    })?;
    Ok((text, manifest))
}

fn bundle_id(m: &Manifest) -> String {
    m.source_hash.clone()
}

fn manifest_lb(m: &Manifest) -> Option<LbState> {
    m.backends.ebpf.as_ref().and_then(|e| e.program.lb.clone())
}

/// Records the endpoints in force after `weir apply` of the bundle in
/// `dir` (manifest `full`) as `generation` of `inst`: the compiled
/// inventory and service maps. `manifest`: the identity of
/// `dir/manifest.json` taken before it was read. Best effort: without a
/// record, the next update builds it from the manifest.
pub fn ebpf_applied(
    inst: &crate::ebpf::Instance,
    full: &Manifest,
    generation: u64,
    manifest: Option<FileIdentity>,
) {
    let header = Header::new(generation, bundle_id(full), manifest);
    let sd = inst.state_dir();
    match Record::from_manifest(full, header, None, false) {
        Ok(r) => {
            let _ = r.write(&sd);
        }
        Err(_) => {
            let _ = std::fs::remove_file(sd.join(RECORD));
        }
    }
}

/// The service-map state of the eBPF generation in force (after any
/// endpoint updates): for `weir status`.
pub fn ebpf_services(inst: &crate::ebpf::Instance) -> Option<LbState> {
    let generation = ebpf_generation(inst).ok()?;
    let sd = inst.state_dir();
    if let Some(r) = Record::read(&sd).filter(|r| r.header.generation == generation) {
        return serde_json::from_slice(r.lb.get(&sd).ok()?).ok().flatten();
    }
    let (_, manifest) = ebpf_manifest(inst).ok()?;
    match read_legacy(&sd, generation, &bundle_id(&manifest)) {
        Some((_, lb)) => lb,
        None => manifest_lb(&manifest),
    }
}

/// Steps 1–3 of an eBPF endpoint update (see [`ebpf_text`]): the writes
/// and the services whose backends changed. The caller rolls back on
/// error.
fn write_maps(
    pinned: &mut crate::ebpf::txn::PinnedMaps,
    planned: &Planned,
    lb: Option<&mut LbState>,
) -> Result<(usize, Vec<ServiceUpdate>), EndpointsError> {
    let changes = &planned.changes;
    let affected = &planned.affected;
    let mut writes = 0;
    // 1. New and re-classed addresses: a backend must be classified
    // before the service maps can send traffic to it.
    for c in changes {
        if let Some(n) = c.new {
            let (map, key) = host_key(c.addr);
            pinned.update(map, &key, &n.to_ne_bytes())?;
            writes += 1;
        }
    }
    // 2. Services.
    let mut updated = Vec::new();
    if let Some(lb) = lb {
        let mut index = None;
        let many = affected.len() > SCAN_LIMIT;
        for s in affected {
            for &family in &s.families {
                let have = lb
                    .services
                    .get(s.index)
                    .and_then(|x| x.sets.get(&family))
                    .map(|x| x.backends.as_slice())
                    .unwrap_or_default();
                let want = backends_after(&planned.diff, s, family, have, &mut index, many);
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
    for c in changes {
        if c.new.is_none() {
            let (map, key) = host_key(c.addr);
            let view = planned.view.as_ref().expect("parsed on a change");
            if set_host_prefix(view, c.addr) {
                pinned.update(map, &key, &c.base.to_ne_bytes())?;
            } else {
                pinned.delete(map, &key)?;
            }
            writes += 1;
        }
    }
    Ok((writes, updated))
}

/// The map and key of an endpoint's class-map (host) entry.
fn host_key(addr: std::net::IpAddr) -> (&'static str, Vec<u8>) {
    use weir_compiler::ebpf::layout::class_key;
    match addr {
        std::net::IpAddr::V4(a) => class_key(&a.octets(), 32),
        std::net::IpAddr::V6(a) => class_key(&a.octets(), 128),
    }
}

/// Applies `inventory` to the eBPF generation in force on `inst` (see
/// the module docs). `dir` must be the applied bundle (its manifest is
/// the one recorded at apply: the same file, or the same content).
pub fn ebpf(
    inst: &crate::ebpf::Instance,
    dir: &Path,
    inventory: &[EndpointRec],
) -> Result<Report, EndpointsError> {
    ebpf_text(inst, dir, &churn::inventory_text(inventory))
}

/// [`ebpf_text`] without writing anything: the report's `dry_run` holds
/// the update in endpoint names (service backend changes are not
/// computed).
pub fn ebpf_dry_run(
    inst: &crate::ebpf::Instance,
    dir: &Path,
    inventory: &str,
) -> Result<Report, EndpointsError> {
    ebpf_mode(inst, dir, inventory, true)
}

/// [`ebpf`] given the inventory file's text (what `weir endpoints`
/// reads): only the endpoints whose text changed are parsed.
pub fn ebpf_text(
    inst: &crate::ebpf::Instance,
    dir: &Path,
    inventory: &str,
) -> Result<Report, EndpointsError> {
    ebpf_mode(inst, dir, inventory, false)
}

fn ebpf_mode(
    inst: &crate::ebpf::Instance,
    dir: &Path,
    inventory: &str,
    dry_run: bool,
) -> Result<Report, EndpointsError> {
    let t0 = Instant::now();
    if unsafe { libc::geteuid() } != 0 {
        return Err(crate::ebpf::EbpfError::NotPrivileged {
            detail: "run as root".into(),
        }
        .into());
    }
    // Not while an apply runs; an interrupted one is finished first.
    let _lock = match inst.state_dir().exists() {
        true => Some(crate::ebpf::record::settle(inst)?),
        false => None,
    };
    let generation = ebpf_generation(inst)?;
    let sd = inst.state_dir();
    let given_path = dir.join("manifest.json");
    let unreadable =
        || EndpointsError::Bundle(format!("{}/manifest.json is unreadable", dir.display()));
    let taken = std::time::SystemTime::now();
    let given_id = file_identity(&given_path).ok_or_else(unreadable)?;
    let mut rec = Record::read(&sd).filter(|r| r.header.generation == generation);
    // The identity recorded for the next update: the file's, unless it
    // was compared by content and changed too recently to stand for it
    // (see `crate::bundle::trusted_identities`).
    let mut record_id = Some(given_id.clone());
    if rec
        .as_ref()
        .is_none_or(|r| r.header.manifest.as_ref() != Some(&given_id))
    {
        record_id = crate::bundle::trusted_identities(
            vec![(crate::bundle::MANIFEST.to_string(), Some(given_id.clone()))],
            taken,
        )
        .map(|_| given_id.clone());
        // Not the file recorded at apply: compare the contents with the
        // manifest recorded at apply (identical text is the same
        // manifest).
        let (recorded_text, manifest) = ebpf_manifest(inst)?;
        let given_text = std::fs::read_to_string(&given_path).map_err(|_| unreadable())?;
        let same = given_text == recorded_text || {
            let given = weir_compiler::contract::parse(given_text.as_bytes())
                .map_err(|e| EndpointsError::Bundle(format!("{}: {e}", given_path.display())))?;
            given == manifest
        };
        if !same {
            return Err(EndpointsError::NotInForce(format!(
                "{} is not the bundle in force on `{}` (generation {generation}); apply it first",
                dir.display(),
                inst.name()
            )));
        }
        let id = bundle_id(&manifest);
        rec = Some(match rec.filter(|r| r.header.bundle == id) {
            Some(r) => r,
            None => Record::from_manifest(
                &manifest,
                Header::new(generation, id.clone(), None),
                read_legacy(&sd, generation, &id),
                false,
            )
            .map_err(EndpointsError::Bundle)?,
        });
    }
    let rec = rec.expect("a record");
    let planned = plan(&rec, &sd, inventory)?;
    if dry_run {
        let writes = planned.changes.len();
        return Ok(dry_report(generation, planned, Vec::new(), writes, t0));
    }
    let changes = &planned.changes;
    // The service maps hold the backends over the recorded endpoints:
    // only services whose selector matches an endpoint that changed
    // (either version) can differ.
    let affected = &planned.affected;
    let mut lb: Option<LbState> = None;
    if !affected.is_empty() {
        lb = serde_json::from_slice(rec.lb.get(&sd)?).map_err(bad_record)?;
    }

    let t1 = Instant::now();
    let mut pinned =
        crate::ebpf::txn::PinnedMaps::new(inst.pin_dir().join(format!("gen-{generation}")));
    // Capacity first: a full hash map must refuse the update before any
    // entry is written.
    let mut inserts: BTreeMap<&str, Vec<Vec<u8>>> = BTreeMap::new();
    for c in changes.iter().filter(|c| c.new.is_some()) {
        let (map, key) = host_key(c.addr);
        inserts.entry(map).or_default().push(key);
    }
    for (map, keys) in &inserts {
        pinned
            .check_capacity(map, keys)
            .map_err(|e| EndpointsError::Refused(vec![e]))?;
    }
    let (writes, updated) = match write_maps(&mut pinned, &planned, lb.as_mut()) {
        Ok(w) => w,
        Err(e) => {
            let n = pinned.writes();
            let failed = pinned.rollback();
            return Err(if failed.is_empty() {
                EndpointsError::Refused(vec![format!(
                    "{e} (the {n} map writes made before were rolled back)"
                )])
            } else {
                EndpointsError::Bundle(format!(
                    "{e}; rolling back the {n} map writes made before failed ({}): the generation in force is partly updated, re-run `weir endpoints` or `weir apply`",
                    failed.join("; ")
                ))
            });
        }
    };
    let apply_time = t1.elapsed();
    let lb_bytes = if updated.is_empty() {
        rec.lb
    } else {
        Side::new("lb", serde_json::to_vec(&lb).expect("JSON"))
    };
    let Planned { diff, changes, .. } = planned;
    Record {
        header: Header {
            manifest: record_id,
            unique: diff.unique,
            ..rec.header
        },
        statics: rec.statics,
        lb: lb_bytes,
        stale: rec.stale,
        endpoints: Bytes::New(diff.entries),
    }
    .write(&sd)
    .map_err(|e| write_failed(&sd, e))?;
    Ok(Report {
        generation,
        changes,
        services: updated,
        needs_recompile: Vec::new(),
        writes,
        apply_time,
        total_time: t0.elapsed(),
        dry_run: None,
    })
}
