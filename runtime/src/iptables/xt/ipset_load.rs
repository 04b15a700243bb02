//! The direct set loader: an apply's step 1 (`ipset restore -exist` of
//! the generation's sets, [`crate::iptables::load`]) written to the
//! kernel over `NETLINK_NETFILTER` instead of run through the tool.
//!
//! # Why
//! At 100,000 rules step 1 is 6,778 sets and 132,024 members. Measured
//! (session 17, one `ipset restore` of such a text into a fresh
//! namespace): 4.2 s wall, 2.33 s of it the tool's own CPU (text parsing,
//! libipset's per-element work, one netlink message and one kernel
//! lookup of the set by name — linear over the namespace's sets — per
//! line). Here a set costs two messages: `IPSET_CMD_CREATE`, then one
//! `IPSET_CMD_ADD` carrying all its members (an `IPSET_ATTR_ADT` list of
//! `IPSET_ATTR_DATA`, as libipset's restore mode batches them), so one
//! lookup by name per set; and many messages go in one `send`.
//!
//! # Same meaning as the tool
//! Only the text [`super::ipset_text`] parses exactly is written here.
//! Each create asks for the revision the tool would: the highest the
//! tool knows ([`TOOL_MAX`], ipset 7.17) that the kernel has
//! (`IPSET_CMD_TYPE`). No message carries `NLM_F_EXCL`, as the tool's
//! `-exist`: a set that exists with the same type and options, or an
//! element that exists, is no error. Every message asks for an ACK and
//! every ACK is read and checked.
//!
//! # Fail closed
//! A batch the parser refuses, a socket that cannot be made, or any
//! errno in any ACK sends the whole batch to `ipset restore -exist`,
//! which redoes what this loader did (harmless under `-exist`) and gives
//! the real message for what is wrong. Each direct batch is a line in
//! the exec log (program [`IPSET_DIRECT`]) and counted
//! ([`super::super::exec::Exec::ipset_counts`]); each fallback is counted
//! and, with `WEIR_EXEC_TRACE`, says why. `WEIR_XTABLES=tools` turns the
//! loader off. The apply's read-back still compares every set with
//! what the kernel holds ([`super::ipset_save`]).
//!
//! # Destroying
//! The same socket destroys sets ([`SetSock::destroy`]: the old
//! generation's removal, a rollback's, temporary sets), one
//! `IPSET_CMD_DESTROY` per set, many per `send`, every ACK read, instead
//! of an `ipset restore` of `destroy` lines. Measured (session 18, the
//! 5,462 sets a 100,000-rule replace removes): 0.20–0.22 s against the
//! tool's 0.21–0.28 s — the kernel's destroy of each set is most of it;
//! what goes is the process and the text. A set the kernel refuses
//! (still referenced by rules it is releasing) goes to
//! `ipset destroy` with retries (`Iptables::destroy_sets_batch`).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::ipset_dump::{attrs, put_attr};
use super::ipset_proto::*;
use super::ipset_text::{Kind, Member, SetLoad};

/// The exec log's program name for a batch of sets loaded directly.
pub const IPSET_DIRECT: &str = "ipset (direct)";

/// The highest revision of each type ipset 7.17 knows: the tool picks
/// the highest it knows that the kernel has (`ipset list -t` shows 7 and
/// 6 on this kernel for the tool's sets; the oracle test compares).
const TOOL_MAX: [(Kind, u8); 2] = [(Kind::Net, 7), (Kind::Ip, 6)];

/// The lowest revision that takes what a set uses: `skbinfo` came in
/// hash:net 6 and hash:ip 4, `nomatch` in hash:net 1.
fn needed(kind: Kind, skbinfo: bool) -> u8 {
    match (kind, skbinfo) {
        (Kind::Net, true) => 6,
        (Kind::Net, false) => 1,
        (Kind::Ip, true) => 4,
        (Kind::Ip, false) => 0,
    }
}

/// Bytes of messages per `send` and messages per `send` (their ACKs
/// wait in the receive buffer until read).
const SEND_BYTES: usize = 1 << 18;
const SEND_MSGS: usize = 256;
/// An `IPSET_ATTR_ADT` list's length must fit its `u16`: members go in
/// several ADD messages past this.
const ADT_BYTES: usize = 60_000;

/// A `NETLINK_NETFILTER` socket in the target namespace, with the
/// revisions it has asked the kernel for.
pub(crate) struct SetSock {
    fd: OwnedFd,
    seq: u32,
    revisions: Vec<((Kind, u8), u8)>,
}

impl SetSock {
    /// Opens the socket in `netns` (an open `/var/run/netns/NAME`) or in
    /// ours: a socket keeps the namespace it was made in.
    pub fn open(netns: Option<&File>) -> io::Result<SetSock> {
        let make = crate::nfnetlink::socket;
        let fd = match netns {
            Some(f) => crate::iptables::exec::in_netns(f, make)??,
            None => make()?,
        };
        // Error ACKs without the request's payload; room for the ACKs of
        // one send. A failure leaves the defaults (smaller sends would
        // still be read right; an overflow is an error, so a fallback).
        setopt(&fd, SOL_NETLINK, NETLINK_CAP_ACK, 1)?;
        let _ = setopt(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 1 << 20);
        let _ = setopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 1 << 22);
        Ok(SetSock {
            fd,
            seq: 1,
            revisions: Vec::new(),
        })
    }

    /// The revision the tool would create `kind` of `family` with.
    fn revision(&mut self, kind: Kind, family: u8) -> Result<u8, String> {
        if let Some(&(_, r)) = self.revisions.iter().find(|(k, _)| *k == (kind, family)) {
            return Ok(r);
        }
        let mut body = Vec::new();
        put_attr(&mut body, IPSET_ATTR_PROTOCOL, &[IPSET_PROTOCOL]);
        put_attr(&mut body, IPSET_ATTR_TYPENAME, &cstr(kind.name()));
        put_attr(&mut body, IPSET_ATTR_FAMILY, &[family]);
        let seq = self.next_seq();
        let req = message(IPSET_CMD_TYPE, seq, &body);
        send(&self.fd, &req).map_err(|e| format!("send: {e}"))?;
        let (mut min, mut max) = (None, None);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = recv(&self.fd, &mut buf).map_err(|e| format!("recv: {e}"))?;
            let mut acked = None;
            for (kind_, mseq, payload) in messages(&buf[..n])? {
                if mseq != seq {
                    return Err("a reply to another request".into());
                }
                if kind_ == NLMSG_ERROR {
                    acked = Some(errno(payload)?);
                } else {
                    for (t, v) in attrs(payload.get(4..).unwrap_or_default()).unwrap_or_default() {
                        match (t, v.first()) {
                            (IPSET_ATTR_REVISION, Some(&r)) => max = Some(r),
                            (IPSET_ATTR_REVISION_MIN, Some(&r)) => min = Some(r),
                            _ => {}
                        }
                    }
                }
            }
            match acked {
                None => continue,
                Some(0) => break,
                Some(e) => return Err(format!("IPSET_CMD_TYPE {}: errno {e}", kind.name())),
            }
        }
        let (Some(min), Some(max)) = (min, max) else {
            return Err(format!("IPSET_CMD_TYPE {}: no revisions", kind.name()));
        };
        let tool = TOOL_MAX.iter().find(|(k, _)| *k == kind).map_or(0, |t| t.1);
        let r = max.min(tool);
        if r < min {
            return Err(format!(
                "the kernel's {} revisions {min}-{max} are newer than the tool's",
                kind.name()
            ));
        }
        self.revisions.push(((kind, family), r));
        Ok(r)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Creates and fills `sets`, in order; `Err` on anything the kernel
    /// did not ACK with 0.
    pub fn load(&mut self, sets: &[SetLoad]) -> Result<(), String> {
        let mut msgs: Vec<(u32, Vec<u8>, String)> = Vec::new();
        for s in sets {
            let c = &s.create;
            let rev = self.revision(c.kind, c.family)?;
            if rev < needed(c.kind, c.skbinfo) {
                return Err(format!("{} revision {rev} is too old", c.kind.name()));
            }
            let seq = self.next_seq();
            msgs.push((seq, create(s, rev, seq), format!("create {}", c.name)));
            for chunk in adds(s) {
                let seq = self.next_seq();
                msgs.push((
                    seq,
                    message(IPSET_CMD_ADD, seq, &chunk),
                    format!("add to {}", c.name),
                ));
            }
        }
        let mut at = 0;
        while at < msgs.len() {
            let (mut end, mut bytes) = (at, 0);
            while end < msgs.len()
                && end - at < SEND_MSGS
                && (end == at || bytes + msgs[end].1.len() <= SEND_BYTES)
            {
                bytes += msgs[end].1.len();
                end += 1;
            }
            self.exchange(&msgs[at..end])?;
            at = end;
        }
        Ok(())
    }

    /// Sends `msgs` in one datagram and reads one ACK for each; `Err`
    /// names the first message the kernel refused.
    fn exchange(&self, msgs: &[(u32, Vec<u8>, String)]) -> Result<(), String> {
        let refused = self.acks(msgs)?;
        match refused.first() {
            Some(&(i, e)) => Err(format!("the kernel refused {}: errno {e}", msgs[i].2)),
            None => Ok(()),
        }
    }

    /// Sends `msgs` in one datagram and reads one ACK for each: the
    /// messages the kernel refused (index in `msgs`, errno), in order.
    fn acks(&self, msgs: &[(u32, Vec<u8>, String)]) -> Result<Vec<(usize, i32)>, String> {
        let out: Vec<u8> = msgs.iter().flat_map(|m| m.1.iter().copied()).collect();
        send(&self.fd, &out).map_err(|e| format!("send: {e}"))?;
        let mut pending: std::collections::HashMap<u32, usize> =
            msgs.iter().enumerate().map(|(i, m)| (m.0, i)).collect();
        let mut buf = vec![0u8; 1 << 16];
        let mut refused = Vec::new();
        while !pending.is_empty() {
            let n = recv(&self.fd, &mut buf).map_err(|e| format!("recv: {e}"))?;
            for (kind, seq, payload) in messages(&buf[..n])? {
                let i = match pending.remove(&seq) {
                    Some(i) if kind == NLMSG_ERROR => i,
                    _ => {
                        return Err(format!(
                            "an unexpected netlink message (type {kind}, seq {seq})"
                        ))
                    }
                };
                let e = errno(payload)?;
                if e != 0 {
                    refused.push((i, e));
                }
            }
        }
        refused.sort_unstable();
        Ok(refused)
    }

    /// Destroys the sets `names` (`IPSET_CMD_DESTROY` each, many per
    /// `send`, every ACK read): the sets the kernel did not destroy, with
    /// its errno. A set that does not exist is no error (the messages
    /// carry no `NLM_F_EXCL`, so the kernel answers as to the tool's
    /// `-exist`), as [`crate::iptables::Iptables::destroy_sets`] takes
    /// the tool's "does not exist".
    pub fn destroy(&mut self, names: &[String]) -> Result<Vec<(String, i32)>, String> {
        let mut msgs = Vec::with_capacity(names.len());
        for n in names {
            if n.is_empty() || n.len() > super::ipset_text::MAX_NAME {
                return Err(format!("a set name {n:?}"));
            }
            let mut b = Vec::new();
            put_attr(&mut b, IPSET_ATTR_PROTOCOL, &[IPSET_PROTOCOL]);
            put_attr(&mut b, IPSET_ATTR_SETNAME, &cstr(n));
            let seq = self.next_seq();
            msgs.push((
                seq,
                message(IPSET_CMD_DESTROY, seq, &b),
                format!("destroy {n}"),
            ));
        }
        let mut left = Vec::new();
        for (c, chunk) in msgs.chunks(SEND_MSGS).enumerate() {
            let base = c * SEND_MSGS;
            for (i, e) in self.acks(chunk)? {
                left.push((names[base + i].clone(), e));
            }
        }
        Ok(left)
    }
}

/// Loads `ipset restore` text into the namespace `netns` with the direct
/// set loader only — no tool and no fallback: `Err` says what it would
/// have sent to the tool. For the oracle tests.
pub fn load_direct(netns: Option<&str>, text: &str) -> Result<(), String> {
    let sets = super::ipset_text::parse(text)?;
    test_sock(netns)?.load(&sets)
}

/// The set socket in the namespace `netns`, for the tests' entry points.
fn test_sock(netns: Option<&str>) -> Result<SetSock, String> {
    let file = netns
        .map(|n| File::open(std::path::Path::new(crate::iptables::exec::NETNS_DIR).join(n)))
        .transpose()
        .map_err(|e| e.to_string())?;
    SetSock::open(file.as_ref()).map_err(|e| e.to_string())
}

/// Destroys the sets `names` in the namespace `netns` over netlink only
/// ([`SetSock::destroy`]): those the kernel refused, with its errno. For
/// the tests.
pub fn destroy_direct(netns: Option<&str>, names: &[String]) -> Result<Vec<(String, i32)>, String> {
    test_sock(netns)?.destroy(names)
}

fn setopt(fd: &OwnedFd, level: i32, opt: i32, v: i32) -> io::Result<()> {
    // SAFETY: setsockopt(2) of an int we own, for its size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&v as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn send(fd: &OwnedFd, b: &[u8]) -> io::Result<()> {
    // SAFETY: send(2) of a buffer we own, for its length.
    let n = unsafe { libc::send(fd.as_raw_fd(), b.as_ptr().cast(), b.len(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else if n as usize != b.len() {
        Err(io::Error::other("short send"))
    } else {
        Ok(())
    }
}

fn recv(fd: &OwnedFd, b: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recv(2) into a buffer we own, at most its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), b.as_mut_ptr().cast(), b.len(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A name as a NUL-terminated string attribute's payload.
fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// A request: `nlmsghdr` (with `NLM_F_ACK`, never `NLM_F_EXCL`),
/// `nfgenmsg`, then `body`'s attributes.
fn message(cmd: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + body.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_IPSET << 8) | cmd).to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[libc::AF_INET as u8, 0]);
    m.extend_from_slice(&NFNL_SUBSYS_IPSET.to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Opens a nested attribute; [`end_nest`] writes its length.
fn begin_nest(b: &mut Vec<u8>, kind: u16) -> usize {
    let at = b.len();
    b.extend_from_slice(&0u16.to_ne_bytes());
    b.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    at
}

fn end_nest(b: &mut [u8], at: usize) {
    let len = (b.len() - at) as u16;
    b[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

fn put_u32(b: &mut Vec<u8>, kind: u16, v: u32) {
    put_attr(b, kind | NLA_F_NET_BYTEORDER, &v.to_be_bytes());
}

/// `IPSET_CMD_CREATE` of a set, with `rev`.
fn create(s: &SetLoad, rev: u8, seq: u32) -> Vec<u8> {
    let c = &s.create;
    let mut b = Vec::new();
    put_attr(&mut b, IPSET_ATTR_PROTOCOL, &[IPSET_PROTOCOL]);
    put_attr(&mut b, IPSET_ATTR_SETNAME, &cstr(&c.name));
    put_attr(&mut b, IPSET_ATTR_TYPENAME, &cstr(c.kind.name()));
    put_attr(&mut b, IPSET_ATTR_REVISION, &[rev]);
    put_attr(&mut b, IPSET_ATTR_FAMILY, &[c.family]);
    let d = begin_nest(&mut b, IPSET_ATTR_DATA);
    if let Some(h) = c.hashsize {
        put_u32(&mut b, IPSET_ATTR_HASHSIZE, h);
    }
    if let Some(m) = c.maxelem {
        put_u32(&mut b, IPSET_ATTR_MAXELEM, m);
    }
    if c.skbinfo {
        put_u32(&mut b, IPSET_ATTR_CADT_FLAGS, IPSET_FLAG_WITH_SKBINFO);
    }
    end_nest(&mut b, d);
    message(IPSET_CMD_CREATE, seq, &b)
}

/// The bodies of the ADD messages of a set's members (none for an empty
/// set), each under [`ADT_BYTES`].
fn adds(s: &SetLoad) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut members = s.members.iter().peekable();
    while members.peek().is_some() {
        let mut b = Vec::new();
        put_attr(&mut b, IPSET_ATTR_PROTOCOL, &[IPSET_PROTOCOL]);
        put_attr(&mut b, IPSET_ATTR_SETNAME, &cstr(&s.create.name));
        // The kernel takes an ADT list only beside a line number (for its
        // messages; the tool's restore sends its own).
        put_u32(&mut b, IPSET_ATTR_LINENO, 0);
        let adt = begin_nest(&mut b, IPSET_ATTR_ADT);
        while let Some(m) = members.peek() {
            if b.len() - adt > ADT_BYTES {
                break;
            }
            element(&mut b, m);
            members.next();
        }
        end_nest(&mut b, adt);
        out.push(b);
    }
    out
}

/// One member as an `IPSET_ATTR_DATA`.
fn element(b: &mut Vec<u8>, m: &Member) {
    let d = begin_nest(b, IPSET_ATTR_DATA);
    let ip = begin_nest(b, IPSET_ATTR_IP);
    match m.addr {
        std::net::IpAddr::V4(a) => {
            put_attr(b, IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER, &a.octets())
        }
        std::net::IpAddr::V6(a) => {
            put_attr(b, IPSET_ATTR_IPADDR_IPV6 | NLA_F_NET_BYTEORDER, &a.octets())
        }
    }
    end_nest(b, ip);
    if let Some(c) = m.cidr {
        put_attr(b, IPSET_ATTR_CIDR, &[c]);
    }
    if m.nomatch {
        put_u32(b, IPSET_ATTR_CADT_FLAGS, IPSET_FLAG_NOMATCH);
    }
    if let Some((v, mask)) = m.skbmark {
        let both = (u64::from(v) << 32) | u64::from(mask);
        put_attr(
            b,
            IPSET_ATTR_SKBMARK | NLA_F_NET_BYTEORDER,
            &both.to_be_bytes(),
        );
    }
    end_nest(b, d);
}

/// A received message: type, sequence number, payload after `nlmsghdr`.
type Msg<'a> = (u16, u32, &'a [u8]);

/// The messages of a datagram.
fn messages(mut d: &[u8]) -> Result<Vec<Msg<'_>>, String> {
    let mut out = Vec::new();
    while d.len() >= 16 {
        let len = u32::from_ne_bytes(d[..4].try_into().unwrap_or_default()) as usize;
        if len < 16 || len > d.len() {
            return Err("a truncated netlink message".into());
        }
        let kind = u16::from_ne_bytes([d[4], d[5]]);
        let seq = u32::from_ne_bytes(d[8..12].try_into().unwrap_or_default());
        out.push((kind, seq, &d[16..len]));
        d = d.get((len + 3) & !3..).unwrap_or_default();
    }
    Ok(out)
}

/// An `NLMSG_ERROR`'s error: 0 for an ACK, else the positive errno.
fn errno(payload: &[u8]) -> Result<i32, String> {
    let e = payload
        .get(..4)
        .ok_or("a truncated netlink error")?
        .try_into()
        .map(i32::from_ne_bytes)
        .map_err(|_| "a truncated netlink error")?;
    Ok(-e)
}

#[cfg(test)]
mod tests {
    use super::super::ipset_text::parse;
    use super::*;

    #[test]
    fn members_split_under_the_attribute_limit() {
        let mut t = String::from("create a hash:net family inet6\n");
        for i in 0..5000u32 {
            t.push_str(&format!("add a 2001:db8::{:x} nomatch\n", i));
        }
        let sets = parse(&t).unwrap();
        let bodies = adds(&sets[0]);
        assert!(bodies.len() > 1);
        for b in &bodies {
            assert!(b.len() < u16::MAX as usize);
        }
        // Every member is in one message: count the DATA attributes.
        let n: usize = bodies
            .iter()
            .map(|b| {
                let top = attrs(b).unwrap();
                let adt = top.iter().find(|(k, _)| *k == IPSET_ATTR_ADT).unwrap().1;
                attrs(adt).unwrap().len()
            })
            .sum();
        assert_eq!(n, 5000);
        assert!(adds(&parse("create e hash:ip\n").unwrap()[0]).is_empty());
    }
}
