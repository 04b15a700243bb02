//! Restore text for the direct loader: a COMMIT block's lines as
//! commands, and a rule spec (`-A CHAIN …`'s rest) as an `ipt_entry` or
//! `ip6t_entry` (the family's [`Abi`]: its addresses, its `-p` flag and
//! the protocol match a bare option loads).
//!
//! Only what the loader can write byte for byte as the tools do is
//! accepted; anything else is `Err`, and the block goes to
//! `iptables-restore` (which also gives the real message for a bad line).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::abi::{Abi, INV_DSTIP, INV_PROTO, INV_SRCIP, INV_VIA_IN, INV_VIA_OUT};
use super::ext::{self, Ctx};
use super::ext_target;
use super::table::{self, Jump, Rule};
use crate::bundle::Family;

/// One line of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cmd {
    /// `:CHAIN - [0:0]`: create the user chain, or flush it.
    Declare(String),
    /// `-A CHAIN spec`.
    Append(String, Spec),
    /// `-I CHAIN [N] spec` (N from 1).
    Insert(String, usize, Spec),
    /// `-D CHAIN spec`: the first rule equal to it.
    Delete(String, Spec),
    /// `-X CHAIN`: an empty, unreferenced user chain.
    DeleteChain(String),
}

/// A rule spec, parsed but not yet encoded (set names are resolved
/// against the kernel when it is).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Spec {
    /// Address, mask (the family's), inverted.
    pub src: Option<(IpAddr, IpAddr, bool)>,
    pub dst: Option<(IpAddr, IpAddr, bool)>,
    pub proto: Option<(u16, bool)>,
    pub iniface: Option<(String, bool)>,
    pub outiface: Option<(String, bool)>,
    /// Matches in order, with their options.
    pub matches: Vec<(String, Vec<Opt>)>,
    pub target: Target,
}

/// One extension option: `[!] --name args…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Opt {
    pub name: String,
    pub invert: bool,
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Target {
    /// No target: a counting rule (falls through).
    #[default]
    None,
    /// `-j ACCEPT|DROP|RETURN|CHAIN` or `-g CHAIN` (`goto`), or an
    /// extension target with its options.
    Jump {
        name: String,
        goto: bool,
        opts: Vec<Opt>,
    },
}

/// Splits a line as iptables-restore does: on blanks, with `"…"` quoting.
/// A backslash or single quote (whose handling differs between versions)
/// is refused.
pub(crate) fn tokens(line: &str) -> Result<Vec<String>, String> {
    if line.contains('\\') || line.contains('\'') {
        return Err("quoting the loader does not handle".into());
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if any {
        out.push(cur);
    }
    Ok(out)
}

/// Parses one block line (not `*table` or `COMMIT`) of a table of
/// `family`.
pub(crate) fn command(line: &str, family: Family) -> Result<Cmd, String> {
    if let Some(decl) = line.strip_prefix(':') {
        let t: Vec<&str> = decl.split_whitespace().collect();
        return match t.as_slice() {
            [chain, "-", _] | [chain, "-"] => Ok(Cmd::Declare(chain_name(chain)?)),
            _ => Err(format!("declaration `{line}`")),
        };
    }
    let t = tokens(line)?;
    let (cmd, chain) = match t.as_slice() {
        [cmd, chain, ..] => (cmd.as_str(), chain_name(chain)?),
        _ => return Err(format!("line `{line}`")),
    };
    let rest = &t[2..];
    match cmd {
        "-A" | "--append" => Ok(Cmd::Append(chain, spec(rest, family)?)),
        "-D" | "--delete" => Ok(Cmd::Delete(chain, spec(rest, family)?)),
        "-I" | "--insert" => match rest.first().map(|n| n.parse::<usize>()) {
            Some(Ok(n)) if n >= 1 => Ok(Cmd::Insert(chain, n, spec(&rest[1..], family)?)),
            Some(Ok(_)) => Err("rule number 0".into()),
            _ => Ok(Cmd::Insert(chain, 1, spec(rest, family)?)),
        },
        "-X" | "--delete-chain" if rest.is_empty() => Ok(Cmd::DeleteChain(chain)),
        _ => Err(format!("command `{cmd}`")),
    }
}

fn chain_name(c: &str) -> Result<String, String> {
    if c.is_empty() || c.len() > 28 || c.starts_with('-') || c == "!" {
        Err(format!("chain name `{c}`"))
    } else {
        Ok(c.to_string())
    }
}

/// Parses a rule spec of `family`.
pub(crate) fn spec(t: &[String], family: Family) -> Result<Spec, String> {
    let mut s = Spec::default();
    let mut invert = false;
    let mut i = 0;
    // Whether options now belong to the target (after `-j`).
    let arg = |i: usize| {
        t.get(i)
            .cloned()
            .ok_or_else(|| "missing argument".to_string())
    };
    while i < t.len() {
        let tok = t[i].as_str();
        i += 1;
        if tok == "!" {
            if invert {
                return Err("double `!`".into());
            }
            invert = true;
            continue;
        }
        match tok {
            "-s" | "--source" | "-d" | "--destination" => {
                let a = net(&arg(i)?, family)?;
                i += 1;
                let slot = if tok.starts_with("-s") || tok == "--source" {
                    &mut s.src
                } else {
                    &mut s.dst
                };
                if slot.is_some() {
                    return Err("repeated address".into());
                }
                *slot = Some((a.0, a.1, invert));
            }
            "-p" | "--protocol" => {
                let p = proto(&arg(i)?)?;
                i += 1;
                if s.proto.is_some() || (invert && p == 0) {
                    return Err("protocol".into());
                }
                s.proto = Some((p, invert));
            }
            "-i" | "--in-interface" | "-o" | "--out-interface" => {
                let name = arg(i)?;
                i += 1;
                // Plain names only (the tools treat a lone `+` and some
                // characters specially).
                let plain = name
                    .trim_end_matches('+')
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'));
                if name == "+" || name.is_empty() || name.len() > 15 || !plain {
                    return Err("interface name".into());
                }
                let slot = if tok == "-i" || tok == "--in-interface" {
                    &mut s.iniface
                } else {
                    &mut s.outiface
                };
                *slot = Some((name, invert));
            }
            "-m" | "--match" => {
                if invert || s.target != Target::None {
                    return Err("`!` before `-m`, or a match after the target".into());
                }
                let name = arg(i)?;
                i += 1;
                s.matches.push((name, Vec::new()));
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                if invert || s.target != Target::None {
                    return Err("second target".into());
                }
                let name = arg(i)?;
                i += 1;
                s.target = Target::Jump {
                    name,
                    goto: tok.starts_with("-g") || tok == "--goto",
                    opts: Vec::new(),
                };
            }
            o if o.starts_with("--") => {
                let mut args = Vec::new();
                while i < t.len() && !t[i].starts_with('-') && t[i] != "!" {
                    args.push(t[i].clone());
                    i += 1;
                }
                let opt = Opt {
                    name: o[2..].to_string(),
                    invert,
                    args,
                };
                match &mut s.target {
                    Target::Jump { opts, .. } => opts.push(opt),
                    Target::None => {
                        if s.matches.is_empty() {
                            // As the tools: an option before any match
                            // loads the protocol's match (`-p tcp --dport
                            // 80` is `-p tcp -m tcp --dport 80`; ICMP's
                            // match is the family's).
                            let implicit = match (s.proto, family) {
                                (Some((6, false)), _) => "tcp",
                                (Some((17, false)), _) => "udp",
                                (Some((132, false)), _) => "sctp",
                                (Some((1, false)), Family::Ipv4) => "icmp",
                                (Some((58, false)), Family::Ipv6) => "icmp6",
                                _ => return Err(format!("option `{o}` outside a match")),
                            };
                            s.matches.push((implicit.to_string(), Vec::new()));
                        }
                        if let Some((_, opts)) = s.matches.last_mut() {
                            opts.push(opt);
                        }
                    }
                }
            }
            other => return Err(format!("`{other}`")),
        }
        invert = false;
    }
    if invert {
        return Err("trailing `!`".into());
    }
    Ok(s)
}

/// `ADDR[/LEN|/MASK]` of `family` as address and mask (the address
/// masked, as the tools store it). Numeric addresses only (the tools
/// also resolve names, and take lists).
fn net(s: &str, family: Family) -> Result<(IpAddr, IpAddr), String> {
    let (a, m) = match s.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (s, None),
    };
    let prefix = |m: &str, bits: u32| {
        m.parse::<u32>()
            .ok()
            .filter(|n| *n <= bits && !m.starts_with('+'))
            .ok_or_else(|| format!("prefix `{s}`"))
    };
    match family {
        Family::Ipv4 => {
            let addr: Ipv4Addr = a.parse().map_err(|_| format!("address `{s}`"))?;
            let mask = match m {
                None => Ipv4Addr::new(255, 255, 255, 255),
                Some(m) if m.contains('.') => m.parse().map_err(|_| format!("mask `{s}`"))?,
                Some(m) => {
                    let n = prefix(m, 32)?;
                    Ipv4Addr::from(if n == 0 { 0 } else { u32::MAX << (32 - n) })
                }
            };
            let addr = Ipv4Addr::from(u32::from(addr) & u32::from(mask));
            Ok((addr.into(), mask.into()))
        }
        Family::Ipv6 => {
            let addr: Ipv6Addr = a.parse().map_err(|_| format!("address `{s}`"))?;
            let mask = match m {
                None => Ipv6Addr::from(u128::MAX),
                Some(m) if m.contains(':') => m.parse().map_err(|_| format!("mask `{s}`"))?,
                Some(m) => {
                    let n = prefix(m, 128)?;
                    Ipv6Addr::from(if n == 0 { 0 } else { u128::MAX << (128 - n) })
                }
            };
            let addr = Ipv6Addr::from(u128::from(addr) & u128::from(mask));
            Ok((addr.into(), mask.into()))
        }
    }
}

/// An address's bytes (4 or 16).
pub(crate) fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn proto(p: &str) -> Result<u16, String> {
    Ok(match p {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        // `/etc/protocols`' name and libxtables' own (ip6tables-save
        // prints the first).
        "ipv6-icmp" | "icmpv6" => 58,
        "sctp" => 132,
        "all" => 0,
        n => n
            .parse::<u8>()
            .map(u16::from)
            .map_err(|_| format!("protocol `{p}`"))?,
    })
}

/// Standard verdicts by name.
fn verdict(name: &str) -> Option<i32> {
    match name {
        "ACCEPT" => Some(table::ACCEPT),
        "DROP" => Some(table::DROP),
        "RETURN" => Some(table::RETURN),
        _ => None,
    }
}

/// Encodes a spec as an entry. `is_chain` says whether a `-j` name is a
/// chain of the table (an extension target of the same name wins, as in
/// the tools).
pub(crate) fn encode(
    s: &Spec,
    ctx: &mut Ctx,
    is_chain: &dyn Fn(&str) -> bool,
) -> Result<Rule, String> {
    let abi: &Abi = ctx.sock.abi();
    let mut ip = vec![0u8; abi.ip];
    let mut inv = 0u8;
    for (slot, at, mask_at, bit) in [
        (s.src, abi.src, abi.smsk, INV_SRCIP),
        (s.dst, abi.dst, abi.dmsk, INV_DSTIP),
    ] {
        if let Some((a, m, n)) = slot {
            let (a, m) = (octets(a), octets(m));
            if a.len() != abi.addr_len || m.len() != abi.addr_len {
                return Err("an address of the other family".into());
            }
            ip[at..at + a.len()].copy_from_slice(&a);
            ip[mask_at..mask_at + m.len()].copy_from_slice(&m);
            inv |= if n { bit } else { 0 };
        }
    }
    for (slot, name_at, mask_at, bit) in [
        (&s.iniface, abi.iniface, abi.iniface_mask, INV_VIA_IN),
        (&s.outiface, abi.outiface, abi.outiface_mask, INV_VIA_OUT),
    ] {
        if let Some((name, n)) = slot {
            // As xtables_parse_interface: a trailing `+` matches a prefix.
            let b = name.as_bytes();
            ip[name_at..name_at + b.len()].copy_from_slice(b);
            let masked = if let Some(stripped) = name.strip_suffix('+') {
                stripped.len()
            } else {
                b.len() + 1
            };
            ip[mask_at..mask_at + masked].fill(0xff);
            inv |= if *n { bit } else { 0 };
        }
    }
    let proto = s.proto.map_or(0, |p| p.0);
    if let Some((p, n)) = s.proto {
        ip[abi.proto..abi.proto + 2].copy_from_slice(&p.to_ne_bytes());
        ip[abi.flags] |= abi.f_proto;
        inv |= if n { INV_PROTO } else { 0 };
    }
    ip[abi.invflags] = inv;
    let mut matches = Vec::with_capacity(s.matches.len() * 320);
    for (name, opts) in &s.matches {
        let base = abi.entry + matches.len() + table::XT_HEADER;
        matches.extend(ext::encode_match(name, opts, proto, ctx)?);
        ctx.place(base);
    }
    let (target, jump) = match &s.target {
        Target::None => (table::standard_target(0), Jump::Next),
        Target::Jump { name, goto, opts } => {
            let t = ext_target::encode_target(name, opts, s.proto, ctx)?;
            ctx.place(abi.entry + matches.len() + table::XT_HEADER);
            if let Some(t) = t {
                if *goto {
                    return Err("`-g` to an extension target".into());
                }
                (t, Jump::None)
            } else if let Some(v) = verdict(name) {
                if *goto || !opts.is_empty() {
                    return Err(format!("`{name}` with `-g` or options"));
                }
                (table::standard_target(v), Jump::None)
            } else if is_chain(name) && opts.is_empty() {
                (table::standard_target(0), Jump::Chain(name.clone()))
            } else {
                return Err(format!("target `{name}`"));
            }
        }
    };
    if let Target::Jump { goto: true, .. } = &s.target {
        ip[abi.flags] |= abi.f_goto;
    }
    Ok(Rule {
        bytes: table::entry(abi, &ip, &matches, &target),
        jump,
        old: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenises_like_restore() {
        assert_eq!(
            tokens(r#"-A X -m comment --comment "a b" -j ACCEPT"#).unwrap(),
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                "a b",
                "-j",
                "ACCEPT"
            ]
        );
        assert_eq!(tokens(r#"--comment """#).unwrap(), ["--comment", ""]);
        assert!(tokens(r#"-A X "a"#).is_err());
        assert!(tokens(r"-A X a\b").is_err());
    }

    #[test]
    fn parses_commands() {
        assert_eq!(
            command(":WEIR1-A - [0:0]", Family::Ipv4).unwrap(),
            Cmd::Declare("WEIR1-A".into())
        );
        assert!(command(":FORWARD ACCEPT [0:0]", Family::Ipv4).is_err());
        let Cmd::Insert(c, 1, s) =
            command("-I FORWARD 1 -j WEIR-HOOK-FORWARD", Family::Ipv4).unwrap()
        else {
            panic!()
        };
        assert_eq!(c, "FORWARD");
        assert!(
            matches!(s.target, Target::Jump { ref name, goto: false, .. } if name == "WEIR-HOOK-FORWARD")
        );
        let Cmd::Append(_, s) = command(
            "-A X -s 10.1.2.3/16 ! -p tcp -m set ! --match-set s src -g Y",
            Family::Ipv4,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            s.src,
            Some((
                "10.1.0.0".parse().unwrap(),
                "255.255.0.0".parse().unwrap(),
                false
            ))
        );
        assert_eq!(s.proto, Some((6, true)));
        assert!(s.matches[0].1[0].invert);
        assert_eq!(s.matches[0].1[0].args, ["s", "src"]);
        for bad in [
            "-F X",
            "-X",
            "-A X ! -m set",
            "-A X -j A -j B",
            "-A X --dport 1",
            "-A X -c 1 2",
        ] {
            assert!(command(bad, Family::Ipv4).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_ipv6_specs() {
        let Cmd::Append(_, s) = command(
            "-A X -s fd00::1:2/64 ! -d fd00::/ffff:0:ffff:: -p ipv6-icmp --icmpv6-type 1/3 -j DROP",
            Family::Ipv6,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            s.src,
            Some((
                "fd00::".parse().unwrap(),
                "ffff:ffff:ffff:ffff::".parse().unwrap(),
                false
            ))
        );
        assert_eq!(
            s.dst,
            Some((
                "fd00::".parse().unwrap(),
                "ffff:0:ffff::".parse().unwrap(),
                true
            ))
        );
        assert_eq!(s.proto, Some((58, false)));
        assert_eq!(s.matches[0].0, "icmp6");
        // The other family's addresses and ICMP match are not this one's.
        for (bad, family) in [
            ("-A X -s 10.0.0.1 -j DROP", Family::Ipv6),
            ("-A X -s fd00::1 -j DROP", Family::Ipv4),
            ("-A X -p icmp --icmp-type 8 -j DROP", Family::Ipv6),
            ("-A X -p ipv6-icmp --icmpv6-type 1 -j DROP", Family::Ipv4),
            ("-A X -s fd00::/129 -j DROP", Family::Ipv6),
        ] {
            assert!(command(bad, family).is_err(), "{bad}");
        }
    }
}
