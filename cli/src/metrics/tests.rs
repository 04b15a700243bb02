//! The renderer against documents and a parser we did not write: every
//! family it can emit is documented in docs/metrics.md (type and labels
//! included), every metric the Grafana dashboard queries exists there,
//! and a full scrape parses with the `prometheus-parse` crate to the
//! numbers put in.

use std::collections::{BTreeMap, BTreeSet};

use weir_compiler::contract::{
    ActionName, DirectionName, Location, ProvenanceEntry, ProvenanceKind,
};
use weir_runtime::ebpf::{RuleCount, ServiceCount};

use super::families::{Type, ALL};
use super::*;

fn repo_file(rel: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// docs/metrics.md's table rows: name → (type, labels).
fn documented() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let doc = repo_file("docs/metrics.md");
    let mut out = BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `name` | type | `l1`, `l2` | meaning |
        if cells.len() < 6 || !cells[1].starts_with("`weir_") {
            continue;
        }
        let name = cells[1].trim_matches('`').to_string();
        let labels = cells[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_string())
            .filter(|l| !l.is_empty() && l != "—")
            .collect();
        out.insert(name, (cells[2].to_string(), labels));
    }
    out
}

#[test]
fn every_family_is_documented() {
    let doc = documented();
    for f in ALL {
        let Some((ty, labels)) = doc.get(f.name) else {
            panic!("{} is not in docs/metrics.md's table", f.name);
        };
        assert_eq!(ty, f.ty.name(), "{}: documented type", f.name);
        let want: BTreeSet<String> = f.labels.iter().map(|l| l.to_string()).collect();
        assert_eq!(labels, &want, "{}: documented labels", f.name);
        assert!(
            f.ty != Type::Counter || f.name.ends_with("_total"),
            "{}: a counter's name ends in _total",
            f.name
        );
    }
    let known: BTreeSet<&str> = ALL.iter().map(|f| f.name).collect();
    for name in doc.keys() {
        assert!(
            known.contains(name.as_str()),
            "docs/metrics.md documents {name}, which weir never emits"
        );
    }
}

fn entry(id: u32, kind: ProvenanceKind) -> ProvenanceEntry {
    ProvenanceEntry {
        action: None,
        description: format!("entry {id}"),
        direction: None,
        id,
        index: None,
        kind,
        location: None,
        policy: None,
        service: None,
        steer: None,
        tier: None,
    }
}

/// A scrape with a sample of every family a back end scrape writes.
fn full_scrape() -> Scrape {
    let mut rule = entry(1, ProvenanceKind::Rule);
    rule.action = Some(ActionName::Deny);
    rule.policy = Some("db-in".into());
    rule.direction = Some(DirectionName::Ingress);
    rule.index = Some(2);
    rule.tier = Some("default".into());
    rule.location = Some(Location {
        at: "a.weir:7:5".into(),
    });
    rule.description = "db-in ingress rule #3".into();
    let count = |id: u32, kind: &str, d: &str, packets| RuleCount {
        id,
        kind: kind.into(),
        description: d.into(),
        packets,
    };
    Scrape {
        dataplane: "ebpf",
        attachment: "veth0".into(),
        bundle: Some(Bundle {
            generation: 4,
            source_hash: "ab".repeat(32),
            format_version: 3,
            provenance: vec![entry(0, ProvenanceKind::Established), rule],
        }),
        rules: Some(vec![
            count(0, "established", "entry 0", 11),
            count(1, "rule", "db-in ingress rule #3", 5),
        ]),
        audit: Some(vec![count(1, "rule", "db-in ingress rule #3", 2)]),
        services: Some(vec![
            ServiceCount {
                service: "api".into(),
                backend: None,
                flows: 9,
            },
            ServiceCount {
                service: "api".into(),
                backend: Some("10.0.0.5:8080".into()),
                flows: 9,
            },
        ]),
        sources: SOURCES,
        errors: BTreeMap::from([("services", "no map".to_string())]),
    }
}

#[test]
fn a_full_scrape_parses_with_an_independent_parser() {
    let s = full_scrape();
    let mut tally = Tally::new();
    s.count_errors(&mut tally);
    s.count_errors(&mut tally);
    let text = render(&s, &tally);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("parses");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let found: Vec<_> = parsed
            .samples
            .iter()
            .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?} in\n{text}");
        match found[0].value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    let rule = [
        ("dataplane", "ebpf"),
        ("attachment", "veth0"),
        ("id", "1"),
        ("kind", "rule"),
        ("action", "deny"),
        ("policy", "db-in"),
        ("direction", "ingress"),
        ("index", "3"),
        ("tier", "default"),
        ("rule", "db-in ingress rule #3"),
        ("location", "a.weir:7:5"),
    ];
    assert_eq!(value("weir_rule_packets_total", &rule), 5.0);
    assert_eq!(
        value("weir_rule_packets_total", &[("kind", "established")]),
        11.0
    );
    assert_eq!(value("weir_audit_rule_packets_total", &rule), 2.0);
    assert_eq!(
        value("weir_service_flows_total", &[("service", "api")]),
        9.0
    );
    assert_eq!(
        value("weir_backend_flows_total", &[("backend", "10.0.0.5:8080")]),
        9.0
    );
    let hash = "ab".repeat(32);
    assert_eq!(
        value(
            "weir_bundle_info",
            &[
                ("generation", "4"),
                ("source_hash", &hash),
                ("format_version", "3")
            ]
        ),
        1.0
    );
    assert_eq!(value("weir_generation", &[]), 4.0);
    assert_eq!(value("weir_scrape_error", &[("source", "services")]), 1.0);
    assert_eq!(value("weir_scrape_error", &[("source", "rules")]), 0.0);
    assert_eq!(
        value("weir_scrape_errors_total", &[("source", "services")]),
        2.0
    );
    // Every family of a back-end scrape is there, with its type, and
    // nothing that is not in the catalogue.
    let emitted: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let backend: BTreeSet<&str> = ALL
        .iter()
        .map(|f| f.name)
        .filter(|n| !n.starts_with("weir_agent_"))
        .collect();
    assert_eq!(emitted, backend);
    for f in ALL.iter().filter(|f| backend.contains(f.name)) {
        assert!(text.contains(&format!("# TYPE {} {}\n", f.name, f.ty.name())));
    }
}

/// Prometheus' own parser and linter (`promtool check metrics`, Debian
/// package `prometheus`; scripts/test installs it) accepts a scrape whose
/// labels need every escape (prometheus-parse, above, splits label
/// values on `,` and does not unescape, so it cannot check these).
#[test]
fn promtool_accepts_the_exposition() {
    use std::io::Write;
    let mut s = full_scrape();
    let b = s.bundle.as_mut().unwrap();
    b.provenance[1].policy = Some("a \"quoted\", back\\slashed\nname".into());
    s.rules.as_mut().unwrap()[1].description = "x, y = \"z\"".into();
    let mut tally = Tally::new();
    s.count_errors(&mut tally);
    let text = render(&s, &tally);
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("promtool is needed under CI=true (scripts/test installs it): {e}")
        }
        Err(e) => {
            eprintln!("skipped: no promtool ({e})");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn labels_of_another_generation_are_not_lent() {
    let mut s = full_scrape();
    s.rules.as_mut().unwrap()[1].description = "web-out egress rule #1".into();
    let text = render(&s, &Tally::new());
    let line = text
        .lines()
        .find(|l| l.starts_with("weir_rule_packets_total{") && l.contains("id=\"1\""))
        .unwrap();
    assert!(
        !line.contains("policy=") && line.contains("rule=\"web-out egress rule #1\""),
        "{line}"
    );
}

#[test]
fn iptables_has_no_service_source() {
    let mut s = full_scrape();
    s.dataplane = "iptables";
    s.services = None;
    s.sources = IPTABLES_SOURCES;
    s.errors.clear();
    let text = render(&s, &Tally::new());
    assert!(!text.contains("source=\"services\""), "{text}");
    assert!(!text.contains("weir_service_flows_total{"), "{text}");
    assert!(text.contains("source=\"audit\"} 0\n"), "{text}");
}

#[test]
fn a_failed_source_has_no_samples_not_zeros() {
    let mut s = full_scrape();
    s.rules = None;
    s.errors.insert("rules", "denied".into());
    let text = render(&s, &Tally::new());
    assert!(!text.contains("weir_rule_packets_total{"), "{text}");
    assert!(text.contains("# TYPE weir_rule_packets_total counter\n"));
    assert!(text.contains(
        "weir_scrape_error{dataplane=\"ebpf\",attachment=\"veth0\",source=\"rules\"} 1\n"
    ));
}

#[test]
fn the_agent_metrics_parse_and_are_in_the_catalogue() {
    let s = crate::agent::status::Status::default();
    let text = s.prometheus();
    let parsed =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
    assert!(parsed
        .samples
        .iter()
        .any(|x| x.metric == "weir_agent_ready"));
    let known: BTreeSet<&str> = ALL.iter().map(|f| f.name).collect();
    for l in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = l.split_whitespace().next().unwrap_or_default();
        assert!(known.contains(name), "{name}");
    }
}

/// The PromQL expressions of the dashboard query only documented metrics
/// (and each panel has one).
#[test]
fn the_grafana_dashboard_queries_documented_metrics() {
    let text = repo_file("deploy/grafana/weir-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(
        dash["schemaVersion"].as_u64().unwrap_or(0) >= 36,
        "schemaVersion"
    );
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(
        vars.iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "a Prometheus datasource variable"
    );
    let doc = documented();
    for v in vars.iter().filter(|v| v["type"] == "query") {
        for n in metric_names(v["definition"].as_str().unwrap_or_default()) {
            assert!(
                doc.contains_key(&n),
                "{n} (variable {}) is not in docs/metrics.md",
                v["name"]
            );
        }
    }
    let panels = dash["panels"].as_array().expect("panels");
    let mut exprs = 0;
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: targets", p["title"]));
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            let e = t["expr"].as_str().expect("expr");
            exprs += 1;
            let names = metric_names(e);
            assert!(!names.is_empty(), "{e}");
            for n in names {
                assert!(
                    doc.contains_key(&n),
                    "{n} (in {e}) is not in docs/metrics.md"
                );
            }
        }
    }
    assert!(exprs >= 6, "{exprs} expressions");
}

/// `weir_…` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("weir_") {
        let start = i + at;
        let before_ok =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        if before_ok {
            out.insert(expr[start..end].to_string());
        }
        i = end;
    }
    out
}
