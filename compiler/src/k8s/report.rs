//! Collects the importer's diagnostics (codes E06xx / W06xx; the wording
//! is in `diagnostics/messages.rs` like every other message).

use crate::diagnostics::{Diagnostic, K8sProblem, Kind};
use weir_grammar::Span;

#[derive(Debug, Default)]
pub struct Reporter {
    pub diagnostics: Vec<Diagnostic>,
}

impl Reporter {
    pub fn push(&mut self, span: Span, problem: K8sProblem) {
        self.diagnostics
            .push(Kind::K8s { span, problem }.into_diagnostic());
    }

    pub fn malformed(&mut self, span: Span, object: &str, problem: String) {
        self.push(
            span,
            K8sProblem::Malformed {
                object: object.to_string(),
                problem,
            },
        );
    }

    pub fn refused(&mut self, span: Span, object: &str, field: &str, reason: impl Into<String>) {
        self.push(
            span,
            K8sProblem::Refused {
                object: object.to_string(),
                field: field.to_string(),
                reason: reason.into(),
            },
        );
    }

    pub fn fail_closed(
        &mut self,
        span: Span,
        object: &str,
        field: &str,
        effect: impl Into<String>,
    ) {
        self.push(
            span,
            K8sProblem::FailClosed {
                object: object.to_string(),
                field: field.to_string(),
                effect: effect.into(),
            },
        );
    }

    pub fn not_imported(
        &mut self,
        span: Span,
        object: &str,
        what: impl Into<String>,
        why: impl Into<String>,
    ) {
        self.push(
            span,
            K8sProblem::NotImported {
                object: object.to_string(),
                what: what.into(),
                why: why.into(),
            },
        );
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}
