//! Verdict events from the TC programs (docs/language.md §4, "Events";
//! docs/monitor.md): which judgements are reported is
//! `interp::events::events`; this module writes them, as
//! [`EventRecord`]s, into the ring buffer `weir_events`.
//!
//! **Where.** Each event is written where the pipeline knows it:
//!
//! - the header denials (`fragment`, `unparsed`) in the parser
//!   (`parse.rs`), a service without backends where it rejects (the
//!   service block), each straight after the counter;
//! - a side's judgement (`graph::events::leaf_events`: its `log` rules
//!   passed, its allow by a rule with `log`) in that side's leaf, where
//!   the ids are constants;
//! - a side's denial in the final block, after the deciding id is counted
//!   (it is then at `fp-4`);
//! - an audit side's event (`graph::events::audit_leaf_event`) in the
//!   audit leaf.
//!
//! Every event is a function of one side's decision (docs/language.md
//! §4), so none needs state carried from one side to the other.
//!
//! **Rate limit.** Every emission first takes a token from a per-CPU
//! token bucket in `weir_ev_state` (per-CPU array, one entry:
//! [`state`]). The bucket holds *credit* in nanoseconds: it grows by the
//! time elapsed since the last event, up to `burst × cost`, and an event
//! costs `cost = 1e9 / rate` ns — so no division or multiplication runs
//! per packet. An event without credit, or one the ring buffer has no
//! room for (`bpf_ringbuf_reserve` fails), is not written and counts in
//! the same entry's `dropped`, which `weir monitor` reports. A flood thus
//! costs the data path, per packet, a map lookup, a clock read (see
//! "Clock") and a few compares once the bucket is empty — never more
//! than `rate` ring-buffer writes per second per CPU after the first
//! `burst` (give or take one tick's credit with the coarse clock).
//!
//! **Clock.** The bucket reads the coarse monotonic clock
//! (`bpf_ktime_get_coarse_ns`: `CLOCK_MONOTONIC` as of the last timer
//! tick, a memory read) when the bucket holds at least
//! [`COARSE_MIN_CAP_NS`] of credit (the default's 100 ms does): credit
//! then arrives in tick-sized steps no larger than the cap, so what the
//! bucket grants over time is what the precise clock would grant, give or
//! take one tick's credit. A smaller bucket (a rate and burst whose cap
//! is under one tick at `HZ=100`) would lose credit to the cap at every
//! step, so it keeps `bpf_ktime_get_ns`. A record's time is always read
//! from the precise clock, after the token is taken: only written events
//! pay it. Why: `bpf_ktime_get_ns` reads the clock source (`rdtsc`, ~16 ns
//! on this VM) and was ~8 % of a new allowed flow that passes a `log`
//! rule at 10,000 rules, and ~13 % of a denied one, in a perf profile
//! (issue 21, BENCHMARKS.md), paid by every packet of a flood.
//!
//! **Record.** Reserved in the ring buffer (`bpf_ringbuf_reserve` /
//! `bpf_ringbuf_submit`, no stack copy) and written field by field from
//! the context: the packet as it arrived (the frontend, when the service
//! stage translated it — `ctx::ORIG_DST` — and the backend beside, flag
//! `translated`), every byte of the 72 written.
//!
//! Registers: an emission clobbers r0–r5 and keeps r6–r9 (context, skb,
//! class rows); stack slots `fp-8` to `fp-32` ([`slot`]).

use super::emit::{Em, Entry, Gen};
use crate::contract::event::{EventRecord, EventVerdict, EVENTS_MAP, EVENT_RECORD_SIZE};
use crate::ebpf::layout::ctx;
use crate::ebpf::{helper, AluOp, JmpCond, MapDef, MapType, Op, Origin, Size};
use crate::graph::ir::VerdictLeaf;

use crate::ebpf::Reg::*;

/// The per-CPU state map: token bucket and drop counter.
pub const STATE_MAP: &str = "weir_ev_state";

/// `bpf_ringbuf_output`'s siblings (`enum bpf_func_id`).
pub const RINGBUF_RESERVE: u32 = 131;
pub const RINGBUF_SUBMIT: u32 = 132;

/// Default ring size: 256 KiB (3,640 records).
pub const DEFAULT_RING_BYTES: u32 = 256 * 1024;
/// Largest ring: 256 MiB.
pub const MAX_RING_BYTES: u32 = 256 << 20;
/// Default rate: events per second per CPU.
pub const DEFAULT_RATE: u32 = 10_000;
/// Default burst: events a CPU may send at once after a quiet period.
pub const DEFAULT_BURST: u32 = 1_000;

/// The smallest bucket (`burst x cost`, ns) whose refill reads the
/// coarse clock: one tick at the slowest kernel tick rate (`HZ=100`).
pub const COARSE_MIN_CAP_NS: u64 = 10_000_000;

/// `weir_ev_state`'s value (per CPU, native-endian `u64`s).
pub mod state {
    /// Credit in nanoseconds.
    pub const CREDIT: i16 = 0;
    /// The clock ([`EventOptions::bucket_clock`]) at the last refill.
    pub const LAST: i16 = 8;
    /// Events not written: no credit, or the ring buffer full.
    pub const DROPPED: i16 = 16;
    pub const SIZE: u32 = 24;
}

/// Stack slots of an emission.
mod slot {
    pub const KEY: i16 = -8;
    pub const ID: i16 = -12;
    pub const VERDICT: i16 = -16;
    pub const NOW: i16 = -24;
    pub const STATE: i16 = -32;
}

pub use crate::contract::ebpf::EventOptions;

impl Default for EventOptions {
    fn default() -> Self {
        EventOptions {
            ring_bytes: DEFAULT_RING_BYTES,
            rate: DEFAULT_RATE,
            burst: DEFAULT_BURST,
        }
    }
}

impl EventOptions {
    /// Nanoseconds of credit one event costs.
    pub fn cost_ns(&self) -> u64 {
        1_000_000_000 / u64::from(self.rate.max(1))
    }

    /// The most credit a CPU holds.
    pub fn cap_ns(&self) -> u64 {
        self.cost_ns() * u64::from(self.burst.max(1))
    }

    /// The helper the token bucket reads its clock with (module docs,
    /// "Clock"): the coarse clock for a bucket of at least
    /// [`COARSE_MIN_CAP_NS`], else the precise one.
    pub fn bucket_clock(&self) -> u32 {
        if self.cap_ns() >= COARSE_MIN_CAP_NS {
            helper::KTIME_GET_COARSE_NS
        } else {
            helper::KTIME_GET_NS
        }
    }

    /// Why these options cannot be compiled, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if !self.ring_bytes.is_power_of_two()
            || self.ring_bytes < 4096
            || self.ring_bytes > MAX_RING_BYTES
        {
            return Err(format!(
                "the events ring buffer must be a power of two from 4096 to {MAX_RING_BYTES} bytes, not {}",
                self.ring_bytes
            ));
        }
        if self.rate == 0 || self.rate > 1_000_000_000 || self.burst == 0 {
            return Err("events rate must be 1 to 1e9 per second and burst at least 1".into());
        }
        Ok(())
    }

    /// The two maps events add.
    pub fn maps(&self) -> Vec<MapDef> {
        vec![
            MapDef::new(EVENTS_MAP, MapType::RingBuf, 0, 0, self.ring_bytes),
            MapDef::new(STATE_MAP, MapType::PercpuArray, 4, state::SIZE, 1),
        ]
    }
}

/// Where an emission finds the provenance id.
#[derive(Debug, Clone, Copy)]
pub enum IdAt {
    Imm(u32),
    /// A `u32` at `fp + off`.
    Stack(i16),
    /// In a register (not the verdict code's).
    Reg(crate::ebpf::Reg),
}

impl Gen<'_> {
    /// One event: the verdict byte and id set, then [`Self::emit_record`].
    pub(super) fn event(&self, em: &mut Em, v: EventVerdict, id: IdAt, audit: bool) {
        if self.events.is_none() {
            return;
        }
        self.store_id(em, id);
        em.push(Op::store(Size::U8, R10, slot::VERDICT, i32::from(v.code())));
        self.emit_record(em, audit);
    }

    /// One enforced side's event whose verdict code is in register `code`
    /// and id at `id` (`leaf_events.rs`' shared block).
    pub(super) fn event_with_code(&self, em: &mut Em, code: crate::ebpf::Reg, id: IdAt) {
        if self.events.is_none() {
            return;
        }
        em.push(Op::store(Size::U8, R10, slot::VERDICT, code));
        self.store_id(em, id);
        self.emit_record(em, false);
    }

    /// The id at `slot::ID`.
    fn store_id(&self, em: &mut Em, id: IdAt) {
        match id {
            IdAt::Imm(n) => em.push(Op::store(Size::U32, R10, slot::ID, n as i32)),
            IdAt::Stack(off) => {
                em.push(Op::load(Size::U32, R1, R10, off));
                em.push(Op::store(Size::U32, R10, slot::ID, R1));
            }
            IdAt::Reg(r) => em.push(Op::store(Size::U32, R10, slot::ID, r)),
        }
    }

    /// Takes a token and writes the record (verdict at `slot::VERDICT`,
    /// id at `slot::ID`), or counts a drop.
    fn emit_record(&self, em: &mut Em, audit: bool) {
        let Some(o) = self.events else { return };
        let done = em.label("ev_done");
        let dropped = em.label("ev_dropped");
        let no_room = em.label("ev_no_room");
        let capped = em.label("ev_capped");
        let credit = em.label("ev_credit");
        let clock = o.bucket_clock();
        em.push(Op::Call { helper: clock });
        em.push(Op::store(Size::U64, R10, slot::NOW, R0));
        em.push(Op::store(Size::U32, R10, slot::KEY, 0));
        em.lookup(STATE_MAP, slot::KEY);
        em.jmp(JmpCond::Eq, R0, 0, done);
        em.push(Op::store(Size::U64, R10, slot::STATE, R0));
        // Refill: credit = min(credit + (now - last), cap); last = now.
        em.push(Op::load(Size::U64, R1, R0, state::CREDIT));
        em.push(Op::load(Size::U64, R2, R0, state::LAST));
        em.push(Op::load(Size::U64, R3, R10, slot::NOW));
        em.push(Op::store(Size::U64, R0, state::LAST, R3));
        em.push(Op::alu64(AluOp::Sub, R3, R2));
        em.push(Op::alu64(AluOp::Add, R1, R3));
        em.push(Op::LoadImm64 {
            dst: R4,
            imm: o.cap_ns() as i64,
        });
        // An elapsed time past the cap (the first event, or a clock read
        // before a migration making it wrap) or a sum past it: the cap.
        em.push(Op::jmp(JmpCond::Gt, R3, R4, capped));
        em.push(Op::jmp(JmpCond::Le, R1, R4, credit));
        em.bind(capped);
        em.push(Op::mov64(R1, R4));
        em.bind(credit);
        // Take one event's cost, or drop.
        em.push(Op::store(Size::U64, R0, state::CREDIT, R1));
        em.push(Op::LoadImm64 {
            dst: R4,
            imm: o.cost_ns() as i64,
        });
        em.push(Op::jmp(JmpCond::Lt, R1, R4, dropped));
        em.push(Op::alu64(AluOp::Sub, R1, R4));
        em.push(Op::store(Size::U64, R0, state::CREDIT, R1));
        if clock != helper::KTIME_GET_NS {
            // The record's time: the precise clock, for a written event
            // only.
            em.push(Op::Call {
                helper: helper::KTIME_GET_NS,
            });
            em.push(Op::store(Size::U64, R10, slot::NOW, R0));
        }
        em.push(Op::ld_map_fd(R1, EVENTS_MAP));
        em.push(Op::mov64(R2, EVENT_RECORD_SIZE as i32));
        em.push(Op::mov64(R3, 0));
        em.push(Op::Call {
            helper: RINGBUF_RESERVE,
        });
        em.jmp(JmpCond::Eq, R0, 0, no_room);
        self.fill_record(em, audit);
        em.push(Op::mov64(R1, R0));
        em.push(Op::mov64(R2, 0));
        em.push(Op::Call {
            helper: RINGBUF_SUBMIT,
        });
        em.push(Op::Ja { target: done });
        em.bind(no_room);
        em.push(Op::load(Size::U64, R0, R10, slot::STATE));
        em.bind(dropped);
        em.push(Op::load(Size::U64, R1, R0, state::DROPPED));
        em.push(Op::alu64(AluOp::Add, R1, 1));
        em.push(Op::store(Size::U64, R0, state::DROPPED, R1));
        em.bind(done);
    }

    /// Every byte of the record at r0, from the context (r6) and the
    /// stack slots; clobbers r1. The context's addresses and ports
    /// (`ctx::SRC` … `ctx::DPORT`, 36 bytes) have the record's layout
    /// (`EventRecord::SRC` … `DPORT`): one copy.
    fn fill_record(&self, em: &mut Em, audit: bool) {
        use EventRecord as R;
        const _: () = assert!(
            ctx::DST - ctx::SRC == (R::DST - R::SRC) as i16
                && ctx::SPORT - ctx::SRC == (R::SPORT - R::SRC) as i16
                && ctx::DPORT - ctx::SRC == (R::DPORT - R::SRC) as i16
        );
        let translated = em.label("ev_translated");
        let filled = em.label("ev_filled");
        em.push(Op::load(Size::U64, R1, R10, slot::NOW));
        em.push(Op::store(Size::U64, R0, R::TIME as i16, R1));
        em.push(Op::load(Size::U32, R1, R10, slot::ID));
        em.push(Op::store(Size::U32, R0, R::PROVENANCE as i16, R1));
        em.push(Op::load(Size::U8, R1, R10, slot::VERDICT));
        em.push(Op::store(Size::U8, R0, R::VERDICT as i16, R1));
        em.push(Op::load(Size::U8, R1, R6, ctx::FAMILY));
        em.push(Op::store(Size::U8, R0, R::FAMILY as i16, R1));
        em.push(Op::load(Size::U8, R1, R6, ctx::RAW_PROTO));
        em.push(Op::store(Size::U8, R0, R::PROTO as i16, R1));
        for k in 0..4i16 {
            em.push(Op::load(Size::U64, R1, R6, ctx::SRC + 8 * k));
            em.push(Op::store(Size::U64, R0, R::SRC as i16 + 8 * k, R1));
        }
        em.push(Op::load(Size::U32, R1, R6, ctx::SPORT));
        em.push(Op::store(Size::U32, R0, R::SPORT as i16, R1));
        em.push(Op::store(Size::U16, R0, R::BACKEND_PORT as i16 + 2, 0));
        let flags = if audit { R::FLAG_AUDIT } else { 0 };
        if self.has_services {
            em.push(Op::load(Size::U32, R1, R6, ctx::SERVICE));
            em.jmp(JmpCond::Ne, R1, 0, translated);
        }
        em.push(Op::store(Size::U8, R0, R::FLAGS as i16, i32::from(flags)));
        for k in 0..4i16 {
            em.push(Op::store(Size::U32, R0, R::BACKEND as i16 + 4 * k, 0));
        }
        em.push(Op::store(Size::U16, R0, R::BACKEND_PORT as i16, 0));
        if self.has_services {
            em.push(Op::Ja { target: filled });
            // Translated: the frontend as destination, the backend beside.
            em.bind(translated);
            em.push(Op::store(
                Size::U8,
                R0,
                R::FLAGS as i16,
                i32::from(flags | R::FLAG_TRANSLATED),
            ));
            for k in 0..4i16 {
                em.push(Op::load(Size::U32, R1, R6, ctx::DST + 4 * k));
                em.push(Op::store(Size::U32, R0, R::BACKEND as i16 + 4 * k, R1));
            }
            em.push(Op::load(Size::U16, R1, R6, ctx::DPORT));
            em.push(Op::store(Size::U16, R0, R::BACKEND_PORT as i16, R1));
            for k in 0..2i16 {
                em.push(Op::load(Size::U64, R1, R6, ctx::ORIG_DST + 8 * k));
                em.push(Op::store(Size::U64, R0, R::DST as i16 + 8 * k, R1));
            }
            em.push(Op::load(Size::U16, R1, R6, ctx::ORIG_DPORT));
            em.push(Op::store(Size::U16, R0, R::DPORT as i16, R1));
        }
        em.bind(filled);
    }

    /// The events of an enforced side's leaf
    /// ([`crate::graph::events::leaf_events`]): its `log` events and, when
    /// it allows by a rule with `log`, its allow event. Its denial is
    /// reported by the final block (after the deciding id is counted).
    pub(super) fn leaf_events(&self, em: &mut Em, v: &VerdictLeaf) {
        if self.events.is_none() {
            return;
        }
        for (e, id) in crate::graph::events::leaf_events(self.model, &self.g.provenance, v) {
            if e == EventVerdict::Deny {
                continue;
            }
            em.a.set_origin(
                Origin(id),
                Some(&format!("event: {} {}", e.name(), self.describe_id(id))),
            );
            self.event(em, e, IdAt::Imm(id), false);
        }
    }

    /// The final block's event on the deny path, after the deciding id is
    /// counted (at `fp-4`): the denying side's `deny`.
    pub(super) fn final_events(&self, em: &mut Em, allow: bool) {
        if self.events.is_none() || allow {
            return;
        }
        em.a.set_origin(Origin::NONE, Some("events: deny"));
        self.event(em, EventVerdict::Deny, IdAt::Stack(-4), false);
    }

    /// An audit leaf's event ([`crate::graph::events::audit_leaf_event`]):
    /// a side an audit policy decides that would deny, or allow by a rule
    /// with `log`.
    pub(super) fn audit_leaf_event(&self, em: &mut Em, v: &VerdictLeaf) {
        if self.events.is_none() {
            return;
        }
        let table = &self.graph_of(Entry::AuditEgress).provenance;
        if let Some((e, id)) = crate::graph::events::audit_leaf_event(self.model, table, v) {
            self.event(em, e, IdAt::Imm(id), true);
        }
    }

    pub(super) fn describe_id(&self, id: u32) -> String {
        self.g
            .provenance
            .get(id)
            .map_or_else(|| format!("provenance {id}"), |p| p.describe(self.model))
    }
}

#[cfg(test)]
mod tests {
    use super::{EventOptions, COARSE_MIN_CAP_NS};
    use crate::check::model_of;
    use crate::ebpf::codegen::{generate, Options};

    const SOURCE: &str = "endpoint a { labels { app: \"a\" } addr 10.0.0.1 }
endpoint b { labels { app: \"b\" } addr 10.0.0.2 }
policy p {
  applies to app == \"a\"
  ingress { allow tcp 80 from app == \"b\" log }
}
";

    /// Per emission (each reserve, `call #131`), the four helper calls
    /// up to and including its reserve.
    fn emissions(events: EventOptions) -> Vec<Vec<String>> {
        let model = model_of(SOURCE);
        let g = crate::graph::build(&model);
        let opts = Options {
            events: Some(events),
            ..Options::default()
        };
        let out = generate(&model, &g, &opts).unwrap();
        let calls: Vec<String> = out
            .listing
            .lines()
            .filter_map(|l| l.split("call ").nth(1))
            .map(|c| {
                let name = c.split_whitespace().next().unwrap_or("");
                format!("#{}", name.rsplit('#').next().unwrap_or(""))
            })
            .collect();
        (3..calls.len())
            .filter(|&i| calls[i] == "#131")
            .map(|i| calls[i - 3..=i].to_vec())
            .collect()
    }

    /// At the default bucket (100 ms of credit) every emission refills
    /// from the coarse clock (#160) and reads the precise one (#5) only
    /// after the token is taken, for the record; a bucket under one
    /// tick keeps the precise clock for the refill and reads it once.
    #[test]
    fn the_bucket_reads_the_coarse_clock_and_a_record_the_precise_one() {
        let default = EventOptions::default();
        assert!(default.cap_ns() >= COARSE_MIN_CAP_NS);
        let got = emissions(default);
        assert!(!got.is_empty(), "no event emission");
        for e in &got {
            // clock, state lookup (#1), precise clock, reserve.
            assert_eq!(e, &["#160", "#1", "#5", "#131"], "{got:?}");
        }
        let small = EventOptions {
            rate: 1_000_000,
            burst: 100,
            ..default
        };
        assert!(small.cap_ns() < COARSE_MIN_CAP_NS);
        for e in &emissions(small) {
            assert_eq!(e[1..], ["#5", "#1", "#131"], "{got:?}");
        }
    }
}
