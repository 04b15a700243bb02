//! The text diff over inventories with a `"namespaces"` section
//! ([`super::ns_tail`]): the fast path is taken (only changed objects are
//! parsed) and gives exactly the endpoints [`changed_endpoints`] finds
//! over the two whole inventories.

use super::*;
use serde_json::{json, Value};

/// Three namespaces of `per` endpoints each, in the importer's layout
/// (pretty JSON, `"namespaces"` after the list).
fn inventory(per: usize, ns: &[(&str, Value)], extra: &[Value]) -> String {
    let mut eps = Vec::new();
    for (n, (name, _)) in ns.iter().enumerate() {
        for i in 0..per {
            eps.push(json!({"name": format!("p-{name}-{i}"), "namespace": name,
                "labels": {"app": format!("a{}", i % 3)},
                "addrs": [format!("10.{}.0.{}", n + 1, i + 1)]}));
        }
    }
    eps.extend(extra.iter().cloned());
    let nss: serde_json::Map<String, Value> =
        ns.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    serde_json::to_string_pretty(&json!({"endpoints": eps, "namespaces": nss})).unwrap() + "\n"
}

fn three(b_team: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("a", json!({"team": "x"})),
        ("b", json!({"team": b_team})),
        ("c", json!({"team": "x"})),
    ]
}

fn by_name(mut v: Vec<EndpointRec>) -> Vec<EndpointRec> {
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// `new` against the record of `old`: the fast path's changes, checked
/// against the whole-inventory comparison; the new record decodes to
/// the new inventory.
fn fast(old: &str, new: &str) -> (Vec<EndpointRec>, Vec<EndpointRec>) {
    let rec = diff_text(&entries::encode_all(&[]), true, old).unwrap();
    let d = diff_text(&rec.entries, rec.unique, new).unwrap();
    assert!(d.full.is_none(), "the fast path is taken");
    let (o, n) = d.changed.clone().unwrap();
    let (eo, en) = changed_endpoints(
        &EndpointRec::parse_inventory(old).unwrap(),
        &EndpointRec::parse_inventory(new).unwrap(),
    )
    .unwrap();
    assert_eq!(by_name(o.clone()), by_name(eo));
    assert_eq!(by_name(n.clone()), by_name(en));
    assert_eq!(
        entries::decode_all(&d.entries).unwrap(),
        EndpointRec::parse_inventory(new).unwrap()
    );
    (o, n)
}

#[test]
fn namespaced_inventories_take_the_text_fast_path() {
    let old = inventory(20, &three("y"), &[]);
    // Unchanged.
    let (o, n) = fast(&old, &old);
    assert!(o.is_empty() && n.is_empty());
    // A pod added in a namespace: that endpoint only, with its
    // namespace's labels.
    let pod = json!({"name": "p-b-new", "namespace": "b", "labels": {"app": "a0"},
        "addrs": ["10.2.0.200"]});
    let (o, n) = fast(&old, &inventory(20, &three("y"), &[pod]));
    assert!(o.is_empty() && n.len() == 1);
    assert_eq!(n[0].labels["@namespace.team"], "y");
    // A namespace relabelled (one line of the file): exactly its 20
    // endpoints, both versions.
    let (o, n) = fast(&old, &inventory(20, &three("z"), &[]));
    assert_eq!((o.len(), n.len()), (20, 20));
    assert!(n.iter().all(|e| e.name.starts_with("p-b-")));
    assert!(n.iter().all(|e| e.labels["@namespace.team"] == "z"));
    // A namespace added (no endpoints yet) and one whose entry is the same:
    // nothing changes.
    let four = old.replace(
        "\"namespaces\": {",
        "\"namespaces\": { \"d\": {\"team\": \"new\"},",
    );
    assert_ne!(four, old);
    let (o, n) = fast(&old, &four);
    assert!(o.is_empty() && n.is_empty());
    // Removed with its endpoints: they go.
    let (o, n) = fast(&old, &inventory(20, &three("y")[..2], &[]));
    assert_eq!((o.len(), n.len()), (20, 0));
    // Removed while an endpoint still names it: the file is invalid, as
    // the whole parse says.
    let text = old.replace("\"c\": {", "\"cc\": {");
    let rec = diff_text(&entries::encode_all(&[]), true, &old).unwrap();
    assert_eq!(
        diff_text(&rec.entries, true, &text).unwrap_err(),
        DiffError::Inventory
    );
    assert!(EndpointRec::parse_inventory(&text).is_none());
}

/// A record written by an earlier weir (the endpoints with their derived
/// labels, no `"namespaces"`) compares by content: nothing changed.
#[test]
fn a_self_contained_record_compares_by_content() {
    let old = inventory(5, &three("y"), &[]);
    let all = EndpointRec::parse_inventory(&old).unwrap();
    let d = diff_text(&entries::encode_all(&all), true, &old).unwrap();
    let (o, n) = d.changed.unwrap();
    assert!(o.is_empty() && n.is_empty());
}
