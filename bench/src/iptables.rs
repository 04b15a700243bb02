//! iptables per-packet cost in network namespaces, and update latency.
//!
//! A client — node — server topology (`weir_runtime::netns`): the node
//! routes between the two and holds the rules. A **probe** is one new flow
//! (a fresh socket, so conntrack sends its first packet through the nat
//! table and the filter chains): a UDP request/response round trip, or a
//! TCP connect plus the server's reply. The cost of a layout is the median
//! round-trip time over many probes; its **overhead** is that minus the
//! median with an empty ruleset on the same topology.
//!
//! Layouts:
//! - **empty**: no rules (probes go straight to a backend address);
//! - **kube-proxy**: the same services in kube-proxy's iptables layout,
//!   as installed and as its nat dispatch only (`crate::kube_proxy`);
//! - **weir**: the iptables back end's bundle, applied with the runtime
//!   (`Iptables::apply`).

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use weir_compiler::bundle::{self, BundleInput, Target};
use weir_compiler::graph::Graph;
use weir_compiler::iptables as ipt;
use weir_compiler::model::{Model, Proto};
use weir_runtime::bundle::Family;
use weir_runtime::iptables::{Iptables, Options, Variant};
use weir_runtime::netns::Topology;
use weir_runtime::Bundle;

use crate::stats::median;

/// The programs the kernel parts need that are not installed.
pub fn missing_programs(v: Variant) -> Vec<String> {
    [
        "ip".to_string(),
        "ipset".to_string(),
        v.iptables(Family::Ipv4),
        v.restore(Family::Ipv4),
        v.save(Family::Ipv4),
        v.restore(Family::Ipv6),
        v.save(Family::Ipv6),
    ]
    .into_iter()
    .filter(|p| weir_runtime::iptables::exec::find_program(p).is_none())
    .collect()
}

/// A service's first IPv4 frontend (address, port, protocol) and its ready
/// backends (address, port).
pub type Resolved = (IpAddr, u16, Proto, Vec<(IpAddr, u16)>);

/// Every service with an IPv4 frontend, resolved, in model order.
pub fn resolved_services(model: &Model) -> Vec<Resolved> {
    model
        .services
        .iter()
        .filter_map(|s| {
            let f = s.frontends.iter().find(|f| f.addr.is_ipv4())?;
            // The interpreter's rule (selector services, named target
            // ports, weights), not a copy of it.
            let backends: Vec<(IpAddr, u16)> =
                weir_compiler::interp::backends_of(s, f, &model.endpoints)
                    .into_iter()
                    .map(|b| (b.addr, b.port))
                    .collect();
            Some((f.addr, f.port, f.proto, backends))
        })
        .collect()
}

const EMPTY_TABLES: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";

/// Runs `iptables-restore` (full replace of the tables given) in the node.
pub fn restore(topo: &Topology, v: Variant, text: &str) -> Result<(), String> {
    let out = topo
        .node
        .exec_with_input(&v.restore(Family::Ipv4), &["-w"], Some(text))
        .map_err(|e| format!("iptables-restore: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables-restore: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Packets the node's nat `MASQUERADE` rules have matched, read back
/// with `iptables-save -c -t nat` (the kernel's counters): whether a
/// layout masqueraded the flows probed since it was restored.
pub fn masqueraded_packets(topo: &Topology, v: Variant) -> Result<u64, String> {
    let out = topo
        .node
        .exec(&v.save(Family::Ipv4), &["-c", "-t", "nat"])
        .map_err(|e| format!("iptables-save: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "iptables-save: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut n = 0;
    for line in text.lines().filter(|l| l.contains("-j MASQUERADE")) {
        let pkts = line
            .strip_prefix('[')
            .and_then(|l| l.split(':').next())
            .and_then(|p| p.parse::<u64>().ok())
            .ok_or_else(|| format!("iptables-save -c: no counter in {line:?}"))?;
        n += pkts;
    }
    Ok(n)
}

/// Removes every rule and set in the node.
pub fn flush(topo: &Topology, v: Variant) -> Result<(), String> {
    restore(topo, v, EMPTY_TABLES)?;
    let _ = topo.node.exec("ipset", &["destroy"]);
    Ok(())
}

/// weir's iptables bundle for `model`, written to `dir` (Maglev services
/// are balanced randomly: the back end refuses Maglev otherwise, and the
/// per-packet path is the same).
pub fn write_bundle(model: &Model, graph: &Graph, dir: &Path) -> Result<BundleStats, String> {
    let t = Instant::now();
    let opts = ipt::Options {
        maglev_as_random: true,
        ..ipt::Options::default()
    };
    let art = ipt::generate_with(graph, model, &opts).map_err(|us| {
        us.iter()
            .map(|u| {
                let d = u.diagnostic();
                format!("{}: {}", d.message, d.primary.message)
            })
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let gen_ms = t.elapsed().as_secs_f64() * 1e3;
    let section = art.manifest.value();
    let mut backends = BTreeMap::new();
    backends.insert(Target::Iptables, art);
    let locate = |_s: weir_grammar::Span| None;
    let sources = vec![("synth.weir".to_string(), String::new())];
    let files = bundle::bundle(&BundleInput {
        model,
        graph,
        sources: &sources,
        targets: &[Target::Iptables],
        locate: &locate,
        backends,
    });
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut stats = BundleStats {
        gen_ms,
        ..BundleStats::default()
    };
    for (name, bytes) in &files {
        let bytes = bytes.clone();
        if name == bundle::IPTABLES_RULES {
            let text = String::from_utf8_lossy(&bytes);
            stats.rules = text.lines().filter(|l| l.starts_with("-A ")).count();
            stats.chains = text.lines().filter(|l| l.starts_with(':')).count();
        }
        if name == bundle::IPSET_RULES {
            let text = String::from_utf8_lossy(&bytes);
            stats.sets = text.lines().filter(|l| l.starts_with("create ")).count();
            stats.set_entries = text.lines().filter(|l| l.starts_with("add ")).count();
        }
        std::fs::write(dir.join(name), bytes).map_err(|e| e.to_string())?;
    }
    stats.manifest = section;
    Ok(stats)
}

#[derive(Debug, Clone, Default)]
pub struct BundleStats {
    pub gen_ms: f64,
    pub rules: usize,
    pub chains: usize,
    pub sets: usize,
    pub set_entries: usize,
    pub manifest: Value,
}

/// The weir runtime for the node namespace, with its state in `state`.
pub fn runtime(topo: &Topology, state: &Path, v: Variant) -> Iptables {
    Iptables::new(
        Options::netns(topo.node.name())
            .with_state_dir(state)
            .with_variant(v),
    )
}

/// Applies a bundle directory; returns the wall time (ms).
pub fn apply(rt: &Iptables, dir: &Path) -> Result<f64, String> {
    let b = Bundle::read(dir).map_err(|e| e.to_string())?;
    let t = Instant::now();
    rt.apply(&b).map_err(|e| e.to_string())?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// `n` probes of new flows from `src` to `dst`; round-trip times in ns of
/// the successful ones, and the number that failed.
pub fn probe(
    topo: &Topology,
    proto: Proto,
    src: IpAddr,
    dst: SocketAddr,
    n: usize,
) -> (Vec<f64>, usize) {
    probe_spread(topo, proto, src, &[dst], n, 0)
}

/// `n` probes of new flows from `src`, each to one of `dsts` drawn at
/// random (uniformly, from a generator seeded with `seed`): what a
/// service's `-m statistic` choice among equal backends does to the flows
/// under test, so that a baseline spread this way wakes the same mix of
/// server threads.
pub fn probe_spread(
    topo: &Topology,
    proto: Proto,
    src: IpAddr,
    dsts: &[SocketAddr],
    n: usize,
    seed: u64,
) -> (Vec<f64>, usize) {
    if dsts.is_empty() {
        return (Vec::new(), n);
    }
    let mut rng = weir_compiler::gen::Rng::new(seed);
    let mut pick = move || dsts[rng.below(dsts.len())];
    let _ = topo.add_client_addr(src);
    let mut times = Vec::with_capacity(n);
    let mut failed = 0;
    let timeout = Duration::from_millis(500);
    let mut left = n;
    while left > 0 {
        let batch = left.min(200);
        left -= batch;
        match proto {
            Proto::Udp => {
                let socks = topo.client.run(move || {
                    (0..batch)
                        .filter_map(|_| fresh_udp_socket(src))
                        .collect::<Vec<_>>()
                });
                let Ok(socks) = socks else {
                    failed += batch;
                    continue;
                };
                failed += batch - socks.len();
                let mut buf = [0u8; 256];
                for s in socks {
                    let dst = pick();
                    let ok = s.connect(dst).is_ok() && s.set_read_timeout(Some(timeout)).is_ok();
                    let t = Instant::now();
                    if ok && s.send(b"weir").is_ok() && s.recv(&mut buf).is_ok() {
                        times.push(t.elapsed().as_nanos() as f64);
                    } else {
                        failed += 1;
                    }
                }
            }
            _ => {
                let socks = topo.client.run(move || {
                    (0..batch)
                        .filter_map(|_| weir_runtime::netns::tcp_bound_socket(src).ok())
                        .collect::<Vec<_>>()
                });
                let Ok(socks) = socks else {
                    failed += batch;
                    continue;
                };
                failed += batch - socks.len();
                let mut buf = Vec::new();
                for fd in socks {
                    let dst = pick();
                    let t = Instant::now();
                    match tcp_exchange(fd, dst, timeout, &mut buf) {
                        true => times.push(t.elapsed().as_nanos() as f64),
                        false => failed += 1,
                    }
                }
            }
        }
    }
    (times, failed)
}

/// The next UDP source port of the probes: one process-wide sequence
/// over 1024..=65535, so that no two probes of a measurement (under
/// 64,512 probes per namespace set) share a 5-tuple. With `bind(…:0)` the
/// kernel drew ports at random, and a probe that drew the port of an
/// earlier probe to the same service within conntrack's 30 s UDP timeout
/// was no new flow: it matched that flow's entry, skipped the nat table
/// and the policy, and took the earlier layout's translation. Measured on
/// the 10-services case (three layouts of 6,080 probes in turn, new
/// namespaces): the node's `nf_conntrack_count` after them was 17,032
/// with random ports, 18,240 with this sequence: 2.5 % of the first
/// layout's probes, 6.5 % of the second's and 10.7 % of the third's
/// (weir's) were not new flows.
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A UDP socket bound to `src` and the next free port of the sequence.
fn fresh_udp_socket(src: IpAddr) -> Option<UdpSocket> {
    for _ in 0..64 {
        let k = NEXT_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 1024 + (k % (65536 - 1024)) as u16;
        if let Ok(s) = UdpSocket::bind(SocketAddr::new(src, port)) {
            return Some(s);
        }
    }
    None
}

fn tcp_exchange(fd: OwnedFd, dst: SocketAddr, timeout: Duration, buf: &mut Vec<u8>) -> bool {
    // Timeouts before connecting: `tcp_connect` blocks.
    let probe = TcpStream::from(fd);
    let _ = probe.set_read_timeout(Some(timeout));
    let _ = probe.set_write_timeout(Some(timeout));
    let Ok(mut s) = weir_runtime::netns::tcp_connect(probe.into(), dst) else {
        return false;
    };
    buf.clear();
    s.read_to_end(buf).is_ok() && !buf.is_empty()
}

/// A measured layout: median RTT (ns) and failures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rtt {
    pub median: f64,
    pub failed: usize,
    pub n: usize,
}

impl Rtt {
    pub fn of(times: &[f64], failed: usize) -> Rtt {
        Rtt {
            median: median(times),
            failed,
            n: times.len() + failed,
        }
    }
}

/// Probes several targets (round-robin over them, `n` probes in all).
pub fn probe_many(
    topo: &Topology,
    proto: Proto,
    src: IpAddr,
    dsts: &[SocketAddr],
    n: usize,
) -> Rtt {
    let mut all = Vec::new();
    let mut failed = 0;
    if dsts.is_empty() {
        return Rtt::default();
    }
    let per = n.div_ceil(dsts.len()).max(1);
    for d in dsts {
        let (t, f) = probe(topo, proto, src, *d, per);
        all.extend(t);
        failed += f;
    }
    Rtt::of(&all, failed)
}

/// Starts the servers of every backend of the given services.
pub fn serve_backends(
    topo: &Topology,
    proto: Proto,
    backends: &[(IpAddr, u16)],
) -> Result<(), String> {
    for (a, p) in backends {
        match proto {
            Proto::Udp => topo.serve_udp(*a, *p),
            _ => topo.serve_tcp(*a, *p),
        }
        .map_err(|e| format!("server {a}:{p}: {e}"))?;
    }
    Ok(())
}

/// A scratch directory under the system temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("weir-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::create_dir_all(&d);
        Scratch(d)
    }

    /// A state directory (`weir_runtime::kernel_test::state_dir`: on
    /// tmpfs when there is one).
    pub fn shm(name: &str) -> Scratch {
        match weir_runtime::kernel_test::state_dir(&format!("bench-{name}")) {
            Ok(d) => Scratch(d),
            Err(_) => Scratch::new(name),
        }
    }
}

impl Drop for Scratch {
    /// Removes the directory, unless `WEIR_BENCH_KEEP` is set (to look at
    /// the bundles a run wrote).
    fn drop(&mut self) {
        if std::env::var_os("WEIR_BENCH_KEEP").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The sets an endpoint of class `class` must be added to (from the
/// back end's manifest section), IPv4 only.
pub fn sets_for_class(section: &Value, class: u64) -> Vec<String> {
    section["sets"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s["family"] == json!("ipv4") || s["family"] == json!("inet"))
                .filter(|s| {
                    s["classes"]
                        .as_array()
                        .is_some_and(|cs| cs.iter().any(|c| c.as_u64() == Some(class)))
                })
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The baseline client: [`bypass`] lets its packets skip every rule, so it
/// measures the empty-ruleset path on the same topology, interleaved with
/// the probes of the layout under test (no drift between them).
pub const BASE_CLIENT: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 0, 9);

/// Inserts `-s BASE_CLIENT -j ACCEPT` first in every built-in chain a
/// forwarded packet passes (raw, mangle, nat, filter).
pub fn bypass(topo: &Topology, v: Variant) -> Result<(), String> {
    let program = v.iptables(Family::Ipv4);
    let src = format!("{BASE_CLIENT}/32");
    for (table, chain) in [
        ("raw", "PREROUTING"),
        ("mangle", "PREROUTING"),
        ("mangle", "FORWARD"),
        ("mangle", "POSTROUTING"),
        ("nat", "PREROUTING"),
        ("nat", "POSTROUTING"),
        ("filter", "FORWARD"),
    ] {
        let out = topo
            .node
            .exec(
                &program,
                &[
                    "-w", "-t", table, "-I", chain, "1", "-s", &src, "-j", "ACCEPT",
                ],
            )
            .map_err(|e| format!("iptables: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "iptables -t {table} -I {chain}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// Interleaved measurement of a layout against the baseline client.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pair {
    pub base: Rtt,
    pub test: Rtt,
    /// Median over batch pairs of (test batch median − baseline batch
    /// median): robust to the machine drifting between batches.
    pub overhead: f64,
}

/// Interleaves probes: batches of 20 from the baseline client, each probe
/// to one of `bases[i]` at random ([`probe_spread`]), then 20 from `src`
/// to `dsts[i]` (`i` round-robin over the batches), until `n` of each.
/// `bases[i]` are the sockets the flows to `dsts[i]` end up at (a
/// service's backends): each baseline batch reaches the servers its test
/// batch reaches, spread over them the way a service's random choice
/// spreads the flows under test, and differs only in the rules its
/// packets skip. (A batch that wakes one server thread 20 times is
/// faster than one that wakes five in turn: on this VM a five-rule `-m
/// statistic` DNAT table measured 2.1 µs of "overhead" against a
/// one-server-per-batch baseline and 0.4 µs against a spread one —
/// server wake-ups, not rules. For the same reason a test batch to one
/// of several services is paired with a baseline over that service's
/// backends only: until session 21 the random services' baseline spread
/// over all of their ~40 backends. Checked with a second client that,
/// like the baseline, skips every rule: its batches to one backend read
/// 1.6–1.7 µs faster than a baseline over those ~40 backends and 0.3–0.9
/// µs faster than one over the last service's 4; with both batches to
/// that one backend, 30–70 ns faster.)
pub fn measure_pair(
    topo: &Topology,
    proto: Proto,
    bases: &[Vec<SocketAddr>],
    src: IpAddr,
    dsts: &[SocketAddr],
    n: usize,
) -> Pair {
    measure_pair_warmed(topo, proto, bases, src, dsts, n, 5)
}

/// [`measure_pair`] with `warm` unrecorded probes to each base and
/// destination first (neighbours, routes, server threads).
pub fn measure_pair_warmed(
    topo: &Topology,
    proto: Proto,
    bases: &[Vec<SocketAddr>],
    src: IpAddr,
    dsts: &[SocketAddr],
    n: usize,
    warm: usize,
) -> Pair {
    debug_assert_eq!(bases.len(), dsts.len(), "one list of bases per destination");
    let base_src: IpAddr = BASE_CLIENT.into();
    for b in bases.iter().flatten() {
        let _ = probe(topo, proto, base_src, *b, warm);
    }
    for d in dsts {
        let _ = probe(topo, proto, src, *d, warm);
    }
    let (mut bt, mut bf, mut tt, mut tf) = (Vec::new(), 0, Vec::new(), 0);
    let mut diffs = Vec::new();
    let batch = 20;
    let mut k = 0;
    while bt.len() + bf < n && !dsts.is_empty() {
        let i = k % dsts.len();
        let base = bases.get(i).map_or(&[][..], Vec::as_slice);
        let (b, f) = probe_spread(topo, proto, base_src, base, batch, k as u64);
        bf += f;
        let (t, f2) = probe(topo, proto, src, dsts[i], batch);
        tf += f2;
        k += 1;
        if !b.is_empty() && !t.is_empty() {
            diffs.push(median(&t) - median(&b));
        }
        bt.extend(b);
        tt.extend(t);
    }
    Pair {
        base: Rtt::of(&bt, bf),
        test: Rtt::of(&tt, tf),
        overhead: median(&diffs),
    }
}
