//! In-language tests: each `expect` line becomes a packet, the interpreter
//! decides it, and the result is compared with what the line expects.

use super::{Interp, Outcome, Packet};
use crate::model::{Endpoint, Expect, Model, Proto, Test, TestPeer, Verdict};
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
        labels: labels.clone(),
        addrs: vec![peer.addr],
        ready: true,
        span: None,
    })
}

/// The packet an `expect` line describes. Source ports are fixed (40000)
/// so that results are reproducible.
pub fn expect_packet(e: &Expect) -> Packet {
    let mut p = Packet::new(e.proto, e.from.addr, 40000, e.to.addr, e.port);
    if e.proto == Proto::Icmp {
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

fn run_one(model: &Model, test: &Test, e: &Expect) -> ExpectResult {
    let extra = synthetic_endpoints(e);
    let interp = Interp::with_extra(model, extra);
    let packet = expect_packet(e);
    let outcome = interp.evaluate(&packet);
    let mut failure = None;
    if outcome.verdict != e.verdict {
        failure = Some(format!(
            "expected {}, got {} (decided by {})",
            verdict_name(e.verdict),
            verdict_name(outcome.verdict),
            outcome.decided_by.describe(model)
        ));
    } else if let Some(by) = &e.by {
        let owner = outcome.decided_by.owner_name(model);
        if &owner != by {
            failure = Some(format!(
                "expected the decision by {by}, but it was made by {}",
                outcome.decided_by.describe(model)
            ));
        }
    }
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
