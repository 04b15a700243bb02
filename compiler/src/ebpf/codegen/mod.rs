//! Code generation: decision graph → TC classifier programs, maps and the
//! data that fills them.
//!
//! # Pipeline
//!
//! One pipeline per object, for one enforcement point ([`Mode`]): `Node`
//! (a forwarding hook that sees both ends: egress ∧ ingress, the default),
//! `Ingress` or `Egress` (one side, what the interpreter calls `at`). The
//! program runs the stages of docs/language.md §4 in order:
//!
//! 1. **prologue** — scratch context (`weir_ctx`, per-CPU), parse Ethernet /
//!    IPv4 (options) / IPv6 and up to 8 extension headers, TCP/UDP/SCTP
//!    ports, ICMP/ICMPv6 type and code, with bounds checks ([`parse`]);
//!    non-IP frames pass; non-first fragments and packets not parsed to
//!    the transport header are counted (`fragment`, `unparsed`) and
//!    dropped. A packet of a flow the service
//!    stage already translated (`weir_lb_ct` hit) is DNATed to its backend
//!    first ([`emit_established_dnat`](crate::ebpf::service::emit_established_dnat):
//!    context and conntrack key updated, so it is looked up and, if new,
//!    classified as client → backend); only a packet to one of the
//!    generation's frontend protocols and ports looks (an inline search:
//!    `weir_lb_ct` is per generation, and its 40-byte key is costly to
//!    hash).
//!    **Conntrack**: one lookup in the LRU hash `weir_ct` under the
//!    5-tuple in canonical order (smaller end first, so a flow and its
//!    replies share one entry); a hit is an established flow or a reply: counted as
//!    provenance 0 (`established`) and passed. Only a packet not DNATed
//!    above that hits an entry flagged as translated (bit 0 of the stored
//!    time) — a reply — looks for reverse NAT: the reply gets the frontend back as its source
//!    ([`emit_reverse_nat`](crate::ebpf::service::emit_reverse_nat):
//!    only after the `weir_ct` hit, so a spoofed reply to a denied flow
//!    is never un-translated). Established packets stop here, before any
//!    classification. A new flow's addresses are classified through the
//!    host hashes `weir_host4` / `weir_host6` (every full-length prefix of
//!    the class map: endpoints), then on a miss the LPM tries `weir_cls4`
//!    / `weir_cls6` of the shorter prefixes (looked up only when the class
//!    map has any; a miss of both = class 0; see
//!    [`layout::class_key`]). A trie as deep as the number of endpoints
//!    cost ~25 ns per lookup at 2,000 endpoints. ICMP flows use
//!    ports 0. Then the rows of both classes are loaded once (`weir_atoms`,
//!    array indexed by class: one bit per atom, then one `u16` column per
//!    map-backed class table) into r8 / r9, and again after every tail
//!    call.
//! 2. **steer** — the graph's steer entry (matched on the packet as sent):
//!    a `bypass` hit counts and passes (no conntrack entry, no service, no
//!    policy); other actions are remembered in the context and applied in
//!    **final** to allowed packets.
//! 3. **service** — one block (about 300 instructions, stack fp-160 to
//!    fp-432, r8 / r9 untouched; never split across a tail call):
//!    [`emit_service_stage`](crate::ebpf::service::emit_service_stage)
//!    over the `weir_lb_*` maps of [`crate::ebpf::service`] — frontend
//!    lookup, backend choice (affinity, Maglev on the flow hash exactly as
//!    the interpreter, or weighted random), `weir_lb_ct` / `weir_lb_rev`
//!    entries, DNAT with checksum fix-up (IPv4: header and L4; IPv6: the L4
//!    checksum's pseudo-header addresses). Then the packet is
//!    **classified again** (the backend's class, rows reloaded) and policy
//!    judges the translated packet (load-balance first, then policy). A
//!    frontend without backends counts its `no backends` provenance and
//!    **rejects**: a TCP segment is turned into a reset to its
//!    sender (MACs, addresses and ports swapped, payload cut, RST|ACK
//!    acking the segment or RST with its ack as sequence number, fresh
//!    checksums) and `bpf_redirect`ed out of the interface it came in on
//!    (`TC_ACT_REDIRECT`); a UDP datagram is answered the same way with
//!    an ICMP (`reject.rs`) or ICMPv6 (`reject6.rs`) port unreachable
//!    quoting it; SCTP is dropped. TCP and UDP frontends of both families are
//!    translated; SCTP frontends are refused at compile time
//!    ([`untranslated_frontends`], E0501) unless
//!    [`Options::untranslated_frontends`] asks for them to pass
//!    untranslated (tests).
//! 4. **egress**, then **ingress** — the graph's entries. Tests are inline
//!    (proto / port / ICMP compares; atom tests are one bit test on the
//!    row). Tables on proto / port / ICMP fields and small class tables are
//!    an inline binary search over interval bounds; class tables with more
//!    than [`emit::INLINE_CLASS_INTERVALS`] intervals are a column of the
//!    class rows: one load of the class's branch index from the row in r8 /
//!    r9 (no map lookup), then a compare tree over the table's distinct
//!    targets; a runtime that adds a class writes its whole row. A table
//!    search over more than [`dispatch::DISPATCH_BRANCHES`] intervals or
//!    targets is split into groups, each its own block ([`dispatch`]), so
//!    no table outgrows a stage. A leaf
//!    records the side's decision in the context with one store (what
//!    decided, flags, how many logged ids) and the first
//!    [`layout::LOG_SLOTS`] logged provenance ids with one store each; the
//!    final block counts them in `weir_cnt` (per-CPU array indexed by
//!    provenance id).
//! 5. **final** — (copied into every stage that jumps to it, so reaching
//!    it never costs a tail call) counts the logged ids, combines the
//!    sides exactly as the interpreter does (first denying side, egress
//!    first; an allow names the ingress rule, else the
//!    egress rule, else the ingress default), counts the deciding id. On
//!    allow: inserts the flow into conntrack (flagged when translated),
//!    writes a new translation's `weir_lb_ct` / `weir_lb_rev` entries
//!    (the service stage leaves them pending in the context), applies the
//!    steering action
//!    (`mark`: `skb->mark`; `dscp`: the DSCP bits, IPv4 header checksum
//!    fixed with `bpf_l3_csum_replace`, IPv6 traffic class; `redirect`:
//!    `bpf_sk_assign` to the proxy's listener, see `docs/language.md`
//!    §4) and returns `TC_ACT_OK`. On deny: a new translation is simply
//!    not written; a flow translated earlier has its `weir_lb_ct` /
//!    `weir_lb_rev` entries deleted (denied flows leave no translation
//!    state), `TC_ACT_SHOT`.
//!
//! # Stages
//!
//! The blocks above are laid out in pipeline order (graph nodes in
//! depth-first reverse postorder, so parents come first and subtrees stay
//! together) and only jump forward. [`stages`] groups them into programs
//! of at most [`Budget::max_slots`] instructions and [`Budget::max_jumps`]
//! conditional jumps (which bounds the verifier's pending branches and,
//! with state pruning at shared nodes, its processed instructions),
//! keeping a block in its predecessor's program when there is room;
//! cross-program jumps become tail calls through `weir_jmp` with the
//! target block in the context. A path that would make more than [`MAX_TAIL_CALLS`] tail calls,
//! more than [`MAX_STAGES`] programs, or one block that alone
//! exceeds the budget, is a compile-time [`Limit`] (diagnostic `E05xx`).
//!
//! # Maps
//!
//! All sized from the compiled output (plus headroom for run-time
//! endpoints), listed with their fill data in [`EbpfManifest`], which goes
//! into the bundle manifest as `backends.ebpf`. Programs with services add
//! the `weir_lb_*` maps; their contents and allocation state are the
//! manifest's `lb` ([`LbState`], filled by the runtime from
//! `LbState::initial_ops`, and the starting point of run-time backend
//! changes). A map over
//! [`MAX_MAP_ENTRIES`] entries is a [`Limit`].

pub mod audit;
mod dispatch;
pub mod emit;
pub mod events;
pub mod parse;
mod reject;
mod reject6;
pub mod stages;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use self::emit::{Block, ClassTable, Entry, Gen, INLINE_CLASS_INTERVALS};
use super::{write_object, MapDef, MapType, ObjectDef, ProgramDef};
use crate::bundle::{BackendArtifacts, Section, SPARE_CLASSES, WEIR_ASM, WEIR_O};
use crate::diagnostics::{Construct, Kind, Refusal, StageOverflow};
use crate::ebpf::layout::{self, LOG_SLOTS};
use crate::ebpf::service::LbState;
use crate::graph::ir::{Cond, Node, NodeId, TableKey};
use crate::graph::Graph;
use crate::model::Model;
use crate::provenance::Provenance;

/// Which sides one hook enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Egress of the source ∧ ingress of the destination (a node or router
    /// hook that sees both ends).
    #[default]
    Node,
    /// Only the destination's ingress side (`at ingress`).
    Ingress,
    /// Only the source's egress side (`at egress`).
    Egress,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Node => "node",
            Mode::Ingress => "ingress",
            Mode::Egress => "egress",
        }
    }
}

/// Per-stage limits (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max_slots: usize,
    pub max_jumps: usize,
}

impl Budget {
    /// Stages that fit the `i16` jump range (any kernel with tail calls).
    /// The verifier's 8192 pending branches bound a *path*'s branches (our
    /// searches are logarithmic), not a program's, so the jump budget only
    /// keeps the processed-instruction count (1M) far away: with state
    /// pruning at shared blocks it stays near the size (measured: 23k
    /// processed for a 16k-instruction stage of the 100,000-rule model).
    pub const SHORT: Budget = Budget {
        max_slots: 24_000,
        max_jumps: 12_000,
    };
    /// Stages up to 100,000 instructions, far jumps relaxed to `gotol`
    /// (needs [`Options::long_jumps`], kernel >= 6.4): fewer stages and
    /// tail calls per packet, but the verifier's time grows faster than
    /// the stage size (it moves the whole program for every instruction
    /// it patches): the 100,000-rule model loads in ~20 s as 7 stages
    /// against ~4 s as 29 stages of [`Budget::SHORT`], so it is not the
    /// default.
    pub const LONG: Budget = Budget {
        max_slots: 100_000,
        max_jumps: 50_000,
    };
}

impl Default for Budget {
    fn default() -> Self {
        Budget::SHORT
    }
}

/// The kernel allows 33 tail calls per packet (`MAX_TAIL_CALL_CNT`); stay
/// one below. Checked against the longest path ([`stages::tail_calls`]).
pub const MAX_TAIL_CALLS: usize = 32;
/// Programs in one object (the entry program and its stages): no kernel
/// limit, but each is verified at load time; this keeps a load bounded.
pub const MAX_STAGES: usize = 512;
/// Largest map we create (entries).
pub const MAX_MAP_ENTRIES: u64 = 1_000_000;

/// Generation options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub mode: Mode,
    pub budget: Budget,
    /// Relax far jumps into `gotol` (kernel >= 6.4), so a stage may be
    /// larger than the `i16` jump range; without it a stage must fit
    /// [`stages::HARD_SLOTS`] (use [`Budget::SHORT`]).
    pub long_jumps: bool,
    /// Sizes of the tables the datapath writes per flow.
    pub tables: crate::ebpf::state_tables::StateTables,
    /// Room in the class tries for endpoints added at run time.
    pub spare_endpoints: u32,
    /// Generate programs whose SCTP service frontends pass untranslated
    /// instead of refusing them ([`Limit::Unsupported`]; not
    /// faithful). For tests that exercise the rest of such a program and
    /// leave those frontends' packets out. Off by default.
    pub untranslated_frontends: bool,
    /// Verdict events into the `weir_events` ring buffer (`events.rs`;
    /// `weir compile --events off`: `None`). On by default.
    pub events: Option<events::EventOptions>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Node,
            budget: Budget::default(),
            long_jumps: true,
            tables: Default::default(),
            spare_endpoints: 4_096,
            untranslated_frontends: false,
            events: Some(events::EventOptions::default()),
        }
    }
}

/// A limit the policy exceeds (becomes an `E05xx` diagnostic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    /// A map would need more than [`MAX_MAP_ENTRIES`] entries.
    MapTooLarge { map: String, entries: u64 },
    /// More than [`MAX_STAGES`] programs.
    TooManyStages { stages: usize },
    /// A packet's path would make more than [`MAX_TAIL_CALLS`] tail calls.
    TooManyTailCalls { calls: usize },
    /// One decision-graph block does not fit a stage by itself.
    BlockTooLarge {
        block: String,
        slots: usize,
        jumps: usize,
    },
    /// A stage failed to assemble (jump range).
    StageTooLarge {
        stage: usize,
        overflow: StageOverflow,
    },
    /// A construct the TC path cannot express (E0501, not a limit): the
    /// declaration's span and what it is.
    Unsupported {
        span: weir_grammar::Span,
        construct: Construct,
    },
}

/// In words: the diagnostic's message and label.
impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.kind(weir_grammar::Span::default()).into_diagnostic();
        write!(f, "{}: {}", d.message, d.primary.message)
    }
}

impl Limit {
    /// As a diagnostic kind: E0510 at `program_span` (limits are about the
    /// program as a whole), E0501 for [`Limit::Unsupported`] at its
    /// declaration.
    pub fn kind(&self, program_span: weir_grammar::Span) -> Kind {
        let refusal = match self.clone() {
            Limit::Unsupported { span, construct } => {
                return Kind::Refused {
                    span,
                    refusal: Refusal::NotExpressible {
                        backend: crate::contract::Target::Ebpf,
                        construct,
                    },
                }
            }
            Limit::MapTooLarge { map, entries } => Refusal::MapTooLarge {
                map,
                entries,
                max: MAX_MAP_ENTRIES,
            },
            Limit::TooManyStages { stages } => Refusal::TooManyStages {
                stages,
                max: MAX_STAGES,
            },
            Limit::TooManyTailCalls { calls } => Refusal::TooManyTailCalls {
                calls,
                max: MAX_TAIL_CALLS,
            },
            Limit::BlockTooLarge {
                block,
                slots,
                jumps,
            } => Refusal::BlockTooLarge {
                block,
                slots,
                jumps,
            },
            Limit::StageTooLarge { stage, overflow } => Refusal::StageTooLarge { stage, overflow },
        };
        Kind::Refused {
            span: program_span,
            refusal,
        }
    }

    /// The E05xx diagnostic.
    pub fn diagnostic(&self, model: &Model) -> crate::diagnostics::Diagnostic {
        self.kind(model.program_span()).into_diagnostic()
    }
}

/// The service frontends the TC path does not translate (SCTP, either
/// family), one refusal per service: the interpreter translates them, so
/// a program that let them pass untranslated would judge their packets by
/// the wrong destination. (TCP and UDP frontends of both families are
/// translated; SCTP would need its CRC32c checksum recomputed.)
pub fn untranslated_frontends(model: &Model) -> Vec<Limit> {
    model
        .services
        .iter()
        .filter_map(|svc| {
            let f = svc
                .frontends
                .iter()
                .find(|f| f.proto == crate::model::Proto::Sctp)?;
            Some(Limit::Unsupported {
                span: svc.span,
                construct: Construct::UntranslatedFrontend {
                    service: svc.name.clone(),
                    addr: f.addr,
                    port: f.port,
                    proto: f.proto,
                },
            })
        })
        .collect()
}

// The section's reader types are the contract's (one home for what
// the compiler writes and the runtime reads).
pub use crate::contract::ebpf::{EbpfManifest, Fill, LpmEntry, MapInfo, ProgramInfo};

/// `backends.ebpf` as written: [`EbpfManifest`] plus a `capacity`
/// object for `weir compile --report`, fields in sorted key order (as are
/// the fields of every type it holds; see [`Section::sorted`]).
#[derive(Serialize)]
struct SectionView<'a> {
    attach: &'a [String],
    #[serde(skip_serializing_if = "is_zero")]
    audit_counters: u32,
    capacity: BTreeMap<String, serde_json::Value>,
    counters: u32,
    entry: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<events::EventOptions>,
    fill: &'a Fill,
    #[serde(skip_serializing_if = "Option::is_none")]
    lb: Option<&'a LbState>,
    maps: &'a [MapInfo],
    max_tail_calls: usize,
    mode: Mode,
    object: &'a str,
    programs: &'a [ProgramInfo],
    state_tables: crate::ebpf::state_tables::StateTables,
}

/// The generated back end.
#[derive(Debug, Clone)]
pub struct EbpfOutput {
    pub object: Vec<u8>,
    pub manifest: EbpfManifest,
    /// `weir compile --emit asm`: every program's listing.
    pub listing: String,
}

impl EbpfOutput {
    /// The bundle files (`weir.o`, `weir.asm`) and manifest section (with
    /// a `capacity` object for `weir compile --report`).
    pub fn artifacts(&self) -> BackendArtifacts {
        let mut files = BTreeMap::new();
        files.insert(WEIR_O.to_string(), self.object.clone());
        files.insert(WEIR_ASM.to_string(), self.listing.clone().into_bytes());
        let mut capacity = BTreeMap::new();
        for p in &self.manifest.programs {
            capacity.insert(
                format!("program {}", p.name),
                serde_json::json!(format!("{} insns", p.insns)),
            );
        }
        for m in &self.manifest.maps {
            capacity.insert(
                format!("map {}", m.name),
                serde_json::json!(format!("{} filled / {} max", m.filled, m.max_entries)),
            );
        }
        capacity.insert(
            "tail calls per packet (most)".into(),
            serde_json::json!(self.manifest.max_tail_calls),
        );
        let m = &self.manifest;
        let manifest = Section::sorted(&SectionView {
            attach: &m.attach,
            audit_counters: m.audit_counters,
            capacity,
            counters: m.counters,
            entry: &m.entry,
            events: m.events,
            fill: &m.fill,
            lb: m.lb.as_ref(),
            maps: &m.maps,
            max_tail_calls: m.max_tail_calls,
            mode: m.mode,
            object: &m.object,
            programs: &m.programs,
            state_tables: m.state_tables,
        });
        BackendArtifacts { files, manifest }
    }

    /// Capacity lines for `weir compile --report`.
    pub fn report(&self) -> String {
        let mut s = format!("ebpf ({} mode)\n  programs:\n", self.manifest.mode.name());
        for p in &self.manifest.programs {
            s += &format!(
                "    {:<12} {:>7} insns  {:>5} blocks  {:>4} entries\n",
                p.name, p.insns, p.blocks, p.entries
            );
        }
        s += &format!(
            "  tail calls: at most {} per packet (limit {MAX_TAIL_CALLS})\n",
            self.manifest.max_tail_calls
        );
        s += "  maps:\n";
        for m in &self.manifest.maps {
            s += &format!(
                "    {:<12} {:<14} key {:>3} value {:>4}  {:>8} filled / {:>8} max\n",
                m.name, m.map_type, m.key_size, m.value_size, m.filled, m.max_entries
            );
        }
        s
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn type_name(t: MapType) -> &'static str {
    match t {
        MapType::Hash => "hash",
        MapType::Array => "array",
        MapType::ProgArray => "prog_array",
        MapType::PercpuArray => "percpu_array",
        MapType::LruHash => "lru_hash",
        MapType::LpmTrie => "lpm_trie",
        MapType::RingBuf => "ringbuf",
        _ => "other",
    }
}

/// Nodes reachable from `root` in reverse postorder of a depth-first
/// walk: a topological order (parents first, so blocks only jump
/// forward) that keeps each subtree together, so a packet's path crosses
/// few stage cuts; children are visited in payload order, so a test's
/// else branch and a table's default come right after it (the jump to
/// them falls through).
fn reachable(g: &Graph, root: NodeId) -> Vec<NodeId> {
    let kids =
        |n: NodeId| -> Vec<NodeId> { g.node(n).children().into_iter().map(|c| c.1).collect() };
    let mut seen = BTreeSet::from([root]);
    let mut post = Vec::new();
    // (node, its children, next child to visit)
    let mut stack = vec![(root, kids(root), 0usize)];
    while let Some((n, children, next)) = stack.last_mut() {
        if let Some(&c) = children.get(*next) {
            *next += 1;
            if seen.insert(c) {
                stack.push((c, kids(c), 0));
            }
        } else {
            post.push(*n);
            stack.pop();
        }
    }
    post.reverse();
    post
}

fn lpm_entry(c: &crate::model::Cidr, class: u32) -> LpmEntry {
    let addr = match c.addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    LpmEntry {
        cidr: c.to_string(),
        addr,
        len: u32::from(c.len),
        class,
    }
}

/// A class's branch in a map-backed table it has no entry in.
pub const NO_BRANCH: u16 = u16::MAX;
/// Largest class row (atom bits + table columns); tables past it stay
/// inline searches. Keeps every column at an `i16` load offset.
pub const MAX_ROW_BYTES: usize = 32 * 1024;

/// Bytes of a class row with `columns` table columns (4-byte aligned).
fn row_bytes(atom_words: usize, columns: usize) -> usize {
    (atom_words * 4 + 2 * columns).div_ceil(4) * 4
}

/// Generates the object and its manifest section.
pub fn generate(model: &Model, g: &Graph, opts: &Options) -> Result<EbpfOutput, Vec<Limit>> {
    if !opts.untranslated_frontends {
        let refused = untranslated_frontends(model);
        if !refused.is_empty() {
            return Err(refused);
        }
    }
    let audit_g = audit::audit_graph(model, g)?;
    let Plan {
        node_numbers,
        blocks,
        has_atoms,
        ctabs,
        columns,
        atom_words,
        log_slots,
    } = plan(g, audit_g.as_ref(), opts);
    let mut fill = Fill::default();
    let nclasses = g.classes.len() as u32;
    let index: HashMap<Block, usize> = blocks.iter().enumerate().map(|(i, b)| (*b, i)).collect();
    let has_services = !g.services.frontends.is_empty();

    // The class map, and how its entries split between the host hashes
    // and the tries (`layout::class_key`).
    for e in &g.classes.entries {
        let le = lpm_entry(&e.cidr, e.class);
        if e.cidr.addr.is_ipv4() {
            fill.cls4.push(le);
        } else {
            fill.cls6.push(le);
        }
    }
    let mut class_fill: HashMap<&str, u64> = HashMap::new();
    for e in fill.cls4.iter().chain(&fill.cls6) {
        *class_fill
            .entry(layout::class_key(&e.addr, e.len).0)
            .or_insert(0) += 1;
    }
    let nfill = |m: &str| class_fill.get(m).copied().unwrap_or(0);
    let gen = Gen {
        model,
        g,
        mode: opts.mode,
        blocks,
        index,
        has_rows: has_atoms || !ctabs.is_empty(),
        atom_words,
        has_services,
        ctabs,
        node_numbers,
        log_slots,
        tries: (nfill(layout::map::CLS4) > 0, nfill(layout::map::CLS6) > 0),
        audit: audit_g.as_ref().map(audit::AuditPlan::new),
        events: opts.events,
    };

    // Fill data.
    let row_size = row_bytes(atom_words, columns.len());
    fill.atom_rows = class_rows(g, atom_words, &columns, row_size);
    let lb = gen.has_services.then(|| {
        LbState::new(
            &g.services,
            &|service| g.provenance.id(&Provenance::NoBackends { service }),
            &crate::ebpf::service::Options {
                spare_slots: opts.spare_endpoints,
                affinity_entries: opts.tables.translation,
                conntrack_entries: opts.tables.translation,
                socket_entries: opts.tables.translation,
                // Spare Maglev tables (64 KiB each) only when a service
                // uses Maglev.
                spare_tables: if model
                    .services
                    .iter()
                    .any(|s| s.balance == crate::model::Balance::Maglev)
                {
                    crate::ebpf::service::Options::default().spare_tables
                } else {
                    0
                },
            },
        )
    });

    // Stages.
    let (stage_of, staged, calls) = split_stages(&gen, opts)?;
    let mut limits = Vec::new();
    let nstages = stage_of.iter().max().map_or(1, |m| m + 1);
    if nstages > MAX_STAGES {
        limits.push(Limit::TooManyStages { stages: nstages });
    }
    if calls > MAX_TAIL_CALLS {
        limits.push(Limit::TooManyTailCalls { calls });
    }

    // Maps.
    let mut maps = fixed_maps(g, opts, &class_fill);
    let audit_counters = audit_g.as_ref().map_or(0, audit::counters);
    if audit_counters > 0 {
        maps.push(MapDef::new(
            layout::map::AUDIT_CNT,
            MapType::PercpuArray,
            4,
            8,
            audit_counters,
        ));
    }
    if let Some(ev) = &opts.events {
        // The CLI refuses bad sizes (`EventOptions::check`).
        debug_assert!(ev.check().is_ok(), "{:?}", ev.check());
        maps.extend(ev.maps());
    }
    let mut filled = class_fill;
    if gen.has_rows {
        maps.push(MapDef::new(
            layout::map::ATOMS,
            MapType::Array,
            4,
            row_size as u32,
            nclasses + SPARE_CLASSES,
        ));
        filled.insert(layout::map::ATOMS, u64::from(nclasses));
    }
    if let Some(lb) = &lb {
        // The service maps (`weir_lb_*`, see `ebpf::service`), filled by
        // the runtime from `lb.initial_ops()` (counted without computing
        // the Maglev tables).
        for (map, n) in lb.initial_counts() {
            *filled.entry(map).or_insert(0) += n;
        }
        maps.extend(lb.maps());
    }
    if nstages > 1 {
        maps.push(MapDef::prog_array(layout::map::JMP, nstages as u32));
        filled.insert(layout::map::JMP, nstages as u64 - 1);
    }
    // (A ring buffer's `max_entries` is bytes, bounded by
    // `events::MAX_RING_BYTES`.)
    for m in maps.iter().filter(|m| m.map_type != MapType::RingBuf) {
        if u64::from(m.max_entries) > MAX_MAP_ENTRIES {
            limits.push(Limit::MapTooLarge {
                map: m.name.clone(),
                entries: u64::from(m.max_entries),
            });
        }
    }
    if !limits.is_empty() {
        return Err(limits);
    }
    let staged = staged.expect("assembled when within the stage limit");

    let mut out = object(g, opts, staged, maps, &filled, fill, calls, lb);
    out.manifest.audit_counters = audit_counters;
    out.manifest.events = opts.events;
    Ok(out)
}

/// The maps every object has (context, conntrack, class tries and host
/// hashes sized by their fill, counters), in object order.
fn fixed_maps(g: &Graph, opts: &Options, class_fill: &HashMap<&str, u64>) -> Vec<MapDef> {
    let nfill = |m: &str| class_fill.get(m).copied().unwrap_or(0);
    vec![
        MapDef::new(
            layout::map::CTX,
            MapType::PercpuArray,
            4,
            layout::ctx::SIZE,
            1,
        ),
        MapDef::new(
            layout::map::CT,
            MapType::LruHash,
            layout::ct::KEY_SIZE,
            layout::ct::VALUE_SIZE,
            opts.tables.conntrack.max(1),
        ),
        MapDef::lpm_trie(
            layout::map::CLS4,
            4,
            4,
            (nfill(layout::map::CLS4) as u32).max(1),
        ),
        MapDef::lpm_trie(
            layout::map::CLS6,
            16,
            4,
            (nfill(layout::map::CLS6) as u32).max(1),
        ),
        MapDef::new(
            layout::map::HOST4,
            MapType::Hash,
            4,
            4,
            nfill(layout::map::HOST4) as u32 + opts.spare_endpoints,
        ),
        MapDef::new(
            layout::map::HOST6,
            MapType::Hash,
            16,
            4,
            nfill(layout::map::HOST6) as u32 + opts.spare_endpoints,
        ),
        MapDef::new(
            layout::map::CNT,
            MapType::PercpuArray,
            4,
            8,
            g.provenance.len().max(1) as u32,
        ),
    ]
}

/// The object and its manifest section from the assembled stages and the
/// maps.
#[allow(clippy::too_many_arguments)]
fn object(
    g: &Graph,
    opts: &Options,
    staged: Vec<stages::Stage>,
    maps: Vec<MapDef>,
    filled: &HashMap<&str, u64>,
    fill: Fill,
    calls: usize,
    lb: Option<LbState>,
) -> EbpfOutput {
    let mut listing = String::new();
    let mut programs = Vec::new();
    let mut defs = Vec::new();
    for (k, s) in staged.into_iter().enumerate() {
        listing += &format!(
            "; program {} (section classifier{}), {} insns\n",
            s.name,
            if k == 0 {
                String::new()
            } else {
                format!(", weir_jmp slot {k}")
            },
            s.code.len()
        );
        listing += &s.code.listing();
        listing += "\n";
        programs.push(ProgramInfo {
            name: s.name.clone(),
            section: "classifier".into(),
            insns: s.code.len(),
            slot: (k > 0).then_some(k as u32),
            blocks: s.blocks,
            entries: s.entries,
        });
        defs.push(ProgramDef {
            name: s.name,
            section: "classifier".into(),
            code: s.code,
        });
    }
    let object = write_object(&ObjectDef {
        programs: defs,
        maps: maps.clone(),
        license: "GPL".into(),
    })
    .unwrap_or_else(|e| panic!("internal compiler error: eBPF object: {e}"));
    let manifest = EbpfManifest {
        object: WEIR_O.into(),
        mode: opts.mode,
        attach: vec!["tc-ingress".into()],
        entry: layout::MAIN_PROGRAM.into(),
        programs,
        maps: maps
            .iter()
            .map(|m| MapInfo {
                name: m.name.clone(),
                map_type: type_name(m.map_type).into(),
                key_size: m.key_size,
                value_size: m.value_size,
                max_entries: m.max_entries,
                filled: filled.get(m.name.as_str()).copied().unwrap_or(0),
            })
            .collect(),
        fill,
        counters: g.provenance.len() as u32,
        audit_counters: 0,
        events: None,
        max_tail_calls: calls,
        lb,
        state_tables: opts.tables,
    };
    EbpfOutput {
        object,
        manifest,
        listing,
    }
}

/// The blocks of the program, in layout order, and what laying them out
/// needs: which class tables become map columns, the atom row width, the
/// log slots used.
struct Plan {
    node_numbers: HashMap<NodeId, usize>,
    blocks: Vec<Block>,
    has_atoms: bool,
    ctabs: BTreeMap<NodeId, ClassTable>,
    /// Per map-backed class table, the branch of every class (its column
    /// in the class rows).
    columns: Vec<Vec<u16>>,
    atom_words: usize,
    log_slots: usize,
}

/// Plans the blocks: the prologue, every node reachable from each entry
/// (the service block after the steering entry), the final block.
fn plan(g: &Graph, audit_g: Option<&Graph>, opts: &Options) -> Plan {
    let (_, node_numbers) = g.dag.numbering();
    let roots = g.dag.roots;
    let mut entries = vec![(Entry::Steer, roots.steer)];
    // The audit walks (`audit.rs`): after the service block, before the
    // enforced sides.
    if let Some(a) = audit_g {
        for e in audit::audit_entries(opts.mode) {
            let r = a.dag.roots;
            entries.push((
                e,
                if e == Entry::AuditEgress {
                    r.egress
                } else {
                    r.ingress
                },
            ));
        }
    }
    if opts.mode != Mode::Ingress {
        entries.push((Entry::Egress, roots.egress));
    }
    if opts.mode != Mode::Egress {
        entries.push((Entry::Ingress, roots.ingress));
    }
    let mut blocks = vec![Block::Prologue];
    let mut has_atoms = false;
    let mut ctabs: BTreeMap<NodeId, ClassTable> = BTreeMap::new();
    // Per map-backed class table, the branch of every class (its column
    // in the class rows).
    let mut columns: Vec<Vec<u16>> = Vec::new();
    let atom_words = g.classes.atoms.len().div_ceil(32).max(1);
    let mut log_slots = 0;
    let nclasses = g.classes.len() as u32;
    for (e, root) in &entries {
        let eg = match audit_g {
            Some(a) if e.is_audit() => a,
            _ => g,
        };
        let order = reachable(eg, *root);
        for &n in &order {
            if e.is_audit() {
                // Audit leaves only count; audit tables stay inline.
                has_atoms |= matches!(
                    eg.node(n),
                    Node::Test {
                        cond: Cond::SrcAtom(_) | Cond::DstAtom(_),
                        ..
                    }
                );
                continue;
            }
            match g.node(n) {
                Node::Verdict(v) => log_slots = log_slots.max(v.logged.len().min(LOG_SLOTS)),
                Node::Test {
                    cond: Cond::SrcAtom(_) | Cond::DstAtom(_),
                    ..
                } => has_atoms = true,
                Node::Table {
                    key: TableKey::SrcClass | TableKey::DstClass,
                    entries: iv,
                    ..
                } if iv.len() > INLINE_CLASS_INTERVALS
                    && !ctabs.contains_key(&n)
                    && row_bytes(atom_words, columns.len() + 1) <= MAX_ROW_BYTES =>
                {
                    let mut targets: Vec<NodeId> = Vec::new();
                    let mut branch_of: HashMap<NodeId, u16> = HashMap::new();
                    let mut column = vec![NO_BRANCH; nclasses as usize];
                    for x in iv {
                        // A branch index is a `u16` below `NO_BRANCH`: a
                        // table with more distinct targets stays a search
                        // on the class itself.
                        let branch = *branch_of.entry(x.next).or_insert_with(|| {
                            targets.push(x.next);
                            (targets.len() - 1).min(usize::from(NO_BRANCH)) as u16
                        });
                        for c in x.lo..=x.hi.min(nclasses.saturating_sub(1)) {
                            column[c as usize] = branch;
                        }
                    }
                    if targets.len() < usize::from(NO_BRANCH) {
                        let id = columns.len() as u32;
                        columns.push(column);
                        ctabs.insert(n, ClassTable { id, targets });
                    }
                }
                _ => {}
            }
        }
        // Each node, and before the first in-place target of each group
        // of a large table, that group's dispatch block.
        // (Audit walks are another graph: their node ids are not the
        // enforced graph's, and their tables stay inline.)
        blocks.extend(dispatch::plan_dispatch(eg, *e, &order, |n| {
            match (eg.node(n), ctabs.get(&n).filter(|_| !e.is_audit())) {
                (_, Some(t)) => Some(t.targets.clone()),
                (Node::Table { entries, .. }, None) => {
                    Some(entries.iter().map(|x| x.next).collect())
                }
                _ => None,
            }
        }));
        if *e == Entry::Steer {
            blocks.push(Block::Service);
        }
    }
    blocks.push(Block::Final);
    Plan {
        node_numbers,
        blocks,
        has_atoms,
        ctabs,
        columns,
        atom_words,
        log_slots,
    }
}

/// The class rows (`weir_atoms`): per class, its atoms as a bit set, then
/// its branch in every map-backed class table, padded to `row_size`.
fn class_rows(
    g: &Graph,
    atom_words: usize,
    columns: &[Vec<u16>],
    row_size: usize,
) -> Vec<Vec<u32>> {
    let mut rows = Vec::new();
    for (c, row) in g.classes.classes.iter().enumerate() {
        let mut w = vec![0u32; atom_words];
        for a in row.iter() {
            w[a / 32] |= 1 << (a % 32);
        }
        let mut bytes: Vec<u8> = w.iter().flat_map(|x| x.to_ne_bytes()).collect();
        for col in columns {
            bytes.extend_from_slice(&col[c].to_ne_bytes());
        }
        bytes.resize(row_size, 0);
        rows.push(
            bytes
                .chunks(4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        );
    }
    rows
}

/// The stages: split, assemble, and split tighter while a stage comes out
/// larger than the budget (stubs and dispatch are only known after).
/// Returns each block's stage, the assembled stages (none when there are
/// more than [`MAX_STAGES`]) and the tail calls on the longest path.
#[allow(clippy::type_complexity)]
fn split_stages(
    gen: &Gen,
    opts: &Options,
) -> Result<(Vec<usize>, Option<Vec<stages::Stage>>, usize), Vec<Limit>> {
    let mut sizes: Vec<stages::BlockSize> = (0..gen.blocks.len())
        .map(|b| stages::measure(gen, b))
        .collect();
    // The final block is copied into the stages that reach it, never laid
    // out on its own (see `stages::assemble`): it takes no room in the
    // split.
    let fin = gen.final_block();
    let final_slots = std::mem::take(&mut sizes[fin].slots);
    sizes[fin].jumps = 0;
    let copied = stages::copied_blocks(&sizes, &opts.budget, gen.copied_blocks(), |b| {
        matches!(gen.blocks[b], Block::Node(..))
    });
    let flow = stages::Flow::new(&sizes, copied);
    let mut budget = opts.budget;
    let hard_slots = if opts.long_jumps {
        stages::HARD_SLOTS_LONG
    } else {
        stages::HARD_SLOTS
    };
    let (stage_of, staged) = loop {
        let stage_of = match stages::split(&sizes, &flow, &budget, final_slots) {
            Ok(s) => s,
            Err(b) => {
                return Err(vec![Limit::BlockTooLarge {
                    block: gen.block_name(b),
                    slots: sizes[b].slots,
                    jumps: sizes[b].jumps,
                }])
            }
        };
        let n = stage_of.iter().max().map_or(1, |m| m + 1);
        if n > MAX_STAGES {
            break (stage_of, None);
        }
        let over = |staged: &Vec<stages::Stage>| {
            staged
                .iter()
                .any(|s| s.code.len() > (opts.budget.max_slots * 5 / 4).min(hard_slots))
        };
        match stages::assemble(
            gen,
            &flow,
            &stage_of,
            &stages::entries(&flow, &stage_of),
            opts.long_jumps,
        ) {
            Ok(staged) if !over(&staged) => break (stage_of, Some(staged)),
            result => {
                if budget.max_slots < 64 {
                    return Err(vec![result.err().unwrap_or(Limit::StageTooLarge {
                        stage: 0,
                        overflow: StageOverflow::NoSplit,
                    })]);
                }
                budget.max_slots = budget.max_slots * 4 / 5;
            }
        }
    };
    let calls = stages::tail_calls(&flow, &stage_of);
    Ok((stage_of, staged, calls))
}
