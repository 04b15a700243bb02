//! The eBPF service translation of SCTP with a port change (issue 18):
//! DNAT to a backend on another port and reverse NAT of its replies
//! update the SCTP CRC32c (`service::sctp_crc`), checked with the
//! `crc32c` crate, not the project's code. BPF_PROG_TEST_RUN on INIT and
//! DATA packets of several lengths (up to 1,500 bytes of IP and beyond,
//! as far as the test run takes), IPv4 and IPv6, through a service whose
//! backends listen on another port, and their replies: the output frame
//! is the input but for the address, the port, the IPv4 header checksum
//! and the CRC32c, which the crate must agree with. Also what the update
//! leaves alone (a zero field: `CHECKSUM_PARTIAL`, computed later) and
//! where it fails closed (dropped, counted in `weir_lb_cnt[SCTP_CRC]`).
//!
//! This kernel has no SCTP module: no real SCTP traffic, only test runs.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;

use std::net::IpAddr;

use ebpf_common::sctp::{data_chunk, field, init_chunk, oracle_crc, sctp_frame};
use ebpf_common::*;
use weir_compiler::ebpf::codegen::Mode;
use weir_compiler::ebpf::layout;
use weir_compiler::ebpf::layout::service::{cnt, map as lb};
use weir_compiler::graph;

const SRC: &str = r#"
endpoint client { labels { app: "client" } addr 10.1.0.10 addr fd00:1::10 }
endpoint db { labels { app: "db" } addr 10.1.0.5 addr fd00:1::5 }
service diameter {
  frontend 10.96.0.9:3868/sctp
  frontend [fd00:96::9]:3868/sctp
  backends select app == "db" port 3869
}
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sctp_crc_drops(g: &weir_runtime::ebpf::Generation) -> u64 {
    let m = g.ebpf.map(lb::CNT).expect("weir_lb_cnt");
    let arr: aya::maps::PerCpuArray<_, u64> = aya::maps::PerCpuArray::try_from(m).unwrap();
    arr.get(&cnt::SCTP_CRC, 0).unwrap().iter().sum()
}

/// Where the two frames differ, beyond `allowed` byte ranges.
fn other_changes(a: &[u8], b: &[u8], allowed: &[std::ops::Range<usize>]) -> Vec<usize> {
    assert_eq!(a.len(), b.len(), "same length");
    (0..a.len())
        .filter(|i| a[*i] != b[*i] && !allowed.iter().any(|r| r.contains(i)))
        .collect()
}

/// (address range, L4 offset) of the destination or source of a frame.
fn layout_of(f: &[u8], dst: bool) -> (std::ops::Range<usize>, usize) {
    if f[12..14] == [0x08, 0x00] {
        let a = if dst { 30..34 } else { 26..30 };
        (a, 34)
    } else {
        let a = if dst { 38..54 } else { 22..38 };
        (a, 54)
    }
}

#[test]
fn ebpf_sctp_port_translation_updates_the_crc32c() {
    if !have_root("ebpf_sctp_port_translation_updates_the_crc32c") {
        return;
    }
    let model = model_of_source(SRC);
    assert!(weir_compiler::ebpf::codegen::sctp_port_changes(&model));
    let g = graph::build(&model);
    let gen = load_output(&compile(&model, &g, Mode::Node));
    // User-data lengths: IP packets from 48 bytes to 1,500, and past
    // (the test run takes a frame up to about a page).
    let sizes = [0usize, 1, 3, 17, 100, 255, 256, 511, 1000, 1400, 1432, 3000];
    let families = [
        ("IPv4", ip("10.1.0.10"), ip("10.96.0.9"), ip("10.1.0.5")),
        ("IPv6", ip("fd00:1::10"), ip("fd00:96::9"), ip("fd00:1::5")),
    ];
    let mut checked = 0;
    for (fam, client, frontend, backend) in families {
        for (i, n) in sizes.iter().enumerate() {
            for init in [true, false] {
                if init && i > 0 {
                    continue;
                }
                let tag = format!(
                    "{fam}, {}",
                    if init {
                        "INIT".into()
                    } else {
                        format!("DATA of {n}")
                    }
                );
                let sport = 40000 + i as u16 * 2 + u16::from(init);
                let chunks = if init {
                    init_chunk(0x5eed_0001)
                } else {
                    data_chunk(7 + i as u32, *n)
                };
                let vtag = if init { 0 } else { 0x1234_5678 };
                // Client → frontend: DNAT to backend:3869.
                let f = sctp_frame((client, sport), (frontend, 3868), vtag, &chunks);
                let out = run_full(&gen, &f);
                assert_eq!(out.ret, layout::TC_ACT_OK as u32, "{tag}: passes");
                let o = &out.data;
                let (dst, l4) = layout_of(o, true);
                assert_eq!(
                    o[dst.clone()],
                    match backend {
                        IpAddr::V4(a) => a.octets().to_vec(),
                        IpAddr::V6(a) => a.octets().to_vec(),
                    },
                    "{tag}: DNAT address"
                );
                assert_eq!(
                    u16::from_be_bytes([o[l4 + 2], o[l4 + 3]]),
                    3869,
                    "{tag}: DNAT port"
                );
                assert_eq!(field(o), oracle_crc(o), "{tag}: CRC32c after DNAT");
                assert_ne!(field(o), field(&f), "{tag}: the CRC32c changed");
                let allowed = [dst, 24..26, l4 + 2..l4 + 4, l4 + 8..l4 + 12];
                assert_eq!(
                    other_changes(&f, o, &allowed),
                    Vec::<usize>::new(),
                    "{tag}: other bytes"
                );
                // Backend → client: reverse NAT back to frontend:3868.
                let r = sctp_frame((backend, 3869), (client, sport), 0x0bad_cafe, &chunks);
                let out = run_full(&gen, &r);
                assert_eq!(out.ret, layout::TC_ACT_OK as u32, "{tag}: reply passes");
                let o = &out.data;
                let (src, l4) = layout_of(o, false);
                assert_eq!(
                    o[src.clone()],
                    match frontend {
                        IpAddr::V4(a) => a.octets().to_vec(),
                        IpAddr::V6(a) => a.octets().to_vec(),
                    },
                    "{tag}: reverse NAT address"
                );
                assert_eq!(
                    u16::from_be_bytes([o[l4], o[l4 + 1]]),
                    3868,
                    "{tag}: reverse NAT port"
                );
                assert_eq!(field(o), oracle_crc(o), "{tag}: CRC32c after reverse NAT");
                let allowed = [src, 24..26, l4..l4 + 2, l4 + 8..l4 + 12];
                assert_eq!(
                    other_changes(&r, o, &allowed),
                    Vec::<usize>::new(),
                    "{tag}: reply's other bytes"
                );
                checked += 2;
            }
        }
    }
    eprintln!("{checked} SCTP packets translated with a port change, CRC32c as the crc32c crate computes it");
    assert_eq!(sctp_crc_drops(&gen), 0);
}

#[test]
fn ebpf_sctp_crc_leaves_a_zero_field_and_fails_closed() {
    if !have_root("ebpf_sctp_crc_leaves_a_zero_field_and_fails_closed") {
        return;
    }
    let model = model_of_source(SRC);
    let g = graph::build(&model);
    let gen = load_output(&compile(&model, &g, Mode::Node));
    let chunks = data_chunk(1, 40);

    // A zero field: the CRC32c is computed later (CHECKSUM_PARTIAL, SCTP
    // over a veth); the translation must leave it zero.
    let mut f = sctp_frame(
        (ip("10.1.0.10"), 41000),
        (ip("10.96.0.9"), 3868),
        1,
        &chunks,
    );
    f[34 + 8..34 + 12].fill(0);
    let out = run_full(&gen, &f);
    assert_eq!(out.ret, layout::TC_ACT_OK as u32);
    assert_eq!(
        u16::from_be_bytes([out.data[36], out.data[37]]),
        3869,
        "translated"
    );
    assert_eq!(field(&out.data), Some(0), "left for the later computation");

    // An IPv4 first fragment (MF): the SCTP packet's length is unknown.
    let before = sctp_crc_drops(&gen);
    let mut f = sctp_frame(
        (ip("10.1.0.10"), 41001),
        (ip("10.96.0.9"), 3868),
        1,
        &chunks,
    );
    f[20] |= 0x20;
    f[24..26].fill(0);
    let c = internet_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let out = run_full(&gen, &f);
    assert_eq!(
        out.ret,
        layout::TC_ACT_SHOT as u32,
        "first fragment dropped"
    );
    assert_eq!(sctp_crc_drops(&gen), before + 1, "and counted");

    // IPv6 behind extension headers: a hop-by-hop header is walked over
    // (translated, the CRC32c updated); a fragment header makes it a
    // first fragment (dropped, counted).
    let plain = sctp_frame(
        (ip("fd00:1::10"), 41002),
        (ip("fd00:96::9"), 3868),
        1,
        &chunks,
    );
    let behind = |ext: &[u8]| {
        let mut f = plain[..54].to_vec();
        f[20] = ext[8];
        let plen = u16::from_be_bytes([f[18], f[19]]) + 8;
        f[18..20].copy_from_slice(&plen.to_be_bytes());
        f.extend_from_slice(&ext[..8]);
        f.extend_from_slice(&plain[54..]);
        f
    };
    // Hop-by-hop (type 0): next 132, length 0, PadN.
    let f = behind(&[132, 0, 1, 4, 0, 0, 0, 0, 0]);
    let out = run_full(&gen, &f);
    assert_eq!(out.ret, layout::TC_ACT_OK as u32, "hop-by-hop: passes");
    let o = &out.data;
    assert_eq!(
        u16::from_be_bytes([o[64], o[65]]),
        3869,
        "hop-by-hop: translated"
    );
    let mut body = o[62..].to_vec();
    let have = u32::from_le_bytes(body[8..12].try_into().unwrap());
    body[8..12].fill(0);
    assert_eq!(have, crc32c::crc32c(&body), "hop-by-hop: CRC32c");
    // Fragment (type 44): next 132, offset 0, M set, identification.
    let f = behind(&[132, 0, 0, 1, 0, 0, 0, 9, 44]);
    let out = run_full(&gen, &f);
    assert_eq!(
        out.ret,
        layout::TC_ACT_SHOT as u32,
        "IPv6 first fragment: dropped"
    );
    assert_eq!(sctp_crc_drops(&gen), before + 2, "and counted");
}

/// ns per packet of the CRC32c update alone (`sctp_crc::bench_program`,
/// BPF_PROG_TEST_RUN, repeat 1M): with the update minus without it, for
/// IPv4 SCTP packets of several lengths; the empty program's time beside
/// it (absolute figures are noisy on a loaded machine: compare ratios).
/// Not a CI test: `cargo test -p weir-runtime --test ebpf_sctp_crc --
/// --ignored --nocapture`.
#[test]
#[ignore]
fn ebpf_sctp_crc_bench() {
    use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
    use aya::Ebpf;
    use weir_compiler::ebpf::elf::{write_object, ObjectDef, ProgramDef};
    use weir_compiler::ebpf::service::sctp_crc::bench_program;
    const REPEAT: u32 = 1_000_000;
    let time = |with: bool, frame: &[u8]| {
        let (code, maps) = bench_program(with);
        let bytes = write_object(&ObjectDef {
            programs: vec![ProgramDef {
                name: "crc".into(),
                section: "classifier".into(),
                code,
            }],
            maps,
            license: "GPL".into(),
        })
        .unwrap();
        let mut ebpf = Ebpf::load(&bytes).unwrap();
        let p: &mut SchedClassifier = ebpf.program_mut("crc").unwrap().try_into().unwrap();
        p.load().unwrap();
        let mut out = vec![0u8; frame.len() + 256];
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat: REPEAT,
                ..Default::default()
            })
            .unwrap();
        r.duration.as_nanos() as f64
    };
    eprintln!("SCTP CRC32c update, ns per packet (with - without), repeat {REPEAT}:");
    for n in [0usize, 12, 100, 520, 1000, 1432, 3000] {
        let f = sctp_frame(
            (ip("10.1.0.10"), 40000),
            (ip("10.96.0.9"), 3868),
            1,
            &data_chunk(1, n),
        );
        let ip_len = f.len() - 14;
        let without = time(false, &f);
        let with = time(true, &f);
        eprintln!(
            "  IP length {ip_len:5}: {with:7.1} - {without:6.1} = {:6.1} ns",
            with - without
        );
    }
}
