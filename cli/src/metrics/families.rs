//! Every metric family weir exposes, in one table: name, type, help and
//! the labels it may carry. The text writer ([`super::text`]) takes only
//! a `&Family` from here, so nothing can be emitted that is not listed;
//! `docs/metrics.md` documents each entry, and a test
//! (`metrics::tests::every_family_is_documented`) holds the two together.
//!
//! **Adding a family** (e.g. the verdict-event counters of `weir
//! monitor`): add a `pub static` here and to [`ALL`], document it in
//! docs/metrics.md, read its numbers into [`super::Scrape`] and write it
//! in [`super::render`] — its own section, after the existing ones.

/// A Prometheus metric type (text format 0.0.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Counter,
    Gauge,
}

impl Type {
    pub fn name(self) -> &'static str {
        match self {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
        }
    }
}

/// One metric family.
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    pub ty: Type,
    pub help: &'static str,
    /// Every label a sample may carry (a sample omits those that do not
    /// apply to it).
    pub labels: &'static [&'static str],
}

/// The labels of a per-rule counter (enforced or audit): where it is
/// counted, then the provenance entry's own keys (docs/bundle.md).
const RULE_LABELS: &[&str] = &[
    "dataplane",
    "attachment",
    "id",
    "kind",
    "action",
    "policy",
    "direction",
    "index",
    "tier",
    "steer",
    "service",
    "rule",
    "location",
];

pub static RULE_PACKETS: Family = Family {
    name: "weir_rule_packets_total",
    ty: Type::Counter,
    help: "Packets decided (or logged, for a log rule) by each provenance id of the generation in force.",
    labels: RULE_LABELS,
};

pub static AUDIT_RULE_PACKETS: Family = Family {
    name: "weir_audit_rule_packets_total",
    ty: Type::Counter,
    help: "Packets each audit decision would have decided (counted, never enforced).",
    labels: RULE_LABELS,
};

pub static SERVICE_FLOWS: Family = Family {
    name: "weir_service_flows_total",
    ty: Type::Counter,
    help: "New flows (TC) and connect-time rewrites per service (eBPF back end).",
    labels: &["dataplane", "attachment", "service"],
};

pub static BACKEND_FLOWS: Family = Family {
    name: "weir_backend_flows_total",
    ty: Type::Counter,
    help: "New flows (TC) and connect-time rewrites per service backend (eBPF back end).",
    labels: &["dataplane", "attachment", "service", "backend"],
};

pub static BUNDLE_INFO: Family = Family {
    name: "weir_bundle_info",
    ty: Type::Gauge,
    help: "1 for the bundle in force; its labels name it.",
    labels: &[
        "dataplane",
        "attachment",
        "generation",
        "source_hash",
        "format_version",
    ],
};

pub static GENERATION: Family = Family {
    name: "weir_generation",
    ty: Type::Gauge,
    help: "The generation in force (0: nothing applied or unreadable).",
    labels: &["dataplane", "attachment"],
};

pub static SCRAPE_ERROR: Family = Family {
    name: "weir_scrape_error",
    ty: Type::Gauge,
    help: "1 when this scrape could not read the source (its numbers are missing, not zero).",
    labels: &["dataplane", "attachment", "source"],
};

pub static SCRAPE_ERRORS: Family = Family {
    name: "weir_scrape_errors_total",
    ty: Type::Counter,
    help: "Scrapes that could not read the source, since the serving process started.",
    labels: &["dataplane", "attachment", "source"],
};

pub static AGENT_READY: Family = Family {
    name: "weir_agent_ready",
    ty: Type::Gauge,
    help: "1 when a generation is in force and the API server is reachable.",
    labels: &[],
};

pub static AGENT_API_REACHABLE: Family = Family {
    name: "weir_agent_api_reachable",
    ty: Type::Gauge,
    help: "0 after a watch error until the next relist.",
    labels: &[],
};

pub static AGENT_GENERATION: Family = Family {
    name: "weir_agent_generation",
    ty: Type::Gauge,
    help: "The generation in force (0: none).",
    labels: &[],
};

pub static AGENT_REFUSED: Family = Family {
    name: "weir_agent_refused",
    ty: Type::Gauge,
    help: "1 while the import or the compiler refuses the cluster's objects (the last good generation stays in force).",
    labels: &[],
};

pub static AGENT_LAST_RECONCILE: Family = Family {
    name: "weir_agent_last_reconcile",
    ty: Type::Gauge,
    help: "The verdict of the last reconcile (1 for the verdict that was taken).",
    labels: &["verdict"],
};

pub static AGENT_LAST_RECONCILE_SECONDS: Family = Family {
    name: "weir_agent_last_reconcile_seconds",
    ty: Type::Gauge,
    help: "Wall time of the last reconcile.",
    labels: &[],
};

pub static AGENT_RECONCILES: Family = Family {
    name: "weir_agent_reconciles_total",
    ty: Type::Counter,
    help: "Reconciles by verdict.",
    labels: &["verdict"],
};

pub static AGENT_OBJECTS: Family = Family {
    name: "weir_agent_objects",
    ty: Type::Gauge,
    help: "Watched objects held, by kind.",
    labels: &["kind"],
};

/// Every family, in the order a scrape writes them.
pub static ALL: &[&Family] = &[
    &RULE_PACKETS,
    &AUDIT_RULE_PACKETS,
    &SERVICE_FLOWS,
    &BACKEND_FLOWS,
    &BUNDLE_INFO,
    &GENERATION,
    &SCRAPE_ERROR,
    &SCRAPE_ERRORS,
    &AGENT_READY,
    &AGENT_API_REACHABLE,
    &AGENT_GENERATION,
    &AGENT_REFUSED,
    &AGENT_LAST_RECONCILE,
    &AGENT_LAST_RECONCILE_SECONDS,
    &AGENT_RECONCILES,
    &AGENT_OBJECTS,
];
