//! Reading a bundle directory written by `weir compile`.
//!
//! The manifest format is owned by the compiler; the runtime reads only what
//! it needs and tolerates everything else. Files a back end does not use may
//! be absent.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::endpoints::{file_identity, FileIdentity};
use crate::error::Error;

pub const MANIFEST: &str = "manifest.json";
pub const IPTABLES_RULES: &str = "iptables.rules";
pub const IP6TABLES_RULES: &str = "ip6tables.rules";
pub const IPSET_RULES: &str = "ipset.rules";

/// IP family of iptables rules.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// One jump from a built-in chain into the bundle's chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// `filter`, `nat`, `mangle`, `raw`.
    pub table: String,
    /// The built-in chain, e.g. `FORWARD`.
    pub chain: String,
    /// The bundle's chain it enters, e.g. `WEIR-FORWARD`.
    pub target: String,
    /// Families the hook applies to: from the manifest's `"family"`
    /// (`"ipv4"`, `"ipv6"`, `"both"`), else IPv4, plus IPv6 when
    /// `ip6tables.rules` declares the target chain.
    pub families: Vec<Family>,
}

/// A set the bundle creates, as the manifest describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct SetInfo {
    /// The bundle's name, `weir-…`.
    pub name: String,
    /// What it is for (`"class"`, …), if the manifest says.
    pub kind: Option<String>,
    /// The manifest's whole entry.
    pub raw: Value,
}

/// A bundle directory, read into memory.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Value,
    pub iptables_rules: String,
    pub ip6tables_rules: String,
    pub ipset_rules: String,
    /// `manifest.iptables.hooks`.
    pub hooks: Vec<Hook>,
    /// `manifest.sets` or `manifest.iptables.sets`.
    pub sets: Vec<SetInfo>,
    /// The compiler's hash of the policy source, if the manifest has one.
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

fn read_optional(dir: &Path, name: &str) -> Result<String, Error> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(Error::bundle(path, e.to_string())),
    }
}

fn str_field<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| v.get(*k).and_then(Value::as_str))
}

impl Bundle {
    /// Reads `dir`: `manifest.json` is required, the rule files are optional.
    pub fn read(dir: impl AsRef<Path>) -> Result<Bundle, Error> {
        let dir = dir.as_ref();
        let taken = std::time::SystemTime::now();
        let before = identities(dir);
        let manifest_path = dir.join(MANIFEST);
        let manifest_text = std::fs::read_to_string(&manifest_path)
            .map_err(|e| Error::bundle(&manifest_path, e.to_string()))?;
        let manifest: Value = serde_json::from_str(&manifest_text)
            .map_err(|e| Error::bundle(&manifest_path, format!("not valid JSON: {e}")))?;
        let iptables_rules = read_optional(dir, IPTABLES_RULES)?;
        let ip6tables_rules = read_optional(dir, IP6TABLES_RULES)?;
        let ipset_rules = read_optional(dir, IPSET_RULES)?;

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

        let source_hash = str_field(&manifest, &["source_hash", "sourceHash", "hash"])
            .or_else(|| {
                manifest
                    .get("source")
                    .and_then(|s| str_field(s, &["hash", "sha256"]))
            })
            .map(str::to_string);

        // `iptables` at the top, or the compiler's `backends.iptables`.
        let ipt = manifest
            .get("iptables")
            .or_else(|| manifest.get("backends").and_then(|b| b.get("iptables")));
        let mut hooks = Vec::new();
        if let Some(list) = ipt.and_then(|i| i.get("hooks")) {
            let list = list
                .as_array()
                .ok_or_else(|| Error::bundle(&manifest_path, "`iptables.hooks` is not an array"))?;
            for (i, h) in list.iter().enumerate() {
                let field = |k: &str| {
                    str_field(h, &[k]).map(str::to_string).ok_or_else(|| {
                        Error::bundle(
                            &manifest_path,
                            format!("`iptables.hooks[{i}]` lacks the string field `{k}`"),
                        )
                    })
                };
                let table = field("table")?;
                let chain = field("chain")?;
                let target = field("target")?;
                let families = match str_field(h, &["family"]) {
                    Some("ipv4" | "inet4" | "4") => vec![Family::Ipv4],
                    Some("ipv6" | "inet6" | "6") => vec![Family::Ipv6],
                    Some("both" | "inet" | "any") => vec![Family::Ipv4, Family::Ipv6],
                    Some(other) => {
                        return Err(Error::bundle(
                            &manifest_path,
                            format!("`iptables.hooks[{i}].family` is `{other}`, expected ipv4, ipv6 or both"),
                        ))
                    }
                    None => {
                        let mut f = vec![Family::Ipv4];
                        if declares_chain(&ip6tables_rules, &table, &target) {
                            f.push(Family::Ipv6);
                        }
                        f
                    }
                };
                hooks.push(Hook {
                    table,
                    chain,
                    target,
                    families,
                });
            }
        }

        let sets = manifest
            .get("sets")
            .or_else(|| ipt.and_then(|i| i.get("sets")))
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|s| {
                        Some(SetInfo {
                            name: str_field(s, &["name"])?.to_string(),
                            kind: str_field(s, &["kind"]).map(str::to_string),
                            raw: s.clone(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();

        let files = (identities(dir) == before)
            .then(|| trusted_identities(before, taken))
            .flatten();
        Ok(Bundle {
            files,
            dir: dir.to_path_buf(),
            manifest,
            iptables_rules,
            ip6tables_rules,
            ipset_rules,
            hooks,
            sets,
            source_hash,
            content_hash,
        })
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

/// Does restore text declare `:chain` inside `*table`?
fn declares_chain(text: &str, table: &str, chain: &str) -> bool {
    let mut current = "";
    for line in text.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix('*') {
            current = t.trim();
        } else if let Some(decl) = line.strip_prefix(':') {
            if current == table && decl.split_whitespace().next() == Some(chain) {
                return true;
            }
        }
    }
    false
}
