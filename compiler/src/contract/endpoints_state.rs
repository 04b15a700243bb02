//! `endpoints.state`: the record of the endpoints in force for one
//! generation, kept by the runtime next to the back end's state. It holds
//! everything `weir endpoints` needs, so an update neither reads nor
//! parses the bundle's manifest. This module is its format — the one
//! writer ([`encode`] and the section encoders) and the one reader
//! ([`split`] and the section decoders); the runtime
//! (`weir_runtime::endpoints`) only reads and writes the files.
//!
//! One file, replaced by rename (so it is always whole): [`MAGIC`], then
//! three sections, each a little-endian `u64` length and the bytes:
//! 1. the header (JSON [`Header`]: generation, bundle identity, the
//!    names of the two side files below);
//! 2. the services whose backends differ from the compiled ones (JSON
//!    list of [`Stale`], iptables);
//! 3. the endpoints in force ([`crate::churn::entries`]: each endpoint's
//!    JSON text as the inventory gave it, its name and addresses): a new
//!    inventory is compared with them text to text, and only the
//!    endpoints whose text differs are parsed.
//!
//! Two **side files** (named `endpoints.side.*` by the header, written
//! once under a fresh name and never changed, read on first use):
//! - the statics ([`encode_statics`]): the manifest's class data (a
//!   `u32` length and the JSON of [`ClassView`]) and its selector-backed
//!   services ([`crate::churn::service_table`]);
//! - the eBPF service-map allocation state (JSON `Option<LbState>`,
//!   `null` for iptables), parsed only when a service's backends change.
//!
//! [`LegacyRecord`] is `endpoints.json` of earlier weir versions, read
//! when the record is missing.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::ebpf::{Be, LbState};
use crate::churn::{service_table, ClassView, EndpointRec, SelectorService};

/// The record's file name in the state directory.
pub const RECORD: &str = "endpoints.state";
/// The record of earlier weir versions (JSON [`LegacyRecord`]).
pub const LEGACY_RECORD: &str = "endpoints.json";
/// Prefix of the side files' names.
pub const SIDE: &str = "endpoints.side.";
/// The record's first bytes (the format's version is in it).
pub const MAGIC: &[u8] = b"weir-endpoints 2\n";

/// A file's identity: equal identities mean equal contents (a write
/// changes the change time, a replacement the inode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// (seconds, nanoseconds) since the epoch.
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
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

/// A bundle's files and their identities (iptables).
pub type BundleFiles = Vec<(String, Option<FileIdentity>)>;

/// Section 1.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub generation: u64,
    /// Identifies the applied bundle (iptables content hash, eBPF source
    /// hash).
    pub bundle: String,
    /// eBPF: the identity of the applied bundle's `manifest.json`, known
    /// to hold the manifest in force; iptables: the identity of the
    /// `state.json` the apply wrote.
    #[serde(default)]
    pub manifest: Option<FileIdentity>,
    /// Every name and address appears once in the recorded endpoints.
    pub unique: bool,
    /// The side files holding the class view and selector services, and
    /// the eBPF service-map state.
    pub statics: String,
    pub lb: String,
    /// iptables: the identities of the applied bundle's hashed files,
    /// known to hold the content whose hash is `bundle`: a `DIR` whose
    /// files have them is the bundle in force without reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<BundleFiles>,
    /// iptables: the generation's address sets (kernel name, family,
    /// classes), from the manifest and `state.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sets: Option<Vec<(String, u8, Vec<u32>)>>,
    /// iptables: the generation has no IPv6 sets, every IPv6 address is
    /// class 0 (the manifest's `ipv6_class0`): an update giving an IPv6
    /// address another class is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipv6_class0: bool,
    /// iptables: the packet-mark bits of `self` (the manifest's
    /// `self_mark`) when not 0xfffff800 (`LEGACY_MASK`, what an absent
    /// one means): the id sets' members are encoded with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_mark: Option<u32>,
    /// The endpoints declared in the source: an inventory never removes
    /// or changes them ([`crate::churn::filter_declared`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub declared: Vec<EndpointRec>,
}

impl Header {
    pub fn new(generation: u64, bundle: String, manifest: Option<FileIdentity>) -> Header {
        Header {
            generation,
            bundle,
            manifest,
            unique: false,
            statics: String::new(),
            lb: String::new(),
            files: None,
            sets: None,
            ipv6_class0: false,
            self_mark: None,
            declared: Vec::new(),
        }
    }
}

/// One service's backends for one address family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceUpdate {
    pub service: String,
    pub family: u8,
    /// The frontends' protocol, when the service's backends are resolved
    /// per protocol (a named target port; [`super::BackendGroup`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// `addr:port` (weight 1: selector backends).
    pub backends: Vec<String>,
    /// iptables: why the frontends' chains could not be rewritten in
    /// place (the service needs the full path: `weir compile` + `weir
    /// apply`); `None` for an update that was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl ServiceUpdate {
    /// The update of `service`'s frontends of `group`.
    pub fn new(service: &str, group: super::BackendGroup, backends: Vec<String>) -> ServiceUpdate {
        ServiceUpdate {
            service: service.to_string(),
            family: group.family,
            proto: group.proto_name(),
            backends,
            why: None,
        }
    }

    /// The frontends it is about: `IPv4`, `IPv4 udp`.
    pub fn frontends(&self) -> String {
        match &self.proto {
            None => format!("IPv{}", self.family),
            Some(p) => format!("IPv{} {p}", self.family),
        }
    }
}

/// A service whose backends differ from the compiled ones (section 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stale {
    pub index: usize,
    pub update: ServiceUpdate,
    /// Its backends over the endpoints in force.
    pub backends: Vec<Be>,
    /// iptables: its frontends' chains were rewritten in place with these
    /// backends (`runtime/src/iptables/service_chains.rs`): the kernel
    /// holds them, no recompile is needed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_place: bool,
}

impl Stale {
    /// The frontends it is about.
    pub fn group(&self) -> super::BackendGroup {
        super::BackendGroup {
            family: self.update.family,
            proto: self
                .update
                .proto
                .as_deref()
                .and_then(super::backend_group::proto_number),
        }
    }
}

/// `endpoints.json` of an earlier weir.
#[derive(Deserialize)]
pub struct LegacyRecord {
    pub generation: u64,
    pub bundle: String,
    pub endpoints: Vec<EndpointRec>,
    #[serde(default)]
    pub lb: Option<LbState>,
}

/// The record file: [`MAGIC`], then the three sections (the header's
/// JSON, the stale services' JSON, the entries).
pub fn encode(header: &Header, stale: &[u8], entries: &[u8]) -> Vec<u8> {
    let header = serde_json::to_vec(header).expect("JSON");
    let parts: [&[u8]; 3] = [&header, stale, entries];
    let mut bytes = MAGIC.to_vec();
    for p in parts {
        bytes.extend_from_slice(&(p.len() as u64).to_le_bytes());
        bytes.extend_from_slice(p);
    }
    bytes
}

/// The header and the byte ranges of sections 2 and 3 of a record file;
/// `None` when it is not one (another format or truncated).
pub fn split(bytes: &[u8]) -> Option<(Header, Range<usize>, Range<usize>)> {
    if !bytes.starts_with(MAGIC) {
        return None;
    }
    let mut at = MAGIC.len();
    let mut sections = Vec::with_capacity(3);
    for _ in 0..3 {
        let len = bytes.get(at..at + 8)?;
        let len = usize::try_from(u64::from_le_bytes(len.try_into().ok()?)).ok()?;
        let end = at.checked_add(8 + len).filter(|&e| e <= bytes.len())?;
        sections.push(at + 8..end);
        at = end;
    }
    let mut s = sections.into_iter();
    let header: Header = serde_json::from_slice(&bytes[s.next()?]).ok()?;
    Some((header, s.next()?, s.next()?))
}

/// Section 2 (stale services).
pub fn encode_stale(stale: &[Stale]) -> Vec<u8> {
    serde_json::to_vec(stale).expect("JSON")
}

pub fn decode_stale(b: &[u8]) -> Result<Vec<Stale>, String> {
    serde_json::from_slice(b).map_err(|e| e.to_string())
}

/// The statics side file: a `u32` length and the JSON of the class
/// view, then the selector services ([`service_table`]).
pub fn encode_statics(view: &ClassView, services: &[SelectorService]) -> Vec<u8> {
    let view = serde_json::to_vec(view).expect("JSON");
    let mut out = (view.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&view);
    out.extend_from_slice(&service_table::encode(services));
    out
}

/// The class view and the service table's bytes of a statics side file.
pub fn decode_statics(s: &[u8]) -> Result<(ClassView, &[u8]), String> {
    let n = s.get(..4).ok_or("truncated")?;
    let n = u32::from_le_bytes(n.try_into().expect("4 bytes")) as usize;
    let view = s.get(4..4 + n).ok_or("truncated")?;
    let view = serde_json::from_slice(view).map_err(|e| e.to_string())?;
    Ok((view, &s[4 + n..]))
}

/// The service-map side file.
pub fn encode_lb(lb: &Option<LbState>) -> Vec<u8> {
    serde_json::to_vec(lb).expect("JSON")
}

pub fn decode_lb(b: &[u8]) -> Result<Option<LbState>, String> {
    serde_json::from_slice(b).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_what_was_written() {
        let mut h = Header::new(7, "abc".into(), None);
        h.unique = true;
        h.statics = format!("{SIDE}static.1");
        h.lb = format!("{SIDE}lb.1");
        let bytes = encode(&h, b"[]", b"entries");
        let (back, stale, entries) = split(&bytes).unwrap();
        assert_eq!(back.generation, 7);
        assert_eq!(back.statics, h.statics);
        assert!(decode_stale(&bytes[stale]).unwrap().is_empty());
        assert_eq!(&bytes[entries], b"entries");
        // Truncated or foreign: not a record.
        assert!(split(&bytes[..bytes.len() - 1]).is_none());
        assert!(split(b"{}").is_none());
    }
}
