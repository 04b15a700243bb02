//! Prometheus metrics: the one renderer behind `weir stats --format
//! prometheus`, `weir stats --serve ADDR` and `weir agent`'s `/metrics`.
//!
//! **Why one module.** The counters a node keeps (per provenance id,
//! enforced and audit; per service and backend on eBPF) are read by
//! `weir stats`, scraped from `weir stats --serve` and from the agent.
//! Each used to render its own text; now all three read a [`Scrape`]
//! ([`read`]) and write it here, with names, types and labels from one
//! catalogue ([`families`]) that docs/metrics.md documents entry by entry
//! (a test holds them together).
//!
//! - [`families`]: every family (name, type, help, labels).
//! - [`text`]: the exposition format 0.0.4 writer.
//! - [`read`]: one scrape of a back end (what `weir stats` reads).
//! - [`serve`]: the minimal HTTP server (`/metrics`; the agent adds its
//!   probes) — std `TcpListener`, a thread per connection, bounded.
//!
//! **Labels.** A rule counter carries its provenance entry's keys from
//! the manifest recorded at apply (`kind`, `action`, `policy`,
//! `direction`, `index` — 1-based, as `rule #N` reads —, `tier`, `steer`,
//! `service`, the `rule` description and source `location`), plus where
//! it was counted (`dataplane`: `ebpf`/`iptables`; `attachment`: the
//! instance, e.g. `veth0` or `netns-blue`). Numbers are never invented:
//! a source that could not be read has no samples and
//! `weir_scrape_error{source}` 1; counters a back end does not keep
//! (service and backend flows on iptables, anything per address family)
//! are not exposed.

pub mod families;
pub mod read;
pub mod serve;
pub mod text;

use std::collections::BTreeMap;

use weir_compiler::contract::ProvenanceEntry;
use weir_runtime::ebpf::{RuleCount, ServiceCount};

use families as f;
pub use text::Text;

/// The bundle in force, from the manifest recorded at apply.
#[derive(Debug, Clone, Default)]
pub struct Bundle {
    pub generation: u64,
    pub source_hash: String,
    pub format_version: u32,
    pub provenance: Vec<ProvenanceEntry>,
}

/// What one scrape of a back end read. `None`: the source could not be
/// read (its error is in `errors`); the renderer then writes no sample
/// of it.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// `ebpf` or `iptables`.
    pub dataplane: &'static str,
    /// The instance counted (`weir status` names it).
    pub attachment: String,
    pub bundle: Option<Bundle>,
    pub rules: Option<Vec<RuleCount>>,
    pub audit: Option<Vec<RuleCount>>,
    /// `Some(empty)` without services; `None` on iptables too (the back
    /// end keeps no flow counters: not a source there, see `sources`).
    pub services: Option<Vec<ServiceCount>>,
    /// The sources this back end keeps (`weir_scrape_error` has a sample
    /// for each): [`SOURCES`] on eBPF, [`IPTABLES_SOURCES`] on iptables.
    pub sources: &'static [&'static str],
    /// Source (`manifest`, `rules`, `audit`, `services`) → message.
    pub errors: BTreeMap<&'static str, String>,
}

/// The sources an eBPF scrape reads, in `weir_scrape_error` order.
pub const SOURCES: &[&str] = &["manifest", "rules", "audit", "services"];
/// The iptables back end keeps no service or backend counters.
pub const IPTABLES_SOURCES: &[&str] = &["manifest", "rules", "audit"];

/// Scrape errors per source since the serving process started.
pub type Tally = BTreeMap<&'static str, u64>;

impl Scrape {
    /// Adds this scrape's errors to `tally`.
    pub fn count_errors(&self, tally: &mut Tally) {
        for s in self.sources {
            let n = tally.entry(s).or_insert(0);
            *n += u64::from(self.errors.contains_key(s));
        }
    }
}

/// The exposition text of `scrape` (`tally`: the error totals, this
/// scrape's included).
pub fn render(scrape: &Scrape, tally: &Tally) -> String {
    let mut t = Text::new();
    write(&mut t, scrape, tally);
    t.finish()
}

/// Writes `scrape` into `t`, one section per family; a new family gets
/// its own section at the end.
pub fn write(t: &mut Text, s: &Scrape, tally: &Tally) {
    let at = [
        ("dataplane", s.dataplane),
        ("attachment", s.attachment.as_str()),
    ];
    let prov = s.bundle.as_ref().map_or(&[][..], |b| &b.provenance[..]);
    rules(t, &f::RULE_PACKETS, &at, prov, s.rules.as_deref());
    rules(t, &f::AUDIT_RULE_PACKETS, &at, prov, s.audit.as_deref());
    services(t, &at, s.services.as_deref());
    bundle(t, &at, s.bundle.as_ref());
    t.family(&f::SCRAPE_ERROR);
    for &src in s.sources {
        t.sample(
            &f::SCRAPE_ERROR,
            &with(&at, &[("source", src)]),
            s.errors.contains_key(src),
        );
    }
    t.family(&f::SCRAPE_ERRORS);
    for &src in s.sources {
        let n = tally.get(src).copied().unwrap_or(0);
        t.sample(&f::SCRAPE_ERRORS, &with(&at, &[("source", src)]), n);
    }
}

fn with<'a>(a: &[(&'a str, &'a str)], b: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    a.iter().chain(b).copied().collect()
}

fn rules(
    t: &mut Text,
    family: &'static f::Family,
    at: &[(&str, &str)],
    prov: &[ProvenanceEntry],
    counts: Option<&[RuleCount]>,
) {
    t.family(family);
    for c in counts.unwrap_or_default() {
        // The manifest is read apart from the counters: a generation
        // applied in between must not lend its labels to the old counts.
        let p = prov
            .get(c.id as usize)
            .filter(|p| p.description == c.description && p.kind.name() == c.kind);
        let id = c.id.to_string();
        let index = p.and_then(|p| p.index).map(|i| (i + 1).to_string());
        let o = |v: Option<&str>| v.unwrap_or_default().to_string();
        let (action, policy, direction, tier, steer, service, location) = match p {
            Some(p) => (
                o(p.action.map(|a| a.name())),
                o(p.policy.as_deref()),
                o(p.direction.map(|d| match d {
                    weir_compiler::contract::DirectionName::Egress => "egress",
                    weir_compiler::contract::DirectionName::Ingress => "ingress",
                })),
                o(p.tier.as_deref()),
                o(p.steer.as_deref()),
                o(p.service.as_deref()),
                o(p.location.as_ref().map(|l| l.at.as_str())),
            ),
            None => Default::default(),
        };
        let labels = with(
            at,
            &[
                ("id", &id),
                ("kind", &c.kind),
                ("action", &action),
                ("policy", &policy),
                ("direction", &direction),
                ("index", index.as_deref().unwrap_or_default()),
                ("tier", &tier),
                ("steer", &steer),
                ("service", &service),
                ("rule", &c.description),
                ("location", &location),
            ],
        );
        t.sample(family, &labels, c.packets);
    }
}

fn services(t: &mut Text, at: &[(&str, &str)], counts: Option<&[ServiceCount]>) {
    let counts = counts.unwrap_or_default();
    t.family(&f::SERVICE_FLOWS);
    for c in counts.iter().filter(|c| c.backend.is_none()) {
        let l = with(at, &[("service", &c.service)]);
        t.sample(&f::SERVICE_FLOWS, &l, c.flows);
    }
    t.family(&f::BACKEND_FLOWS);
    for c in counts {
        if let Some(b) = &c.backend {
            let l = with(at, &[("service", &c.service), ("backend", b)]);
            t.sample(&f::BACKEND_FLOWS, &l, c.flows);
        }
    }
}

fn bundle(t: &mut Text, at: &[(&str, &str)], b: Option<&Bundle>) {
    t.family(&f::BUNDLE_INFO);
    if let Some(b) = b {
        let (g, v) = (b.generation.to_string(), b.format_version.to_string());
        let l = with(
            at,
            &[
                ("generation", &g),
                ("source_hash", &b.source_hash),
                ("format_version", &v),
            ],
        );
        t.sample(&f::BUNDLE_INFO, &l, 1u64);
    }
    let g = b.map_or(0, |b| b.generation);
    t.sample(&f::GENERATION, at, g);
}

#[cfg(test)]
mod tests;
