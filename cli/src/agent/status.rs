//! What the agent tells the outside: readiness, the last decisions, a
//! Kubernetes-Event-like log, and the Prometheus text of `/metrics`.
//!
//! Ready means "this node enforces the cluster's policies as last seen":
//! a generation is in force and the API server answered since the last
//! watch error (a `RELIST` after an `ERROR`). A refused policy keeps the
//! last good generation in force and the agent ready — the node still
//! enforces something well defined — but `weir_agent_refused` is 1, the
//! status says "refused" and a `PolicyRefused` warning is logged.
//!
//! Events are not written to the API server (the agent's role may only
//! get, list and watch): each is one JSON line on standard error, shaped
//! like a Kubernetes Event (type, reason, message, involvedObject), and
//! the last [`KEEP`] are in `/status`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::event::Key;
use super::reconcile::{Decision, Verdict};

/// Records and decisions kept for `/status`.
pub const KEEP: usize = 50;

#[derive(Debug, Clone, Serialize)]
pub struct Record {
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub reason: &'static str,
    pub message: String,
    #[serde(rename = "involvedObject", skip_serializing_if = "Option::is_none")]
    pub involved: Option<BTreeMap<&'static str, String>>,
}

impl Record {
    pub fn normal(reason: &'static str, message: String) -> Record {
        Record {
            ty: "Normal",
            reason,
            message,
            involved: None,
        }
    }

    pub fn warning(reason: &'static str, about: Option<Key>, message: String) -> Record {
        Record {
            ty: "Warning",
            reason,
            message,
            involved: about.map(|k| {
                let mut m = BTreeMap::new();
                m.insert("kind", k.kind);
                if let Some(ns) = k.namespace {
                    m.insert("namespace", ns);
                }
                m.insert("name", k.name);
                m
            }),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Status {
    pub ready: bool,
    /// The generation in force.
    pub generation: Option<u64>,
    /// `false` after a watch error until the next relist.
    pub api_reachable: bool,
    /// The last watch error, while unreachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_error: Option<String>,
    /// The last reconcile was refused: the store holds an object the
    /// import or the compiler refuses.
    pub refused: bool,
    pub last: Option<Decision>,
    /// Reconciles by verdict.
    pub reconciles: BTreeMap<&'static str, u64>,
    /// Objects held, by kind.
    pub objects: BTreeMap<String, usize>,
    pub events: Vec<Record>,
    /// Whether any relist was seen (the agent is not ready before).
    #[serde(skip)]
    listed: bool,
}

impl Status {
    pub fn log(&mut self, r: Record) {
        crate::errln!("{}", serde_json::to_string(&r).unwrap_or_default());
        self.events.push(r);
        if self.events.len() > KEEP {
            self.events.remove(0);
        }
    }

    pub fn relisted(&mut self, _kind: &str) {
        self.listed = true;
        if !self.api_reachable {
            self.api_reachable = true;
            self.api_error = None;
        }
        self.update_ready();
    }

    pub fn unreachable(&mut self, message: &str) {
        self.listed = true;
        if self.api_reachable || self.api_error.is_none() {
            self.log(Record::warning(
                "APIServerUnreachable",
                None,
                format!(
                    "{message}; the generation in force stays, not ready until the watch is back"
                ),
            ));
        }
        self.api_reachable = false;
        self.api_error = Some(message.to_string());
        self.update_ready();
    }

    pub fn decided(&mut self, d: &Decision, objects: BTreeMap<String, usize>) {
        *self.reconciles.entry(d.verdict.name()).or_insert(0) += 1;
        self.generation = d.generation;
        self.refused = d.verdict == Verdict::Refused;
        self.objects = objects;
        self.last = Some(d.clone());
        self.update_ready();
    }

    fn update_ready(&mut self) {
        self.ready = self.listed && self.api_reachable && self.generation.is_some();
    }

    /// The Prometheus text exposition of the agent's own metrics
    /// (families `weir_agent_*` of `crate::metrics::families`).
    pub fn prometheus(&self) -> String {
        use crate::metrics::families as f;
        let mut t = crate::metrics::Text::new();
        t.sample(&f::AGENT_READY, &[], self.ready);
        t.sample(&f::AGENT_API_REACHABLE, &[], self.api_reachable);
        t.sample(&f::AGENT_GENERATION, &[], self.generation.unwrap_or(0));
        t.sample(&f::AGENT_REFUSED, &[], self.refused);
        for v in Verdict::ALL {
            let on = self.last.as_ref().is_some_and(|d| d.verdict == v);
            t.sample(&f::AGENT_LAST_RECONCILE, &[("verdict", v.name())], on);
        }
        t.sample(
            &f::AGENT_LAST_RECONCILE_SECONDS,
            &[],
            self.last.as_ref().map_or(0.0, |d| d.micros as f64 / 1e6),
        );
        for v in Verdict::ALL {
            let n = self.reconciles.get(v.name()).copied().unwrap_or(0);
            t.sample(&f::AGENT_RECONCILES, &[("verdict", v.name())], n);
        }
        t.family(&f::AGENT_OBJECTS);
        for (k, n) in &self.objects {
            t.sample(&f::AGENT_OBJECTS, &[("kind", k)], *n);
        }
        t.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(verdict: Verdict, generation: Option<u64>) -> Decision {
        Decision {
            reconcile: 1,
            verdict,
            generation,
            detail: String::new(),
            changed: Vec::new(),
            micros: 1500,
        }
    }

    #[test]
    fn readiness_and_metrics() {
        let mut s = Status::default();
        assert!(!s.ready);
        s.relisted("Pod");
        assert!(!s.ready, "no generation yet");
        s.decided(&decision(Verdict::Recompile, Some(3)), BTreeMap::new());
        assert!(s.ready);
        s.unreachable("connection refused");
        assert!(!s.ready);
        s.decided(&decision(Verdict::Refused, Some(3)), BTreeMap::new());
        assert!(!s.ready && s.refused);
        s.relisted("Pod");
        assert!(s.ready && s.refused, "a refusal keeps the node ready");
        let m = s.prometheus();
        for line in [
            "weir_agent_ready 1\n",
            "weir_agent_generation 3\n",
            "weir_agent_refused 1\n",
            "weir_agent_last_reconcile{verdict=\"refused\"} 1\n",
            "weir_agent_last_reconcile{verdict=\"recompile\"} 0\n",
            "weir_agent_reconciles_total{verdict=\"recompile\"} 1\n",
            "weir_agent_reconciles_total{verdict=\"refused\"} 1\n",
            "weir_agent_last_reconcile_seconds 0.0015\n",
        ] {
            assert!(m.contains(line), "{line} not in\n{m}");
        }
    }
}
