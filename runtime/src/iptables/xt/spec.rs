//! Restore text for the direct loader: a COMMIT block's lines as
//! commands, and a rule spec (`-A CHAIN …`'s rest) as an `ipt_entry`.
//!
//! Only what the loader can write byte for byte as the tools do is
//! accepted; anything else is `Err`, and the block goes to
//! `iptables-restore` (which also gives the real message for a bad line).

use std::net::Ipv4Addr;

use super::ext::{self, Ctx};
use super::table::{self, Jump, Rule};

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
    pub src: Option<(Ipv4Addr, Ipv4Addr, bool)>,
    pub dst: Option<(Ipv4Addr, Ipv4Addr, bool)>,
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

/// Parses one block line (not `*table` or `COMMIT`).
pub(crate) fn command(line: &str) -> Result<Cmd, String> {
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
        "-A" | "--append" => Ok(Cmd::Append(chain, spec(rest)?)),
        "-D" | "--delete" => Ok(Cmd::Delete(chain, spec(rest)?)),
        "-I" | "--insert" => match rest.first().map(|n| n.parse::<usize>()) {
            Some(Ok(n)) if n >= 1 => Ok(Cmd::Insert(chain, n, spec(&rest[1..])?)),
            Some(Ok(_)) => Err("rule number 0".into()),
            _ => Ok(Cmd::Insert(chain, 1, spec(rest)?)),
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

/// Parses a rule spec.
pub(crate) fn spec(t: &[String]) -> Result<Spec, String> {
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
                let a = net(&arg(i)?)?;
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
                            // 80` is `-p tcp -m tcp --dport 80`).
                            let implicit = match s.proto {
                                Some((6, false)) => "tcp",
                                Some((17, false)) => "udp",
                                Some((1, false)) => "icmp",
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

/// `ADDR[/LEN|/MASK]` as address and mask (the address masked, as the
/// tools store it).
fn net(s: &str) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let (a, m) = match s.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (s, None),
    };
    let addr: Ipv4Addr = a.parse().map_err(|_| format!("address `{s}`"))?;
    let mask = match m {
        None => Ipv4Addr::new(255, 255, 255, 255),
        Some(m) if m.contains('.') => m.parse().map_err(|_| format!("mask `{s}`"))?,
        Some(m) => {
            let n: u32 = m
                .parse()
                .ok()
                .filter(|n| *n <= 32)
                .ok_or_else(|| format!("prefix `{s}`"))?;
            Ipv4Addr::from(if n == 0 { 0 } else { u32::MAX << (32 - n) })
        }
    };
    Ok((Ipv4Addr::from(u32::from(addr) & u32::from(mask)), mask))
}

fn proto(p: &str) -> Result<u16, String> {
    Ok(match p {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "sctp" => 132,
        "all" => 0,
        n => n
            .parse::<u8>()
            .map(u16::from)
            .map_err(|_| format!("protocol `{p}`"))?,
    })
}

/// `ipt_ip.invflags` bits.
const INV_VIA_IN: u8 = 0x01;
const INV_VIA_OUT: u8 = 0x02;
const INV_SRCIP: u8 = 0x08;
const INV_DSTIP: u8 = 0x10;
const INV_PROTO: u8 = 0x40;

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
    let mut ip = [0u8; 84];
    let mut inv = 0u8;
    if let Some((a, m, n)) = s.src {
        ip[0..4].copy_from_slice(&a.octets());
        ip[8..12].copy_from_slice(&m.octets());
        inv |= if n { INV_SRCIP } else { 0 };
    }
    if let Some((a, m, n)) = s.dst {
        ip[4..8].copy_from_slice(&a.octets());
        ip[12..16].copy_from_slice(&m.octets());
        inv |= if n { INV_DSTIP } else { 0 };
    }
    for (slot, name_at, mask_at, bit) in [
        (&s.iniface, 16, 48, INV_VIA_IN),
        (&s.outiface, 32, 64, INV_VIA_OUT),
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
        ip[80..82].copy_from_slice(&p.to_ne_bytes());
        inv |= if n { INV_PROTO } else { 0 };
    }
    ip[83] = inv;
    let mut matches = Vec::with_capacity(s.matches.len() * 320);
    for (name, opts) in &s.matches {
        matches.extend(ext::encode_match(name, opts, proto, ctx)?);
    }
    let (target, jump) = match &s.target {
        Target::None => (table::standard_target(0), Jump::Next),
        Target::Jump { name, goto, opts } => {
            if let Some(t) = ext::encode_target(name, opts, s.proto, ctx)? {
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
        ip[table::IP_FLAGS] |= table::F_GOTO;
    }
    Ok(Rule {
        bytes: table::entry(&ip, &matches, &target),
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
            command(":WEIR1-A - [0:0]").unwrap(),
            Cmd::Declare("WEIR1-A".into())
        );
        assert!(command(":FORWARD ACCEPT [0:0]").is_err());
        let Cmd::Insert(c, 1, s) = command("-I FORWARD 1 -j WEIR-HOOK-FORWARD").unwrap() else {
            panic!()
        };
        assert_eq!(c, "FORWARD");
        assert!(
            matches!(s.target, Target::Jump { ref name, goto: false, .. } if name == "WEIR-HOOK-FORWARD")
        );
        let Cmd::Append(_, s) =
            command("-A X -s 10.1.2.3/16 ! -p tcp -m set ! --match-set s src -g Y").unwrap()
        else {
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
            assert!(command(bad).is_err(), "{bad}");
        }
    }
}
