//! The JSON (docs/schemas/diff.json) and SARIF forms of a diff.
//!
//! SARIF follows `weir check --format sarif` (diagnostics/sarif.rs): one
//! run, relative URIs through [`SarifLog::uri`], 1-based lines and UTF-16
//! columns. The rules are the three kinds of change; each row is a result
//! located at the rule that decides it in NEW (else in OLD), with the
//! other side's rule as a related location.

use super::text::{row_message, service_message};
use super::Program;
use serde_json::{json, Value};
use weir_compiler::diagnostics::sarif::{SarifLog, SCHEMA};
use weir_compiler::diff::compare::Decision;
use weir_compiler::diff::services::FrontendSide;
use weir_compiler::diff::{Diff, Summary};
use weir_compiler::interp::explain::{proto_name, prov_json};
use weir_compiler::interp::{verdict_name, Interp};
use weir_grammar::Span;

fn ranges<T: Copy + serde::Serialize>(rs: &[(T, T)]) -> Value {
    rs.iter()
        .map(|&(lo, hi)| json!({ "lo": lo, "hi": hi }))
        .collect()
}

fn decision(d: &Decision, interp: &Interp, p: &Program) -> Value {
    let locate = |s: Span| p.locate(s);
    json!({
        "verdict": verdict_name(d.verdict()),
        "decided_by": prov_json(interp, &d.by, &locate),
    })
}

fn backend(b: &weir_compiler::model::Backend) -> Value {
    json!({
        "addr": b.addr.to_string(),
        "port": b.port,
        "weight": b.weight,
        "endpoint": b.endpoint,
    })
}

fn side(s: &Option<FrontendSide>) -> Value {
    match s {
        None => Value::Null,
        Some(s) => json!({
            "service": s.service,
            "balance": if s.maglev { "maglev" } else { "random" },
            "backends": s.backends.iter().map(backend).collect::<Vec<_>>(),
        }),
    }
}

pub fn summary_name(s: Summary) -> &'static str {
    match s {
        Summary::Same => "same",
        Summary::AllowsMore => "allows-more",
        Summary::DeniesMore => "denies-more",
    }
}

/// `weir diff --format json`.
pub fn report(d: &Diff, old: &Program, new: &Program) -> Value {
    let io = Interp::new(&old.checked.model);
    let inw = Interp::new(&new.checked.model);
    let groups: Vec<Value> = d
        .groups
        .iter()
        .map(|g| {
            json!({
                "name": g.name,
                "endpoints": g.endpoints,
                "partial": g.partial.iter().map(|(n, a)| json!({ "endpoint": n, "addr": a.to_string() })).collect::<Vec<_>>(),
                "cidrs": g.cidrs.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                "other": g.other,
                "frontend": g.frontend.as_ref().map(|(a, s)| json!({ "addr": a.to_string(), "services": s })),
            })
        })
        .collect();
    let changes: Vec<Value> = d
        .changes
        .iter()
        .map(|c| {
            json!({
                "from": c.src,
                "to": c.dst,
                "from_name": d.names(&c.src),
                "to_name": d.names(&c.dst),
                "proto": c.proto.name(),
                "ports": ranges(&c.ports),
                "icmp_types": ranges(&c.icmp_types),
                "icmp_codes": ranges(&c.icmp_codes),
                "change": if c.allows_more() { "allowed" } else { "denied" },
                "old": decision(&c.old, &io, old),
                "new": decision(&c.new, &inw, new),
                "via": c.via.iter().map(|v| json!({
                    "old": v.old.as_ref().map(backend),
                    "new": v.new.as_ref().map(backend),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let services: Vec<Value> = d
        .services
        .iter()
        .map(|s| {
            json!({
                "frontend": {
                    "addr": s.frontend.addr.to_string(),
                    "port": s.frontend.port,
                    "proto": proto_name(s.frontend.proto),
                },
                "adds": s.adds(),
                "old": side(&s.old),
                "new": side(&s.new),
            })
        })
        .collect();
    json!({
        "old": old.label,
        "new": new.label,
        "summary": summary_name(d.summary()),
        "groups": groups,
        "changes": changes,
        "services": services,
    })
}

const RULES: [(&str, &str, &str); 3] = [
    (
        "weir-diff/now-allowed",
        "A connection the old program denied is allowed",
        "warning",
    ),
    (
        "weir-diff/now-denied",
        "A connection the old program allowed is denied",
        "note",
    ),
    (
        "weir-diff/service",
        "A service frontend's translation changed",
        "note",
    ),
];

fn location(log: &SarifLog, p: &Program, span: Span) -> Value {
    let file = p.checked.sources.file(span.file);
    let mut name = file.name();
    if let Some(dir) = &p.strip {
        if let Some(rest) = name.strip_prefix(&format!("{}/", dir.display())) {
            name = rest.to_string();
        }
    }
    let (sl, sc) = file.line_col_utf16(span.start as usize);
    let (el, ec) = file.line_col_utf16(span.end as usize);
    json!({
        "physicalLocation": {
            "artifactLocation": { "uri": log.uri(&name) },
            "region": {
                "startLine": sl + 1,
                "startColumn": sc + 1,
                "endLine": el + 1,
                "endColumn": ec + 1,
            }
        }
    })
}

/// `weir diff --format sarif`.
pub fn sarif(d: &Diff, old: &Program, new: &Program) -> String {
    let cwd = std::env::current_dir().ok();
    let log = SarifLog::new(
        env!("CARGO_PKG_VERSION"),
        cwd.as_ref().and_then(|c| c.to_str()),
    );
    let mut results = Vec::new();
    for c in &d.changes {
        let rule = usize::from(!c.allows_more());
        let sites: Vec<Value> = [(new, &c.new), (old, &c.old)]
            .into_iter()
            .filter_map(|(p, dec)| dec.by.span(&p.checked.model).map(|s| location(&log, p, s)))
            .collect();
        let mut r = json!({
            "ruleId": RULES[rule].0,
            "ruleIndex": rule,
            "level": RULES[rule].2,
            "message": { "text": row_message(d, c, old, new) },
        });
        if let Some((first, rest)) = sites.split_first() {
            r["locations"] = json!([first]);
            if !rest.is_empty() {
                let related: Vec<Value> = rest
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        let mut l = l.clone();
                        l["id"] = json!(i);
                        l["message"] = json!({ "text": "the rule that decided before" });
                        l
                    })
                    .collect();
                r["relatedLocations"] = Value::Array(related);
            }
        }
        results.push(r);
    }
    for s in &d.services {
        let mut r = json!({
            "ruleId": RULES[2].0,
            "ruleIndex": 2,
            "level": RULES[2].2,
            "message": { "text": service_message(s) },
        });
        let span = new
            .checked
            .model
            .services
            .iter()
            .find(|x| x.frontends.contains(&s.frontend))
            .map(|x| (new, x.span))
            .or_else(|| {
                old.checked
                    .model
                    .services
                    .iter()
                    .find(|x| x.frontends.contains(&s.frontend))
                    .map(|x| (old, x.span))
            });
        if let Some((p, span)) = span {
            r["locations"] = json!([location(&log, p, span)]);
        }
        results.push(r);
    }
    let rules: Vec<Value> = RULES
        .iter()
        .map(|(id, text, level)| {
            json!({
                "id": id,
                "shortDescription": { "text": text },
                "defaultConfiguration": { "level": level },
            })
        })
        .collect();
    let v = json!({
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": { "name": "weir", "version": env!("CARGO_PKG_VERSION"), "rules": rules } },
            "columnKind": "utf16CodeUnits",
            "results": results,
        }]
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}
