//! Ablation harness for the iptables per-flow path at N services (issue
//! 21, item 5): builds the services sweep's model of N services (the
//! bench's `services_params`), starts its backends in a client — node —
//! server topology, applies weir's bundle with the runtime, and then
//!
//! - `dump DIR`: writes the node's `iptables-save` (weir, with the
//!   bench's baseline bypass rules) to `DIR/weir.rules` and kube-proxy's
//!   layout to `DIR/kube.rules`, for editing into variants, the sets
//!   (`ipset save`) to `DIR/weir.sets`, kube-proxy with its filter
//!   FORWARD rules to `DIR/kube-fwd.rules` and kube-proxy's nat beside
//!   weir's filter table (kube-proxy plus weir's policy stage) to
//!   `DIR/kube-pol.rules`, and what kube-proxy installs
//!   (`weir_bench::kube_proxy`, `Layout::Installed`) to
//!   `DIR/kube-installed.rules`;
//! - `measure ROUNDS PROBES FILE…`: the services table's interleaved
//!   rounds (`weir_bench::ipt_rounds`): per round, for each FILE in turn
//!   (the order rotating), `iptables-restore`s it (the sets of weir's
//!   bundle stay loaded) and measures the last UDP service's and 8 random
//!   ones' paired overhead against the baseline client; prints per round
//!   and the median over rounds, and after each file's first round the
//!   packet counters of its MASQUERADE rules.
//!
//! Environment: `SERVICES` (default 10), `SEED` (default 9), `CLIENT`
//! (`pod` for the pod client `flows::POD_CLIENT`; default the off-cluster
//! `flows::CLIENT`).

use std::net::{IpAddr, SocketAddr};

use weir_bench::ipt_rounds;
use weir_bench::iptables as ipt;
use weir_bench::kube_proxy::{self, Layout};
use weir_compiler::model::{Proto, Verdict};

/// Empty raw, mangle and filter tables (nat comes with kube-proxy's
/// nat-only rules).
const EMPTY: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";

/// `*TABLE` … `COMMIT` of an `iptables-save` text.
fn block<'a>(save: &'a str, table: &str) -> &'a str {
    let start = save.find(&format!("*{table}\n")).expect("table");
    let end = start + save[start..].find("COMMIT\n").expect("COMMIT") + "COMMIT\n".len();
    &save[start..end]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = std::env::var("SERVICES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(9);
    let plan = weir_bench::Plan::new(false, seed);
    let params = plan.services_params(n, seed);
    let model = weir_compiler::synth::model(&params);
    let compiled = weir_compiler::graph::compile(&model);
    let client: IpAddr = match std::env::var("CLIENT").as_deref() {
        Ok("pod") => weir_bench::flows::POD_CLIENT.into(),
        _ => weir_bench::flows::CLIENT.into(),
    };
    let allowed: Vec<(usize, weir_bench::flows::Flow)> =
        weir_bench::flows::service_flows(&model, Proto::Udp, client)
            .into_iter()
            .filter(|(_, f)| f.verdict == Verdict::Allow)
            .collect();
    let (last_i, last) = allowed.last().cloned().expect("an allowed UDP service");
    let mut rng = weir_compiler::gen::Rng::new(seed ^ 0xbe7c);
    let mut random: Vec<(usize, weir_bench::flows::Flow)> = (0..8.min(allowed.len()))
        .map(|_| allowed[rng.below(allowed.len())].clone())
        .collect();
    random.sort_by_key(|r| r.0);
    random.dedup_by_key(|r| r.0);
    let resolved = ipt::resolved_services(&model);
    let backends_of = |i: usize| -> Vec<SocketAddr> {
        resolved[i]
            .3
            .iter()
            .map(|&(a, p)| SocketAddr::new(a, p))
            .collect()
    };
    let mut all = Vec::new();
    for i in std::iter::once(last_i).chain(random.iter().map(|r| r.0)) {
        all.extend(resolved[i].3.iter().copied());
    }
    let sock = |p: &weir_compiler::interp::Packet| SocketAddr::new(p.dst, p.dport);
    let direct = backends_of(last_i);
    let direct_rand: Vec<Vec<SocketAddr>> = random.iter().map(|r| backends_of(r.0)).collect();
    let last_sock = sock(&last.packet);
    let random_socks: Vec<SocketAddr> = random.iter().map(|r| sock(&r.1.packet)).collect();
    eprintln!("last: {} ({})", last.what, last_sock);

    let v = weir_runtime::iptables::Variant::Legacy;
    let topo = weir_runtime::netns::Topology::new().expect("netns");
    ipt::serve_backends(&topo, Proto::Udp, &all).expect("servers");
    let dir = ipt::Scratch::new("ablate");
    ipt::write_bundle(&model, &compiled.graph, &dir.0.join("bundle")).expect("bundle");
    let rt = ipt::runtime(&topo, &dir.0.join("state"), v);
    ipt::apply(&rt, &dir.0.join("bundle")).expect("apply");
    ipt::bypass(&topo, v).expect("bypass");
    match args.first().map(String::as_str) {
        Some("dump") => {
            let out = std::path::PathBuf::from(&args[1]);
            std::fs::create_dir_all(&out).expect("dir");
            let save = topo
                .node
                .exec("iptables-legacy-save", &[])
                .expect("iptables-save");
            std::fs::write(out.join("weir.rules"), &save.stdout).expect("write");
            let weir_save = String::from_utf8_lossy(&save.stdout).into_owned();
            let sets = topo.node.exec("ipset", &["save"]).expect("ipset save");
            std::fs::write(out.join("weir.sets"), &sets.stdout).expect("write");
            // kube-proxy's layout alone: the other tables emptied (the
            // sets stay, for the weir variants).
            let (kube, _) = kube_proxy::rules(&model, Layout::NatOnly);
            ipt::restore(&topo, v, &format!("{EMPTY}{kube}")).expect("kube");
            ipt::bypass(&topo, v).expect("bypass");
            let save = topo
                .node
                .exec("iptables-legacy-save", &[])
                .expect("iptables-save");
            std::fs::write(out.join("kube.rules"), &save.stdout).expect("write");
            let kube_save = String::from_utf8_lossy(&save.stdout).into_owned();
            let kube_filter = block(&kube_save, "filter");
            // kube-proxy's nat beside weir's filter table: kube-proxy
            // with weir's policy stage, the floor of a layout that
            // enforces policy.
            let pol = kube_save.replace(kube_filter, block(&weir_save, "filter"));
            std::fs::write(out.join("kube-pol.rules"), pol).expect("write");
            // kube-proxy's nat and its filter FORWARD rules.
            let fwd = kube_filter
                .replacen(
                    "*filter\n",
                    &format!("*filter\n{}", kube_proxy::FILTER_CHAINS),
                    1,
                )
                .replacen(
                    "COMMIT\n",
                    &format!("{}COMMIT\n", kube_proxy::FORWARD_RULES),
                    1,
                );
            let fwd = kube_save.replace(kube_filter, &fwd);
            std::fs::write(out.join("kube-fwd.rules"), fwd).expect("write");
            // What kube-proxy installs (the bench's as-installed layout).
            let (inst, _) = kube_proxy::rules(&model, Layout::Installed);
            ipt::flush(&topo, v).expect("flush");
            ipt::restore(&topo, v, &inst).expect("kube installed");
            ipt::bypass(&topo, v).expect("bypass");
            let save = topo
                .node
                .exec("iptables-legacy-save", &[])
                .expect("iptables-save");
            std::fs::write(out.join("kube-installed.rules"), &save.stdout).expect("write");
        }
        Some("measure") => {
            let rounds: usize = args[1].parse().expect("rounds");
            let probes: usize = args[2].parse().expect("probes");
            let files = &args[3..];
            let texts: Vec<String> = files
                .iter()
                .map(|f| std::fs::read_to_string(f).expect("rules file"))
                .collect();
            // The bench's rounds (`weir_bench::ipt_rounds`): the order
            // rotates each round and a first round is dropped.
            let last_socks = [last_sock];
            let arms = [
                ipt_rounds::Arm {
                    bases: std::slice::from_ref(&direct),
                    dsts: &last_socks,
                    n: probes,
                },
                ipt_rounds::Arm {
                    bases: &direct_rand,
                    dsts: &random_socks,
                    n: probes / 2,
                },
            ];
            let on = ipt_rounds::On {
                topo: &topo,
                proto: Proto::Udp,
                client,
            };
            // Read-back of the SNAT a layout did: the counters of its
            // MASQUERADE rules (kube-proxy's as-installed layout
            // masquerades the off-cluster client's flows), once per file.
            let mut shown = vec![false; files.len()];
            let mut masq = |k: usize| {
                if !std::mem::replace(&mut shown[k], true) {
                    if let Ok(o) = topo.node.exec("iptables-legacy-save", &["-c", "-t", "nat"]) {
                        for l in String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .filter(|l| l.contains("-j MASQUERADE"))
                        {
                            println!("  {}: {l}", files[k]);
                        }
                    }
                }
                Ok(())
            };
            let mut put = |k: usize| ipt::restore(&topo, v, &texts[k]);
            // As the bench: idle vCPUs poll while the round trips run.
            let _no_halt = weir_bench::NoIdleHalt::request().expect("/dev/cpu_dma_latency");
            let m = ipt_rounds::interleaved(&on, texts.len(), &mut put, &arms, rounds, &mut masq)
                .expect("rounds");
            for (k, f) in files.iter().enumerate() {
                let (last, rand) = (&m[k].rounds[0], &m[k].rounds[1]);
                for (r, (a, b)) in last.iter().zip(rand).enumerate() {
                    println!("round {r} {f:<40} last {a:>6.0} random {b:>6.0} ns");
                }
                let p = m[k].pairs[0];
                if p.test.failed > p.test.n / 10 {
                    eprintln!("{f}: {} of {} probes failed", p.test.failed, p.test.n);
                }
            }
            println!("median over {rounds} rounds (ns): last / random");
            for (k, f) in files.iter().enumerate() {
                println!(
                    "{:<40} {:>6.0} / {:>6.0}",
                    f, m[k].pairs[0].overhead, m[k].pairs[1].overhead
                );
            }
            // Paired with the second file round by round (only paired
            // differences are meaningful on this VM): each file's overhead
            // minus the second's in the same round, summed up as the
            // 10-service target does (`stats::median_ci`).
            if files.len() > 1 {
                println!(
                    "paired differences with {} (ns): median (interval) last / random",
                    files[1]
                );
                for (k, f) in files.iter().enumerate() {
                    let paired = |arm: usize| {
                        let d: Vec<f64> = m[k].rounds[arm]
                            .iter()
                            .zip(&m[1].rounds[arm])
                            .map(|(a, b)| a - b)
                            .collect();
                        let ci = weir_bench::stats::median_ci(&d);
                        format!("{:.0} ({:.0} … {:.0})", ci.median, ci.lo, ci.hi)
                    };
                    println!("{:<40} {} / {}", f, paired(0), paired(1));
                }
            }
        }
        _ => eprintln!("usage: ipt_ablate dump DIR | measure ROUNDS PROBES FILE…"),
    }
    drop(rt);
}
