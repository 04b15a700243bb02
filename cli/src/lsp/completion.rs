//! Completion: label values after `KEY ==`, `KEY !=`, `KEY in {` or
//! `KEY:`; otherwise keywords, declared names and label keys.

use super::analysis::{Analysis, SymKind};
use lsp_types::{CompletionItem, CompletionItemKind};
use std::collections::BTreeSet;
use weir_grammar::lexer::KEYWORDS;

/// `line` is the text of the current line before the cursor.
pub fn complete(a: &Analysis, line: &str) -> Vec<CompletionItem> {
    if let Some(key) = value_context(line) {
        let quoted = line.trim_end().ends_with('"');
        return a
            .index
            .labels
            .get(&key)
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
            .collect();
    }
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for d in &a.index.defs {
        if d.kind == SymKind::Test || !seen.insert(d.name.clone()) {
            continue;
        }
        out.push(CompletionItem {
            label: d.name.clone(),
            kind: Some(match d.kind {
                SymKind::Selector | SymKind::Set => CompletionItemKind::VARIABLE,
                SymKind::Endpoint => CompletionItemKind::CONSTANT,
                SymKind::Service => CompletionItemKind::CLASS,
                SymKind::Policy | SymKind::Steer => CompletionItemKind::MODULE,
                SymKind::Tier => CompletionItemKind::ENUM_MEMBER,
                SymKind::Test => CompletionItemKind::TEXT,
            }),
            detail: Some(d.kind.noun().to_string()),
            ..Default::default()
        });
    }
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
    for k in KEYWORDS {
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
    use super::value_context;

    #[test]
    fn finds_the_key() {
        assert_eq!(value_context("selector a = app == "), Some("app".into()));
        assert_eq!(value_context("  applies to app == \""), Some("app".into()));
        assert_eq!(value_context("x tier in { \"a\", "), Some("tier".into()));
        assert_eq!(value_context("labels { app: "), Some("app".into()));
        assert_eq!(value_context("allow from "), None);
    }
}
