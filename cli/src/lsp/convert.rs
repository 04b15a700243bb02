//! Conversions between the compiler's data and LSP types: file URIs and
//! paths, byte offsets and UTF-16 positions, diagnostics.

use lsp_types::{
    DiagnosticRelatedInformation, DiagnosticSeverity, Location, NumberOrString, Position, Range,
    Uri,
};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use weir_compiler::diagnostics::{Diagnostic, Severity};
use weir_compiler::source::{SourceFile, SourceMap};
use weir_grammar::Span;

/// The path of a `file:` URI (percent-decoded); `None` for other schemes.
pub fn uri_to_path(uri: &Uri) -> Option<PathBuf> {
    let s = uri.as_str();
    let rest = s.strip_prefix("file://")?;
    // `file:///path` (empty authority) or `file://localhost/path`.
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    let bytes = rest.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&rest[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    let path = String::from_utf8(out).ok()?;
    Some(weir_compiler::source::normalize(Path::new(&path)))
}

/// The `file:` URI of an absolute path.
pub fn path_to_uri(path: &Path) -> Uri {
    let mut s = String::from("file://");
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    Uri::from_str(&s).unwrap_or_else(|_| Uri::from_str("file:///").expect("valid URI"))
}

pub fn position(file: &SourceFile, offset: usize) -> Position {
    let (line, character) = file.line_col_utf16(offset);
    Position { line, character }
}

pub fn offset(file: &SourceFile, pos: Position) -> usize {
    file.offset_utf16(pos.line, pos.character)
}

pub fn range(file: &SourceFile, start: usize, end: usize) -> Range {
    Range {
        start: position(file, start),
        end: position(file, end),
    }
}

pub fn span_range(sources: &SourceMap, span: Span) -> Range {
    match sources.get(span.file) {
        Some(f) => range(f, span.start as usize, span.end as usize),
        None => Range::default(),
    }
}

pub fn location(sources: &SourceMap, span: Span) -> Option<Location> {
    let f = sources.get(span.file)?;
    Some(Location {
        uri: path_to_uri(&f.path),
        range: range(f, span.start as usize, span.end as usize),
    })
}

/// A compiler diagnostic as an LSP one; secondary labels become related
/// information, the help text is appended to the message.
pub fn diagnostic(d: &Diagnostic, sources: &SourceMap) -> lsp_types::Diagnostic {
    let mut message = d.message.clone();
    if !d.primary.message.is_empty() {
        message.push_str(&format!("\n{}", d.primary.message));
    }
    if let Some(h) = &d.help {
        message.push_str(&format!("\nhelp: {h}"));
    }
    let related: Vec<DiagnosticRelatedInformation> = d
        .secondary
        .iter()
        .filter_map(|l| {
            Some(DiagnosticRelatedInformation {
                location: location(sources, l.span)?,
                message: l.message.clone(),
            })
        })
        .collect();
    lsp_types::Diagnostic {
        range: span_range(sources, d.primary.span),
        severity: Some(match d.severity {
            Severity::Error => DiagnosticSeverity::ERROR,
            Severity::Warning => DiagnosticSeverity::WARNING,
        }),
        code: Some(NumberOrString::String(d.code.as_str().to_string())),
        source: Some("weir".to_string()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        data: d.help.as_ref().map(|h| serde_json::json!({ "help": h })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        let p = PathBuf::from("/tmp/a b/c%d.weir");
        let u = path_to_uri(&p);
        assert_eq!(u.as_str(), "file:///tmp/a%20b/c%25d.weir");
        assert_eq!(uri_to_path(&u), Some(p));
    }
}
