//! The reference interpreter: the executable meaning of weir.
//!
//! This module is docs/language.md §4 written as code, for clarity rather
//! than speed: every packet walks the pipeline (conntrack state, bypass,
//! service, egress ∧ ingress policy, steering) directly over the checked
//! model. The decision graph and both back ends are tested against it by
//! differential tests, so when they disagree, this is right by definition —
//! or the reference is wrong and both change together.

mod audit;
pub mod events;
mod expect;
pub mod explain;
mod family;
mod packet_text;
mod policy;
pub mod related;
mod service;
mod steer;

pub use audit::AuditOutcome;
pub use expect::{
    expect_packet, run_tests, synthetic_endpoints, verdict_name, ExpectResult, TestReport,
};
pub use family::{rule_fields, rule_proto, OTHER_PROTO};
pub use packet_text::parse_packet;
pub(crate) use service::endpoint_view;
pub use service::{backends_of, backends_of_indexed, selector_backends, weighted, EndpointView};

use crate::model::{
    Backend, ConnState, Direction, Endpoint, Frontend, Model, PeerMatch, Proto, ProtoMatch,
    SteerAction, Verdict,
};
use crate::provenance::{combine_sides, Provenance};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// How much of a packet's headers its enforcement point can see
/// (docs/language.md §4, "Headers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Headers {
    /// Parsed through the transport header (or its protocol has none).
    #[default]
    Whole,
    /// A non-first fragment (IPv4 fragment offset or IPv6 Fragment header
    /// offset ≠ 0): it carries no transport header, so no ports or ICMP
    /// type.
    Fragment,
    /// The transport header cannot be found: headers cut short, or an IPv6
    /// extension-header chain longer than [`MAX_EXTENSION_HEADERS`].
    Unparsed,
}

/// IPv6 extension headers the parser walks before it gives up (the
/// packet is then [`Headers::Unparsed`]).
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// A packet whose headers are not all seen is denied before anything else
/// (step 0 of docs/language.md §4): it could only be judged by rules it
/// might not match if fully seen. The provenance that denies it, if so.
pub fn unseen(p: &Packet) -> Option<Provenance> {
    match p.headers {
        Headers::Whole => None,
        Headers::Fragment => Some(Provenance::Fragment),
        Headers::Unparsed => Some(Provenance::Unparsed),
    }
}

/// One packet as an enforcement point sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Packet {
    pub proto: Proto,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// `Established`: a reply or later packet of an allowed connection,
    /// or an ICMP error related to one ([`related`]).
    pub state: ConnState,
    /// `Some(dir)`: evaluate only that side (what one hook sees).
    pub at: Option<Direction>,
    /// Whole, or a fragment / unparsed packet (ports and ICMP fields then
    /// unknown: 0).
    pub headers: Headers,
}

impl Packet {
    /// A new TCP/UDP/SCTP packet evaluated on both sides.
    pub fn new(proto: Proto, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Packet {
        Packet {
            proto,
            src,
            sport,
            dst,
            dport,
            icmp_type: 0,
            icmp_code: 0,
            state: ConnState::New,
            at: None,
            headers: Headers::Whole,
        }
    }
}

/// The decision of one side (ingress or egress) of the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SideDecision {
    pub verdict: Verdict,
    pub by: Provenance,
    /// `log` rules passed on the way, and the deciding rule if it has the
    /// `log` flag, in evaluation order.
    pub logged: Vec<Provenance>,
    /// The endpoint whose policy was evaluated (None: not an endpoint).
    pub subject: Option<String>,
}

/// A service translation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceHit {
    pub service: usize,
    pub frontend: Frontend,
    /// Ready backends of the frontend's address family, weight > 0.
    pub candidates: Vec<Backend>,
    /// The backend this evaluation used (None: no backends, rejected).
    pub chosen: Option<Backend>,
}

/// The steering rule that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SteerHit {
    pub steer: usize,
    pub index: usize,
    pub action: SteerAction,
}

/// Everything the interpreter concluded about one packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub verdict: Verdict,
    pub decided_by: Provenance,
    /// Log rules passed (both sides), egress side first.
    pub logged: Vec<Provenance>,
    pub service: Option<ServiceHit>,
    /// Attached only when allowed (bypass: always).
    pub steering: Option<SteerHit>,
    pub egress: Option<SideDecision>,
    pub ingress: Option<SideDecision>,
    /// True when the service rejects actively (TCP reset / ICMP unreachable).
    pub reject: bool,
    /// The audit verdict, exactly when the program has audit policies
    /// (for a packet decided before step 4 it is the enforced verdict).
    /// Never an input to the fields above.
    pub audit: Option<AuditOutcome>,
}

/// How to choose a backend when the packet hits a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// Random services: weighted by the flow hash (deterministic stand-in
    /// for the data path's random choice); Maglev: the Maglev table.
    ByHash,
    /// Use this backend (a differential test tells us what the back end
    /// chose and asks what the verdict is for it). Must be a candidate.
    Pinned(IpAddr, u16),
}

/// An interpreter over one model plus extra (test-synthetic) endpoints.
pub struct Interp<'m> {
    pub model: &'m Model,
    extra: Vec<Endpoint>,
    by_addr: BTreeMap<IpAddr, (bool, usize)>,
    /// [`Model::has_audit`], once.
    has_audit: bool,
}

impl<'m> Interp<'m> {
    pub fn new(model: &'m Model) -> Interp<'m> {
        Interp::with_extra(model, Vec::new())
    }

    /// An interpreter that also knows `extra` endpoints (synthetic test
    /// endpoints). Their addresses shadow nothing: they must be unused.
    pub fn with_extra(model: &'m Model, extra: Vec<Endpoint>) -> Interp<'m> {
        let mut by_addr = BTreeMap::new();
        for (i, e) in model.endpoints.iter().enumerate() {
            for a in &e.addrs {
                by_addr.entry(*a).or_insert((false, i));
            }
        }
        for (i, e) in extra.iter().enumerate() {
            for a in &e.addrs {
                by_addr.entry(*a).or_insert((true, i));
            }
        }
        Interp {
            model,
            extra,
            by_addr,
            has_audit: model.has_audit(),
        }
    }

    /// The endpoint that owns `addr`, if any.
    pub fn endpoint_of(&self, addr: IpAddr) -> Option<&Endpoint> {
        self.by_addr.get(&addr).map(|&(extra, i)| {
            if extra {
                &self.extra[i]
            } else {
                &self.model.endpoints[i]
            }
        })
    }

    /// Does `peer` match the address `addr`, with no endpoint judged (a
    /// steering rule)? `self` then matches nothing (the checker refuses
    /// it there, E0260).
    pub fn peer_matches(&self, peer: &PeerMatch, addr: IpAddr) -> bool {
        self.rule_peer_matches(peer, addr, None)
    }

    /// Does `peer` match the address `addr` for a side judged for
    /// `subject` (language.md §4: `self` is the subject endpoint itself,
    /// `world` an address of no endpoint)?
    pub fn rule_peer_matches(
        &self,
        peer: &PeerMatch,
        addr: IpAddr,
        subject: Option<&Endpoint>,
    ) -> bool {
        match peer {
            PeerMatch::Any => true,
            PeerMatch::Set(s) => s.contains(addr),
            PeerMatch::Selector(sel) => self
                .endpoint_of(addr)
                .is_some_and(|e| sel.matches(&e.labels)),
            PeerMatch::SelfEndpoint => match (self.endpoint_of(addr), subject) {
                (Some(e), Some(s)) => std::ptr::eq(e, s),
                _ => false,
            },
            // `world`: no endpoint's and no declared node's address (§4).
            PeerMatch::World(set) => {
                self.endpoint_of(addr).is_none()
                    && !crate::nodes::is_node_addr(self.model, addr)
                    && set.as_ref().is_none_or(|s| s.contains(addr))
            }
            // `node`: an address of the node the subject runs on (§4
            // "Nodes and host-network endpoints").
            PeerMatch::OwnNode => {
                subject.is_some_and(|s| crate::nodes::own_node_has(self.model, &s.labels, addr))
            }
        }
    }

    /// Evaluate with the default backend choice.
    pub fn evaluate(&self, p: &Packet) -> Outcome {
        self.evaluate_with(p, BackendChoice::ByHash)
    }

    /// The pipeline of docs/language.md §4, with the audit verdict beside
    /// (programs with audit policies).
    pub fn evaluate_with(&self, p: &Packet, choice: BackendChoice) -> Outcome {
        let mut o = self.pipeline(p, choice);
        self.audit_beside(&mut o);
        o
    }

    /// The pipeline of docs/language.md §4.
    fn pipeline(&self, p: &Packet, choice: BackendChoice) -> Outcome {
        // 0. Headers not all seen: denied.
        if let Some(by) = unseen(p) {
            return Outcome::simple(Verdict::Deny, by);
        }
        // 1. Connection state.
        if p.state == ConnState::Established {
            return Outcome::simple(Verdict::Allow, Provenance::Established);
        }
        // 2. Bypass (steering matched on the packet as sent).
        let steering = self.first_steer(p);
        if let Some(hit) = &steering {
            if hit.action == SteerAction::Bypass {
                let mut o = Outcome::simple(
                    Verdict::Allow,
                    Provenance::Bypass {
                        steer: hit.steer,
                        index: hit.index,
                    },
                );
                o.steering = steering;
                return o;
            }
        }
        // 3. Service.
        let mut translated = p.clone();
        let service = self.service_hit(p, choice);
        if let Some(hit) = &service {
            match &hit.chosen {
                None => {
                    let mut o = Outcome::simple(
                        Verdict::Deny,
                        Provenance::NoBackends {
                            service: hit.service,
                        },
                    );
                    o.service = service;
                    o.reject = true;
                    return o;
                }
                Some(b) => {
                    translated.dst = b.addr;
                    translated.dport = b.port;
                }
            }
        }
        // 4. Policy: egress of the source ∧ ingress of the destination.
        let egress =
            (p.at != Some(Direction::Ingress)).then(|| self.side(Direction::Egress, &translated));
        let ingress =
            (p.at != Some(Direction::Egress)).then(|| self.side(Direction::Ingress, &translated));
        // Log rules count on every side evaluated up to the first denial.
        let mut logged = Vec::new();
        for side in [&egress, &ingress].into_iter().flatten() {
            logged.extend(side.logged.iter().copied());
            if side.verdict == Verdict::Deny {
                break;
            }
        }
        let as_pair =
            |s: &Option<SideDecision>| s.as_ref().map(|s| (s.verdict == Verdict::Allow, s.by));
        let (verdict, decided_by) = combine_sides(as_pair(&egress), as_pair(&ingress));
        // 5. Steering on allowed packets.
        let steering = if verdict == Verdict::Allow {
            steering
        } else {
            None
        };
        // Audit: the same packet with the audit policies enforced, beside.
        let audit = self.audit_policy(&translated);
        Outcome {
            verdict,
            decided_by,
            logged,
            service,
            steering,
            egress,
            ingress,
            reject: false,
            audit,
        }
    }
}

impl Outcome {
    fn simple(verdict: Verdict, by: Provenance) -> Outcome {
        Outcome {
            verdict,
            decided_by: by,
            logged: Vec::new(),
            service: None,
            steering: None,
            egress: None,
            ingress: None,
            reject: false,
            audit: None,
        }
    }
}

/// Does a rule's protocol part match the packet? `dst` is the endpoint
/// that owns the packet's destination address, if any: a named port
/// (`tcp port "http"`) is the port *it* declares under that name and
/// protocol, and matches nothing when it declares none (language.md §4,
/// "Named ports").
pub fn proto_matches(m: &ProtoMatch, p: &Packet, dst: Option<&Endpoint>) -> bool {
    match m {
        ProtoMatch::Any => true,
        ProtoMatch::Named { proto, name } => {
            family::rule_proto(p) == Some(*proto)
                && dst
                    .and_then(|e| crate::named_ports::resolve(&e.labels, name, *proto))
                    .is_some_and(|port| port == p.dport)
        }
        ProtoMatch::Ports { proto, ports } => {
            family::rule_proto(p) == Some(*proto)
                && (ports.is_empty() || ports.iter().any(|r| r.lo <= p.dport && p.dport <= r.hi))
        }
        ProtoMatch::Icmp { proto, ty, code } => {
            family::rule_proto(p) == Some(*proto)
                && ty.is_none_or(|t| t == p.icmp_type)
                && code.is_none_or(|c| c == p.icmp_code)
        }
    }
}
