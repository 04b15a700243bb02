//! The JSON endpoint inventory (docs/language.md §3 "Endpoints"):
//!
//! ```json
//! { "endpoints": [
//!   { "name": "web-2", "labels": { "app": "web" }, "addrs": ["10.1.0.6"], "ready": true,
//!     "ports": { "http": "8080/tcp" } }
//! ],
//!   "namespaces": { "shop": { "team": "a" } } }
//! ```
//!
//! An endpoint's `"namespace"` names one of the file's `"namespaces"`
//! (name → that namespace's labels); its derived labels
//! ([`crate::namespaces`]) are added where the file is read, by every
//! reader of the schema alike.
//!
//! The caller reads the file (the compiler does no IO) and hands over the
//! text; problems come back as diagnostics pointing into it.

use crate::diagnostics::Kind;
use crate::labels::{Interner, Labels};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use weir_grammar::{FileId, Span};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryEndpoint {
    pub name: String,
    pub labels: Labels,
    pub addrs: Vec<IpAddr>,
    pub ready: bool,
    /// Where the endpoint's name is in the inventory file.
    pub span: Span,
    /// Where each address is, parallel to `addrs`.
    pub addr_spans: Vec<Span>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inventory {
    pub endpoints: Vec<InventoryEndpoint>,
    /// The file's namespaces: name → (labels, where the name is).
    pub namespaces: BTreeMap<String, (BTreeMap<String, String>, Span)>,
}

impl Inventory {
    /// Moves every span to `file` (an inventory parsed before its file id
    /// was known).
    pub fn set_file(&mut self, file: FileId) {
        for (_, s) in self.namespaces.values_mut() {
            s.file = file;
        }
        for e in &mut self.endpoints {
            e.span.file = file;
            for s in &mut e.addr_spans {
                s.file = file;
            }
        }
    }
}

/// The inventory file's schema (docs/language.md §3), written once. `A`
/// is how an address is read: as a `String` by [`parse_inventory`],
/// which reports a bad address where it is and keeps the rest, and as an
/// `IpAddr` by churn's fast path ([`crate::churn::EndpointRec::parse_inventory`]),
/// which gives up on the first problem and leaves the diagnostics to
/// [`parse_inventory`]. (The names are part of serde's messages, which
/// diagnostics quote: "expected struct RawInventory".)
#[derive(Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "A: Deserialize<'de>"))]
pub(crate) struct RawInventory<A> {
    pub endpoints: Vec<RawEndpoint<A>>,
    #[serde(default)]
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

impl<A> RawInventory<A> {
    /// Adds the derived namespace labels to every endpoint that names a
    /// namespace (call inside [`with_interner`]), or says which endpoint
    /// names a namespace the file does not have.
    pub(crate) fn derive_namespaces(&mut self) -> Result<(), String> {
        for e in &mut self.endpoints {
            let Some(ns) = &e.namespace else { continue };
            let Some(labels) = self.namespaces.get(ns) else {
                return Err(format!(
                    "endpoint `{}`: namespace `{ns}` is not among the inventory's \"namespaces\"",
                    e.name
                ));
            };
            e.labels = intern(crate::namespaces::derive(&e.labels, ns, labels));
        }
        Ok(())
    }
}

/// One endpoint of [`RawInventory`]. Its labels are interned as they are
/// read (see [`interned`]), so a million endpoints of a few deployments
/// never hold a million label maps, not even while the file is parsed.
/// Its named ports (`"ports": { "http": "8080/tcp" }`) are already among
/// its labels (as `port:http/tcp`, [`crate::named_ports`]): every reader
/// of the schema — the checker and churn's fast paths alike — sees them
/// the one way, and a malformed port fails the file.
#[derive(Deserialize)]
#[serde(
    try_from = "WireEndpoint<A>",
    bound(deserialize = "A: Deserialize<'de>")
)]
pub(crate) struct RawEndpoint<A> {
    pub name: String,
    pub labels: Labels,
    pub addrs: Vec<A>,
    pub ready: bool,
    /// The namespace it is in (its derived labels are added by
    /// [`RawInventory::derive_namespaces`]).
    pub namespace: Option<String>,
}

/// [`RawEndpoint`] as written in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "A: Deserialize<'de>"))]
pub(crate) struct WireEndpoint<A> {
    name: String,
    #[serde(default, deserialize_with = "interned")]
    labels: Labels,
    #[serde(default)]
    ports: BTreeMap<String, crate::named_ports::PortSpecs>,
    #[serde(default)]
    addrs: Vec<A>,
    #[serde(default = "yes")]
    ready: bool,
    /// The node it runs on (crate::nodes: held as a label).
    #[serde(default)]
    node: Option<String>,
    /// Host network: no address of its own (its node's; crate::nodes).
    #[serde(default, rename = "hostNetwork")]
    host_network: bool,
    #[serde(default)]
    namespace: Option<String>,
}

impl<A> TryFrom<WireEndpoint<A>> for RawEndpoint<A> {
    type Error = String;

    fn try_from(w: WireEndpoint<A>) -> Result<RawEndpoint<A>, String> {
        if w.host_network && (w.node.is_none() || !w.addrs.is_empty()) {
            return Err(format!(
                "endpoint `{}`: a host-network endpoint names its `node` and has no `addrs` (it takes the node's)",
                w.name
            ));
        }
        let labels = if w.ports.is_empty() && w.node.is_none() {
            w.labels
        } else {
            let mut m = w.labels.into_map();
            crate::named_ports::merge_inventory_ports(&mut m, &w.ports)
                .map_err(|e| format!("endpoint `{}`: {e}", w.name))?;
            if let Some(n) = w.node {
                m.insert(crate::nodes::KEY.to_string(), n);
            }
            intern(m)
        };
        if let Some(crate::named_ports::LabelProblem::Malformed { key }) =
            crate::named_ports::check_labels(&labels).first()
        {
            return Err(format!(
                "endpoint `{}`: label `{key}` is not a named port (`port:NAME/PROTO`, a port 1–65535)",
                w.name
            ));
        }
        if w.namespace.is_some() {
            if let Some(k) = labels.keys().find(|k| crate::namespaces::is_reserved(k)) {
                return Err(format!(
                    "endpoint `{}`: label `{k}` is reserved (derived from its namespace)",
                    w.name
                ));
            }
        }
        Ok(RawEndpoint {
            name: w.name,
            labels,
            addrs: w.addrs,
            ready: w.ready,
            namespace: w.namespace,
        })
    }
}

fn yes() -> bool {
    true
}

std::thread_local! {
    /// The interner of the inventory being read on this thread (set by
    /// [`with_interner`]); without one, labels are not shared.
    static INTERNER: std::cell::RefCell<Option<Interner>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` (a deserialization of [`RawInventory`]) with an interner for
/// its labels.
pub(crate) fn with_interner<R>(f: impl FnOnce() -> R) -> R {
    let outer = INTERNER.with(|i| i.replace(Some(Interner::default())));
    let r = f();
    INTERNER.with(|i| *i.borrow_mut() = outer);
    r
}

fn interned<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Labels, D::Error> {
    let m = BTreeMap::<String, String>::deserialize(d)?;
    Ok(intern(m))
}

fn intern(m: BTreeMap<String, String>) -> Labels {
    INTERNER.with(|i| match i.borrow_mut().as_mut() {
        Some(i) => i.intern(m),
        None => Labels::from(m),
    })
}

fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let mut off = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return (off + column.saturating_sub(1)).min(text.len());
        }
        off += l.len();
    }
    text.len()
}

/// Finds the quoted JSON string `s` in `text` at or after `from`.
fn find_string(text: &str, s: &str, from: usize) -> Option<(usize, usize)> {
    // What serde_json writes: only `"`, `\` and control characters are
    // escaped (names and addresses rarely have any).
    let plain = s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
    let quoted = if plain {
        let mut q = String::with_capacity(s.len() + 2);
        q.push('"');
        q.push_str(s);
        q.push('"');
        q
    } else {
        serde_json::to_string(s).ok()?
    };
    let from = from.min(text.len());
    text[from..]
        .find(&quoted)
        .map(|i| (from + i, from + i + quoted.len()))
}

/// Parses an inventory file. Endpoints with bad addresses are kept with the
/// good addresses only; a malformed file yields no endpoints.
pub fn parse_inventory(file: FileId, text: &str) -> (Inventory, Vec<Kind>) {
    let read = with_interner(|| {
        serde_json::from_str::<RawInventory<String>>(text).map(|mut r| {
            let derived = r.derive_namespaces();
            (r, derived)
        })
    });
    let raw: RawInventory<String> = match read {
        Ok((r, Ok(()))) => r,
        Ok((_, Err(problem))) => {
            let span = Span::new(file, 0, text.len().min(1));
            return (
                Inventory::default(),
                vec![Kind::BadInventory { span, problem }],
            );
        }
        Err(e) => {
            let off = offset_of(text, e.line(), e.column());
            let span = Span::new(file, off, (off + 1).min(text.len()).max(off));
            let mut problem = e.to_string();
            // serde_json appends " at line L column C"; the span says that.
            if let Some(i) = problem.rfind(" at line ") {
                problem.truncate(i);
            }
            // serde_json quotes the offending value: keep a short excerpt.
            if let Some((i, _)) = problem.char_indices().nth(120) {
                problem.truncate(i);
                problem.push('…');
            }
            return (
                Inventory::default(),
                vec![Kind::BadInventory { span, problem }],
            );
        }
    };
    let mut diags = Vec::new();
    let mut endpoints = Vec::with_capacity(raw.endpoints.len());
    let mut cursor = 0;
    for ep in raw.endpoints {
        // The object's keys come in any order (serializers often sort
        // them: `addrs` before `name`), so addresses are searched from
        // the end of the previous endpoint, not from this one's name:
        // searching past them would scan the rest of the file for every
        // address (quadratic in the inventory size).
        let start = cursor;
        let (s, e) = find_string(text, &ep.name, start).unwrap_or((start, start));
        cursor = e;
        let span = Span::new(file, s, e);
        if !valid_name(&ep.name) {
            diags.push(Kind::BadInventory {
                span,
                problem: format!("`{}` is not a valid endpoint name", ep.name),
            });
        }
        let mut addrs = Vec::new();
        let mut addr_spans = Vec::new();
        let mut acursor = start;
        for a in &ep.addrs {
            let (s, e) = find_string(text, a, acursor).unwrap_or((acursor, acursor));
            acursor = e;
            cursor = cursor.max(e);
            let aspan = Span::new(file, s, e);
            match a.parse::<IpAddr>() {
                Ok(ip) => {
                    addrs.push(ip);
                    addr_spans.push(aspan);
                }
                Err(_) => diags.push(Kind::BadInventory {
                    span: aspan,
                    problem: format!("`{a}` is not an IP address"),
                }),
            }
        }
        endpoints.push(InventoryEndpoint {
            name: ep.name,
            labels: ep.labels,
            addrs,
            ready: ep.ready,
            span,
            addr_spans,
        });
    }
    let mut namespaces = BTreeMap::new();
    for (name, labels) in raw.namespaces {
        let (s, e) = find_string(text, &name, 0).unwrap_or((0, 0));
        namespaces.insert(name, (labels, Span::new(file, s, e)));
    }
    (
        Inventory {
            endpoints,
            namespaces,
        },
        diags,
    )
}

/// An identifier as the language defines it: `[A-Za-z_][A-Za-z0-9_-]*`.
pub fn valid_name(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_locates() {
        let text = r#"{ "endpoints": [
  { "name": "web-2", "labels": { "app": "web" }, "addrs": ["10.1.0.6", "x"] },
  { "name": "db", "addrs": ["fd00::1"], "ready": false }
] }"#;
        let (inv, diags) = parse_inventory(FileId(3), text);
        assert_eq!(inv.endpoints.len(), 2);
        assert_eq!(inv.endpoints[0].addrs.len(), 1);
        assert!(inv.endpoints[0].ready);
        assert!(!inv.endpoints[1].ready);
        assert_eq!(&text[inv.endpoints[1].span.range()], "\"db\"");
        assert_eq!(diags.len(), 1);
    }

    /// Equal label maps of one inventory are one allocation (issue 15
    /// item 7: a million replicas must not hold a million maps).
    #[test]
    fn equal_labels_are_shared() {
        let text = r#"{ "endpoints": [
  { "name": "a", "labels": { "app": "web", "tier": "1" }, "addrs": ["10.0.0.1"] },
  { "name": "b", "labels": { "tier": "1", "app": "web" }, "addrs": ["10.0.0.2"] },
  { "name": "c", "labels": { "app": "db" }, "addrs": ["10.0.0.3"] }
] }"#;
        let (inv, diags) = parse_inventory(FileId(0), text);
        assert!(diags.is_empty());
        let l: Vec<&BTreeMap<String, String>> = inv.endpoints.iter().map(|e| &*e.labels).collect();
        assert!(std::ptr::eq(l[0], l[1]), "equal maps shared");
        assert!(!std::ptr::eq(l[0], l[2]));
        assert_eq!(l[2].get("app").map(String::as_str), Some("db"));
    }

    /// `ports` become `port:NAME/PROTO` labels; a bad one fails the file.
    #[test]
    fn named_ports() {
        let text = r#"{ "endpoints": [
  { "name": "a", "labels": { "app": "web" }, "ports": { "http": "8080/tcp" }, "addrs": ["10.0.0.1"] }
] }"#;
        let (inv, diags) = parse_inventory(FileId(0), text);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(
            inv.endpoints[0]
                .labels
                .get("port:http/tcp")
                .map(String::as_str),
            Some("8080")
        );
        // One name, one port per protocol.
        let two = r#"{ "endpoints": [
  { "name": "d", "ports": { "dns": ["53/udp", "5353/tcp"] }, "addrs": ["10.0.0.2"] }
] }"#;
        let (inv, diags) = parse_inventory(FileId(0), two);
        assert!(diags.is_empty(), "{diags:?}");
        let l = &inv.endpoints[0].labels;
        assert_eq!(
            (l.get("port:dns/udp"), l.get("port:dns/tcp")),
            (Some(&"53".to_string()), Some(&"5353".to_string()))
        );
        for bad in [
            r#"{ "endpoints": [ { "name": "a", "ports": { "http": "8080" } } ] }"#,
            r#"{ "endpoints": [ { "name": "a", "labels": { "port:x": "1" } } ] }"#,
            r#"{ "endpoints": [ { "name": "a", "labels": { "port:http/tcp": "1" }, "ports": { "http": "2/tcp" } } ] }"#,
            r#"{ "endpoints": [ { "name": "a", "ports": { "dns": ["53/udp", "54/udp"] } } ] }"#,
        ] {
            let (inv, diags) = parse_inventory(FileId(0), bad);
            assert!(inv.endpoints.is_empty() && diags.len() == 1, "{bad}");
        }
    }

    #[test]
    fn malformed() {
        let (inv, diags) = parse_inventory(FileId(0), "{ \"endpoints\": [ { \"nam\": 1 } ] }");
        assert!(inv.endpoints.is_empty());
        assert_eq!(diags.len(), 1);
    }
}
