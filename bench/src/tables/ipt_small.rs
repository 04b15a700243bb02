//! Issue 21, item 5: at 10 services (the services sweep's smallest
//! size), weir's per-flow overhead (with its policies) no worse than
//! kube-proxy's as installed (`Layout::Installed`), for both kinds of
//! client: the off-cluster one, whose flows kube-proxy masquerades, and
//! a pod, whose flows it does not.
//!
//! The two overheads differ by tens of ns, about what this VM's round
//! trips drift by, so the verdict is a statement about the paired rounds
//! (`crate::ipt_rounds`): the median of the rounds' weir − kube-proxy
//! differences and its ≥ 95 % order-statistics interval. Met when the
//! interval lies at or below 0 (weir is no worse), missed when it lies
//! above 0, and "within noise" otherwise: this run cannot tell, and says
//! so rather than reading a sign out of noise. Met only if met for both
//! clients, missed if missed for either.

use crate::report::{Report, Target, Verdict as TV};
use crate::stats::{median_ci, thousands, MedianCi};

use super::iptables::Small;

pub(crate) const TARGET: &str =
    "iptables: overhead at 10 services ≤ kube-proxy's (as installed), off-cluster and pod client";
pub(crate) const GOAL: &str =
    "weir − kube-proxy (as installed) overhead ≤ 0 for both clients (off-cluster, masqueraded by kube-proxy; pod, not masqueraded): paired rounds, met if the ≥ 95 % interval of the median difference is ≤ 0, missed if > 0, else within noise";

/// The verdict of one client's paired differences.
pub(crate) fn verdict(ci: &MedianCi) -> TV {
    if ci.hi <= 0.0 {
        TV::Met
    } else if ci.lo > 0.0 {
        TV::Missed
    } else {
        TV::WithinNoise
    }
}

/// `−20 ns (95 % CI −45 … +8, 20 rounds; 360 vs 380 ns)`.
fn described(ci: &MedianCi, n: usize, weir: f64, kube: f64) -> String {
    format!(
        "{:+.0} ns ({:.0} % CI {:+.0} … {:+.0}, {n} rounds; {weir:.0} vs {kube:.0} ns)",
        ci.median,
        ci.level * 100.0,
        ci.lo,
        ci.hi
    )
}

/// Pushes the target for the off-cluster (`small`) and pod client.
pub(crate) fn target(rep: &mut Report, small: Small, pod: Small) {
    let one = |t: &Small| -> Result<(MedianCi, usize, f64, f64), String> {
        match t {
            Some((10, weir, kube, diffs)) => Ok((median_ci(diffs), diffs.len(), *weir, *kube)),
            Some((n, ..)) => Err(format!("not measured (smallest size {})", thousands(*n))),
            None => Err("failed (see problems)".into()),
        }
    };
    let (measured, verdict) = match (one(&small), one(&pod)) {
        (Ok(o), Ok(p)) => {
            let (vo, vp) = (verdict(&o.0), verdict(&p.0));
            let both = if vo == TV::Missed || vp == TV::Missed {
                TV::Missed
            } else if vo == TV::Met && vp == TV::Met {
                TV::Met
            } else {
                TV::WithinNoise
            };
            (
                format!(
                    "weir − kube-proxy, median of paired rounds: off-cluster {}, {}; pod {}, {}",
                    described(&o.0, o.1, o.2, o.3),
                    vo.plain(),
                    described(&p.0, p.1, p.2, p.3),
                    vp.plain()
                ),
                both,
            )
        }
        (Err(e), _) | (_, Err(e)) if e.starts_with("not measured") => (e, TV::NotMeasured),
        (Err(e), _) | (_, Err(e)) => (e, TV::Missed),
    };
    rep.targets.push(Target {
        name: TARGET.into(),
        goal: GOAL.into(),
        measured,
        verdict,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ci(lo: f64, hi: f64) -> MedianCi {
        MedianCi {
            median: (lo + hi) / 2.0,
            lo,
            hi,
            level: 0.95,
        }
    }

    #[test]
    fn met_missed_or_within_noise() {
        assert_eq!(verdict(&ci(-40.0, -1.0)), TV::Met);
        assert_eq!(verdict(&ci(-40.0, 0.0)), TV::Met);
        assert_eq!(verdict(&ci(1.0, 30.0)), TV::Missed);
        assert_eq!(verdict(&ci(-10.0, 5.0)), TV::WithinNoise);
        assert_eq!(verdict(&ci(0.0, 5.0)), TV::WithinNoise);
    }

    /// Both clients must be met; one missed misses the target.
    #[test]
    fn both_clients() {
        let met: Vec<f64> = (0..20).map(|i| -100.0 - f64::from(i)).collect();
        let noisy: Vec<f64> = (0..20).map(|i| f64::from(i) - 10.0).collect();
        let worse: Vec<f64> = (0..20).map(|i| 50.0 + f64::from(i)).collect();
        let run = |a: &Vec<f64>, b: &Vec<f64>| {
            let mut rep = Report::default();
            target(
                &mut rep,
                Some((10, 300.0, 400.0, a.clone())),
                Some((10, 300.0, 400.0, b.clone())),
            );
            rep.targets.remove(0).verdict
        };
        assert_eq!(run(&met, &met), TV::Met);
        assert_eq!(run(&met, &noisy), TV::WithinNoise);
        assert_eq!(run(&noisy, &worse), TV::Missed);
    }
}
