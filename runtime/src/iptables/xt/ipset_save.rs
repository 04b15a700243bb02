//! The namespace's sets read with one netlink dump (`IPSET_CMD_LIST`
//! over `NETLINK_NETFILTER`, [`super::ipset_dump::dump_each`]) and
//! printed exactly as `ipset save` prints them, instead of running the
//! tool.
//!
//! # Why
//! An apply reads the sets twice (its start: which sets the generation
//! in force keeps, which generation numbers are used; its read-back:
//! every set compared with what was applied) and `weir status` once. At
//! 100,000 rules (6,778 sets, 132,024 members) `ipset save` took
//! 0.19–0.30 s alone and 0.55 s beside the direct read of the IPv4 rules,
//! whose read it doubled (session 18, measured): the tool formats every
//! member through libipset and takes the kernel's ipset mutex per
//! message it asks for. The dump is the same kernel answer the tool
//! prints; printing it here is string formatting.
//!
//! # Same text as the tool, or the tool
//! The printer knows exactly what weir's bundles create
//! ([`super::ipset_text`]): `hash:net` and `hash:ip` of family `inet` or
//! `inet6`; their headers' `hashsize`, `maxelem`, `bucketsize`,
//! `initval`, and `skbinfo` (on `hash:ip` only); their members'
//! addresses (IPv6 as glibc's `inet_ntop` writes it, which libipset
//! prints with: [`super::save_addr::ntop6`]), prefixes (`hash:net`, the
//! host length left out), `nomatch` (`hash:net`) and `skbmark` (the mask
//! left out when it is `0xffffffff`).
//! Lines are `create NAME TYPE family F hashsize H maxelem M [skbinfo]
//! bucketsize B initval 0xI` and `add NAME ADDR[/CIDR] [nomatch]
//! [skbmark V[/M]]`, in the dump's order, which is the tool's (it prints
//! the same dump as it arrives). Any other type, any attribute it does
//! not know (a timeout, counters, comments, a netmask, another flag) in a
//! set it prints makes the whole read `Err` with the reason, and the
//! caller runs `ipset save` ([`crate::iptables::Iptables::save_sets`]).
//! `runtime/tests/ipset_save_oracle.rs` compares every line with the
//! tool's.
//!
//! # Only weir's sets
//! Every reader of this text looks only at sets named `weir<g>-…`
//! ([`names::set_generation`]): the start's generation numbers and kept
//! sets (`apply/start.rs`, [`crate::iptables::reuse`]) and the
//! read-back's and status' comparisons (by the applied kernel names).
//! So the runtime's read prints those and skips every other set (whose
//! type it need not know: a node's other ipset users do not send the read
//! to the tool); a set with a weir name it cannot print still does.

use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::time::Instant;

use super::ipset_dump::attrs;
use super::ipset_load::IPSET_DIRECT;
use super::ipset_proto::*;
use crate::iptables::exec::{in_netns, NETNS_DIR};
use crate::iptables::names;

// In an element or a header (`IPSET_ATTR_DATA`).

/// A set type the printer prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Net,
    Ip,
}

/// The set whose members the dump is giving.
struct Current {
    name: String,
    kind: Kind,
    v6: bool,
    skbinfo: bool,
    /// Not printed (not a weir set).
    skip: bool,
}

/// What one read printed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SaveStats {
    pub sets: usize,
    pub members: usize,
    /// Sets not printed (`keep` refused their names).
    pub skipped: usize,
}

/// The printer's state over a dump.
struct Printer<'k> {
    keep: &'k dyn Fn(&str) -> bool,
    out: String,
    current: Option<Current>,
    stats: SaveStats,
}

fn refuse(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, why)
}

fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("ipset dump: {why}"))
}

fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

impl Printer<'_> {
    /// One message of the dump: a set's header (a new set) and/or a run
    /// of its members.
    fn message(&mut self, m: &[u8]) -> io::Result<()> {
        let top = attrs(m.get(4..).unwrap_or_default()).ok_or_else(|| bad("an attribute"))?;
        let mut name = None;
        let (mut typename, mut family, mut data, mut adt) = (None, None, None, None);
        for &(kind, v) in &top {
            match kind {
                IPSET_ATTR_SETNAME => name = Some(set_name(v)?),
                IPSET_ATTR_TYPENAME => typename = Some(super::table::c_name(v)),
                IPSET_ATTR_FAMILY => family = v.first().copied(),
                IPSET_ATTR_DATA => data = Some(v),
                IPSET_ATTR_ADT => adt = Some(v),
                IPSET_ATTR_PROTOCOL | IPSET_ATTR_REVISION | IPSET_ATTR_INDEX => {}
                k => return Err(refuse(format!("a dump attribute {k}"))),
            }
        }
        let name = name.ok_or_else(|| bad("a message without a set name"))?;
        if typename.is_some() || data.is_some() {
            self.header(name.clone(), typename, family, data)?;
        }
        let Some(adt) = adt else { return Ok(()) };
        let cur = match &self.current {
            Some(c) if c.name == name => c,
            _ => return Err(bad(&format!("members of {name} without its header"))),
        };
        if cur.skip {
            return Ok(());
        }
        for (kind, e) in attrs(adt).ok_or_else(|| bad("an element list"))? {
            if kind != IPSET_ATTR_DATA {
                return Err(refuse(format!("set {name}: an element list entry {kind}")));
            }
            let line = member(cur, e).map_err(|why| refuse(format!("set {name}: {why}")))?;
            self.out.push_str(&line);
            self.stats.members += 1;
        }
        Ok(())
    }

    /// A set's header: its `create` line, unless `keep` refuses it.
    fn header(
        &mut self,
        name: String,
        typename: Option<String>,
        family: Option<u8>,
        data: Option<&[u8]>,
    ) -> io::Result<()> {
        if !(self.keep)(&name) {
            self.stats.skipped += 1;
            self.current = Some(Current {
                name,
                kind: Kind::Net,
                v6: false,
                skbinfo: false,
                skip: true,
            });
            return Ok(());
        }
        let why = |w: &str| refuse(format!("set {name}: {w}"));
        let kind = match typename.as_deref() {
            Some("hash:net") => Kind::Net,
            Some("hash:ip") => Kind::Ip,
            Some(t) => return Err(why(&format!("type {t}"))),
            None => return Err(why("a header without its type")),
        };
        let v6 = match family {
            Some(2) => false,
            Some(10) => true,
            f => return Err(why(&format!("family {f:?}"))),
        };
        let data = data.ok_or_else(|| why("a header without its data"))?;
        let mut h = Header::default();
        for (k, v) in attrs(data).ok_or_else(|| why("a header attribute"))? {
            let n = || be32(v).ok_or_else(|| why(&format!("header attribute {k}'s length")));
            match k {
                IPSET_ATTR_HASHSIZE => h.hashsize = Some(n()?),
                IPSET_ATTR_MAXELEM => h.maxelem = Some(n()?),
                IPSET_ATTR_BUCKETSIZE => {
                    h.bucketsize = Some(*v.first().ok_or_else(|| why("bucketsize"))?)
                }
                IPSET_ATTR_INITVAL => h.initval = Some(n()?),
                IPSET_ATTR_CADT_FLAGS => match n()? {
                    IPSET_FLAG_WITH_SKBINFO if kind == Kind::Ip => h.skbinfo = true,
                    f => return Err(why(&format!("header flags {f:#x}"))),
                },
                IPSET_ATTR_REFERENCES | IPSET_ATTR_MEMSIZE | IPSET_ATTR_ELEMENTS => {}
                k => return Err(why(&format!("header attribute {k}"))),
            }
        }
        let (Some(hashsize), Some(maxelem)) = (h.hashsize, h.maxelem) else {
            return Err(why("a header without hashsize or maxelem"));
        };
        let out = &mut self.out;
        let _ = write!(
            out,
            "create {name} {} family {} hashsize {hashsize} maxelem {maxelem}",
            typename.unwrap_or_default(),
            if v6 { "inet6" } else { "inet" }
        );
        if h.skbinfo {
            out.push_str(" skbinfo");
        }
        if let Some(b) = h.bucketsize {
            let _ = write!(out, " bucketsize {b}");
        }
        if let Some(i) = h.initval {
            let _ = write!(out, " initval {i:#010x}");
        }
        out.push('\n');
        self.stats.sets += 1;
        self.current = Some(Current {
            name,
            kind,
            v6,
            skbinfo: h.skbinfo,
            skip: false,
        });
        Ok(())
    }
}

/// A header's printed attributes.
#[derive(Default)]
struct Header {
    hashsize: Option<u32>,
    maxelem: Option<u32>,
    bucketsize: Option<u8>,
    initval: Option<u32>,
    skbinfo: bool,
}

/// A set's name (up to its NUL); a name the tool would print otherwise
/// than as it is (not printable ASCII) is refused.
fn set_name(v: &[u8]) -> io::Result<String> {
    let n = super::table::c_name(v);
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(refuse(format!("a set name {n:?}")));
    }
    Ok(n)
}

/// One element's `add` line.
fn member(c: &Current, e: &[u8]) -> Result<String, String> {
    let mut line = format!("add {} ", c.name);
    let (mut addr, mut cidr, mut nomatch, mut mark) = (None, None, false, None);
    for (k, v) in attrs(e).ok_or("an element attribute")? {
        match k {
            IPSET_ATTR_IP => {
                let inner = attrs(v).ok_or("an address attribute")?;
                let [(t, a)] = inner.as_slice() else {
                    return Err("an address of several attributes".into());
                };
                addr = Some(match (*t, a.len(), c.v6) {
                    (IPSET_ATTR_IPADDR_IPV4, 4, false) => {
                        Ipv4Addr::from(<[u8; 4]>::try_from(*a).map_err(|_| "address")?).to_string()
                    }
                    (IPSET_ATTR_IPADDR_IPV6, 16, true) => {
                        super::save_addr::ntop6(&<[u8; 16]>::try_from(*a).map_err(|_| "address")?)
                    }
                    _ => return Err(format!("address attribute {t} of {} bytes", a.len())),
                });
            }
            IPSET_ATTR_CIDR if c.kind == Kind::Net => cidr = Some(*v.first().ok_or("cidr")?),
            IPSET_ATTR_CADT_FLAGS if c.kind == Kind::Net => match be32(v) {
                Some(IPSET_FLAG_NOMATCH) => nomatch = true,
                f => return Err(format!("element flags {f:?}")),
            },
            IPSET_ATTR_SKBMARK if c.skbinfo => {
                let b: [u8; 8] = v.try_into().map_err(|_| "skbmark's length")?;
                let both = u64::from_be_bytes(b);
                mark = Some(((both >> 32) as u32, both as u32));
            }
            k => return Err(format!("element attribute {k}")),
        }
    }
    line.push_str(&addr.ok_or("an element without an address")?);
    let host = if c.v6 { 128 } else { 32 };
    match (c.kind, cidr) {
        (Kind::Net, Some(p)) if p == host => {}
        (Kind::Net, Some(p)) if (1..host).contains(&p) => {
            let _ = write!(line, "/{p}");
        }
        (Kind::Net, p) => return Err(format!("prefix {p:?}")),
        (Kind::Ip, _) => {}
    }
    if nomatch {
        line.push_str(" nomatch");
    }
    match mark {
        Some((v, u32::MAX)) => {
            let _ = write!(line, " skbmark {v:#x}");
        }
        Some((v, m)) => {
            let _ = write!(line, " skbmark {v:#x}/{m:#x}");
        }
        None => {}
    }
    line.push('\n');
    Ok(line)
}

/// The sets of the namespace `netns` (or ours) as `ipset save` prints
/// them, only those whose names `keep` accepts; `Err` says why the tool
/// must print them instead.
pub fn save(
    netns: Option<&str>,
    keep: &dyn Fn(&str) -> bool,
) -> Result<(String, SaveStats), String> {
    let file = netns
        .map(|n| File::open(std::path::Path::new(NETNS_DIR).join(n)))
        .transpose()
        .map_err(|e| format!("namespace: {e}"))?;
    let make = crate::nfnetlink::socket;
    let fd = match &file {
        Some(f) => in_netns(f, make).map_err(|e| format!("namespace: {e}"))?,
        None => make(),
    }
    .map_err(|e| format!("socket: {e}"))?;
    let mut p = Printer {
        keep,
        out: String::new(),
        current: None,
        stats: SaveStats::default(),
    };
    super::ipset_dump::dump_each(&fd, 0, |m| p.message(m)).map_err(|e| e.to_string())?;
    Ok((p.out, p.stats))
}

/// The sets of `netns` printed for the runtime: weir's only
/// ([`names::set_generation`], see the module doc).
pub fn save_ours(netns: Option<&str>) -> Result<(String, SaveStats), String> {
    save(netns, &|n| names::set_generation(n).is_some())
}

impl crate::iptables::Iptables {
    /// The sets read directly ([`save_ours`]); `None` (traced with
    /// `WEIR_EXEC_TRACE`, the reason said) when the caller must run
    /// `ipset save`.
    pub(crate) fn save_sets_direct(&self) -> Option<String> {
        let trace = std::env::var_os(crate::iptables::exec::TRACE_VAR).is_some();
        let t = Instant::now();
        match save_ours(self.exec().netns()) {
            Ok((text, stats)) => {
                if trace {
                    eprintln!(
                        "weir: sets read directly ({} sets, {} members, {} other sets skipped) in {:.3}s",
                        stats.sets,
                        stats.members,
                        stats.skipped,
                        t.elapsed().as_secs_f64()
                    );
                }
                // As the loader's batches: program `ipset (direct)`.
                self.exec().record(crate::iptables::exec::Ran {
                    program: IPSET_DIRECT.to_string(),
                    args: vec!["save".into()],
                    netns: self.exec().netns().map(str::to_string),
                    stdin: None,
                    status: Some(0),
                    stderr: String::new(),
                });
                Some(text)
            }
            Err(why) => {
                if trace {
                    eprintln!("weir: sets go to ipset save: {why}");
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(kind: Kind, v6: bool, skbinfo: bool) -> Current {
        Current {
            name: "s".into(),
            kind,
            v6,
            skbinfo,
            skip: false,
        }
    }

    fn elem(parts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (k, v) in parts {
            super::super::ipset_dump::put_attr(&mut b, *k, v);
        }
        b
    }

    fn ip4(a: [u8; 4]) -> (u16, Vec<u8>) {
        let mut ip = Vec::new();
        super::super::ipset_dump::put_attr(&mut ip, IPSET_ATTR_IPADDR_IPV4, &a);
        (IPSET_ATTR_IP, ip)
    }

    #[test]
    fn members_print_as_the_tool() {
        let net = cur(Kind::Net, false, false);
        let e = elem(&[ip4([10, 0, 0, 0]), (IPSET_ATTR_CIDR, vec![8])]);
        assert_eq!(member(&net, &e).unwrap(), "add s 10.0.0.0/8\n");
        let e = elem(&[
            ip4([10, 1, 2, 3]),
            (IPSET_ATTR_CIDR, vec![32]),
            (
                IPSET_ATTR_CADT_FLAGS,
                IPSET_FLAG_NOMATCH.to_be_bytes().to_vec(),
            ),
        ]);
        assert_eq!(member(&net, &e).unwrap(), "add s 10.1.2.3 nomatch\n");
        let ip = cur(Kind::Ip, false, true);
        let mark = |v: u32, m: u32| {
            (
                IPSET_ATTR_SKBMARK,
                ((u64::from(v) << 32) | u64::from(m)).to_be_bytes().to_vec(),
            )
        };
        let e = elem(&[ip4([10, 0, 0, 1]), mark(0x1000, 0)]);
        assert_eq!(
            member(&ip, &e).unwrap(),
            "add s 10.0.0.1 skbmark 0x1000/0x0\n"
        );
        let e = elem(&[ip4([10, 0, 0, 1]), mark(0, u32::MAX)]);
        assert_eq!(member(&ip, &e).unwrap(), "add s 10.0.0.1 skbmark 0x0\n");
        // What weir does not create is refused.
        for bad in [
            elem(&[ip4([10, 0, 0, 0]), (IPSET_ATTR_CIDR, vec![0])]),
            elem(&[ip4([10, 0, 0, 0])]),
            elem(&[ip4([10, 0, 0, 0]), (6, 5u32.to_be_bytes().to_vec())]),
            elem(&[
                ip4([10, 0, 0, 0]),
                (IPSET_ATTR_CIDR, vec![8]),
                (IPSET_ATTR_CADT_FLAGS, 1u32.to_be_bytes().to_vec()),
            ]),
        ] {
            assert!(member(&net, &bad).is_err());
        }
        assert!(member(
            &ip,
            &elem(&[ip4([10, 0, 0, 0]), (IPSET_ATTR_CIDR, vec![8])])
        )
        .is_err());
        assert!(member(&cur(Kind::Ip, true, false), &elem(&[ip4([10, 0, 0, 0])])).is_err());
    }
}
