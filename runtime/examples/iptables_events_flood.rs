//! What verdict events cost the iptables data path under a flood of
//! denied packets (docs/events-iptables.md, "Flood bound and loss").
//!
//! One program (the database isolated: everything from a stranger is
//! denied by its isolation default) compiled four ways and applied in the
//! node namespace in turn: events off; events on with nobody reading the
//! group; events on (default limit, 100/s per rule) with a reader
//! draining them; and events on with the limit as high as x_tables allows (10,000/s) and
//! a reader — what the limit saves. Each round sends `PACKETS` UDP
//! datagrams from the client to a denied port, one socket, as fast as it
//! can: every datagram is a new conntrack entry (the previous one was
//! dropped unconfirmed), so each walks the policy to the deny leaf and its
//! event rule. On a veth pair the forwarding runs in the sender's softirq,
//! so the sender's time per datagram includes the node's work. Rounds of
//! the four set-ups alternate; medians are printed, and the overhead of
//! each over events off. Finally a reader that does not read during the
//! flood (limit 10,000/s) shows what the socket loses and that the reader
//! counts it (`dropped`).
//!
//! Run as root: `cargo run --release -p weir-runtime --example
//! iptables_events_flood` (`PACKETS=N`, `ROUNDS=N` to change the sizes).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_compiler::bundle::{bundle, BundleInput, Target};
use weir_compiler::check::check_program;
use weir_compiler::graph;
use weir_compiler::iptables::Events;
use weir_compiler::source::MemoryLoader;
use weir_runtime::events::nflog::NflogSource;
use weir_runtime::events::EventSource;
use weir_runtime::iptables::{Iptables, Options};
use weir_runtime::netns::Topology;
use weir_runtime::Bundle;

const PROGRAM: &str = r#"
endpoint web { labels { app: "web" } addr 10.1.0.1 }
endpoint db  { labels { app: "db" }  addr 10.2.0.1 }
policy db-in {
  applies to app == "db"
  ingress { allow tcp 5432 from app == "web" }
}
"#;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn write_bundle(dir: &Path, events: Option<Events>) -> Bundle {
    let loader = MemoryLoader::new().with("main.weir", PROGRAM);
    let c = check_program(&[PathBuf::from("main.weir")], &loader, None);
    assert!(!c.has_errors(), "{:?}", c.diagnostics);
    let model = c.model;
    let g = graph::build(&model);
    let opts = weir_compiler::iptables::Options {
        events,
        ..Default::default()
    };
    let art = weir_compiler::iptables::generate_with(&g, &model, &opts).unwrap();
    let mut backends = BTreeMap::new();
    backends.insert(Target::Iptables, art);
    let sources = vec![("main.weir".to_string(), PROGRAM.to_string())];
    let files = bundle(&BundleInput {
        model: &model,
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

/// Nanoseconds per datagram for `n` datagrams from `sock`.
fn flood(sock: &UdpSocket, n: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        let _ = sock.send(b"flood");
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// A reader draining the group on its own thread until `stop`.
fn drain(mut src: NflogSource, stop: Arc<AtomicBool>, read: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Ok(Some(_)) = src.next_event(Duration::from_millis(50)) {
                read.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

fn main() {
    let packets = env("PACKETS", 100_000);
    let rounds = env("ROUNDS", 15);
    let work = weir_runtime::kernel_test::state_dir("ipt-events-flood").unwrap();
    let lifted = Events {
        rate: weir_compiler::iptables::MAX_RATE,
        burst: weir_compiler::iptables::MAX_RATE,
        ..Events::default()
    };
    let setups: [(&str, Option<Events>, bool); 4] = [
        ("events off", None, false),
        ("events on, no reader", Some(Events::default()), false),
        ("events on, reader", Some(Events::default()), true),
        ("limit 10000/s, reader", Some(lifted), true),
    ];
    let bundles: Vec<Bundle> = setups
        .iter()
        .enumerate()
        .map(|(i, s)| write_bundle(&work.join(format!("b{i}")), s.1))
        .collect();
    let topo = Topology::new().unwrap();
    let rt = Iptables::new(Options::netns(topo.node.name()).with_state_dir(work.join("state")));
    let src: IpAddr = "10.9.0.9".parse().unwrap();
    let db: IpAddr = "10.2.0.1".parse().unwrap();
    topo.add_client_addr(src).unwrap();
    topo.add_server_addr(db).unwrap();
    let sock = topo
        .client
        .run(move || UdpSocket::bind(SocketAddr::new(src, 40000)))
        .unwrap()
        .unwrap();
    sock.connect(SocketAddr::new(db, 5432)).unwrap();
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    let mut events_read = vec![0u64; setups.len()];
    for _ in 0..rounds {
        for (i, (_, _, reader)) in setups.iter().enumerate() {
            rt.apply(&bundles[i]).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let read = Arc::new(AtomicU64::new(0));
            if *reader {
                let s = topo.node.run(|| NflogSource::open(100)).unwrap().unwrap();
                drain(s, stop.clone(), read.clone());
            }
            flood(&sock, packets / 10); // warm up
            ns[i].push(flood(&sock, packets));
            std::thread::sleep(Duration::from_millis(100));
            stop.store(true, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
            events_read[i] += read.load(Ordering::Relaxed);
        }
    }
    println!("{packets} denied UDP datagrams per round, {rounds} rounds; ns per datagram: median, and median over rounds of the difference to events off in the same round:");
    for (i, (name, _, _)) in setups.iter().enumerate() {
        let mut diffs: Vec<f64> = ns[i].iter().zip(&ns[0]).map(|(a, b)| a - b).collect();
        let d = median(&mut diffs);
        let m = median(&mut ns[i].clone());
        println!(
            "  {name:<24} {m:>8.0} ns  ({d:+.0} ns; {} events read in all)",
            events_read[i]
        );
    }
    // A reader that does not read during a longer flood: the socket
    // overruns. A new generation first (events off, then the 10,000/s
    // one), so its rules start with full token buckets.
    rt.apply(&bundles[0]).unwrap();
    rt.apply(&bundles[3]).unwrap();
    let mut slow = topo.node.run(|| NflogSource::open(100)).unwrap().unwrap();
    flood(&sock, packets * 4);
    let mut read = 0u64;
    while let Ok(Some(_)) = slow.next_event(Duration::from_millis(200)) {
        read += 1;
    }
    // One more record after the flood reveals the sequence gap.
    flood(&sock, 1);
    while let Ok(Some(_)) = slow.next_event(Duration::from_millis(200)) {
        read += 1;
    }
    println!(
        "slow reader, limit 10000/s: {} sent, {read} events read, {} counted as dropped",
        packets * 4 + 1,
        slow.dropped().unwrap()
    );
    rt.detach().unwrap();
    let _ = std::fs::remove_dir_all(work);
}
