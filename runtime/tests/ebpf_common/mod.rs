//! Shared by the eBPF kernel tests: root check, frame building, running
//! a generation with BPF_PROG_TEST_RUN, counters, conntrack access, and
//! loading the examples.

#![allow(dead_code)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use weir_compiler::check::{check_program, Checked};
use weir_compiler::ebpf::codegen::{self, layout, EbpfOutput, Mode, Options};
use weir_compiler::flowhash::proto_number;
use weir_compiler::graph::Graph;
use weir_compiler::interp::Packet;
use weir_compiler::model::{Model, Proto};
use weir_compiler::source::MemoryLoader;
use weir_runtime::ebpf::load::{delete_raw, keys_raw, update_raw};
use weir_runtime::ebpf::{counters, load, Generation};

/// `true` if the test may touch the kernel; panics under `CI` without root.
pub fn have_root(test: &str) -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs root (CI is set, so not skipping)");
    }
    eprintln!("{test}: skipped, needs root");
    false
}

/// Finds a tool on PATH or in /usr/sbin; panics under `CI` if missing.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{name} is not installed (CI is set, so not skipping)");
        }
        eprintln!("{name} not installed: skipping that part");
    }
    found
}

/// The packet as the wire can carry it: ICMP has no ports, the others no
/// type / code.
pub fn normalize(p: &Packet) -> Packet {
    let mut p = p.clone();
    if p.proto == Proto::Icmp {
        p.sport = 0;
        p.dport = 0;
    } else {
        p.icmp_type = 0;
        p.icmp_code = 0;
    }
    p
}

/// Ethernet + IPv4/IPv6 + L4 header for `p` (addresses of one family).
pub fn frame(p: &Packet) -> Vec<u8> {
    let l4: Vec<u8> = match p.proto {
        Proto::Tcp => {
            let mut h = vec![0u8; 20];
            h[0..2].copy_from_slice(&p.sport.to_be_bytes());
            h[2..4].copy_from_slice(&p.dport.to_be_bytes());
            h[12] = 5 << 4;
            h[13] = 0x02;
            h
        }
        Proto::Udp => {
            let mut h = vec![0u8; 8];
            h[0..2].copy_from_slice(&p.sport.to_be_bytes());
            h[2..4].copy_from_slice(&p.dport.to_be_bytes());
            h[4..6].copy_from_slice(&8u16.to_be_bytes());
            h
        }
        Proto::Sctp => {
            let mut h = vec![0u8; 12];
            h[0..2].copy_from_slice(&p.sport.to_be_bytes());
            h[2..4].copy_from_slice(&p.dport.to_be_bytes());
            h
        }
        Proto::Icmp => {
            let mut h = vec![0u8; 8];
            h[0] = p.icmp_type;
            h[1] = p.icmp_code;
            h
        }
    };
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    match (p.src, p.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let mut ip = vec![0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            ip[8] = 64;
            ip[9] = proto_number(p.proto);
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            f.extend(ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd]);
            let mut ip = vec![0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
            ip[6] = if p.proto == Proto::Icmp {
                58
            } else {
                proto_number(p.proto)
            };
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            f.extend(ip);
        }
        _ => panic!("mixed families in {p:?}"),
    }
    f.extend(l4);
    set_checksums(&mut f);
    // Pad to the Ethernet minimum like a NIC would.
    while f.len() < 60 {
        f.push(0);
    }
    f
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// Offset of the L4 checksum field in an IPv4 frame (TCP / UDP), and the
/// IP payload range.
fn l4_layout(f: &[u8]) -> Option<(usize, std::ops::Range<usize>)> {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return None;
    }
    let ihl = usize::from(f[14] & 15) * 4;
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let l4 = 14 + ihl..(14 + total).min(f.len());
    let off = match f[23] {
        6 => 16,
        17 => 6,
        _ => return None,
    };
    Some((l4.start + off, l4))
}

/// The L4 checksum an IPv4 TCP / UDP frame should carry.
fn l4_checksum(f: &[u8]) -> Option<u16> {
    let (off, range) = l4_layout(f)?;
    let mut body = f[range.clone()].to_vec();
    let rel = off - range.start;
    body[rel] = 0;
    body[rel + 1] = 0;
    let mut pseudo = f[26..34].to_vec();
    pseudo.extend_from_slice(&[0, f[23]]);
    pseudo.extend_from_slice(&(body.len() as u16).to_be_bytes());
    let c = !fold(sum16(&pseudo) + sum16(&body));
    Some(if f[23] == 17 && c == 0 { 0xffff } else { c })
}

/// Fills in the IPv4 header checksum and the TCP / UDP checksum.
pub fn set_checksums(f: &mut [u8]) {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return;
    }
    let ihl = usize::from(f[14] & 15) * 4;
    f[24] = 0;
    f[25] = 0;
    let c = !fold(sum16(&f[14..14 + ihl]));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    if let (Some((off, _)), Some(c)) = (l4_layout(f), l4_checksum(f)) {
        f[off..off + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// Checks the IPv4 header checksum and the TCP / UDP checksum (a zero UDP
/// checksum is "none").
pub fn checksums_ok(f: &[u8]) -> Result<(), String> {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return Ok(());
    }
    let ihl = usize::from(f[14] & 15) * 4;
    if fold(sum16(&f[14..14 + ihl])) != 0xffff {
        return Err("bad IPv4 header checksum".into());
    }
    if let (Some((off, _)), Some(want)) = (l4_layout(f), l4_checksum(f)) {
        let have = u16::from_be_bytes([f[off], f[off + 1]]);
        if !(f[23] == 17 && have == 0) && have != want {
            return Err(format!("bad L4 checksum {have:#06x}, want {want:#06x}"));
        }
    }
    Ok(())
}

/// What one BPF_PROG_TEST_RUN produced.
pub struct RunOut {
    pub ret: u32,
    pub data: Vec<u8>,
    /// `skb->mark` afterwards (ctx_out).
    pub mark: u32,
}

/// Runs the entry program once on `frame` with an `__sk_buff` context in
/// and out.
pub fn run_full(g: &Generation, frame: &[u8]) -> RunOut {
    let p: &SchedClassifier = g
        .ebpf
        .program(layout::MAIN_PROGRAM)
        .unwrap()
        .try_into()
        .unwrap();
    let mut out = vec![0u8; frame.len() + 256];
    let ctx_in = [0u8; 192];
    let mut ctx_out = [0u8; 192];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: Some(&ctx_in),
        ctx_out: Some(&mut ctx_out),
        ..Default::default()
    };
    let r = p.test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    RunOut {
        ret: r.return_value,
        data: out,
        mark: u32::from_ne_bytes(ctx_out[8..12].try_into().unwrap()),
    }
}

/// Empties the service stage's per-flow maps (translations, replies,
/// affinity), when the object has them.
pub fn clear_lb_state(g: &Generation) {
    use weir_compiler::ebpf::service::layout::{aff, map as lb, tuple};
    for (name, size) in [
        (lb::CT, tuple::SIZE),
        (lb::REV, tuple::SIZE),
        (lb::AFF, aff::KEY_SIZE),
    ] {
        if let Some(m) = g.ebpf.map(name) {
            for k in keys_raw(m, size as usize).unwrap() {
                let _ = delete_raw(m, &k);
            }
        }
    }
}

/// The conntrack key the programs build for `p` (see `layout::ct`).
pub fn ct_key(p: &Packet) -> Vec<u8> {
    let mut k = vec![0u8; layout::ct::KEY_SIZE as usize];
    let put = |k: &mut Vec<u8>, off: usize, a: IpAddr| match a {
        IpAddr::V4(a) => k[off..off + 4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => k[off..off + 16].copy_from_slice(&a.octets()),
    };
    put(&mut k, 0, p.src);
    put(&mut k, 16, p.dst);
    k[32..34].copy_from_slice(&p.sport.to_ne_bytes());
    k[34..36].copy_from_slice(&p.dport.to_ne_bytes());
    k[36] = match (p.proto, p.src) {
        (Proto::Icmp, IpAddr::V6(_)) => 58,
        (pr, _) => proto_number(pr),
    };
    k[37] = if p.src.is_ipv4() { 4 } else { 6 };
    k
}

pub fn compile(model: &Model, g: &Graph, mode: Mode) -> EbpfOutput {
    let opts = Options {
        mode,
        // Small maps: hundreds of generations are created per run.
        conntrack_entries: 1024,
        spare_endpoints: 64,
        ..Options::default()
    };
    codegen::generate(model, g, &opts).unwrap_or_else(|e| panic!("ebpf limits: {e:?}"))
}

pub fn load_output(out: &EbpfOutput) -> Generation {
    load(&out.object, &out.manifest, None).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs the entry program once on `frame`; returns the TC verdict.
pub fn run(g: &Generation, frame: &[u8]) -> u32 {
    let p: &SchedClassifier = g
        .ebpf
        .program(layout::MAIN_PROGRAM)
        .unwrap()
        .try_into()
        .unwrap();
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..Default::default()
    };
    p.test_run(opts).expect("BPF_PROG_TEST_RUN").return_value
}

pub fn counts(g: &Generation) -> Vec<u64> {
    counters(&g.ebpf, g.manifest.counters).unwrap()
}

pub fn clear_conntrack(g: &Generation) {
    let m = g.ebpf.map(layout::map::CT).unwrap();
    for k in keys_raw(m, layout::ct::KEY_SIZE as usize).unwrap() {
        let _ = delete_raw(m, &k);
    }
}

pub fn conntrack_len(g: &Generation) -> usize {
    let m = g.ebpf.map(layout::map::CT).unwrap();
    keys_raw(m, layout::ct::KEY_SIZE as usize).unwrap().len()
}

pub fn insert_conntrack(g: &Generation, p: &Packet) {
    let m = g.ebpf.map(layout::map::CT).unwrap();
    update_raw(m, &ct_key(p), &[2, 0, 0, 0, 0, 0, 0, 0]).unwrap();
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Checks an example directory (its `.weir` files and inventory) or one
/// stdlib file, with the stdlib available.
pub fn load_policy(rel: &Path) -> Checked {
    let root = root();
    let mut loader = MemoryLoader::new().with_stdlib("stdlib-policies");
    for entry in std::fs::read_dir(root.join("stdlib-policies")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_none_or(|e| e != "weir") {
            continue;
        }
        let name = PathBuf::from("stdlib-policies").join(p.file_name().unwrap());
        loader = loader.with(name, std::fs::read_to_string(&p).unwrap());
    }
    let mut roots = Vec::new();
    let mut inventory = None;
    if root.join(rel).is_file() {
        roots.push(rel.to_path_buf());
    } else {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(root.join(rel))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let r = rel.join(p.file_name().unwrap());
            match p.extension().and_then(|e| e.to_str()) {
                Some("weir") => {
                    loader = loader.with(&r, std::fs::read_to_string(&p).unwrap());
                    roots.push(r);
                }
                Some("json") => {
                    loader = loader.with(&r, std::fs::read_to_string(&p).unwrap());
                    inventory = Some(r);
                }
                _ => {}
            }
        }
    }
    check_program(&roots, &loader, inventory.as_deref())
}

/// Every example directory and stdlib file, relative to the root.
pub fn policies() -> Vec<PathBuf> {
    let root = root();
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| PathBuf::from("examples").join(p.file_name().unwrap()))
        .collect();
    v.extend(
        std::fs::read_dir(root.join("stdlib-policies"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "weir"))
            .map(|p| PathBuf::from("stdlib-policies").join(p.file_name().unwrap())),
    );
    v.sort();
    v
}

/// A TCP connection from `src` (bound) to `dst`, with a send timeout.
pub fn tcp_connect_from(
    src: IpAddr,
    dst: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> std::io::Result<std::net::TcpStream> {
    use std::io::Write;
    use std::net::{Ipv4Addr, SocketAddr, TcpStream};
    use std::os::fd::FromRawFd;
    let (IpAddr::V4(s4), SocketAddr::V4(d4)) = (src, dst) else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let sin = |a: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(a.octets()),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let b = sin(s4, 0);
        if libc::bind(fd, &b as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as _,
            tv_usec: timeout.subsec_micros() as _,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
        let d = sin(*d4.ip(), d4.port());
        if libc::connect(fd, &d as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut stream = stream;
        let _ = stream.write(b"");
        Ok(stream)
    }
}
