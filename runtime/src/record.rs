//! The endpoints record's files (`endpoints.state` and its side files)
//! in a state directory: reading, writing by rename, building it from a
//! manifest. The format is the contract's
//! ([`weir_compiler::contract::endpoints_state`]); this module does the
//! IO and keeps sections as bytes until they are needed.
//!
//! It sits below both the back ends and [`crate::endpoints`]: a back end's
//! apply records the bundle's compiled inventory ([`applied`]) and its
//! status reads the service state in force ([`lb_in_force`]) without
//! calling up into `weir endpoints`, which reads and rewrites the record
//! on each update. When the record is missing or belongs to another
//! generation (an instance applied by an earlier weir) the first update
//! builds it from the manifest (and an `endpoints.json` of an earlier
//! weir).

use std::path::Path;

use weir_compiler::churn::{self, entries, ClassView, EndpointRec, SelectorService};
use weir_compiler::contract::endpoints_state::{
    self as state, Header, LegacyRecord, Stale, LEGACY_RECORD, RECORD, SIDE,
};
use weir_compiler::contract::Manifest;
use weir_compiler::ebpf::service::{Be, LbState};

use weir_compiler::contract::endpoints_state::ServiceUpdate;

/// The record is unreadable or inconsistent (its file and what is wrong).
#[derive(Debug, Clone)]
pub struct RecordError(String);

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{RECORD}: {}", self.0)
    }
}

impl std::error::Error for RecordError {}

/// The record, its sections as bytes (parsed on demand).
pub(crate) struct Record {
    pub(crate) header: Header,
    pub(crate) statics: Side,
    pub(crate) lb: Side,
    pub(crate) stale: Bytes,
    pub(crate) endpoints: Bytes,
}

/// A side file of the record: written once under a fresh name, never
/// changed, read on first use.
pub(crate) struct Side {
    name: String,
    data: std::cell::OnceCell<Vec<u8>>,
    /// Not written yet.
    new: bool,
}

impl Side {
    pub(crate) fn new(kind: &str, data: Vec<u8>) -> Side {
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

    pub(crate) fn get(&self, dir: &Path) -> Result<&[u8], RecordError> {
        if let Some(d) = self.data.get() {
            return Ok(d);
        }
        let d = crate::statefs::read_file(&dir.join(&self.name))
            .map_err(|e| bad_record(format!("{}: {e}", self.name)))?;
        Ok(self.data.get_or_init(|| d))
    }
}

/// A section: part of the record file read, or new bytes.
pub(crate) enum Bytes {
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

pub(crate) fn bad_record(e: impl std::fmt::Display) -> RecordError {
    RecordError(e.to_string())
}

impl Record {
    pub(crate) fn read(dir: &Path) -> Option<Record> {
        let bytes = std::rc::Rc::new(crate::statefs::read_file(&dir.join(RECORD)).ok()?);
        let (header, stale, endpoints) = state::split(&bytes)?;
        Some(Record {
            statics: Side::existing(&header.statics),
            lb: Side::existing(&header.lb),
            header,
            stale: Bytes::Read(bytes.clone(), stale),
            endpoints: Bytes::Read(bytes, endpoints),
        })
    }

    pub(crate) fn write(&self, dir: &Path) -> std::io::Result<()> {
        use crate::statefs;
        statefs::secure_dir(dir)?;
        // Side files first: the record names them.
        for side in [&self.statics, &self.lb] {
            if side.new {
                statefs::write_file(&dir.join(&side.name), side.data.get().expect("new data"))?;
            }
        }
        let header = Header {
            statics: self.statics.name.clone(),
            lb: self.lb.name.clone(),
            ..self.header.clone()
        };
        let bytes = state::encode(&header, &self.stale, &self.endpoints);
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
    pub(crate) fn from_manifest(
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
                for g in &s.groups {
                    let want = churn::backends_indexed(s, g, &endpoints, &index);
                    if let Some(u) = stale_update(s, g, want) {
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
            statics: Side::new("static", state::encode_statics(&view, &services)),
            lb: Side::new("lb", state::encode_lb(&lb)),
            stale: Bytes::New(state::encode_stale(&stale)),
            endpoints: Bytes::New(entries::encode_all(&endpoints)),
        })
    }

    /// The statics side file: the class view, and the service table's
    /// bytes.
    pub(crate) fn statics(&self, dir: &Path) -> Result<(ClassView, &[u8]), RecordError> {
        state::decode_statics(self.statics.get(dir)?).map_err(bad_record)
    }
}

/// `Some` when the backends of `s`'s group `g` over the inventory
/// (`want`) differ from the compiled ones.
pub(crate) fn stale_update(
    s: &SelectorService,
    g: &churn::GroupBackends,
    want: Vec<Be>,
) -> Option<Stale> {
    (want != g.compiled).then(|| Stale {
        index: s.index,
        update: ServiceUpdate::new(&s.name, g.group, want.iter().map(socket).collect()),
        backends: want,
        in_place: false,
    })
}

pub(crate) fn read_legacy(
    dir: &Path,
    generation: u64,
    bundle: &str,
) -> Option<(Vec<EndpointRec>, Option<LbState>)> {
    let text = std::fs::read(dir.join(LEGACY_RECORD)).ok()?;
    let r: LegacyRecord = serde_json::from_slice(&text).ok()?;
    (r.generation == generation && r.bundle == bundle).then_some((r.endpoints, r.lb))
}

/// The service-map state a manifest was compiled with.
pub(crate) fn manifest_lb(m: &Manifest) -> Option<LbState> {
    m.backends.ebpf.as_ref().and_then(|e| e.program.lb.clone())
}

/// A backend as `weir endpoints` and `weir status` print it
/// (`ADDR:PORT`, `[ADDR6]:PORT`).
pub(crate) fn socket(b: &Be) -> String {
    match b.addr {
        std::net::IpAddr::V4(_) => format!("{}:{}", b.addr, b.port),
        std::net::IpAddr::V6(_) => format!("[{}]:{}", b.addr, b.port),
    }
}

/// Records the endpoints in force after `weir apply` of `manifest` in
/// the state directory `dir` (both back ends; `stale`: see
/// [`Record::from_manifest`]). Best effort: without a record, the next
/// update builds it from the manifest, so a failed write removes any
/// record of an earlier generation.
pub(crate) fn applied(dir: &Path, manifest: &Manifest, header: Header, stale: bool) {
    match Record::from_manifest(manifest, header, None, stale) {
        Ok(r) => {
            let _ = r.write(dir);
        }
        Err(_) => {
            let _ = std::fs::remove_file(dir.join(RECORD));
        }
    }
}

/// The service-map state of `generation` recorded in `dir` (after any
/// endpoint updates), else the one `manifest` (the bundle applied) was
/// compiled with: for `weir status` and `weir stats`.
pub(crate) fn lb_in_force(
    dir: &Path,
    generation: u64,
    manifest: impl FnOnce() -> Option<Manifest>,
) -> Option<LbState> {
    if let Some(r) = Record::read(dir).filter(|r| r.header.generation == generation) {
        return state::decode_lb(r.lb.get(dir).ok()?).ok().flatten();
    }
    let manifest = manifest()?;
    match read_legacy(dir, generation, &manifest.source_hash) {
        Some((_, lb)) => lb,
        None => manifest_lb(&manifest),
    }
}
