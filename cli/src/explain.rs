//! `weir explain CODE`: the documentation of one diagnostic code, cut from
//! docs/diagnostics.md (compiled in, so the text printed is the text
//! published: one source of truth).

use crate::program;
use clap::ValueEnum;
use weir_compiler::diagnostics::Code;

/// The whole diagnostics reference, as published.
const DOC: &str = include_str!("../../docs/diagnostics.md");

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A diagnostic code, e.g. E0202 (case does not matter).
    pub code: String,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

/// The section of docs/diagnostics.md for `code`: from its `## CODE:`
/// heading to the next `## ` heading (the heading included).
pub fn section(code: Code) -> Option<&'static str> {
    let heading = format!("## {}:", code.as_str());
    let start = DOC
        .match_indices(&heading)
        .map(|(i, _)| i)
        .find(|&i| i == 0 || DOC.as_bytes()[i - 1] == b'\n')?;
    let rest = &DOC[start..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 4);
    Some(rest[..end].trim_end())
}

pub fn run(args: Args) -> i32 {
    let Some(code) = Code::parse(&args.code.to_ascii_uppercase()) else {
        return program::usage(format_args!(
            "{} is not a weir diagnostic code (codes look like E0202 or W0301; docs/diagnostics.md lists them all)",
            args.code
        ));
    };
    let Some(text) = section(code) else {
        return program::usage(format_args!(
            "{code} has no section in docs/diagnostics.md (a documentation bug)"
        ));
    };
    match args.format {
        Format::Human => crate::outln!("{text}"),
        Format::Json => crate::out::json_pretty(&serde_json::json!({
            "code": code.as_str(),
            "severity": code.severity(),
            "summary": code.summary(),
            "documentation": text,
        })),
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_section() {
        for &code in Code::ALL {
            let s = section(code).unwrap_or_else(|| panic!("{code} undocumented"));
            assert!(s.starts_with(&format!("## {code}: ")), "{s}");
            assert!(!s[3..].contains("\n## "), "one section only: {s}");
        }
    }
}
