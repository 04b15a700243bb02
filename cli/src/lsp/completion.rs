//! Completion that fits the position, judged from the line before the
//! cursor: label values after `KEY ==`, `KEY !=`, `KEY in {` or `KEY:`;
//! selectors, sets and label keys where a selector or peer is written
//! (`from`, `to`, `applies to`, `selector NAME =`, `&&`, …); tiers after a
//! policy's `tier`; deciders after `by`; keywords, declared names and label
//! keys everywhere else (the start of a line).

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
        Slot::Any | Slot::Value(_) => (ANY_KIND, true, KEYWORDS),
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

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// What fits after `line` (the text before the cursor), ignoring the
/// word being typed.
fn slot(line: &str) -> Slot {
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
}
