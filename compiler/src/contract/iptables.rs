//! `backends.iptables`: the iptables back end's manifest section, one
//! type for the writer (compiler/src/iptables/manifest.rs) and the
//! runtime. Fields in sorted key order (see [`super::write`]).

use serde::{Deserialize, Serialize};

use crate::graph::classes::{AtomId, ClassId};

/// The hooks weir writes: (table, built-in chain, the bundle's chain it
/// jumps to). A manifest naming any other hook is refused
/// ([`super::validate`]): the hook decides which traffic the policy sees,
/// so it is not a value a bundle may choose freely.
pub const HOOKS: [(&str, &str, &str); 5] = [
    ("raw", "PREROUTING", "WEIR-RAW-PRE"),
    ("mangle", "PREROUTING", "WEIR-MANGLE-PRE"),
    // `self`: the endpoint relation, computed after any DNAT
    // (compiler/src/iptables/self_set.rs).
    ("mangle", "FORWARD", "WEIR-MANGLE-FWD"),
    ("nat", "PREROUTING", "WEIR-NAT-PRE"),
    ("filter", "FORWARD", "WEIR-FWD"),
];

/// The section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IptablesSection {
    /// Number of classes (= the manifest's `classes.rows`).
    pub classes: usize,
    /// Chains, rules and depth per family.
    pub counts: Vec<Count>,
    /// How a runtime adds an endpoint address (for people).
    pub endpoint_update: String,
    /// Verdict events (NFLOG), when compiled with them (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Events>,
    pub hooks: Vec<HookEntry>,
    /// Every IPv6 address is class 0 (the program's class map has no IPv6
    /// prefix): the IPv6 chains decide address tests as class 0 and there
    /// are no IPv6 sets, so an endpoint update that would give an IPv6
    /// address another class needs a recompile (the runtime refuses it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipv6_class0: bool,
    pub log: Log,
    /// The packet-mark bits of `self` (`weir compile
    /// --iptables-self-mark`; compiler/src/iptables/self_set.rs): the
    /// lowest is the SAME bit, the others hold endpoint ids, which `weir
    /// endpoints` encodes with this mask. Written when the program has
    /// a `self` test and the mask is not 0xfffff800, the default of
    /// earlier weir ([`crate::iptables::self_set::LEGACY_MASK`]): older
    /// manifests, which never wrote their default, read as that mask,
    /// and bundles without `self` stay byte-identical.
    #[serde(
        default = "default_self_mark",
        skip_serializing_if = "is_default_self_mark"
    )]
    pub self_mark: u32,
    pub sets: Vec<SetEntry>,
}

fn default_self_mark() -> u32 {
    crate::iptables::self_set::LEGACY_MASK
}

fn is_default_self_mark(m: &u32) -> bool {
    *m == default_self_mark()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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

/// The families a hook applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookFamily {
    Ipv4,
    Ipv6,
    Both,
}

impl HookFamily {
    pub fn families(self) -> Vec<Family> {
        match self {
            HookFamily::Ipv4 => vec![Family::Ipv4],
            HookFamily::Ipv6 => vec![Family::Ipv6],
            HookFamily::Both => vec![Family::Ipv4, Family::Ipv6],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Count {
    pub chains: usize,
    pub depth: usize,
    pub family: Family,
    pub rules: usize,
}

/// One jump from a built-in chain into the bundle's chains: one of
/// [`HOOKS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookEntry {
    /// The built-in chain, e.g. `FORWARD`.
    pub chain: String,
    pub family: HookFamily,
    /// `filter`, `nat`, `mangle`, `raw`.
    pub table: String,
    /// The bundle's chain it enters, e.g. `WEIR-FWD`.
    pub target: String,
}

/// Where the chains report verdict events: NFLOG `group`, with prefixes
/// [`crate::contract::event::nflog_prefix`]; each event rule reports at
/// most `rate` events per second (bursts of `burst`), the rest are lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Events {
    pub burst: u32,
    pub group: u16,
    pub rate: u32,
}

/// How `log` rules log (with events: NFLOG to the events' group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u16>,
    pub target: LogTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogTarget {
    #[serde(rename = "LOG")]
    Log,
    #[serde(rename = "NFLOG")]
    Nflog,
}

/// An address set the bundle creates (`ipset.rules`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetEntry {
    /// `kind: atom`: the atom it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atom: Option<AtomId>,
    /// `kind: class`: the class it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<ClassId>,
    /// Classes whose addresses are members: an endpoint address of class
    /// C is added to every set whose `classes` contain C.
    pub classes: Vec<ClassId>,
    pub family: Family,
    pub kind: SetKind,
    /// The bundle's name (`weir-…`); the runtime adds a generation.
    pub name: String,
    #[serde(rename = "type")]
    pub set_type: SetType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetKind {
    /// One atom's addresses.
    Atom,
    /// One class's addresses.
    Class,
    /// A union of classes (a table branch).
    Classes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetType {
    #[serde(rename = "hash:net")]
    HashNet,
}
