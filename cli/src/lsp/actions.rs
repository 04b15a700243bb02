//! Code actions for the fixes diagnostics suggest: remove an unused
//! definition (W0301), replace a name with the one a "did you mean"
//! suggests.

use super::convert::{offset, range};
use lsp_types::{
    CodeAction, CodeActionKind, Diagnostic, NumberOrString, TextEdit, Uri, WorkspaceEdit,
};
use std::collections::HashMap;
use weir_compiler::source::SourceFile;
use weir_grammar::ast::File;

fn code(d: &Diagnostic) -> &str {
    match &d.code {
        Some(NumberOrString::String(s)) => s,
        _ => "",
    }
}

/// The name a "did you mean `X`?" help suggests.
fn suggestion(d: &Diagnostic) -> Option<String> {
    let help = d
        .data
        .as_ref()
        .and_then(|v| v.get("help"))
        .and_then(|h| h.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| d.message.clone());
    let rest = &help[help.find("did you mean `")? + "did you mean `".len()..];
    Some(rest[..rest.find('`')?].to_string())
}

fn action(title: String, uri: &Uri, edit: TextEdit, d: &Diagnostic) -> CodeAction {
    CodeAction {
        title,
        kind: Some(CodeActionKind::QUICKFIX),
        diagnostics: Some(vec![d.clone()]),
        edit: Some(WorkspaceEdit {
            changes: Some(HashMap::from([(uri.clone(), vec![edit])])),
            ..Default::default()
        }),
        is_preferred: Some(true),
        ..Default::default()
    }
}

pub fn actions(uri: &Uri, f: &SourceFile, ast: &File, diags: &[Diagnostic]) -> Vec<CodeAction> {
    let mut out = Vec::new();
    for d in diags {
        let at = offset(f, d.range.start);
        if code(d) == "W0301" {
            let Some(item) = ast
                .items
                .iter()
                .find(|i| i.span().start as usize <= at && at <= i.span().end as usize)
            else {
                continue;
            };
            // Whole lines, and one blank line after when there is one.
            let start = f.line_range(f.line_index(item.span().start as usize)).start;
            let last = f.line_index(item.span().end as usize);
            let mut end_line = last + 1;
            if end_line < f.line_count() && f.text[f.line_range(end_line)].trim().is_empty() {
                end_line += 1;
            }
            let end = if end_line < f.line_count() {
                f.line_range(end_line).start
            } else {
                f.text.len()
            };
            let name = d.message.split('`').nth(1).unwrap_or("definition");
            out.push(action(
                format!("Remove unused `{name}`"),
                uri,
                TextEdit {
                    range: range(f, start, end),
                    new_text: String::new(),
                },
                d,
            ));
        } else if let Some(s) = suggestion(d) {
            out.push(action(
                format!("Replace with `{s}`"),
                uri,
                TextEdit {
                    range: d.range,
                    new_text: s,
                },
                d,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lsp_types::{Position, Range};
    use std::str::FromStr;
    use weir_grammar::FileId;

    #[test]
    fn removes_an_unused_definition_with_its_blank_line() {
        let text = "selector a = all\n\nselector b = all\n";
        let f = SourceFile::new("x.weir".into(), text.into());
        let (ast, _) = weir_grammar::parse(FileId(0), text);
        let d = Diagnostic {
            range: Range::new(Position::new(0, 9), Position::new(0, 10)),
            code: Some(NumberOrString::String("W0301".into())),
            message: "selector `a` is never used".into(),
            ..Default::default()
        };
        let uri = Uri::from_str("file:///x.weir").unwrap();
        let acts = actions(&uri, &f, &ast, &[d]);
        assert_eq!(acts[0].title, "Remove unused `a`");
        let edits = &acts[0].edit.as_ref().unwrap().changes.as_ref().unwrap()[&uri];
        assert_eq!(
            edits[0].range,
            Range::new(Position::new(0, 0), Position::new(2, 0))
        );
    }
}
