//! Restore-text building blocks: the address family, tables of chains,
//! and the spelling of matches that differ between iptables and
//! ip6tables.

use crate::model::Proto;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// IPv4 (`iptables`) or IPv6 (`ip6tables`): one code path, these words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

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

    /// `-p` argument for a model protocol (ICMP is ICMPv6 on IPv6).
    pub fn proto(self, p: Proto) -> &'static str {
        match (p, self) {
            (Proto::Tcp, _) => "tcp",
            (Proto::Udp, _) => "udp",
            (Proto::Sctp, _) => "sctp",
            (Proto::Icmp, Family::V4) => "icmp",
            (Proto::Icmp, Family::V6) => "ipv6-icmp",
        }
    }

    /// `-p icmp -m icmp --icmp-type T[/C]`.
    pub fn icmp(self, ty: u8, code: Option<u8>) -> String {
        let tc = match code {
            Some(c) => format!("{ty}/{c}"),
            None => ty.to_string(),
        };
        match self {
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

/// The chains of one table in declaration order, each with its rules.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub chains: Vec<String>,
    pub rules: BTreeMap<String, Vec<String>>,
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
        let mut line = format!("-A {chain}");
        for p in parts {
            if !p.is_empty() {
                line.push(' ');
                line.push_str(p);
            }
        }
        self.tables
            .entry(table)
            .or_default()
            .rules
            .entry(chain.to_string())
            .or_default()
            .push(line);
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

    /// The restore text (`*table`, declarations, rules, `COMMIT`).
    pub fn render(&self, header: &str) -> String {
        let mut s = String::from(header);
        for name in TABLE_ORDER {
            let Some(t) = self.tables.get(name) else {
                continue;
            };
            s.push_str(&format!("*{name}\n"));
            for c in &t.chains {
                s.push_str(&format!(":{c} - [0:0]\n"));
            }
            for c in &t.chains {
                for r in t.rules.get(c).into_iter().flatten() {
                    s.push_str(r);
                    s.push('\n');
                }
            }
            s.push_str("COMMIT\n");
        }
        s
    }
}
