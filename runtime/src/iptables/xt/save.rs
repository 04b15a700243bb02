//! x_tables entries printed as `iptables-legacy-save` and
//! `ip6tables-legacy-save` (1.8) print them: the `-A` line of a rule
//! without counters, from the entry's bytes (offsets from the family's
//! [`Abi`]; addresses as `inet_ntop` writes them, [`ntop6`]).
//!
//! # Why
//! An apply starts from the kernel's rules. `iptables-legacy-save` at
//! 100,000 rules takes ~1 s, most of it libxt_set asking for the name of
//! each `-m set` rule's set (IP_SET_OP_GET_BYINDEX, ~134,000 getsockopts
//! under the kernel's global ipset mutex). Printing the entries here asks
//! once per distinct set index ([`SetNames`]).
//!
//! # Exact or not at all
//! One printer per extension the loader writes ([`super::ext`]), each the
//! `save` function of its libxtables module for the fields that function
//! prints: the IP part (`save_ipv4_addr` / `save_ipv6_addr`,
//! `save_rule_details`), comment, set (revision 4), limit, tcp/udp/sctp, icmp
//! (IPv4), icmp6 (IPv6), multiport (1), conntrack (3), statistic, recent
//! (1), mark (1), iprange (1), and the targets NFLOG, DNAT (2), MARK (2),
//! REJECT (each family's codes), REDIRECT, DSCP, SET (3, `--map-set …
//! --map-mark` only), CT (2, `--notrack` only) and the standard one
//! (verdicts,
//! `-j`/`-g` chains, no target). A field the module would print that the
//! printer does not handle — another revision, an option it does not
//! print, a flag it does not know — is `Err`, never a guess: the caller
//! then uses the tool for that family (a rule in our chains) or keeps a
//! placeholder ([`placeholder`], a rule in a chain we did not make). The
//! oracle test `iptables_xt_save` compares every line with the tool's.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

use super::abi::{Abi, INV_DSTIP, INV_PROTO, INV_SRCIP, INV_VIA_IN, INV_VIA_OUT};
use super::sys::Sock;
use super::table::{self, c_name, Jump, Rule, XT_HEADER};
use crate::bundle::Family;

/// Set names by index, each asked of the kernel once.
pub(crate) struct SetNames<'a> {
    sock: &'a Sock,
    names: HashMap<u16, Option<String>>,
}

impl<'a> SetNames<'a> {
    pub fn new(sock: &'a Sock) -> SetNames<'a> {
        SetNames {
            sock,
            names: HashMap::new(),
        }
    }

    fn name(&mut self, index: u16) -> Result<String, String> {
        if let Some(n) = self.names.get(&index) {
            return n.clone().ok_or_else(|| format!("no set of index {index}"));
        }
        let n = self
            .sock
            .set_name(index)
            .map_err(|e| format!("set index {index}: {e}"))?;
        self.names.insert(index, n.clone());
        n.ok_or_else(|| format!("no set of index {index}"))
    }

    /// How many distinct indexes were asked.
    pub fn asked(&self) -> usize {
        self.names.len()
    }
}

/// The line kept for a rule of a chain we did not make that the printer
/// cannot print exactly. Its third word is `#`, which no `iptables-save`
/// line has there (every save line's third word is an option), so it
/// never equals a line the runtime looks for (`-A BUILTIN -j WEIR-…`,
/// [`crate::iptables::restore::SavedTable::hook_jumps`]) nor any rule of
/// ours.
pub fn placeholder(chain: &str, why: &str) -> String {
    format!("-A {chain} # weir: not decoded ({why})")
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn ip6_at(b: &[u8], at: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    a
}

/// The address at `b[at..]` of `family` as the tools print it.
fn ip_text(b: &[u8], at: usize, family: Family) -> String {
    match family {
        Family::Ipv4 => ip_at(b, at).to_string(),
        Family::Ipv6 => ntop6(&ip6_at(b, at)),
    }
}

/// glibc's `inet_ntop(AF_INET6)`: the longest run of two or more zero
/// words (the first of equal ones) as `::`, and the last 32 bits as a
/// dotted quad after 96 zero bits (but `::` and `::1`) or `::ffff:`.
/// (Rust's `Display` writes `::1.2.3.4` as `::102:304`.)
pub(crate) fn ntop6(a: &[u8; 16]) -> String {
    let w: Vec<u16> = a
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    // Runs of zero words as (first, length).
    let mut best: Option<(usize, usize)> = None;
    let mut cur: Option<(usize, usize)> = None;
    for (i, &x) in w.iter().enumerate() {
        if x == 0 {
            cur = Some(cur.map_or((i, 1), |(b, l)| (b, l + 1)));
            if let Some((b, l)) = cur {
                if best.is_none_or(|(_, bl)| l > bl) {
                    best = Some((b, l));
                }
            }
        } else {
            cur = None;
        }
    }
    let best = best.filter(|&(_, l)| l >= 2);
    let mut out = String::with_capacity(40);
    let mut i = 0;
    while i < 8 {
        if let Some((b, l)) = best {
            if i >= b && i < b + l {
                if i == b {
                    out.push(':');
                }
                i += 1;
                continue;
            }
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6 && best.is_some_and(|(b, l)| b == 0 && (l == 6 || (l == 5 && w[5] == 0xffff))) {
            let _ = write!(out, "{}.{}.{}.{}", a[12], a[13], a[14], a[15]);
            return out;
        }
        let _ = write!(out, "{:x}", w[i]);
        i += 1;
    }
    if best.is_some_and(|(b, l)| b + l == 8) {
        out.push(':');
    }
    out
}

/// Prints rule `r` of chain `chain` of a table of `abi`'s family: the
/// `-A` line the family's save tool prints (without counters).
pub(crate) fn rule(
    abi: &Abi,
    chain: &str,
    r: &Rule,
    sets: &mut SetNames,
) -> Result<String, String> {
    let b = &r.bytes;
    let family = abi.family;
    let mut out = String::with_capacity(160);
    let _ = write!(out, "-A {chain}");
    let inv = b[abi.invflags];
    let flags = b[abi.flags];
    if flags & !(abi.f_goto | abi.f_proto) != 0
        || inv & !(INV_VIA_IN | INV_VIA_OUT | INV_SRCIP | INV_DSTIP | INV_PROTO) != 0
    {
        return Err("IP flags (fragments, tos)".into());
    }
    for (letter, at, mask_at, bit) in [
        ('s', abi.src, abi.smsk, INV_SRCIP),
        ('d', abi.dst, abi.dmsk, INV_DSTIP),
    ] {
        match family {
            Family::Ipv4 => addr(
                &mut out,
                letter,
                ip_at(b, at),
                ip_at(b, mask_at),
                inv & bit != 0,
            ),
            Family::Ipv6 => addr6(
                &mut out,
                letter,
                &ip6_at(b, at),
                &ip6_at(b, mask_at),
                inv & bit != 0,
            ),
        }
    }
    for (letter, at, mask_at, bit) in [
        ('i', abi.iniface, abi.iniface_mask, INV_VIA_IN),
        ('o', abi.outiface, abi.outiface_mask, INV_VIA_OUT),
    ] {
        iface(
            &mut out,
            letter,
            &b[at..at + 16],
            &b[mask_at..mask_at + 16],
            inv & bit != 0,
        );
    }
    let proto = u16_at(b, abi.proto);
    if proto > 0 {
        let name = match proto {
            6 => "tcp",
            132 => "sctp",
            17 => "udp",
            136 => "udplite",
            1 => "icmp",
            58 => "ipv6-icmp",
            50 => "esp",
            51 => "ah",
            // Others: the tool prints `/etc/protocols`' name.
            _ => return Err(format!("protocol {proto}")),
        };
        if inv & INV_PROTO != 0 {
            out.push_str(" !");
        }
        let _ = write!(out, " -p {name}");
    }
    let toff = u16_at(b, abi.target_offset) as usize;
    let mut at = abi.entry;
    while at < toff {
        let size = u16_at(b, at) as usize;
        if size < XT_HEADER || at + size > toff {
            return Err("bad match size".into());
        }
        let name = c_name(&b[at + 2..at + 31]);
        let rev = b[at + 31];
        let _ = write!(out, " -m {name}");
        match_save(
            &mut out,
            &name,
            rev,
            &b[at + XT_HEADER..at + size],
            family,
            sets,
        )?;
        at += size;
    }
    let tname = c_name(&b[toff + 2..toff + 31]);
    let trev = b[toff + 31];
    let tdata = &b[toff + XT_HEADER..];
    if tname.is_empty() {
        let goto = flags & abi.f_goto != 0;
        let name = match &r.jump {
            Jump::Next => None,
            Jump::Chain(c) => Some(c.as_str()),
            Jump::None => Some(match tdata.get(..4).map(|v| u32_at(v, 0) as i32) {
                Some(table::ACCEPT) => "ACCEPT",
                Some(table::DROP) => "DROP",
                Some(table::RETURN) => "RETURN",
                Some(-4) => "QUEUE",
                _ => return Err("standard verdict".into()),
            }),
        };
        if let Some(n) = name {
            let _ = write!(out, " -{} {n}", if goto { 'g' } else { 'j' });
        }
    } else {
        let _ = write!(out, " -j {tname}");
        if (tname.as_str(), trev) == ("SET", 3) {
            set_target(&mut out, tdata, sets)?;
        } else {
            target_save(&mut out, &tname, trev, tdata, family)?;
        }
    }
    Ok(out)
}

/// `save_ipv4_addr`: `[!] -s ADDR/LEN` (or `/MASK` when not a prefix).
fn addr(out: &mut String, letter: char, a: Ipv4Addr, m: Ipv4Addr, invert: bool) {
    if m.is_unspecified() && a.is_unspecified() && !invert {
        return;
    }
    let mask = u32::from(m);
    let suffix = if mask.leading_ones() + mask.trailing_zeros() == 32 {
        format!("/{}", mask.leading_ones())
    } else {
        format!("/{m}")
    };
    let _ = write!(
        out,
        "{} -{letter} {a}{suffix}",
        if invert { " !" } else { "" }
    );
}

/// `save_ipv6_addr`: `[!] -s ADDR/LEN` (or `/MASK` when not a prefix);
/// nothing for a zero mask not inverted.
fn addr6(out: &mut String, letter: char, a: &[u8; 16], m: &[u8; 16], invert: bool) {
    let mask = u128::from_be_bytes(*m);
    if mask == 0 && !invert {
        return;
    }
    let suffix = if mask.leading_ones() + mask.trailing_zeros() == 128 {
        format!("/{}", mask.leading_ones())
    } else {
        format!("/{}", ntop6(m))
    };
    let _ = write!(
        out,
        "{} -{letter} {}{suffix}",
        if invert { " !" } else { "" },
        ntop6(a)
    );
}

/// `save_iface`: the name, with `+` where the mask stops before its end.
fn iface(out: &mut String, letter: char, name: &[u8], mask: &[u8], invert: bool) {
    if mask[0] == 0 {
        return;
    }
    let _ = write!(out, "{} -{letter} ", if invert { " !" } else { "" });
    for i in 0..16 {
        if mask[i] != 0 {
            if name[i] != 0 {
                out.push(name[i] as char);
            }
        } else {
            if name[i - 1] != 0 {
                out.push('+');
            }
            break;
        }
    }
}

/// `xtables_save_string`: bare when only `[A-Za-z0-9_-]`, else quoted
/// with `"`, `\` and `'` escaped.
fn save_string(out: &mut String, s: &str) {
    out.push(' ');
    if !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
    {
        out.push_str(s);
        return;
    }
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\' | '\'') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// The NUL-terminated text of `d`, refused when not UTF-8 (the tool
/// prints bytes).
fn text(d: &[u8]) -> Result<String, String> {
    let end = d.iter().position(|&c| c == 0).unwrap_or(d.len());
    std::str::from_utf8(&d[..end])
        .map(str::to_string)
        .map_err(|_| "text that is not UTF-8".into())
}

fn need(d: &[u8], n: usize, what: &str) -> Result<(), String> {
    if d.len() < n {
        Err(format!("{what}: short data"))
    } else {
        Ok(())
    }
}

fn match_save(
    out: &mut String,
    name: &str,
    rev: u8,
    d: &[u8],
    family: Family,
    sets: &mut SetNames,
) -> Result<(), String> {
    match (name, rev) {
        ("comment", 0) => {
            need(d, 256, name)?;
            out.push_str(" --comment");
            save_string(out, &text(&d[..256])?);
        }
        ("set", 4) => set(out, d, sets)?,
        ("limit", 0) => {
            need(d, 8, name)?;
            out.push_str(" --limit");
            rate(out, u32_at(d, 0));
            let burst = u32_at(d, 4);
            if burst != 5 {
                let _ = write!(out, " --limit-burst {burst}");
            }
        }
        ("tcp", 0) | ("udp", 0) => {
            let tcp = name == "tcp";
            need(d, if tcp { 12 } else { 9 }, name)?;
            let inv = if tcp { d[11] } else { d[8] };
            if tcp && (d[8] != 0 || d[9] != 0 || d[10] != 0 || inv & !3 != 0) {
                return Err("tcp flags or options".into());
            }
            if !tcp && inv & !3 != 0 {
                return Err("udp flags".into());
            }
            for (lo, hi, bit, opt) in [(0, 2, 1, "sport"), (4, 6, 2, "dport")] {
                let (lo, hi) = (u16_at(d, lo), u16_at(d, hi));
                if lo != 0 || hi != 0xffff {
                    if inv & bit != 0 {
                        out.push_str(" !");
                    }
                    if lo != hi {
                        let _ = write!(out, " --{opt} {lo}:{hi}");
                    } else {
                        let _ = write!(out, " --{opt} {lo}");
                    }
                }
            }
        }
        ("sctp", 0) => {
            // libxt_sctp's save: the ports whose flag is set, source
            // first; chunk types refused.
            need(d, 292, name)?;
            let (flags, inv) = (u32_at(d, 284), u32_at(d, 288));
            if flags & !3 != 0 || inv & !flags != 0 {
                return Err("sctp chunk types".into());
            }
            for (bit, at, opt) in [(1, 4, "sport"), (2, 0, "dport")] {
                if flags & bit != 0 {
                    if inv & bit != 0 {
                        out.push_str(" !");
                    }
                    let (lo, hi) = (u16_at(d, at), u16_at(d, at + 2));
                    if lo != hi {
                        let _ = write!(out, " --{opt} {lo}:{hi}");
                    } else {
                        let _ = write!(out, " --{opt} {lo}");
                    }
                }
            }
        }
        ("icmp6", 0) if family == Family::Ipv6 => {
            need(d, 4, name)?;
            if d[3] & !1 != 0 {
                return Err("icmp6 flags".into());
            }
            if d[3] & 1 != 0 {
                out.push_str(" !");
            }
            let _ = write!(out, " --icmpv6-type {}", d[0]);
            if d[1] != 0 || d[2] != 0xff {
                let _ = write!(out, "/{}", d[1]);
            }
        }
        ("icmp", 0) if family == Family::Ipv4 => {
            need(d, 4, name)?;
            if d[3] & !1 != 0 {
                return Err("icmp flags".into());
            }
            if d[3] & 1 != 0 {
                out.push_str(" !");
            }
            if d[0] == 0xff {
                out.push_str(" --icmp-type any");
            } else {
                let _ = write!(out, " --icmp-type {}", d[0]);
                if d[1] != 0 || d[2] != 0xff {
                    let _ = write!(out, "/{}", d[1]);
                }
            }
        }
        ("multiport", 1) => {
            need(d, 48, name)?;
            if d[47] != 0 {
                out.push_str(" !");
            }
            out.push_str(match d[0] {
                0 => " --sports ",
                1 => " --dports ",
                2 => " --ports ",
                _ => return Err("multiport flags".into()),
            });
            let count = d[1] as usize;
            if count > 15 {
                return Err("multiport count".into());
            }
            let mut i = 0;
            while i < count {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&u16_at(d, 2 + 2 * i).to_string());
                if d[32 + i] != 0 {
                    i += 1;
                    if i >= count {
                        return Err("multiport range".into());
                    }
                    let _ = write!(out, ":{}", u16_at(d, 2 + 2 * i));
                }
                i += 1;
            }
        }
        ("conntrack", 3) => {
            need(d, 152, name)?;
            const STATE: u16 = 1;
            if u16_at(d, 146) != STATE || u16_at(d, 148) & !STATE != 0 {
                return Err("conntrack options other than --ctstate".into());
            }
            if u16_at(d, 148) != 0 {
                out.push_str(" !");
            }
            out.push_str(" --ctstate ");
            let mask = u16_at(d, 150);
            let known = [
                (1 << 0, "INVALID"),
                (1 << 3, "NEW"),
                (1 << 2, "RELATED"),
                (1 << 1, "ESTABLISHED"),
                (1 << 8, "UNTRACKED"),
                (1 << 6, "SNAT"),
                (1 << 7, "DNAT"),
            ];
            if mask & !known.iter().map(|k| k.0).fold(0, |a, b| a | b) != 0 || mask == 0 {
                return Err("conntrack states".into());
            }
            let names: Vec<&str> = known
                .iter()
                .filter(|(bit, _)| mask & bit != 0)
                .map(|k| k.1)
                .collect();
            out.push_str(&names.join(","));
        }
        ("statistic", 0) => {
            need(d, 8, name)?;
            if u16_at(d, 0) != 0 || u16_at(d, 2) & !1 != 0 {
                return Err("statistic mode".into());
            }
            let p = f64::from(u32_at(d, 4)) / 2_147_483_648.0;
            let _ = write!(
                out,
                " --mode random{} --probability {p:.11}",
                if u16_at(d, 2) & 1 != 0 { " !" } else { "" }
            );
        }
        ("recent", 1) => recent(out, d, family)?,
        ("mark", 1) => {
            need(d, 9, name)?;
            if d[8] != 0 {
                out.push_str(" !");
            }
            out.push_str(" --mark");
            mark(out, u32_at(d, 0), u32_at(d, 4));
        }
        ("iprange", 1) => {
            need(d, 65, name)?;
            let f = d[64];
            if f & !0x33 != 0 {
                return Err("iprange flags".into());
            }
            for (at, bit, opt) in [(0, 1u8, "src-range"), (32, 2, "dst-range")] {
                if f & bit != 0 {
                    if f & (bit << 4) != 0 {
                        out.push_str(" !");
                    }
                    let _ = write!(
                        out,
                        " --{opt} {}-{}",
                        ip_text(d, at, family),
                        ip_text(d, at + 16, family)
                    );
                }
            }
        }
        _ => return Err(format!("match `{name}` revision {rev}")),
    }
    Ok(())
}

/// libxt_limit's `print_rate`: the largest unit that divides evenly
/// enough.
fn rate(out: &mut String, period: u32) {
    const SCALE: u32 = 10_000;
    let rates = [
        ("day", SCALE * 24 * 60 * 60),
        ("hour", SCALE * 60 * 60),
        ("min", SCALE * 60),
        ("sec", SCALE),
    ];
    if period == 0 {
        out.push_str(" inf");
        return;
    }
    let mut i = 1;
    while i < rates.len() {
        let m = rates[i].1;
        if period > m || m / period < m % period {
            break;
        }
        i += 1;
    }
    let _ = write!(out, " {}/{}", rates[i - 1].1 / period, rates[i - 1].0);
}

/// libxt_mark's `print_mark`.
fn mark(out: &mut String, mark: u32, mask: u32) {
    if mask != u32::MAX {
        let _ = write!(out, " 0x{mark:x}/0x{mask:x}");
    } else {
        let _ = write!(out, " 0x{mark:x}");
    }
}

/// libxt_set's `set_save_v4`: `[!] --match-set NAME DIR,…`, nothing else
/// (counters and flags refused).
fn set(out: &mut String, d: &[u8], sets: &mut SetNames) -> Result<(), String> {
    need(d, 48, "set")?;
    let (index, dim, flags) = (u16_at(d, 0), d[2] as usize, d[3]);
    // The counter matches' ops and the trailing flags: all none.
    if d[4..].iter().any(|&c| c != 0) || dim == 0 || dim > 6 || flags >> (dim + 1) != 0 {
        return Err("set options other than --match-set".into());
    }
    let name = sets.name(index)?;
    if flags & 1 != 0 {
        out.push_str(" !");
    }
    let _ = write!(out, " --match-set {name}");
    set_dirs(out, dim, flags);
    Ok(())
}

/// libxt_set's directions: ` src|dst[,…]`, bit i of `flags` the i-th.
fn set_dirs(out: &mut String, dim: usize, flags: u8) {
    for i in 1..=dim {
        out.push_str(if i == 1 { " " } else { "," });
        out.push_str(if flags & (1 << i) != 0 { "src" } else { "dst" });
    }
}

/// libxt_set's `set_target_save_v3` for what the loader writes: `--map-set
/// NAME DIRS --map-mark`, no add or del set, no timeout, no other flag.
fn set_target(out: &mut String, d: &[u8], sets: &mut SetNames) -> Result<(), String> {
    need(d, 20, "SET")?;
    let (add, del, map) = (u16_at(d, 0), u16_at(d, 4), u16_at(d, 8));
    let (dim, f) = (d[10] as usize, d[11]);
    if add != 0xffff
        || del != 0xffff
        || map == 0xffff
        || u32_at(d, 12) != 1 << 8
        || u32_at(d, 16) != u32::MAX
        || dim == 0
        || dim > 6
        || f & 1 != 0
        || f >> (dim + 1) != 0
    {
        return Err("SET options other than --map-set --map-mark".into());
    }
    let _ = write!(out, " --map-set {}", sets.name(map)?);
    set_dirs(out, dim, f);
    out.push_str(" --map-mark");
    Ok(())
}

/// libxt_recent's save for revision 1 (the mask in the family's form).
fn recent(out: &mut String, d: &[u8], family: Family) -> Result<(), String> {
    need(d, 228, "recent")?;
    let (seconds, hits, check, invert) = (u32_at(d, 0), u32_at(d, 4), d[8], d[9]);
    if check & !0x3f != 0 || d[210] > 1 {
        return Err("recent flags".into());
    }
    if invert != 0 {
        out.push_str(" !");
    }
    for (bit, opt) in [(2, "set"), (1, "rcheck"), (4, "update"), (8, "remove")] {
        if check & bit != 0 {
            let _ = write!(out, " --{opt}");
        }
    }
    if seconds != 0 {
        let _ = write!(out, " --seconds {seconds}");
    }
    if check & 0x20 != 0 {
        out.push_str(" --reap");
    }
    if hits != 0 {
        let _ = write!(out, " --hitcount {hits}");
    }
    if check & 0x10 != 0 {
        out.push_str(" --rttl");
    }
    let _ = write!(out, " --name {}", text(&d[10..210])?);
    let _ = write!(out, " --mask {}", ip_text(d, 212, family));
    out.push_str(if d[210] == 0 {
        " --rsource"
    } else {
        " --rdest"
    });
    Ok(())
}

fn target_save(
    out: &mut String,
    name: &str,
    rev: u8,
    d: &[u8],
    family: Family,
) -> Result<(), String> {
    match (name, rev) {
        ("DNAT", 2) if family == Family::Ipv6 => dnat6(out, d)?,
        ("REJECT", 0) if family == Family::Ipv6 => {
            need(d, 4, name)?;
            let with = match u32_at(d, 0) {
                0 => "icmp6-no-route",
                1 => "icmp6-adm-prohibited",
                3 => "icmp6-addr-unreachable",
                4 => "icmp6-port-unreachable",
                6 => "tcp-reset",
                7 => "icmp6-policy-fail",
                8 => "icmp6-reject-route",
                _ => return Err("REJECT type".into()),
            };
            let _ = write!(out, " --reject-with {with}");
        }
        ("REDIRECT", 0) if family == Family::Ipv6 => {
            // `nf_nat_range`: flags, min/max address, min/max port.
            need(d, 40, name)?;
            let flags = u32_at(d, 0);
            if flags & !2 != 0 || d[4..36].iter().any(|&c| c != 0) {
                return Err("REDIRECT flags".into());
            }
            if flags & 2 != 0 {
                let lo = u16::from_be_bytes([d[36], d[37]]);
                let hi = u16::from_be_bytes([d[38], d[39]]);
                let _ = write!(out, " --to-ports {lo}");
                if hi != lo {
                    let _ = write!(out, "-{hi}");
                }
            }
        }
        ("NFLOG", 0) => {
            need(d, 76, name)?;
            let (len, group, threshold, flags) =
                (u32_at(d, 0), u16_at(d, 4), u16_at(d, 6), u16_at(d, 8));
            if flags & !1 != 0 {
                return Err("NFLOG flags".into());
            }
            let prefix = text(&d[12..76])?;
            if !prefix.is_empty() {
                out.push_str(" --nflog-prefix");
                save_string(out, &prefix);
            }
            if group != 0 {
                let _ = write!(out, " --nflog-group {group}");
            }
            if flags & 1 != 0 {
                let _ = write!(out, " --nflog-size {len}");
            } else if len != 0 {
                let _ = write!(out, " --nflog-range {len}");
            }
            if threshold != 0 {
                let _ = write!(out, " --nflog-threshold {threshold}");
            }
        }
        ("DNAT", 2) => {
            need(d, 44, name)?;
            let flags = u32_at(d, 0);
            if flags & !3 != 0 {
                return Err("DNAT flags".into());
            }
            out.push_str(" --to-destination ");
            if flags & 1 != 0 {
                let (lo, hi) = (ip_at(d, 4), ip_at(d, 20));
                if d[4..20] != d[20..36] {
                    let _ = write!(out, "{lo}-{hi}");
                } else {
                    out.push_str(&lo.to_string());
                }
            }
            if flags & 2 != 0 {
                let lo = u16::from_be_bytes([d[36], d[37]]);
                let hi = u16::from_be_bytes([d[38], d[39]]);
                let _ = write!(out, ":{lo}");
                if hi != lo {
                    let _ = write!(out, "-{hi}");
                }
                if u16_at(d, 40) != 0 {
                    return Err("DNAT port offset".into());
                }
            }
        }
        ("MARK", 2) => {
            need(d, 8, name)?;
            let _ = write!(
                out,
                " --set-xmark 0x{:x}/0x{:x}",
                u32_at(d, 0),
                u32_at(d, 4)
            );
        }
        ("REJECT", 0) => {
            need(d, 4, name)?;
            let with = match u32_at(d, 0) {
                0 => "icmp-net-unreachable",
                1 => "icmp-host-unreachable",
                2 => "icmp-proto-unreachable",
                3 => "icmp-port-unreachable",
                5 => "icmp-net-prohibited",
                6 => "icmp-host-prohibited",
                7 => "tcp-reset",
                8 => "icmp-admin-prohibited",
                _ => return Err("REJECT type".into()),
            };
            let _ = write!(out, " --reject-with {with}");
        }
        ("REDIRECT", 0) => {
            need(d, 24, name)?;
            let flags = u32_at(d, 4);
            if u32_at(d, 0) != 1 || flags & !2 != 0 {
                return Err("REDIRECT flags".into());
            }
            if flags & 2 != 0 {
                let lo = u16::from_be_bytes([d[16], d[17]]);
                let hi = u16::from_be_bytes([d[18], d[19]]);
                let _ = write!(out, " --to-ports {lo}");
                if hi != lo {
                    let _ = write!(out, "-{hi}");
                }
            }
        }
        ("DSCP", 0) => {
            need(d, 1, name)?;
            if d[0] > 63 {
                return Err("DSCP value".into());
            }
            let _ = write!(out, " --set-dscp 0x{:02x}", d[0]);
        }
        ("CT", 2) => {
            // `xt_ct_target_info_v1`: flags, zone, ct/exp events, helper,
            // timeout; only `--notrack` (flag 1, nothing else set).
            need(d, 60, name)?;
            if u16_at(d, 0) != 1 || d[2..60].iter().any(|&c| c != 0) {
                return Err("CT options other than --notrack".into());
            }
            out.push_str(" --notrack");
        }
        _ => return Err(format!("target `{name}` revision {rev}")),
    }
    Ok(())
}

/// libxt_DNAT's IPv6 print of one address (`nf_nat_range2`): `ADDR`, or
/// `[ADDR]:PORT[-PORT]` with ports; an address range or a port offset is
/// refused.
fn dnat6(out: &mut String, d: &[u8]) -> Result<(), String> {
    need(d, 44, "DNAT")?;
    let flags = u32_at(d, 0);
    if flags & !3 != 0 || d[4..20] != d[20..36] || u16_at(d, 40) != 0 {
        return Err("DNAT flags, address range or port offset".into());
    }
    out.push_str(" --to-destination ");
    let ports = flags & 2 != 0;
    if flags & 1 != 0 {
        let a = ntop6(&ip6_at(d, 4));
        if ports {
            let _ = write!(out, "[{a}]");
        } else {
            out.push_str(&a);
        }
    }
    if ports {
        let lo = u16::from_be_bytes([d[36], d[37]]);
        let hi = u16::from_be_bytes([d[38], d[39]]);
        let _ = write!(out, ":{lo}");
        if hi != lo {
            let _ = write!(out, "-{hi}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_print_as_libxt_limit() {
        let p = |v| {
            let mut s = String::new();
            rate(&mut s, v);
            s
        };
        assert_eq!(p(2000), " 5/sec");
        assert_eq!(p(10_000), " 1/sec");
        assert_eq!(p(600_000), " 1/min");
        assert_eq!(p(12_000_000), " 3/hour");
    }

    #[test]
    fn strings_and_masks() {
        let mut s = String::new();
        save_string(&mut s, "a-b_1");
        save_string(&mut s, "ns/pod \"x\"");
        assert_eq!(s, " a-b_1 \"ns/pod \\\"x\\\"\"");
        let mut s = String::new();
        addr(
            &mut s,
            's',
            "10.0.0.0".parse().unwrap(),
            "255.0.0.0".parse().unwrap(),
            true,
        );
        addr(
            &mut s,
            'd',
            "10.0.0.1".parse().unwrap(),
            "255.255.255.255".parse().unwrap(),
            false,
        );
        addr(
            &mut s,
            'd',
            "10.0.0.0".parse().unwrap(),
            "255.0.255.0".parse().unwrap(),
            false,
        );
        assert_eq!(s, " ! -s 10.0.0.0/8 -d 10.0.0.1/32 -d 10.0.0.0/255.0.255.0");
        assert!(placeholder("FORWARD", "x").split_whitespace().nth(2) == Some("#"));
    }

    /// As glibc's `inet_ntop` (checked against `ip6tables-save`).
    #[test]
    fn ipv6_addresses_as_inet_ntop() {
        let p = |s: &str| ntop6(&s.parse::<std::net::Ipv6Addr>().unwrap().octets());
        assert_eq!(p("::"), "::");
        assert_eq!(p("::1"), "::1");
        assert_eq!(p("::1.2.3.4"), "::1.2.3.4");
        assert_eq!(p("::ffff:1.2.3.4"), "::ffff:1.2.3.4");
        assert_eq!(p("fd00:0:0:1::"), "fd00:0:0:1::");
        assert_eq!(p("1:0:0:1:0:0:0:1"), "1:0:0:1::1");
        assert_eq!(p("1:0:0:1:0:0:1:1"), "1::1:0:0:1:1");
        assert_eq!(p("1:0:1:1:1:1:1:1"), "1:0:1:1:1:1:1:1");
        assert_eq!(p("ffff:0:ffff::"), "ffff:0:ffff::");
        assert_eq!(p("0:0:1::"), "0:0:1::");
        let mut s = String::new();
        addr6(&mut s, 's', &[0; 16], &[0; 16], false);
        addr6(&mut s, 's', &[0; 16], &[0; 16], true);
        addr6(
            &mut s,
            'd',
            &"fd00::".parse::<std::net::Ipv6Addr>().unwrap().octets(),
            &"ffff:0:ffff::"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            false,
        );
        assert_eq!(s, " ! -s ::/0 -d fd00::/ffff:0:ffff::");
    }
}
