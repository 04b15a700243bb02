//! From text to objects: YAML or JSON as `kubectl get … -o yaml|json`
//! prints it — one object, a `List` (`items`), or several YAML documents
//! separated by `---`. JSON is YAML, so one parser reads both.
//!
//! Each object keeps a span into its file (the line naming it, else the
//! start of its document) so a diagnostic points at the object.

use super::report::Reporter;
use serde_json::Value;
use weir_grammar::{FileId, Span};

/// One Kubernetes object and where it came from.
#[derive(Debug, Clone)]
pub struct Obj {
    pub kind: String,
    pub api_version: String,
    pub namespace: Option<String>,
    pub name: String,
    pub value: Value,
    pub span: Span,
}

impl Obj {
    /// `Kind namespace/name` (or `Kind name` when cluster scoped), as
    /// diagnostics and comments name an object.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

/// The byte ranges of the YAML documents of `text`.
fn documents(text: &str) -> Vec<(usize, usize)> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut off = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") || t == "..." {
            docs.push((start, off));
            start = off + line.len();
        }
        off += line.len();
    }
    docs.push((start, text.len()));
    docs.retain(|&(s, e)| {
        text[s..e]
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

/// The span of the first line of `text[start..end]` that says `name: NAME`
/// (or `"name": "NAME"`), else of the document's first line.
fn locate(text: &str, file: FileId, start: usize, end: usize, name: &str) -> Span {
    let doc = &text[start..end];
    let mut off = start;
    for line in doc.split_inclusive('\n') {
        let t = line.trim().trim_end_matches(',');
        let t = t.trim_start_matches("- ");
        let plain = format!("name: {name}");
        let quoted = format!("\"name\": \"{name}\"");
        let single = format!("name: \"{name}\"");
        if t == plain || t == quoted || t == single {
            let lead = line.len() - line.trim_start().len();
            return Span::new(file, off + lead, off + line.trim_end().len());
        }
        off += line.len();
    }
    let first = doc.find(|c: char| !c.is_whitespace()).unwrap_or(0);
    let line_end = doc[first..].find('\n').map_or(doc.len(), |i| first + i);
    Span::new(file, start + first, start + line_end)
}

/// Parses every object of one file.
pub fn parse_file(text: &str, file: FileId, rep: &mut Reporter) -> Vec<Obj> {
    let mut out = Vec::new();
    for (start, end) in documents(text) {
        let doc_span = locate(text, file, start, end, "\u{0}");
        let value: Value = match serde_norway::from_str(&text[start..end]) {
            Ok(v) => v,
            Err(e) => {
                let span = match e.location() {
                    Some(l) => {
                        let at = (start + l.index()).min(text.len());
                        Span::new(file, at, at)
                    }
                    None => doc_span,
                };
                rep.malformed(span, "input", format!("not YAML or JSON: {e}"));
                continue;
            }
        };
        collect(value, text, file, start, end, doc_span, rep, &mut out);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn collect(
    value: Value,
    text: &str,
    file: FileId,
    start: usize,
    end: usize,
    doc_span: Span,
    rep: &mut Reporter,
    out: &mut Vec<Obj>,
) {
    if value.is_null() {
        return;
    }
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind == "List" || kind.ends_with("List") && value.get("items").is_some() {
        match value.get("items").and_then(Value::as_array) {
            Some(items) => {
                for item in items.clone() {
                    collect(item, text, file, start, end, doc_span, rep, out);
                }
            }
            None => rep.malformed(doc_span, "List", "`items` is not a list".into()),
        }
        return;
    }
    let Some(kind) = value
        .get("kind")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        rep.malformed(doc_span, "input", "an object without `kind`".into());
        return;
    };
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let meta = value.get("metadata");
    let Some(name) = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        rep.malformed(doc_span, &kind, "an object without `metadata.name`".into());
        return;
    };
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let span = locate(text, file, start, end, &name);
    out.push(Obj {
        kind,
        api_version,
        namespace,
        name,
        value,
        span,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_lists() {
        let text = "# c\n---\nkind: Namespace\nmetadata:\n  name: x\n---\n\
                    kind: List\nitems:\n- kind: Pod\n  metadata:\n    name: a\n    namespace: x\n";
        let mut rep = Reporter::default();
        let objs = parse_file(text, FileId(0), &mut rep);
        assert!(rep.diagnostics.is_empty(), "{:?}", rep.diagnostics);
        let names: Vec<String> = objs.iter().map(Obj::describe).collect();
        assert_eq!(names, ["Namespace x", "Pod x/a"]);
        assert_eq!(
            &text[objs[1].span.start as usize..objs[1].span.end as usize],
            "name: a"
        );
    }

    #[test]
    fn json_and_errors() {
        let text = "{\"kind\": \"Namespace\", \"metadata\": {\"name\": \"y\"}}";
        let mut rep = Reporter::default();
        assert_eq!(parse_file(text, FileId(0), &mut rep).len(), 1);
        let objs = parse_file("kind: [\n", FileId(0), &mut rep);
        assert!(objs.is_empty());
        assert_eq!(rep.diagnostics.len(), 1);
    }
}
