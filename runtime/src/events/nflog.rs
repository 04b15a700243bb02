//! Verdict events from the iptables back end: an nfnetlink_log socket
//! bound to the NFLOG group the bundle's event rules report to
//! (compiler/src/iptables/events.rs; docs/events-iptables.md).
//!
//! **The kernel interface** (`include/uapi/linux/netfilter/nfnetlink_log.h`,
//! what libnetfilter_log wraps): a `NETLINK_NETFILTER` socket sends
//! `NFULNL_MSG_CONFIG` messages for the group (`res_id`): `NFULA_CFG_CMD`
//! `BIND`, `NFULA_CFG_MODE` (copy the packet, up to [`COPY_RANGE`] bytes:
//! enough for the IPv6 header, a few extension headers and the ports),
//! `NFULA_CFG_QTHRESH` 1 (deliver each record at once, not in batches of
//! 100 or every second) and `NFULA_CFG_FLAGS` `SEQ | CONNTRACK`. The kernel
//! then sends one `NFULNL_MSG_PACKET` per logged packet, with attributes
//! `NFULA_PREFIX` (the rule's `--nflog-prefix`, NUL-terminated),
//! `NFULA_PAYLOAD` (the packet from its IP header), `NFULA_TIMESTAMP`
//! (wall clock, seconds and microseconds, big-endian), `NFULA_SEQ` (a
//! per-group sequence number) and `NFULA_CT` (the packet's conntrack entry,
//! ctnetlink attributes).
//!
//! **Translated packets.** In filter FORWARD a service's packet is already
//! DNATed: the payload's destination is the backend. `NFULA_CT`'s
//! original tuple holds the destination the client sent to, so the event
//! reports that as `dst`/`dport` and the payload's as `backend`. Without
//! conntrack attributes (a kernel without `nf_conntrack_netlink`:
//! [`NflogSource::conntrack`] is false) a translated packet is reported as
//! the filter table saw it: to the backend, `backend` unset.
//!
//! **Loss.** Events over a rule's rate limit never reach the socket and
//! cannot be counted here. What [`EventSource::dropped`] counts: records
//! the socket lost (gaps in `NFULA_SEQ`; a receive buffer overrun
//! (`ENOBUFS`) counts at least one) and records that are not a weir event
//! or cannot be decoded.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use weir_compiler::contract::event::{parse_nflog_prefix, VerdictEvent};
use weir_compiler::contract::iptables::IptablesSection;

use super::{ip, EventSource};

/// Bytes of each packet the kernel copies: IPv6 (40) with extension
/// headers and the transport ports fit.
pub const COPY_RANGE: u32 = 256;
/// The socket's receive buffer (bursts of events wait here).
const RCVBUF: libc::c_int = 4 << 20;

const NLMSG_HDR: usize = 16;
const NFGENMSG: usize = 4;
const MSG_PACKET: u16 = ((libc::NFNL_SUBSYS_ULOG as u16) << 8) | libc::NFULNL_MSG_PACKET as u16;
const MSG_CONFIG: u16 = ((libc::NFNL_SUBSYS_ULOG as u16) << 8) | libc::NFULNL_MSG_CONFIG as u16;
const NLA_TYPE_MASK: u16 = libc::NLA_TYPE_MASK as u16;

// ctnetlink attributes inside `NFULA_CT` (linux/netfilter/nfnetlink_conntrack.h).
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_DST_PORT: u16 = 3;

/// An nfnetlink_log socket bound to one group, in the network namespace
/// of the thread that opened it.
pub struct NflogSource {
    fd: OwnedFd,
    group: u16,
    conntrack: bool,
    buf: Vec<u8>,
    /// Decoded events not yet returned (one receive may hold several).
    pending: std::collections::VecDeque<VerdictEvent>,
    next_seq: Option<u32>,
    dropped: u64,
}

impl NflogSource {
    /// Binds `group` in this thread's network namespace. Fails when
    /// another socket has bound the group (`EBUSY`: one reader per group)
    /// or without `CAP_NET_ADMIN`.
    pub fn open(group: u16) -> io::Result<NflogSource> {
        let fd = crate::nfnetlink::socket()?;
        // SAFETY: a zeroed sockaddr_nl is valid; the kernel assigns the port.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `sa` is a sockaddr_nl of the size given.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: an int option of the right size.
            let r = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&RCVBUF as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r == 0 {
                break;
            }
        }
        let mut s = NflogSource {
            fd,
            group,
            conntrack: false,
            buf: vec![0; 1 << 16],
            pending: Default::default(),
            next_seq: None,
            dropped: 0,
        };
        let cmd = [libc::NFULNL_CFG_CMD_BIND as u8];
        s.config(libc::NFULA_CFG_CMD as u16, &cmd)?;
        let mut mode = COPY_RANGE.to_be_bytes().to_vec();
        mode.extend_from_slice(&[libc::NFULNL_COPY_PACKET as u8, 0]);
        s.config(libc::NFULA_CFG_MODE as u16, &mode)?;
        s.config(libc::NFULA_CFG_QTHRESH as u16, &1u32.to_be_bytes())?;
        let seq = libc::NFULNL_CFG_F_SEQ as u16;
        let ct = libc::NFULNL_CFG_F_CONNTRACK as u16;
        // The kernel loads nf_conntrack_netlink on the first request and
        // asks to retry (EAGAIN); without it, no conntrack attributes.
        for _ in 0..2 {
            match s.config(libc::NFULA_CFG_FLAGS as u16, &(seq | ct).to_be_bytes()) {
                Ok(()) => {
                    s.conntrack = true;
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
                Err(_) => break,
            }
        }
        if !s.conntrack {
            s.config(libc::NFULA_CFG_FLAGS as u16, &seq.to_be_bytes())?;
        }
        Ok(s)
    }

    /// The reader for a bundle's iptables section: its events' group.
    /// Refused when the bundle was compiled with `--events off`.
    pub fn for_bundle(section: &IptablesSection) -> io::Result<NflogSource> {
        match &section.events {
            Some(e) => NflogSource::open(e.group),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the bundle was compiled with `--events off`: its iptables rules report no events",
            )),
        }
    }

    /// [`NflogSource::for_bundle`] opened inside the named network
    /// namespace (`/var/run/netns/NAME`; `None`: this one), as `weir
    /// monitor --netns` needs: the socket is made on a thread that entered
    /// the namespace, and stays bound to it wherever it is read.
    pub fn for_bundle_in(
        netns: Option<&str>,
        section: &IptablesSection,
    ) -> io::Result<NflogSource> {
        let Some(name) = netns else {
            return NflogSource::for_bundle(section);
        };
        let ns = std::fs::File::open(std::path::Path::new("/var/run/netns").join(name))?;
        let section = section.clone();
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: setns on a valid namespace fd; affects only this
                // short-lived thread.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                NflogSource::for_bundle(&section)
            })
            .join()
            .map_err(|_| io::Error::other("the namespace thread panicked"))?
        })
    }

    /// The group this source reads.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// Whether records carry conntrack attributes, so that a translated
    /// packet's original destination and its backend are both known.
    pub fn conntrack(&self) -> bool {
        self.conntrack
    }

    /// Sends one config attribute for the group and waits for the ack.
    fn config(&mut self, attr: u16, payload: &[u8]) -> io::Result<()> {
        let mut m = Vec::with_capacity(32);
        let attr_len = 4 + payload.len();
        let len = NLMSG_HDR + NFGENMSG + align(attr_len);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&MSG_CONFIG.to_ne_bytes());
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes()); // seq
        m.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
        m.extend_from_slice(&[libc::AF_UNSPEC as u8, libc::NFNETLINK_V0 as u8]);
        m.extend_from_slice(&self.group.to_be_bytes());
        m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
        m.extend_from_slice(&attr.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(len, 0);
        // SAFETY: sending our own buffer on our socket.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // The ack (an NLMSG_ERROR with error 0) or the error; events that
        // arrive meanwhile are decoded and kept.
        loop {
            if !self.wait(Duration::from_secs(2))? {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "nfnetlink_log did not answer",
                ));
            }
            if let Some(errno) = self.receive()? {
                return if errno == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(errno))
                };
            }
        }
    }

    /// Waits until the socket is readable; false on timeout.
    fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        match r {
            r if r < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
            0 => Ok(false),
            _ => Ok(true),
        }
    }

    /// Receives one datagram (it is readable) and decodes its messages
    /// into `pending`; the error code of an ack in it, if any.
    fn receive(&mut self) -> io::Result<Option<i32>> {
        // SAFETY: receiving into our own buffer.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                self.buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                // The receive buffer overran: records were lost (the
                // sequence gap says how many, at least one).
                Some(libc::ENOBUFS) => {
                    if self.next_seq.is_none() {
                        self.dropped += 1;
                    }
                    Ok(None)
                }
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
                _ => Err(e),
            };
        }
        let data = self.buf[..n as usize].to_vec();
        let mut ack = None;
        for (ty, body) in messages(&data) {
            match ty {
                t if t == libc::NLMSG_ERROR as u16 && body.len() >= 4 => {
                    let e = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
                    ack = Some(-e);
                }
                MSG_PACKET => self.record(body),
                _ => {}
            }
        }
        Ok(ack)
    }

    /// Decodes one `NFULNL_MSG_PACKET` body (after the netlink header).
    fn record(&mut self, body: &[u8]) {
        let Some(r) = Record::decode(body) else {
            self.dropped += 1;
            return;
        };
        if let Some(seq) = r.seq {
            if let Some(want) = self.next_seq {
                self.dropped += u64::from(seq.wrapping_sub(want));
            }
            self.next_seq = Some(seq.wrapping_add(1));
        }
        if r.group != self.group {
            return;
        }
        match r.event() {
            Some(e) => self.pending.push_back(e),
            None => self.dropped += 1,
        }
    }
}

impl EventSource for NflogSource {
    fn next_event(&mut self, timeout: Duration) -> io::Result<Option<VerdictEvent>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !self.wait(left)? {
                return Ok(None);
            }
            self.receive()?;
        }
    }

    fn dropped(&self) -> io::Result<u64> {
        Ok(self.dropped)
    }
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// The netlink messages of one datagram: (type, body after the header).
fn messages(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= NLMSG_HDR {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < NLMSG_HDR || len > b.len() {
            break;
        }
        let ty = u16::from_ne_bytes([b[4], b[5]]);
        out.push((ty, &b[NLMSG_HDR..len]));
        b = &b[align(len).min(b.len())..];
    }
    out
}

/// The attributes of a netlink attribute stream: (type without the
/// nested / byte-order flags, payload).
fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        if len < 4 || len > b.len() {
            break;
        }
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        out.push((ty, &b[4..len]));
        b = &b[align(len).min(b.len())..];
    }
    out
}

fn attr(b: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(b).into_iter().find(|a| a.0 == ty).map(|a| a.1)
}

/// One `NFULNL_MSG_PACKET`, the attributes an event needs.
#[derive(Debug, Default)]
struct Record<'a> {
    group: u16,
    prefix: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
    /// Wall clock, nanoseconds since the epoch.
    time_ns: Option<u64>,
    seq: Option<u32>,
    /// The original direction's destination and port (conntrack).
    orig_dst: Option<(std::net::IpAddr, u16)>,
}

impl<'a> Record<'a> {
    fn decode(body: &'a [u8]) -> Option<Record<'a>> {
        let gen = body.get(..NFGENMSG)?;
        let mut r = Record {
            group: u16::from_be_bytes([gen[2], gen[3]]),
            ..Record::default()
        };
        for (ty, v) in attrs(&body[NFGENMSG..]) {
            match i32::from(ty) {
                libc::NFULA_PREFIX => r.prefix = Some(v),
                libc::NFULA_PAYLOAD => r.payload = Some(v),
                libc::NFULA_TIMESTAMP if v.len() >= 16 => {
                    let sec = u64::from_be_bytes(v[..8].try_into().ok()?);
                    let usec = u64::from_be_bytes(v[8..16].try_into().ok()?);
                    r.time_ns = Some(sec * 1_000_000_000 + usec * 1000);
                }
                libc::NFULA_SEQ if v.len() >= 4 => {
                    r.seq = Some(u32::from_be_bytes(v[..4].try_into().ok()?));
                }
                libc::NFULA_CT => r.orig_dst = orig_dst(v),
                _ => {}
            }
        }
        Some(r)
    }

    /// The event, if the prefix is a weir event's and the payload an IP
    /// packet.
    fn event(&self) -> Option<VerdictEvent> {
        let prefix = self.prefix?;
        let prefix = prefix.split(|&c| c == 0).next()?;
        let (provenance, verdict, audit) = parse_nflog_prefix(std::str::from_utf8(prefix).ok()?)?;
        let f = ip::parse(self.payload?)?;
        let (mut dst, mut dport, mut backend) = (f.dst, f.dport, None);
        if let Some((odst, oport)) = self.orig_dst {
            if (odst, oport) != (f.dst, f.dport) {
                backend = Some((f.dst, f.dport));
                (dst, dport) = (odst, oport);
            }
        }
        let time_ns = self.time_ns.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        Some(VerdictEvent {
            time_ns,
            wall: true,
            verdict,
            audit,
            provenance,
            proto: f.proto,
            src: f.src,
            dst,
            sport: f.sport,
            dport,
            backend,
        })
    }
}

/// `CTA_TUPLE_ORIG`'s destination address and port from `NFULA_CT`.
fn orig_dst(ct: &[u8]) -> Option<(std::net::IpAddr, u16)> {
    let tuple = attr(ct, CTA_TUPLE_ORIG)?;
    let ipa = attr(tuple, CTA_TUPLE_IP)?;
    let addr = if let Some(v) = attr(ipa, CTA_IP_V4_DST) {
        let o: [u8; 4] = v.get(..4)?.try_into().ok()?;
        std::net::IpAddr::from(o)
    } else {
        let o: [u8; 16] = attr(ipa, CTA_IP_V6_DST)?.get(..16)?.try_into().ok()?;
        std::net::IpAddr::from(o)
    };
    let port = attr(tuple, CTA_TUPLE_PROTO)
        .and_then(|p| attr(p, CTA_PROTO_DST_PORT))
        .and_then(|v| Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?)))
        .unwrap_or(0);
    Some((addr, port))
}

#[cfg(test)]
#[path = "nflog_tests.rs"]
mod tests;
