//! The `"namespaces"` section of an inventory file as the endpoints
//! record keeps it: in the text after the last endpoint object (the
//! record's trailer, [`super::entries`]).
//!
//! Why there: an endpoint in a namespace is written in the file as its
//! own labels plus `"namespace": NAME`, and its labels as the compiler
//! sees them are derived from the namespace's entry
//! ([`crate::namespaces`]). So an unchanged endpoint object is an
//! unchanged endpoint only under unchanged namespaces. The importer (and
//! `weir agent`) write the section after the endpoint list
//! (`{"endpoints": [ … ], "namespaces": { … }}`), so the trailer the
//! record already keeps holds it: the text diff ([`super::diff_text`])
//! reads the recorded and the new section from the trailers, decodes
//! recorded objects under the recorded namespaces, and treats exactly the
//! endpoints of namespaces whose labels changed (or that were added or
//! removed) as changed — a namespace relabel re-places that namespace's
//! endpoints, not the whole inventory.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::record::{EndpointRec, FastEndpoint};

/// Namespace name → its labels (an inventory's `"namespaces"`).
pub type Namespaces = BTreeMap<String, BTreeMap<String, String>>;

/// What may follow the endpoint list: the schema of
/// [`crate::inventory`] with the list already read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tail {
    endpoints: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    namespaces: Namespaces,
}

/// The namespaces declared by `tail`: an inventory file's text from the
/// endpoint list's closing `]` to its end, or the whole file when the
/// list is empty. `None` when the text is not that (the caller takes the
/// whole parse, which reports the problem).
pub fn tail_namespaces(tail: &str) -> Option<Namespaces> {
    let t = tail.trim_start();
    let parsed: Tail = if t.starts_with('{') {
        serde_json::from_str(t).ok()?
    } else {
        serde_json::from_str(&format!("{{\"endpoints\":[{t}")).ok()?
    };
    parsed.endpoints.is_empty().then_some(parsed.namespaces)
}

impl EndpointRec {
    /// The endpoint of an inventory object read by the fast path, with
    /// its namespace's derived labels from `ns` (`None`: it names a
    /// namespace `ns` does not have — the file is invalid).
    pub(crate) fn resolve(e: FastEndpoint, ns: &Namespaces) -> Option<EndpointRec> {
        let Some(name) = e.namespace.clone() else {
            return Some(e.into());
        };
        let labels = crate::namespaces::derive(&e.labels, &name, ns.get(&name)?);
        let mut r: EndpointRec = e.into();
        r.labels = labels;
        Some(r)
    }
}

/// The namespaces whose labels differ between `old` and `new` (added and
/// removed ones included).
pub fn changed_namespaces<'a>(old: &'a Namespaces, new: &'a Namespaces) -> Vec<&'a str> {
    let mut out: Vec<&str> = old
        .iter()
        .filter(|(k, v)| new.get(*k) != Some(*v))
        .map(|(k, _)| k.as_str())
        .collect();
    out.extend(
        new.keys()
            .filter(|k| !old.contains_key(*k))
            .map(String::as_str),
    );
    out
}

/// Might the object `text` name one of `names` as its namespace? Exact
/// in the "no" direction: a name appears quoted in the object unless an
/// escape spells it, and then the object has a backslash.
pub fn may_name(text: &str, names: &[String]) -> bool {
    text.contains('\\') || names.iter().any(|q| text.contains(q.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_holds_the_namespaces() {
        let ns =
            tail_namespaces("\n  ],\n  \"namespaces\": { \"a\": { \"t\": \"1\" } }\n}\n").unwrap();
        assert_eq!(ns["a"]["t"], "1");
        assert_eq!(tail_namespaces("]}"), Some(Namespaces::new()));
        assert_eq!(
            tail_namespaces(" {\"endpoints\": [], \"namespaces\": {\"b\": {}}}").map(|n| n.len()),
            Some(1)
        );
        for bad in [
            "], \"x\": 1}",
            "]",
            "], \"namespaces\": {\"a\": {\"t\": 1}}}",
            "], \"namespaces\": {}, \"namespaces\": {}}",
            "{\"endpoints\": [{}]}",
        ] {
            assert_eq!(tail_namespaces(bad), None, "{bad}");
        }
        let o = Namespaces::from([("a".into(), BTreeMap::new()), ("b".into(), BTreeMap::new())]);
        let n = Namespaces::from([
            ("b".into(), BTreeMap::from([("x".into(), "y".into())])),
            ("c".into(), BTreeMap::new()),
        ]);
        assert_eq!(changed_namespaces(&o, &n), vec!["a", "b", "c"]);
        assert!(changed_namespaces(&o, &o).is_empty());
    }
}
