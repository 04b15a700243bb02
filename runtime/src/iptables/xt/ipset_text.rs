//! The subset of `ipset restore` text the direct set loader
//! ([`super::ipset_load`]) writes itself, parsed exactly or not at all.
//!
//! # Why a subset
//! A bundle's step 1 is only `create NAME hash:net|hash:ip family
//! inet|inet6 hashsize N maxelem M [skbinfo]` followed by that set's
//! `add NAME ADDR[/CIDR] [nomatch] [skbmark V[/M]]` lines (the compiler's
//! `iptables/sets.rs` and `self_set.rs`). Anything else — another type or
//! option, a host name, a range, an `add` to a set the batch does not
//! create, numbers written another way than the compiler writes them, an
//! option the set's type does not take — is refused here with the reason,
//! and the whole batch goes to `ipset restore -exist`, which then also
//! gives the real message for what is wrong. So what this parser accepts
//! it understands exactly as the tool does (checked against it by
//! `runtime/tests/ipset_direct_oracle.rs`).

use std::net::IpAddr;

/// A set type the loader creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Net,
    Ip,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Net => "hash:net",
            Kind::Ip => "hash:ip",
        }
    }
}

/// One `create` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Create {
    pub name: String,
    pub kind: Kind,
    /// `NFPROTO_IPV4` (2) or `NFPROTO_IPV6` (10).
    pub family: u8,
    pub hashsize: Option<u32>,
    pub maxelem: Option<u32>,
    pub skbinfo: bool,
}

/// One `add` line's element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub addr: IpAddr,
    /// The prefix as written (`hash:net` only; none means the host).
    pub cidr: Option<u8>,
    pub nomatch: bool,
    /// `skbmark VALUE/MASK` (a missing mask is `0xffffffff`, as the tool).
    pub skbmark: Option<(u32, u32)>,
}

/// A set to create and fill, in the text's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetLoad {
    pub create: Create,
    pub members: Vec<Member>,
}

/// `IPSET_MAXNAMELEN` less its NUL.
pub(crate) const MAX_NAME: usize = 31;

/// Parses a batch; `Err` says the first thing not understood.
pub(crate) fn parse(text: &str) -> Result<Vec<SetLoad>, String> {
    let mut sets: Vec<SetLoad> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["create", name, kind, opts @ ..] => {
                let c = create(name, kind, opts).map_err(|e| bad(&e))?;
                if at.insert(c.name.clone(), sets.len()).is_some() {
                    return Err(bad("a set created twice"));
                }
                sets.push(SetLoad {
                    create: c,
                    members: Vec::new(),
                });
            }
            ["add", name, elem, opts @ ..] => {
                let Some(&i) = at.get(*name) else {
                    return Err(bad("an add to a set this batch does not create"));
                };
                let m = member(&sets[i].create, elem, opts).map_err(|e| bad(&e))?;
                sets[i].members.push(m);
            }
            _ => return Err(bad("not a create or add line the loader writes")),
        }
    }
    Ok(sets)
}

fn create(name: &str, kind: &str, opts: &[&str]) -> Result<Create, String> {
    if name.len() > MAX_NAME || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a set name the loader does not write".into());
    }
    let kind = match kind {
        "hash:net" => Kind::Net,
        "hash:ip" => Kind::Ip,
        _ => return Err("a set type the loader does not write".into()),
    };
    let mut c = Create {
        name: name.to_string(),
        kind,
        family: 2,
        hashsize: None,
        maxelem: None,
        skbinfo: false,
    };
    let mut seen = std::collections::HashSet::new();
    let mut o = opts.iter();
    while let Some(&opt) = o.next() {
        if !seen.insert(opt) {
            return Err(format!("option {opt} twice"));
        }
        match opt {
            "family" => {
                c.family = match o.next().copied() {
                    Some("inet") => 2,
                    Some("inet6") => 10,
                    _ => return Err("a family other than inet or inet6".into()),
                }
            }
            "hashsize" => c.hashsize = Some(decimal(o.next())?),
            "maxelem" => c.maxelem = Some(decimal(o.next())?),
            "skbinfo" => c.skbinfo = true,
            _ => return Err(format!("create option {opt}")),
        }
    }
    Ok(c)
}

/// A plain decimal `u32` as the compiler writes it (no sign, no leading
/// zero, no other base).
fn decimal(s: Option<&&str>) -> Result<u32, String> {
    let s = s.ok_or("a number is missing")?;
    let plain = s.bytes().all(|b| b.is_ascii_digit()) && !(s.len() > 1 && s.starts_with('0'));
    match (plain, s.parse::<u32>()) {
        (true, Ok(v)) => Ok(v),
        _ => Err(format!("{s} is not a plain decimal number")),
    }
}

/// `0x` hex `u32` (libipset's `skbmark` takes only that).
fn hex(s: &str) -> Result<u32, String> {
    let h = s.strip_prefix("0x").ok_or(format!("{s} is not 0x hex"))?;
    if h.is_empty() || h.len() > 8 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{s} is not a 32-bit 0x hex number"));
    }
    u32::from_str_radix(h, 16).map_err(|e| e.to_string())
}

fn member(c: &Create, elem: &str, opts: &[&str]) -> Result<Member, String> {
    let (a, cidr) = match elem.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (elem, None),
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("{a} is not an address the loader reads"))?;
    let (v6, bits) = match addr {
        IpAddr::V4(_) => (false, 32),
        IpAddr::V6(_) => (true, 128),
    };
    if v6 != (c.family == 10) {
        return Err("an address of the other family".into());
    }
    let cidr = match cidr {
        None => None,
        Some(_) if c.kind == Kind::Ip => return Err("a prefix in a hash:ip set".into()),
        Some(p) => match decimal(Some(&p))? {
            v @ 1.. if v <= bits => Some(v as u8),
            _ => return Err(format!("prefix /{p}")),
        },
    };
    let mut m = Member {
        addr,
        cidr,
        nomatch: false,
        skbmark: None,
    };
    let mut o = opts.iter();
    while let Some(&opt) = o.next() {
        match opt {
            "nomatch" if c.kind == Kind::Net && !m.nomatch => m.nomatch = true,
            "skbmark" if c.skbinfo && m.skbmark.is_none() => {
                let v = o.next().ok_or("skbmark without a value")?;
                m.skbmark = Some(match v.split_once('/') {
                    Some((v, mask)) => (hex(v)?, hex(mask)?),
                    None => (hex(v)?, u32::MAX),
                });
            }
            _ => return Err(format!("add option {opt}")),
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_lines_parse() {
        let t = "# weir\ncreate a hash:net family inet hashsize 64 maxelem 65536\nadd a 10.0.0.0/8\nadd a 10.1.2.3 nomatch\ncreate b hash:ip family inet6 hashsize 64 maxelem 65536 skbinfo\nadd b ::1 skbmark 0x1000/0x0\nadd b ::2 skbmark 0x10\n";
        let s = parse(t).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].create.kind, Kind::Net);
        assert_eq!(
            (s[0].create.hashsize, s[0].create.maxelem),
            (Some(64), Some(65536))
        );
        assert_eq!(s[0].members[0].cidr, Some(8));
        assert!(s[0].members[1].nomatch && s[0].members[1].cidr.is_none());
        assert_eq!(s[1].create.family, 10);
        assert!(s[1].create.skbinfo);
        assert_eq!(s[1].members[0].skbmark, Some((0x1000, 0)));
        assert_eq!(s[1].members[1].skbmark, Some((0x10, u32::MAX)));
    }

    #[test]
    fn anything_else_is_refused() {
        let c = "create a hash:net family inet\n";
        for bad in [
            "create a hash:ip,port family inet\n",
            "create a hash:net family inet timeout 5\n",
            "create a hash:net family inet hashsize 0x40\n",
            "create a hash:net family inet hashsize 064\n",
            "create a hash:net family inet family inet\n",
            "add a 10.0.0.1\n",
            "flush a\n",
            "swap a b\n",
            "-exist\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        for bad in [
            "add a 10.0.0.0/0\n",
            "add a 10.0.0.0/33\n",
            "add a ::1\n",
            "add a host.example\n",
            "add a 10.0.0.1-10.0.0.9\n",
            "add a 10.0.0.1 skbmark 0x1\n",
            "add a 10.0.0.1 nomatch nomatch\n",
            "add a 010.0.0.1\n",
            "add a 10.0.0.1 timeout 3\n",
        ] {
            assert!(parse(&format!("{c}{bad}")).is_err(), "{bad}");
        }
        let ip = "create b hash:ip family inet skbinfo\n";
        for bad in [
            "add b 10.0.0.0/24\n",
            "add b 10.0.0.1 nomatch\n",
            "add b 10.0.0.1 skbmark 16\n",
            "add b 10.0.0.1 skbmark 0x1/\n",
            "add b 10.0.0.1 skbmark 0x100000000\n",
        ] {
            assert!(parse(&format!("{ip}{bad}")).is_err(), "{bad}");
        }
        assert!(parse(&format!("{c}{c}")).is_err());
    }
}
