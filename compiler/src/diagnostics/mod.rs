//! Diagnostics as data.
//!
//! A [`Diagnostic`] is built from a [`Kind`] (what went wrong, with its
//! data and spans) by [`Kind::into_diagnostic`] in [`messages`], the one
//! module that owns all message text. Rendering (human via
//! codespan-reporting, JSON) lives in [`render`] and SARIF in [`sarif`],
//! at the edge.
//!
//! Codes are stable: `E00xx` lexical and syntax, `E01xx` imports and files,
//! `E02xx` validation and names, `W03xx` lints, `W04xx` decision-graph
//! analysis, `E05xx` what a back end refuses or cannot hold and
//! `E06xx` / `W06xx` what `weir import k8s` says about its input.

mod graph_findings;
mod messages;
pub mod render;
pub mod sarif;
pub use graph_findings::diagnostics as graph_diagnostics;

pub use messages::{
    Construct, K8sProblem, Kind, NameKind, PortProblem, Refusal, ServiceLine, StageOverflow,
};

use serde::Serialize;
use std::fmt;
use weir_grammar::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

macro_rules! codes {
    ($($code:ident => $sev:ident, $summary:literal;)*) => {
        /// A stable diagnostic code. `docs/diagnostics.md` documents each.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code { $($code),* }

        impl Code {
            /// Every code, in order.
            pub const ALL: &'static [Code] = &[$(Code::$code),*];

            /// `"E0201"`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$code => stringify!($code)),* }
            }

            pub fn severity(self) -> Severity {
                match self { $(Code::$code => Severity::$sev),* }
            }

            /// One line saying what the code means.
            pub fn summary(self) -> &'static str {
                match self { $(Code::$code => $summary),* }
            }

            pub fn parse(s: &str) -> Option<Code> {
                match s { $(stringify!($code) => Some(Code::$code),)* _ => None }
            }
        }
    };
}

codes! {
    E0001 => Error, "a character that starts no token";
    E0002 => Error, "unterminated string literal";
    E0003 => Error, "malformed address";
    E0004 => Error, "malformed CIDR or prefix length out of range";
    E0005 => Error, "number out of range";
    E0006 => Error, "malformed duration";
    E0007 => Error, "unclosed `{`";
    E0010 => Error, "unexpected token";
    E0011 => Error, "unexpected end of file";
    E0012 => Error, "nesting limit exceeded";
    E0013 => Error, "selector nested too deeply after inlining";
    E0014 => Error, "inventory is not a regular file";
    E0015 => Error, "inventory too large";
    E0016 => Error, "inventory outside the project";
    E0017 => Error, "file is not an endpoint inventory";

    E0101 => Error, "import names no file";
    E0102 => Error, "cannot read file";
    E0103 => Error, "malformed endpoint inventory";
    E0104 => Error, "malformed import path";

    E0201 => Error, "unknown name";
    E0202 => Error, "CIDR has host bits set";
    E0203 => Error, "name defined twice";
    E0204 => Error, "bad port or port range";
    E0205 => Error, "empty set";
    E0206 => Error, "name of the wrong kind";
    E0207 => Error, "selector refers to itself";
    E0208 => Error, "set refers to itself";
    E0209 => Error, "value out of range";
    E0210 => Error, "address belongs to two endpoints";
    E0211 => Error, "label key given twice";
    E0212 => Error, "a single address is required, not a CIDR";
    E0220 => Error, "service without frontend";
    E0221 => Error, "service needs exactly one backends line";
    E0222 => Error, "frontend shared by two services";
    E0223 => Error, "service line given twice";
    E0230 => Error, "policy without `applies to`";
    E0231 => Error, "`applies to` given twice";
    E0232 => Error, "peer written with the wrong keyword for the direction";
    E0233 => Error, "rule block for a direction given twice";
    E0234 => Error, "unknown tier";
    E0235 => Error, "ICMP code without type";
    E0236 => Error, "label map outside a test";
    E0237 => Error, "no free address for a test peer";
    E0238 => Error, "`via` names no backend of the service";
    E0239 => Error, "`by` name is ambiguous";
    E0250 => Error, "test packet without destination port";
    E0251 => Error, "test peer names no endpoint";
    E0252 => Error, "test peers have no common address family";
    E0253 => Error, "`by` names no policy, steer or service";
    E0254 => Error, "test port on a protocol without ports";
    E0255 => Error, "test peer is not a single address";
    E0256 => Error, "ICMP test packet of the other address family";
    E0260 => Error, "`self` where no endpoint side is judged";
    E0261 => Error, "`world` where no endpoint side is judged";
    E0264 => Error, "port name given twice for one protocol on an endpoint";
    E0265 => Error, "malformed named-port label";
    E0266 => Error, "named port where it has no destination to resolve against";
    E0267 => Error, "(retired) named target port on frontends of several protocols";
    E0270 => Error, "endpoint names an undeclared node";
    E0271 => Error, "line not allowed in a node or endpoint";
    E0272 => Error, "host-network endpoint without a node or with an address";
    E0273 => Error, "`node` or `nodes` where no endpoint side is judged";
    E0274 => Error, "address of two nodes";
    E0275 => Error, "namespace test inside a namespace test";
    E0276 => Error, "reserved namespace label on an endpoint";
    E0277 => Error, "endpoint in two namespaces";

    W0301 => Warning, "unused selector or set";
    W0302 => Warning, "selector matches no endpoint";
    W0303 => Warning, "`except` element outside its base set";
    W0304 => Warning, "policy turns on default deny";
    W0305 => Warning, "service selects no endpoint";
    W0306 => Warning, "ICMP rule of the other address family";
    W0310 => Warning, "no endpoint declares the named port";
    W0311 => Warning, "named port declared only with another protocol";
    W0312 => Warning, "selected backends without the named target port";
    W0320 => Warning, "`nodes` selects no declared node";
    W0330 => Warning, "node-local Kubernetes Service imported without a node";
    W0325 => Warning, "namespace test no namespace satisfies";

    W0401 => Warning, "rule never takes effect (shadowed)";
    W0402 => Warning, "conflicting rules at the same priority";
    W0403 => Warning, "policy selects no endpoint";
    W0404 => Warning, "steering rule never matches first (shadowed)";

    E0501 => Error, "a back end cannot express a construct";
    E0510 => Error, "a back-end capacity limit is exceeded";
    E0525 => Error, "eBPF cannot redirect SCTP to a proxy";
    E0555 => Error, "the kernel lacks a kernel function the bundle calls";
    E0570 => Error, "redirect proxy address not on the host applying the bundle";
    E0575 => Error, "redirect to a proxy address that is not on the node";
    E0576 => Error, "redirect to a proxy address of one of several nodes";

    E0601 => Error, "malformed Kubernetes input";
    E0602 => Error, "Kubernetes object cannot be imported exactly";
    W0601 => Warning, "unsupported Kubernetes field translated fail closed";
    W0602 => Warning, "Kubernetes object kind not imported";
    W0603 => Warning, "Kubernetes CIDR with host bits masked";
    W0604 => Warning, "part of a Kubernetes object not imported";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A span with a message pointing at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

impl Label {
    pub fn new(span: Span, message: impl Into<String>) -> Label {
        Label {
            span,
            message: message.into(),
        }
    }
}

/// One diagnostic, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub primary: Label,
    pub secondary: Vec<Label>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The order diagnostics are reported in: by file, position, code.
    pub fn sort_key(&self) -> (Span, Code, &str) {
        (self.primary.span, self.code, &self.message)
    }
}

/// Sorts diagnostics into report order and drops exact duplicates.
pub fn sort(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    diags.dedup();
}
