//! The syntax tree of one `.weir` file.
//!
//! The AST is what the user wrote, nothing resolved: names are still names,
//! numbers are still in range-unchecked form where the checker owns the
//! rule (host bits, ICMP ranges, port-vs-protocol). Every node carries the
//! [`Span`] of its source text so that every later diagnostic can point at
//! it. Nodes that failed to parse are replaced by `Error` variants (or
//! dropped from lists) after the parser has recorded a syntax error, so the
//! checker can keep going on the rest of the file.

use crate::span::Span;
use serde::Serialize;
use std::net::IpAddr;

/// A name as written, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct File {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Item {
    Import(Import),
    Inventory(InventoryDecl),
    Selector(SelectorDecl),
    Set(SetDecl),
    Endpoint(EndpointDecl),
    Node(NodeDecl),
    Namespace(NamespaceDecl),
    Service(ServiceDecl),
    Tier(TierDecl),
    Policy(PolicyDecl),
    DefaultDeny(DefaultDenyDecl),
    Steer(SteerDecl),
    Test(TestDecl),
}

/// `import std.dns` / `import lib.common`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Import {
    /// Dotted path segments: `std.dns` is `["std", "dns"]`.
    pub path: Vec<Ident>,
    pub span: Span,
}

/// `inventory "endpoints.json"`: endpoints loaded from a JSON inventory,
/// relative to this file's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InventoryDecl {
    pub path: String,
    pub path_span: Span,
    pub span: Span,
}

/// `selector NAME = SEL`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SelectorDecl {
    pub name: Ident,
    pub expr: SelExpr,
    pub span: Span,
}

/// A label key or value as written: a bare identifier or a string literal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Label {
    pub text: String,
    pub span: Span,
}

/// Label-selector expression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SelExpr {
    /// `all`
    All(Span),
    /// `key == "value"`
    Eq(Label, Label, Span),
    /// `key != "value"`
    Ne(Label, Label, Span),
    /// `key in {"a", "b"}`
    In(Label, Vec<Label>, Span),
    /// `key not in {"a", "b"}`
    NotIn(Label, Vec<Label>, Span),
    /// `has(key)`
    Has(Label, Span),
    /// `namespace(SEL)`: SEL holds for the labels of the endpoint's
    /// namespace (an endpoint without one matches none).
    Namespace(Box<SelExpr>, Span),
    /// `!e`
    Not(Box<SelExpr>, Span),
    /// `a && b`
    And(Box<SelExpr>, Box<SelExpr>, Span),
    /// `a || b`
    Or(Box<SelExpr>, Box<SelExpr>, Span),
    /// A named selector (or, in peer position, a named set; the checker decides).
    Name(Ident),
    /// `( e )` — kept so the formatter can keep the user's grouping.
    Paren(Box<SelExpr>, Span),
    /// Placeholder for an expression that failed to parse.
    Error(Span),
}

impl SelExpr {
    pub fn span(&self) -> Span {
        match self {
            SelExpr::All(s)
            | SelExpr::Eq(_, _, s)
            | SelExpr::Ne(_, _, s)
            | SelExpr::In(_, _, s)
            | SelExpr::NotIn(_, _, s)
            | SelExpr::Has(_, s)
            | SelExpr::Namespace(_, s)
            | SelExpr::Not(_, s)
            | SelExpr::And(_, _, s)
            | SelExpr::Or(_, _, s)
            | SelExpr::Paren(_, s)
            | SelExpr::Error(s) => *s,
            SelExpr::Name(i) => i.span,
        }
    }
}

/// An address literal: `10.0.0.0/8`, `10.1.0.5`, `fd00::/8`.
/// `prefix` is `None` for a bare address. Host bits are not checked here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CidrLit {
    pub addr: IpAddr,
    pub prefix: Option<u8>,
    pub span: Span,
}

/// One element of a set literal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SetElem {
    Cidr(CidrLit),
    /// A named set.
    Name(Ident),
}

/// `{ a, b }`, a single CIDR, or a set name; optionally `except { ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetExpr {
    pub base: Vec<SetElem>,
    /// Span of the base part (the braces, or the single element).
    pub base_span: Span,
    pub except: Option<(Vec<SetElem>, Span)>,
    pub span: Span,
}

/// `set NAME = SETEXPR`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetDecl {
    pub name: Ident,
    pub expr: SetExpr,
    pub span: Span,
}

/// `endpoint NAME { labels { k: "v" } addr 10.1.0.5 }`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointDecl {
    pub name: Ident,
    pub labels: Vec<(Label, Label)>,
    pub addrs: Vec<CidrLit>,
    /// `ports { http: 8080/tcp, … }`, in source order.
    pub ports: Vec<PortDecl>,
    /// `node NAME` lines (the checker allows one; E0270).
    pub node: Vec<Ident>,
    /// `host network` lines.
    pub host_network: Vec<Span>,
    /// `namespace NAME` lines, in source order (the checker allows one).
    pub namespace: Vec<Ident>,
    pub span: Span,
}

/// `namespace NAME { labels { team: "a" } }`: a namespace and its own
/// labels, which `namespace(SEL)` tests for the endpoints in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceDecl {
    pub name: Ident,
    pub labels: Vec<(Label, Label)>,
    pub span: Span,
}

/// `node NAME { labels { … } addr A }`: a node, written with endpoint
/// lines (the checker refuses `ports`, `node` and `host network` in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeDecl {
    pub decl: EndpointDecl,
}

/// The port of `backends select SEL port …`: a number, or the name of a
/// port each backend endpoint declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum TargetPort {
    Number(Num),
    Named(Label),
}

/// One named port of an endpoint: `http: 8080/tcp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortDecl {
    pub name: Label,
    pub port: Num,
    /// `tcp`, `udp` or `sctp`.
    pub proto: (Proto, Span),
    pub span: Span,
}

/// A protocol keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
    /// ICMPv4: IPv4 protocol 1 (an IPv6 packet with next header 1 is not
    /// `icmp`; docs/language.md §4, "Headers").
    Icmp,
    /// ICMPv6: IPv6 next header 58 (an IPv4 packet with protocol 58 is
    /// not `icmp6`).
    Icmp6,
}

impl Proto {
    /// The keyword that names the protocol.
    pub fn keyword(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
            Proto::Icmp => "icmp",
            Proto::Icmp6 => "icmp6",
        }
    }

    /// `icmp` or `icmp6`: a protocol with type and code, no ports.
    pub fn is_icmp(self) -> bool {
        matches!(self, Proto::Icmp | Proto::Icmp6)
    }
}

/// A number as written (decimal or `0x` hex), unchecked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Num {
    pub value: u64,
    pub span: Span,
}

/// `ADDR:PORT` — IPv6 is written `[fd00::1]:443`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SocketLit {
    pub addr: CidrLit,
    pub port: Num,
    pub span: Span,
}

/// `frontend 10.96.0.10:443/tcp`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Frontend {
    pub socket: SocketLit,
    pub proto: (Proto, Span),
    pub span: Span,
}

/// One explicit backend: `10.1.0.5:8443 weight 2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExplicitBackend {
    pub socket: SocketLit,
    pub weight: Option<Num>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Backends {
    /// `backends select SEL port N` or `… port "NAME"`
    Select {
        selector: SelExpr,
        port: TargetPort,
        span: Span,
    },
    /// `backends { 10.1.0.5:8443 weight 2, ... }`
    Explicit {
        list: Vec<ExplicitBackend>,
        span: Span,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Balance {
    Random,
    Maglev,
}

/// A duration literal like `3h`, `30m`, `10s`, `1d`, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Duration {
    pub seconds: u64,
    pub span: Span,
}

/// One line inside a `service { }` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ServiceItem {
    Frontend(Frontend),
    Backends(Backends),
    Balance(Balance, Span),
    /// `affinity client-ip 3h`
    Affinity(Duration, Span),
}

/// `service NAME { ... }`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceDecl {
    pub name: Ident,
    pub items: Vec<ServiceItem>,
    pub span: Span,
}

/// `tier NAME order N`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierDecl {
    pub name: Ident,
    pub order: Num,
    /// `audit`: every policy of the tier is an audit policy.
    pub audit: Option<Span>,
    /// `default pass`: when the tier's active policies decide nothing, the
    /// side continues with the next tier instead of the isolation default.
    pub default_pass: Option<Span>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Direction {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Action {
    Allow,
    Deny,
    Pass,
    Log,
}

/// A port or an inclusive range `8000-8080`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortRange {
    pub lo: Num,
    pub hi: Option<Num>,
    pub span: Span,
}

/// `tcp 80`, `udp {53, 5353}`, `icmp type 3 code 4`, `any`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ProtoMatch {
    /// `any` written explicitly.
    Any(Span),
    /// A port protocol with optional ports (empty = every port).
    Ports {
        proto: Proto,
        ports: Vec<PortRange>,
        span: Span,
    },
    /// `tcp port "http"`: the port the destination endpoint declares
    /// under that name (docs/language.md §4).
    Named {
        proto: Proto,
        name: Label,
        span: Span,
    },
    /// `icmp [type N [code N]]` or `icmp6 [type N [code N]]`.
    Icmp {
        /// [`Proto::Icmp`] or [`Proto::Icmp6`].
        proto: Proto,
        ty: Option<Num>,
        code: Option<Num>,
        span: Span,
    },
}

impl ProtoMatch {
    pub fn span(&self) -> Span {
        match self {
            ProtoMatch::Any(s) => *s,
            ProtoMatch::Ports { span, .. }
            | ProtoMatch::Named { span, .. }
            | ProtoMatch::Icmp { span, .. } => *span,
        }
    }
}

/// The peer of a rule or test: `any`, a set, or a selector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Peer {
    /// `any`
    Any(Span),
    /// A CIDR / address literal or a brace set literal, possibly with `except`.
    Set(SetExpr),
    /// A selector expression or a bare name (named selector *or* named set;
    /// the checker resolves which).
    Selector(SelExpr),
    /// Test-only: `{ app: "api" }`, a synthetic endpoint with these labels.
    Labels(Vec<(Label, Label)>, Span),
    /// `self`: the endpoint the side is judged for.
    SelfEp(Span),
    /// `world [SET]`: addresses that belong to no endpoint (in `SET`).
    World(Option<SetExpr>, Span),
    /// `node`: the addresses of the node the judged endpoint runs on.
    OwnNode(Span),
    /// `nodes SEL`: the addresses of the nodes whose labels match.
    Nodes(SelExpr, Span),
}

/// `allow tcp 5432 from api log`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub action: (Action, Span),
    pub proto: Option<ProtoMatch>,
    pub from: Option<Peer>,
    pub to: Option<Peer>,
    /// Span of a trailing `log` flag, if written.
    pub log: Option<Span>,
    pub span: Span,
}

/// `ingress { rules }` / `egress { rules }`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleBlock {
    pub direction: Direction,
    pub rules: Vec<Rule>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PolicyItem {
    /// `applies to SEL`
    AppliesTo(SelExpr, Span),
    Rules(RuleBlock),
}

/// `policy NAME [priority N] [tier NAME] [audit] { ... }`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyDecl {
    pub name: Ident,
    pub priority: Option<Num>,
    pub tier: Option<Ident>,
    /// `audit`: evaluated and counted, never enforced (language.md §4).
    pub audit: Option<Span>,
    pub items: Vec<PolicyItem>,
    pub span: Span,
}

/// `default deny ingress` / `default deny egress` / `default deny ingress, egress`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DefaultDenyDecl {
    pub directions: Vec<(Direction, Span)>,
    pub span: Span,
}

/// What a steering rule does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SteerAction {
    /// `redirect ... to proxy 127.0.0.1:15001`
    Redirect(SocketLit),
    /// `mark 0x10 ...`
    Mark(Num),
    /// `dscp 46 ...`
    Dscp(Num),
    /// `bypass ...`
    Bypass,
}

/// One steering rule; the match part reuses rule syntax.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SteerRule {
    pub action: SteerAction,
    pub action_span: Span,
    pub proto: Option<ProtoMatch>,
    pub from: Option<Peer>,
    pub to: Option<Peer>,
    pub span: Span,
}

/// `steer NAME [priority N] { ... }`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SteerDecl {
    pub name: Ident,
    pub priority: Option<Num>,
    pub rules: Vec<SteerRule>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ConnState {
    New,
    Established,
}

/// `expect allow tcp from { app: "api" } to db port 5432 [state established] [at ingress] [by NAME]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expect {
    pub verdict: (Verdict, Span),
    /// Protocol of the packet; `icmp` may carry `type`/`code`, never a
    /// port list (a test packet has one destination port, given by `port`).
    pub proto: (Proto, Span),
    pub icmp_type: Option<Num>,
    pub icmp_code: Option<Num>,
    pub from: Peer,
    pub to: Peer,
    pub port: Option<Num>,
    pub state: Option<(ConnState, Span)>,
    pub at: Option<(Direction, Span)>,
    /// `via BACKEND`: the service backend the packet is sent to.
    pub via: Option<Via>,
    /// `mark N` / `dscp N` / `redirect to proxy S` / `bypass`: the
    /// steering action the verdict must carry.
    pub steering: Option<(SteerAction, Span)>,
    /// `by policy|steer|service NAME`: which kind `by` names, when said.
    pub by_kind: Option<(ByKind, Span)>,
    /// `by NAME`: the policy, steer, service or `default` that must decide.
    pub by: Option<Ident>,
    /// `audit allow|deny [by NAME]`: the audit verdict.
    pub audit: Option<ExpectAudit>,
    pub span: Span,
}

/// `audit allow|deny [by [KIND] NAME]` on an expect line: the verdict (and
/// its owner) with the audit policies enforced (language.md §4, "Audit").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectAudit {
    pub verdict: (Verdict, Span),
    pub by_kind: Option<(ByKind, Span)>,
    pub by: Option<Ident>,
    pub span: Span,
}

/// The backend of `via`: an endpoint (one of its addresses of the
/// packet's family) or an address and port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Via {
    Endpoint(Ident),
    Socket(SocketLit),
}

/// What `by KIND NAME` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ByKind {
    Policy,
    Steer,
    Service,
}

/// `test "name" { expect ... }`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestDecl {
    pub name: String,
    pub name_span: Span,
    pub expects: Vec<Expect>,
    pub span: Span,
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Import(i) => i.span,
            Item::Inventory(i) => i.span,
            Item::Selector(i) => i.span,
            Item::Set(i) => i.span,
            Item::Endpoint(i) => i.span,
            Item::Node(i) => i.decl.span,
            Item::Namespace(i) => i.span,
            Item::Service(i) => i.span,
            Item::Tier(i) => i.span,
            Item::Policy(i) => i.span,
            Item::DefaultDeny(i) => i.span,
            Item::Steer(i) => i.span,
            Item::Test(i) => i.span,
        }
    }
}
