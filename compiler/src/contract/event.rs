//! Verdict events: the one record both back ends report a judged packet
//! with, and `weir monitor` reads.
//!
//! **Why here.** An event crosses the compiler → runtime boundary twice:
//! the eBPF code generator writes [`EventRecord`]s into a ring buffer and
//! the iptables emitter writes NFLOG prefixes ([`nflog_prefix`]); the
//! runtime decodes both into [`VerdictEvent`]. Writer and readers share
//! these definitions so that neither guesses the other's layout.
//!
//! **What an event says.** The packet as it arrived (addresses and ports
//! before any service translation), the verdict, whether it is an audit
//! ("would") verdict, and the provenance id that decided it — resolved to
//! `policy/direction#index` and a source line through the bundle's
//! manifest (`Manifest::provenance`). A translated packet also carries the
//! backend it was sent to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The size in bytes of one [`EventRecord`] in the eBPF ring buffer.
pub const EVENT_RECORD_SIZE: usize = 72;

/// The name of the eBPF ring buffer map that carries events.
pub const EVENTS_MAP: &str = "weir_events";

/// What decided about the packet, as an event reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventVerdict {
    Allow,
    Deny,
    Reject,
    /// A `log` rule hit: evaluation went on.
    Log,
}

impl EventVerdict {
    pub fn code(self) -> u8 {
        match self {
            EventVerdict::Allow => 0,
            EventVerdict::Deny => 1,
            EventVerdict::Reject => 2,
            EventVerdict::Log => 3,
        }
    }

    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => EventVerdict::Allow,
            1 => EventVerdict::Deny,
            2 => EventVerdict::Reject,
            3 => EventVerdict::Log,
            _ => return None,
        })
    }

    /// The one-letter form used in NFLOG prefixes.
    pub fn letter(self) -> char {
        match self {
            EventVerdict::Allow => 'A',
            EventVerdict::Deny => 'D',
            EventVerdict::Reject => 'R',
            EventVerdict::Log => 'L',
        }
    }

    pub fn from_letter(c: char) -> Option<Self> {
        [
            EventVerdict::Allow,
            EventVerdict::Deny,
            EventVerdict::Reject,
            EventVerdict::Log,
        ]
        .into_iter()
        .find(|v| v.letter() == c)
    }

    pub fn name(self) -> &'static str {
        match self {
            EventVerdict::Allow => "allow",
            EventVerdict::Deny => "deny",
            EventVerdict::Reject => "reject",
            EventVerdict::Log => "log",
        }
    }
}

/// One decoded event, whichever back end reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictEvent {
    /// Nanoseconds: CLOCK_MONOTONIC (`bpf_ktime_get_ns`) for eBPF; NFLOG's
    /// timestamp (wall clock) for iptables. [`VerdictEvent::wall`] tells.
    pub time_ns: u64,
    pub wall: bool,
    pub verdict: EventVerdict,
    /// An audit ("would") verdict: enforcement did not follow it.
    pub audit: bool,
    /// The provenance id that decided (the manifest's `provenance[].id`).
    pub provenance: u32,
    /// IP protocol number of the upper-layer header (after IPv6
    /// extension headers).
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Zero when the protocol has no ports (ICMP: type, code below).
    pub sport: u16,
    pub dport: u16,
    /// The backend address and port a service translation chose.
    pub backend: Option<(IpAddr, u16)>,
}

/// The ring-buffer layout (all integers little-endian as the BPF program
/// stores them on x86-64; ports in host order):
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | `bpf_ktime_get_ns()` |
/// | 8 | 4 | provenance id |
/// | 12 | 1 | verdict code ([`EventVerdict::code`]) |
/// | 13 | 1 | flags: bit 0 audit, bit 1 translated |
/// | 14 | 1 | family: 4 or 6 |
/// | 15 | 1 | IP protocol |
/// | 16 | 16 | source address (IPv4: first 4 bytes, rest zero) |
/// | 32 | 16 | destination address |
/// | 48 | 2 | source port |
/// | 50 | 2 | destination port |
/// | 52 | 16 | backend address (when translated) |
/// | 68 | 2 | backend port |
/// | 70 | 2 | zero |
pub struct EventRecord;

impl EventRecord {
    pub const TIME: usize = 0;
    pub const PROVENANCE: usize = 8;
    pub const VERDICT: usize = 12;
    pub const FLAGS: usize = 13;
    pub const FAMILY: usize = 14;
    pub const PROTO: usize = 15;
    pub const SRC: usize = 16;
    pub const DST: usize = 32;
    pub const SPORT: usize = 48;
    pub const DPORT: usize = 50;
    pub const BACKEND: usize = 52;
    pub const BACKEND_PORT: usize = 68;
    pub const FLAG_AUDIT: u8 = 1;
    pub const FLAG_TRANSLATED: u8 = 2;

    /// Decodes one record; `None` when it is short or malformed (the
    /// reader counts it and goes on: a bad record never stops a monitor).
    pub fn decode(b: &[u8]) -> Option<VerdictEvent> {
        if b.len() < EVENT_RECORD_SIZE {
            return None;
        }
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let family = b[Self::FAMILY];
        let addr = |o: usize| -> Option<IpAddr> {
            match family {
                4 => Some(IpAddr::V4(Ipv4Addr::new(
                    b[o],
                    b[o + 1],
                    b[o + 2],
                    b[o + 3],
                ))),
                6 => {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&b[o..o + 16]);
                    Some(IpAddr::V6(Ipv6Addr::from(a)))
                }
                _ => None,
            }
        };
        let flags = b[Self::FLAGS];
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[Self::TIME..Self::TIME + 8]);
        let mut p = [0u8; 4];
        p.copy_from_slice(&b[Self::PROVENANCE..Self::PROVENANCE + 4]);
        Some(VerdictEvent {
            time_ns: u64::from_le_bytes(t),
            wall: false,
            verdict: EventVerdict::from_code(b[Self::VERDICT])?,
            audit: flags & Self::FLAG_AUDIT != 0,
            provenance: u32::from_le_bytes(p),
            proto: b[Self::PROTO],
            src: addr(Self::SRC)?,
            dst: addr(Self::DST)?,
            sport: u16_at(Self::SPORT),
            dport: u16_at(Self::DPORT),
            backend: if flags & Self::FLAG_TRANSLATED != 0 {
                Some((addr(Self::BACKEND)?, u16_at(Self::BACKEND_PORT)))
            } else {
                None
            },
        })
    }

    /// Encodes an event as the BPF program would (tests and fixtures).
    pub fn encode(e: &VerdictEvent) -> [u8; EVENT_RECORD_SIZE] {
        let mut b = [0u8; EVENT_RECORD_SIZE];
        b[Self::TIME..Self::TIME + 8].copy_from_slice(&e.time_ns.to_le_bytes());
        b[Self::PROVENANCE..Self::PROVENANCE + 4].copy_from_slice(&e.provenance.to_le_bytes());
        b[Self::VERDICT] = e.verdict.code();
        let mut flags = 0;
        if e.audit {
            flags |= Self::FLAG_AUDIT;
        }
        if e.backend.is_some() {
            flags |= Self::FLAG_TRANSLATED;
        }
        b[Self::FLAGS] = flags;
        b[Self::FAMILY] = if e.src.is_ipv4() { 4 } else { 6 };
        b[Self::PROTO] = e.proto;
        put_addr(&mut b[Self::SRC..Self::SRC + 16], e.src);
        put_addr(&mut b[Self::DST..Self::DST + 16], e.dst);
        b[Self::SPORT..Self::SPORT + 2].copy_from_slice(&e.sport.to_le_bytes());
        b[Self::DPORT..Self::DPORT + 2].copy_from_slice(&e.dport.to_le_bytes());
        if let Some((a, p)) = e.backend {
            put_addr(&mut b[Self::BACKEND..Self::BACKEND + 16], a);
            b[Self::BACKEND_PORT..Self::BACKEND_PORT + 2].copy_from_slice(&p.to_le_bytes());
        }
        b
    }
}

fn put_addr(out: &mut [u8], a: IpAddr) {
    match a {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.copy_from_slice(&v6.octets()),
    }
}

/// The NFLOG prefix of an iptables event rule: `weir:<id>:<V>[a] `
/// (`a` marks an audit verdict), at most 64 bytes as NFLOG allows.
pub fn nflog_prefix(provenance: u32, verdict: EventVerdict, audit: bool) -> String {
    format!(
        "weir:{provenance}:{}{} ",
        verdict.letter(),
        if audit { "a" } else { "" }
    )
}

/// Reads a prefix [`nflog_prefix`] wrote: (provenance, verdict, audit).
pub fn parse_nflog_prefix(p: &str) -> Option<(u32, EventVerdict, bool)> {
    let rest = p.trim_end_matches(['\0', ' ']).strip_prefix("weir:")?;
    let (id, v) = rest.split_once(':')?;
    let mut cs = v.chars();
    let verdict = EventVerdict::from_letter(cs.next()?)?;
    let audit = match cs.next() {
        None => false,
        Some('a') if cs.next().is_none() => true,
        _ => return None,
    };
    Some((id.parse().ok()?, verdict, audit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(audit: bool, backend: Option<(IpAddr, u16)>) -> VerdictEvent {
        VerdictEvent {
            time_ns: 123_456_789,
            wall: false,
            verdict: EventVerdict::Deny,
            audit,
            provenance: 17,
            proto: 6,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.96.0.10".parse().unwrap(),
            sport: 40000,
            dport: 80,
            backend,
        }
    }

    #[test]
    fn records_round_trip_both_families() {
        let v4 = sample(true, Some(("10.1.0.5".parse().unwrap(), 8080)));
        assert_eq!(EventRecord::decode(&EventRecord::encode(&v4)), Some(v4));
        let mut v6 = sample(false, None);
        v6.src = "fd00::1".parse().unwrap();
        v6.dst = "fd00:96::17".parse().unwrap();
        assert_eq!(EventRecord::decode(&EventRecord::encode(&v6)), Some(v6));
    }

    #[test]
    fn short_or_unknown_records_are_refused() {
        let b = EventRecord::encode(&sample(false, None));
        assert_eq!(EventRecord::decode(&b[..EVENT_RECORD_SIZE - 1]), None);
        let mut bad = b;
        bad[EventRecord::FAMILY] = 5;
        assert_eq!(EventRecord::decode(&bad), None);
        bad = b;
        bad[EventRecord::VERDICT] = 9;
        assert_eq!(EventRecord::decode(&bad), None);
    }

    #[test]
    fn nflog_prefixes_round_trip_and_fit() {
        for v in [
            EventVerdict::Allow,
            EventVerdict::Deny,
            EventVerdict::Reject,
            EventVerdict::Log,
        ] {
            for audit in [false, true] {
                let p = nflog_prefix(u32::MAX, v, audit);
                assert!(p.len() <= 64);
                assert_eq!(parse_nflog_prefix(&p), Some((u32::MAX, v, audit)));
            }
        }
        assert_eq!(parse_nflog_prefix("weir:5 "), None);
        assert_eq!(parse_nflog_prefix("weir:5:Dx "), None);
    }
}
