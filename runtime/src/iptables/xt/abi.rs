//! What differs between the IPv4 and the IPv6 x_tables back ends, as
//! data: the entry's layout (`ipt_entry` with `struct ipt_ip`,
//! `ip6t_entry` with `struct ip6t_ip6`), the socket and its option
//! numbers, the ipset family a rule's sets must have, and where the
//! kernel lists the tables.
//!
//! # Why one table of numbers
//! Everything else — the table's chains, the layout, the apply of the
//! restore lines, the matches and targets that are the same structure in
//! both families, the start's printer — is one code path that reads its
//! offsets from an [`Abi`]; the family-specific parts (addresses, `icmp`
//! against `icmp6`, REJECT's codes, the NAT ranges) branch on
//! [`Abi::family`] where they are written or printed. A second copy of
//! the IPv4 code would drift from the first.

use crate::bundle::Family;

/// One family's x_tables ABI.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Abi {
    pub family: Family,
    /// `sizeof(struct ipt_entry)` / `sizeof(struct ip6t_entry)`.
    pub entry: usize,
    /// The IP part's size (`struct ipt_ip` 84, `struct ip6t_ip6` 136).
    pub ip: usize,
    /// An address's length, and where source, destination and their
    /// masks are in the IP part.
    pub addr_len: usize,
    pub src: usize,
    pub dst: usize,
    pub smsk: usize,
    pub dmsk: usize,
    /// `iniface`, `outiface` and their masks.
    pub iniface: usize,
    pub outiface: usize,
    pub iniface_mask: usize,
    pub outiface_mask: usize,
    /// `proto` (u16), `flags`, `invflags`.
    pub proto: usize,
    pub flags: usize,
    pub invflags: usize,
    /// `IPT_F_GOTO` / `IP6T_F_GOTO`.
    pub f_goto: u8,
    /// `IP6T_F_PROTO`, which ip6tables sets with every `-p` (IPv4: none).
    pub f_proto: u8,
    /// `target_offset`, `next_offset`, `comefrom` (then the counters to
    /// the entry's end).
    pub target_offset: usize,
    pub next_offset: usize,
    pub comefrom: usize,
    /// `socket(domain, SOCK_RAW, IPPROTO_RAW)` and the option level.
    pub domain: i32,
    pub level: i32,
    /// `*_SO_GET_REVISION_MATCH` / `_TARGET` (the SET/GET_INFO/ENTRIES
    /// and ADD_COUNTERS numbers are the same in both families).
    pub rev_match: i32,
    pub rev_target: i32,
    /// `NFPROTO_*`: the family of the sets a rule may name.
    pub nfproto: u8,
    /// The kernel's list of this family's tables, under `/proc/net`.
    pub names: &'static str,
    /// The family and its save tool, for messages and traces.
    pub label: &'static str,
    pub save_tool: &'static str,
}

pub(crate) const V4: Abi = Abi {
    family: Family::Ipv4,
    entry: 112,
    ip: 84,
    addr_len: 4,
    src: 0,
    dst: 4,
    smsk: 8,
    dmsk: 12,
    iniface: 16,
    outiface: 32,
    iniface_mask: 48,
    outiface_mask: 64,
    proto: 80,
    flags: 82,
    invflags: 83,
    f_goto: 0x02,
    f_proto: 0,
    target_offset: 88,
    next_offset: 90,
    comefrom: 92,
    domain: libc::AF_INET,
    level: libc::SOL_IP,
    rev_match: 66,
    rev_target: 67,
    nfproto: 2,
    names: "ip_tables_names",
    label: "IPv4",
    save_tool: "iptables-save",
};

pub(crate) const V6: Abi = Abi {
    family: Family::Ipv6,
    entry: 168,
    ip: 136,
    addr_len: 16,
    src: 0,
    dst: 16,
    smsk: 32,
    dmsk: 48,
    iniface: 64,
    outiface: 80,
    iniface_mask: 96,
    outiface_mask: 112,
    proto: 128,
    flags: 131,
    invflags: 132,
    f_goto: 0x04,
    f_proto: 0x01,
    target_offset: 140,
    next_offset: 142,
    comefrom: 144,
    domain: libc::AF_INET6,
    level: libc::SOL_IPV6,
    rev_match: 68,
    rev_target: 69,
    nfproto: 10,
    names: "ip6_tables_names",
    label: "IPv6",
    save_tool: "ip6tables-save",
};

/// The ABI of `family`.
pub(crate) fn of(family: Family) -> &'static Abi {
    match family {
        Family::Ipv4 => &V4,
        Family::Ipv6 => &V6,
    }
}

/// `ipt_ip.invflags` / `ip6t_ip6.invflags` bits (the same in both).
pub(crate) const INV_VIA_IN: u8 = 0x01;
pub(crate) const INV_VIA_OUT: u8 = 0x02;
pub(crate) const INV_SRCIP: u8 = 0x08;
pub(crate) const INV_DSTIP: u8 = 0x10;
pub(crate) const INV_PROTO: u8 = 0x40;
