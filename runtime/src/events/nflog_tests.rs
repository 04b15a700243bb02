//! The decoder against records the kernel wrote (captured from a 6.18
//! kernel's nfnetlink_log, NFULNL_COPY_PACKET, no conntrack attributes)
//! and against hand-built ones for what that kernel could not send
//! (`NFULA_CT`: it was built without `CONFIG_NETFILTER_NETLINK_GLUE_CT`;
//! `NFULA_SEQ` gaps).

use super::*;
use weir_compiler::contract::event::EventVerdict;

fn hex(parts: &[&str]) -> Vec<u8> {
    let s: String = parts.concat();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// `iptables -A FORWARD … -j NFLOG --nflog-group 100 --nflog-prefix
/// "weir:7:D "`: UDP 10.0.1.2:40000 → 10.96.0.10:53, DNATed in nat
/// PREROUTING to 10.0.2.2:5353.
fn kernel_udp4() -> Vec<u8> {
    hex(&[
        "a80000000004000000000000000000000200006408000100080002000e000a00776569723a373a442000000008000400",
        "00000002080005000000000310000800000600004ab2991c9a63000006000f000001000006001100000e000012001000",
        "56d37382c8344ab2991c9a630800000014000300000000006b15362100000000000b45e2210009004500001df7404000",
        "3f112d8c0a0001020a0002029c4014e90009171e78000000",
    ])
}

/// `ip6tables … --nflog-prefix "weir:12:Ra "`: a TCP SYN
/// [fd01::2]:40001 → [fd02::2]:443.
fn kernel_tcp6() -> Vec<u8> {
    hex(&[
        "d80000000004000000000000000000000a0000640800010086dd020010000a00776569723a31323a5261200008000400",
        "00000002080005000000000310000800000600004ab2991c9a63000006000f000001000006001100000e000012001000",
        "56d37382c8344ab2991c9a6386dd000014000300000000006b15362100000000000b4683540009006005a4ab0028063f",
        "fd010000000000000000000000000002fd0200000000000000000000000000029c4101bba1f0f14100000000a002fd20",
        "fa360000020405a00402080a697309bf000000000103030a",
    ])
}

/// An ICMP echo request 10.0.1.2 → 10.0.2.2, prefix "weir:7:D ".
fn kernel_icmp4() -> Vec<u8> {
    hex(&[
        "a40000000004000000000000000000000200006408000100080002000e000a00776569723a373a442000000008000400",
        "00000002080005000000000310000800000600004ab2991c9a63000006000f000001000006001100000e000012001000",
        "56d37382c8344ab2991c9a630800000014000300000000006b153622000000000000ab87200009004500001c7a474000",
        "3f01aa960a0001020a0002020800f7fe00010000",
    ])
}

/// The one packet message of a datagram, decoded.
fn decode(datagram: &[u8]) -> Option<VerdictEvent> {
    let msgs = messages(datagram);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].0, MSG_PACKET);
    let r = Record::decode(msgs[0].1)?;
    assert_eq!(r.group, 100);
    r.event()
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

#[test]
fn kernel_records_decode() {
    let e = decode(&kernel_udp4()).unwrap();
    assert_eq!(
        (e.verdict, e.audit, e.provenance),
        (EventVerdict::Deny, false, 7)
    );
    assert_eq!((e.proto, e.src, e.sport), (17, ip("10.0.1.2"), 40000));
    // No conntrack attributes: the destination as filter saw it (DNATed).
    assert_eq!((e.dst, e.dport, e.backend), (ip("10.0.2.2"), 5353, None));
    assert!(e.wall);
    assert_eq!(e.time_ns, 0x6b15_3621 * 1_000_000_000 + 0x0b_45e2 * 1000);

    let e = decode(&kernel_tcp6()).unwrap();
    assert_eq!(
        (e.verdict, e.audit, e.provenance),
        (EventVerdict::Reject, true, 12)
    );
    assert_eq!(
        (e.proto, e.src, e.sport, e.dst, e.dport),
        (6, ip("fd01::2"), 40001, ip("fd02::2"), 443)
    );

    let e = decode(&kernel_icmp4()).unwrap();
    assert_eq!((e.proto, e.sport, e.dport), (1, 0, 0));
    assert_eq!(e.dst, ip("10.0.2.2"));
}

/// A netlink attribute.
fn nla(ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(payload);
    v.resize(align(v.len()), 0);
    v
}

/// `NFULA_CT` as ctnetlink nests it: the original tuple's destination.
fn ct_orig_dst(addr: [u8; 4], port: u16) -> Vec<u8> {
    let nested = 0x8000;
    let ip = nla(CTA_TUPLE_IP | nested, &nla(CTA_IP_V4_DST, &addr));
    let mut proto = nla(1, &[17]);
    proto.extend(nla(CTA_PROTO_DST_PORT, &port.to_be_bytes()));
    let mut tuple = ip;
    tuple.extend(nla(CTA_TUPLE_PROTO | nested, &proto));
    nla(
        libc::NFULA_CT as u16 | nested,
        &nla(CTA_TUPLE_ORIG | nested, &tuple),
    )
}

/// The kernel's UDP record with `extra` attributes appended.
fn with_attrs(extra: &[u8]) -> Vec<u8> {
    let mut d = kernel_udp4();
    d.extend_from_slice(extra);
    let len = d.len() as u32;
    d[..4].copy_from_slice(&len.to_ne_bytes());
    d
}

#[test]
fn conntrack_attributes_give_the_original_destination_and_the_backend() {
    let e = decode(&with_attrs(&ct_orig_dst([10, 96, 0, 10], 53))).unwrap();
    assert_eq!((e.dst, e.dport), (ip("10.96.0.10"), 53));
    assert_eq!(e.backend, Some((ip("10.0.2.2"), 5353)));
    // Untranslated: the same destination, no backend.
    let e = decode(&with_attrs(&ct_orig_dst([10, 0, 2, 2], 5353))).unwrap();
    assert_eq!((e.dst, e.backend), (ip("10.0.2.2"), None));
}

fn source() -> NflogSource {
    let f = std::fs::File::open("/dev/null").unwrap();
    NflogSource {
        fd: f.into(),
        group: 100,
        conntrack: false,
        buf: Vec::new(),
        pending: Default::default(),
        next_seq: None,
        dropped: 0,
    }
}

#[test]
fn sequence_gaps_and_bad_records_count_as_dropped() {
    let mut s = source();
    for seq in [5u32, 6, 9] {
        let d = with_attrs(&nla(libc::NFULA_SEQ as u16, &seq.to_be_bytes()));
        for (_, body) in messages(&d) {
            s.record(body);
        }
    }
    assert_eq!(s.pending.len(), 3);
    assert_eq!(s.dropped().unwrap(), 2, "7 and 8 were lost");
    // A record whose prefix is not a weir event's, and a short one.
    let mut foreign = kernel_udp4();
    let at = foreign.windows(4).position(|w| w == b"weir").unwrap();
    foreign[at] = b'x';
    for (_, body) in messages(&foreign) {
        s.record(body);
    }
    s.record(&[0, 0]);
    assert_eq!(s.dropped().unwrap(), 4);
    assert_eq!(s.pending.len(), 3);
}

#[test]
fn truncated_datagrams_stop_cleanly() {
    let d = kernel_tcp6();
    for cut in 0..d.len() {
        for (_, body) in messages(&d[..cut]) {
            if let Some(r) = Record::decode(body) {
                let _ = r.event();
            }
        }
    }
}
