//! The compiler → runtime contract: the bundle's file names and the
//! manifest's types, in one place. `weir compile` writes a bundle with
//! the bundle's writer (`bundle/write.rs`: borrowed views, for speed);
//! the runtime, `weir endpoints`
//! ([`crate::churn`]) and tests read it with [`parse`] into [`Manifest`].
//! docs/bundle.md describes the format for people who load a bundle with
//! other tools.
//!
//! **One format, two forms.** Writing a large manifest is
//! allocation-bound, so the writer serializes borrowed views of the model
//! and graph (`bundle/write.rs`, beside the bundle it writes, so this
//! module needs nothing from the writer's side); readers deserialize
//! owned types ([`manifest`], [`iptables`], and the eBPF section's
//! [`ebpf`]), and
//! `contract::tests` checks that everything the writer writes parses
//! into the reader's types (which refuse unknown keys) and says the same.
//!
//! **Reading fails closed.** [`parse`] refuses a manifest of another
//! [`FORMAT_VERSION`] (or none) before looking at anything else, then a
//! manifest that does not have exactly the typed shape, then one whose
//! values are inconsistent ([`validate`]: class ids within the class
//! table, address lengths, hooks from the fixed set weir writes, plain
//! file names). The manifest binds the artifacts by their SHA-256
//! ([`Manifest::artifacts`]); the runtime checks a file's hash before it
//! uses it, and never reads a file that the manifest does not list.
//!
//! **The endpoints record** (`endpoints.state`, written by the runtime
//! at `weir apply` and by `weir endpoints`, read by the next
//! `weir endpoints` and `weir status`) is the other half of the
//! contract: its layout and typed sections are [`endpoints_state`], the
//! runtime only does the file IO.

pub mod atom_rows;
pub mod backend_group;
pub mod collector;
pub mod ebpf;
pub mod endpoints_state;
pub mod event;
pub mod iptables;
pub mod local_proxy;
pub mod manifest;
pub mod validate;

#[cfg(test)]
mod tests;

pub use backend_group::BackendGroup;
pub use manifest::*;

/// The manifest format this weir writes and the only one it reads. Bump
/// it whenever a field changes meaning, appears or goes; a runtime then
/// refuses older and newer bundles with [`ContractError::Version`].
///
/// History: 1 — the first typed manifest; 2 — `artifacts` (SHA-256 of
/// every file), every value validated on reading; 3 — a rule's
/// provenance entry names its `action` and its policy's `tier`; 4 — a
/// named target port's label key per frontend protocol
/// (`backend_selector.port_keys`, was one `port_key`), and the eBPF
/// service state's sets keyed by [`BackendGroup`]; the eBPF class rows
/// (`fill.atom_rows`) by their non-zero words ([`atom_rows`]: 100,000
/// one-peer rules wrote 700 MB of zeros); the `self` relation
/// (`fill.same_endpoint`); `backends.iptables.ipv6_class0`; 5 —
/// `local_proxies` (redirect proxies that must be on the host applying
/// the bundle, [`local_proxy`]; an older bundle without the key could
/// name such a proxy, so it is refused rather than read as having none);
/// 6 — one conntrack table per family (`weir_ct4` for IPv4 flows with
/// 16-byte keys, `weir_ct` for IPv6: a runtime of version 5 would not
/// keep `weir_ct4` across generations) and `backends.ebpf.collector`,
/// the declared conntrack collector (its arming program a `syscall`
/// program that calls the BPF workqueue's kfuncs).
pub const FORMAT_VERSION: u32 = 6;

pub const MANIFEST: &str = "manifest.json";
pub const GRAPH_TXT: &str = "graph.txt";
pub const WEIR_O: &str = "weir.o";
/// The eBPF listing with provenance (text; what `--emit asm` prints).
pub const WEIR_ASM: &str = "weir.asm";
pub const IPTABLES_RULES: &str = "iptables.rules";
pub const IP6TABLES_RULES: &str = "ip6tables.rules";
pub const IPSET_RULES: &str = "ipset.rules";

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractError {
    /// Not JSON, or not a JSON object.
    NotJson(String),
    /// `format_version` is missing (`None`) or not [`FORMAT_VERSION`].
    Version(Option<u64>),
    /// The JSON does not have the manifest's shape (a missing or unknown
    /// key, a value of the wrong type or out of its type's range).
    Shape(String),
    /// A value is inconsistent with the rest of the bundle.
    Invalid(String),
}

impl std::fmt::Display for ContractError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContractError::NotJson(e) => write!(f, "not a weir manifest (not JSON: {e})"),
            ContractError::Version(None) => write!(
                f,
                "the manifest has no `format_version`: it was not written by weir, or by a weir older than bundle format {FORMAT_VERSION}; recompile it with this weir (`weir compile`)"
            ),
            ContractError::Version(Some(v)) => write!(
                f,
                "bundle format version {v}, but this weir reads only format version {FORMAT_VERSION}; recompile the bundle with this weir (`weir compile`)"
            ),
            ContractError::Shape(e) => write!(f, "not a valid bundle manifest: {e}"),
            ContractError::Invalid(e) => write!(f, "inconsistent bundle manifest: {e}"),
        }
    }
}

impl std::error::Error for ContractError {}

/// Only the version: a manifest of another format is refused for its
/// version, not for its shape.
#[derive(serde::Deserialize)]
struct VersionOnly {
    format_version: Option<serde_json::Number>,
}

/// The version check of [`parse`]: `Ok` for this format.
fn check_version(text: &[u8]) -> Result<(), ContractError> {
    let v: VersionOnly =
        serde_json::from_slice(text).map_err(|e| ContractError::NotJson(e.to_string()))?;
    match v.format_version.map(|n| n.as_u64()) {
        Some(Some(n)) if n == u64::from(FORMAT_VERSION) => Ok(()),
        Some(n) => Err(ContractError::Version(Some(n.unwrap_or(u64::MAX)))),
        None => Err(ContractError::Version(None)),
    }
}

/// Reads a manifest's text: version, then shape, then [`validate`].
///
/// The shape is parsed first and the text read again for its version
/// only when that fails or the version read is not this format's, so a
/// good manifest is scanned once (23 MB at 100,000 rules, most of it
/// `provenance`; two scans were ~40 ms of every `weir apply`), and every
/// other one gets the error the version check gives first.
pub fn parse(text: &[u8]) -> Result<Manifest, ContractError> {
    let m: Manifest = match serde_json::from_slice(text) {
        Ok(m) => m,
        Err(e) => {
            check_version(text)?;
            return Err(ContractError::Shape(e.to_string()));
        }
    };
    if m.format_version != FORMAT_VERSION {
        check_version(text)?;
    }
    validate::manifest(&m).map_err(ContractError::Invalid)?;
    Ok(m)
}

/// SHA-256 of `bytes` as 64 lowercase hex digits (the form of
/// [`Manifest::artifacts`]).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Is `name` a plain file name: no directory part, not `.` or `..`, no
/// NUL, not empty? Every file a manifest names must be one, so a reader
/// that joins it to the bundle directory stays inside that directory
/// (symlinks are the reader's to refuse).
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && name.len() <= 255
}
