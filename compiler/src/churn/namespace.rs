//! A namespace relabelled at run time: one update, not one per endpoint.
//!
//! A namespace's labels live in the namespace (an inventory's
//! `"namespaces"` entry, [`crate::namespaces`]); its endpoints carry them
//! only as derived labels. [`relabel_namespace`] takes the endpoints in
//! force and the one changed entry, re-derives the labels of that
//! namespace's endpoints only (the others are not touched, not even
//! compared) and places them by [`plan`], as relabelled endpoints are
//! placed: the update is incremental when every new signature is a
//! compiled class, and refused ("needs a recompile") otherwise — never
//! stale.

use std::collections::BTreeMap;

use super::placement::ClassView;
use super::plan::{plan, Plan};
use super::record::EndpointRec;
use crate::namespaces;

/// The result of one namespace relabel.
#[derive(Debug, Clone)]
pub struct NamespaceUpdate {
    /// The endpoints in force afterwards (the caller records them once
    /// the plan is applied).
    pub endpoints: Vec<EndpointRec>,
    /// How many endpoints are in the namespace (all that were looked at
    /// again).
    pub members: usize,
    /// The address changes, or why the update needs a recompile.
    pub plan: Plan,
}

/// Relabels namespace `ns` to `labels` over the endpoints in force.
pub fn relabel_namespace(
    view: &ClassView,
    current: &[EndpointRec],
    ns: &str,
    labels: &BTreeMap<String, String>,
) -> NamespaceUpdate {
    let mut endpoints = current.to_vec();
    let mut old = Vec::new();
    let mut new = Vec::new();
    for e in endpoints.iter_mut() {
        if namespaces::of(&e.labels) != Some(ns) {
            continue;
        }
        old.push(e.clone());
        e.labels = namespaces::derive(&e.labels, ns, labels);
        new.push(e.clone());
    }
    let members = new.len();
    NamespaceUpdate {
        endpoints,
        members,
        plan: plan(view, &old, &new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::churn::{plan_update, EndpointRec};
    use serde_json::json;
    use std::path::PathBuf;

    const SRC: &str = r#"
inventory "inv.json"
policy db-in {
  applies to app == "db"
  ingress {
    allow tcp 5432 from namespace(team == "a") && app == "web"
    allow tcp 6379 from namespace(env == "prod")
  }
}
"#;
    const PER_NS: usize = 40;

    /// Namespaces ns1 (team a), ns2 (team `ns2_team`), ns3 (team a),
    /// PER_NS web endpoints in each, a db in ns1.
    fn inventory(ns2_team: &str, ns2_env: Option<&str>) -> serde_json::Value {
        let mut eps = vec![json!({"name": "db", "namespace": "ns1",
            "labels": {"app": "db"}, "addrs": ["10.9.0.1"]})];
        for (n, ns) in ["ns1", "ns2", "ns3"].iter().enumerate() {
            for i in 0..PER_NS {
                eps.push(json!({"name": format!("web-{ns}-{i}"), "namespace": ns,
                    "labels": {"app": "web"}, "addrs": [format!("10.{}.0.{}", n + 1, i + 1)]}));
            }
        }
        let mut ns2 = json!({"team": ns2_team});
        if let Some(e) = ns2_env {
            ns2["env"] = json!(e);
        }
        json!({"endpoints": eps,
            "namespaces": {"ns1": {"team": "a"}, "ns2": ns2, "ns3": {"team": "a"}}})
    }

    fn view() -> (ClassView, Vec<EndpointRec>) {
        let text = serde_json::to_string_pretty(&inventory("b", None)).unwrap();
        let loader = crate::source::MemoryLoader::new()
            .with("p.weir", SRC)
            .with("inv.json", text);
        let c = crate::check::check_program(&[PathBuf::from("p.weir")], &loader, None);
        assert!(!c.has_errors(), "{:?}", c.diagnostics);
        let m = crate::churn::tests::manifest_of_model(&c.model);
        let eps = crate::churn::manifest_endpoints(&m);
        (ClassView::from_manifest(&m), eps)
    }

    /// A namespace relabel is one inventory entry and re-places that
    /// namespace's endpoints only: ns2 moving to team a is incremental and
    /// changes exactly ns2's PER_NS addresses, while the inventory text
    /// changes in one line — copying the label onto every endpoint would
    /// have rewritten PER_NS endpoint objects.
    #[test]
    fn a_namespace_relabel_is_one_update_of_its_endpoints() {
        let (view, current) = view();
        let relabel = BTreeMap::from([("team".to_string(), "a".to_string())]);
        let u = relabel_namespace(&view, &current, "ns2", &relabel);
        assert!(u.plan.refused.is_empty(), "{:?}", u.plan.refused);
        assert_eq!(u.members, PER_NS);
        assert_eq!(u.plan.changes.len(), PER_NS);
        assert!(u
            .plan
            .changes
            .iter()
            .all(|c| c.endpoint.starts_with("web-ns2-")));

        // The same through `weir endpoints`' path: a whole new inventory.
        let old = serde_json::to_string_pretty(&inventory("b", None)).unwrap();
        let new = serde_json::to_string_pretty(&inventory("a", None)).unwrap();
        let differing = old.lines().zip(new.lines()).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 1, "one line of the inventory changes");
        let before = EndpointRec::parse_inventory(&old).unwrap();
        let after = EndpointRec::parse_inventory(&new).unwrap();
        let p = plan_update(&view, &before, &after);
        assert!(p.refused.is_empty(), "{:?}", p.refused);
        assert_eq!(p.changes, u.plan.changes);
        let by_name = |v: &[EndpointRec]| {
            let mut v = v.to_vec();
            v.sort_by(|a, b| a.name.cmp(&b.name));
            v
        };
        assert!(by_name(&after) == by_name(&u.endpoints));
    }

    /// A relabel into a combination no compiled class has (`env: prod`
    /// is satisfied by no namespace at compile time) is refused, never
    /// applied stale; one that changes no signature changes nothing.
    #[test]
    fn a_namespace_relabel_into_a_new_class_needs_a_recompile() {
        let (view, current) = view();
        let prod = BTreeMap::from([
            ("team".to_string(), "b".to_string()),
            ("env".to_string(), "prod".to_string()),
        ]);
        let u = relabel_namespace(&view, &current, "ns2", &prod);
        assert_eq!(u.plan.refused.len(), PER_NS, "{:?}", u.plan.refused);
        assert!(u.plan.refused[0].contains("needs a recompile"));
        let c = BTreeMap::from([("team".to_string(), "c".to_string())]);
        let u = relabel_namespace(&view, &current, "ns2", &c);
        assert!(u.plan.refused.is_empty() && u.plan.changes.is_empty());
        assert_eq!(u.members, PER_NS);
    }
}
