//! Rendering diagnostics as a SARIF 2.1.0 log (`weir check --format
//! sarif`), the format code-scanning tools (GitHub code scanning, GitLab,
//! IDE viewers) read to show diagnostics inline.
//!
//! The log has one run. Its `tool.driver.rules` hold one rule per
//! diagnostic code ([`Code::ALL`], in order, so a rule's index is stable
//! across weir runs of one version) with the code's summary and a link to
//! its section of `docs/diagnostics.md`. Each diagnostic becomes a result
//! with its rule id and index, level, message (and help), the primary
//! label as its location and the secondary labels as related locations.
//! Lines and columns are 1-based; columns count UTF-16 code units (SARIF's
//! default `columnKind`, stated explicitly). File names become relative
//! URIs: the caller passes the directory they are relative to.
//!
//! Pure: builds a `serde_json::Value`; the CLI writes it.

use super::{Code, Diagnostic, Label, Severity};
use crate::source::SourceMap;
use serde_json::{json, Map, Value};

/// `$schema` of the log.
pub const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";
/// Where the project's documentation is published is not something the
/// compiler can know: the caller passes it (`weir check --docs-url`, or
/// `WEIR_DOCS_URL`). With it, the driver gets `informationUri` and every
/// rule a `helpUri` of `DOCS/docs/diagnostics.md#anchor` (`## E0201:
/// unknown name` → `#e0201-unknown-name`, as GitHub derives anchors);
/// without it, rules carry their help as text only.
pub const DIAGNOSTICS_DOC_PATH: &str = "docs/diagnostics.md";

/// Collects the results of several programs (each with its own source
/// map) into one log.
#[derive(Debug, Clone)]
pub struct SarifLog {
    version: String,
    base: Option<String>,
    docs: Option<String>,
    results: Vec<Value>,
}

/// The anchor of a code's section in `docs/diagnostics.md`, whose headings
/// read `## CODE: summary`: lower case, punctuation dropped, spaces turned
/// into hyphens (GitHub's rule).
pub fn doc_anchor(code: Code) -> String {
    format!("{}: {}", code.as_str(), code.summary())
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The `helpUri` of a code under the documentation root `docs`:
/// `DOCS/docs/diagnostics.md#e0201-unknown-name`.
pub fn help_uri(docs: &str, code: Code) -> String {
    format!(
        "{}/{DIAGNOSTICS_DOC_PATH}#{}",
        docs.trim_end_matches('/'),
        doc_anchor(code)
    )
}

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

fn rule_index(code: Code) -> usize {
    Code::ALL.iter().position(|c| *c == code).unwrap_or(0)
}

/// Percent-encodes what may not stand in a URI path as is, and turns
/// Windows separators into `/`.
fn uri_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for ch in path.chars() {
        match ch {
            '\\' => out.push('/'),
            'A'..='Z'
            | 'a'..='z'
            | '0'..='9'
            | '-'
            | '.'
            | '_'
            | '~'
            | '/'
            | '!'
            | '$'
            | '&'
            | '\''
            | '('
            | ')'
            | '*'
            | '+'
            | ','
            | ';'
            | '='
            | ':'
            | '@' => out.push(ch),
            _ => {
                let mut buf = [0u8; 4];
                for b in ch.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    out
}

impl SarifLog {
    /// `version` is weir's version (`tool.driver.version`); `base`, when
    /// given, is the directory file names are made relative to (names
    /// outside it stay absolute and become `file://` URIs).
    pub fn new(version: &str, base: Option<&str>) -> SarifLog {
        SarifLog {
            version: version.to_string(),
            base: base.map(|b| {
                let b = b.replace('\\', "/");
                if b.ends_with('/') {
                    b
                } else {
                    format!("{b}/")
                }
            }),
            docs: None,
            results: Vec::new(),
        }
    }

    /// Where the documentation is published (see [`DIAGNOSTICS_DOC_PATH`]).
    pub fn with_docs(mut self, docs: Option<&str>) -> SarifLog {
        self.docs = docs.map(str::to_string);
        self
    }

    /// The artifact URI of a file name.
    pub fn uri(&self, name: &str) -> String {
        let name = name.replace('\\', "/");
        let rel = match &self.base {
            Some(b) => name.strip_prefix(b.as_str()).unwrap_or(&name),
            None => &name,
        };
        let rel = rel.strip_prefix("./").unwrap_or(rel);
        if rel.starts_with('/') {
            format!("file://{}", uri_path(rel))
        } else {
            uri_path(rel)
        }
    }

    fn location(&self, l: &Label, sources: &SourceMap) -> Value {
        let file = sources.file(l.span.file);
        let (sl, sc) = file.line_col_utf16(l.span.start as usize);
        let (el, ec) = file.line_col_utf16(l.span.end as usize);
        json!({
            "physicalLocation": {
                "artifactLocation": { "uri": self.uri(&file.name()) },
                "region": {
                    "startLine": sl + 1,
                    "startColumn": sc + 1,
                    "endLine": el + 1,
                    "endColumn": ec + 1,
                }
            }
        })
    }

    /// Adds one program's diagnostics.
    pub fn add(&mut self, diags: &[Diagnostic], sources: &SourceMap) {
        for d in diags {
            let mut text = d.message.clone();
            if let Some(h) = &d.help {
                text.push_str("\nhelp: ");
                text.push_str(h);
            }
            let mut primary = self.location(&d.primary, sources);
            if !d.primary.message.is_empty() {
                primary["message"] = json!({ "text": d.primary.message });
            }
            let mut result = Map::new();
            result.insert("ruleId".into(), json!(d.code.as_str()));
            result.insert("ruleIndex".into(), json!(rule_index(d.code)));
            result.insert("level".into(), json!(level(d.severity)));
            result.insert("message".into(), json!({ "text": text }));
            result.insert("locations".into(), json!([primary]));
            if !d.secondary.is_empty() {
                let related: Vec<Value> = d
                    .secondary
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        let mut loc = self.location(l, sources);
                        loc["id"] = json!(i);
                        loc["message"] = json!({ "text": l.message });
                        loc
                    })
                    .collect();
                result.insert("relatedLocations".into(), Value::Array(related));
            }
            self.results.push(Value::Object(result));
        }
    }

    /// The finished log.
    pub fn to_value(&self) -> Value {
        let rules: Vec<Value> = Code::ALL
            .iter()
            .map(|c| {
                let mut r = json!({
                    "id": c.as_str(),
                    "shortDescription": { "text": c.summary() },
                    "help": { "text": format!("{}: see {DIAGNOSTICS_DOC_PATH}, section {}", c.summary(), c.as_str()) },
                    "defaultConfiguration": { "level": level(c.severity()) },
                });
                if let Some(docs) = &self.docs {
                    r["helpUri"] = json!(help_uri(docs, *c));
                }
                r
            })
            .collect();
        let mut driver = json!({
            "name": "weir",
            "version": self.version,
            "rules": rules,
        });
        if let Some(docs) = &self.docs {
            driver["informationUri"] = json!(docs);
        }
        json!({
            "$schema": SCHEMA,
            "version": "2.1.0",
            "runs": [{
                "tool": { "driver": driver },
                "columnKind": "utf16CodeUnits",
                "results": self.results,
            }]
        })
    }

    /// The finished log, pretty-printed, with a trailing newline.
    pub fn render(&self) -> String {
        let mut s = serde_json::to_string_pretty(&self.to_value()).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_relative_and_encoded() {
        let log = SarifLog::new("0.1.0", Some("/repo"));
        assert_eq!(log.uri("/repo/policies/a.weir"), "policies/a.weir");
        assert_eq!(log.uri("./a b.weir"), "a%20b.weir");
        assert_eq!(
            log.uri("/elsewhere/ä.weir"),
            "file:///elsewhere/%C3%A4.weir"
        );
        assert_eq!(log.uri("dir\\x.weir"), "dir/x.weir");
    }

    #[test]
    fn one_rule_per_code_with_help() {
        let v = SarifLog::new("0.1.0", None).to_value();
        let rules = v["runs"][0]["tool"]["driver"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), Code::ALL.len());
        assert_eq!(rules[0]["id"], Code::ALL[0].as_str());
        assert_eq!(
            help_uri("https://docs.example/weir/", Code::E0201),
            "https://docs.example/weir/docs/diagnostics.md#e0201-unknown-name"
        );
        assert_eq!(doc_anchor(Code::E0230), "e0230-policy-without-applies-to");
        assert_eq!(v["runs"][0]["results"], json!([]));
    }
}
