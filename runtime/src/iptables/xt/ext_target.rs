//! The target extensions the direct loader writes ([`super::ext`] has the
//! matches and what both share): NFLOG, DNAT (2), MARK (2), REJECT,
//! REDIRECT, DSCP, SET (3, `--map-set … --map-mark`) and CT (2,
//! `--notrack`), each in the revision libxtables 1.8 picks and, where the
//! families differ (DNAT's address, REJECT's codes, REDIRECT's range), in
//! the table's family. Anything else is `Err`: the block goes to the
//! tool.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ext::{one, seen, set_dirs, sole, value_mask, Ctx};
use super::spec::{octets, Opt};
use super::table::xt_object;
use crate::bundle::Family;

/// Encodes an extension target, `None` if `name` is not one we write
/// (a standard verdict or a chain).
pub(crate) fn encode_target(
    name: &str,
    opts: &[Opt],
    proto: Option<(u16, bool)>,
    ctx: &mut Ctx,
) -> Result<Option<Vec<u8>>, String> {
    let family = ctx.family();
    let (ext, rev, data): (&'static str, u8, Vec<u8>) = match name {
        "NFLOG" => ("NFLOG", 0, nflog(opts)?),
        "DNAT" => ("DNAT", 2, dnat(opts, proto, family)?),
        "MARK" => ("MARK", 2, mark_target(opts)?),
        "REJECT" => ("REJECT", 0, reject(opts, family)?),
        "REDIRECT" => ("REDIRECT", 0, redirect(opts, proto, family)?),
        "DSCP" => ("DSCP", 0, dscp(opts)?),
        "SET" => ("SET", 3, set_target(opts, ctx)?),
        "CT" => ("CT", 2, ct(opts)?),
        "ACCEPT" | "DROP" | "RETURN" => return Ok(None),
        n if n.bytes().all(|c| c.is_ascii_uppercase() || c == b'_') && !n.contains("WEIR") => {
            // An extension we do not write (LOG, …): the tool.
            return Err(format!("target `{n}`"));
        }
        _ => return Ok(None),
    };
    ctx.require(true, ext, rev)?;
    Ok(Some(xt_object(ext, rev, &data)))
}

/// `IPSET_INVALID_ID`: no set.
const NO_SET: u16 = 0xffff;

/// `IPSET_FLAG_MAP_SKBMARK`.
const MAP_SKBMARK: u32 = 1 << 8;

/// `xt_set_info_target_v3` for `--map-set NAME DIRS --map-mark` only (the
/// runtime's same-endpoint mark, `compiler/src/iptables/self_set.rs`):
/// add, del and map sets (`{u16 index; u8 dim; u8 flags}`, no set
/// `0xffff`), flags, timeout (none: `u32::MAX`), as libxt_set's init and
/// parse leave them.
fn set_target(opts: &[Opt], ctx: &mut Ctx) -> Result<Vec<u8>, String> {
    let mut map: Option<(u16, u8, u8)> = None;
    let mut flags = 0u32;
    for o in opts {
        match (o.name.as_str(), o.args.as_slice(), o.invert) {
            ("map-set", [name, dirs], false) if map.is_none() => {
                let (dim, f) = set_dirs(dirs)?;
                map = Some((ctx.set_index_at(name, 8)?, dim, f));
            }
            ("map-mark", [], false) if flags & MAP_SKBMARK == 0 => flags |= MAP_SKBMARK,
            _ => return Err(format!("SET option `--{}`", o.name)),
        }
    }
    let Some((index, dim, f)) = map else {
        return Err("SET without --map-set".into());
    };
    if flags != MAP_SKBMARK {
        return Err("SET --map-set without --map-mark".into());
    }
    let mut d = vec![0u8; 20];
    d[..2].copy_from_slice(&NO_SET.to_ne_bytes());
    d[4..6].copy_from_slice(&NO_SET.to_ne_bytes());
    d[8..10].copy_from_slice(&index.to_ne_bytes());
    d[10] = dim;
    d[11] = f;
    d[12..16].copy_from_slice(&flags.to_ne_bytes());
    d[16..20].copy_from_slice(&u32::MAX.to_ne_bytes());
    Ok(d)
}

/// `nf_nat_range2` for `--to-destination ADDR[:PORT]` (IPv6:
/// `ADDR` or `[ADDR]:PORT`): flags (1: map addresses, 2: a port given),
/// min/max address (`nf_inet_addr`), min/max port (network order), base
/// port. A port needs `-p tcp|udp|sctp`, as the tool says.
fn dnat(opts: &[Opt], proto: Option<(u16, bool)>, family: Family) -> Result<Vec<u8>, String> {
    let o = sole(opts, "DNAT", "to-destination")?;
    let a = one(o)?;
    let bad = || format!("DNAT address `{a}`");
    let (addr, port): (IpAddr, Option<&str>) = match family {
        Family::Ipv4 => {
            let (addr, port) = match a.split_once(':') {
                Some((addr, port)) => (addr, Some(port)),
                None => (a, None),
            };
            (addr.parse::<Ipv4Addr>().map_err(|_| bad())?.into(), port)
        }
        Family::Ipv6 => {
            let (addr, port) = match a.strip_prefix('[').and_then(|r| r.split_once("]:")) {
                Some((addr, port)) => (addr, Some(port)),
                None => (a, None),
            };
            (addr.parse::<Ipv6Addr>().map_err(|_| bad())?.into(), port)
        }
    };
    let addr = octets(addr);
    let mut d = vec![0u8; 44];
    let mut flags = 1u32;
    d[4..4 + addr.len()].copy_from_slice(&addr);
    d[20..20 + addr.len()].copy_from_slice(&addr);
    if let Some(port) = port {
        if !matches!(proto, Some((6 | 17 | 132, false))) {
            return Err("DNAT port without tcp, udp or sctp".into());
        }
        let port: u16 = port.parse().map_err(|_| format!("DNAT port `{a}`"))?;
        flags |= 2;
        d[36..38].copy_from_slice(&port.to_be_bytes());
        d[38..40].copy_from_slice(&port.to_be_bytes());
    }
    d[..4].copy_from_slice(&flags.to_ne_bytes());
    Ok(d)
}

/// `xt_mark_tginfo2`: mark, mask (`--set-xmark V/M`; `--set-mark V/M`
/// is `V` with mask `V | M`, as libxt_MARK writes it).
fn mark_target(opts: &[Opt]) -> Result<Vec<u8>, String> {
    let [o] = opts else {
        return Err("MARK options".into());
    };
    let (v, m) = value_mask(one(o)?)?;
    let m = m.unwrap_or(u32::MAX);
    let (mark, mask) = match o.name.as_str() {
        "set-xmark" => (v, m),
        "set-mark" => (v, v | m),
        n => return Err(format!("MARK option `--{n}`")),
    };
    let mut d = vec![0u8; 8];
    d[..4].copy_from_slice(&mark.to_ne_bytes());
    d[4..8].copy_from_slice(&mask.to_ne_bytes());
    Ok(d)
}

/// `ipt_reject_info` / `ip6t_reject_info`: the family's reject-with
/// number (default port unreachable).
fn reject(opts: &[Opt], family: Family) -> Result<Vec<u8>, String> {
    if family == Family::Ipv6 {
        return reject6(opts);
    }
    let with: u32 = match opts {
        [] => 3,
        [o] if o.name == "reject-with" => match one(o)? {
            "icmp-net-unreachable" => 0,
            "icmp-host-unreachable" => 1,
            "icmp-proto-unreachable" => 2,
            "icmp-port-unreachable" => 3,
            "icmp-net-prohibited" => 5,
            "icmp-host-prohibited" => 6,
            "tcp-reset" => 7,
            "icmp-admin-prohibited" => 8,
            w => return Err(format!("reject-with `{w}`")),
        },
        _ => return Err("REJECT options".into()),
    };
    Ok(with.to_ne_bytes().to_vec())
}

/// `ip6t_reject_with` by libip6t_REJECT's names (each with its short
/// alias); default `icmp6-port-unreachable`.
fn reject6(opts: &[Opt]) -> Result<Vec<u8>, String> {
    let with: u32 = match opts {
        [] => 4,
        [o] if o.name == "reject-with" => match one(o)? {
            "icmp6-no-route" | "no-route" => 0,
            "icmp6-adm-prohibited" | "adm-prohibited" => 1,
            "icmp6-addr-unreachable" | "addr-unreach" => 3,
            "icmp6-port-unreachable" | "port-unreach" => 4,
            "tcp-reset" => 6,
            "icmp6-policy-fail" => 7,
            "icmp6-reject-route" => 8,
            w => return Err(format!("reject-with `{w}`")),
        },
        _ => return Err("REJECT options".into()),
    };
    Ok(with.to_ne_bytes().to_vec())
}

/// IPv4: `nf_nat_ipv4_multi_range_compat` with one range: rangesize 1,
/// flags (2: ports given), min/max address 0, min/max port (network
/// order). IPv6: `nf_nat_range`: flags, min/max address (zero), min/max
/// port. `--to-ports` needs `-p tcp|udp|sctp`, as the tool says.
fn redirect(opts: &[Opt], proto: Option<(u16, bool)>, family: Family) -> Result<Vec<u8>, String> {
    // Where flags and the ports are.
    let (size, flags_at, ports_at) = match family {
        Family::Ipv4 => (24, 4, 16),
        Family::Ipv6 => (40, 0, 36),
    };
    let mut d = vec![0u8; size];
    if family == Family::Ipv4 {
        d[..4].copy_from_slice(&1u32.to_ne_bytes());
    }
    match opts {
        [] => {}
        [o] if o.name == "to-ports" => {
            if !matches!(proto, Some((6 | 17 | 132, false))) {
                return Err("REDIRECT ports without tcp, udp or sctp".into());
            }
            let a = one(o)?;
            let (lo, hi) = a.split_once('-').unwrap_or((a, a));
            let p = |x: &str| x.parse::<u16>().map_err(|_| format!("port `{a}`"));
            let (lo, hi) = (p(lo)?, p(hi)?);
            if lo == 0 || hi < lo {
                return Err(format!("ports `{a}`"));
            }
            d[flags_at..flags_at + 4].copy_from_slice(&2u32.to_ne_bytes());
            d[ports_at..ports_at + 2].copy_from_slice(&lo.to_be_bytes());
            d[ports_at + 2..ports_at + 4].copy_from_slice(&hi.to_be_bytes());
        }
        _ => return Err("REDIRECT options".into()),
    }
    Ok(d)
}

/// `xt_DSCP_info`: the DSCP (`--set-dscp N`, decimal or `0x` hex, at
/// most 63; libxtables would read a leading `0` as octal: refused).
fn dscp(opts: &[Opt]) -> Result<Vec<u8>, String> {
    let o = sole(opts, "DSCP", "set-dscp")?;
    let a = one(o)?;
    let v = match a.strip_prefix("0x") {
        Some(h) => u8::from_str_radix(h, 16).ok(),
        None if a.len() > 1 && a.starts_with('0') => None,
        None => a.parse::<u8>().ok(),
    }
    .filter(|v| *v <= 63)
    .ok_or_else(|| format!("DSCP `{a}`"))?;
    Ok(vec![v])
}

/// `xt_ct_target_info_v1` (revision 2) for `--notrack` only: flags
/// (`XT_CT_NOTRACK`), zone, events, helper, timeout, and the kernel's
/// `ct` pointer (zero from userspace); 72 bytes.
fn ct(opts: &[Opt]) -> Result<Vec<u8>, String> {
    match opts {
        [o] if o.name == "notrack" && o.args.is_empty() && !o.invert => {
            let mut d = vec![0u8; 72];
            d[..2].copy_from_slice(&1u16.to_ne_bytes());
            Ok(d)
        }
        _ => Err("CT options other than --notrack".into()),
    }
}

/// `xt_nflog_info`: len, group, threshold, flags, pad, `prefix[64]`.
fn nflog(opts: &[Opt]) -> Result<Vec<u8>, String> {
    let mut d = vec![0u8; 76];
    let (mut g, mut p, mut r, mut t) = (false, false, false, false);
    for o in opts {
        let a = one(o)?;
        match o.name.as_str() {
            "nflog-group" => {
                seen(&mut g, o)?;
                let v: u16 = a.parse().map_err(|_| "nflog group")?;
                d[4..6].copy_from_slice(&v.to_ne_bytes());
            }
            "nflog-prefix" => {
                seen(&mut p, o)?;
                if a.len() > 63 || a.contains('\n') {
                    return Err("nflog prefix".into());
                }
                d[12..12 + a.len()].copy_from_slice(a.as_bytes());
            }
            "nflog-size" | "nflog-range" => {
                seen(&mut r, o)?;
                let v: u32 = a.parse().map_err(|_| "nflog size")?;
                d[..4].copy_from_slice(&v.to_ne_bytes());
                // XT_NFLOG_F_COPY_LEN
                d[8..10].copy_from_slice(&1u16.to_ne_bytes());
            }
            "nflog-threshold" => {
                seen(&mut t, o)?;
                let v: u16 = a.parse().map_err(|_| "nflog threshold")?;
                d[6..8].copy_from_slice(&v.to_ne_bytes());
            }
            n => return Err(format!("NFLOG option `--{n}`")),
        }
    }
    Ok(d)
}
