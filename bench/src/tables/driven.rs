//! The headline eBPF table (issue 21): new and established flows through
//! the test driver ([`crate::driver`]) — every repetition of a "new" row
//! is a fresh 5-tuple on the restored packet, so a new allowed flow pays
//! its conntrack insert and a new service flow its translation inserts —
//! beside the floors driven the same way, all in the interleaved rounds
//! of the other eBPF tables; then the LRU tables' fill read back from the
//! kernel after the run.

use weir_compiler::interp::Packet;
use weir_compiler::model::Verdict;

use crate::driver;
use crate::ebpf::{self, Costs, LoadedWeir, Subject};
use crate::report::{Report, Table, Target, Verdict as TV};
use crate::stats::{ns, ratio, thousands};

/// The rows of the headline table, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    NewAllowed,
    NewAllowed6,
    NewService,
    DeniedFrontend,
    DeniedDeepest,
    Established,
    Established6,
    EstablishedService,
}

impl Path {
    const ALL: [Path; 8] = [
        Path::NewAllowed,
        Path::NewAllowed6,
        Path::NewService,
        Path::DeniedFrontend,
        Path::DeniedDeepest,
        Path::Established,
        Path::Established6,
        Path::EstablishedService,
    ];

    fn label(self) -> &'static str {
        match self {
            Path::NewAllowed => "new allowed flow (conntrack insert), by rules",
            Path::NewAllowed6 => "new allowed flow, IPv6 (the same flow's twin), by rules",
            Path::NewService => {
                "new flow to a service (translation + conntrack inserts), by services"
            }
            Path::DeniedFrontend => "new flow denied, to a frontend port, by services",
            Path::DeniedDeepest => "new flow denied after all rules, by rules",
            Path::Established => "established flow, by rules",
            Path::Established6 => "established flow, IPv6, by rules",
            Path::EstablishedService => "established flow to a service, by services",
        }
    }

    /// A fresh source port each repetition.
    fn rotates(self) -> bool {
        !matches!(
            self,
            Path::Established | Path::Established6 | Path::EstablishedService
        )
    }
}

/// One flow a case drives.
#[derive(Debug, Clone)]
pub(crate) struct Flow {
    pub(crate) path: Path,
    pub(crate) packet: Packet,
    pub(crate) verdict: Verdict,
}

impl Flow {
    /// A new-flow row and, for an allowed one, its established row (the
    /// same flow from source port 1000, below every rotating port).
    pub(crate) fn pair(
        new: Path,
        est: Option<Path>,
        packet: Packet,
        verdict: Verdict,
    ) -> Vec<Flow> {
        let mut out = vec![Flow {
            path: new,
            packet: packet.clone(),
            verdict,
        }];
        if let Some(est) = est {
            let mut p = packet;
            p.sport = 1000;
            out.push(Flow {
                path: est,
                packet: p,
                verdict,
            });
        }
        out
    }
}

/// One case's drivers: per load, one subject per flow.
pub(crate) struct Driven {
    pub(crate) subjects: Vec<Subject>,
    flows: Vec<Flow>,
}

fn want(v: Verdict) -> u32 {
    use weir_compiler::ebpf::layout;
    match v {
        Verdict::Allow => layout::TC_ACT_OK as u32,
        Verdict::Deny => layout::TC_ACT_SHOT as u32,
    }
}

/// Drivers for `flows` on every load of `w`.
pub(crate) fn drive(
    w: &LoadedWeir,
    flows: Vec<Flow>,
    repeat: u32,
    fresh: u32,
) -> Result<Driven, String> {
    let mut subjects = Vec::new();
    for s in &w.subjects {
        for f in &flows {
            subjects.push(driver::drive(
                s.ebpf(),
                weir_compiler::ebpf::layout::MAIN_PROGRAM,
                f.path.label(),
                weir_runtime::frames::frame(&f.packet),
                f.path.rotates(),
                if f.path.rotates() { fresh } else { repeat },
            )?);
        }
    }
    Ok(Driven { subjects, flows })
}

/// The floors driven (restore only, no rotation): empty, parse + hash,
/// parse + LPM + hash, per baseline load.
pub(crate) fn drive_floors(base: &[[Subject; 3]], repeat: u32) -> Result<Vec<Subject>, String> {
    let names = ["bench_empty", "bench_lookup", "bench_lpm_hash"];
    let mut out = Vec::new();
    for load in base {
        for (s, name) in load.iter().zip(names) {
            out.push(driver::drive(
                s.ebpf(),
                name,
                name,
                s.frame(0).to_vec(),
                false,
                repeat,
            )?);
        }
    }
    Ok(out)
}

/// Per path: (ns, verdict as expected), the median over loads.
pub(crate) type PathCosts = Vec<(Path, f64, bool)>;

impl Driven {
    pub(crate) fn costs(&self, costs: &[Result<Costs, String>]) -> Result<PathCosts, String> {
        let n = self.flows.len();
        let mut out = Vec::new();
        for (i, f) in self.flows.iter().enumerate() {
            let loads: Vec<Result<Costs, String>> =
                costs.iter().skip(i).step_by(n.max(1)).cloned().collect();
            let c = ebpf::across_loads(&loads)?;
            let (v, ret) = c.first().copied().ok_or("not measured")?;
            out.push((f.path, v, ret == want(f.verdict)));
        }
        Ok(out)
    }
}

/// The LRU tables' fill after the run, read back from the first load:
/// `weir_ct 60,001 / 524,288 (11 %)`, one per table present.
pub(crate) fn fill(w: &LoadedWeir) -> String {
    use weir_compiler::ebpf::layout::{map, service::map as lb};
    let Some(s) = w.subjects.first() else {
        return "–".into();
    };
    let mut parts = Vec::new();
    for (name, key) in [(map::CT4, 16), (map::CT, 40), (lb::CT, 40), (lb::REV, 40)] {
        let Some((_, max, _)) = w.maps.iter().find(|m| m.0 == name) else {
            continue;
        };
        parts.push(match driver::entries(s.ebpf(), name, key) {
            Ok(n) => format!(
                "{name} {} / {} ({:.1} %)",
                thousands(n),
                thousands(*max as usize),
                100.0 * n as f64 / f64::from(*max)
            ),
            Err(e) => format!("{name}: {e}"),
        });
    }
    parts.join("; ")
}

/// The driven floors' costs (ns): empty, parse + hash, parse + LPM +
/// hash, medians over loads.
pub(crate) fn floors(costs: &[Result<Costs, String>]) -> Result<[f64; 3], String> {
    let one = |i: usize| -> Result<f64, String> {
        let loads: Vec<Result<Costs, String>> = costs.iter().skip(i).step_by(3).cloned().collect();
        Ok(ebpf::across_loads(&loads)?.first().ok_or("not measured")?.0)
    };
    Ok([one(0)?, one(1)?, one(2)?])
}

/// One column of the headline table: a size and, per sweep, the case's
/// path costs and LRU fill there.
pub(crate) struct Column {
    pub(crate) size: usize,
    pub(crate) rules: Option<Result<(PathCosts, String), String>>,
    pub(crate) svcs: Option<Result<(PathCosts, String), String>>,
}

/// How the headline was measured (for its note).
pub(crate) struct Effort {
    pub(crate) repeat: u32,
    pub(crate) fresh: u32,
    pub(crate) runs: usize,
    pub(crate) loads: usize,
}

/// Pushes the headline table.
pub(crate) fn table(
    rep: &mut Report,
    floors: Result<[f64; 3], String>,
    direct: &ebpf::Baselines,
    cols: &[Column],
    e: Effort,
) {
    let Effort {
        repeat,
        fresh,
        runs,
        loads,
    } = e;
    let mut header = vec!["path (ns per packet, median)".to_string()];
    header.extend(cols.iter().map(|c| format!("N = {}", thousands(c.size))));
    let hdr: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = Table::new(
        "eBPF headline: new and established flows through the test driver (BPF_PROG_TEST_RUN, ns)",
        &hdr,
    );
    let lpm = floors.as_ref().map(|f| f[2]).unwrap_or(f64::NAN);
    t.note(format!(
        "Every packet goes through a test driver (a TC program built with weir's assembler) that restores the original frame and, for the \"new\" rows, writes a fresh source port each repetition, then tail-calls weir's program: every repetition of a new-flow row is a new 5-tuple ({} repetitions per round, no port used twice), every repetition of an established row the same flow ({} repetitions). Rows \"by rules\" are measured on the rules sweep (N rules, 10 services), rows \"by services\" on the services sweep (N services of 5 backends, 100 rules); N that a sweep does not have is \"–\". Each cell: ns and its ratio to the driven parse + LPM + hash floor. Measured in the same {} interleaved rounds as the tables below, {} loads each, median over loads of the medians of rounds.",
        thousands(fresh as usize),
        thousands(repeat as usize),
        runs,
        loads
    ));
    match &floors {
        Ok(f) => t.note(format!(
            "Floors in this run, through the same driver: empty program {} ns, parse + hash {} ns, parse + LPM + hash {} ns (without the driver: {} / {} / {} ns; the driver's own cost is the difference).",
            ns(f[0]), ns(f[1]), ns(f[2]), ns(direct.empty), ns(direct.one_lookup), ns(direct.lpm_hash)
        )),
        Err(e) => t.note(format!("Driven floors not measured: {e}")),
    }
    t.note("The IPv6 rows drive the new allowed and the established flow's twin in the other family on the same program: both endpoints of the flow have an IPv6 address too (`fd00::` + the IPv4 address), so the same rules judge it; an IPv6 packet without extension headers.");
    t.note("The new service flow comes from an extra endpoint `bench-open` (egress: any TCP) to the last TCP service whose backend's ingress allows it; the denied one from `bench-client` (egress: tcp/1 only) to the same kind of frontend, denied at its egress default after the translation lookup. The new allowed flow is the deepest allowed endpoint-to-endpoint flow of the rules model; the denied-after-all-rules flow a client outside the cluster to a port no rule of the destination names.");
    for p in Path::ALL {
        let mut row = vec![p.label().to_string()];
        for c in cols {
            let sweep = match p {
                Path::NewAllowed
                | Path::NewAllowed6
                | Path::DeniedDeepest
                | Path::Established
                | Path::Established6 => &c.rules,
                _ => &c.svcs,
            };
            row.push(match sweep {
                None => "–".into(),
                Some(Err(e)) => format!("error: {}", crate::stats::short(e)),
                Some(Ok((costs, _))) => match costs.iter().find(|x| x.0 == p) {
                    Some((_, v, true)) => format!("{} ({})", ns(*v), ratio(*v, lpm)),
                    Some((_, v, false)) => format!("{} (wrong verdict!)", ns(*v)),
                    None => "no such flow".into(),
                },
            });
        }
        t.row(row);
    }
    for (label, pick) in [
        ("table fill after the run, rules model", 0),
        ("table fill after the run, services model", 1),
    ] {
        let mut row = vec![label.to_string()];
        for c in cols {
            let sweep = if pick == 0 { &c.rules } else { &c.svcs };
            row.push(match sweep {
                Some(Ok((_, fill))) => fill.clone(),
                _ => "–".into(),
            });
        }
        t.row(row);
    }
    targets(rep, lpm, cols, fresh);
    for c in cols {
        for (s, what) in [(&c.rules, "rules"), (&c.svcs, "services")] {
            if let Some(Err(e)) = s {
                rep.problems
                    .push(format!("eBPF driven, {} {what}: {e}", thousands(c.size)));
            }
        }
    }
    rep.tables.push(t);
}

/// Issue 21's targets, as ratios to the driven parse + LPM + hash floor
/// (absolute figures drift between runs): the peer's new service flow was
/// ~30× its floor (1,886–2,132 ns against 66 ns), its new allowed flow
/// ~17–20× (1,116–1,334 ns); the goals are half and 1/2.5 of that, at
/// N = 10,000.
fn targets(rep: &mut Report, floor: f64, cols: &[Column], fresh: u32) {
    let at = |path: Path| -> Option<f64> {
        let c = cols.iter().find(|c| c.size == 10_000)?;
        let sweep = match path {
            Path::NewAllowed => &c.rules,
            _ => &c.svcs,
        };
        let (costs, _) = sweep.as_ref()?.as_ref().ok()?;
        costs.iter().find(|x| x.0 == path && x.2).map(|x| x.1)
    };
    // A quick run's few repetitions claim nothing.
    let claims = fresh >= 10_000;
    for (path, name, goal, max) in [
        (
            Path::NewService,
            "eBPF (issue 21): new flow to a service, 10,000 services, vs driven parse + LPM + hash",
            "≤ 15× (half the peer's ~30×)",
            15.0,
        ),
        (
            Path::NewAllowed,
            "eBPF (issue 21): new allowed flow, 10,000 rules, vs driven parse + LPM + hash",
            "≤ 7× (1/2.5 of the peer's ~17–20×)",
            7.0,
        ),
    ] {
        let v = at(path);
        rep.targets.push(Target {
            name: name.into(),
            goal: goal.into(),
            measured: v.map_or("not measured".into(), |v| {
                format!("{} ({} vs {} ns)", ratio(v, floor), ns(v), ns(floor))
            }),
            verdict: match v {
                Some(v) if claims && floor.is_finite() => TV::from(Some(v / floor <= max)),
                _ => TV::NotMeasured,
            },
        });
    }
}
