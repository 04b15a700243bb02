//! The match extensions the direct loader writes ([`super::ext_target`]
//! has the targets), and what encoding both needs, in the
//! revisions libxtables 1.8 picks on a kernel that has them (checked
//! against the kernel once per loader, IPT_SO_GET_REVISION_* /
//! IP6T_SO_GET_REVISION_*; the oracle test `iptables_xt_oracle` compares
//! every byte with what `iptables-legacy-restore` and
//! `ip6tables-legacy-restore` write). The same revisions in both
//! families; what differs is written per family: `icmp` (IPv4) and
//! `icmp6` (IPv6) and iprange's addresses here, the targets' in
//! [`super::ext_target`], and the family a named set must have ([`Ctx`],
//! for matches and targets). An extension or option not here is `Err`,
//! and its block goes to the tool.

use std::collections::HashMap;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::spec::{octets, Opt};
use super::sys::Sock;
use super::table::xt_object;
use crate::bundle::Family;

/// How many distinct sets a block must name before their indexes come
/// from one dump of every set's header instead of one search each.
const DUMP_FROM: usize = 64;

/// What encoding needs from the kernel: set indexes (one lookup per set
/// name) and revisions (one question per extension).
pub(crate) struct Ctx<'a> {
    pub sock: &'a Sock,
    sets: HashMap<String, Option<u16>>,
    revisions: HashMap<(bool, &'static str, u8), bool>,
    /// While encoding before the sets exist ([`super::pre`]): the set
    /// names met so far (a name's place is its stand-in number), and the
    /// index fields of the object being encoded that wait for one, as
    /// (offset in its data, stand-in).
    deferred: Option<Deferred>,
}

/// See [`Ctx::defer`].
#[derive(Default)]
pub(crate) struct Deferred {
    pub names: Vec<String>,
    ids: HashMap<String, u32>,
    /// The object being encoded's fields: (offset in its data, stand-in).
    pending: Vec<(usize, u32)>,
    /// The entry being encoded's fields: (offset in the entry, stand-in).
    pub placed: Vec<(usize, u32)>,
}

impl<'a> Ctx<'a> {
    pub fn new(sock: &'a Sock) -> Ctx<'a> {
        Ctx {
            sock,
            sets: HashMap::new(),
            revisions: HashMap::new(),
            deferred: None,
        }
    }

    /// From now on a set index is not looked up: the encoders write 0 and
    /// [`Ctx::deferred`] says where and for which set, until
    /// [`Ctx::undefer`].
    pub fn defer(&mut self) {
        self.deferred = Some(Deferred::default());
    }

    pub fn deferred(&mut self) -> Option<&mut Deferred> {
        self.deferred.as_mut()
    }

    /// The object just encoded starts its data at offset `base` of its
    /// entry: its waiting index fields move to [`Deferred::placed`].
    pub fn place(&mut self, base: usize) {
        if let Some(d) = &mut self.deferred {
            let Deferred {
                pending, placed, ..
            } = d;
            placed.extend(pending.drain(..).map(|(at, id)| (base + at, id)));
        }
    }

    /// Ends [`Ctx::defer`]: the set names met while deferring.
    pub fn undefer(&mut self) -> Vec<String> {
        self.deferred.take().map(|d| d.names).unwrap_or_default()
    }

    /// The index of set `name`, written at offset `at` of the data being
    /// encoded (0 and noted for later while deferring).
    pub(super) fn set_index_at(&mut self, name: &str, at: usize) -> Result<u16, String> {
        let Some(d) = &mut self.deferred else {
            return self.set_index(name);
        };
        let id = match d.ids.get(name) {
            Some(id) => *id,
            None => {
                let id = d.names.len() as u32;
                d.names.push(name.to_string());
                d.ids.insert(name.to_string(), id);
                id
            }
        };
        d.pending.push((at, id));
        Ok(0)
    }

    /// Looks up every set of `names` (distinct, in the order met), so
    /// that [`Ctx::set_index`] answers from what it found (a failed
    /// lookup is left for it to meet again, and so to report).
    ///
    /// Past [`DUMP_FROM`] distinct sets, one netlink dump of every set's
    /// header answers them all ([`super::ipset_dump`]: the kernel's
    /// search by name is linear in its table of sets); a name the dump
    /// does not have, or a failed dump, is asked one by one as before.
    pub fn prefetch_names(&mut self, names: &[&str]) {
        if names.len() >= DUMP_FROM {
            if let Ok(headers) = self.sock.ipset_headers() {
                for name in names {
                    if let Some(h) = headers.get(*name) {
                        let index = (h.family == self.sock.abi().nfproto).then_some(h.index);
                        self.sets.insert(name.to_string(), index);
                    }
                }
            }
        }
        for name in names {
            let _ = self.set_index(name);
        }
    }

    pub(super) fn set_index(&mut self, name: &str) -> Result<u16, String> {
        let none = || format!("no {} set `{name}`", self.sock.abi().family.name());
        if let Some(i) = self.sets.get(name) {
            return i.ok_or_else(none);
        }
        let i = self
            .sock
            .set_index(name)
            .map_err(|e| format!("set `{name}`: {e}"))?;
        self.sets.insert(name.to_string(), i);
        i.ok_or_else(none)
    }

    pub(super) fn family(&self) -> Family {
        self.sock.abi().family
    }

    pub(super) fn require(
        &mut self,
        target: bool,
        name: &'static str,
        rev: u8,
    ) -> Result<(), String> {
        let sock = self.sock;
        let ok = *self
            .revisions
            .entry((target, name, rev))
            .or_insert_with(|| sock.has_revision(target, name, rev));
        if ok {
            Ok(())
        } else {
            Err(format!("the kernel lacks `{name}` revision {rev}"))
        }
    }
}

/// Encodes match `name` with `opts` (`proto`: the rule's `-p`).
pub(crate) fn encode_match(
    name: &str,
    opts: &[Opt],
    proto: u16,
    ctx: &mut Ctx,
) -> Result<Vec<u8>, String> {
    let family = ctx.family();
    let (ext, rev, data): (&'static str, u8, Vec<u8>) = match name {
        "comment" => ("comment", 0, comment(opts)?),
        "set" => ("set", 4, set(opts, ctx)?),
        "limit" => ("limit", 0, limit(opts)?),
        "tcp" if proto == 6 => ("tcp", 0, tcp_udp(opts, true)?),
        "udp" if proto == 17 => ("udp", 0, tcp_udp(opts, false)?),
        "sctp" if proto == 132 => ("sctp", 0, sctp(opts)?),
        "icmp" if proto == 1 && family == Family::Ipv4 => ("icmp", 0, icmp(opts, "icmp-type")?),
        "icmp6" if proto == 58 && family == Family::Ipv6 => {
            ("icmp6", 0, icmp(opts, "icmpv6-type")?)
        }
        "multiport" if matches!(proto, 6 | 17 | 132) => ("multiport", 1, multiport(opts)?),
        "conntrack" => ("conntrack", 3, conntrack(opts)?),
        "statistic" => ("statistic", 0, statistic(opts)?),
        "recent" => ("recent", 1, recent(opts)?),
        "mark" => ("mark", 1, mark_match(opts)?),
        "iprange" => ("iprange", 1, iprange(opts, family)?),
        _ => return Err(format!("match `{name}`")),
    };
    ctx.require(false, ext, rev)?;
    Ok(xt_object(ext, rev, &data))
}

/// The one option of extension `ext`, which must be `--name`.
pub(super) fn sole<'o>(opts: &'o [Opt], ext: &str, name: &str) -> Result<&'o Opt, String> {
    match opts {
        [o] if o.name == name => Ok(o),
        [o] => Err(format!("{ext} option `--{}`", o.name)),
        _ => Err(format!("{ext} options")),
    }
}

/// The one argument of an option that takes one, not inverted.
pub(super) fn one(o: &Opt) -> Result<&str, String> {
    match o.args.as_slice() {
        [a] if !o.invert => Ok(a),
        _ => Err(format!("option `--{}`", o.name)),
    }
}

pub(super) fn seen(flag: &mut bool, o: &Opt) -> Result<(), String> {
    if std::mem::replace(flag, true) {
        Err(format!("repeated `--{}`", o.name))
    } else {
        Ok(())
    }
}

/// `xt_comment_info`: `char comment[256]`.
fn comment(opts: &[Opt]) -> Result<Vec<u8>, String> {
    let o = sole(opts, "comment", "comment")?;
    let c = one(o)?;
    if c.len() > 255 {
        return Err("comment longer than 255".into());
    }
    let mut d = vec![0u8; 256];
    d[..c.len()].copy_from_slice(c.as_bytes());
    Ok(d)
}

/// `xt_set_info_match_v4`: `{u16 index; u8 dim; u8 flags}`, two
/// `ip_set_counter_match {u64 value; u8 op}` (none), `u32 flags`. `flags`
/// of the set info: bit 0 inversion, bit i the i-th direction is `src`.
fn set(opts: &[Opt], ctx: &mut Ctx) -> Result<Vec<u8>, String> {
    let [o] = opts else {
        return Err("set options".into());
    };
    let (name, dirs) = match (o.name.as_str(), o.args.as_slice()) {
        ("match-set", [name, dirs]) => (name, dirs),
        _ => return Err(format!("set option `--{}`", o.name)),
    };
    let (dim, flags) = set_dirs(dirs)?;
    let index = ctx.set_index_at(name, 0)?;
    let mut d = vec![0u8; 48];
    d[..2].copy_from_slice(&index.to_ne_bytes());
    d[2] = dim;
    d[3] = flags | u8::from(o.invert);
    Ok(d)
}

/// libxt_set's `parse_dirs`: `src|dst[,…]` (at most 6) as the dimension
/// and the flags (bit i: the i-th direction is `src`).
pub(super) fn set_dirs(dirs: &str) -> Result<(u8, u8), String> {
    let dirs: Vec<&str> = dirs.split(',').collect();
    if dirs.is_empty() || dirs.len() > 6 {
        return Err("set directions".into());
    }
    let mut flags = 0u8;
    for (i, d) in dirs.iter().enumerate() {
        match *d {
            "src" => flags |= 1 << (i + 1),
            "dst" => {}
            _ => return Err(format!("set direction `{d}`")),
        }
    }
    Ok((dirs.len() as u8, flags))
}

/// `xt_rateinfo` as userspace fills it: `avg` (`XT_LIMIT_SCALE` × the
/// period / rate) and `burst`; the rest is the kernel's.
fn limit(opts: &[Opt]) -> Result<Vec<u8>, String> {
    const SCALE: u32 = 10_000;
    let mut avg = SCALE * 3600 / 3;
    let mut burst = 5u32;
    let (mut l, mut b) = (false, false);
    for o in opts {
        match o.name.as_str() {
            "limit" => {
                seen(&mut l, o)?;
                avg = rate(one(o)?).ok_or_else(|| format!("rate `{}`", one(o).unwrap_or("")))?;
            }
            "limit-burst" => {
                seen(&mut b, o)?;
                burst = one(o)?
                    .parse()
                    .ok()
                    .filter(|n| *n <= 10_000)
                    .ok_or("burst")?;
            }
            n => return Err(format!("limit option `--{n}`")),
        }
    }
    let mut d = vec![0u8; 40];
    d[..4].copy_from_slice(&avg.to_ne_bytes());
    d[4..8].copy_from_slice(&burst.to_ne_bytes());
    Ok(d)
}

/// libxt_limit's `parse_rate`: `N[/second|/minute|/hour|/day]`, a unit
/// abbreviated to any prefix.
fn rate(s: &str) -> Option<u32> {
    const SCALE: u64 = 10_000;
    let (n, unit) = match s.split_once('/') {
        Some((n, u)) => (n, Some(u)),
        None => (s, None),
    };
    let mult: u64 = match unit {
        None => 1,
        Some(u) => {
            let u = u.to_ascii_lowercase();
            if u.is_empty() {
                return None;
            }
            [
                ("second", 1),
                ("minute", 60),
                ("hour", 3600),
                ("day", 86400),
            ]
            .iter()
            .find(|(w, _)| w.starts_with(&u))?
            .1
        }
    };
    let r: u64 = n.parse().ok().filter(|r| *r > 0)?;
    let v = SCALE * mult / r;
    (v > 0 && v <= u64::from(u32::MAX)).then_some(v as u32)
}

/// `PORT` or `LO:HI` (`LO:` to 65535, `:HI` from 0).
fn port_range(s: &str) -> Result<(u16, u16), String> {
    let p = |x: &str, d: u16| -> Result<u16, String> {
        if x.is_empty() {
            Ok(d)
        } else {
            x.parse().map_err(|_| format!("port `{s}`"))
        }
    };
    match s.split_once(':') {
        Some((a, b)) => {
            let r = (p(a, 0)?, p(b, u16::MAX)?);
            if r.0 > r.1 {
                return Err(format!("port range `{s}`"));
            }
            Ok(r)
        }
        None if !s.is_empty() => Ok((p(s, 0)?, p(s, 0)?)),
        None => Err("empty port".into()),
    }
}

/// `xt_tcp` (`spts[2]`, `dpts[2]`, option, flg_mask, flg_cmp, invflags)
/// or `xt_udp` (`spts[2]`, `dpts[2]`, invflags).
fn tcp_udp(opts: &[Opt], tcp: bool) -> Result<Vec<u8>, String> {
    let mut spts = (0u16, u16::MAX);
    let mut dpts = (0u16, u16::MAX);
    let mut inv = 0u8;
    let (mut s, mut d) = (false, false);
    for o in opts {
        let [a] = o.args.as_slice() else {
            return Err(format!("option `--{}`", o.name));
        };
        match o.name.as_str() {
            "sport" | "source-port" => {
                seen(&mut s, o)?;
                spts = port_range(a)?;
                inv |= if o.invert { 0x01 } else { 0 };
            }
            "dport" | "destination-port" => {
                seen(&mut d, o)?;
                dpts = port_range(a)?;
                inv |= if o.invert { 0x02 } else { 0 };
            }
            n => return Err(format!("option `--{n}`")),
        }
    }
    let mut b = Vec::new();
    for v in [spts.0, spts.1, dpts.0, dpts.1] {
        b.extend_from_slice(&v.to_ne_bytes());
    }
    if tcp {
        b.extend_from_slice(&[0, 0, 0, inv]);
    } else {
        b.push(inv);
    }
    Ok(b)
}

/// `xt_sctp_info`: `dpts[2]`, `spts[2]`, `chunkmap[64]` (u32s),
/// chunk_match_type, `flag_info[4]`, flag_count, flags (1 source ports,
/// 2 destination ports), invflags; 292 bytes. Ports only (no
/// `--chunk-types`). As libxt_sctp: each `flag_info`'s chunk type -1,
/// a port not given 0:0 (its flag unset).
fn sctp(opts: &[Opt]) -> Result<Vec<u8>, String> {
    let mut d = vec![0u8; 292];
    for i in 0..4 {
        d[268 + 3 * i] = 0xff;
    }
    let (mut flags, mut inv) = (0u32, 0u32);
    let mut ports = [(0u16, 0u16), (0u16, 0u16)];
    for o in opts {
        let (slot, bit) = match o.name.as_str() {
            "dport" | "destination-port" => (0, 2u32),
            "sport" | "source-port" => (1, 1u32),
            n => return Err(format!("sctp option `--{n}`")),
        };
        if flags & bit != 0 {
            return Err(format!("repeated `--{}`", o.name));
        }
        let [a] = o.args.as_slice() else {
            return Err(format!("option `--{}`", o.name));
        };
        ports[slot] = port_range(a)?;
        flags |= bit;
        inv |= if o.invert { bit } else { 0 };
    }
    for (slot, at) in [(0, 0), (1, 4)] {
        d[at..at + 2].copy_from_slice(&ports[slot].0.to_ne_bytes());
        d[at + 2..at + 4].copy_from_slice(&ports[slot].1.to_ne_bytes());
    }
    d[284..288].copy_from_slice(&flags.to_ne_bytes());
    d[288..292].copy_from_slice(&inv.to_ne_bytes());
    Ok(d)
}

/// `ipt_icmp` / `ip6t_icmp` (the same four bytes): type, code range,
/// invflags; `--icmp-type TYPE[/CODE]` (IPv4) or `--icmpv6-type
/// TYPE[/CODE]` (IPv6), numbers only. IPv4's type 255 means "any" to
/// the kernel and is refused; IPv6's is a type like the others.
fn icmp(opts: &[Opt], option: &str) -> Result<Vec<u8>, String> {
    let o = sole(opts, "icmp", option)?;
    let [a] = o.args.as_slice() else {
        return Err("icmp argument".into());
    };
    let (ty, code) = match a.split_once('/') {
        Some((t, c)) => {
            let c: u8 = c.parse().map_err(|_| "icmp code")?;
            (t, (c, c))
        }
        None => (a.as_str(), (0, 0xff)),
    };
    let ty: u8 = ty.parse().map_err(|_| format!("icmp type `{ty}`"))?;
    if ty == 0xff && option == "icmp-type" {
        return Err("icmp type 255".into());
    }
    Ok(vec![ty, code.0, code.1, u8::from(o.invert)])
}

/// `xt_multiport_v1`: flags (0 source, 1 destination, 2 either), count,
/// `ports[15]`, `pflags[15]` (1: this port starts a range), invert.
fn multiport(opts: &[Opt]) -> Result<Vec<u8>, String> {
    let [o] = opts else {
        return Err("multiport options".into());
    };
    let flags = match o.name.as_str() {
        "sports" | "source-ports" => 0u8,
        "dports" | "destination-ports" => 1,
        "ports" => 2,
        n => return Err(format!("multiport option `--{n}`")),
    };
    let [list] = o.args.as_slice() else {
        return Err("multiport argument".into());
    };
    let mut ports: Vec<u16> = Vec::new();
    let mut pflags: Vec<u8> = Vec::new();
    for item in list.split(',') {
        if item.contains(':') {
            let (lo, hi) = port_range(item)?;
            ports.extend([lo, hi]);
            pflags.extend([1, 0]);
        } else {
            ports.push(item.parse().map_err(|_| format!("port `{item}`"))?);
            pflags.push(0);
        }
    }
    if ports.len() > 15 {
        return Err("more than 15 multiport ports".into());
    }
    let mut d = vec![0u8; 48];
    d[0] = flags;
    d[1] = ports.len() as u8;
    for (i, p) in ports.iter().enumerate() {
        d[2 + 2 * i..4 + 2 * i].copy_from_slice(&p.to_ne_bytes());
        d[32 + i] = pflags[i];
    }
    d[47] = u8::from(o.invert);
    Ok(d)
}

/// `xt_conntrack_mtinfo3` with only `--ctstate`: eight addresses and
/// masks (128 bytes), expires, l4proto, ports, then `match_flags` at 146,
/// `invert_flags` at 148, `state_mask` at 150; 168 bytes in all.
fn conntrack(opts: &[Opt]) -> Result<Vec<u8>, String> {
    let o = sole(opts, "conntrack", "ctstate")?;
    let [list] = o.args.as_slice() else {
        return Err("conntrack argument".into());
    };
    let mut mask = 0u16;
    for s in list.split(',') {
        mask |= match s {
            "INVALID" => 1 << 0,
            "ESTABLISHED" => 1 << 1,
            "RELATED" => 1 << 2,
            "NEW" => 1 << 3,
            "SNAT" => 1 << 6,
            "DNAT" => 1 << 7,
            "UNTRACKED" => 1 << 8,
            _ => return Err(format!("ctstate `{s}`")),
        };
    }
    const STATE: u16 = 1;
    let mut d = vec![0u8; 168];
    d[146..148].copy_from_slice(&STATE.to_ne_bytes());
    if o.invert {
        d[148..150].copy_from_slice(&STATE.to_ne_bytes());
    }
    d[150..152].copy_from_slice(&mask.to_ne_bytes());
    Ok(d)
}

/// `xt_statistic_info` in random mode: mode 0, flags (1: inverted),
/// `probability` = round(2^31 × p), as libxt_statistic computes it, and
/// `nth.count` (see below).
fn statistic(opts: &[Opt]) -> Result<Vec<u8>, String> {
    let mut p: Option<(f64, bool)> = None;
    let mut random = false;
    for o in opts {
        match (o.name.as_str(), o.args.as_slice()) {
            ("mode", [m]) if m == "random" && !o.invert && !random => random = true,
            ("probability", [v]) if p.is_none() => {
                let v: f64 = v.parse().map_err(|_| "probability")?;
                if !(0.0..=1.0).contains(&v) {
                    return Err("probability out of range".into());
                }
                p = Some((v, o.invert));
            }
            _ => return Err(format!("statistic option `--{}`", o.name)),
        }
    }
    let (Some((v, inv)), true) = (p, random) else {
        return Err("statistic without random mode and probability".into());
    };
    let mut d = vec![0u8; 24];
    d[2..4].copy_from_slice(&u16::from(inv).to_ne_bytes());
    let prob = (2_147_483_648.0 * v).round() as u32;
    d[4..8].copy_from_slice(&prob.to_ne_bytes());
    // libxt_statistic's final check sets `nth.count = nth.every -
    // nth.packet` in every mode: through the union, the probability.
    d[12..16].copy_from_slice(&prob.to_ne_bytes());
    Ok(d)
}

/// `xt_recent_mtinfo_v1`: seconds, hit_count, check_set (1 rcheck, 2
/// set, 4 update, 8 remove, 0x20 reap), invert, `name[200]`, side (0
/// source, 1 destination), mask (all ones). The tool's checks: one action;
/// `--seconds`/`--reap` only with `--rcheck`/`--update`; `--reap` needs
/// `--seconds`.
fn recent(opts: &[Opt]) -> Result<Vec<u8>, String> {
    let mut d = vec![0u8; 228];
    let mut name = "DEFAULT".to_string();
    let (mut action, mut invert, mut seconds, mut reap, mut side) = (0u8, false, None, false, None);
    for o in opts {
        let bit = match o.name.as_str() {
            "rcheck" => 1,
            "set" => 2,
            "update" => 4,
            "remove" => 8,
            _ => 0,
        };
        if bit != 0 {
            if action != 0 || !o.args.is_empty() {
                return Err("recent: one action".into());
            }
            action = bit;
            invert = o.invert;
            continue;
        }
        match o.name.as_str() {
            "name" => {
                let n = one(o)?;
                if n.is_empty() || n.len() > 199 {
                    return Err("recent name".into());
                }
                name = n.to_string();
            }
            "seconds" if seconds.is_none() => {
                seconds = Some(one(o)?.parse::<u32>().map_err(|_| "recent seconds")?)
            }
            "reap" if o.args.is_empty() && !o.invert && !reap => reap = true,
            "rsource" if o.args.is_empty() && !o.invert && side.is_none() => side = Some(0),
            "rdest" if o.args.is_empty() && !o.invert && side.is_none() => side = Some(1),
            n => return Err(format!("recent option `--{n}`")),
        }
    }
    let checks = matches!(action, 1 | 4);
    if action == 0 || (seconds.is_some() || reap) && !checks || reap && seconds.is_none() {
        return Err("recent options the tool refuses".into());
    }
    d[..4].copy_from_slice(&seconds.unwrap_or(0).to_ne_bytes());
    d[8] = action | if reap { 0x20 } else { 0 };
    d[9] = u8::from(invert);
    d[10..10 + name.len()].copy_from_slice(name.as_bytes());
    d[210] = side.unwrap_or(0);
    d[212..228].fill(0xff);
    Ok(d)
}

/// `VALUE[/MASK]` (decimal or 0x hex), mask all ones when absent.
pub(super) fn value_mask(s: &str) -> Result<(u32, Option<u32>), String> {
    let num = |x: &str| {
        match x.strip_prefix("0x") {
            Some(h) => u32::from_str_radix(h, 16),
            None => x.parse(),
        }
        .map_err(|_| format!("mark `{s}`"))
    };
    match s.split_once('/') {
        Some((v, m)) => Ok((num(v)?, Some(num(m)?))),
        None => Ok((num(s)?, None)),
    }
}

/// `xt_mark_mtinfo1`: mark, mask, invert.
fn mark_match(opts: &[Opt]) -> Result<Vec<u8>, String> {
    let o = sole(opts, "mark", "mark")?;
    let [a] = o.args.as_slice() else {
        return Err("mark argument".into());
    };
    let (v, m) = value_mask(a)?;
    let mut d = vec![0u8; 9];
    d[..4].copy_from_slice(&v.to_ne_bytes());
    d[4..8].copy_from_slice(&m.unwrap_or(u32::MAX).to_ne_bytes());
    d[8] = u8::from(o.invert);
    Ok(d)
}

/// `xt_iprange_mtinfo`: src min/max, dst min/max (`nf_inet_addr`, IPv4 in
/// the first 4 bytes), flags (1 src, 2 dst, 0x10/0x20 inverted).
fn iprange(opts: &[Opt], family: Family) -> Result<Vec<u8>, String> {
    let mut d = vec![0u8; 65];
    for o in opts {
        let (at, bit) = match o.name.as_str() {
            "src-range" => (0, 1u8),
            "dst-range" => (32, 2),
            n => return Err(format!("iprange option `--{n}`")),
        };
        if d[64] & bit != 0 {
            return Err("repeated iprange option".into());
        }
        let a = one_any(o)?;
        let (lo, hi) = a.split_once('-').unwrap_or((a, a));
        let ip = |x: &str| {
            let parsed: Result<IpAddr, _> = match family {
                Family::Ipv4 => x.parse::<Ipv4Addr>().map(IpAddr::from),
                Family::Ipv6 => x.parse::<Ipv6Addr>().map(IpAddr::from),
            };
            parsed.map(octets).map_err(|_| format!("iprange `{a}`"))
        };
        let (lo, hi) = (ip(lo)?, ip(hi)?);
        d[at..at + lo.len()].copy_from_slice(&lo);
        d[at + 16..at + 16 + hi.len()].copy_from_slice(&hi);
        d[64] |= bit | if o.invert { bit << 4 } else { 0 };
    }
    Ok(d)
}

/// The one argument of an option, inverted or not.
fn one_any(o: &Opt) -> Result<&str, String> {
    match o.args.as_slice() {
        [a] => Ok(a),
        _ => Err(format!("option `--{}`", o.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_as_libxt_limit() {
        assert_eq!(rate("5/sec"), Some(2000));
        assert_eq!(rate("1/s"), Some(10_000));
        assert_eq!(rate("3/hour"), Some(12_000_000));
        assert_eq!(rate("1/minute"), Some(600_000));
        assert_eq!(rate("100000/sec"), None);
        assert_eq!(rate("0/sec"), None);
        assert_eq!(rate("5/fortnight"), None);
    }

    #[test]
    fn port_ranges() {
        assert_eq!(port_range("80").unwrap(), (80, 80));
        assert_eq!(port_range("8081:8099").unwrap(), (8081, 8099));
        assert_eq!(port_range("1024:").unwrap(), (1024, 65535));
        assert!(port_range("9:8").is_err());
        assert!(port_range("http").is_err());
    }
}
