//! Every diagnostic's wording, in one place.
//!
//! The checker and the grammar report *what* went wrong as a [`Kind`]
//! with data; this module decides how it reads. Keep messages short,
//! lower-case, without a trailing period; names in backticks; put the fix
//! in `help`.

use super::{Code, Diagnostic, Label};
use crate::contract::Target;
use std::net::IpAddr;
use weir_grammar::ast::{Direction, Proto};
use weir_grammar::{Form, Span, SyntaxError, SyntaxErrorKind};

/// The kinds of named things, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NameKind {
    Selector,
    Set,
    Endpoint,
    Service,
    Policy,
    Tier,
    Steer,
    Test,
    Node,
    Namespace,
}

impl NameKind {
    pub fn noun(self) -> &'static str {
        match self {
            NameKind::Selector => "selector",
            NameKind::Set => "set",
            NameKind::Endpoint => "endpoint",
            NameKind::Service => "service",
            NameKind::Policy => "policy",
            NameKind::Tier => "tier",
            NameKind::Steer => "steer block",
            NameKind::Test => "test",
            NameKind::Node => "node",
            NameKind::Namespace => "namespace",
        }
    }

    fn article(self) -> &'static str {
        match self {
            NameKind::Endpoint => "an",
            _ => "a",
        }
    }
}

/// Why a port or port range is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortProblem {
    Zero,
    Reversed { lo: u64, hi: u64 },
}

/// A service line that may appear only once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceLine {
    Balance,
    Affinity,
}

/// What went wrong, with its data. [`Kind::into_diagnostic`] renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// E0001–E0011, from the parser.
    Syntax(SyntaxError),

    ImportNotFound {
        span: Span,
        module: String,
        path: String,
        is_std: bool,
    },
    CannotRead {
        span: Span,
        path: String,
        error: String,
    },
    BadInventory {
        span: Span,
        problem: String,
    },
    BadImportPath {
        span: Span,
    },
    /// E0014: an inventory path names a device, FIFO, directory, ...
    InventoryNotRegular {
        span: Span,
        path: String,
        what: &'static str,
    },
    /// E0015: an inventory file over the size limit.
    InventoryTooLarge {
        span: Span,
        path: String,
        size: u64,
        limit: u64,
    },
    /// E0016: an `inventory` item names a file outside the project.
    InventoryOutsideProject {
        span: Span,
        path: String,
        project: Vec<String>,
    },
    /// E0017: the file is not a JSON object; the span covers a short
    /// excerpt of its first line (all the source map holds of it).
    NotAnInventory {
        span: Span,
        path: String,
    },

    UnknownName {
        span: Span,
        name: String,
        expected: &'static str,
        suggestion: Option<String>,
    },
    HostBits {
        span: Span,
        written: String,
        network: String,
    },
    Duplicate {
        kind: NameKind,
        name: String,
        span: Span,
        first: Span,
    },
    BadPort {
        span: Span,
        problem: PortProblem,
    },
    EmptySet {
        span: Span,
    },
    WrongKind {
        span: Span,
        name: String,
        found: NameKind,
        expected: &'static str,
        defined: Option<Span>,
    },
    /// E0013: inlining named selectors built a selector deeper than the
    /// checker's limit.
    SelectorTooDeep {
        span: Span,
        name: String,
        depth: usize,
        limit: usize,
    },
    SelectorCycle {
        span: Span,
        name: String,
        /// The other selectors on the cycle, with where each refers onwards.
        through: Vec<(String, Span)>,
    },
    SetCycle {
        span: Span,
        name: String,
        through: Vec<(String, Span)>,
    },
    OutOfRange {
        span: Span,
        what: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    AddressInTwoEndpoints {
        span: Span,
        addr: String,
        endpoint: String,
        other: String,
        first: Span,
    },
    DuplicateLabel {
        span: Span,
        key: String,
        first: Span,
    },
    NotAnAddress {
        span: Span,
        written: String,
        what: &'static str,
    },

    NoFrontend {
        span: Span,
        service: String,
    },
    BackendsCount {
        span: Span,
        service: String,
        /// Spans of every `backends` line (empty when there is none).
        lines: Vec<Span>,
    },
    SharedFrontend {
        span: Span,
        frontend: String,
        service: String,
        other: String,
        first: Span,
    },
    DuplicateServiceLine {
        span: Span,
        line: ServiceLine,
        first: Span,
    },

    NoAppliesTo {
        span: Span,
        policy: String,
    },
    DuplicateAppliesTo {
        span: Span,
        first: Span,
    },
    WrongPeerKeyword {
        span: Span,
        direction: Direction,
    },
    DuplicateBlock {
        span: Span,
        direction: Direction,
        first: Span,
    },
    UnknownTier {
        span: Span,
        name: String,
        suggestion: Option<String>,
    },
    IcmpCodeWithoutType {
        span: Span,
    },
    LabelMapOutsideTest {
        span: Span,
    },
    /// E0260: `self` in a steering rule or a test packet.
    SelfOutsidePolicy {
        span: Span,
        place: &'static str,
    },
    /// E0261: `world` in a steering rule or a test packet.
    WorldOutsidePolicy {
        span: Span,
        place: &'static str,
    },
    /// E0270: `node NAME` (or an inventory `"node"`) names no declared node.
    UnknownNode {
        span: Span,
        endpoint: String,
        node: String,
    },
    /// E0271: a line a node or endpoint cannot have (`what`, `why`).
    NodeLine {
        span: Span,
        what: &'static str,
        why: &'static str,
    },
    /// E0272: a host-network endpoint without `node`, or with an address.
    HostNetworkShape {
        span: Span,
        endpoint: String,
        has_addr: bool,
    },
    /// E0273: `node` / `nodes` where no endpoint side is judged.
    NodeOutsidePolicy {
        span: Span,
        place: &'static str,
    },
    /// E0274: an address of two nodes.
    AddressInTwoNodes {
        span: Span,
        addr: String,
        node: String,
        other: String,
    },
    /// W0320: `nodes SEL` selects no declared node.
    NodesSelectNone {
        span: Span,
    },

    TestPortMissing {
        span: Span,
        proto: Proto,
    },
    UnknownTestEndpoint {
        span: Span,
        name: String,
        suggestion: Option<String>,
        /// What the name is instead, if it names something else.
        is: Option<NameKind>,
    },
    TestNoAddressOfFamily {
        span: Span,
        endpoint: String,
        family: &'static str,
    },
    /// E0256: an `icmp` test packet between IPv6 addresses, or `icmp6`
    /// between IPv4 ones.
    TestIcmpFamily {
        span: Span,
        proto: Proto,
    },
    TestMixedFamilies {
        span: Span,
        from: &'static str,
        to: &'static str,
    },
    UnknownBy {
        span: Span,
        name: String,
        suggestion: Option<String>,
    },
    /// E0253 with a kind: `by policy NAME` names no policy.
    UnknownByOfKind {
        span: Span,
        name: String,
        kind: &'static str,
    },
    /// E0237: no address in the test range is free of endpoints.
    NoFreeTestAddress {
        span: Span,
        what: &'static str,
        range: &'static str,
    },
    /// E0238: `via` names no backend of the service the packet reaches.
    BadVia {
        span: Span,
        via: String,
        /// The service the packet reaches, if any.
        service: Option<String>,
    },
    /// E0239: `by NAME` names more than one kind of thing.
    AmbiguousBy {
        span: Span,
        name: String,
        kinds: Vec<&'static str>,
    },
    TestPortOnIcmp {
        span: Span,
    },
    BadTestPeer {
        span: Span,
    },

    Unused {
        span: Span,
        kind: NameKind,
        name: String,
    },
    MatchesNothing {
        span: Span,
        what: String,
    },
    ExceptOutsideBase {
        span: Span,
        element: String,
        base: Span,
    },
    DefaultDenyTurnedOn {
        span: Span,
        policy: String,
        direction: Direction,
        endpoints: Vec<String>,
    },
    ServiceSelectsNothing {
        span: Span,
        service: String,
    },
    /// E0264: `name` declared twice on one endpoint (`first`: the earlier
    /// declaration, when in source).
    DuplicatePortName {
        span: Span,
        name: String,
        first: Option<Span>,
    },
    /// E0265: a label key starting `port:` that is not a well-formed
    /// named port (`port:NAME/PROTO` with a port 1–65535).
    BadPortLabel {
        span: Span,
        key: String,
    },
    /// E0266: a named port in a steering rule (`what`: where).
    NamedPortMisplaced {
        span: Span,
        what: &'static str,
    },
    /// W0312: endpoints a `backends select … port "NAME"` selects that do
    /// not declare NAME for the frontends' protocol (`count` of them;
    /// `endpoints`: the first few names).
    BackendsWithoutPort {
        span: Span,
        service: String,
        name: String,
        endpoints: Vec<String>,
        count: usize,
    },
    /// E0275: `namespace(…)` inside a namespace test (written there, or
    /// through a named selector).
    NestedNamespaceTest {
        span: Span,
    },
    /// E0276: a declared endpoint's label key that is reserved for the
    /// derived namespace labels (`@namespace…`).
    ReservedNamespaceLabel {
        span: Span,
        key: String,
    },
    /// E0277: an endpoint with a second `namespace` line (`first`: the
    /// first one).
    TwoNamespaces {
        span: Span,
        first: Span,
    },
    /// W0325: a `namespace(…)` test no declared namespace satisfies
    /// (`namespaces`: how many are declared).
    NamespaceTestMatchesNone {
        span: Span,
        namespaces: usize,
    },
    /// W0310: no endpoint declares `name` at all.
    UnknownPortName {
        span: Span,
        name: String,
        proto: Proto,
    },
    /// W0311: endpoints declare `name`, but only with other protocols.
    PortProtocolMismatch {
        span: Span,
        name: String,
        proto: Proto,
        declared: Vec<Proto>,
    },
    /// W0306. `proto`: `icmp` or `icmp6`, as written; `why`: what makes
    /// every packet the rule could see of the other family.
    IcmpOtherFamily {
        span: Span,
        proto: Proto,
        why: String,
    },

    /// W0401. `by`: the shadowing rule's span and description.
    ShadowedRule {
        span: Span,
        rule: String,
        by: Option<(Span, String)>,
    },
    /// W0402.
    RuleConflict {
        span: Span,
        rule: String,
        other_span: Span,
        other: String,
        priority: u16,
        winner: String,
    },
    /// W0403.
    PolicySelectsNothing {
        span: Span,
        policy: String,
    },
    /// W0404.
    ShadowedSteer {
        span: Span,
        rule: String,
        by: Option<(Span, String)>,
    },

    /// E0575: a `redirect` rule (`index` from 1 in steer `steer`) whose
    /// proxy address is on no node (not loopback, unspecified or a
    /// declared node's): the back ends would deliver to different places.
    ProxyNotOnNode {
        span: Span,
        steer: String,
        index: usize,
        addr: IpAddr,
        port: u16,
    },
    /// E0576: a `redirect` rule whose proxy address is `node`'s, one of
    /// `nodes` declared nodes (which one the program is for is unknown).
    ProxyOfOneOfNodes {
        span: Span,
        steer: String,
        index: usize,
        addr: IpAddr,
        port: u16,
        node: String,
        node_span: Option<Span>,
        nodes: usize,
    },

    /// E0501 and E0510: what a back end refuses ([`Refusal`]). Limits
    /// are about the program as a whole: their span is
    /// [`crate::model::Model::program_span`].
    Refused {
        span: Span,
        refusal: Refusal,
    },
    /// E06xx / W06xx: `weir import k8s` ([`K8sProblem`]); the span points
    /// into the Kubernetes input file.
    K8s {
        span: Span,
        problem: K8sProblem,
    },
}

fn dir(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

fn proto(p: Proto) -> &'static str {
    p.keyword()
}

fn did_you_mean(s: &Option<String>) -> Option<String> {
    s.as_ref().map(|s| format!("did you mean `{s}`?"))
}

/// A familiar mistake the parser read as `right`: one diagnostic at what
/// was written, the right form as help.
/// The code of a mistaken form (one place: [`Kind::code`] and the
/// message agree).
fn wrong_form_code(form: &Form) -> Code {
    match form {
        Form::Ipv6Socket => Code::E0003,
        Form::SingleQuotes => Code::E0001,
        Form::AppliesTo
        | Form::Assign
        | Form::PortColon
        | Form::PortList
        | Form::MissingPort
        | Form::WorldName => Code::E0010,
    }
}

fn wrong_form(span: Span, found: String, right: String, form: Form) -> Diagnostic {
    let code = wrong_form_code(&form);
    let (message, label) = match form {
        Form::AppliesTo => (
            format!("unexpected `{found}`"),
            "a policy names its endpoints with `applies to`",
        ),
        Form::Assign => (
            "unexpected `=`".to_string(),
            "labels are compared with `==` (or `!=`)",
        ),
        Form::PortColon => (
            "unexpected `:`".to_string(),
            "the port follows the protocol after a space",
        ),
        Form::PortList => (
            "unexpected `,`".to_string(),
            "several ports are written as a set in braces",
        ),
        Form::WorldName => (
            format!("unexpected `{found}` after `world`"),
            "after `world`, a set's name goes in braces",
        ),
        Form::MissingPort => (
            format!("missing port after `{found}`"),
            "expected `:` and a port",
        ),
        Form::Ipv6Socket => (
            format!("`{found}` is one IPv6 address, not an address and a port"),
            "an IPv6 address with a port is written in brackets",
        ),
        Form::SingleQuotes => (
            "unexpected character `'`".to_string(),
            "strings are written in double quotes",
        ),
    };
    B::new(code, message, span, label)
        .help(format!("write `{right}`"))
        .done()
}

fn one_of(expected: &[String]) -> String {
    const MAX: usize = 8;
    let mut items: Vec<&str> = expected.iter().map(String::as_str).collect();
    let more = items.len() > MAX;
    items.truncate(MAX);
    match items.len() {
        0 => "something else".to_string(),
        1 => items[0].to_string(),
        _ => {
            let last = items.pop().unwrap_or_default();
            let sep = if more { ", " } else { " or " };
            let tail = if more { ", …" } else { "" };
            format!("one of {}{sep}{last}{tail}", items.join(", "))
        }
    }
}

fn list_names(names: &[String]) -> String {
    const MAX: usize = 5;
    let shown: Vec<String> = names.iter().take(MAX).map(|n| format!("`{n}`")).collect();
    let mut s = shown.join(", ");
    if names.len() > MAX {
        s.push_str(&format!(" and {} more", names.len() - MAX));
    }
    s
}

struct B {
    code: Code,
    message: String,
    primary: Label,
    secondary: Vec<Label>,
    help: Option<String>,
}

impl B {
    fn new(code: Code, message: impl Into<String>, span: Span, label: impl Into<String>) -> B {
        B {
            code,
            message: message.into(),
            primary: Label::new(span, label),
            secondary: Vec::new(),
            help: None,
        }
    }
    fn also(mut self, span: Span, label: impl Into<String>) -> B {
        self.secondary.push(Label::new(span, label));
        self
    }
    fn help(mut self, help: impl Into<String>) -> B {
        self.help = Some(help.into());
        self
    }
    fn maybe_help(mut self, help: Option<String>) -> B {
        self.help = help;
        self
    }
    fn done(self) -> Diagnostic {
        Diagnostic {
            code: self.code,
            severity: self.code.severity(),
            message: self.message,
            primary: self.primary,
            secondary: self.secondary,
            help: self.help,
        }
    }
}

impl From<SyntaxError> for Kind {
    fn from(e: SyntaxError) -> Kind {
        Kind::Syntax(e)
    }
}

impl Kind {
    /// The diagnostic's code, without rendering it.
    pub fn code(&self) -> Code {
        use Code::*;
        match self {
            Kind::Syntax(SyntaxError { kind, .. }) => match kind {
                SyntaxErrorKind::StrayCharacter { .. } => E0001,
                SyntaxErrorKind::UnterminatedString => E0002,
                SyntaxErrorKind::BadAddress { .. } => E0003,
                SyntaxErrorKind::BadCidr { .. } => E0004,
                SyntaxErrorKind::NumberOutOfRange { .. } => E0005,
                SyntaxErrorKind::BadDuration { .. } => E0006,
                SyntaxErrorKind::UnexpectedToken { .. } => E0010,
                SyntaxErrorKind::NestingLimit { .. } => E0012,
                SyntaxErrorKind::UnexpectedEof { .. } => E0011,
                SyntaxErrorKind::WrongForm { form, .. } => wrong_form_code(form),
                SyntaxErrorKind::UnclosedBrace { .. } => E0007,
            },
            Kind::ImportNotFound { .. } => E0101,
            Kind::CannotRead { .. } => E0102,
            Kind::BadInventory { .. } => E0103,
            Kind::InventoryNotRegular { .. } => E0014,
            Kind::InventoryTooLarge { .. } => E0015,
            Kind::InventoryOutsideProject { .. } => E0016,
            Kind::NotAnInventory { .. } => E0017,
            Kind::BadImportPath { .. } => E0104,
            Kind::UnknownName { .. } => E0201,
            Kind::HostBits { .. } => E0202,
            Kind::Duplicate { .. } => E0203,
            Kind::BadPort { .. } => E0204,
            Kind::EmptySet { .. } => E0205,
            Kind::WrongKind { .. } => E0206,
            Kind::SelectorTooDeep { .. } => E0013,
            Kind::SelectorCycle { .. } => E0207,
            Kind::SetCycle { .. } => E0208,
            Kind::OutOfRange { .. } => E0209,
            Kind::AddressInTwoEndpoints { .. } => E0210,
            Kind::DuplicateLabel { .. } => E0211,
            Kind::NotAnAddress { .. } => E0212,
            Kind::NoFrontend { .. } => E0220,
            Kind::BackendsCount { .. } => E0221,
            Kind::SharedFrontend { .. } => E0222,
            Kind::DuplicateServiceLine { .. } => E0223,
            Kind::NoAppliesTo { .. } => E0230,
            Kind::DuplicateAppliesTo { .. } => E0231,
            Kind::WrongPeerKeyword { .. } => E0232,
            Kind::DuplicateBlock { .. } => E0233,
            Kind::UnknownTier { .. } => E0234,
            Kind::IcmpCodeWithoutType { .. } => E0235,
            Kind::LabelMapOutsideTest { .. } => E0236,
            Kind::SelfOutsidePolicy { .. } => E0260,
            Kind::UnknownNode { .. } => E0270,
            Kind::NodeLine { .. } => E0271,
            Kind::HostNetworkShape { .. } => E0272,
            Kind::NodeOutsidePolicy { .. } => E0273,
            Kind::AddressInTwoNodes { .. } => E0274,
            Kind::NodesSelectNone { .. } => W0320,
            Kind::WorldOutsidePolicy { .. } => E0261,
            Kind::TestPortMissing { .. } => E0250,
            Kind::UnknownTestEndpoint { .. } => E0251,
            Kind::TestNoAddressOfFamily { .. } => E0252,
            Kind::TestMixedFamilies { .. } => E0252,
            Kind::TestIcmpFamily { .. } => E0256,
            Kind::UnknownBy { .. } => E0253,
            Kind::UnknownByOfKind { .. } => E0253,
            Kind::NoFreeTestAddress { .. } => E0237,
            Kind::BadVia { .. } => E0238,
            Kind::AmbiguousBy { .. } => E0239,
            Kind::TestPortOnIcmp { .. } => E0254,
            Kind::BadTestPeer { .. } => E0255,
            Kind::Unused { .. } => W0301,
            Kind::MatchesNothing { .. } => W0302,
            Kind::ExceptOutsideBase { .. } => W0303,
            Kind::DefaultDenyTurnedOn { .. } => W0304,
            Kind::ServiceSelectsNothing { .. } => W0305,
            Kind::DuplicatePortName { .. } => E0264,
            Kind::BadPortLabel { .. } => E0265,
            Kind::NamedPortMisplaced { .. } => E0266,
            Kind::UnknownPortName { .. } => W0310,
            Kind::NestedNamespaceTest { .. } => E0275,
            Kind::ReservedNamespaceLabel { .. } => E0276,
            Kind::TwoNamespaces { .. } => E0277,
            Kind::NamespaceTestMatchesNone { .. } => W0325,
            Kind::BackendsWithoutPort { .. } => W0312,
            Kind::PortProtocolMismatch { .. } => W0311,

            Kind::IcmpOtherFamily { .. } => W0306,
            Kind::ShadowedRule { .. } => W0401,
            Kind::RuleConflict { .. } => W0402,
            Kind::PolicySelectsNothing { .. } => W0403,
            Kind::ShadowedSteer { .. } => W0404,
            Kind::ProxyNotOnNode { .. } => E0575,
            Kind::ProxyOfOneOfNodes { .. } => E0576,
            Kind::Refused { refusal, .. } => refusal.code(),
            Kind::K8s { problem, .. } => problem.code(),
        }
    }

    pub fn into_diagnostic(self) -> Diagnostic {
        use Code::*;
        match self {
            Kind::Syntax(SyntaxError { kind, span }) => match kind {
                SyntaxErrorKind::StrayCharacter(c) => B::new(
                    E0001,
                    format!("unexpected character `{}`", c.escape_debug()),
                    span,
                    "this character starts no token",
                )
                .help("comments start with `#`; label values with other characters must be quoted")
                .done(),
                SyntaxErrorKind::UnterminatedString => B::new(
                    E0002,
                    "unterminated string",
                    span,
                    "this string has no closing `\"` on its line",
                )
                .done(),
                SyntaxErrorKind::BadAddress(text) => B::new(
                    E0003,
                    format!("`{text}` is not a valid address"),
                    span,
                    "not an IPv4 or IPv6 address",
                )
                .help("each part of an IPv4 address is 0–255; IPv6 addresses are written as in RFC 4291")
                .done(),
                SyntaxErrorKind::BadCidr(text) => B::new(
                    E0004,
                    format!("`{text}` is not a valid CIDR"),
                    span,
                    "bad prefix length",
                )
                .help("the prefix length is at most 32 for IPv4 and 128 for IPv6")
                .done(),
                SyntaxErrorKind::NumberOutOfRange { text, what, max } => B::new(
                    E0005,
                    format!("{what} `{text}` is out of range"),
                    span,
                    format!("the largest {what} is {max}"),
                )
                .done(),
                SyntaxErrorKind::BadDuration(text) => B::new(
                    E0006,
                    format!("`{text}` is not a valid duration"),
                    span,
                    "not a duration",
                )
                .help("write a number followed by s, m, h or d: `10s`, `30m`, `3h`, `1d`")
                .done(),
                SyntaxErrorKind::UnexpectedToken { found, expected } => B::new(
                    E0010,
                    format!("unexpected {found}"),
                    span,
                    format!("expected {}", one_of(&expected)),
                )
                .done(),
                SyntaxErrorKind::NestingLimit { found, what, limit } => B::new(
                    E0012,
                    format!("too many {what} in one statement"),
                    span,
                    format!("`{found}` goes past the limit of {limit} {what} per statement"),
                )
                .help("split the expression: give parts of it names (`selector NAME = ...`)")
                .done(),
                SyntaxErrorKind::UnexpectedEof { expected } => B::new(
                    E0011,
                    "unexpected end of file",
                    span,
                    format!("expected {}", one_of(&expected)),
                )
                .done(),
                SyntaxErrorKind::WrongForm { found, right, form } => wrong_form(span, found, right, form),
                SyntaxErrorKind::UnclosedBrace { noticed, at_eof } => B::new(
                    E0007,
                    "unclosed `{`",
                    span,
                    "this `{` is never closed",
                )
                .also(
                    noticed,
                    if at_eof {
                        "the file ends here"
                    } else {
                        "by its indentation, the block ends before this line"
                    },
                )
                .help("add the missing `}` where the block ends")
                .done(),
            },

            Kind::ImportNotFound {
                span,
                module,
                path,
                is_std,
            } => {
                let b = B::new(
                    E0101,
                    format!("import `{module}` names no file"),
                    span,
                    format!("`{path}` does not exist"),
                );
                if is_std {
                    b.help("`import std.NAME` loads `NAME.weir` from the standard library (set WEIR_STDLIB to move it)")
                } else {
                    b.help("`import a.b` loads `a/b.weir` relative to the importing file")
                }
                .done()
            }
            Kind::CannotRead { span, path, error } => B::new(
                E0102,
                format!("cannot read `{path}`"),
                span,
                error,
            )
            .done(),
            Kind::BadInventory { span, problem } => B::new(
                E0103,
                "malformed endpoint inventory",
                span,
                problem,
            )
            .help(r#"the inventory is { "endpoints": [ { "name": "web-2", "labels": { "app": "web" }, "addrs": ["10.1.0.6"], "ready": true } ] }"#)
            .done(),
            Kind::InventoryNotRegular { span, path, what } => B::new(
                E0014,
                format!("inventory `{path}` is not a regular file"),
                span,
                format!("this is {what}"),
            )
            .help("an endpoint inventory is a JSON file")
            .done(),
            Kind::InventoryTooLarge {
                span,
                path,
                size,
                limit,
            } => B::new(
                E0015,
                format!("inventory `{path}` is too large"),
                span,
                format!("{size} bytes; the limit is {limit} bytes"),
            )
            .done(),
            Kind::InventoryOutsideProject {
                span,
                path,
                project,
            } => B::new(
                E0016,
                format!("inventory `{path}` is outside the project"),
                span,
                format!("not below {}", project.join(" or ")),
            )
            .help("an `inventory` item names a file below the directory of the files given on the command line; name any other file with `--endpoints FILE`")
            .done(),
            Kind::NotAnInventory { span, path } => B::new(
                E0017,
                format!("`{path}` is not an endpoint inventory"),
                span,
                "an inventory is a JSON object; this file starts otherwise (only its start is shown)",
            )
            .done(),
            Kind::BadImportPath { span } => B::new(
                E0104,
                "`import std` needs a module name",
                span,
                "no module named",
            )
            .help("write `import std.NAME`, for example `import std.dns`")
            .done(),

            Kind::UnknownName {
                span,
                name,
                expected,
                suggestion,
            } => B::new(
                E0201,
                format!("unknown {expected} `{name}`"),
                span,
                format!("no {expected} named `{name}`"),
            )
            .maybe_help(did_you_mean(&suggestion))
            .done(),
            Kind::HostBits {
                span,
                written,
                network,
            } => B::new(
                E0202,
                format!("`{written}` has host bits set"),
                span,
                "the address has bits set past the prefix length",
            )
            .help(format!("did you mean `{network}`?"))
            .done(),
            Kind::Duplicate {
                kind,
                name,
                span,
                first,
            } => B::new(
                E0203,
                format!("{} `{name}` is defined twice", kind.noun()),
                span,
                "defined again here",
            )
            .also(first, "first defined here")
            .help(if matches!(kind, NameKind::Selector | NameKind::Set) {
                "selectors and sets share one namespace; rename one of them"
            } else {
                "rename one of them"
            })
            .done(),
            Kind::BadPort { span, problem } => match problem {
                PortProblem::Zero => B::new(E0204, "port 0 is not a port", span, "ports are 1–65535")
                    .help("omit the ports to match every port")
                    .done(),
                PortProblem::Reversed { lo, hi } => B::new(
                    E0204,
                    format!("port range `{lo}-{hi}` is empty"),
                    span,
                    "the first port is greater than the last",
                )
                .help(format!("did you mean `{hi}-{lo}`?"))
                .done(),
            },
            Kind::EmptySet { span } => B::new(E0205, "empty set", span, "this set has no elements")
                .help("a set needs at least one address, CIDR or set name; use `any` for every address")
                .done(),
            Kind::WrongKind {
                span,
                name,
                found,
                expected,
                defined,
            } => {
                let mut b = B::new(
                    E0206,
                    format!("`{name}` is {} {}, not {expected}", found.article(), found.noun()),
                    span,
                    format!("expected {expected}"),
                );
                if let Some(d) = defined {
                    b = b.also(d, format!("`{name}` is defined here"));
                }
                let help = match (found, expected) {
                    (NameKind::Set, "a selector") => {
                        Some("sets match addresses and may stand only as a whole peer (`from NAME`), not inside a label selector")
                    }
                    (NameKind::Selector, "a set") => {
                        Some("set elements are addresses, CIDRs or other sets; selectors may stand only as a peer")
                    }
                    (NameKind::Endpoint, _) => {
                        Some("to match one endpoint, select it by its labels")
                    }
                    (NameKind::Service, _) => {
                        Some("policy applies to the chosen backend: select the backends' labels instead")
                    }
                    _ => None,
                };
                b.maybe_help(help.map(str::to_string)).done()
            }
            Kind::SelectorTooDeep {
                span,
                name,
                depth,
                limit,
            } => B::new(
                E0013,
                format!("selector `{name}` is nested too deeply"),
                span,
                format!("with the named selectors it uses written out, it is {depth} levels deep; the limit is {limit}"),
            )
            .help("shorten the chain of selectors defined through each other")
            .done(),
            Kind::SelectorCycle {
                span,
                name,
                through,
            } => {
                let mut b = B::new(
                    E0207,
                    format!("selector `{name}` refers to itself"),
                    span,
                    "the cycle starts here",
                );
                for (i, (n, s)) in through.iter().enumerate() {
                    let next = through.get(i + 1).map(|t| t.0.as_str()).unwrap_or(&name);
                    b = b.also(*s, format!("`{n}` uses `{next}` here"));
                }
                b.help("a named selector may not depend on itself").done()
            }
            Kind::SetCycle {
                span,
                name,
                through,
            } => {
                let mut b = B::new(
                    E0208,
                    format!("set `{name}` refers to itself"),
                    span,
                    "the cycle starts here",
                );
                for (i, (n, s)) in through.iter().enumerate() {
                    let next = through.get(i + 1).map(|t| t.0.as_str()).unwrap_or(&name);
                    b = b.also(*s, format!("`{n}` uses `{next}` here"));
                }
                b.help("a named set may not contain itself").done()
            }
            Kind::OutOfRange {
                span,
                what,
                value,
                min,
                max,
            } => B::new(
                E0209,
                format!("{what} {value} is out of range"),
                span,
                format!("must be {min}–{max}"),
            )
            .done(),
            Kind::AddressInTwoEndpoints {
                span,
                addr,
                endpoint,
                other,
                first,
            } => {
                if endpoint == other {
                    B::new(
                        E0210,
                        format!("address {addr} is listed twice in endpoint `{endpoint}`"),
                        span,
                        "listed again here",
                    )
                    .also(first, "first listed here")
                    .done()
                } else {
                    B::new(
                        E0210,
                        format!("address {addr} belongs to two endpoints, `{other}` and `{endpoint}`"),
                        span,
                        format!("claimed by `{endpoint}` here"),
                    )
                    .also(first, format!("already the address of `{other}`"))
                    .help("an address may belong to at most one endpoint")
                    .done()
                }
            }
            Kind::DuplicateLabel { span, key, first } => B::new(
                E0211,
                format!("label `{key}` is given twice"),
                span,
                "given again here",
            )
            .also(first, "first given here")
            .help("an endpoint has one value per label key")
            .done(),
            Kind::NotAnAddress {
                span,
                written,
                what,
            } => B::new(
                E0212,
                format!("{what} must be a single address, not `{written}`"),
                span,
                "a CIDR, not an address",
            )
            .done(),

            Kind::NoFrontend { span, service } => B::new(
                E0220,
                format!("service `{service}` has no frontend"),
                span,
                "this service has no `frontend` line",
            )
            .help("add `frontend VIP:PORT/PROTO`, for example `frontend 10.96.0.10:443/tcp`")
            .done(),
            Kind::BackendsCount {
                span,
                service,
                lines,
            } => {
                if lines.is_empty() {
                    B::new(
                        E0221,
                        format!("service `{service}` has no backends"),
                        span,
                        "this service has no `backends` line",
                    )
                    .help("add `backends select SELECTOR port N` or `backends { ADDR:PORT, … }`")
                    .done()
                } else {
                    let mut b = B::new(
                        E0221,
                        format!(
                            "service `{service}` has {} `backends` lines",
                            lines.len()
                        ),
                        lines[1],
                        "second `backends` line",
                    )
                    .also(lines[0], "first `backends` line");
                    for l in &lines[2..] {
                        b = b.also(*l, "another `backends` line");
                    }
                    b.help("a service has exactly one `backends` line; list explicit backends in one `{ … }`")
                        .done()
                }
            }
            Kind::SharedFrontend {
                span,
                frontend,
                service,
                other,
                first,
            } => {
                let (msg, first_label) = if service == other {
                    (
                        format!("frontend {frontend} is listed twice in service `{service}`"),
                        "first listed here".to_string(),
                    )
                } else {
                    (
                        format!("frontend {frontend} is shared by services `{other}` and `{service}`"),
                        format!("already a frontend of `{other}`"),
                    )
                };
                B::new(E0222, msg, span, "this frontend")
                    .also(first, first_label)
                    .help("a VIP:port/protocol belongs to at most one service")
                    .done()
            }
            Kind::DuplicateServiceLine { span, line, first } => {
                let l = match line {
                    ServiceLine::Balance => "balance",
                    ServiceLine::Affinity => "affinity",
                };
                B::new(
                    E0223,
                    format!("`{l}` is given twice"),
                    span,
                    "given again here",
                )
                .also(first, "first given here")
                .done()
            }

            Kind::NoAppliesTo { span, policy } => B::new(
                E0230,
                format!("policy `{policy}` has no `applies to` line"),
                span,
                "this policy selects no endpoints",
            )
            .help("add `applies to SELECTOR` (use `applies to all` for every endpoint)")
            .done(),
            Kind::DuplicateAppliesTo { span, first } => B::new(
                E0231,
                "`applies to` is given twice",
                span,
                "given again here",
            )
            .also(first, "first given here")
            .help("combine them into one selector with `||` or `&&`")
            .done(),
            Kind::WrongPeerKeyword { span, direction } => {
                let (good, bad, role) = match direction {
                    Direction::Ingress => ("from", "to", "source"),
                    Direction::Egress => ("to", "from", "destination"),
                };
                B::new(
                    E0232,
                    format!("`{bad}` in an {} rule", dir(direction)),
                    span,
                    format!("an {} rule's peer is written `{good}`", dir(direction)),
                )
                .help(format!(
                    "in an `{}` block the peer is the {role}: write `{good} PEER`; the endpoint the policy applies to is the other end",
                    dir(direction)
                ))
                .done()
            }
            Kind::DuplicateBlock {
                span,
                direction,
                first,
            } => B::new(
                E0233,
                format!("policy has two `{}` blocks", dir(direction)),
                span,
                "second block",
            )
            .also(first, "first block")
            .help("move the rules into one block; rules run in source order")
            .done(),
            Kind::UnknownTier {
                span,
                name,
                suggestion,
            } => B::new(
                E0234,
                format!("unknown tier `{name}`"),
                span,
                "no tier with this name",
            )
            .maybe_help(did_you_mean(&suggestion).or_else(|| {
                Some(format!("declare it with `tier {name} order N`"))
            }))
            .done(),
            Kind::IcmpCodeWithoutType { span } => B::new(
                E0235,
                "ICMP code without a type",
                span,
                "`code` needs a `type` before it",
            )
            .help("write `icmp type T code C`")
            .done(),
            Kind::LabelMapOutsideTest { span } => B::new(
                E0236,
                "a label map is not a peer here",
                span,
                "label maps stand for synthetic endpoints in tests only",
            )
            .help("write a selector instead: `{ app: \"api\" }` becomes `app == \"api\"`")
            .done(),
            Kind::SelfOutsidePolicy { span, place } => B::new(
                E0260,
                format!("`self` is not a peer in {place}"),
                span,
                "no endpoint is judged here, so there is no `self`",
            )
            .help("`self` is the endpoint a policy side is judged for: use it in a policy's `ingress` or `egress` rules; elsewhere name the endpoint")
            .done(),
            Kind::UnknownNode {
                span,
                endpoint,
                node,
            } => B::new(
                E0270,
                format!("endpoint `{endpoint}` runs on node `{node}`, which is not declared"),
                span,
                "no `node` declaration of this name",
            )
            .help(format!(
                "declare it: `node {node} {{ addr … }}` (its addresses are what the `node` peer matches)"
            ))
            .done(),
            Kind::NodeLine { span, what, why } => {
                B::new(E0271, format!("{what} is not allowed here"), span, why).done()
            }
            Kind::HostNetworkShape {
                span,
                endpoint,
                has_addr,
            } => {
                let (msg, label) = if has_addr {
                    (
                        format!("host-network endpoint `{endpoint}` has an address of its own"),
                        "a host-network endpoint takes its node's addresses",
                    )
                } else {
                    (
                        format!("host-network endpoint `{endpoint}` names no node"),
                        "a host-network endpoint needs `node NAME`",
                    )
                };
                B::new(E0272, msg, span, label)
                    .help("write `node NAME` and `host network`, and no `addr`: its traffic is judged as the node's")
                    .done()
            }
            Kind::NodeOutsidePolicy { span, place } => B::new(
                E0273,
                format!("`node` / `nodes` is not a peer in {place}"),
                span,
                "no endpoint is judged here",
            )
            .help("`node` is the node of the endpoint a policy side is judged for: use it in a policy's `ingress` or `egress` rules; elsewhere write the node's addresses")
            .done(),
            Kind::AddressInTwoNodes {
                span,
                addr,
                node,
                other,
            } => B::new(
                E0274,
                format!("address {addr} of node `{node}` is also an address of node `{other}`"),
                span,
                "an address belongs to one node",
            )
            .done(),
            Kind::NodesSelectNone { span } => B::new(
                W0320,
                "`nodes` selects no declared node",
                span,
                "this peer matches no address",
            )
            .help("declare the nodes (`node NAME { labels { … } addr … }`) or fix the selector")
            .done(),
            Kind::WorldOutsidePolicy { span, place } => B::new(
                E0261,
                format!("`world` is not a peer in {place}"),
                span,
                "`world` (addresses of no endpoint) is a policy-rule peer only",
            )
            .help("in a steering rule write the addresses as a set; in a test write one address no endpoint has")
            .done(),

            Kind::TestPortMissing { span, proto: p } => B::new(
                E0250,
                format!("a {} test packet needs a destination port", proto(p)),
                span,
                "no `port` given",
            )
            .help("add `port N` at the end of the line")
            .done(),
            Kind::UnknownTestEndpoint {
                span,
                name,
                suggestion,
                is,
            } => {
                let b = B::new(
                    E0251,
                    format!("`{name}` is not an endpoint"),
                    span,
                    "test peers name endpoints",
                );
                let help = match (suggestion, is) {
                    (Some(s), _) => Some(format!("did you mean `{s}`?")),
                    (None, Some(k)) => Some(format!(
                        "`{name}` is {} {}; in a test write an endpoint name, an address, a label map like `{{ app: \"api\" }}` or `any`",
                        k.article(),
                        k.noun()
                    )),
                    (None, None) => None,
                };
                b.maybe_help(help).done()
            }
            Kind::TestNoAddressOfFamily {
                span,
                endpoint,
                family,
            } => B::new(
                E0252,
                format!("endpoint `{endpoint}` has no {family} address"),
                span,
                format!("the other peer is {family}"),
            )
            .help("both ends of a test packet must be of one address family")
            .done(),
            Kind::TestIcmpFamily { span, proto } => {
                let (this, fam, other, own) = match proto {
                    Proto::Icmp6 => ("icmp6", "IPv4", "icmp", "ICMPv6, for IPv6 packets"),
                    _ => ("icmp", "IPv6", "icmp6", "ICMPv4, for IPv4 packets"),
                };
                B::new(
                    E0256,
                    format!("`{this}` test packet between {fam} addresses"),
                    span,
                    format!("`{this}` is {own}"),
                )
                .help(format!("write `{other}`, or peers of the other address family"))
                .done()
            }
            Kind::TestMixedFamilies { span, from, to } => B::new(
                E0252,
                format!("test packet goes from {from} to {to}"),
                span,
                "the peers are of different address families",
            )
            .help("both ends of a test packet must be of one address family")
            .done(),
            Kind::UnknownBy {
                span,
                name,
                suggestion,
            } => B::new(
                E0253,
                format!("`by {name}` names no policy, steer block or service"),
                span,
                "unknown name",
            )
            .maybe_help(did_you_mean(&suggestion).or_else(|| {
                Some("write `by default` to expect a default verdict".to_string())
            }))
            .done(),
            Kind::UnknownByOfKind { span, name, kind } => B::new(
                E0253,
                format!("`by {kind} {name}` names no {kind}"),
                span,
                format!("no {kind} `{name}`"),
            )
            .done(),
            Kind::NoFreeTestAddress { span, what, range } => B::new(
                E0237,
                format!("no free address for {what}"),
                span,
                format!("every address of {range} belongs to an endpoint"),
            )
            .help("a test peer that stands for no endpoint needs an address no endpoint has")
            .done(),
            Kind::BadVia { span, via, service } => match service {
                Some(service) => B::new(
                    E0238,
                    format!("`via {via}` is not a backend of service `{service}`"),
                    span,
                    "no usable backend of the service is this",
                ),
                None => B::new(
                    E0238,
                    format!("`via {via}` on a packet that reaches no service"),
                    span,
                    "the destination is no service frontend",
                ),
            }
            .help("`via` names an endpoint or `ADDR:PORT` among the ready backends of the service the packet is sent to")
            .done(),
            Kind::AmbiguousBy { span, name, kinds } => B::new(
                E0239,
                format!("`by {name}` is ambiguous"),
                span,
                format!("`{name}` is a {}", kinds.join(" and a ")),
            )
            .help(format!("say which: `by {} {name}`", kinds.join(&format!(" {name}` or `by "))))
            .done(),
            Kind::TestPortOnIcmp { span } => B::new(
                E0254,
                "an ICMP test packet has no port",
                span,
                "remove this `port`",
            )
            .help("use `icmp type T code C` to give the ICMP type and code")
            .done(),
            Kind::BadTestPeer { span } => B::new(
                E0255,
                "a test peer must be one endpoint or one address",
                span,
                "this matches many addresses",
            )
            .help("write an endpoint name, an address, a label map like `{ app: \"api\" }` or `any`")
            .done(),

            Kind::Unused { span, kind, name } => B::new(
                W0301,
                format!("{} `{name}` is never used", kind.noun()),
                span,
                "defined here",
            )
            .help("remove it, or use it as a peer or inside another definition")
            .done(),
            Kind::MatchesNothing { span, what } => B::new(
                W0302,
                format!("{what} matches no endpoint"),
                span,
                "no declared endpoint has these labels",
            )
            .help("check the label keys and values against the endpoints' labels")
            .done(),
            Kind::ExceptOutsideBase {
                span,
                element,
                base,
            } => B::new(
                W0303,
                format!("`except` element {element} is not inside the base set"),
                span,
                "excludes nothing",
            )
            .also(base, "the base set")
            .help("remove it, or fix the address")
            .done(),
            Kind::DefaultDenyTurnedOn {
                span,
                policy,
                direction,
                endpoints,
            } => B::new(
                W0304,
                format!(
                    "policy `{policy}` turns on default deny for {} of {}",
                    dir(direction),
                    list_names(&endpoints)
                ),
                span,
                format!("no policy allows any {} traffic for these endpoints", dir(direction)),
            )
            .help(format!(
                "every connection {} them will be denied; add an `allow` rule if that is not intended",
                match direction {
                    Direction::Ingress => "to",
                    Direction::Egress => "from",
                }
            ))
            .done(),
            Kind::IcmpOtherFamily { span, proto, why } => {
                let (this, fam, other) = match proto {
                    Proto::Icmp6 => ("icmp6", "ICMPv6 (IPv6 only)", "icmp"),
                    _ => ("icmp", "ICMPv4 (IPv4 only)", "icmp6"),
                };
                B::new(
                    W0306,
                    format!("`{this}` rule can never match: {why}"),
                    span,
                    format!("`{this}` is {fam}"),
                )
                .help(format!(
                    "write `{other}` for the other family's ICMP (before `icmp6` existed, `icmp` also meant ICMPv6)"
                ))
                .done()
            }
            Kind::DuplicatePortName { span, name, first } => {
                let b = B::new(
                    E0264,
                    format!("port name `{name}` is given twice for one protocol on this endpoint"),
                    span,
                    "given again here",
                );
                match first {
                    Some(f) => b.also(f, "first given here"),
                    None => b,
                }
                .help("an endpoint declares each port name once per protocol, with one port (as a pod's container ports)")
                .done()
            }
            Kind::BadPortLabel { span, key } => B::new(
                E0265,
                format!("label `{key}` is not a named port"),
                span,
                "labels starting with `port:` declare named ports",
            )
            .help("write the port in `ports { NAME: PORT/PROTO }`, or use the label `port:NAME/PROTO` with a value 1–65535 (PROTO: tcp, udp or sctp)")
            .done(),
            Kind::NamedPortMisplaced { span, what } => B::new(
                E0266,
                format!("a named port cannot be used in {what}"),
                span,
                "named port here",
            )
            .help("named ports are resolved on the destination endpoint of a policy rule; write the port number here")
            .done(),
            Kind::BackendsWithoutPort {
                span,
                service,
                name,
                endpoints,
                count,
            } => {
                let more = if count > endpoints.len() {
                    format!(" and {} more", count - endpoints.len())
                } else {
                    String::new()
                };
                B::new(
                    W0312,
                    format!(
                        "{count} endpoint(s) selected by service `{service}` do not declare the port `{name}`"
                    ),
                    span,
                    format!("not backends: {}{more}", endpoints.join(", ")),
                )
                .help("an endpoint without the target port name (for a frontend's protocol) is not a backend of that frontend")
                .done()
            }
            Kind::NestedNamespaceTest { span } => B::new(
                E0275,
                "`namespace(…)` inside a namespace test",
                span,
                "a namespace has labels, not a namespace",
            )
            .help("test the namespace's labels only: `namespace(team == \"a\")`; combine tests with `&&` outside it")
            .done(),
            Kind::ReservedNamespaceLabel { span, key } => B::new(
                E0276,
                format!("label `{key}` is reserved"),
                span,
                "keys starting with `@namespace` are derived from the endpoint's namespace",
            )
            .help("put the endpoint in a namespace (`namespace NAME`) and give the namespace its labels; test them with `namespace(SEL)`")
            .done(),
            Kind::TwoNamespaces { span, first } => B::new(
                E0277,
                "an endpoint is in one namespace",
                span,
                "second namespace here",
            )
            .also(first, "first given here")
            .help("remove one of the `namespace` lines")
            .done(),
            Kind::NamespaceTestMatchesNone { span, namespaces } => B::new(
                W0325,
                "no namespace satisfies this namespace test",
                span,
                format!("none of the {namespaces} declared namespace(s) has these labels"),
            )
            .help("declare the namespace (`namespace NAME { labels { … } }` or an inventory's \"namespaces\") or fix the test; until then it selects no endpoint")
            .done(),
            Kind::UnknownPortName { span, name, proto } => B::new(
                W0310,
                format!("no endpoint declares the port `{name}`"),
                span,
                format!("this rule matches no {} packet until one does", proto.keyword()),
            )
            .help(format!("declare it on the destination endpoints: `ports {{ {name}: PORT/{} }}`", proto.keyword()))
            .done(),
            Kind::PortProtocolMismatch {
                span,
                name,
                proto,
                declared,
            } => {
                let declared: Vec<&str> = declared.iter().map(|p| p.keyword()).collect();
                B::new(
                    W0311,
                    format!(
                        "the port `{name}` is declared for {} only, not for {}",
                        declared.join(" and "),
                        proto.keyword()
                    ),
                    span,
                    "this rule matches nothing on the endpoints that declare it",
                )
                .help("a named port matches only with the protocol it is declared with")
                .done()
            }
            Kind::ServiceSelectsNothing { span, service } => B::new(
                W0305,
                format!("service `{service}` selects no endpoint"),
                span,
                "no declared endpoint matches",
            )
            .help("its frontends will reject every connection until a matching endpoint exists")
            .done(),
            Kind::ShadowedRule { span, rule, by } => {
                let b = B::new(
                    W0401,
                    format!("{rule} never takes effect"),
                    span,
                    "no packet reaches this rule",
                );
                match by {
                    Some((by_span, by_rule)) => b
                        .also(by_span, format!("{by_rule} matches every packet it would"))
                        .help("remove the rule, or move it before the rule that shadows it"),
                    None => b.help(
                        "earlier rules together match every packet it would; remove or reorder it",
                    ),
                }
                .done()
            }
            Kind::RuleConflict {
                span,
                rule,
                other_span,
                other,
                priority,
                winner,
            } => B::new(
                W0402,
                format!("{rule} conflicts with {other} at priority {priority}"),
                span,
                "some packets match both rules, with different actions",
            )
            .also(other_span, other)
            .help(format!(
                "policies at the same tier and priority are ordered by name, so `{winner}` wins; give them different priorities to make the order explicit"
            ))
            .done(),
            Kind::PolicySelectsNothing { span, policy } => B::new(
                W0403,
                format!("policy `{policy}` selects no endpoint"),
                span,
                "`applies to` matches no declared endpoint",
            )
            .help("the policy has no effect until an endpoint with matching labels exists")
            .done(),
            Kind::ShadowedSteer { span, rule, by } => {
                let b = B::new(
                    W0404,
                    format!("{rule} never matches first"),
                    span,
                    "an earlier steering rule always matches these packets",
                );
                match by {
                    Some((by_span, by_rule)) => b.also(by_span, format!("{by_rule} matches them first")),
                    None => b,
                }
                .help("only the first matching steering rule applies to a packet")
                .done()
            }

            Kind::ProxyNotOnNode {
                span,
                steer,
                index,
                addr,
                port,
            } => {
                let sock = std::net::SocketAddr::new(addr, port);
                B::new(
                    E0575,
                    format!(
                        "rule #{index} of steer `{steer}` redirects to proxy {sock}, which is not on the node: iptables would DNAT to {sock} and forward the packet to that host, while eBPF would assign it to a socket on this node listening on port {port}"
                    ),
                    span,
                    "not a loopback, unspecified or declared node address",
                )
                .help(format!(
                    "use a loopback address (`127.0.0.1:{port}`, `[::1]:{port}`) with the proxy listening on the wildcard address, or declare the node that owns {addr} (`node NAME {{ addr {addr} }}`) in the program for that node"
                ))
                .done()
            }
            Kind::ProxyOfOneOfNodes {
                span,
                steer,
                index,
                addr,
                port,
                node,
                node_span,
                nodes,
            } => {
                let sock = std::net::SocketAddr::new(addr, port);
                let b = B::new(
                    E0576,
                    format!(
                        "rule #{index} of steer `{steer}` redirects to proxy {sock}, an address of node `{node}`, but the program declares {nodes} nodes and does not say which one it is for: on any other node iptables would DNAT to {sock} and forward the packet to `{node}`, while eBPF would assign it to a socket on that node listening on port {port}"
                    ),
                    span,
                    format!("an address of node `{node}`"),
                );
                match node_span {
                    Some(s) => b.also(s, format!("node `{node}` is one of {nodes} declared nodes")),
                    None => b,
                }
                .help(format!(
                    "use a loopback address (`127.0.0.1:{port}`, `[::1]:{port}`) with the proxy listening on the wildcard address on every node, or compile a program that declares `{node}` alone"
                ))
                .done()
            }

            Kind::Refused { span, refusal } => refusal.diagnostic(span),
            Kind::K8s { span, problem } => problem.diagnostic(span),
        }
    }
}

// ---------------------------------------------------------------------
// Back-end refusals (E0501, E0510): what a back end cannot express or
// cannot hold, as data; the back ends build these and never word them.

/// What `weir import k8s` reports about its Kubernetes input. `object`
/// is `Kind namespace/name`; `field` a path like `spec.ingress[0].from[1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum K8sProblem {
    /// E0601: the input is not a Kubernetes object the importer can read.
    Malformed { object: String, problem: String },
    /// E0602: the object cannot be translated exactly; nothing of it is
    /// imported.
    Refused {
        object: String,
        field: String,
        reason: String,
    },
    /// W0601: a field the importer does not support, translated fail
    /// closed (`effect` says how).
    FailClosed {
        object: String,
        field: String,
        effect: String,
    },
    /// W0602: an object kind the importer does not translate.
    KindIgnored { object: String, api_version: String },
    /// W0603: a CIDR with host bits set, masked.
    HostBits {
        object: String,
        field: String,
        written: String,
        network: String,
    },
    /// W0604: part of an object left out of the import (`what`), with why.
    NotImported {
        object: String,
        what: String,
        why: String,
    },
    /// W0330: `spec.{field}: Local` imported without `--node`: the
    /// backends are every ready endpoint of the cluster.
    LocalWithoutNode { object: String, field: String },
}

impl K8sProblem {
    pub fn code(&self) -> Code {
        match self {
            K8sProblem::Malformed { .. } => Code::E0601,
            K8sProblem::Refused { .. } => Code::E0602,
            K8sProblem::FailClosed { .. } => Code::W0601,
            K8sProblem::KindIgnored { .. } => Code::W0602,
            K8sProblem::HostBits { .. } => Code::W0603,
            K8sProblem::NotImported { .. } => Code::W0604,
            K8sProblem::LocalWithoutNode { .. } => Code::W0330,
        }
    }

    fn diagnostic(self, span: Span) -> Diagnostic {
        let code = self.code();
        match self {
            K8sProblem::Malformed { object, problem } => B::new(
                code,
                format!("{object}: {problem}"),
                span,
                "cannot be read as a Kubernetes object",
            )
            .done(),
            K8sProblem::Refused {
                object,
                field,
                reason,
            } => B::new(
                code,
                format!("{object}: `{field}` cannot be imported exactly: {reason}"),
                span,
                "this object is not imported",
            )
            .help("the import fails closed: fix or remove the object, or enforce it elsewhere")
            .done(),
            K8sProblem::FailClosed {
                object,
                field,
                effect,
            } => B::new(
                code,
                format!("{object}: unsupported field `{field}`: {effect}"),
                span,
                "translated fail closed",
            )
            .help("as network-policy-api specifies: an Allow/Accept rule using it matches nothing, a Deny/Pass rule denies everything")
            .done(),
            K8sProblem::KindIgnored {
                object,
                api_version,
            } => B::new(
                code,
                format!("{object} ({api_version}) is not a kind `weir import k8s` translates"),
                span,
                "ignored",
            )
            .help("imported: NetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy, Pod, Namespace, Node, Service, EndpointSlice")
            .done(),
            K8sProblem::HostBits {
                object,
                field,
                written,
                network,
            } => B::new(
                code,
                format!("{object}: `{field}` `{written}` has host bits set; imported as `{network}`"),
                span,
                "masked to its network",
            )
            .done(),
            K8sProblem::NotImported { object, what, why } => B::new(
                code,
                format!("{object}: {what} not imported: {why}"),
                span,
                "partly imported",
            )
            .done(),
            K8sProblem::LocalWithoutNode { object, field } => B::new(
                code,
                format!("{object}: `spec.{field}: Local` imported without a node: every ready endpoint of the cluster is a backend"),
                span,
                "node-local backends need the node compiled for",
            )
            .help("pass `--node NAME` (the agent passes its own node) to keep only that node's endpoints, as kube-proxy does on it")
            .done(),
        }
    }
}

/// What a back end refuses, with its data. [`Kind::Refused`] carries it
/// with the span; [`Refusal::code`] says whether it is a construct the
/// back end cannot express (E0501) or a capacity limit (E0510).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// E0501: `construct` cannot be expressed faithfully by `backend`.
    NotExpressible {
        backend: Target,
        construct: Construct,
    },
    /// E0510 (eBPF): a map would need more than `max` entries.
    MapTooLarge { map: String, entries: u64, max: u64 },
    /// E0510 (eBPF): more than `max` tail-called programs.
    TooManyStages { stages: usize, max: usize },
    /// E0510 (eBPF): a packet's path would make more than `max` tail
    /// calls.
    TooManyTailCalls { calls: usize, max: usize },
    /// E0510 (eBPF): one decision-graph node does not fit a program by
    /// itself.
    BlockTooLarge {
        block: String,
        slots: usize,
        jumps: usize,
    },
    /// E0510 (eBPF): a program stage does not assemble.
    StageTooLarge {
        stage: usize,
        overflow: StageOverflow,
    },
    /// E0510 (iptables): a table's chains nest deeper than nf_tables
    /// allows; `path` is the deepest path's first and last chain.
    ChainsTooDeep {
        table: String,
        depth: usize,
        max: usize,
        path: Option<(String, String)>,
    },
}

/// A construct a back end cannot express (E0501).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Construct {
    /// `balance maglev` over `backends` backends (iptables cannot hash
    /// consistently).
    MaglevBalance { service: String, backends: usize },
    /// An audit policy whose audit graph does not share the enforced
    /// graph's classes and provenance ids (eBPF reads one classification
    /// for both; not expected to happen, refused rather than miscounted).
    AuditPolicy { policy: String },
    /// An audit policy in a program with `redirect` steering (iptables
    /// judges redirected connections in nat, where audit is not counted).
    AuditWithRedirect { policy: String },
    /// E0525 (eBPF): a `redirect` rule (`index` from 1) that can match
    /// SCTP: the kernel's socket lookup and assignment take TCP and UDP
    /// sockets only.
    SctpRedirect { steer: String, index: usize },
    /// iptables `self` keeps endpoint ids in packet-mark bits `mask`
    /// (`iptables/self_set.rs`); a steering `mark` that sets them.
    SelfWithMark { steer: String, mark: u32, mask: u32 },
    /// iptables `self` with a `redirect` that can match connections to a
    /// service frontend (each backend judged in nat before its DNAT).
    SelfWithRedirect { steer: String },
    /// iptables `self`: more endpoints owning addresses than ids.
    SelfTooManyEndpoints { endpoints: usize, max: usize },
}

/// Why a program stage does not assemble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageOverflow {
    /// A jump's offset does not fit a BPF jump.
    JumpOutOfRange {
        label: String,
        slot: usize,
        offset: i64,
    },
    /// The program cannot be split under the instruction budget.
    NoSplit,
}

impl Construct {
    /// Its name in messages, also what repeated refusals are grouped by.
    pub fn name(&self) -> &'static str {
        match self {
            Construct::MaglevBalance { .. } => "balance maglev",
            Construct::AuditPolicy { .. } => "audit policy",
            Construct::AuditWithRedirect { .. } => "audit policy with redirect steering",
            Construct::SctpRedirect { .. } => "redirect of SCTP to a proxy",
            Construct::SelfWithMark { .. } => "`self` with a steering mark on the id bits",
            Construct::SelfTooManyEndpoints { .. } => "`self` with more endpoints than ids",
            Construct::SelfWithRedirect { .. } => "`self` with redirect steering over a service",
        }
    }

    /// Which declaration and why.
    fn detail(&self) -> String {
        match self {
            Construct::MaglevBalance { service, backends } => format!(
                "service `{service}` balances {backends} backends by Maglev consistent hashing, which iptables cannot compute"
            ),
            Construct::AuditPolicy { policy } => format!(
                "policy `{policy}` is an audit policy, and the program's audit decision graph does not share the enforced graph's address classes, so this back end cannot count its decisions"
            ),
            Construct::AuditWithRedirect { policy } => format!(
                "policy `{policy}` is an audit policy and the program redirects connections to a proxy; iptables judges those in nat, where their audit decisions would not be counted"
            ),
            Construct::SctpRedirect { steer, index } => format!(
                "rule #{index} of steer `{steer}` redirects to a proxy and can match SCTP (its protocol is `sctp`, or none is given); the eBPF data path assigns a packet to the proxy's socket with the kernel's socket lookup, which finds TCP and UDP sockets only, so SCTP would pass unsteered: write the rule for `tcp` and `udp`"
            ),
            Construct::SelfWithMark { steer, mark, mask } => format!(
                "steer `{steer}` sets mark {mark:#x}, and the program uses `self`, which iptables decides by endpoint ids in packet-mark bits {mask:#x}; the mark would be cleared there (use a mark outside those bits, another `weir compile --iptables-self-mark`, or the eBPF back end)"
            ),
            Construct::SelfWithRedirect { steer } => format!(
                "steer `{steer}` can redirect connections to a service frontend, and the program uses `self`; iptables judges each backend in nat before its DNAT, where the endpoint relation `self` needs is the frontend's, not the backend's (use the eBPF back end)"
            ),
            Construct::SelfTooManyEndpoints { endpoints, max } => format!(
                "the program uses `self` and has {endpoints} endpoints with addresses; iptables decides `self` by endpoint ids in packet-mark bits, which hold {max} (give more bits with `weir compile --iptables-self-mark`, or use the eBPF back end)"
            ),
        }
    }
}

impl Refusal {
    pub fn code(&self) -> Code {
        match self {
            Refusal::NotExpressible {
                construct: Construct::SctpRedirect { .. },
                ..
            } => Code::E0525,
            Refusal::NotExpressible { .. } => Code::E0501,
            _ => Code::E0510,
        }
    }

    /// The back end that refuses.
    pub fn backend(&self) -> Target {
        match self {
            Refusal::NotExpressible { backend, .. } => *backend,
            Refusal::ChainsTooDeep { .. } => Target::Iptables,
            _ => Target::Ebpf,
        }
    }

    /// What a capacity limit is about, and needed versus allowed.
    fn limit(&self) -> (String, String) {
        match self {
            Refusal::MapTooLarge { map, entries, max } => (
                format!("map `{map}`"),
                format!("{entries} entries, limit {max}"),
            ),
            Refusal::TooManyStages { stages, max } => (
                "the tail-called program set".to_string(),
                format!("{stages} programs, limit {max}"),
            ),
            Refusal::TooManyTailCalls { calls, max } => (
                "the tail-call chain".to_string(),
                format!("{calls} tail calls on one packet's path, limit {max}"),
            ),
            Refusal::BlockTooLarge {
                block,
                slots,
                jumps,
            } => (
                format!("decision-graph node {block}"),
                format!("{slots} instructions and {jumps} branches in one node"),
            ),
            Refusal::StageTooLarge { stage, overflow } => (
                format!("program stage {stage}"),
                match overflow {
                    StageOverflow::JumpOutOfRange {
                        label,
                        slot,
                        offset,
                    } => format!(
                        "jump at instruction {slot} to label `{label}` needs offset {offset}, \
                         which does not fit a BPF jump (-32768..=32767); split the program \
                         (tail call) or restructure the decision graph"
                    ),
                    StageOverflow::NoSplit => "cannot split under the budget".to_string(),
                },
            ),
            Refusal::ChainsTooDeep {
                table,
                depth,
                max,
                path,
            } => {
                let path = match path {
                    Some((first, last)) => format!(" ({first} → … → {last})"),
                    None => String::new(),
                };
                (
                    format!("the chain graph of table `{table}`"),
                    format!(
                        "its chains nest {depth} jumps deep below the entry chain{path}; nf_tables allows {max} (15 below the built-in chain, which reaches the entry chain through the runtime's hook chain)"
                    ),
                )
            }
            Refusal::NotExpressible { .. } => unreachable!("not a limit"),
        }
    }

    fn diagnostic(self, span: Span) -> Diagnostic {
        let backend = self.backend().name();
        match self {
            Refusal::NotExpressible { .. } => {
                let code = self.code();
                let Refusal::NotExpressible { construct, .. } = self else {
                    unreachable!()
                };
                let name = construct.name();
                B::new(
                    code,
                    format!("the {backend} back end cannot express `{name}`"),
                    span,
                    construct.detail(),
                )
                .help(format!(
                    "compile for another target, or change the program so that it does not need `{name}` on {backend}"
                ))
                .done()
            }
            limit => {
                let (what, detail) = limit.limit();
                B::new(
                    Code::E0510,
                    format!("the {backend} back end cannot hold this program: {what} is too large"),
                    span,
                    detail,
                )
                .help(format!(
                    "the program is refused rather than truncated at run time; split the policy set over several hooks, simplify it, or compile for another target than {backend}"
                ))
                .done()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_code_is_the_rendered_code() {
        let span = Span::default();
        let kinds = [
            Refusal::NotExpressible {
                backend: Target::Iptables,
                construct: Construct::MaglevBalance {
                    service: "s".into(),
                    backends: 2,
                },
            },
            Refusal::MapTooLarge {
                map: "weir_ct".into(),
                entries: 2,
                max: 1,
            },
            Refusal::ChainsTooDeep {
                table: "filter".into(),
                depth: 14,
                max: 13,
                path: None,
            },
        ]
        .map(|refusal| Kind::Refused { span, refusal });
        for k in kinds {
            assert_eq!(k.code(), k.clone().into_diagnostic().code, "{k:?}");
        }
    }

    #[test]
    fn one_of_lists() {
        assert_eq!(one_of(&["`a`".into()]), "`a`");
        assert_eq!(
            one_of(&["a".into(), "b".into(), "c".into()]),
            "one of a, b or c"
        );
    }
}
