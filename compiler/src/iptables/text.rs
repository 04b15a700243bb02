//! Restore-text building blocks: the address family, tables of chains,
//! and the spelling of matches that differ between iptables and
//! ip6tables.

use crate::model::Proto;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

/// IPv4 (`iptables`) or IPv6 (`ip6tables`): one code path, these words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

/// The ICMP type the kernel's IPv4 `icmp` match takes for "any type".
const ICMP_ANY: u8 = 255;

impl Family {
    pub fn of(a: IpAddr) -> Family {
        if a.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// Suffix of set names for this family (`weir-c3`, `weir-c3v6`).
    pub fn set_suffix(self) -> &'static str {
        match self {
            Family::V4 => "",
            Family::V6 => "v6",
        }
    }

    /// `family` argument of `ipset create`.
    pub fn ipset_family(self) -> &'static str {
        match self {
            Family::V4 => "inet",
            Family::V6 => "inet6",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    /// `-p` argument for a model protocol. `icmp` rules are emitted into
    /// iptables only and `icmp6` rules into ip6tables only (see
    /// [`Family::icmp_proto`] and `flow::model_protos`).
    pub fn proto(self, p: Proto) -> &'static str {
        match (p, self) {
            (Proto::Tcp, _) => "tcp",
            (Proto::Udp, _) => "udp",
            (Proto::Sctp, _) => "sctp",
            (Proto::Icmp, _) => "icmp",
            (Proto::Icmp6, _) => "ipv6-icmp",
        }
    }

    /// The family's ICMP: `icmp` in iptables, `icmp6` in ip6tables (the
    /// other one is a protocol without a keyword there: docs/language.md
    /// §4, "Headers").
    pub fn icmp_proto(self) -> Proto {
        match self {
            Family::V4 => Proto::Icmp,
            Family::V6 => Proto::Icmp6,
        }
    }

    /// `-p icmp -m icmp --icmp-type T[/C]`.
    ///
    /// Type 255 on IPv4 is a `u32` match instead: the kernel's `icmp`
    /// match reads type 255 as "any type" (`iptables-save` prints it back
    /// as `--icmp-type any`, whatever the code), so `-m icmp` cannot say
    /// "type 255". The `u32` test reads the type (and code) bytes of an
    /// unfragmented-or-first fragment, as `-m icmp` does. ip6tables'
    /// `icmp6` match has no such value and keeps `255/255` as written.
    pub fn icmp(self, ty: u8, code: Option<u8>) -> String {
        let tc = match code {
            Some(c) => format!("{ty}/{c}"),
            None => ty.to_string(),
        };
        match self {
            Family::V4 if ty == ICMP_ANY => {
                let test = match code {
                    Some(c) => format!("0>>16={}", (u32::from(ty) << 8) | u32::from(c)),
                    None => format!("0>>24={ty}"),
                };
                format!("-p icmp -m u32 --u32 \"4&0x1FFF=0&&0>>22&0x3C@{test}\"")
            }
            Family::V4 => format!("-p icmp -m icmp --icmp-type {tc}"),
            Family::V6 => format!("-p ipv6-icmp -m icmp6 --icmpv6-type {tc}"),
        }
    }

    /// A u32 match on the ICMP code in `lo..=hi` (used only when the ICMP
    /// type is unknown; on IPv6 it assumes no extension headers).
    pub fn icmp_code_u32(self, lo: u8, hi: u8) -> String {
        match self {
            Family::V4 => format!("-p icmp -m u32 --u32 \"0>>22&0x3C@0>>16&0xFF={lo}:{hi}\""),
            Family::V6 => format!("-p ipv6-icmp -m u32 --u32 \"40>>16&0xFF={lo}:{hi}\""),
        }
    }

    /// `--reject-with` for non-TCP packets.
    pub fn port_unreachable(self) -> &'static str {
        match self {
            Family::V4 => "icmp-port-unreachable",
            Family::V6 => "icmp6-port-unreachable",
        }
    }

    /// `addr:port` for `--to-destination`.
    pub fn socket(self, a: IpAddr, port: u16) -> String {
        match self {
            Family::V4 => format!("{a}:{port}"),
            Family::V6 => format!("[{a}]:{port}"),
        }
    }

    /// Host prefix length.
    pub fn host_len(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    pub fn max_addr(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(u32::MAX.into()),
            Family::V6 => IpAddr::V6(u128::MAX.into()),
        }
    }
}

/// `-m comment --comment "weir:…"`.
pub fn comment(c: &str) -> String {
    format!("-m comment --comment \"weir:{c}\"")
}

/// A fast, deterministic hasher for the generator's own maps (chain
/// names, node ids): the multiply-rotate hash of rustc's `FxHasher`.
/// Nothing here is keyed by untrusted input worth a DoS-resistant hash.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

const FX_K: u64 = 0xf135_7aea_2e62_a9c5;

impl FxHasher {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(FX_K);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` with [`FxHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The chains of one table in declaration order, each with its rules
/// (looked up by name; only [`Table::chains`] has an order).
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub chains: Vec<String>,
    pub rules: FastMap<String, Vec<String>>,
}

/// The four tables of one family.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    pub tables: BTreeMap<&'static str, Table>,
}

/// Order tables appear in the restore text.
pub const TABLE_ORDER: [&str; 4] = ["raw", "mangle", "nat", "filter"];

impl Tables {
    pub fn chain(&mut self, table: &'static str, name: &str) {
        self.tables
            .entry(table)
            .or_default()
            .chains
            .push(name.to_string());
    }

    /// `-A chain parts…` (parts joined by single spaces, empty ones
    /// skipped).
    pub fn rule(&mut self, table: &'static str, chain: &str, parts: &[&str]) {
        let len = 3 + chain.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>();
        let mut line = String::with_capacity(len);
        line.push_str("-A ");
        line.push_str(chain);
        for p in parts {
            if !p.is_empty() {
                line.push(' ');
                line.push_str(p);
            }
        }
        let rules = &mut self.tables.entry(table).or_default().rules;
        match rules.get_mut(chain) {
            Some(v) => v.push(line),
            None => {
                rules.insert(chain.to_string(), vec![line]);
            }
        }
    }

    pub fn rule_count(&self) -> usize {
        self.tables
            .values()
            .flat_map(|t| t.rules.values())
            .map(Vec::len)
            .sum()
    }

    pub fn chain_count(&self) -> usize {
        self.tables.values().map(|t| t.chains.len()).sum()
    }

    /// The restore text (`*table`, declarations, rules, `COMMIT`). Takes
    /// the tables: each chain's rules are freed as they are written, so
    /// the rules and the text (70 MB at 100,000 one-peer rules) are not
    /// held whole at once (issue 21).
    pub fn render(mut self, header: &str) -> String {
        let size: usize = self
            .tables
            .values()
            .map(|t| {
                t.chains.iter().map(|c| c.len() + 10).sum::<usize>()
                    + t.rules
                        .values()
                        .flatten()
                        .map(|r| r.len() + 1)
                        .sum::<usize>()
                    + 16
            })
            .sum();
        let mut s = String::with_capacity(header.len() + size);
        s.push_str(header);
        for name in TABLE_ORDER {
            let Some(mut t) = self.tables.remove(name) else {
                continue;
            };
            s.push('*');
            s.push_str(name);
            s.push('\n');
            for c in &t.chains {
                s.push(':');
                s.push_str(c);
                s.push_str(" - [0:0]\n");
            }
            for c in &t.chains {
                for r in t.rules.remove(c).into_iter().flatten() {
                    s.push_str(&r);
                    s.push('\n');
                }
            }
            s.push_str("COMMIT\n");
        }
        s
    }
}
