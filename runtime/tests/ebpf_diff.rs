//! Differential test of the eBPF back end against the reference
//! interpreter, in the kernel: for generated policies, the generated
//! programs run with BPF_PROG_TEST_RUN on crafted Ethernet frames aimed at
//! every graph leaf (`cover::leaf_packets`) plus random packets
//! (`gen::packets`), and the verdict (TC return code) and the per-rule
//! counters (deltas of the per-CPU counter map: the deciding provenance id
//! plus every logged id) must equal the interpreter's.
//!
//! Each packet's `at` picks the program variant (`Node` for both sides,
//! `Ingress` / `Egress` for one). Established packets are checked as
//! replies: the reverse packet runs first as a new flow (and is compared
//! too); if the program denied it, the flow is put into conntrack directly;
//! then the packet itself must pass as `established`, unchanged.
//!
//! Services and steering (issue 6), from the output frame
//! (BPF_PROG_TEST_RUN `data_out`) and context (`ctx_out`):
//! - a packet to a TCP/UDP frontend (IPv4 or IPv6) is translated: the output's
//!   destination is the kernel's backend, which must be a candidate (for
//!   Maglev, exactly the interpreter's `ByHash` choice); the interpreter
//!   is asked with `BackendChoice::Pinned(backend)` for the verdict and
//!   counters; the source is preserved and the checksums are valid (IPv4
//!   header; TCP/UDP over the pseudo-header of either family). When
//!   allowed, the backend's reply is sent next and must pass as
//!   established with the frontend as its source (reverse NAT); then an
//!   ICMP error about that reply as the client got it, to the frontend,
//!   must pass as established on to the backend, quoting the reply the
//!   backend sent (`check_reply_error`);
//! - a frontend without backends rejects: TCP gets a reset back
//!   (`TC_ACT_REDIRECT`, the frame turned into a valid RST|ACK to the
//!   sender), UDP an ICMP / ICMPv6 port unreachable quoting it (up to
//!   548 / 1,232 bytes, checksums checked), anything
//!   else is dropped;
//! - allowed packets carry their steering: `skb->mark` for `mark`, the
//!   DSCP bits (and a valid IPv4 header checksum) for `dscp`; every other
//!   output frame must equal the input.
//!
//! Headers (docs/language.md §4): every new packet not for a service is
//! re-sent with IPv6 extension headers (1–3, random) or IPv4 options (same
//! verdict as whole), and some as a non-first fragment (`fragment`) or
//! behind 9 extension headers (`unparsed`).
//!
//! ICMP (docs/language.md §4, "Headers"): ICMPv4 in IPv4 (`icmp`),
//! ICMPv6 in IPv6 (`icmp6`, also behind extension headers) and the other
//! family's ICMP (ICMPv4 in IPv6, ICMPv6 in IPv4: a protocol without a
//! keyword, matched only by `any`) are all compared; the report counts
//! each.
//!
//! SCTP frontends are translated, by address and, where the backend
//! listens on another port, by port with the CRC32c update (the output's
//! and the reply's CRC32c checked, `frames::checksums_ok`, and against
//! the `crc32c` crate, `sctp_crc_oracle`).
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use ebpf_common::headers::{non_first_fragment, random_chain, with_extensions, with_options, Ext};
use ebpf_common::icmp_error::{
    error_checksums_ok, error_frame, error_packet, outer_dst, outer_src, quote, quoted,
};
use ebpf_common::*;
use weir_compiler::ebpf::codegen::{Budget, Mode};
use weir_compiler::ebpf::layout;
use weir_compiler::gen;
use weir_compiler::graph::{self, cover, Graph};
use weir_compiler::interp::{BackendChoice, Headers, Interp, Outcome, Packet};
use weir_compiler::model::{
    Action, Balance, ConnState, Direction, Model, PeerMatch, Policy, PortRange, Proto, ProtoMatch,
    Rule, Sel, SteerAction, Tier, Verdict,
};
use weir_runtime::ebpf::Generation;

#[derive(Default)]
struct Tally {
    packets: usize,
    /// Verdict events read back and matched to the interpreter's.
    events: usize,
    /// Frontend packets the program translated (checked against the
    /// interpreter pinned to the kernel's backend); of them IPv6.
    translated: usize,
    translated6: usize,
    /// Of them SCTP (the CRC32c checked on the output and the reply),
    /// and of those IPv6.
    sctp: usize,
    sctp6: usize,
    /// SCTP translations whose port changed (the CRC32c update), and
    /// SCTP replies whose source port went back to the frontend's.
    sctp_port: usize,
    sctp_reply_port: usize,
    /// Rejects answered with a TCP reset.
    resets: usize,
    /// Rejects answered with an ICMP port unreachable (IPv4 UDP).
    unreachables: usize,
    /// Replies of translated connections un-translated (reverse NAT); of
    /// them IPv6.
    replies: usize,
    replies6: usize,
    /// Allowed packets with a steering action checked (mark / DSCP).
    steered: usize,
    /// Allowed IPv6 packets the interpreter redirects to a proxy (no
    /// proxy socket in a test run: passed unchanged, unmarked).
    redirect6: usize,
    /// Frontends the TC path does not translate (SCTP with a port
    /// change, refused by `weir compile`): left out.
    skipped: usize,
    /// Packets re-sent with other headers (docs/language.md §4,
    /// "Headers"): IPv6 with 1–3 extension headers, IPv4 with options,
    /// non-first fragments, 9-header chains.
    v6_ext: usize,
    v4_opts: usize,
    fragments: usize,
    unparsed: usize,
    /// ICMP packets compared: ICMPv4 in IPv4 (`icmp`), ICMPv6 in IPv6
    /// (`icmp6`; and of those, re-sent behind extension headers), and the
    /// other family's ICMP (ICMPv4 in IPv6, ICMPv6 in IPv4: no keyword,
    /// matched only by `any`).
    icmp4: usize,
    icmp6: usize,
    icmp6_ext: usize,
    icmp_foreign: usize,
    /// ICMP errors quoting a flow's packet (docs/language.md §4 step 1):
    /// related to a flow in conntrack (IPv4, IPv6; of them quoting a
    /// translated flow, reverse-translated), and quoting no flow (judged
    /// as new ICMP).
    related4: usize,
    related6: usize,
    related_nat: usize,
    /// Errors about a translated flow's reply as its client got it
    /// (quoting frontend → client, to the frontend): established,
    /// translated on to the backend.
    related_reply: usize,
    unrelated: usize,
    disagreements: Vec<String>,
}

fn reverse(p: &Packet) -> Packet {
    Packet {
        src: p.dst,
        dst: p.src,
        sport: p.dport,
        dport: p.sport,
        state: ConnState::New,
        ..p.clone()
    }
}

fn expected(g: &Graph, o: &Outcome, p: &Packet) -> (u32, BTreeMap<u32, u64>) {
    let mut want = BTreeMap::new();
    for l in &o.logged {
        *want.entry(g.provenance.id(l)).or_insert(0) += 1;
    }
    *want.entry(g.provenance.id(&o.decided_by)).or_insert(0) += 1;
    // Audit decisions (`weir_audit_cnt`), keyed apart from `weir_cnt`.
    for a in o.audit.iter().flat_map(|a| a.counted()) {
        *want.entry(AUDIT_KEY + g.provenance.id(&a)).or_insert(0) += 1;
    }
    let ret = match o.verdict {
        Verdict::Allow => layout::TC_ACT_OK as u32,
        // A reject answers IPv4 TCP with a reset and IPv4 UDP and SCTP
        // with an ICMP port unreachable, sent back out — no ICMP error to a
        // source that is not unicast (224.0.0.0 and up, 0.0.0.0: RFC
        // 1122 §3.2.2).
        // IPv6: a reset or an ICMPv6 port unreachable (UDP, SCTP), neither to a
        // multicast (ff00::/8, RFC 4443 §2.4 e) or unspecified source.
        Verdict::Deny if o.reject && p.src.is_ipv4() && p.proto == Proto::Tcp => {
            layout::TC_ACT_REDIRECT as u32
        }
        Verdict::Deny
            if o.reject
                && matches!(p.proto, Proto::Udp | Proto::Sctp)
                && matches!(p.src, IpAddr::V4(a) if a.octets()[0] < 224 && !a.is_unspecified()) =>
        {
            layout::TC_ACT_REDIRECT as u32
        }
        Verdict::Deny
            if o.reject
                && matches!(p.proto, Proto::Tcp | Proto::Udp | Proto::Sctp)
                && matches!(p.src, IpAddr::V6(a) if a.octets()[0] != 0xff && !a.is_unspecified()) =>
        {
            layout::TC_ACT_REDIRECT as u32
        }
        Verdict::Deny => layout::TC_ACT_SHOT as u32,
    };
    (ret, want)
}

fn delta(before: &[u64], after: &[u64]) -> BTreeMap<u32, u64> {
    before
        .iter()
        .zip(after)
        .enumerate()
        .filter(|(_, (b, a))| a != b)
        .map(|(i, (b, a))| (i as u32, a - b))
        .collect()
}

/// Where audit counter deltas are keyed in a counter-delta map: id +
/// `AUDIT_KEY` (above any provenance id of a generated program).
const AUDIT_KEY: u32 = 1 << 24;

/// Runs one frame; returns the output and the counter deltas (the audit
/// counters' at `AUDIT_KEY` + id).
fn run_counted(gen: &Generation, frame: &[u8]) -> (RunOut, BTreeMap<u32, u64>) {
    let audit = |gen: &Generation| {
        weir_runtime::ebpf::load::audit_counters(&gen.ebpf, gen.manifest.audit_counters).unwrap()
    };
    let (before, abefore) = (counts(gen), audit(gen));
    let out = run_full(gen, frame);
    let mut got = delta(&before, &counts(gen));
    for (id, n) in delta(&abefore, &audit(gen)) {
        got.insert(AUDIT_KEY + id, n);
    }
    (out, got)
}

fn compare(
    tag: &str,
    p: &Packet,
    want: &(u32, BTreeMap<u32, u64>),
    out: &RunOut,
    got: &BTreeMap<u32, u64>,
    t: &mut Tally,
) -> bool {
    t.packets += 1;
    match (p.proto, p.src.is_ipv6()) {
        (Proto::Icmp, false) => t.icmp4 += 1,
        (Proto::Icmp6, true) => t.icmp6 += 1,
        (Proto::Icmp | Proto::Icmp6, _) => t.icmp_foreign += 1,
        _ => {}
    }
    if out.ret != want.0 || *got != want.1 {
        t.disagreements.push(format!(
            "{tag}: {p:?}\n    want verdict {} counters {:?}\n    got  verdict {} counters {got:?}",
            want.0, want.1, out.ret
        ));
        return false;
    }
    true
}

/// Source and destination (address, port) of an IPv4 or IPv6 (no
/// extension headers) TCP / UDP frame.
fn addrs(f: &[u8]) -> (IpAddr, u16, IpAddr, u16) {
    let port = |o: usize| u16::from_be_bytes([f[o], f[o + 1]]);
    if f[12..14] == [0x86, 0xdd] {
        let ip = |o: usize| IpAddr::from(<[u8; 16]>::try_from(&f[o..o + 16]).unwrap());
        return (ip(22), port(54), ip(38), port(56));
    }
    let ip = |o: usize| IpAddr::from([f[o], f[o + 1], f[o + 2], f[o + 3]]);
    let l4 = 14 + usize::from(f[14] & 15) * 4;
    (ip(26), port(l4), ip(30), port(l4 + 2))
}

/// The TC path translates TCP / UDP / SCTP of both families (an SCTP
/// port change with the CRC32c update).
fn translatable(p: &Packet) -> bool {
    matches!(p.proto, Proto::Tcp | Proto::Udp | Proto::Sctp)
}

/// Checks the output frame of an evaluated new packet: a reset for a
/// TCP reject; the steering action (mark, DSCP) of an allowed packet;
/// otherwise the frame is unchanged (except the translation, checked by
/// the caller).
fn check_output(
    tag: &str,
    p: &Packet,
    o: &Outcome,
    input: &[u8],
    out: &RunOut,
    translated: bool,
    t: &mut Tally,
) {
    let mut err = |m: String| t.disagreements.push(format!("{tag}: {p:?}\n    {m}"));
    if o.reject
        && out.ret == layout::TC_ACT_REDIRECT as u32
        && matches!(p.proto, Proto::Udp | Proto::Sctp)
        && p.src.is_ipv6()
    {
        // ICMPv6 port unreachable quoting the IPv6 packet, up to 1,232
        // bytes (ebpf_reject6.rs and ebpf_reject_quote.rs check every
        // byte).
        let f = &out.data;
        let q = (40 + usize::from(u16::from_be_bytes([input[18], input[19]]))).min(1232);
        if f.len() != 62 + q || f[20] != 58 || (f[54], f[55]) != (1, 4) {
            return err(format!("UDP reject (IPv6): {f:02x?}"));
        }
        if f[22..38] != input[38..54] || f[38..54] != input[22..38] || f[62..] != input[14..14 + q]
        {
            return err(format!("UDP reject (IPv6) addresses / quote: {f:02x?}"));
        }
        if let Err(e) = error_checksums_ok(f) {
            return err(format!("UDP reject (IPv6): {e}"));
        }
        t.unreachables += 1;
        return;
    }
    if o.reject
        && out.ret == layout::TC_ACT_REDIRECT as u32
        && matches!(p.proto, Proto::Udp | Proto::Sctp)
    {
        // ICMP port unreachable quoting the IPv4 packet, up to 548 bytes
        // (ebpf_udp_reject.rs and ebpf_reject_quote.rs check every byte).
        let f = &out.data;
        let (s, d) = (&f[26..30], &f[30..34]);
        let q = usize::from(u16::from_be_bytes([input[16], input[17]])).min(548);
        if f.len() != 42 + q || f[23] != 1 || (f[34], f[35]) != (3, 3) {
            return err(format!("UDP reject: {f:02x?}"));
        }
        if let Err(e) = error_checksums_ok(f) {
            return err(format!("UDP reject: {e}"));
        }
        if s != &input[30..34] || d != &input[26..30] || f[42..] != input[14..14 + q] {
            return err(format!("UDP reject addresses / quote: {f:02x?}"));
        }
        t.unreachables += 1;
        return;
    }
    if o.reject && out.ret == layout::TC_ACT_REDIRECT as u32 {
        let f = &out.data;
        // Ethernet + IPv4 (20) or IPv6 (40) + TCP (20).
        let ip_len = if p.src.is_ipv6() { 40 } else { 20 };
        if f.len() != 14 + ip_len + 20 {
            return err(format!(
                "reset is {} bytes, want {}",
                f.len(),
                14 + ip_len + 20
            ));
        }
        if let Err(e) = checksums_ok(f) {
            return err(format!("reset: {e}"));
        }
        let (s, sp, d, dp) = addrs(f);
        if (s, sp, d, dp) != (p.dst, p.dport, p.src, p.sport) {
            return err(format!("reset goes {s}:{sp} → {d}:{dp}"));
        }
        if f[0..6] != input[6..12] || f[6..12] != input[0..6] {
            return err("reset: MACs not swapped".into());
        }
        // Our SYN has seq 0 and no ACK: RST|ACK, ack 1.
        let tcp = &f[14 + ip_len..];
        let ack = u32::from_be_bytes(tcp[8..12].try_into().unwrap());
        if tcp[13] != 0x14 || ack != 1 || tcp[12] != 0x50 {
            return err(format!("reset flags {:#x} ack {ack}", tcp[13]));
        }
        t.resets += 1;
        return;
    }
    if out.ret != layout::TC_ACT_OK as u32 {
        return;
    }
    let want_mark = match o.steering.as_ref().map(|s| &s.action) {
        Some(SteerAction::Mark(m)) => *m,
        _ => 0,
    };
    if out.mark != want_mark {
        return err(format!("skb->mark {:#x}, want {want_mark:#x}", out.mark));
    }
    let mut want = input.to_vec();
    if let Some(SteerAction::Dscp(d)) = o.steering.as_ref().map(|s| &s.action) {
        if p.src.is_ipv4() {
            want[15] = (d << 2) | (want[15] & 3);
            set_checksums(&mut want);
        } else {
            let tc = (d << 2) | ((want[14] << 4 | want[15] >> 4) & 3);
            want[14] = (want[14] & 0xf0) | (tc >> 4);
            want[15] = (want[15] & 0x0f) | (tc << 4);
        }
    }
    if want_mark != 0 || want != input {
        t.steered += 1;
    }
    if p.src.is_ipv6()
        && matches!(
            o.steering.as_ref().map(|s| &s.action),
            Some(SteerAction::Redirect { .. })
        )
    {
        t.redirect6 += 1;
    }
    if translated {
        // Compare everything but the rewritten addresses, ports and
        // checksums (checked by the caller).
        if out.data.len() != want.len() || out.data[14..16] != want[14..16] {
            err(format!(
                "translated frame: TOS {:?}, want {:?}",
                &out.data[14..16],
                &want[14..16]
            ));
        }
        return;
    }
    if out.data != want {
        err(format!(
            "output frame differs:\n      got  {:02x?}\n      want {:02x?}",
            out.data, want
        ));
    }
}

/// One new packet: run it, learn the backend from the output if it hit a
/// frontend, compare with the interpreter. Returns the verdict.
fn check_new(
    tag: &str,
    g: &Graph,
    interp: &Interp,
    gen: &Generation,
    p: &Packet,
    t: &mut Tally,
) -> Option<(u32, Outcome, RunOut)> {
    let o = interp.evaluate(p);
    let hit = o.service.as_ref().filter(|h| h.chosen.is_some());
    if hit.is_some() && !translatable(p) {
        t.skipped += 1;
        return None;
    }
    let input = frame(p);
    drain_events(gen);
    let (out, got) = run_counted(gen, &input);
    let Some(hit) = hit else {
        let want = expected(g, &o, p);
        if compare(tag, p, &want, &out, &got, t) {
            check_output(tag, p, &o, &input, &out, false, t);
            check_events(tag, g, interp, gen, p, &o, None, t);
        }
        return Some((out.ret, o, out));
    };
    // Translated: the output frame tells the backend.
    t.translated += 1;
    t.translated6 += usize::from(p.src.is_ipv6());
    t.sctp += usize::from(p.proto == Proto::Sctp);
    t.sctp6 += usize::from(p.proto == Proto::Sctp && p.src.is_ipv6());
    let (s, sp, d, dp) = addrs(&out.data);
    t.sctp_port += usize::from(p.proto == Proto::Sctp && dp != p.dport);
    let chosen = hit.chosen.clone().expect("filtered");
    let mut bad = Vec::new();
    if (s, sp) != (p.src, p.sport) {
        bad.push(format!("source not preserved: {s}:{sp}"));
    }
    if let Err(e) = checksums_ok(&out.data).and_then(|()| sctp_crc_oracle(&out.data)) {
        bad.push(e);
    }
    if !hit.candidates.iter().any(|b| (b.addr, b.port) == (d, dp)) {
        bad.push(format!("{d}:{dp} is not a candidate"));
    }
    let svc = &interp.model.services[hit.service];
    if svc.balance == Balance::Maglev && (chosen.addr, chosen.port) != (d, dp) {
        bad.push(format!(
            "maglev: kernel chose {d}:{dp}, interpreter {}:{}",
            chosen.addr, chosen.port
        ));
    }
    if !bad.is_empty() {
        t.packets += 1;
        t.disagreements
            .push(format!("{tag}: {p:?}\n    {}", bad.join("; ")));
        return None;
    }
    let o = interp.evaluate_with(p, BackendChoice::Pinned(d, dp));
    let want = expected(g, &o, p);
    if compare(tag, p, &want, &out, &got, t) {
        check_output(tag, p, &o, &input, &out, true, t);
        check_events(tag, g, interp, gen, p, &o, Some((d, dp)), t);
    }
    Some((out.ret, o, out))
}

/// The verdict events the packet left in the ring buffer are exactly
/// the interpreter's (`interp::events::events`): verdict, audit flag,
/// provenance id, protocol, the packet as sent (ports 0 without ports),
/// the backend of a translated one.
#[allow(clippy::too_many_arguments)]
fn check_events(
    tag: &str,
    g: &Graph,
    interp: &Interp,
    gen: &Generation,
    p: &Packet,
    o: &Outcome,
    backend: Option<(IpAddr, u16)>,
    t: &mut Tally,
) {
    type Key = (
        u8,
        bool,
        u32,
        u8,
        IpAddr,
        u16,
        IpAddr,
        u16,
        Option<(IpAddr, u16)>,
    );
    let ports = matches!(p.proto, Proto::Tcp | Proto::Udp | Proto::Sctp);
    let (sport, dport) = if ports { (p.sport, p.dport) } else { (0, 0) };
    let proto = weir_compiler::flowhash::proto_number(p.proto);
    let mut want: Vec<Key> = weir_compiler::interp::events::events(interp.model, o)
        .iter()
        .map(|e| {
            let id = g.provenance.id(&e.by);
            (
                e.verdict.code(),
                e.audit,
                id,
                proto,
                p.src,
                sport,
                p.dst,
                dport,
                backend,
            )
        })
        .collect();
    let mut got: Vec<Key> = drain_events(gen)
        .iter()
        .map(|e| {
            (
                e.verdict.code(),
                e.audit,
                e.provenance,
                e.proto,
                e.src,
                e.sport,
                e.dst,
                e.dport,
                e.backend,
            )
        })
        .collect();
    want.sort();
    got.sort();
    t.events += got.len();
    if want != got {
        t.disagreements.push(format!(
            "{tag}: {p:?}\n    want events {want:?}\n    got  events {got:?}"
        ));
    }
}

fn check_model(tag: &str, model: &Model, g: &Graph, packets: &[Packet], t: &mut Tally) {
    check_model_with(tag, model, g, packets, t, Budget::default());
}

fn check_model_with(
    tag: &str,
    model: &Model,
    g: &Graph,
    packets: &[Packet],
    t: &mut Tally,
    budget: Budget,
) {
    let interp = Interp::new(model);
    let gens: Vec<(Mode, Generation)> = [Mode::Node, Mode::Ingress, Mode::Egress]
        .into_iter()
        .map(|m| (m, load_output(&compile_with(model, g, m, budget))))
        .collect();
    let gen_for = |p: &Packet| {
        let m = match p.at {
            None => Mode::Node,
            Some(Direction::Ingress) => Mode::Ingress,
            Some(Direction::Egress) => Mode::Egress,
        };
        &gens.iter().find(|(x, _)| *x == m).expect("all modes").1
    };
    let mut rng = gen::Rng::new(0x4EAD ^ packets.len() as u64);
    let mut related_rng = gen::Rng::new(0x1C3F ^ packets.len() as u64);
    for p in packets {
        let p = normalize(p);
        if p.src.is_ipv4() != p.dst.is_ipv4() {
            continue;
        }
        let gen = gen_for(&p);
        clear_conntrack(gen);
        clear_lb_state(gen);
        if p.state != ConnState::Established {
            let r = check_new(tag, g, &interp, gen, &p, t);
            if let Some((ret, o, _)) = &r {
                // Translation state exists exactly for allowed translated
                // flows: a denied flow never leaves any behind.
                let translated = o.service.as_ref().is_some_and(|h| h.chosen.is_some());
                let want = if *ret == layout::TC_ACT_OK as u32 && translated {
                    (1, 1)
                } else {
                    (0, 0)
                };
                let got = lb_state_len(gen);
                if got != want {
                    t.disagreements.push(format!(
                        "{tag}: {p:?}\n    translation state {got:?}, want {want:?}"
                    ));
                }
            }
            if let Some((ret, o, out)) = &r {
                if *ret == layout::TC_ACT_OK as u32
                    && o.service.as_ref().is_some_and(|h| h.chosen.is_some())
                {
                    // The backend's reply: established, un-translated.
                    let (_, _, d, dp) = addrs(&out.data);
                    let wire = Packet {
                        src: d,
                        sport: dp,
                        dst: p.src,
                        dport: p.sport,
                        state: ConnState::Established,
                        ..p.clone()
                    };
                    let seen = Packet {
                        src: p.dst,
                        sport: p.dport,
                        ..wire.clone()
                    };
                    check_reply(tag, g, &interp, gen, &seen, &wire, t);
                }
                // After the reply (the errors may clear conntrack).
                check_related(
                    tag,
                    g,
                    &interp,
                    gen,
                    &p,
                    (*ret, o, out),
                    &mut related_rng,
                    t,
                );
            }
            if r.as_ref().is_some_and(|(_, o, _)| o.service.is_none()) {
                check_header_variants(tag, g, &interp, gen, &p, &mut rng, t);
            }
            continue;
        }
        // Established: the reverse packet opens the connection first.
        let rev = reverse(&p);
        let opened = check_new(tag, g, &interp, gen, &rev, t);
        if let Some((ret, o, out)) = &opened {
            if *ret == layout::TC_ACT_OK as u32
                && o.service.as_ref().is_some_and(|h| h.chosen.is_some())
            {
                // The real reply comes from the backend; reverse NAT gives
                // it the frontend back as its source.
                let (_, _, d, dp) = addrs(&out.data);
                let wire = Packet {
                    src: d,
                    sport: dp,
                    ..p.clone()
                };
                check_reply(tag, g, &interp, gen, &p, &wire, t);
                continue;
            }
        }
        // Denied, rejected, left out, or allowed without a conntrack
        // entry (bypass): the connection was established some other way.
        clear_lb_state(gen);
        if conntrack_len(gen) == 0 || opened.as_ref().is_none_or(|o| o.0 != 0) {
            clear_conntrack(gen);
            insert_conntrack(
                gen,
                &Packet {
                    state: ConnState::New,
                    ..p.clone()
                },
            );
        }
        let o = interp.evaluate(&p);
        let want = expected(g, &o, &p);
        let input = frame(&p);
        let (out, got) = run_counted(gen, &input);
        if compare(tag, &p, &want, &out, &got, t) && out.data != input {
            t.disagreements
                .push(format!("{tag}: established {p:?}\n    frame changed"));
        }
    }
}

/// A new packet not for a service, re-sent as the parser must see
/// through it (IPv6 behind 1–3 random extension headers, IPv4 with
/// options: judged as the whole packet) or refuse it (a non-first
/// fragment: `fragment`; IPv6 behind 9 extension headers: `unparsed`),
/// each from an empty conntrack, compared with the interpreter.
fn check_header_variants(
    tag: &str,
    g: &Graph,
    interp: &Interp,
    gen: &Generation,
    p: &Packet,
    rng: &mut gen::Rng,
    t: &mut Tally,
) {
    let whole = frame(p);
    let mut variants: Vec<(Vec<u8>, Headers)> = Vec::new();
    if p.src.is_ipv6() {
        variants.push((with_extensions(&whole, &random_chain(rng)), Headers::Whole));
        t.v6_ext += 1;
        if p.proto == Proto::Icmp6 {
            t.icmp6_ext += 1;
        }
        if rng.chance(10) {
            let nine = [Ext::DestOpts(8); 9];
            variants.push((with_extensions(&whole, &nine), Headers::Unparsed));
            t.unparsed += 1;
        }
    } else {
        variants.push((with_options(&whole, 1 + rng.below(3)), Headers::Whole));
        t.v4_opts += 1;
    }
    if rng.chance(25) {
        let offset = 1 + rng.below(1000) as u16;
        variants.push((non_first_fragment(&whole, offset), Headers::Fragment));
        t.fragments += 1;
    }
    for (f, headers) in variants {
        clear_conntrack(gen);
        clear_lb_state(gen);
        let mut seen = p.clone();
        if headers != Headers::Whole {
            seen.headers = headers;
            (seen.sport, seen.dport, seen.icmp_type, seen.icmp_code) = (0, 0, 0, 0);
        }
        let o = interp.evaluate(&seen);
        let want = expected(g, &o, &seen);
        let (out, got) = run_counted(gen, &f);
        compare(
            &format!("{tag} ({headers:?} frame)"),
            &seen,
            &want,
            &out,
            &got,
            t,
        );
    }
}

/// ICMP errors quoting the new packet `p` just checked (its verdict
/// `ret`, outcome `o`, output frame `out`), sent back to its sender by
/// its peer with a random error type of the family (docs/language.md §4
/// step 1, `interp::related`): when the flow was allowed into conntrack,
/// the error is established (a translated flow's is reverse-translated:
/// the quote becomes the packet as the client sent it, checksums valid,
/// the frontend as its source); with the flow gone, it is a new ICMP
/// packet judged by policy. Both against the interpreter.
#[allow(clippy::too_many_arguments)]
fn check_related(
    tag: &str,
    g: &Graph,
    interp: &Interp,
    gen: &Generation,
    p: &Packet,
    (ret, o, out): (u32, &Outcome, &RunOut),
    rng: &mut gen::Rng,
    t: &mut Tally,
) {
    let translated = o.service.as_ref().is_some_and(|h| h.chosen.is_some());
    let allowed = ret == layout::TC_ACT_OK as u32;
    // Every translated flow's error (the reverse NAT), one in ten of the
    // others (the test's time).
    if !(translated && allowed || rng.chance(10)) {
        return;
    }
    let v4 = p.src.is_ipv4();
    use weir_compiler::interp::related::{ICMP4_ERRORS, ICMP6_ERRORS_BELOW};
    let ty = if v4 {
        *rng.pick(&ICMP4_ERRORS)
    } else if rng.chance(80) {
        1 + rng.below(4) as u8
    } else {
        rng.below(usize::from(ICMP6_ERRORS_BELOW)) as u8
    };
    let code = rng.below(16) as u8;
    let sent = frame(p);
    // The packet on the wire past the hook, and who answers it.
    let (wire, from) = if translated && allowed {
        (out.data.clone(), addrs(&out.data).2)
    } else {
        (sent.clone(), p.dst)
    };
    let n = if p.proto == Proto::Tcp && rng.chance(50) {
        20
    } else {
        8
    };
    let error = error_frame(from, p.src, ty, code, &quote(&wire, n));
    let tag = format!("{tag} (ICMP error {ty}/{code} quoting it)");
    if allowed && conntrack_len(gen) > 0 {
        // Related: established. A translated flow's error reaches the
        // client from the frontend.
        let seen_from = if translated { p.dst } else { from };
        let mut seen = error_packet(seen_from, p.src, ty, code, true);
        seen.at = p.at;
        let o = interp.evaluate(&seen);
        let want = expected(g, &o, &seen);
        let (r, got) = run_counted(gen, &error);
        if !compare(&tag, &seen, &want, &r, &got, t) {
            return;
        }
        if v4 {
            t.related4 += 1;
        } else {
            t.related6 += 1;
        }
        let mut bad = Vec::new();
        if translated {
            t.related_nat += 1;
            if let Err(e) = error_checksums_ok(&r.data) {
                bad.push(e);
            }
            // The client's packet, except what a `dscp` steering action
            // rewrote past the hook (IPv4 TOS and header checksum, checked
            // above; IPv6 traffic class).
            let mask = |q: &[u8]| {
                let mut q = q.to_vec();
                let steered: &[usize] = if v4 { &[1, 10, 11] } else { &[0, 1] };
                for &i in steered {
                    q[i] = 0;
                }
                q
            };
            if mask(quoted(&r.data)) != mask(&quote(&sent, n)) {
                bad.push(format!(
                    "the quote is not the client's packet {p:?}:\n      got  {:02x?}\n      want {:02x?}",
                    quoted(&r.data),
                    quote(&sent, n)
                ));
            }
            if outer_src(&r.data) != p.dst {
                bad.push(format!("outer source {}", outer_src(&r.data)));
            }
        } else if r.data != error {
            bad.push("a related error was changed".into());
        }
        if !bad.is_empty() {
            t.disagreements.push(format!("{tag}: {}", bad.join("; ")));
        }
    }
    if translated && allowed && conntrack_len(gen) > 0 {
        check_reply_error(&tag, g, interp, gen, p, out, (ty, code), rng, t);
    }
    if !rng.chance(50) {
        return;
    }
    // The flow gone: a new ICMP packet, judged by policy.
    clear_conntrack(gen);
    clear_lb_state(gen);
    let mut seen = error_packet(from, p.src, ty, code, false);
    seen.at = p.at;
    let o = interp.evaluate(&seen);
    let want = expected(g, &o, &seen);
    drain_events(gen);
    let (r, got) = run_counted(gen, &error);
    if compare(&format!("{tag}, no flow"), &seen, &want, &r, &got, t) {
        t.unrelated += 1;
        check_events(&tag, g, interp, gen, &seen, &o, None, t);
    }
}

/// An error of type `ty` / `code` about the reply of the translated flow
/// of `p` (translated to `out`) as its client got it (frontend → client),
/// sent to the frontend by the client or a router on its way
/// (docs/language.md §4 step 1): established, and on to the backend as
/// Linux NATs it — the quote the reply as the backend sent it, checksums
/// valid, the error's destination the backend.
#[allow(clippy::too_many_arguments)]
fn check_reply_error(
    tag: &str,
    g: &Graph,
    interp: &Interp,
    gen: &Generation,
    p: &Packet,
    out: &RunOut,
    (ty, code): (u8, u8),
    rng: &mut gen::Rng,
    t: &mut Tally,
) {
    let (_, _, backend, bport) = addrs(&out.data);
    let got = Packet {
        src: p.dst,
        sport: p.dport,
        dst: p.src,
        dport: p.sport,
        state: ConnState::Established,
        ..p.clone()
    };
    let sent = Packet {
        src: backend,
        sport: bport,
        ..got.clone()
    };
    let router: IpAddr = if p.src.is_ipv4() {
        "192.0.2.77".parse().unwrap()
    } else {
        "2001:db8:77::1".parse().unwrap()
    };
    let from = if rng.chance(50) { p.src } else { router };
    let n = if p.proto == Proto::Tcp && rng.chance(50) {
        20
    } else {
        8
    };
    let error = error_frame(from, p.dst, ty, code, &quote(&frame(&got), n));
    let tag = format!("{tag} (ICMP error {ty}/{code} from {from} about its reply)");
    let mut seen = error_packet(from, p.dst, ty, code, true);
    seen.at = p.at;
    let o = interp.evaluate(&seen);
    let want = expected(g, &o, &seen);
    let (r, counted) = run_counted(gen, &error);
    if !compare(&tag, &seen, &want, &r, &counted, t) {
        return;
    }
    t.related_reply += 1;
    let mut bad = Vec::new();
    if let Err(e) = error_checksums_ok(&r.data) {
        bad.push(e);
    }
    if quoted(&r.data) != &quote(&frame(&sent), n)[..] {
        bad.push(format!(
            "the quote is not the backend's reply:\n      got  {:02x?}\n      want {:02x?}",
            quoted(&r.data),
            quote(&frame(&sent), n)
        ));
    }
    if outer_dst(&r.data) != backend || outer_src(&r.data) != from {
        bad.push(format!(
            "outer {} -> {}, want {from} -> {backend}",
            outer_src(&r.data),
            outer_dst(&r.data)
        ));
    }
    if !bad.is_empty() {
        t.disagreements.push(format!("{tag}: {}", bad.join("; ")));
    }
}

/// The reply `wire` (backend → client) of a translated connection, which
/// the interpreter sees as `seen` (frontend → client, established): it
/// must pass as established with the frontend as its source.
fn check_reply(
    tag: &str,
    g: &Graph,
    interp: &Interp,
    gen: &Generation,
    seen: &Packet,
    wire: &Packet,
    t: &mut Tally,
) {
    let o = interp.evaluate(seen);
    let want = expected(g, &o, seen);
    let input = frame(wire);
    let (out, got) = run_counted(gen, &input);
    if !compare(tag, seen, &want, &out, &got, t) {
        return;
    }
    t.replies += 1;
    t.replies6 += usize::from(seen.src.is_ipv6());
    let (s, sp, d, dp) = addrs(&out.data);
    t.sctp_reply_port += usize::from(seen.proto == Proto::Sctp && wire.sport != seen.sport);
    let ok = (s, sp, d, dp) == (seen.src, seen.sport, seen.dst, seen.dport);
    let sums = checksums_ok(&out.data).and_then(|()| sctp_crc_oracle(&out.data));
    if !ok || sums.is_err() {
        t.disagreements.push(format!(
            "{tag}: reply {wire:?}\n    reverse NAT gave {s}:{sp} → {d}:{dp}, want {}:{} ({:?})",
            seen.src, seen.sport, sums
        ));
    }
}

/// Fails with the first disagreements if there are any.
fn assert_agrees(tag: &str, t: &Tally) {
    assert!(
        t.disagreements.is_empty(),
        "{tag}: {} disagreements:\n{}",
        t.disagreements.len(),
        t.disagreements
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn report(name: &str, t: &Tally, started: Instant) {
    eprintln!(
        "{name}: {} packets compared ({} translated ({} IPv6, {} SCTP of which {} IPv6 and {} with a port change), {} replies un-translated ({} IPv6, {} SCTP with a port change), {} TCP resets, {} ICMP port unreachables, {} steered, {} IPv6 redirected; re-sent: {} IPv6 with extension headers, {} IPv4 with options, {} non-first fragments, {} 9-header chains), {} left out, {} disagreements, {:.1}s",
        t.packets,
        t.translated,
        t.translated6,
        t.sctp,
        t.sctp6,
        t.sctp_port,
        t.replies,
        t.replies6,
        t.sctp_reply_port,
        t.resets,
        t.unreachables,
        t.steered,
        t.redirect6,
        t.v6_ext,
        t.v4_opts,
        t.fragments,
        t.unparsed,
        t.skipped,
        t.disagreements.len(),
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "  ICMP: {} ICMPv4, {} ICMPv6 ({} of them behind extension headers), {} of the other family (ICMPv4 in IPv6 / ICMPv6 in IPv4); {} verdict events matched",
        t.icmp4, t.icmp6, t.icmp6_ext, t.icmp_foreign, t.events
    );
    eprintln!(
        "  related ICMP errors: {} IPv4, {} IPv6 established ({} of translated flows, reverse-translated; {} more about their replies, translated to the backend), {} quoting no flow judged as new",
        t.related4, t.related6, t.related_nat, t.related_reply, t.unrelated
    );
    for d in t.disagreements.iter().take(10) {
        eprintln!("  {d}");
    }
}

#[test]
fn ebpf_agrees_with_interpreter_on_generated_policies() {
    if !have_root("ebpf_agrees_with_interpreter_on_generated_policies") {
        return;
    }
    let started = Instant::now();
    let mut t = Tally::default();
    let seeds = 120u64;
    let mut min_per_model = usize::MAX;
    for seed in 0..seeds {
        let model = gen::model(seed);
        let g = graph::build(&model);
        let mut rng = gen::Rng::new(seed ^ 0xEB9F);
        let mut packets = cover::leaf_packets(&g, 20_000);
        packets.extend(gen::packets(&model, &mut rng, 120));
        let before = t.packets;
        check_model(&format!("seed {seed}"), &model, &g, &packets, &mut t);
        min_per_model = min_per_model.min(t.packets - before);
    }
    report("generated policies", &t, started);
    eprintln!("  {seeds} policies, at least {min_per_model} packets each");
    assert!(min_per_model >= 100, "too few packets per model");
    assert_agrees("generated policies", &t);
}

/// Generated programs with random policies (and tiers) marked audit
/// (`gen::mark_audit`; docs/language.md §4, "Audit policies"): the
/// enforced verdict and `weir_cnt` deltas equal the interpreter's (audit
/// policies never decide), and per packet the `weir_audit_cnt` deltas
/// are exactly the interpreter's audit provenance
/// (`AuditOutcome::counted`: one id per side that reached policy, none
/// for packets decided earlier), in all three hook modes.
#[test]
fn ebpf_with_audit_policies_agrees_with_interpreter() {
    if !have_root("ebpf_with_audit_policies_agrees_with_interpreter") {
        return;
    }
    let started = Instant::now();
    let mut t = Tally::default();
    let (mut audited, mut would_differ) = (0, 0);
    for seed in 0..60u64 {
        if audited >= 30 {
            break;
        }
        let mut model = gen::model(seed);
        let mut rng = gen::Rng::new(seed ^ 0xA0D1);
        gen::mark_audit(&mut model, &mut rng);
        if !model.has_audit() {
            continue;
        }
        audited += 1;
        let g = graph::build(&model);
        let mut packets = cover::leaf_packets(&g, 20_000);
        // The audit graph's leaves too: packets the audit sides decide.
        packets.extend(cover::leaf_packets(
            &graph::build(&model.audit_enforced()),
            20_000,
        ));
        packets.extend(gen::packets(&model, &mut rng, 120));
        let interp = Interp::new(&model);
        would_differ += packets
            .iter()
            .filter(|p| {
                let o = interp.evaluate(&normalize(p));
                o.audit
                    .as_ref()
                    .is_some_and(|a| a.differs(o.verdict, o.decided_by))
            })
            .count();
        check_model(&format!("audit seed {seed}"), &model, &g, &packets, &mut t);
    }
    report("audit policies", &t, started);
    eprintln!("  {audited} programs with audit policies, {would_differ} packets whose audit verdict differs");
    assert!(audited >= 20 && t.packets >= 5_000, "too few cases");
    assert!(
        would_differ >= 100,
        "too few packets the audit policies would decide differently"
    );
    assert_agrees("audit policies", &t);
}

/// Dual-stack policies (`gen::dual_stack`: IPv6-only endpoints, IPv6
/// prefixes in rules and steering, an IPv6-only service — translated,
/// replies un-translated, issue 18; its SCTP services are left out as
/// untranslated), every packet also re-sent with other headers.
#[test]
fn ebpf_agrees_with_interpreter_on_dual_stack_policies() {
    if !have_root("ebpf_agrees_with_interpreter_on_dual_stack_policies") {
        return;
    }
    let started = Instant::now();
    let mut t = Tally::default();
    let seeds = 40u64;
    for seed in 0..seeds {
        let model = gen::dual_stack(seed);
        let g = graph::build(&model);
        let mut rng = gen::Rng::new(seed ^ 0xD5);
        let mut packets = cover::leaf_packets(&g, 20_000);
        packets.extend(gen::packets(&model, &mut rng, 200));
        packets.extend(frontend_packets(&model, &mut rng, 12));
        check_model(
            &format!("dual-stack seed {seed}"),
            &model,
            &g,
            &packets,
            &mut t,
        );
    }
    report("dual-stack policies", &t, started);
    eprintln!("  {seeds} policies");
    assert!(t.v6_ext >= 1000, "too few IPv6 packets");
    // IPv6 service packets were translated (and compared), and replies
    // of allowed ones un-translated: none were left out.
    assert!(t.translated6 >= 100, "too few IPv6 translations");
    assert!(t.replies6 >= 10, "too few IPv6 replies");
    assert!(t.sctp >= 20, "too few SCTP translations");
    assert!(t.sctp6 >= 10, "too few IPv6 SCTP translations");
    assert!(
        t.sctp_port >= 10,
        "too few SCTP translations with a port change"
    );
    assert!(
        t.sctp_reply_port >= 5,
        "too few SCTP replies with a port change"
    );
    assert!(t.icmp6 >= 500, "too few ICMPv6 packets");
    // The generator's IPv6 steering redirects (issue 18).
    assert!(t.redirect6 >= 10, "too few IPv6 redirects: {}", t.redirect6);
    assert!(
        t.icmp_foreign >= 20,
        "too few ICMP packets of the other family"
    );
    assert_agrees("dual-stack policies", &t);
}

/// `n` new or established packets to every TCP / UDP frontend, each from
/// an endpoint address of the frontend's family (or a host of no
/// endpoint), with a random source port and hook: the generated packets
/// reach a frontend from its own family rarely.
fn frontend_packets(model: &Model, rng: &mut gen::Rng, n: usize) -> Vec<Packet> {
    let mut out = Vec::new();
    for s in &model.services {
        for f in &s.frontends {
            let mut srcs: Vec<IpAddr> = model
                .endpoints
                .iter()
                .flat_map(|e| e.addrs.iter().copied())
                .filter(|a| a.is_ipv4() == f.addr.is_ipv4())
                .collect();
            srcs.push(if f.addr.is_ipv4() {
                "192.0.2.77".parse().unwrap()
            } else {
                "2001:db8::77".parse().unwrap()
            });
            for _ in 0..n {
                let src = *rng.pick(&srcs);
                let mut p = Packet::new(
                    f.proto,
                    src,
                    30000 + rng.below(30000) as u16,
                    f.addr,
                    f.port,
                );
                if rng.chance(10) {
                    p.state = ConnState::Established;
                }
                p.at = match rng.below(4) {
                    0 => Some(Direction::Ingress),
                    1 => Some(Direction::Egress),
                    _ => None,
                };
                out.push(p);
            }
        }
    }
    out
}

/// A policy set large enough that the pipeline is split into several
/// tail-called programs.
pub fn large_model(seed: u64, policies: usize, rules: usize) -> Model {
    let mut model = gen::model(seed);
    // A first tier of its own, so nothing earlier decides for it.
    model.tiers.insert(
        0,
        Tier {
            name: "big".into(),
            order: 1,
            audit: false,
            default_pass: false,
            span: None,
        },
    );
    for p in &mut model.policies {
        p.tier += 1;
    }
    let base = model.policies.len();
    for i in 0..policies {
        let mut ingress = Vec::new();
        for r in 0..rules {
            let port = 1000 + (i * rules + r) as u16 * 3;
            ingress.push(Rule {
                action: if r % 7 == 3 {
                    Action::Deny
                } else {
                    Action::Allow
                },
                proto: ProtoMatch::Ports {
                    proto: if r % 2 == 0 { Proto::Tcp } else { Proto::Udp },
                    ports: vec![PortRange {
                        lo: port,
                        hi: port + (r % 3) as u16,
                    }],
                },
                peer: if r % 5 == 0 {
                    PeerMatch::Any
                } else {
                    model.policies.first().map_or(PeerMatch::Any, |p| {
                        PeerMatch::Selector(p.applies_to.clone())
                    })
                },
                log: r % 11 == 0,
                span: model.policies[0].span,
            });
        }
        let labels = if i % 3 == 0 {
            Sel::All
        } else {
            model.policies[i % base].applies_to.clone()
        };
        let span = model.policies[0].span;
        model.policies.push(Policy {
            name: format!("big{i:03}"),
            tier: 0,
            priority: 500,
            applies_to: labels,
            ingress: Some(ingress),
            egress: None,
            audit: false,
            span,
            name_span: span,
        });
    }
    let tiers = model.tiers.clone();
    model.policies.sort_by(|a, b| {
        let ta = &tiers[a.tier];
        let tb = &tiers[b.tier];
        (ta.order, &ta.name, a.priority, &a.name).cmp(&(tb.order, &tb.name, b.priority, &b.name))
    });
    model
}

#[test]
fn ebpf_large_policy_splits_into_stages_and_agrees() {
    if !have_root("ebpf_large_policy_splits_into_stages_and_agrees") {
        return;
    }
    let started = Instant::now();
    let model = large_model(3, 120, 60);
    let g = graph::build(&model);
    let mut rng = gen::Rng::new(0x1A26E);
    // Every leaf packet of the big tables would be ~10k; a spread of them
    // (every stage is reached) keeps the test fast.
    let leaves = cover::leaf_packets(&g, 200_000);
    let step = (leaves.len() / 1500).max(1);
    let mut packets: Vec<Packet> = leaves.into_iter().step_by(step).collect();
    packets.extend(gen::packets(&model, &mut rng, 300));
    // Both sides only (the node program is the split one checked here).
    for p in &mut packets {
        p.at = None;
    }
    // A small budget: many tail-called stages. `Budget::LONG`: stages
    // larger than the i16 jump range, far jumps relaxed into `gotol`.
    let small = Budget {
        max_slots: 12_000,
        max_jumps: 9_000,
    };
    for (tag, budget) in [("many stages", small), ("far jumps", Budget::LONG)] {
        let out = compile_with(&model, &g, Mode::Node, budget);
        eprintln!("{tag}: {}", out.report());
        let programs = &out.manifest.programs;
        if budget == small {
            assert!(
                programs.len() >= 3,
                "expected several stages, got {}",
                programs.len()
            );
            assert!(out.manifest.max_tail_calls >= 2);
        } else {
            assert!(
                programs.iter().any(|p| p.insns > 32_767) && out.listing.contains("gotol"),
                "expected a stage beyond the i16 jump range"
            );
        }
        let mut t = Tally::default();
        check_model_with(tag, &model, &g, &packets, &mut t, budget);
        report(&format!("large policy, {tag}"), &t, started);
        assert!(t.packets >= 100);
        assert_agrees(tag, &t);
    }
}

/// A Kubernetes-like synthetic policy set (`synth`: 300 label sets, 1,000
/// rules) has class tables large enough to be columns of the class rows
/// (one `u16` load from the row in r8 / r9); they must agree too.
#[test]
fn ebpf_class_row_tables_agree() {
    if !have_root("ebpf_class_row_tables_agree") {
        return;
    }
    let started = Instant::now();
    let model = weir_compiler::synth::model(&weir_compiler::synth::Params {
        seed: 5,
        services: 10,
        backends: 3,
        policies: 100,
        rules: 10,
        endpoints: 900,
        deployments: 300,
        ..Default::default()
    });
    let g = graph::build(&model);
    let out = compile(&model, &g, Mode::Node);
    assert!(
        ["(r8 +", "(r9 +"]
            .iter()
            .any(|r| out.listing.contains(&format!("r1 = *(u16 *){r}"))),
        "expected class tables read from the class rows"
    );
    let leaves = cover::leaf_packets(&g, 200_000);
    let step = (leaves.len() / 1500).max(1);
    let mut packets: Vec<Packet> = leaves.into_iter().step_by(step).collect();
    packets.extend(gen::packets(&model, &mut gen::Rng::new(0xC01), 300));
    let mut t = Tally::default();
    check_model("synth", &model, &g, &packets, &mut t);
    report("class-row tables", &t, started);
    assert!(t.packets >= 1000);
    assert_agrees("class-row tables", &t);
}

/// The atom bits held sparse (`codegen::sparse_atoms`, forced here; by
/// default only for models whose dense rows would be huge): the
/// class-row model (table columns in the rows, atom bits in
/// `weir_atom_bits`) and generated policies agree with the interpreter.
#[test]
fn ebpf_sparse_atom_bits_agree() {
    if !have_root("ebpf_sparse_atom_bits_agree") {
        return;
    }
    let started = Instant::now();
    ATOMS.with(|a| a.set(weir_compiler::ebpf::codegen::sparse_atoms::AtomLayout::Sparse));
    let mut t = Tally::default();
    let model = weir_compiler::synth::model(&weir_compiler::synth::Params {
        seed: 5,
        services: 10,
        backends: 3,
        policies: 100,
        rules: 10,
        endpoints: 900,
        deployments: 300,
        ..Default::default()
    });
    let g = graph::build(&model);
    let out = compile(&model, &g, Mode::Node);
    assert!(out.listing.contains("weir_atom_bits") && out.listing.contains("r1 = *(u16 *)(r"));
    let leaves = cover::leaf_packets(&g, 200_000);
    let step = (leaves.len() / 300).max(1);
    let mut packets: Vec<Packet> = leaves.into_iter().step_by(step).collect();
    packets.extend(gen::packets(&model, &mut gen::Rng::new(0xC02), 100));
    check_model("synth sparse", &model, &g, &packets, &mut t);
    for seed in 0..8u64 {
        let model = gen::model(seed);
        let g = graph::build(&model);
        let mut packets = cover::leaf_packets(&g, 20_000);
        packets.extend(gen::packets(&model, &mut gen::Rng::new(seed ^ 0x5A), 60));
        check_model(&format!("seed {seed} sparse"), &model, &g, &packets, &mut t);
    }
    report("sparse atom bits", &t, started);
    assert!(t.packets >= 500);
    assert_agrees("sparse atom bits", &t);
}

/// Leaves record up to `LOG_SLOTS` logged ids in the context for the final
/// block to count and count any further ones themselves: a packet that
/// passes more `log` rules than that on both sides must count each once.
#[test]
fn ebpf_counts_more_log_rules_than_context_slots() {
    if !have_root("ebpf_counts_more_log_rules_than_context_slots") {
        return;
    }
    let started = Instant::now();
    let n = layout::LOG_SLOTS + 3;
    let logs = |dir: &str| {
        (0..n)
            .map(|i| format!("    log tcp 1000-{} {dir} any\n", 1005 + i))
            .collect::<String>()
            + &format!("    log tcp {dir} any\n")
    };
    let src = format!(
        "endpoint a {{ labels {{ app: \"a\" }} addr 10.0.0.1 }}\n\
         endpoint b {{ labels {{ app: \"b\" }} addr 10.0.0.2 }}\n\
         policy out {{\n  applies to app == \"a\"\n  egress {{\n{}    allow tcp to any log\n  }}\n}}\n\
         policy inp {{\n  applies to app == \"b\"\n  ingress {{\n{}    allow tcp 1000-1005 from any\n  }}\n}}\n",
        logs("to"),
        logs("from"),
    );
    let loader = weir_compiler::source::MemoryLoader::new().with("logs.weir", src);
    let checked = weir_compiler::check::check_program(&["logs.weir".into()], &loader, None);
    assert!(
        checked.diagnostics.iter().all(|d| !d.is_error()),
        "{:?}",
        checked.diagnostics
    );
    let model = checked.model;
    let g = graph::build(&model);
    let mut packets = Vec::new();
    // Port 1000 passes every log rule on both sides; the others fewer.
    for dport in [999u16, 1000, 1005, 1006, 1005 + n as u16, 2000] {
        packets.push(Packet::new(
            Proto::Tcp,
            "10.0.0.1".parse().unwrap(),
            40000,
            "10.0.0.2".parse().unwrap(),
            dport,
        ));
    }
    let most = packets
        .iter()
        .map(|p| Interp::new(&model).evaluate(p).logged.len())
        .max();
    assert_eq!(most, Some(2 * (n + 1) + 1), "the policy logs as intended");
    let mut t = Tally::default();
    check_model("logs", &model, &g, &packets, &mut t);
    report("many log rules", &t, started);
    assert!(t.packets >= packets.len());
    assert_agrees("many log rules", &t);
}
