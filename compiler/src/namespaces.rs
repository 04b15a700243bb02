//! Namespaces, the one statement of how they are held and tested
//! (docs/language.md §3 "Namespaces", §4 "Namespace labels").
//!
//! A namespace has labels of its own (`namespace shop { labels { team:
//! "a" } }`, or an inventory's `"namespaces"`), and an endpoint names the
//! namespace it is in (`namespace shop`, inventory `"namespace"`). The
//! selector `namespace(SEL)` holds for an endpoint iff it is in a
//! namespace whose labels satisfy SEL; an endpoint in no namespace
//! satisfies no `namespace(…)` test (so `!namespace(…)` selects it).
//!
//! **How it is held.** Where a program or inventory is read, an endpoint
//! in a namespace gets *derived* labels: [`MEMBER_KEY`] = the namespace's
//! name, and [`LABEL_PREFIX`]`KEY` = V for each of the namespace's labels.
//! `namespace(SEL)` is resolved to `has(MEMBER_KEY) && SEL'`, SEL' being
//! SEL over the prefixed keys ([`test`]). Nothing is written per endpoint
//! by the user or the importer: the namespace's labels live once, in the
//! namespace, and the derived maps are interned (endpoints of one
//! deployment in one namespace share one map). Because the derived keys
//! are ordinary labels, the address classes, the endpoint index, both
//! back ends and churn's placement need no code of their own (as with
//! named ports, [`crate::named_ports`]), and a conjunction
//! `namespace(team == "a") && app == "web"` is one posting-list
//! intersection in the index and one atom in the classes.
//!
//! **Churn.** A namespace relabel is one change to the inventory's
//! `"namespaces"` entry; [`crate::churn::relabel_namespace`] re-derives
//! the labels of that namespace's endpoints only and places them as
//! relabelled endpoints are placed: incremental when every new signature
//! is a compiled class, else refused ("needs a recompile").
//!
//! Keys beginning with [`MEMBER_KEY`] are reserved: a declared endpoint
//! may not carry them (E0276), nor an inventory endpoint that names a
//! namespace (its derived labels are computed); an inventory endpoint
//! without `"namespace"` may (that is the recorded form churn writes).

use crate::model::Sel;
use std::collections::BTreeMap;

/// The derived label naming an endpoint's namespace.
pub const MEMBER_KEY: &str = "@namespace";
/// The prefix of the derived labels that carry a namespace's labels.
pub const LABEL_PREFIX: &str = "@namespace.";

/// Is `key` reserved for derived namespace labels?
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(MEMBER_KEY)
}

/// Does `sel` mention a reserved key (a `namespace(…)` test)?
pub fn mentions(sel: &Sel) -> bool {
    let mut keys = std::collections::BTreeSet::new();
    sel.keys(&mut keys);
    keys.iter().any(|k| is_reserved(k))
}

/// The endpoint selector of `namespace(inner)`: in a namespace, and the
/// namespace's labels satisfy `inner`.
pub fn test(inner: &Sel) -> Sel {
    Sel::And(
        Box::new(Sel::Has(MEMBER_KEY.to_string())),
        Box::new(prefixed(inner)),
    )
}

/// `sel` over the derived keys.
fn prefixed(sel: &Sel) -> Sel {
    let k = |k: &String| format!("{LABEL_PREFIX}{k}");
    match sel {
        Sel::All => Sel::All,
        Sel::Eq(a, v) => Sel::Eq(k(a), v.clone()),
        Sel::Ne(a, v) => Sel::Ne(k(a), v.clone()),
        Sel::In(a, vs) => Sel::In(k(a), vs.clone()),
        Sel::NotIn(a, vs) => Sel::NotIn(k(a), vs.clone()),
        Sel::Has(a) => Sel::Has(k(a)),
        Sel::Not(e) => Sel::Not(Box::new(prefixed(e))),
        Sel::And(a, b) => Sel::And(Box::new(prefixed(a)), Box::new(prefixed(b))),
        Sel::Or(a, b) => Sel::Or(Box::new(prefixed(a)), Box::new(prefixed(b))),
    }
}

/// The namespace an endpoint's (derived) labels say it is in.
pub fn of(labels: &BTreeMap<String, String>) -> Option<&str> {
    labels.get(MEMBER_KEY).map(String::as_str)
}

/// An endpoint's own labels with the derived labels of namespace `ns`
/// (`name`, `labels`); any reserved keys it had are replaced.
pub fn derive(
    own: &BTreeMap<String, String>,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = own
        .iter()
        .filter(|(k, _)| !is_reserved(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    m.insert(MEMBER_KEY.to_string(), name.to_string());
    for (k, v) in labels {
        m.insert(format!("{LABEL_PREFIX}{k}"), v.clone());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_namespace_test_reads_the_namespace_labels_only() {
        let t = test(&Sel::Eq("team".into(), "a".into()));
        let in_a = derive(&m(&[("app", "web")]), "shop", &m(&[("team", "a")]));
        let in_b = derive(&m(&[("team", "a")]), "shop", &m(&[("team", "b")]));
        assert!(t.matches(&in_a));
        assert!(
            !t.matches(&in_b),
            "the pod's own `team` is not the namespace's"
        );
        // No namespace: no namespace test holds, not even a negative one.
        let none = m(&[("team", "a")]);
        assert!(!t.matches(&none));
        let neg = test(&Sel::Not(Box::new(Sel::Has("team".into()))));
        assert!(!neg.matches(&none));
        assert!(neg.matches(&derive(&none, "x", &m(&[]))));
        assert_eq!(of(&in_a), Some("shop"));
    }

    /// An inventory's endpoints get their namespace's derived labels as the
    /// file is read (both readers); an unknown namespace or a reserved key
    /// beside `"namespace"` fails the file.
    #[test]
    fn inventories_declare_namespaces_and_endpoints_name_them() {
        let text = r#"{ "endpoints": [
  { "name": "a", "namespace": "shop", "labels": { "app": "web" }, "addrs": ["10.0.0.1"] },
  { "name": "b", "labels": { "app": "web" }, "addrs": ["10.0.0.2"] } ],
  "namespaces": { "shop": { "team": "a" } } }"#;
        let (inv, errs) = crate::inventory::parse_inventory(weir_grammar::FileId(0), text);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(of(&inv.endpoints[0].labels), Some("shop"));
        assert_eq!(
            inv.endpoints[0]
                .labels
                .get("@namespace.team")
                .map(String::as_str),
            Some("a")
        );
        assert_eq!(of(&inv.endpoints[1].labels), None);
        assert!(inv.namespaces.contains_key("shop"));
        let fast = crate::churn::EndpointRec::parse_inventory(text).unwrap();
        assert_eq!(*inv.endpoints[0].labels, fast[0].labels);
        for bad in [
            r#"{ "endpoints": [ { "name": "a", "namespace": "lab", "addrs": [] } ], "namespaces": {} }"#,
            r#"{ "endpoints": [ { "name": "a", "namespace": "x", "labels": { "@namespace": "y" } } ],
                 "namespaces": { "x": {} } }"#,
        ] {
            let (_, errs) = crate::inventory::parse_inventory(weir_grammar::FileId(0), bad);
            assert_eq!(errs.len(), 1, "{bad}");
            assert!(crate::churn::EndpointRec::parse_inventory(bad).is_none());
        }
    }
}
