//! Splitting the block sequence into tail-called stages, and assembling
//! each stage into a program.
//!
//! Blocks only jump forward, so every cut of the sequence is valid: a jump
//! from stage `i` to a block of a later stage `j` becomes a stub that
//! stores the block number in `ctx.next` and tail-calls slot `j` of
//! `weir_jmp`; stage `j` starts with a dispatch (binary search over the
//! block numbers entering it). Each stub tail-calls with a constant
//! index, which the JIT turns into a direct jump. A packet's path crosses
//! each cut at most once; [`tail_calls`] finds the most tail calls any
//! path through the blocks makes, and the kernel's limit (33 per packet)
//! is checked against that, once, at compile time — not against the
//! number of programs, which may be larger: a decision graph is shallow,
//! and its depth-first layout keeps a path's blocks in few stages.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::emit::{Em, Gen};
use super::layout::{self, ctx, map};
use super::{Budget, Limit};
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
        copy: None,
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

/// The most tail calls a packet can make: the longest path from the
/// first block, counting the edges that cross into another stage (a jump
/// to `copied`, which every stage has its own copy of, never does).
pub fn tail_calls(sizes: &[BlockSize], stage_of: &[usize], copied: usize) -> usize {
    // Blocks only jump forward, so layout order is a topological order.
    let mut calls: Vec<Option<usize>> = vec![None; sizes.len()];
    if let Some(c) = calls.first_mut() {
        *c = Some(0);
    }
    let mut most = 0;
    for b in 0..sizes.len() {
        let Some(here) = calls[b] else { continue };
        most = most.max(here);
        for &s in &sizes[b].succs {
            let via = here + usize::from(s != copied && stage_of[s] != stage_of[b]);
            calls[s] = Some(calls[s].map_or(via, |c| c.max(via)));
        }
    }
    most
}

/// Assigns blocks to stages (greedy, in layout order). `reserve`: slots
/// every stage keeps free (its copy of the final block).
pub fn split(sizes: &[BlockSize], budget: &Budget, reserve: usize) -> Result<Vec<usize>, usize> {
    let mut stage_of = Vec::with_capacity(sizes.len());
    let base = ENTRY_SLOTS + reserve;
    let (mut stage, mut slots, mut jumps) = (0usize, base, 0usize);
    for (b, s) in sizes.iter().enumerate() {
        // Most targets end up in the same stage; the real size is checked
        // after assembly and the split redone tighter if a stage is over.
        let cost = s.slots + s.targets;
        if cost + base > budget.max_slots || s.jumps > budget.max_jumps {
            return Err(b);
        }
        if slots + cost > budget.max_slots || jumps + s.jumps > budget.max_jumps {
            stage += 1;
            slots = base;
            jumps = 0;
        }
        slots += cost;
        jumps += s.jumps;
        stage_of.push(stage);
    }
    Ok(stage_of)
}

/// One assembled stage.
pub struct Stage {
    pub name: String,
    pub code: Assembled,
    pub blocks: usize,
    pub entries: usize,
}

/// Assembles every stage; `stage_of[b]` from [`split`].
pub fn assemble(gen: &Gen, stage_of: &[usize], long_jumps: bool) -> Result<Vec<Stage>, Limit> {
    let n = stage_of.iter().max().map_or(0, |m| m + 1);
    // Blocks entered from earlier stages, per stage (filled as we go:
    // jumps only go forward).
    let mut entries: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        // The final block is never laid out in place: every stage that
        // reaches it gets its own copy (`Em::copy`).
        let fin = gen.final_block();
        let blocks: Vec<usize> = (0..stage_of.len())
            .filter(|&b| stage_of[b] == k && b != fin)
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
            copy: Some((gen.final_block(), None)),
        };
        if k > 0 {
            em.a.set_origin(
                Origin::NONE,
                Some(&format!("stage {k}: context, then dispatch on ctx.next")),
            );
            gen.stage_entry(&mut em);
            gen.load_rows(&mut em);
            em.a.set_origin(
                Origin::NONE,
                Some(&format!("stage {k}: context, then dispatch on ctx.next")),
            );
            em.push(Op::load(Size::U32, Reg::R1, Reg::R6, ctx::NEXT));
            let iv: Vec<(u32, u32, Label)> = entries[k]
                .iter()
                .map(|&b| (b as u32, b as u32, local[&b]))
                .collect();
            em.search(Reg::R1, &iv, drop);
        }
        for (i, &b) in blocks.iter().enumerate() {
            em.a.bind(local[&b]);
            em.next = blocks.get(i + 1).copied();
            gen.emit(&mut em, b);
        }
        if let Some((fin, Some(label))) = em.copy.take() {
            em.a.bind(label);
            em.next = None;
            gen.emit(&mut em, fin);
        }
        // Stubs: continue in a later stage: ctx.next = block, then one
        // trampoline per target stage that tail-calls it with a constant
        // index (a direct jump once JITed).
        let stub_list: Vec<(usize, Label)> = em.stubs.iter().map(|(b, l)| (*b, *l)).collect();
        let mut tramps: BTreeMap<usize, Label> = BTreeMap::new();
        for (b, l) in stub_list {
            let target = stage_of[b];
            debug_assert!(target > k, "jumps only go forward");
            entries[target].insert(b);
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
            em.push(Op::Ja { target: drop });
        }
        em.a.set_origin(Origin::NONE, Some("fail closed"));
        em.a.bind(drop);
        em.push(Op::mov64(Reg::R0, layout::TC_ACT_SHOT));
        em.push(Op::Exit);
        if k == 0 {
            // Only the prologue passes frames it does not parse.
            em.a.set_origin(Origin::NONE, Some("not IP: pass"));
            em.a.bind(pass);
            em.push(Op::mov64(Reg::R0, layout::TC_ACT_OK));
            em.push(Op::Exit);
        }
        let code = a
            .assemble_with(AsmOptions { long_jumps })
            .map_err(|e| match e {
                AsmError::JumpOutOfRange { .. } => Limit::StageTooLarge {
                    stage: k,
                    reason: e.to_string(),
                },
                other => panic!("internal compiler error: eBPF assembly: {other}"),
            })?;
        if let Some(slot) = code.first_unreachable() {
            panic!(
                "internal compiler error: eBPF stage {k} has unreachable code at slot {slot}:\n{}",
                code.listing()
            );
        }
        out.push(Stage {
            name: if k == 0 {
                layout::MAIN_PROGRAM.to_string()
            } else {
                layout::stage_name(k)
            },
            code,
            blocks: blocks.len(),
            entries: entries[k].len(),
        });
    }
    Ok(out)
}
