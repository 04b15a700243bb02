//! Splitting the block sequence into tail-called stages, and assembling
//! each stage into a program.
//!
//! Blocks only jump forward in the layout, so the blocks of one stage,
//! kept in layout order, only jump forward inside it, and the block graph
//! has no cycle whatever stage each block is in. [`split`] puts a whole
//! subtree in one stage when it fits one, and [`copied_blocks`] copies
//! small shared subtrees into every stage that reaches them, so a path
//! changes stage rarely. A jump to a block of another stage `j` (earlier or later) becomes a stub that stores the
//! block number in `ctx.next` and tail-calls slot `j` of `weir_jmp` with a
//! constant index (a direct jump once JITed); stage `j` starts with a
//! dispatch (binary search over the blocks entering it, [`entries`]).
//! [`tail_calls`] finds the most tail calls any path through the blocks
//! makes, and the kernel's limit (33 per packet) is checked against that,
//! once, at compile time — not against the number of programs, which may
//! be larger.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::emit::{Copies, Em, Gen};
use super::layout::{self, ctx, map};
use super::{Budget, Limit};
use crate::diagnostics::StageOverflow;
use crate::ebpf::{helper, Asm, AsmError, AsmOptions, Assembled, Label, Op, Origin, Reg, Size};

/// Size of one block, measured by emitting it alone.
#[derive(Debug, Clone, Default)]
pub struct BlockSize {
    pub slots: usize,
    pub jumps: usize,
    /// Distinct blocks it may jump to (each may need a stub).
    pub targets: usize,
    /// Those blocks (all later in the layout).
    pub succs: Vec<usize>,
}

/// Hard size of one program: the i16 conditional-jump range.
pub const HARD_SLOTS: usize = 32_000;
/// Hard size of one program with far jumps relaxed (`gotol`): a fifth of
/// the kernel's 1M instructions, far below its processed-instruction limit.
pub const HARD_SLOTS_LONG: usize = 200_000;
/// Slots of a stage's fixed entry code (context, rows) before dispatch.
const ENTRY_SLOTS: usize = 40;

pub fn measure(gen: &Gen, b: usize) -> BlockSize {
    let mut a = Asm::new();
    let local = HashMap::new();
    let mut stubs = BTreeMap::new();
    let drop = a.new_label("drop");
    let pass = a.new_label("pass");
    let mut em = Em {
        a: &mut a,
        jumps: 0,
        local: &local,
        stubs: &mut stubs,
        next: None,
        drop,
        pass,
        copies: None,
    };
    gen.emit(&mut em, b);
    let jumps = em.jumps;
    BlockSize {
        slots: a.slot_count(),
        jumps,
        targets: stubs.len(),
        succs: stubs.keys().copied().collect(),
    }
}

/// The block graph seen through copied blocks. A copied block (a leaf,
/// the final block) is never laid out in place: every stage that jumps to
/// it emits its own copy, so it sits in the stage of whoever jumped. For
/// every laid-out block: the laid-out blocks that reach it directly or
/// through copies — the jumps that may cross a stage into it.
pub struct Flow {
    pub copied: Vec<bool>,
    /// Laid-out block → laid-out blocks whose code (or a copy emitted in
    /// their stage) jumps to it.
    pub from: Vec<Vec<usize>>,
}

impl Flow {
    pub fn new(sizes: &[BlockSize], copied: Vec<bool>) -> Flow {
        let n = sizes.len();
        let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (b, s) in sizes.iter().enumerate() {
            for &t in &s.succs {
                preds[t].push(b);
            }
        }
        // Layout order is topological: predecessors come first.
        let mut from: Vec<Vec<usize>> = vec![Vec::new(); n];
        for b in 0..n {
            let mut f: BTreeSet<usize> = BTreeSet::new();
            for &p in &preds[b] {
                if copied[p] {
                    f.extend(from[p].iter().copied());
                } else {
                    f.insert(p);
                }
            }
            from[b] = f.into_iter().collect();
        }
        Flow { copied, from }
    }
}

/// Largest subtree (slots) copied into every stage that reaches it
/// instead of being laid out once ([`copied_blocks`]).
pub const COPY_SLOTS: usize = 64;

/// The blocks to copy into each stage that jumps to them rather than
/// lay out once (and tail-call from the other stages): `copied` (leaves
/// and the final block) plus every graph node (`is_node`) whose whole
/// subtree is at most [`COPY_SLOTS`] slots and that is reached from two
/// blocks or more, or from such a copied block (so the subtree is copied
/// whole and never tail-calls back out): a small port test many policies
/// share. On the 100,000-rule model this took the most tail calls on a
/// path from 4 to 3 (5 before [`split`] kept subtrees whole; the 3 are
/// egress subtrees larger than a stage). (Copying shared dispatch tables
/// too — the ingress walk's root, which every egress leaf jumps to — made
/// every branch of the table reachable from every stage: code generation
/// took 60 % longer, for no fewer tail calls.)
pub fn copied_blocks(
    sizes: &[BlockSize],
    budget: &Budget,
    mut copied: Vec<bool>,
    is_node: impl Fn(usize) -> bool,
) -> Vec<bool> {
    let n = sizes.len();
    // One stage holds everything: nothing to save, and a copy (emitted
    // after the stage's blocks) would only cost a fall-through.
    let total: usize = sizes.iter().map(|s| s.slots + s.targets).sum();
    if total + ENTRY_SLOTS <= budget.max_slots {
        return copied;
    }
    let whole = reach(sizes, (COPY_SLOTS + 1, usize::MAX), |_| false);
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (b, s) in sizes.iter().enumerate() {
        for &c in &s.succs {
            preds[c].push(b);
        }
    }
    let mut small = vec![false; n];
    // Predecessors come first in the layout.
    for b in 0..n {
        if copied[b] || !is_node(b) {
            continue;
        }
        let shared = preds[b].len() > 1;
        if whole[b].0 <= COPY_SLOTS && (shared || preds[b].iter().any(|&p| small[p])) {
            small[b] = true;
            copied[b] = true;
        }
    }
    copied
}

/// The most tail calls a packet can make: the longest path from the
/// first block, counting the jumps into a laid-out block of another stage
/// (a copied block is always in the stage that jumped to it).
pub fn tail_calls(flow: &Flow, stage_of: &[usize]) -> usize {
    let n = stage_of.len();
    let mut calls = vec![0usize; n];
    let mut most = 0;
    for b in 1..n {
        if flow.copied[b] {
            continue;
        }
        calls[b] = flow.from[b]
            .iter()
            .map(|&q| calls[q] + usize::from(stage_of[q] != stage_of[b]))
            .max()
            .unwrap_or(0);
        most = most.max(calls[b]);
    }
    most
}

/// Per block, the (slots, jumps) of itself and the blocks it reaches
/// (charged the way [`split`] charges them), a block reached twice
/// counted twice (an over-estimate: a shared subtree may be judged too
/// large, never too small), each saturating at `cap`; a successor that
/// `cut` says is placed on its own is not counted.
fn reach(
    sizes: &[BlockSize],
    cap: (usize, usize),
    cut: impl Fn(usize) -> bool,
) -> Vec<(usize, usize)> {
    let mut sub = vec![(0usize, 0usize); sizes.len()];
    // Successors come later in the layout.
    for b in (0..sizes.len()).rev() {
        let s = &sizes[b];
        let mut t = (s.slots + s.targets, s.jumps);
        for &c in s.succs.iter().filter(|&&c| !cut(c)) {
            t = ((t.0 + sub[c].0).min(cap.0), (t.1 + sub[c].1).min(cap.1));
        }
        sub[b] = t;
    }
    sub
}

/// Per block, the (slots, jumps) of its subtree as [`split`] places it
/// ([`reach`], saturating just above the budget). A laid-out block with
/// several predecessors is placed as the root of its own subtree, not as
/// a part of each of theirs (the ingress walk's root is reached from
/// every egress leaf).
pub fn subtree_sizes(sizes: &[BlockSize], flow: &Flow, budget: &Budget) -> Vec<(usize, usize)> {
    reach(sizes, (budget.max_slots + 1, budget.max_jumps + 1), |c| {
        !flow.copied[c] && flow.from[c].len() > 1
    })
}

/// Assigns blocks to stages, in layout order, keeping whole subtrees in
/// one stage: a block whose subtree ([`subtree_sizes`]) fits a stage goes
/// where all of it fits — the stage of the block that reaches it with the
/// most tail calls so far, else the stage being filled, else the first
/// stage with room for all of it, else a new one — so a path that enters
/// a subtree makes no further tail call inside it. A block whose subtree
/// is larger than a stage joins its predecessor's stage if there is room
/// for the block, else the stage being filled, else a new one. Blocks are
/// laid out depth-first, so a subtree's blocks follow its root and find
/// the room it was placed for. On the 100,000-rule benchmark model this
/// took the most tail calls on a path from 5 to 4 (3 with
/// [`copied_blocks`]). `reserve`: slots every stage keeps free (its copy
/// of the final block). Copied blocks are charged to the stage of their
/// first predecessor (their copies' sizes are checked after assembly). Stage 0 holds block 0 (the prologue). `Err(b)`: block `b`
/// alone does not fit a stage.
pub fn split(
    sizes: &[BlockSize],
    flow: &Flow,
    budget: &Budget,
    reserve: usize,
) -> Result<Vec<usize>, usize> {
    let n = sizes.len();
    let base = ENTRY_SLOTS + reserve;
    let sub = subtree_sizes(sizes, flow, budget);
    let mut stage_of = vec![0usize; n];
    let mut calls = vec![0usize; n];
    // (slots, jumps) used per stage.
    let mut used: Vec<(usize, usize)> = vec![(base, 0)];
    let mut current = 0usize;
    for b in 0..n {
        let s = &sizes[b];
        // Most targets end up in the same stage; the real size is checked
        // after assembly and the split redone tighter if a stage is over.
        let cost = s.slots + s.targets;
        if cost + base > budget.max_slots || s.jumps > budget.max_jumps {
            return Err(b);
        }
        let room = |k: usize, used: &[(usize, usize)], (slots, jumps): (usize, usize)| {
            used[k].0 + slots <= budget.max_slots && used[k].1 + jumps <= budget.max_jumps
        };
        let fits = |k: usize, used: &[(usize, usize)]| room(k, used, (cost, s.jumps));
        let mut from = flow.from[b].clone();
        from.sort_by_key(|&p| std::cmp::Reverse((calls[p], p)));
        // Stage 0 is the entry program, not in the prog array: only
        // blocks reached from stage 0 alone may join it.
        let open = |k: usize| k != 0 || from.iter().all(|&p| stage_of[p] == 0);
        let whole = sub[b];
        let small = whole.0 + base <= budget.max_slots && whole.1 <= budget.max_jumps;
        let joined = if small && b > 0 {
            let fits_whole = |k: usize| open(k) && room(k, &used, whole);
            from.iter()
                .map(|&p| stage_of[p])
                .find(|&k| fits_whole(k))
                .or_else(|| fits_whole(current).then_some(current))
                .or_else(|| (0..used.len()).find(|&k| fits_whole(k)))
        } else {
            from.iter()
                .map(|&p| stage_of[p])
                .find(|&k| open(k) && fits(k, &used))
                .or_else(|| (open(current) && fits(current, &used)).then_some(current))
        };
        let k = match joined {
            Some(k) => k,
            None => {
                used.push((base, 0));
                current = used.len() - 1;
                current
            }
        };
        used[k].0 += cost;
        used[k].1 += s.jumps;
        stage_of[b] = k;
        calls[b] = from
            .iter()
            .map(|&p| calls[p] + usize::from(stage_of[p] != k))
            .max()
            .unwrap_or(0);
    }
    Ok(stage_of)
}

/// Blocks entered from another stage (by tail call), per stage.
pub fn entries(flow: &Flow, stage_of: &[usize]) -> Vec<BTreeSet<usize>> {
    let n = stage_of.iter().max().map_or(1, |m| m + 1);
    let mut e = vec![BTreeSet::new(); n];
    for (b, from) in flow.from.iter().enumerate() {
        if flow.copied[b] {
            continue;
        }
        if from.iter().any(|&q| stage_of[q] != stage_of[b]) {
            e[stage_of[b]].insert(b);
        }
    }
    e
}

/// One assembled stage.
pub struct Stage {
    pub name: String,
    pub code: Assembled,
    pub blocks: usize,
    pub entries: usize,
}

/// Stage `k` of the split `stage_of` (from [`split`]): its entry
/// dispatch, its blocks in layout order, the copies they ask for, the
/// tail-call stubs, the exits; assembled and checked. The stages are
/// assembled one at a time, in order, and each one's listing written
/// before the next is made (`plan::split_stages`).
pub fn assemble_stage(
    gen: &Gen,
    flow: &Flow,
    stage_of: &[usize],
    entries: &[BTreeSet<usize>],
    long_jumps: bool,
    k: usize,
) -> Result<Stage, Limit> {
    // Copied blocks are never laid out in place: every stage that
    // reaches one gets its own copy (`Em::copies`).
    let blocks: Vec<usize> = (0..stage_of.len())
        .filter(|&b| stage_of[b] == k && !flow.copied[b])
        .collect();
    let mut a = Asm::new();
    let drop = a.new_label("drop");
    let pass = a.new_label("pass");
    let local: HashMap<usize, Label> = blocks
        .iter()
        .map(|&b| (b, a.new_label(&gen.block_name(b))))
        .collect();
    let mut stubs: BTreeMap<usize, Label> = BTreeMap::new();
    let mut em = Em {
        a: &mut a,
        jumps: 0,
        local: &local,
        stubs: &mut stubs,
        next: None,
        drop,
        pass,
        copies: Some(Copies {
            copied: &flow.copied,
            labels: BTreeMap::new(),
        }),
    };
    if k > 0 {
        dispatch_on_next(gen, &mut em, k, &entries[k]);
    }
    for (i, &b) in blocks.iter().enumerate() {
        em.a.bind(local[&b]);
        em.next = blocks.get(i + 1).copied();
        gen.emit(&mut em, b);
    }
    emit_copies(gen, &mut em);
    emit_stubs(gen, &mut em, stage_of, entries, k);
    emit_exits(&mut em, k);
    let code = finish(a, long_jumps, k)?;
    Ok(Stage {
        name: if k == 0 {
            layout::MAIN_PROGRAM.to_string()
        } else {
            layout::stage_name(k)
        },
        code,
        blocks: blocks.len(),
        entries: entries[k].len(),
    })
}

/// A later stage starts like the first (context, class rows), then jumps
/// to the block `ctx.next` names among its entries.
fn dispatch_on_next(gen: &Gen, em: &mut Em, k: usize, entries: &BTreeSet<usize>) {
    let origin = format!("stage {k}: context, then dispatch on ctx.next");
    em.a.set_origin(Origin::NONE, Some(&origin));
    gen.stage_entry(em);
    gen.load_rows(em);
    em.a.set_origin(Origin::NONE, Some(&origin));
    em.push(Op::load(Size::U32, Reg::R1, Reg::R6, ctx::NEXT));
    let iv: Vec<(u32, u32, Label)> = entries
        .iter()
        .map(|&b| (b as u32, b as u32, em.local[&b]))
        .collect();
    let drop = em.drop;
    em.search(Reg::R1, &iv, drop);
}

/// This stage's copies (a copy may ask for further ones: a leaf jumps to
/// the final block).
fn emit_copies(gen: &Gen, em: &mut Em) {
    let mut emitted: BTreeSet<usize> = BTreeSet::new();
    loop {
        let pending: Vec<(usize, Label)> = em.copies.as_ref().map_or(Vec::new(), |c| {
            c.labels
                .iter()
                .filter(|(b, _)| !emitted.contains(*b))
                .map(|(b, l)| (*b, *l))
                .collect()
        });
        if pending.is_empty() {
            return;
        }
        for (b, label) in pending {
            emitted.insert(b);
            em.a.bind(label);
            em.next = None;
            gen.emit(em, b);
        }
    }
}

/// Stubs: continue in a later stage: ctx.next = block, then one
/// trampoline per target stage that tail-calls it with a constant index
/// (a direct jump once JITed).
fn emit_stubs(gen: &Gen, em: &mut Em, stage_of: &[usize], entries: &[BTreeSet<usize>], k: usize) {
    let stub_list: Vec<(usize, Label)> = em.stubs.iter().map(|(b, l)| (*b, *l)).collect();
    let mut tramps: BTreeMap<usize, Label> = BTreeMap::new();
    for (b, l) in stub_list {
        let target = stage_of[b];
        assert!(
            target != k && entries[target].contains(&b),
            "internal compiler error: stub to {} not among stage {target}'s entries",
            gen.block_name(b)
        );
        let tramp = *tramps
            .entry(target)
            .or_insert_with(|| em.a.new_label(&format!("to_stage_{target}")));
        em.a.set_origin(
            Origin::NONE,
            Some(&format!("to stage {target} at {}", gen.block_name(b))),
        );
        em.a.bind(l);
        em.push(Op::store(Size::U32, Reg::R6, ctx::NEXT, b as i32));
        em.push(Op::Ja { target: tramp });
    }
    for (target, tramp) in tramps {
        em.a.set_origin(Origin::NONE, Some(&format!("tail call: stage {target}")));
        em.a.bind(tramp);
        em.push(Op::mov64(Reg::R1, Reg::R7));
        em.push(Op::ld_map_fd(Reg::R2, map::JMP));
        em.push(Op::mov64(Reg::R3, target as i32));
        em.push(Op::Call {
            helper: helper::TAIL_CALL,
        });
        let drop = em.drop;
        em.push(Op::Ja { target: drop });
    }
}

/// The stage's exits: drop (fail closed), and in the first stage the pass
/// of frames the prologue does not parse.
fn emit_exits(em: &mut Em, k: usize) {
    em.a.set_origin(Origin::NONE, Some("fail closed"));
    em.a.bind(em.drop);
    em.push(Op::mov64(Reg::R0, layout::TC_ACT_SHOT));
    em.push(Op::Exit);
    if k == 0 {
        // Only the prologue passes frames it does not parse.
        em.a.set_origin(Origin::NONE, Some("not IP: pass"));
        em.a.bind(em.pass);
        em.push(Op::mov64(Reg::R0, layout::TC_ACT_OK));
        em.push(Op::Exit);
    }
}

/// Assembles stage `k`: a jump out of range is a limit; anything else,
/// or unreachable code, is an internal compiler error.
fn finish(a: Asm, long_jumps: bool, k: usize) -> Result<Assembled, Limit> {
    let code = a
        .assemble_with(AsmOptions { long_jumps })
        .map_err(|e| match e {
            AsmError::JumpOutOfRange {
                label,
                slot,
                offset,
            } => Limit::StageTooLarge {
                stage: k,
                overflow: StageOverflow::JumpOutOfRange {
                    label,
                    slot,
                    offset,
                },
            },
            other => panic!("internal compiler error: eBPF assembly: {other}"),
        })?;
    if let Some(slot) = code.first_unreachable() {
        panic!(
            "internal compiler error: eBPF stage {k} has unreachable code at slot {slot}:\n{}",
            code.listing()
        );
    }
    Ok(code)
}
