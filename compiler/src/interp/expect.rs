//! In-language tests: each `expect` line becomes a packet, the interpreter
//! decides it, and the result is compared with what the line expects.
//!
//! A packet sent to a service with several usable backends is judged once
//! per backend: the data path's choice (random, or Maglev over a source
//! port the test does not fix) is not the test's to make. The line holds
//! when it holds for every backend, or for the one `via BACKEND` names.
//! When the backends disagree and no `via` is written, the line fails and
//! says which backend gives what.

use super::explain::steer_text;
use super::{BackendChoice, Interp, Outcome, Packet};
use crate::model::{Endpoint, Expect, Model, Test, TestPeer, Verdict};
use crate::provenance::Provenance;
use serde::Serialize;

/// The result of one `expect` line.
#[derive(Debug, Clone, Serialize)]
pub struct ExpectResult {
    pub test: String,
    pub expect: Expect,
    pub packet: Packet,
    pub outcome: Outcome,
    /// Why it failed, or None when it passed.
    pub failure: Option<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct TestReport {
    pub results: Vec<ExpectResult>,
}

impl TestReport {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.failure.is_none()).count()
    }
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }
}

fn synthetic(peer: &TestPeer, n: usize) -> Option<Endpoint> {
    peer.synthetic_labels.as_ref().map(|labels| Endpoint {
        name: format!("test-endpoint-{n}"),
        labels: labels.clone().into(),
        addrs: vec![peer.addr],
        ready: true,
        span: None,
    })
}

/// The packet an `expect` line describes. Source ports are fixed (40000)
/// so that results are reproducible.
pub fn expect_packet(e: &Expect) -> Packet {
    let mut p = Packet::new(e.proto, e.from.addr, 40000, e.to.addr, e.port);
    if e.proto.is_icmp() {
        p.sport = 0;
        p.icmp_type = e.icmp_type;
        p.icmp_code = e.icmp_code;
    }
    p.state = e.state;
    p.at = e.at;
    p
}

/// The synthetic endpoints (label-map peers) an `expect` line brings.
pub fn synthetic_endpoints(e: &Expect) -> Vec<Endpoint> {
    [synthetic(&e.from, 1), synthetic(&e.to, 2)]
        .into_iter()
        .flatten()
        .collect()
}

/// The backend choices to judge `packet` under: those `via` names, or
/// every usable backend of the service it reaches (by hash otherwise).
fn choices(interp: &Interp, e: &Expect, packet: &Packet) -> Vec<(Option<String>, BackendChoice)> {
    let Some(hit) = interp.service_hit(packet, BackendChoice::ByHash) else {
        return vec![(None, BackendChoice::ByHash)];
    };
    let chosen: Vec<_> = hit
        .candidates
        .iter()
        .filter(|b| {
            e.via
                .as_ref()
                .is_none_or(|v| v.addr == b.addr && v.port.is_none_or(|p| p == b.port))
        })
        .collect();
    if chosen.is_empty() || (chosen.len() == 1 && e.via.is_none()) {
        return vec![(None, BackendChoice::ByHash)];
    }
    chosen
        .into_iter()
        .map(|b| {
            let name = match &b.endpoint {
                Some(n) => format!("{n} ({}:{})", b.addr, b.port),
                None => format!("{}:{}", b.addr, b.port),
            };
            (Some(name), BackendChoice::Pinned(b.addr, b.port))
        })
        .collect()
}

/// Why `outcome` does not meet `e`, if it does not.
fn judge(model: &Model, e: &Expect, outcome: &Outcome) -> Option<String> {
    if outcome.verdict != e.verdict {
        return Some(format!(
            "expected {}, got {} (decided by {})",
            verdict_name(e.verdict),
            verdict_name(outcome.verdict),
            outcome.decided_by.describe(model)
        ));
    }
    if let Some(want) = &e.steering {
        let got = outcome.steering.as_ref().map(|s| &s.action);
        if got != Some(want) {
            return Some(format!(
                "expected steering `{}`, got {}",
                steer_text(want),
                got.map_or("no steering action".to_string(), |a| format!(
                    "`{}`",
                    steer_text(a)
                ))
            ));
        }
    }
    if let Some(f) = judge_by(
        model,
        e.by.as_ref(),
        e.by_kind,
        &outcome.decided_by,
        "decision",
    ) {
        return Some(f);
    }
    let want = e.audit.as_ref()?;
    // Without audit policies (or before step 4) the audit verdict is the
    // enforced one (language.md §4, "Audit policies").
    let (verdict, by) = outcome
        .audit
        .as_ref()
        .map_or((outcome.verdict, outcome.decided_by), |a| {
            (a.verdict, a.decided_by)
        });
    if verdict != want.verdict {
        return Some(format!(
            "expected audit {}, got audit {} (would be decided by {})",
            verdict_name(want.verdict),
            verdict_name(verdict),
            by.describe(model)
        ));
    }
    judge_by(model, want.by.as_ref(), want.by_kind, &by, "audit decision")
}

/// Why `by` (of kind `kind`) did not make the decision `decided`, if not.
fn judge_by(
    model: &Model,
    by: Option<&String>,
    kind: Option<weir_grammar::ast::ByKind>,
    decided: &Provenance,
    what: &str,
) -> Option<String> {
    let by = by?;
    let owner = decided.owner_name(model);
    let kind_ok = kind.is_none_or(|k| owner_kind(decided) == Some(k));
    if &owner != by || !kind_ok {
        return Some(format!(
            "expected the {what} by {by}, but it was made by {}",
            decided.describe(model)
        ));
    }
    None
}

/// The kind of declaration a decision belongs to (None: a default).
fn owner_kind(p: &Provenance) -> Option<weir_grammar::ast::ByKind> {
    use weir_grammar::ast::ByKind;
    match p {
        Provenance::Rule { .. } => Some(ByKind::Policy),
        Provenance::Bypass { .. } => Some(ByKind::Steer),
        Provenance::NoBackends { .. } => Some(ByKind::Service),
        _ => None,
    }
}

fn run_one(model: &Model, test: &Test, e: &Expect) -> ExpectResult {
    let extra = synthetic_endpoints(e);
    let interp = Interp::with_extra(model, extra);
    let packet = expect_packet(e);
    let judged: Vec<(Option<String>, Outcome, Option<String>)> = choices(&interp, e, &packet)
        .into_iter()
        .map(|(name, choice)| {
            let outcome = interp.evaluate_with(&packet, choice);
            let failure = judge(model, e, &outcome);
            (name, outcome, failure)
        })
        .collect();
    let failing = judged.iter().position(|j| j.2.is_some());
    let passing = judged.iter().any(|j| j.2.is_none());
    let failure = match failing {
        None => None,
        Some(i) if passing && e.via.is_none() => {
            let per: Vec<String> = judged
                .iter()
                .map(|(name, o, _)| {
                    format!(
                        "{} via {}",
                        verdict_name(o.verdict),
                        name.as_deref().unwrap_or("?")
                    )
                })
                .collect();
            Some(format!(
                "the result depends on the backend the service picks ({}): {}; say which with `via BACKEND`",
                per.join(", "),
                judged[i].2.as_deref().unwrap_or_default()
            ))
        }
        Some(i) => judged[i].2.clone().map(|f| match &judged[i].0 {
            Some(name) if judged.len() > 1 || e.via.is_some() => format!("via {name}: {f}"),
            _ => f,
        }),
    };
    let shown = failing.unwrap_or(0);
    let outcome = judged
        .into_iter()
        .nth(shown)
        .map(|j| j.1)
        .expect("at least one choice");
    ExpectResult {
        test: test.name.clone(),
        expect: e.clone(),
        packet,
        outcome,
        failure,
    }
}

pub fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
    }
}

/// Run every `expect` of every test in the model.
pub fn run_tests(model: &Model) -> TestReport {
    let mut report = TestReport::default();
    for t in &model.tests {
        for e in &t.expects {
            report.results.push(run_one(model, t, e));
        }
    }
    report
}
