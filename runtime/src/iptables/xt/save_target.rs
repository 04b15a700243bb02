//! Target extensions printed as the save tools print them ([`super::save`]
//! prints the rest of the line): NFLOG, DNAT (2; IPv6 as
//! `[ADDR]:PORT`), MARK (2), REJECT (each family's codes), REDIRECT
//! (each family's range), DSCP, SET (3, `--map-set … --map-mark` only)
//! and CT (2, `--notrack` only). A field the module would print that is
//! not handled here is `Err`.

use std::fmt::Write;

use super::save::{need, save_string, set_dirs, text, u16_at, u32_at, SetNames};
use super::save_addr::{ip6_at, ip_at, ntop6};
use crate::bundle::Family;

/// libxt_set's `set_target_save_v3` for what the loader writes: `--map-set
/// NAME DIRS --map-mark`, no add or del set, no timeout, no other flag.
pub(super) fn set_target(out: &mut String, d: &[u8], sets: &mut SetNames) -> Result<(), String> {
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

pub(super) fn target_save(
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
