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
//!    dropped.
//!    **Conntrack**: one lookup in the LRU hash `weir_ct` under the
//!    5-tuple in canonical order (smaller end first, so a flow and its
//!    replies share one entry); a hit is an established flow or a reply: counted as
//!    provenance 0 (`established`) and passed. A hit on a translated
//!    flow's *forward* entry (client ↔ frontend, `emit/forward.rs`) from
//!    its client is DNATed to the backend it records (context and
//!    conntrack key updated) and the flow's own entry (client ↔ backend)
//!    looked up: a hit is established, a miss is classified as client →
//!    backend; from its other end it is established. A packet not DNATed
//!    above that hits an entry flagged as translated (bit 0 of the stored
//!    time) and comes from the flow's other end than its client (bit 1
//!    against the packet's place in the canonical key) is a reply: it
//!    gets the frontend the entry carries back as its source
//!    ([`emit_reverse_nat_from`](crate::ebpf::service::emit::emit_reverse_nat_from);
//!    the entry is keyed by client ↔ backend, so the lookup every packet
//!    makes finds it — no second table, and a spoofed reply to a denied
//!    flow finds no entry). Before it, an ICMP or ICMPv6 error is looked
//!    up by the flow its quote identifies (`emit/related.rs`): related to
//!    a flow in conntrack it is established too, and one quoting a
//!    translated flow's packet to its client is reverse-translated.
//!    Established packets stop here, before any
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
//!    the interpreter, or weighted random), the translation (left
//!    pending for the final block), DNAT with checksum fix-up (IPv4: header and L4; IPv6: the L4
//!    checksum's pseudo-header addresses). Then the packet is
//!    **classified again** (the backend's class, rows reloaded) and policy
//!    judges the translated packet (load-balance first, then policy). A
//!    frontend without backends counts its `no backends` provenance and
//!    **rejects**: a TCP segment is turned into a reset to its
//!    sender (MACs, addresses and ports swapped, payload cut, RST|ACK
//!    acking the segment or RST with its ack as sequence number, fresh
//!    checksums) and `bpf_redirect`ed out of the interface it came in on
//!    (`TC_ACT_REDIRECT`); a UDP datagram or SCTP packet is answered the
//!    same way with an ICMP (`reject.rs`) or ICMPv6 (`reject6.rs`) port
//!    unreachable quoting it. TCP, UDP and SCTP frontends of both families are
//!    translated; an SCTP port change carries the CRC32c update
//!    (`service::sctp_crc`), emitted only where one can happen
//!    ([`sctp_port_changes`]).
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
//!    allow: inserts the flow into conntrack (a translated flow's entry
//!    flagged, with its client's end and its frontend: the replies'
//!    reverse NAT), writes a new translation's forward entry into
//!    `weir_ct` (the service stage leaves it pending in the context): a
//!    new flow to a service writes two entries, a new allowed flow one; applies the
//!    steering action
//!    (`mark`: `skb->mark`; `dscp`: the DSCP bits, IPv4 header checksum
//!    fixed with `bpf_l3_csum_replace`, IPv6 traffic class; `redirect`:
//!    `bpf_sk_assign` to the proxy's listener, see `docs/language.md`
//!    §4; a UDP flow's entry records its proxy and every later datagram
//!    from its client is assigned again, `emit/redirect_udp.rs`) and returns `TC_ACT_OK`. On deny: a new translation is simply
//!    not written; a flow translated earlier has its forward entry
//!    deleted (denied flows leave no translation state), `TC_ACT_SHOT`.
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
pub mod ct_gc;
mod dispatch;
pub mod emit;
pub mod events;
mod leaf_events;
mod limits;
mod object;
mod output;
pub mod parse;
mod plan;
mod reject;
mod reject6;
mod same_endpoint;
pub mod sparse_atoms;
mod stage_listing;
pub mod stages;
mod unreachable;

pub use limits::{sctp_port_changes, sctp_redirects, Limit};
pub use object::Ready;
use object::{fixed_maps, lpm_entry};
pub use output::{section, EbpfManifest, EbpfOutput, Fill, LpmEntry, MapInfo, ProgramInfo};
use plan::{class_rows, plan, split_stages, Plan, Split};
pub use stage_listing::ListingOut;
use stage_listing::StageListing;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use self::emit::{Block, ClassTable, Entry, Gen, INLINE_CLASS_INTERVALS};
use super::{MapDef, MapType, ObjectDef, ProgramDef};
use crate::bundle::{BackendArtifacts, Section, SPARE_CLASSES, WEIR_ASM, WEIR_O};
use crate::diagnostics::{Construct, Kind, Refusal, StageOverflow};
use crate::ebpf::layout::{self, LOG_SLOTS};
use crate::ebpf::service::LbState;
use crate::graph::ir::{Cond, Node, NodeId, TableKey};
use crate::graph::Graph;
use crate::model::Model;
use crate::provenance::Provenance;

pub use crate::contract::ebpf::Mode;

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
    /// Generate programs whose `redirect` rules can match SCTP, passing
    /// SCTP unsteered, instead of refusing them ([`sctp_redirects`],
    /// E0525; not faithful). For the differential tests over generated
    /// programs, whose BPF_PROG_TEST_RUN runs find no proxy socket for
    /// any protocol. Off by default.
    pub unsteered_sctp_redirects: bool,
    /// Verdict events into the `weir_events` ring buffer (`events.rs`;
    /// `weir compile --events off`: `None`). On by default.
    pub events: Option<events::EventOptions>,
    /// Where the atom bits live: the class rows, or a hash of their
    /// non-zero words for models whose rows would be huge
    /// ([`sparse_atoms`]).
    pub atoms: sparse_atoms::AtomLayout,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Node,
            budget: Budget::default(),
            long_jumps: true,
            tables: Default::default(),
            spare_endpoints: 4_096,
            unsteered_sctp_redirects: false,
            events: Some(events::EventOptions::default()),
            atoms: sparse_atoms::AtomLayout::Auto,
        }
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

/// The class map's entries (per family), and how they split between the
/// host hashes and the tries (`layout::class_key`): entries per map.
fn class_map(g: &Graph) -> (Fill, HashMap<&'static str, u64>) {
    let mut fill = Fill::default();
    for e in &g.classes.entries {
        let le = lpm_entry(&e.cidr, e.class);
        if e.cidr.addr.is_ipv4() {
            fill.cls4.push(le);
        } else {
            fill.cls6.push(le);
        }
    }
    let mut class_fill: HashMap<&'static str, u64> = HashMap::new();
    for e in fill.cls4.iter().chain(&fill.cls6) {
        *class_fill
            .entry(layout::class_key(&e.addr, e.len).0)
            .or_insert(0) += 1;
    }
    (fill, class_fill)
}

/// The service maps' initial state (slots, backend sets, Maglev tables).
fn service_state(model: &Model, g: &Graph, opts: &Options) -> LbState {
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
}
/// What eBPF cannot carry out, refused before anything is generated: a
/// redirect that can match SCTP (unless the options let it pass, for the
/// differential tests).
fn refuse_untranslatable(model: &Model, opts: &Options) -> Result<(), Vec<Limit>> {
    let refused = if opts.unsteered_sctp_redirects {
        Vec::new()
    } else {
        sctp_redirects(model)
    };
    if refused.is_empty() {
        Ok(())
    } else {
        Err(refused)
    }
}

/// Maps over the kernel's entry limit. (A ring buffer's `max_entries` is
/// bytes, bounded by `events::MAX_RING_BYTES`.)
fn oversized_maps(maps: &[MapDef]) -> impl Iterator<Item = Limit> + '_ {
    maps.iter()
        .filter(|m| m.map_type != MapType::RingBuf)
        .filter(|m| u64::from(m.max_entries) > MAX_MAP_ENTRIES)
        .map(|m| Limit::MapTooLarge {
            map: m.name.clone(),
            entries: u64::from(m.max_entries),
        })
}

/// Generates the object and its manifest section.
pub fn generate(model: &Model, g: &Graph, opts: &Options) -> Result<EbpfOutput, Vec<Limit>> {
    let (mut object, mut listing) = (Vec::new(), Vec::new());
    let ready = ready(model, g, opts, &mut listing)?;
    let manifest = ready
        .write(&mut object, &mut listing)
        .expect("writing to memory does not fail");
    Ok(EbpfOutput {
        object,
        manifest,
        listing: String::from_utf8(listing).expect("the listing is text"),
    })
}

/// Everything of [`generate`] that may refuse the program: the stages
/// assembled and every limit checked. What is left, [`Ready::write`],
/// only writes the object and the rest of its listing where they go (a
/// bundle's files, `bundle::Sink`, or memory). The stages' listings are
/// written into `listing` as the stages are assembled (`stage_listing.rs`):
/// when the program is refused, `listing` holds a part of one and must
/// not be kept; [`Ready::write`] appends the rest to the same `listing`.
pub fn ready<'a>(
    model: &'a Model,
    g: &'a Graph,
    opts: &'a Options,
    listing: &mut dyn ListingOut,
) -> Result<Ready<'a>, Vec<Limit>> {
    refuse_untranslatable(model, opts)?;
    let audit_g = audit::audit_graph(model, g)?;
    let Plan {
        node_numbers,
        blocks,
        has_atoms,
        ctabs,
        columns,
        atom_words,
        bit_words,
        sparse_atoms,
        log_slots,
        shared_events,
    } = plan(model, g, audit_g.as_ref(), opts);
    let nclasses = g.classes.len() as u32;
    let index: HashMap<Block, usize> = blocks.iter().enumerate().map(|(i, b)| (*b, i)).collect();
    let has_services = !g.services.frontends.is_empty();
    let (mut fill, class_fill) = class_map(g);
    let nfill = |m: &str| class_fill.get(m).copied().unwrap_or(0);
    let gen = Gen {
        model,
        g,
        mode: opts.mode,
        blocks,
        index,
        has_rows: (has_atoms && !sparse_atoms) || !ctabs.is_empty(),
        sparse_atoms,
        atom_words,
        has_services,
        ctabs,
        node_numbers,
        log_slots,
        tries: (nfill(layout::map::CLS4) > 0, nfill(layout::map::CLS6) > 0),
        audit: audit_g.as_ref().map(audit::AuditPlan::new),
        events: opts.events,
        ct_table: opts.tables.kind,
        shared_events,
    };

    // Fill data.
    let row_size = row_bytes(atom_words, columns.len());
    (fill.atom_rows, fill.atom_bits) = class_rows(
        g,
        atom_words,
        &columns,
        row_size,
        sparse_atoms.then_some(bit_words),
    );
    let lb = gen.has_services.then(|| service_state(model, g, opts));

    // Stages.
    let mut stage_listing = StageListing::new(listing);
    let Split {
        stage_of,
        staged,
        calls,
    } = split_stages(&gen, opts, &mut stage_listing)?;
    let listed = stage_listing.finish();
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
    fill.same_endpoint = same_endpoint::fill(model, g);
    for (m, n) in same_endpoint::maps(model, &fill.same_endpoint, opts) {
        filled.insert(
            if m.name == layout::map::SELF4 {
                layout::map::SELF4
            } else {
                layout::map::SELF6
            },
            n,
        );
        maps.push(m);
    }
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
    if sparse_atoms && has_atoms {
        let n = fill.atom_bits.nonzero_words();
        maps.push(sparse_atoms::map_def(n));
        filled.insert(sparse_atoms::MAP, n as u64);
    }
    if let Some(lb) = &lb {
        // The service maps (`weir_lb_*`, see `ebpf::service`), filled by
        // the runtime from `lb.initial_ops()` (counted without computing
        // the Maglev tables).
        for (map, n) in lb.initial_counts() {
            *filled.entry(map).or_insert(0) += n;
        }
        // No `weir_lb_ct`: a translated flow's forward entry is in
        // `weir_ct` (`emit/forward.rs`).
        maps.extend(lb.maps());
    }
    if nstages > 1 {
        maps.push(MapDef::prog_array(layout::map::JMP, nstages as u32));
        filled.insert(layout::map::JMP, nstages as u64 - 1);
    }
    limits.extend(oversized_maps(&maps));
    if !limits.is_empty() {
        return Err(limits);
    }
    let staged = staged.expect("assembled when within the stage limit");

    Ok(Ready {
        g,
        opts,
        listed,
        staged,
        maps,
        filled,
        fill,
        calls,
        lb,
        audit_counters,
    })
}
