//! Interleaved rounds of iptables layouts in one namespace set: how the
//! services table compares weir's rules with kube-proxy's on the same
//! flows, so that the comparison is decided by the rules and not by when
//! each layout happened to be measured.
//!
//! Before, each layout was measured alone, one after the other (~0.2 s
//! each), and weir's overhead was compared with kube-proxy's measured a
//! second earlier. This VM's round-trip time drifts by more than the
//! difference being measured (tens of ns at 10 services): in 16 runs of
//! the 10-services pod-client row the difference of the two overheads
//! spread from −104 to +13 ns and its sign flipped in 3 of them.
//!
//! Now each layout is saved once (`iptables-save` of the node after it is
//! in force, with the baseline client's bypass, [`snapshot`]), and every
//! round restores each saved layout in turn (`iptables-restore`, a few
//! ms; the sets weir's rules name stay in the kernel while another layout
//! is in force) and measures it with [`iptables::measure_pair`] (its own
//! warm-up, then batches alternating with the baseline client). The
//! caller puts a layout in force (`put`): with a single round it may set
//! each up when its turn comes instead, as the services table does at
//! sizes where the layouts are µs apart and a save and restore of
//! kube-proxy's rules would cost seconds. The order of the
//! layouts rotates from round to round, so that no layout always follows
//! the same one, and the first round is dropped (the servers' first
//! wake-ups, caches). Each round yields one overhead per layout, measured
//! within milliseconds of the others': the rounds' differences between
//! two layouts are paired samples, and their median with an
//! order-statistics interval ([`crate::stats::median_ci`]) says whether
//! one layout is cheaper or the run cannot tell.

use std::net::{IpAddr, SocketAddr};

use weir_compiler::model::Proto;
use weir_runtime::bundle::Family;
use weir_runtime::iptables::Variant;
use weir_runtime::netns::Topology;

use crate::iptables::{self, Pair, Rtt};
use crate::stats::median;

/// What each layout is measured with every round: `n` probes from the
/// client to `dsts`, paired with baseline probes to `bases` (`bases[i]`:
/// where the flows to `dsts[i]` end up; [`iptables::measure_pair`]).
#[derive(Debug, Clone, Copy)]
pub struct Arm<'a> {
    pub bases: &'a [Vec<SocketAddr>],
    pub dsts: &'a [SocketAddr],
    pub n: usize,
}

/// Where the layouts are measured: the namespaces, the probes' protocol
/// and client address.
#[derive(Clone, Copy)]
pub struct On<'a> {
    pub topo: &'a Topology,
    pub proto: Proto,
    pub client: IpAddr,
}

/// One layout's figures, per arm (in the order of the arms given).
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// The overhead (ns) of each kept round.
    pub rounds: Vec<Vec<f64>>,
    /// Medians over the kept rounds of each round's baseline median, test
    /// median and overhead; failures and probes summed.
    pub pairs: Vec<Pair>,
}

/// The node's tables as `iptables-save` prints them (every table in use):
/// the text that puts this layout back in force.
pub fn snapshot(topo: &Topology, v: Variant) -> Result<String, String> {
    let out = topo
        .node
        .exec(&v.save(Family::Ipv4), &[])
        .map_err(|e| format!("iptables-save: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "iptables-save: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Measures `layouts` layouts in `rounds` interleaved rounds, plus a
/// first round that is dropped when there is more than one. `put(l)`
/// puts layout `l` in force (restores its [`snapshot`]; with one round the
/// caller may set it up from scratch instead); `after(l)` runs after
/// layout `l`'s probes of each round, with that layout still in force (to
/// read its counters back).
pub fn interleaved(
    on: &On,
    layouts: usize,
    put: &mut dyn FnMut(usize) -> Result<(), String>,
    arms: &[Arm],
    rounds: usize,
    after: &mut dyn FnMut(usize) -> Result<(), String>,
) -> Result<Vec<Measured>, String> {
    let On {
        topo,
        proto,
        client,
    } = *on;
    let dropped = usize::from(rounds > 1);
    // [layout][arm] → the kept rounds' pairs.
    let mut got: Vec<Vec<Vec<Pair>>> = vec![vec![Vec::new(); arms.len()]; layouts];
    for r in 0..rounds + dropped {
        for j in 0..layouts {
            let l = (r + j) % layouts;
            put(l)?;
            for (a, arm) in arms.iter().enumerate() {
                // The first round warms the servers and routes up; later
                // ones only the layout just restored.
                let warm_up = if r == 0 { 5 } else { 1 };
                let p = iptables::measure_pair_warmed(
                    topo, proto, arm.bases, client, arm.dsts, arm.n, warm_up,
                );
                if r >= dropped {
                    got[l][a].push(p);
                }
            }
            after(l)?;
        }
    }
    // Fail closed: a layout without a kept round would read as "–".
    if got.iter().flatten().any(|ps| ps.is_empty()) {
        return Err(format!(
            "interleaved rounds: a layout has no measured round ({rounds} rounds)"
        ));
    }
    Ok(got
        .into_iter()
        .map(|per_arm| Measured {
            rounds: per_arm
                .iter()
                .map(|ps| ps.iter().map(|p| p.overhead).collect())
                .collect(),
            pairs: per_arm.iter().map(|ps| pooled(ps)).collect(),
        })
        .collect())
}

/// The medians over rounds of one arm's pairs.
fn pooled(ps: &[Pair]) -> Pair {
    let rtt = |f: fn(&Pair) -> Rtt| Rtt {
        median: median(&ps.iter().map(|p| f(p).median).collect::<Vec<_>>()),
        failed: ps.iter().map(|p| f(p).failed).sum(),
        n: ps.iter().map(|p| f(p).n).sum(),
    };
    Pair {
        base: rtt(|p| p.base),
        test: rtt(|p| p.test),
        overhead: median(&ps.iter().map(|p| p.overhead).collect::<Vec<_>>()),
    }
}

/// Round by round, `a`'s overhead minus `b`'s (paired: the same round).
pub fn differences(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}
