//! Rendering diagnostics for people (codespan-reporting) and for tools (JSON).

use super::{Diagnostic, Severity};
use crate::source::SourceMap;
use codespan_reporting::diagnostic as cs;
use codespan_reporting::term::{self, termcolor};
use serde::Serialize;

fn to_codespan(d: &Diagnostic) -> cs::Diagnostic<weir_grammar::FileId> {
    let sev = match d.severity {
        Severity::Error => cs::Severity::Error,
        Severity::Warning => cs::Severity::Warning,
    };
    let mut labels = vec![
        cs::Label::primary(d.primary.span.file, d.primary.span.range())
            .with_message(d.primary.message.clone()),
    ];
    labels.extend(d.secondary.iter().map(|l| {
        cs::Label::secondary(l.span.file, l.span.range()).with_message(l.message.clone())
    }));
    let mut out = cs::Diagnostic::new(sev)
        .with_code(d.code.as_str())
        .with_message(d.message.clone())
        .with_labels(labels);
    if let Some(h) = &d.help {
        out = out.with_notes(vec![format!("help: {h}")]);
    }
    out
}

/// Renders diagnostics as human-readable text, with ANSI colour only when
/// `color` is true.
pub fn human(diags: &[Diagnostic], sources: &SourceMap, color: bool) -> String {
    let config = term::Config::default();
    if color {
        let mut buf = termcolor::Buffer::ansi();
        for d in diags {
            // A span past the end of its file would be a compiler bug; still
            // render something rather than nothing.
            if term::emit_to_write_style(&mut buf, &config, sources, &to_codespan(d)).is_err() {
                plain_fallback(&mut buf, d);
            }
        }
        String::from_utf8_lossy(buf.as_slice()).into_owned()
    } else {
        let mut out = String::new();
        for d in diags {
            match term::emit_into_string(&config, sources, &to_codespan(d)) {
                Ok(s) => out.push_str(&s),
                Err(_) => out.push_str(&format!("{}[{}]: {}\n", d.severity, d.code, d.message)),
            }
        }
        out
    }
}

fn plain_fallback(buf: &mut termcolor::Buffer, d: &Diagnostic) {
    use std::io::Write;
    let _ = writeln!(buf, "{}[{}]: {}", d.severity, d.code, d.message);
}

/// The summary line: `2 errors, 1 warning`.
pub fn summary(diags: &[Diagnostic]) -> String {
    let errors = diags.iter().filter(|d| d.is_error()).count();
    summary_counts(errors, diags.len() - errors)
}

/// The summary line from counts: `2 errors, 1 warning`.
pub fn summary_counts(errors: usize, warnings: usize) -> String {
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    format!(
        "{}, {}",
        plural(errors, "error"),
        plural(warnings, "warning")
    )
}

/// The line that tells how to read a code's documentation, once per run
/// after the diagnostics (as rustc's "For more information about this
/// error, try `rustc --explain E0308`."). `codes` are those shown, sorted.
pub fn explain_hint(codes: &[super::Code]) -> Option<String> {
    match codes {
        [] => None,
        [one] => Some(format!(
            "For more information about this diagnostic, try `weir explain {one}`.\n"
        )),
        [first, ..] => {
            let list: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
            Some(format!(
                "Some diagnostics have detailed explanations: {}.\nFor more information about one, try `weir explain {first}`.\n",
                list.join(", ")
            ))
        }
    }
}

/// One label in the JSON form.
#[derive(Debug, Clone, Serialize)]
pub struct JsonLabel {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
    pub end_column: usize,
    pub span: JsonSpan,
    pub message: String,
    pub primary: bool,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct JsonSpan {
    pub start: u32,
    pub end: u32,
}

/// One diagnostic in the JSON form (`weir check --format json`). Lines and
/// columns are 1-based; columns count Unicode scalar values; `span` is the
/// byte range of the primary label.
#[derive(Debug, Clone, Serialize)]
pub struct JsonDiagnostic {
    pub code: String,
    pub severity: Severity,
    pub message: String,
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
    pub end_column: usize,
    pub span: JsonSpan,
    pub labels: Vec<JsonLabel>,
    pub help: Option<String>,
}

/// The whole JSON report.
#[derive(Debug, Clone, Serialize, Default)]
pub struct JsonReport {
    pub diagnostics: Vec<JsonDiagnostic>,
    pub errors: usize,
    pub warnings: usize,
}

fn json_label(l: &super::Label, primary: bool, sources: &SourceMap) -> JsonLabel {
    let file = sources.file(l.span.file);
    let (line, column) = file.line_col(l.span.start as usize);
    let (end_line, end_column) = file.line_col(l.span.end as usize);
    JsonLabel {
        file: file.name(),
        line,
        column,
        end_line,
        end_column,
        span: JsonSpan {
            start: l.span.start,
            end: l.span.end,
        },
        message: l.message.clone(),
        primary,
    }
}

pub fn json_diagnostic(d: &Diagnostic, sources: &SourceMap) -> JsonDiagnostic {
    let p = json_label(&d.primary, true, sources);
    let mut labels = vec![p.clone()];
    labels.extend(d.secondary.iter().map(|l| json_label(l, false, sources)));
    JsonDiagnostic {
        code: d.code.as_str().to_string(),
        severity: d.severity,
        message: d.message.clone(),
        file: p.file,
        line: p.line,
        column: p.column,
        end_line: p.end_line,
        end_column: p.end_column,
        span: p.span,
        labels,
        help: d.help.clone(),
    }
}

pub fn json_report(diags: &[Diagnostic], sources: &SourceMap) -> JsonReport {
    let errors = diags.iter().filter(|d| d.is_error()).count();
    JsonReport {
        diagnostics: diags.iter().map(|d| json_diagnostic(d, sources)).collect(),
        errors,
        warnings: diags.len() - errors,
    }
}

/// `{"diagnostics": [...], "errors": N, "warnings": N}`, pretty-printed.
pub fn json(diags: &[Diagnostic], sources: &SourceMap) -> String {
    serde_json::to_string_pretty(&json_report(diags, sources)).unwrap_or_else(|_| "{}".into())
}
