//! Reading a bundle directory written by `weir compile`.
//!
//! The manifest's format is [`weir_compiler::contract`]: it is parsed
//! into its types, refused when its version is not this weir's or a
//! value is out of range, and every file used is checked against the
//! SHA-256 the manifest lists for it before anything is applied. Files
//! are read only under plain names inside the bundle directory, never
//! through a symlink, and only when they are regular files.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use weir_compiler::contract::{self, iptables as ipt, Manifest};

use crate::error::Error;
use crate::statefs::file_identity;
use weir_compiler::contract::endpoints_state::FileIdentity;

pub use weir_compiler::contract::{IP6TABLES_RULES, IPSET_RULES, IPTABLES_RULES, MANIFEST};

/// IP family of iptables rules: the contract's (one definition).
pub use weir_compiler::contract::iptables::Family;

/// One jump from a built-in chain into the bundle's chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// `filter`, `nat`, `mangle`, `raw`.
    pub table: String,
    /// The built-in chain, e.g. `FORWARD`.
    pub chain: String,
    /// The bundle's chain it enters, e.g. `WEIR-FORWARD`.
    pub target: String,
    /// Families the hook applies to (the manifest's `family`).
    pub families: Vec<Family>,
}

/// A set the bundle creates, as the manifest describes it.
pub type SetInfo = ipt::SetEntry;

/// A bundle directory, read into memory.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub iptables_rules: String,
    pub ip6tables_rules: String,
    pub ipset_rules: String,
    /// `backends.iptables.hooks`.
    pub hooks: Vec<Hook>,
    /// `backends.iptables.sets`.
    pub sets: Vec<SetInfo>,
    /// The compiler's hash of the policy source (always set).
    pub source_hash: Option<String>,
    /// SHA-256 of everything the iptables back end applies (manifest and
    /// rule files): equal hashes mean re-applying changes nothing.
    pub content_hash: String,
    /// The identities of the files [`Bundle::content_hash`] covers, taken
    /// before they were read and unchanged after, when they can be
    /// trusted to stand for that content (see [`trusted_identities`]):
    /// `weir endpoints` then recognises the bundle without reading it.
    pub files: Option<Vec<(String, Option<FileIdentity>)>>,
}

/// The files [`Bundle::content_hash`] covers.
pub const HASHED: [&str; 4] = [MANIFEST, IPTABLES_RULES, IP6TABLES_RULES, IPSET_RULES];

/// The identities of `dir`'s [`HASHED`] files (`None`: absent).
pub fn identities(dir: &Path) -> Vec<(String, Option<FileIdentity>)> {
    HASHED
        .iter()
        .map(|n| (n.to_string(), file_identity(&dir.join(n))))
        .collect()
}

/// `ids` (taken at `taken`) when a later change of any of those files
/// is sure to change its identity: every file's last change lies
/// clearly before `taken` (file times advance in clock ticks, so a
/// write in the tick of the last change could keep size and times;
/// times without nanoseconds suggest a coarse file system).
pub fn trusted_identities(
    ids: Vec<(String, Option<FileIdentity>)>,
    taken: std::time::SystemTime,
) -> Option<Vec<(String, Option<FileIdentity>)>> {
    let now = taken.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos() as i128;
    let ok = ids.iter().all(|(_, id)| {
        id.as_ref().is_none_or(|id| {
            let last = id.changed_ns();
            let margin: i128 = if id.coarse() {
                3_000_000_000
            } else {
                100_000_000
            };
            now - last > margin
        })
    });
    ok.then_some(ids)
}

/// Reads `name` of `dir`: a plain file name (no directory part), not a
/// symlink (`O_NOFOLLOW`), a regular file (not a FIFO or a device).
pub fn read_file(dir: &Path, name: &str) -> Result<Vec<u8>, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    if !contract::plain_name(name) {
        return Err(Error::bundle(
            &path,
            format!("`{name}` is not a plain file name of the bundle directory"),
        ));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => Error::bundle(
                &path,
                "is a symlink; a bundle's files are read only from the bundle directory itself",
            ),
            _ => Error::bundle(&path, e.to_string()),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| Error::bundle(&path, e.to_string()))?;
    if !meta.is_file() {
        return Err(Error::bundle(&path, "is not a regular file"));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&file)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::bundle(&path, e.to_string()))?;
    Ok(bytes)
}

/// Reads and parses `dir/manifest.json` ([`contract::parse`]: version,
/// shape, values). Returns its text too.
pub fn read_manifest(dir: &Path) -> Result<(Vec<u8>, Manifest), Error> {
    let text = read_file(dir, MANIFEST)?;
    let m = contract::parse(&text).map_err(|e| Error::bundle(dir.join(MANIFEST), e.to_string()))?;
    Ok((text, m))
}

/// Reads the artifact `name` of the bundle whose manifest is `m`: it
/// must be listed in `artifacts`, and its SHA-256 must be the listed one.
pub fn read_artifact(dir: &Path, m: &Manifest, name: &str) -> Result<Vec<u8>, Error> {
    let path = dir.join(name);
    let want = m.artifacts.get(name).ok_or_else(|| {
        Error::bundle(&path, "the manifest does not list this file in `artifacts`")
    })?;
    let bytes = read_file(dir, name)?;
    if &contract::sha256_hex(&bytes) != want {
        return Err(Error::bundle(
            &path,
            "its SHA-256 is not the one the manifest lists: the file was changed or belongs to another bundle; recompile (`weir compile`) and apply the whole bundle",
        ));
    }
    Ok(bytes)
}

/// The error for a bundle without the back end `wanted`.
pub fn lacks_backend(dir: &Path, m: &Manifest, wanted: contract::Target) -> Error {
    let other = match wanted {
        contract::Target::Ebpf => "`--backend iptables`",
        contract::Target::Iptables => "`--backend ebpf`",
    };
    Error::bundle(
        dir,
        format!(
            "the bundle has no {w} back end (it was compiled for {has}); nothing was changed. Apply it with {other}, or compile with `--target {w}` (or `all`)",
            w = wanted.name(),
            has = m.backend_names(),
        ),
    )
}

fn text(dir: &Path, name: &str, bytes: Vec<u8>) -> Result<String, Error> {
    String::from_utf8(bytes).map_err(|_| Error::bundle(dir.join(name), "is not UTF-8 text"))
}

fn family(f: ipt::Family) -> Family {
    match f {
        ipt::Family::Ipv4 => Family::Ipv4,
        ipt::Family::Ipv6 => Family::Ipv6,
    }
}

/// The eBPF half of a bundle: the manifest (and its text) and the
/// object, checked against its hash.
pub struct EbpfBundle {
    pub text: Vec<u8>,
    pub manifest: Manifest,
    pub object: Vec<u8>,
}

impl EbpfBundle {
    /// Reads `dir` for the eBPF back end; refuses a bundle without it.
    pub fn read(dir: &Path) -> Result<EbpfBundle, Error> {
        let (text, manifest) = read_manifest(dir)?;
        let Some(e) = &manifest.backends.ebpf else {
            return Err(lacks_backend(dir, &manifest, contract::Target::Ebpf));
        };
        let object = read_artifact(dir, &manifest, &e.program.object)?;
        Ok(EbpfBundle {
            text,
            manifest,
            object,
        })
    }

    /// The eBPF section (present: checked by [`EbpfBundle::read`]).
    pub fn ebpf(&self) -> &weir_compiler::ebpf::codegen::EbpfManifest {
        &self
            .manifest
            .backends
            .ebpf
            .as_ref()
            .expect("read checks")
            .program
    }
}

impl Bundle {
    /// Reads `dir` for the iptables back end: the manifest, then the
    /// rule files, each checked against its hash. A bundle without an
    /// iptables section is refused (applying it would remove the policy
    /// in force and put nothing in its place).
    pub fn read(dir: impl AsRef<Path>) -> Result<Bundle, Error> {
        let dir = dir.as_ref();
        let taken = std::time::SystemTime::now();
        let before = identities(dir);
        let (manifest_bytes, manifest) = read_manifest(dir)?;
        let Some(section) = manifest.backends.iptables.clone() else {
            return Err(lacks_backend(dir, &manifest, contract::Target::Iptables));
        };
        let manifest_text = text(dir, MANIFEST, manifest_bytes)?;
        let read = |name: &str| -> Result<String, Error> {
            text(dir, name, read_artifact(dir, &manifest, name)?)
        };
        let iptables_rules = read(IPTABLES_RULES)?;
        let ip6tables_rules = read(IP6TABLES_RULES)?;
        let ipset_rules = read(IPSET_RULES)?;

        let mut hasher = Sha256::new();
        for (name, text) in [
            (MANIFEST, &manifest_text),
            (IPTABLES_RULES, &iptables_rules),
            (IP6TABLES_RULES, &ip6tables_rules),
            (IPSET_RULES, &ipset_rules),
        ] {
            hasher.update(name.as_bytes());
            hasher.update((text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
        }
        let content_hash: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();

        let hooks = section
            .hooks
            .iter()
            .map(|h| Hook {
                table: h.table.clone(),
                chain: h.chain.clone(),
                target: h.target.clone(),
                families: h.family.families().into_iter().map(family).collect(),
            })
            .collect();
        let files = (identities(dir) == before)
            .then(|| trusted_identities(before, taken))
            .flatten();
        Ok(Bundle {
            files,
            dir: dir.to_path_buf(),
            source_hash: Some(manifest.source_hash.clone()),
            manifest,
            iptables_rules,
            ip6tables_rules,
            ipset_rules,
            hooks,
            sets: section.sets,
            content_hash,
        })
    }

    /// The family of a set of [`Bundle::sets`].
    pub fn set_family(set: &SetInfo) -> Family {
        family(set.family)
    }

    /// The restore text for a family.
    pub fn rules(&self, family: Family) -> &str {
        match family {
            Family::Ipv4 => &self.iptables_rules,
            Family::Ipv6 => &self.ip6tables_rules,
        }
    }

    /// The file name of a family's restore text.
    pub fn rules_file(&self, family: Family) -> PathBuf {
        self.dir.join(match family {
            Family::Ipv4 => IPTABLES_RULES,
            Family::Ipv6 => IP6TABLES_RULES,
        })
    }
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
mod tests;
