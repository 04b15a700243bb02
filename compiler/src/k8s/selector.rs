//! Kubernetes label selectors as weir selectors, and the reserved label
//! keys that carry what the language has no concept for yet.
//!
//! A Namespace is a weir namespace (`ns_NAME`, its labels its own) and
//! each pod endpoint names it, so a `namespaceSelector` is the weir test
//! `namespace(…)` of the namespace's labels — a namespace relabel is one
//! inventory entry, not a label on every pod. Every pod endpoint also
//! carries its namespace's name and its own name as labels under the
//! prefix `k8s:` (a `:` never occurs in a Kubernetes label key, so these
//! never collide with the pod's own labels), as Cilium does:
//!
//! | label | value |
//! |---|---|
//! | `k8s:io.kubernetes.pod.namespace` | the pod's namespace |
//! | `k8s:io.kubernetes.pod.name` | the pod's name |
//!
//! A selector is kept twice: as weir text for the program, and as data
//! the importer can evaluate itself (named ports and services resolve
//! against the pods a selector matches).

use super::cluster::{Cluster, Pod};
use super::objects::{unknown, LabelSelector};
use std::collections::BTreeMap;

pub const NS_KEY: &str = "k8s:io.kubernetes.pod.namespace";
pub const NAME_KEY: &str = "k8s:io.kubernetes.pod.name";

/// A weir string literal.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The conjuncts of one label selector over labels prefixed by `prefix`,
/// or the unsupported field (`path.…`).
pub fn conjuncts(sel: &LabelSelector, prefix: &str, path: &str) -> Result<Vec<String>, String> {
    if let Some(f) = unknown(&sel.rest, path) {
        return Err(f);
    }
    let mut out = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        out.push(format!(
            "{} == {}",
            quote(&format!("{prefix}{k}")),
            quote(v)
        ));
    }
    for (i, r) in sel.match_expressions.iter().flatten().enumerate() {
        let here = format!("{path}.matchExpressions[{i}]");
        if let Some(f) = unknown(&r.rest, &here) {
            return Err(f);
        }
        let key = quote(&format!("{prefix}{}", r.key));
        let values = r.values.clone().unwrap_or_default();
        let list = || {
            let v: Vec<String> = values.iter().map(|v| quote(v)).collect();
            format!("{{{}}}", v.join(", "))
        };
        match r.operator.as_str() {
            "In" if !values.is_empty() => out.push(format!("{key} in {}", list())),
            "NotIn" if !values.is_empty() => out.push(format!("{key} not in {}", list())),
            "Exists" if values.is_empty() => out.push(format!("has({key})")),
            "DoesNotExist" if values.is_empty() => out.push(format!("!has({key})")),
            _ => return Err(format!("{here}.operator")),
        }
    }
    Ok(out)
}

/// Whether `labels` satisfy `sel` (the Kubernetes meaning, which the weir
/// text of [`conjuncts`] has too: NotIn and DoesNotExist match an absent
/// key).
pub fn matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    sel.match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && sel.match_expressions.iter().flatten().all(|r| {
            let values = r.values.as_deref().unwrap_or_default();
            let got = labels.get(&r.key);
            match r.operator.as_str() {
                "In" => got.is_some_and(|g| values.contains(g)),
                "NotIn" => got.is_none_or(|g| !values.contains(g)),
                "Exists" => got.is_some(),
                "DoesNotExist" => got.is_none(),
                _ => false,
            }
        })
}

/// A set of pods: those in namespace `namespace` (when given) whose
/// namespace matches `namespaces` and whose labels match `pods` (each
/// when given). All `None` is every pod.
#[derive(Debug, Clone, Default)]
pub struct PodMatch {
    pub namespace: Option<String>,
    pub namespaces: Option<LabelSelector>,
    pub pods: Option<LabelSelector>,
    /// Only these pods (namespace, name): a named-port group.
    pub only: Option<Vec<(String, String)>>,
}

impl PodMatch {
    /// The weir selector, or the unsupported field.
    pub fn text(&self, path: &str) -> Result<String, String> {
        let mut parts = Vec::new();
        if let Some(ns) = &self.namespace {
            parts.push(format!("{} == {}", quote(NS_KEY), quote(ns)));
        }
        if let Some(s) = &self.namespaces {
            let c = conjuncts(s, "", &format!("{path}.namespaceSelector"))?;
            if !c.is_empty() {
                parts.push(format!("namespace({})", c.join(" && ")));
            }
        }
        if let Some(s) = &self.pods {
            parts.extend(conjuncts(s, "", &format!("{path}.podSelector"))?);
        }
        if let Some(only) = &self.only {
            let mut by_ns: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for (ns, name) in only {
                by_ns.entry(ns).or_default().push(quote(name));
            }
            let alts: Vec<String> = by_ns
                .iter()
                .map(|(ns, names)| {
                    format!(
                        "{} == {} && {} in {{{}}}",
                        quote(NS_KEY),
                        quote(ns),
                        quote(NAME_KEY),
                        names.join(", ")
                    )
                })
                .collect();
            if alts.len() == 1 {
                parts.push(alts[0].clone());
            } else {
                let alts: Vec<String> = alts.iter().map(|a| format!("({a})")).collect();
                parts.push(format!("({})", alts.join(" || ")));
            }
        }
        if parts.is_empty() {
            parts.push(format!("has({})", quote(NS_KEY)));
        }
        Ok(parts.join(" && "))
    }

    pub fn matches(&self, pod: &Pod, cluster: &Cluster) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|ns| *ns == pod.namespace)
            && self
                .namespaces
                .as_ref()
                .is_none_or(|s| matches(s, &cluster.namespace_labels(&pod.namespace)))
            && self.pods.as_ref().is_none_or(|s| matches(s, &pod.labels))
            && self.only.as_ref().is_none_or(|o| {
                o.iter()
                    .any(|(ns, n)| *ns == pod.namespace && *n == pod.name)
            })
    }
}
