//! One canonical form for a rule, whether it is the text we fed to
//! `iptables-restore` or the text `iptables-save` prints back.
//!
//! The kernel does not print a rule as it was written: it names implicit
//! matches (`-p tcp --dport 22` comes back as `-p tcp -m tcp --dport
//! 22`), adds defaults (`/32` on a host address, `--mask` on `recent`,
//! `--reject-with` on `REJECT`), reorders flag lists (`RELATED,ESTABLISHED`),
//! quotes comments its own way and prints a probability as an 11-digit
//! decimal. Comparing raw text would refuse every apply; comparing too
//! loosely would hide a widening. So both sides go through this one
//! parser, which only erases those differences that the kernel's own
//! parser erases (defaults it fills in, orders it does not keep), and
//! keeps everything else — `--icmp-type 255` stays `255`, and the kernel's
//! `any` stays `any`, so a widened match never compares equal.

use std::net::IpAddr;

use crate::bundle::Family;

/// A rule in canonical form: its chain and a sorted list of its parts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Canon {
    pub chain: String,
    pub parts: Vec<String>,
}

impl std::fmt::Display for Canon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.chain, self.parts.join(" "))
    }
}

/// Splits a rule line into words as a shell would (double and single
/// quotes, backslash escapes), which is how both tools read it.
///
/// Most lines (every set member, most rules) quote and escape nothing:
/// then a word is a run of non-whitespace, split without the character
/// loop (the apply splits ~700,000 lines at 100,000 rules).
pub fn words(line: &str) -> Vec<String> {
    if plain(line) {
        return line.split_whitespace().map(str::to_string).collect();
    }
    shell_words(line)
}

/// Does `line` quote and escape nothing, so that its words are its runs
/// of non-whitespace ([`words`])?
pub fn plain(line: &str) -> bool {
    !line.contains(['"', '\'', '\\'])
}

/// [`words`] by the character loop: quotes and escapes.
fn shell_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// Matches the kernel loads on its own for `-p PROTO` options.
const PROTO_MATCHES: &[&str] = &[
    "tcp",
    "udp",
    "sctp",
    "udplite",
    "icmp",
    "icmp6",
    "ipv6-icmp",
    "icmpv6",
];

/// The protocol as `iptables-save` names it.
fn proto(p: &str) -> String {
    match p.to_ascii_lowercase().as_str() {
        "1" => "icmp".into(),
        "6" => "tcp".into(),
        "17" => "udp".into(),
        "132" => "sctp".into(),
        "136" => "udplite".into(),
        "58" | "icmpv6" | "icmp6" => "ipv6-icmp".into(),
        "all" | "0" => "all".into(),
        other => other.to_string(),
    }
}

/// `ADDR` or `ADDR/LEN` as the kernel keeps it: the prefix masked, the
/// length explicit. Anything else is kept as written.
pub fn cidr(s: &str) -> String {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().ok()),
        None => (s, None),
    };
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return s.to_string();
    };
    match ip {
        IpAddr::V4(v4) => {
            let len = len.unwrap_or(32).min(32);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            format!("{}/{len}", std::net::Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let len = len.unwrap_or(128).min(128);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            format!("{}/{len}", std::net::Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// A comma list whose order the kernel does not keep, sorted.
fn sorted_list(s: &str) -> String {
    let mut v: Vec<&str> = s.split(',').collect();
    v.sort_unstable();
    v.join(",")
}

/// `VALUE[/MASK]` as numbers (a missing mask is all ones), in hex; `or`:
/// `--set-mark V/M`, which the kernel keeps as `--set-xmark V/(V|M)`.
fn mark(s: &str, or: bool) -> String {
    let num = |t: &str| -> Option<u64> {
        match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => t.parse().ok(),
        }
    };
    let (v, m) = s.split_once('/').unwrap_or((s, "0xffffffff"));
    match (num(v), num(m)) {
        (Some(v), Some(m)) if or => format!("{v:#x}/{:#x}", v | m),
        (Some(v), Some(m)) => format!("{v:#x}/{m:#x}"),
        _ => s.to_string(),
    }
}

/// `--probability P` as the kernel stores it (`P * 2^31`, rounded).
fn probability(s: &str) -> String {
    match s.parse::<f64>() {
        Ok(p) => format!("{}", (p * 2_147_483_648.0).round() as u64),
        Err(_) => s.to_string(),
    }
}

/// Options that take no value.
const FLAGS: &[&str] = &[
    "--rcheck",
    "--update",
    "--set",
    "--remove",
    "--rsource",
    "--rdest",
    "--reap",
    "--notrack",
    "--syn",
    "--random",
    "--random-fully",
    "--persistent",
    "--log-tcp-sequence",
    "--log-tcp-options",
    "--log-ip-options",
    "--log-uid",
    "--return-nomatch",
    "--update-counters",
    "--update-subcounters",
    "--fragment",
];

/// A `u32` match's expression with every number in decimal: the kernel
/// prints them all in hex (`4&0x1FFF=0` comes back as `0x4&0x1fff=0x0`).
fn u32_expr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if !c.is_ascii_digit() {
            out.push(c);
            continue;
        }
        let mut tok = String::from(c);
        while let Some(&d) = chars.peek() {
            if d.is_ascii_alphanumeric() {
                tok.push(d);
                chars.next();
            } else {
                break;
            }
        }
        let n = match tok.strip_prefix("0x").or_else(|| tok.strip_prefix("0X")) {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => tok.parse().ok(),
        };
        match n {
            Some(n) => out.push_str(&n.to_string()),
            None => out.push_str(&tok),
        }
    }
    out
}

/// Canonical value of option `opt`.
fn value(opt: &str, vals: &[String]) -> String {
    let one = vals.join(" ");
    match opt {
        "--ctstate" | "--state" | "--dports" | "--sports" | "--ports" => sorted_list(&one),
        "--tcp-flags" => vals
            .iter()
            .map(|v| sorted_list(v))
            .collect::<Vec<_>>()
            .join(" "),
        "--set-xmark" | "--mark" => mark(&one, false),
        "--set-mark" => mark(&one, true),
        "--probability" => probability(&one),
        "--u32" => u32_expr(&one),
        "--to-destination" | "--to-source" | "--to-ports" | "--to" => one,
        "--dst-range" | "--src-range" => one,
        // `limit` rates as the kernel prints them (`100/second` → `100/sec`).
        "--limit" => match one.split_once('/') {
            Some((n, unit)) => {
                let unit = ["sec", "min", "hour", "day"]
                    .into_iter()
                    .find(|u| unit.starts_with(&u[..1]))
                    .unwrap_or(unit);
                format!("{n}/{unit}")
            }
            None => one,
        },
        // A number the kernel prints in another base (`--set-dscp 46`
        // comes back as `0x2e`).
        _ => match one.strip_prefix("0x").map(|h| u64::from_str_radix(h, 16)) {
            Some(Ok(n)) => n.to_string(),
            _ => one,
        },
    }
}

/// The canonical form of one `-A CHAIN …` line of `family`, or why it
/// cannot be read.
pub fn canon(line: &str, family: Family) -> Result<Canon, String> {
    let w = words(line);
    let mut chain = None;
    let mut parts: Vec<String> = Vec::new();
    let mut modules: Vec<String> = Vec::new();
    let mut target: Option<(String, String)> = None;
    let mut target_opts: Vec<String> = Vec::new();
    let mut neg = "";
    let mut i = 0;
    while i < w.len() {
        let t = w[i].as_str();
        let arg = w.get(i + 1).map(String::as_str);
        if t == "!" {
            neg = "!";
            i += 1;
            continue;
        }
        match t {
            "-A" | "--append" => chain = arg.map(str::to_string),
            "-p" | "--protocol" => parts.push(format!("{neg}-p={}", proto(arg.unwrap_or("")))),
            "-s" | "--source" | "-d" | "--destination" => {
                let key = if t.starts_with("-s") || t == "--source" {
                    "-s"
                } else {
                    "-d"
                };
                parts.push(format!("{neg}{key}={}", cidr(arg.unwrap_or(""))));
            }
            "-i" | "--in-interface" => parts.push(format!("{neg}-i={}", arg.unwrap_or(""))),
            "-o" | "--out-interface" => parts.push(format!("{neg}-o={}", arg.unwrap_or(""))),
            "-m" | "--match" => {
                let m = arg.unwrap_or("").to_string();
                if !PROTO_MATCHES.contains(&m.as_str()) {
                    modules.push(format!("-m={m}"));
                }
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                let kind = if t.starts_with("-g") || t == "--goto" {
                    "-g"
                } else {
                    "-j"
                };
                target = Some((kind.into(), arg.unwrap_or("").to_string()));
            }
            "-f" | "--fragment" => {
                parts.push(format!("{neg}-f"));
                i += 1;
                neg = "";
                continue;
            }
            opt if opt.starts_with("--") => {
                let mut j = i + 1;
                if !FLAGS.contains(&opt) {
                    while j < w.len() && !w[j].starts_with("--") && w[j] != "!" && !is_short(&w[j])
                    {
                        j += 1;
                    }
                }
                let v = value(opt, &w[i + 1..j]);
                // The kernel keeps `--set-mark` as `--set-xmark`.
                let opt = if opt == "--set-mark" {
                    "--set-xmark"
                } else {
                    opt
                };
                let item = if v.is_empty() {
                    format!("{neg}{opt}")
                } else {
                    format!("{neg}{opt}={v}")
                };
                if target.is_some() {
                    target_opts.push(item);
                } else {
                    parts.push(item);
                }
                i = j;
                neg = "";
                continue;
            }
            other => return Err(format!("unexpected word `{other}`")),
        }
        neg = "";
        i += 2;
    }
    let chain = chain.ok_or("not an `-A CHAIN` line")?;
    if modules.iter().any(|m| m == "-m=recent") && !parts.iter().any(|p| p.starts_with("--mask=")) {
        parts.push(match family {
            Family::Ipv4 => "--mask=255.255.255.255".into(),
            Family::Ipv6 => "--mask=ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".into(),
        });
    }
    // Defaults `iptables-save` leaves out: a `limit` burst of 5, NFLOG
    // group 0.
    if modules.iter().any(|m| m == "-m=limit")
        && !parts.iter().any(|p| p.starts_with("--limit-burst="))
    {
        parts.push("--limit-burst=5".into());
    }
    if let Some((kind, name)) = target {
        if name == "NFLOG" && !target_opts.iter().any(|o| o.starts_with("--nflog-group=")) {
            target_opts.push("--nflog-group=0".into());
        }
        if name == "REJECT" && !target_opts.iter().any(|o| o.starts_with("--reject-with=")) {
            target_opts.push(match family {
                Family::Ipv4 => "--reject-with=icmp-port-unreachable".into(),
                Family::Ipv6 => "--reject-with=icmp6-port-unreachable".into(),
            });
        }
        target_opts.sort();
        parts.push(format!("{kind}={name} {}", target_opts.join(" ")));
    }
    parts.extend(modules);
    parts.sort();
    Ok(Canon { chain, parts })
}

/// `-X` style short options end an option's values.
fn is_short(w: &str) -> bool {
    w.len() == 2 && w.starts_with('-') && w.as_bytes()[1].is_ascii_alphabetic()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquoted_lines_split_as_the_shell_loop_splits_them() {
        for line in [
            "",
            "   ",
            "add weir1-a 10.0.0.0/8",
            "  -A WEIR1-F\t-p tcp  --dport 22 -j ACCEPT  ",
            "create weir1-a hash:net family inet hashsize 64 maxelem 65536\r",
            "a\u{a0}b\u{2003}c\u{85}d",
        ] {
            assert_eq!(words(line), shell_words(line), "{line:?}");
        }
        assert_eq!(
            words("-m comment --comment \"a b\" -j X"),
            ["-m", "comment", "--comment", "a b", "-j", "X"]
        );
        assert_eq!(words("a\\ b 'c d'"), ["a b", "c d"]);
    }

    fn same(a: &str, b: &str, f: Family) -> bool {
        canon(a, f).unwrap() == canon(b, f).unwrap()
    }

    #[test]
    fn kernel_spellings_compare_equal() {
        let v4 = Family::Ipv4;
        assert!(same(
            "-A WEIR1-F -p tcp --dport 22 -m set --match-set weir1-a src -m comment --comment \"weir:rule tcp/22\" -j WEIR1-A",
            "-A WEIR1-F -p tcp -m tcp --dport 22 -m set --match-set weir1-a src -m comment --comment \"weir:rule tcp/22\" -j WEIR1-A",
            v4
        ));
        assert!(same(
            "-A X -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            "-A X -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            v4
        ));
        assert!(same(
            "-A X -s 10.1.0.5 -j DROP",
            "-A X -s 10.1.0.5/32 -j DROP",
            v4
        ));
        assert!(same(
            "-A X -m comment --comment weir:x -j DROP",
            "-A X -m comment --comment \"weir:x\" -j DROP",
            v4
        ));
        assert!(same(
            "-A X -m statistic --mode random --probability 0.5 -j A",
            "-A X -m statistic --mode random --probability 0.50000000000 -j A",
            v4
        ));
        assert!(same(
            "-A X -j MARK --set-mark 0x10",
            "-A X -j MARK --set-xmark 0x10/0xffffffff",
            v4
        ));
        assert!(same(
            "-A X -m limit --limit 100/second --limit-burst 5 -j NFLOG --nflog-group 0 --nflog-prefix \"weir:7:D \"",
            "-A X -m limit --limit 100/sec -j NFLOG --nflog-prefix \"weir:7:D \"",
            v4
        ));
        assert!(!same(
            "-A X -j NFLOG --nflog-prefix \"weir:7:D \"",
            "-A X -j NFLOG --nflog-prefix \"weir:7:D\"",
            v4
        ));
        assert!(same(
            "-A X -j REJECT",
            "-A X -j REJECT --reject-with icmp-port-unreachable",
            v4
        ));
        assert!(same(
            "-A X -p icmp -m u32 --u32 \"4&0x1FFF=0&&0>>22&0x3C@0>>24=255\" -j DROP",
            "-A X -p icmp -m u32 --u32 \"0x4&0x1fff=0x0&&0x0>>0x16&0x3c@0x0>>0x18=0xff\" -j DROP",
            v4
        ));
    }

    #[test]
    fn widenings_do_not_compare_equal() {
        let v4 = Family::Ipv4;
        assert!(!same(
            "-A X -p icmp -m icmp --icmp-type 255 -j ACCEPT",
            "-A X -p icmp -m icmp --icmp-type any -j ACCEPT",
            v4
        ));
        assert!(!same(
            "-A X -p tcp --dport 22 -j ACCEPT",
            "-A X -p tcp -j ACCEPT",
            v4
        ));
        assert!(!same(
            "-A X -s 10.1.0.0/24 -j DROP",
            "-A X -s 10.1.0.0/16 -j DROP",
            v4
        ));
        assert!(!same(
            "-A X -m set --match-set a src,dst -j DROP",
            "-A X -m set --match-set a dst,src -j DROP",
            v4
        ));
        assert!(!same(
            "-A X ! -s 10.0.0.0/8 -j DROP",
            "-A X -s 10.0.0.0/8 -j DROP",
            v4
        ));
    }
}
