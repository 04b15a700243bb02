//! The checked model: what a weir program means, as plain data.
//!
//! The checker turns syntax trees into a [`Model`]: names resolved (named
//! selectors inlined, set names flattened into CIDR lists), numbers range
//! checked, defaults filled in, everything ordered deterministically. The
//! reference interpreter, the decision graph and every back end read only
//! this type, never the AST. Addresses are [`IpAddr`] throughout so IPv6
//! needs no new shapes, only more entries.
//!
//! Invariants (the checker guarantees them; a violation is a compiler bug):
//! - names are unique per kind; `policies` is sorted by (tier order, tier
//!   name, priority, name); `steers` by (priority, name); `tiers` by
//!   (order, name); `endpoints` and `services` by name;
//! - every [`Cidr`] has no host bits set;
//! - every address belongs to at most one endpoint;
//! - ingress rules have only `peer` (the source), egress rules only `peer`
//!   (the destination) — the syntax's `from`/`to` is gone.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use weir_grammar::Span;

pub use weir_grammar::ast::{Direction, Proto};

/// Every protocol with a keyword, in the order the decision graph's
/// protocol tables list them.
pub const PROTOS: [Proto; 5] = [
    Proto::Icmp,
    Proto::Tcp,
    Proto::Udp,
    Proto::Sctp,
    Proto::Icmp6,
];

/// An IPv4 or IPv6 prefix with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn host(addr: IpAddr) -> Cidr {
        Cidr {
            addr,
            len: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.len))
                };
                u32::from(n) == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.len))
                };
                u128::from(n) == u128::from(a) & mask
            }
            _ => false,
        }
    }

    /// True when `other` is inside this prefix.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.covers(other) || other.covers(self)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A resolved label selector. Named selectors are inlined.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Sel {
    All,
    Eq(String, String),
    Ne(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Has(String),
    Not(Box<Sel>),
    And(Box<Sel>, Box<Sel>),
    Or(Box<Sel>, Box<Sel>),
}

impl Sel {
    /// The meaning of a selector over one endpoint's labels
    /// (docs/language.md §3 "Selectors").
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Sel::All => true,
            Sel::Eq(k, v) => labels.get(k) == Some(v),
            Sel::Ne(k, v) => labels.get(k) != Some(v),
            Sel::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Sel::NotIn(k, vs) => !labels.get(k).is_some_and(|v| vs.contains(v)),
            Sel::Has(k) => labels.contains_key(k),
            Sel::Not(e) => !e.matches(labels),
            Sel::And(a, b) => a.matches(labels) && b.matches(labels),
            Sel::Or(a, b) => a.matches(labels) || b.matches(labels),
        }
    }

    /// Every label key the selector mentions.
    pub fn keys(&self, out: &mut BTreeSet<String>) {
        match self {
            Sel::All => {}
            Sel::Eq(k, _) | Sel::Ne(k, _) | Sel::In(k, _) | Sel::NotIn(k, _) | Sel::Has(k) => {
                out.insert(k.clone());
            }
            Sel::Not(e) => e.keys(out),
            Sel::And(a, b) | Sel::Or(a, b) => {
                a.keys(out);
                b.keys(out);
            }
        }
    }
}

impl fmt::Display for Sel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(vs: &BTreeSet<String>) -> String {
            vs.iter()
                .map(|v| format!("{v:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
        match self {
            Sel::All => write!(f, "all"),
            Sel::Eq(k, v) => write!(f, "{k} == {v:?}"),
            Sel::Ne(k, v) => write!(f, "{k} != {v:?}"),
            Sel::In(k, vs) => write!(f, "{k} in {{{}}}", list(vs)),
            Sel::NotIn(k, vs) => write!(f, "{k} not in {{{}}}", list(vs)),
            Sel::Has(k) => write!(f, "has({k})"),
            Sel::Not(e) => write!(f, "!({e})"),
            Sel::And(a, b) => write!(f, "({a} && {b})"),
            Sel::Or(a, b) => write!(f, "({a} || {b})"),
        }
    }
}

/// A resolved address set: addresses in some `include` and in no `exclude`.
/// Both lists are sorted and deduplicated.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct AddrSet {
    pub include: Vec<Cidr>,
    pub exclude: Vec<Cidr>,
}

impl AddrSet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.include.iter().any(|c| c.contains(ip)) && !self.exclude.iter().any(|c| c.contains(ip))
    }
}

/// The peer of a rule: who is on the other end.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum PeerMatch {
    Any,
    /// Endpoints whose labels match.
    Selector(Sel),
    /// Addresses in the set (endpoint or not).
    Set(AddrSet),
    /// `self`: the peer address belongs to the endpoint the side is judged
    /// for (policy rules only; language.md §4).
    SelfEndpoint,
    /// `world [SET]`: the peer address belongs to no endpoint (and is in
    /// the set, when one is given).
    World(Option<AddrSet>),
    /// `node`: the peer address is an address of the node the endpoint
    /// the side is judged for runs on (its `node` attribute; policy rules
    /// only; language.md §4 "Nodes"). `nodes SEL` needs no variant: the
    /// checker resolves it to the set of the matching nodes' addresses.
    OwnNode,
}

/// An inclusive port range; `lo >= 1`, `lo <= hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    /// Sorted, merged ranges (no overlaps, no adjacency): the one form a
    /// rule's ports take in the model ([`ProtoMatch::Ports`]), for the
    /// checker and the model generators alike.
    pub fn merge(mut rs: Vec<PortRange>) -> Vec<PortRange> {
        rs.sort();
        let mut out: Vec<PortRange> = Vec::new();
        for r in rs {
            match out.last_mut() {
                Some(last) if u32::from(r.lo) <= u32::from(last.hi) + 1 => {
                    last.hi = last.hi.max(r.hi);
                }
                _ => out.push(r),
            }
        }
        out
    }
}

/// Protocol part of a rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ProtoMatch {
    Any,
    /// tcp/udp/sctp; an empty `ports` means every port. Ranges are sorted
    /// and merged (no overlaps, no adjacency).
    Ports {
        proto: Proto,
        ports: Vec<PortRange>,
    },
    /// `tcp port "http"` (tcp/udp/sctp): the destination port is the
    /// port the *destination endpoint* declares as `name` with this
    /// protocol; a destination without it is matched by nothing
    /// (language.md §4, "Named ports"; [`crate::named_ports`]).
    Named {
        proto: Proto,
        name: String,
    },
    /// `icmp` (ICMPv4, IPv4 packets only) or `icmp6` (ICMPv6, IPv6
    /// packets only): `proto` is [`Proto::Icmp`] or [`Proto::Icmp6`].
    Icmp {
        proto: Proto,
        ty: Option<u8>,
        code: Option<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Action {
    Allow,
    Deny,
    Pass,
    Log,
}

/// One policy rule with its place in the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub action: Action,
    pub proto: ProtoMatch,
    pub peer: PeerMatch,
    /// A trailing `log` flag on an allow/deny/pass rule.
    pub log: bool,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tier {
    pub name: String,
    pub order: u32,
    /// `tier NAME order N audit`: every policy in it is an audit policy.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub audit: bool,
    /// `tier NAME order N default pass`: when the tier's active policies
    /// decide nothing, the side goes on to the next tier (as if a rule
    /// passed) instead of being denied by the isolation default.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default_pass: bool,
    /// `None` for the built-in `default` tier when not declared.
    pub span: Option<Span>,
}

/// Index into [`Model::tiers`].
pub type TierId = usize;
/// Index into [`Model::policies`].
pub type PolicyId = usize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub name: String,
    pub tier: TierId,
    pub priority: u16,
    pub applies_to: Sel,
    /// `Some` exactly when the policy has an `ingress { }` block.
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
    /// An audit policy (marked `audit`, or in an audit tier): evaluated
    /// for the audit verdict only, never enforced (language.md §4,
    /// "Audit policies").
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub audit: bool,
    pub span: Span,
    pub name_span: Span,
}

impl Policy {
    pub fn rules(&self, dir: Direction) -> Option<&[Rule]> {
        match dir {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub name: String,
    pub labels: crate::labels::Labels,
    pub addrs: Vec<IpAddr>,
    pub ready: bool,
    /// `None` for endpoints from a JSON inventory.
    pub span: Option<Span>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Frontend {
    pub addr: IpAddr,
    pub port: u16,
    pub proto: Proto,
}

/// A concrete backend socket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Backend {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u16,
    /// The endpoint that provides it, when it came from a selector.
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum BackendSource {
    /// Ready endpoints matching `selector`, at `port`.
    Select {
        selector: Sel,
        port: TargetPort,
    },
    Explicit(Vec<Backend>),
}

/// The port of `backends select`: a number, or the port each backend
/// endpoint declares under a name for the frontend's protocol (an
/// endpoint without it is not a backend; language.md §3 "Services").
/// Serialized as the number or the name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(untagged)]
pub enum TargetPort {
    Number(u16),
    Named(String),
}

impl fmt::Display for TargetPort {
    /// As written after `backends select SEL port`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetPort::Number(n) => write!(f, "{n}"),
            TargetPort::Named(name) => write!(f, "\"{name}\""),
        }
    }
}

impl TargetPort {
    /// The backend port on an endpoint with `labels` for a frontend of
    /// `proto`; `None`: the endpoint is no backend of the service.
    pub fn on(&self, labels: &BTreeMap<String, String>, proto: Proto) -> Option<u16> {
        match self {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Named(name) => crate::named_ports::resolve(labels, name, proto),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Balance {
    Random,
    Maglev,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    pub name: String,
    pub frontends: Vec<Frontend>,
    pub backends: BackendSource,
    pub balance: Balance,
    /// Client-IP affinity timeout in seconds.
    pub affinity: Option<u32>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SteerAction {
    /// Deliver to a local transparent proxy.
    Redirect {
        addr: IpAddr,
        port: u16,
    },
    Mark(u32),
    Dscp(u8),
    Bypass,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SteerRule {
    pub action: SteerAction,
    pub proto: ProtoMatch,
    pub from: PeerMatch,
    pub to: PeerMatch,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Steer {
    pub name: String,
    pub priority: u16,
    pub rules: Vec<SteerRule>,
    pub span: Span,
}

/// `default deny` declarations, with where they were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct DefaultDeny {
    pub ingress: Option<Span>,
    pub egress: Option<Span>,
}

impl DefaultDeny {
    pub fn get(&self, dir: Direction) -> Option<Span> {
        match dir {
            Direction::Ingress => self.ingress,
            Direction::Egress => self.egress,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ConnState {
    New,
    Established,
}

/// Who is at one end of a test packet, resolved to an address (and, for a
/// label map, a synthetic endpoint the interpreter adds for this test).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestPeer {
    pub addr: IpAddr,
    /// Labels of a synthetic endpoint (`{ app: "api" }`), if any.
    pub synthetic_labels: Option<BTreeMap<String, String>>,
    /// How the user wrote it, for messages.
    pub display: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expect {
    pub verdict: Verdict,
    pub proto: Proto,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub from: TestPeer,
    pub to: TestPeer,
    pub port: u16,
    pub state: ConnState,
    pub at: Option<Direction>,
    /// `via BACKEND`: the one backend to judge a service's packet by
    /// (None: every backend).
    pub via: Option<TestVia>,
    /// `by NAME`: policy, steer, service, or "default".
    pub by: Option<String>,
    /// `by policy|steer|service NAME`: the kind `by` names, when said.
    pub by_kind: Option<weir_grammar::ast::ByKind>,
    /// `mark N` / `dscp N` / `redirect to proxy S` / `bypass`: the
    /// steering action the outcome must carry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steering: Option<SteerAction>,
    /// `audit allow|deny [by NAME]`: the audit verdict (language.md §4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<ExpectAudit>,
    pub span: Span,
}

/// The audit part of an `expect` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectAudit {
    pub verdict: Verdict,
    pub by: Option<String>,
    pub by_kind: Option<weir_grammar::ast::ByKind>,
}

/// A resolved `via`: the backend address, and its port when written as
/// `ADDR:PORT` (an endpoint name stands for each of its backends of the
/// packet's family).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestVia {
    pub addr: IpAddr,
    pub port: Option<u16>,
    pub display: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Test {
    pub name: String,
    pub expects: Vec<Expect>,
    pub span: Span,
}

/// A whole checked program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Model {
    pub tiers: Vec<Tier>,
    pub policies: Vec<Policy>,
    pub endpoints: Vec<Endpoint>,
    pub services: Vec<Service>,
    pub steers: Vec<Steer>,
    pub default_deny: DefaultDeny,
    /// Tests of the root files only (imported files' tests are not run).
    pub tests: Vec<Test>,
    /// Named selectors and sets, for tools (hover, lints); the semantics
    /// never needs them because references are inlined.
    pub named_selectors: BTreeMap<String, Sel>,
    pub named_sets: BTreeMap<String, AddrSet>,
    /// Declared namespaces (program and inventory) and their labels, for
    /// tools and lints: the semantics reads an endpoint's derived labels
    /// (crate::namespaces), never this table.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Declared nodes (language.md §3 "Nodes"), sorted by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<Node>,
}

/// A node: the machine endpoints run on (`node NAME { … }`). Its
/// addresses are not endpoint addresses; an endpoint names its node with
/// the `node` attribute, held as the label [`crate::nodes::KEY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub addrs: Vec<IpAddr>,
    /// `None` for nodes from a JSON inventory.
    pub span: Option<Span>,
}

impl Model {
    /// Does the program have audit policies (language.md §4, "Audit
    /// policies")?
    pub fn has_audit(&self) -> bool {
        self.policies.iter().any(|p| p.audit)
    }

    /// The program as enforced: without its audit policies. Policy ids
    /// change (this is a different program); for the property test and
    /// tools, never for provenance.
    pub fn without_audit(&self) -> Model {
        let mut m = self.clone();
        m.policies.retain(|p| !p.audit);
        m
    }

    /// The program with its audit policies enforced (the audit marks
    /// removed): what the audit verdict is the verdict of.
    pub fn audit_enforced(&self) -> Model {
        let mut m = self.clone();
        for p in &mut m.policies {
            p.audit = false;
        }
        for t in &mut m.tiers {
            t.audit = false;
        }
        m
    }

    /// Where a diagnostic about the program as a whole (a back end's
    /// capacity limit) points: the first policy, else the first steering
    /// rule, else the first service declaration.
    pub fn program_span(&self) -> Span {
        self.policies
            .first()
            .map(|p| p.span)
            .or_else(|| self.steers.first().map(|s| s.span))
            .or_else(|| self.services.first().map(|s| s.span))
            .unwrap_or_default()
    }
}
