//! ICMP type 255 in the iptables back end, in the kernel: the IPv4 `icmp`
//! match reads type 255 as "any type", so `deny icmp type 255` written as
//! `-m icmp --icmp-type 255` would deny every ICMP packet. The compiled
//! rules are applied in a node namespace, read back with `iptables-save` /
//! `ip6tables-save`, and real ICMP (echo, and a hand-made type 255) is
//! sent through it.
//!
//! Needs root; skipped without, unless `CI` is set (then it fails).

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_compiler::bundle::{bundle, BundleInput, Target};
use weir_compiler::check::check_program;
use weir_compiler::graph;
use weir_compiler::source::MemoryLoader;
use weir_runtime::iptables::{Iptables, Options};
use weir_runtime::netns::{Topology, NODE_SERVER_IF};
use weir_runtime::Bundle;

fn ready(test: &str) -> bool {
    weir_runtime::kernel_test::may_run(
        test,
        &[
            "ip",
            "iptables-restore",
            "ip6tables-restore",
            "iptables-save",
            "ipset",
        ],
    )
}

const CLIENT: &str = "10.1.0.2";
const SERVER: &str = "10.2.0.5";

/// Type 255 denied (code 7 from anywhere, every code from the client's
/// network), everything else allowed; the same for ICMPv6 (`icmp6`: an
/// `icmp` rule is ICMPv4 only and never reaches ip6tables).
const PROGRAM: &str = r#"
endpoint srv { labels { app: "srv" } addr 10.2.0.5 }
endpoint srv6 { labels { app: "srv" } addr fd00:2::5 }
policy odd-icmp priority 10 {
  applies to app == "srv"
  ingress {
    deny icmp type 255 code 7 from any
    deny icmp type 255 from 10.1.0.0/16
    deny icmp6 type 255 code 7 from any
    allow any from any
  }
}
"#;

fn compile(dir: &Path) -> Bundle {
    let loader = MemoryLoader::new().with("p.weir", PROGRAM);
    let checked = check_program(&["p.weir".into()], &loader, None);
    assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
    let model = &checked.model;
    let g = graph::build(model);
    let art = weir_compiler::iptables::generate(&g, model).expect("iptables can express it");
    let mut backends = BTreeMap::new();
    backends.insert(Target::Iptables, art);
    let sources = vec![("p.weir".to_string(), PROGRAM.to_string())];
    let files = bundle(&BundleInput {
        model,
        graph: &g,
        sources: &sources,
        targets: &[Target::Iptables],
        locate: &|_| None,
        backends,
    });
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    Bundle::read(dir).unwrap()
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-ipt-icmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn save(topo: &Topology, program: &str) -> String {
    let o = topo.node.exec(program, &[]).unwrap();
    assert!(o.status.success(), "{program}");
    String::from_utf8(o.stdout).unwrap()
}

/// A raw ICMP socket (IPv4), bound to `src` when given.
fn raw_icmp(src: Option<Ipv4Addr>) -> io::Result<OwnedFd> {
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        if let Some(src) = src {
            let sa = sockaddr(src);
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            if libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                len,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(fd)
    }
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// An ICMP message of `ty`/`code` with an id marking it as this test's.
fn icmp_message(ty: u8, code: u8, id: u16) -> [u8; 8] {
    let mut m = [ty, code, 0, 0, (id >> 8) as u8, id as u8, 0, 1];
    let mut sum: u32 = m
        .chunks(2)
        .map(|w| u32::from(w[0]) << 8 | u32::from(w[1]))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    m[2] = (c >> 8) as u8;
    m[3] = c as u8;
    m
}

/// Sends ICMP `ty`/`code` from the client to the server; true if the
/// server's namespace received it.
fn icmp_arrives(topo: &Topology, ty: u8, code: u8, id: u16) -> bool {
    let src: Ipv4Addr = CLIENT.parse().unwrap();
    let dst: Ipv4Addr = SERVER.parse().unwrap();
    let rx = topo.server.run(|| raw_icmp(None)).unwrap().unwrap();
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: setsockopt with a valid timeval on an owned descriptor.
    unsafe {
        libc::setsockopt(
            rx.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    let tx = topo
        .client
        .run(move || raw_icmp(Some(src)))
        .unwrap()
        .unwrap();
    let msg = icmp_message(ty, code, id);
    let to = sockaddr(dst);
    for _ in 0..3 {
        // SAFETY: sends `msg` to a valid sockaddr_in.
        unsafe {
            libc::sendto(
                tx.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
        }
        // Read until a timeout: other ICMP may arrive too.
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: reads into a buffer of the given length.
            let n = unsafe { libc::recv(rx.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                break;
            }
            let n = n as usize;
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            if n >= ihl + 8 && buf[ihl..ihl + 8] == msg {
                return true;
            }
        }
    }
    false
}

#[test]
fn icmp_type_255_is_exactly_type_255() {
    if !ready("icmp_type_255_is_exactly_type_255") {
        return;
    }
    let work = scratch();
    let topo = Topology::new().unwrap();
    let o = topo
        .node
        .exec("ip", &["route", "add", "default", "dev", NODE_SERVER_IF])
        .unwrap();
    assert!(o.status.success());
    let client: IpAddr = CLIENT.parse().unwrap();
    let server: IpAddr = SERVER.parse().unwrap();
    topo.add_client_addr(client).unwrap();
    topo.add_server_addr(server).unwrap();
    let rt = Iptables::new(Options::netns(topo.node.name()).with_state_dir(work.join("state")));
    let b = compile(&work.join("bundle"));
    rt.apply(&b).unwrap();

    // Read back: the kernel holds what was meant, not "any".
    let v4 = save(&topo, "iptables-save");
    assert!(!v4.contains("--icmp-type any"), "type 255 widened:\n{v4}");
    assert!(
        v4.contains("0x0>>0x18=0xff") && v4.contains("0x0>>0x10=0xff07"),
        "type 255 and 255/7 as u32 tests:\n{v4}"
    );
    let v6 = save(&topo, "ip6tables-save");
    assert!(
        v6.contains("--icmpv6-type 255/7"),
        "ip6tables keeps type 255 as written:\n{v6}"
    );
    // `icmp` rules are ICMPv4 only: none in ip6tables, and `icmp6` none
    // in iptables.
    assert!(
        !v6.contains("--icmp-type"),
        "an icmp rule in ip6tables:\n{v6}"
    );
    assert!(!v4.contains("icmpv6"), "an icmp6 rule in iptables:\n{v4}");

    // Traffic: other types pass. (Type 255 itself never reaches the
    // policy chains: conntrack does not track ICMP types above 18 and the
    // chain drops INVALID packets first, so it is not sent here.)
    assert!(
        topo.icmp_echo(client, server, Duration::from_secs(2)),
        "echo request denied by `deny icmp type 255`:\n{v4}"
    );
    assert!(
        icmp_arrives(&topo, 13, 0, 0x5701),
        "timestamp request denied by `deny icmp type 255`:\n{v4}"
    );
    rt.detach().unwrap();
}
