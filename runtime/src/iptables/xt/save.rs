//! x_tables entries printed as `iptables-legacy-save` and
//! `ip6tables-legacy-save` (1.8) print them: the `-A` line of a rule
//! without counters, from the entry's bytes (offsets from the family's
//! [`Abi`]; addresses and interfaces in [`super::save_addr`], targets in
//! [`super::save_target`]).
//!
//! # Why
//! An apply starts from the kernel's rules. `iptables-legacy-save` at
//! 100,000 rules takes ~1 s, most of it libxt_set asking for the name of
//! each `-m set` rule's set (IP_SET_OP_GET_BYINDEX, ~134,000 getsockopts
//! under the kernel's global ipset mutex). Printing the entries here asks
//! once per distinct set index ([`SetNames`]).
//!
//! # Exact or not at all
//! One printer per extension the loader writes ([`super::ext`],
//! [`super::ext_target`]), each the
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

use super::abi::{Abi, INV_DSTIP, INV_PROTO, INV_SRCIP, INV_VIA_IN, INV_VIA_OUT};
use super::save_addr::{addr, addr6, iface, ip6_at, ip_at, ip_text};
use super::save_target::{set_target, target_save};
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

    pub(super) fn name(&mut self, index: u16) -> Result<String, String> {
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

pub(super) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
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

/// `xtables_save_string`: bare when only `[A-Za-z0-9_-]`, else quoted
/// with `"`, `\` and `'` escaped.
pub(super) fn save_string(out: &mut String, s: &str) {
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
pub(super) fn text(d: &[u8]) -> Result<String, String> {
    let end = d.iter().position(|&c| c == 0).unwrap_or(d.len());
    std::str::from_utf8(&d[..end])
        .map(str::to_string)
        .map_err(|_| "text that is not UTF-8".into())
}

pub(super) fn need(d: &[u8], n: usize, what: &str) -> Result<(), String> {
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
pub(super) fn set_dirs(out: &mut String, dim: usize, flags: u8) {
    for i in 1..=dim {
        out.push_str(if i == 1 { " " } else { "," });
        out.push_str(if flags & (1 << i) != 0 { "src" } else { "dst" });
    }
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
}
