//! Completion that fits the position, judged from the line before the
//! cursor: label values after `KEY ==`, `KEY !=`, `KEY in {` or `KEY:`;
//! selectors, sets and label keys where a selector or peer is written
//! (`from`, `to`, `applies to`, `selector NAME =`, `&&`, …); tiers after a
//! policy's `tier`; deciders after `by`; declared port names after a
//! rule's `tcp port "` (those declared for that protocol) and a service's
//! `backends select … port "`; keywords, declared names and label keys
//! everywhere else (the start of a line).

use super::analysis::{Analysis, SymKind};
use lsp_types::{CompletionItem, CompletionItemKind};
use std::collections::BTreeSet;
use weir_grammar::lexer::KEYWORDS;

/// What may be written at the cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// The value of label `KEY`.
    Value(String),
    /// A selector expression: named selectors, label keys, `all`.
    Selector,
    /// An address set: named sets.
    Set,
    /// A rule peer: selectors, sets, label keys, `any`, `self`, `world`.
    Peer,
    /// A test peer: endpoints first, then what a rule peer takes.
    TestPeer,
    /// `tier NAME` in a policy header.
    Tier,
    /// `by NAME` in an expect line.
    By,
    /// A port name after `port` (`tcp port "` in a rule: that protocol's;
    /// `backends select … port "`: any), `quoted` when the quote is open.
    PortName { proto: Option<String>, quoted: bool },
    /// Anything (a fresh line, or a place not recognised).
    Any,
}

/// `line` is the text of the current line before the cursor;
/// `only_specific`: nothing where anything would fit (a trigger
/// character typed).
pub fn complete(a: &Analysis, line: &str, only_specific: bool) -> Vec<CompletionItem> {
    let slot = slot(line);
    if only_specific && slot == Slot::Any {
        return Vec::new();
    }
    if let Slot::Value(key) = &slot {
        return values(a, key, line);
    }
    if let Slot::PortName { proto, quoted } = &slot {
        // After `port ` a number fits as well as a name: a typed space
        // pops nothing up; a typed `"` or an explicit request does.
        if only_specific && !quoted {
            return Vec::new();
        }
        return port_names(a, proto.as_deref(), *quoted);
    }
    let (kinds, labels, words): (&[SymKind], bool, &[&str]) = match slot {
        Slot::Selector => (&[SymKind::Selector], true, &["all"]),
        Slot::Set => (&[SymKind::Set], false, &[]),
        Slot::Peer => (
            &[SymKind::Selector, SymKind::Set],
            true,
            &["any", "self", "world"],
        ),
        Slot::TestPeer => (
            &[SymKind::Endpoint, SymKind::Selector, SymKind::Set],
            true,
            &["any"],
        ),
        Slot::Tier => (&[SymKind::Tier], false, &[]),
        Slot::By => (
            &[SymKind::Policy, SymKind::Steer, SymKind::Service],
            false,
            &["default"],
        ),
        Slot::Any | Slot::Value(_) | Slot::PortName { .. } => (ANY_KIND, true, KEYWORDS),
    };
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for k in kinds {
        for d in a.index.defs.iter().filter(|d| d.kind == *k) {
            if seen.insert(d.name.clone()) {
                out.push(name_item(&d.name, d.kind));
            }
        }
    }
    if labels {
        for k in a.index.labels.keys() {
            if seen.insert(k.clone()) {
                out.push(CompletionItem {
                    label: k.clone(),
                    kind: Some(CompletionItemKind::FIELD),
                    detail: Some("label key".to_string()),
                    ..Default::default()
                });
            }
        }
    }
    for k in words {
        if seen.insert(k.to_string()) {
            out.push(CompletionItem {
                label: k.to_string(),
                kind: Some(CompletionItemKind::KEYWORD),
                ..Default::default()
            });
        }
    }
    out
}

/// Every kind of name but tests (which are never referred to).
const ANY_KIND: &[SymKind] = &[
    SymKind::Selector,
    SymKind::Set,
    SymKind::Endpoint,
    SymKind::Service,
    SymKind::Policy,
    SymKind::Tier,
    SymKind::Steer,
];

fn name_item(name: &str, kind: SymKind) -> CompletionItem {
    CompletionItem {
        label: name.to_string(),
        kind: Some(match kind {
            SymKind::Selector | SymKind::Set => CompletionItemKind::VARIABLE,
            SymKind::Endpoint => CompletionItemKind::CONSTANT,
            SymKind::Service => CompletionItemKind::CLASS,
            SymKind::Policy | SymKind::Steer => CompletionItemKind::MODULE,
            SymKind::Tier => CompletionItemKind::ENUM_MEMBER,
            SymKind::Test => CompletionItemKind::TEXT,
        }),
        detail: Some(kind.noun().to_string()),
        ..Default::default()
    }
}

/// The values seen for label `key`, quoted unless a quote is open.
fn values(a: &Analysis, key: &str, line: &str) -> Vec<CompletionItem> {
    let quoted = line.trim_end().ends_with('"');
    a.index
        .labels
        .get(key)
        .into_iter()
        .flatten()
        .map(|v| CompletionItem {
            label: format!("\"{v}\""),
            kind: Some(CompletionItemKind::VALUE),
            detail: Some(format!("value of label `{key}`")),
            insert_text: Some(if quoted {
                v.clone()
            } else {
                format!("\"{v}\"")
            }),
            ..Default::default()
        })
        .collect()
}

/// The port names endpoints declare (their `port:NAME/PROTO` labels), of
/// `proto` when given, with the numbers they stand for.
fn port_names(a: &Analysis, proto: Option<&str>, quoted: bool) -> Vec<CompletionItem> {
    let prefix = weir_compiler::named_ports::PREFIX;
    // name → "NUMBERS/PROTO" as declared.
    let mut names: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for (k, vals) in &a.index.labels {
        let Some((name, p)) = k.strip_prefix(prefix).and_then(|r| r.rsplit_once('/')) else {
            continue;
        };
        if name.is_empty() || proto.is_some_and(|want| want != p) {
            continue;
        }
        let nums: Vec<&str> = vals.iter().map(String::as_str).collect();
        names
            .entry(name)
            .or_default()
            .push(format!("{}/{p}", nums.join("|")));
    }
    names
        .into_iter()
        .map(|(name, ports)| CompletionItem {
            label: format!("\"{name}\""),
            kind: Some(CompletionItemKind::VALUE),
            detail: Some(format!("named port ({})", ports.join(", "))),
            insert_text: Some(if quoted {
                name.to_string()
            } else {
                format!("\"{name}\"")
            }),
            filter_text: Some(name.to_string()),
            ..Default::default()
        })
        .collect()
}

/// `… PROTO port "` or `backends select … port "` before the cursor (the
/// name being typed ignored): the port-name slot.
fn port_slot(line: &str) -> Option<Slot> {
    let head = line.trim_end_matches(is_word_char);
    let (head, quoted) = match head.strip_suffix('"') {
        Some(h) => (h, true),
        None => (head, false),
    };
    let head = head.trim_end().strip_suffix("port")?;
    if !head.ends_with(char::is_whitespace) {
        return None;
    }
    let before = head
        .trim_end()
        .rsplit(char::is_whitespace)
        .next()
        .unwrap_or("");
    let proto = match before {
        "tcp" | "udp" | "sctp" => Some(before.to_string()),
        _ if line.trim_start().starts_with("backends") && line.contains(" select ") => None,
        _ => return None,
    };
    Some(Slot::PortName { proto, quoted })
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// What fits after `line` (the text before the cursor), ignoring the
/// word being typed.
fn slot(line: &str) -> Slot {
    if let Some(p) = port_slot(line) {
        return p;
    }
    if let Some(key) = value_context(line) {
        return Slot::Value(key);
    }
    let head = line.trim_end_matches(is_word_char).trim_end();
    let first = line.split_whitespace().next().unwrap_or("");
    let last = head
        .rsplit(|c: char| c.is_whitespace())
        .next()
        .unwrap_or("");
    let before_last = head[..head.len() - last.len()].trim_end();
    match last {
        "from" | "to" if first == "expect" => Slot::TestPeer,
        "to" if before_last.ends_with("applies") => Slot::Selector,
        "from" | "to" => Slot::Peer,
        "select" | "&&" | "||" | "!" | "(" => Slot::Selector,
        "except" => Slot::Set,
        "=" if first == "selector" => Slot::Selector,
        "=" if first == "set" => Slot::Set,
        "tier" if first == "policy" => Slot::Tier,
        "by" if first == "expect" => Slot::By,
        _ if last.ends_with("&&") || last.ends_with("||") || last.ends_with('!') => Slot::Selector,
        _ if last.ends_with('(') && !last.ends_with("has(") => Slot::Selector,
        _ => Slot::Any,
    }
}

/// The label key whose value is being written, if any.
fn value_context(line: &str) -> Option<String> {
    let s = line.trim_end();
    let s = s.strip_suffix('"').unwrap_or(s).trim_end();
    // Inside an `in { … }` list: `KEY in { "a", `.
    let s = match s.rfind('{') {
        Some(i) if !s[i..].contains('}') && s[..i].trim_end().ends_with(" in") => {
            let rest = &s[i + 1..];
            if rest.trim().is_empty() || rest.trim_end().ends_with(',') {
                s[..i].trim_end().strip_suffix(" in")?
            } else {
                return None;
            }
        }
        _ => {
            let s = s
                .strip_suffix("==")
                .or_else(|| s.strip_suffix("!="))
                .or_else(|| s.strip_suffix(':'))?;
            s.trim_end()
        }
    };
    let key: String = s
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '"' | '.' | '/'))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let key = key.trim_matches('"').to_string();
    (!key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::{slot, value_context, Slot};

    #[test]
    fn finds_the_key() {
        assert_eq!(value_context("selector a = app == "), Some("app".into()));
        assert_eq!(value_context("  applies to app == \""), Some("app".into()));
        assert_eq!(value_context("x tier in { \"a\", "), Some("tier".into()));
        assert_eq!(value_context("labels { app: "), Some("app".into()));
        assert_eq!(value_context("allow from "), None);
    }

    #[test]
    fn judges_the_slot() {
        assert_eq!(slot("    allow tcp 80 from "), Slot::Peer);
        assert_eq!(slot("    allow tcp 80 from we"), Slot::Peer);
        assert_eq!(slot("    deny to any from x to "), Slot::Peer);
        assert_eq!(slot("  applies to "), Slot::Selector);
        assert_eq!(slot("  applies to lo"), Slot::Selector);
        assert_eq!(slot("selector a = "), Slot::Selector);
        assert_eq!(slot("selector a = web && "), Slot::Selector);
        assert_eq!(slot("selector a = !"), Slot::Selector);
        assert_eq!(slot("set a = "), Slot::Set);
        assert_eq!(slot("set a = corp except "), Slot::Set);
        assert_eq!(slot("  expect allow tcp from "), Slot::TestPeer);
        assert_eq!(slot("  expect allow tcp from a to b port 1 by "), Slot::By);
        assert_eq!(slot("policy p priority 1 tier "), Slot::Tier);
        assert_eq!(slot("selector a = app == "), Slot::Value("app".into()));
        assert_eq!(slot("  "), Slot::Any);
        assert_eq!(slot("  al"), Slot::Any);
    }

    #[test]
    fn judges_the_port_name_slot() {
        let named = |proto: Option<&str>, quoted| Slot::PortName {
            proto: proto.map(str::to_string),
            quoted,
        };
        assert_eq!(slot("    allow tcp port \""), named(Some("tcp"), true));
        assert_eq!(slot("    allow udp port \"dn"), named(Some("udp"), true));
        assert_eq!(slot("    allow sctp port "), named(Some("sctp"), false));
        assert_eq!(
            slot("  backends select app == \"web\" port \""),
            named(None, true)
        );
        assert_eq!(slot("  backends select web port ht"), named(None, false));
        // Not a port name: a label key `port`, a test packet's port.
        assert_eq!(slot("selector a = port "), Slot::Any);
        assert_eq!(slot("  expect allow tcp from a to b port "), Slot::Any);
        assert_eq!(slot("    allow tcp 80 from "), Slot::Peer);
    }
}
