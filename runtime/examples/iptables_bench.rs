//! Per-packet cost of service lookup: weir's iptables output (one ipset
//! lookup, then a binary tree of chains) against a kube-proxy-style linear
//! `KUBE-SERVICES` list (one rule per service, probability chains for the
//! backends), at 10 / 1,000 / 10,000 services, side by side.
//!
//! Each sample is a UDP round trip on a fresh flow (new source port), so
//! every request is a new conntrack entry and walks the nat PREROUTING
//! rules once: to the *last* service (the linear list's worst case) and to
//! a destination that is no service (every packet of the linear list's
//! node pays for the whole list). Medians over many samples, both rule
//! sets measured in alternation in the same run, with a node without any
//! rules (`empty`: a round trip to a plain server) as the floor; `last/emp`
//! is weir's round trip to the last service over that floor.
//!
//! Run as root: `cargo run --release -p weir-runtime --example iptables_bench`
//! (`SAMPLES=N` to change the sample count).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use weir_compiler::bundle::{bundle, BundleInput, Target};
use weir_compiler::graph;
use weir_compiler::model::{Backend, BackendSource, Balance, Frontend, Model, Proto, Service};
use weir_runtime::iptables::{Iptables, Options};
use weir_runtime::netns::Topology;
use weir_runtime::Bundle;

const BACKENDS: [&str; 2] = ["10.2.0.10", "10.2.0.11"];
const PORT: u16 = 8080;

fn vip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 96, (i / 250) as u8, (i % 250 + 1) as u8))
}

fn model(n: usize) -> Model {
    let backends: Vec<Backend> = BACKENDS
        .iter()
        .map(|a| Backend {
            addr: a.parse().unwrap(),
            port: PORT,
            weight: 1,
            endpoint: None,
        })
        .collect();
    Model {
        services: (0..n)
            .map(|i| Service {
                name: format!("svc{i:05}"),
                frontends: vec![Frontend {
                    addr: vip(i),
                    port: 53,
                    proto: Proto::Udp,
                }],
                backends: BackendSource::Explicit(backends.clone()),
                balance: Balance::Random,
                affinity: None,
                span: Default::default(),
            })
            .collect(),
        ..Model::default()
    }
}

/// kube-proxy's shape: PREROUTING → KUBE-SERVICES (one rule per service)
/// → KUBE-SVC-i (statistic) → KUBE-SEP-i-j (DNAT).
fn linear_rules(n: usize) -> String {
    let mut s = String::from("*nat\n:KUBE-SERVICES - [0:0]\n");
    for i in 0..n {
        s.push_str(&format!(":KUBE-SVC-{i} - [0:0]\n"));
        for j in 0..BACKENDS.len() {
            s.push_str(&format!(":KUBE-SEP-{i}-{j} - [0:0]\n"));
        }
    }
    s.push_str("-A PREROUTING -j KUBE-SERVICES\n");
    for i in 0..n {
        s.push_str(&format!(
            "-A KUBE-SERVICES -d {}/32 -p udp -m comment --comment \"svc{i}\" -m udp --dport 53 -j KUBE-SVC-{i}\n",
            vip(i)
        ));
        s.push_str(&format!(
            "-A KUBE-SVC-{i} -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-{i}-0\n-A KUBE-SVC-{i} -j KUBE-SEP-{i}-1\n"
        ));
        for (j, b) in BACKENDS.iter().enumerate() {
            s.push_str(&format!(
                "-A KUBE-SEP-{i}-{j} -p udp -m udp -j DNAT --to-destination {b}:{PORT}\n"
            ));
        }
    }
    s.push_str("COMMIT\n");
    s
}

struct Bench {
    topo: Topology,
    client: IpAddr,
    other: IpAddr,
}

impl Bench {
    fn new() -> Bench {
        let topo = Topology::new().expect("topology (needs root)");
        let client: IpAddr = "10.1.0.5".parse().unwrap();
        let other: IpAddr = "10.3.0.7".parse().unwrap();
        for b in BACKENDS {
            topo.serve_udp(b.parse().unwrap(), PORT).unwrap();
        }
        topo.serve_udp(other, 53).unwrap();
        topo.add_client_addr(client).unwrap();
        Bench {
            topo,
            client,
            other,
        }
    }

    /// One fresh-flow round trip, in microseconds.
    fn sample(&self, dst: IpAddr) -> f64 {
        let t = Instant::now();
        let r = self
            .topo
            .udp_probe(self.client, dst, 53, Duration::from_secs(2));
        assert!(r.is_some(), "no answer from {dst}");
        t.elapsed().as_secs_f64() * 1e6
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let samples: usize = std::env::var("SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    println!("fresh-flow UDP round trip, median of {samples} samples (µs)");
    println!(
        "{:>9} | {:>12} {:>12} | {:>12} {:>12} | {:>8} {:>8} | {:>10} {:>10}",
        "services",
        "weir last",
        "linear last",
        "weir none",
        "linear none",
        "empty",
        "last/emp",
        "weir rules",
        "lin rules"
    );
    for n in [10usize, 1_000, 10_000] {
        let m = model(n);
        let g = graph::build(&m);
        let art = weir_compiler::iptables::generate(&g, &m).expect("random services compile");
        let weir_rules = String::from_utf8(art.files["iptables.rules"].clone()).unwrap();
        let mut backends = BTreeMap::new();
        backends.insert(Target::Iptables, art);
        let files = bundle(&BundleInput {
            model: &m,
            graph: &g,
            sources: &[],
            targets: &[Target::Iptables],
            locate: &|_| None,
            backends,
        });
        let dir = std::env::temp_dir().join(format!("weir-bench-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }

        let weir = Bench::new();
        let rt =
            Iptables::new(Options::netns(weir.topo.node.name()).with_state_dir(dir.join("state")));
        let t = Instant::now();
        rt.apply(&Bundle::read(&dir).unwrap()).unwrap();
        let weir_apply = t.elapsed();

        // No rules at all: the floor (a round trip to a plain server).
        let empty = Bench::new();

        let linear = Bench::new();
        let text = linear_rules(n);
        let t = Instant::now();
        let o = linear
            .topo
            .node
            .exec_with_input("iptables-restore", &["--noflush", "-w"], Some(&text))
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let linear_apply = t.elapsed();

        let last = vip(n - 1);
        let mut r: [Vec<f64>; 5] = Default::default();
        // Warm up, then alternate so drift hits all equally.
        for b in [&weir, &linear] {
            for _ in 0..50 {
                b.sample(last);
                b.sample(b.other);
            }
        }
        for _ in 0..50 {
            empty.sample(empty.other);
        }
        for _ in 0..samples {
            r[0].push(weir.sample(last));
            r[1].push(linear.sample(last));
            r[2].push(weir.sample(weir.other));
            r[3].push(linear.sample(linear.other));
            r[4].push(empty.sample(empty.other));
        }
        let [a, b, c, d, e] = r.map(median);
        println!(
            "{n:>9} | {a:>12.1} {b:>12.1} | {c:>12.1} {d:>12.1} | {e:>8.1} {:>8.2} | {:>10} {:>10}   (apply: weir {:.2}s, linear {:.2}s)",
            a / e,
            weir_rules.lines().filter(|l| l.starts_with("-A")).count(),
            text.lines().filter(|l| l.starts_with("-A")).count(),
            weir_apply.as_secs_f64(),
            linear_apply.as_secs_f64()
        );
        rt.detach().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
