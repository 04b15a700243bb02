//! Large tables split into dispatch blocks.
//!
//! A decision-graph table is one block: load the key (a class's branch
//! from its row column, or a field of the context), then a binary search
//! over its intervals. One search is about two instructions and two
//! conditional jumps per interval, so a table with one branch per pod —
//! 10,000 pods each allowing one peer pod, a common shape for generated
//! policies — was one 14,000-instruction, 12,000-branch block: larger
//! than a stage may be, refused (E0510) however the rest was split.
//!
//! A table with more than [`DISPATCH_BRANCHES`] intervals is instead a
//! two-level search. Its own block searches over *groups* of
//! [`DISPATCH_BRANCHES`] consecutive intervals (a gap between two groups,
//! and `NO_BRANCH`, go to the default) and jumps to the group's
//! [`Block::Dispatch`]; that block loads the key again (r6 = context and
//! r8 / r9 = rows hold in every stage, rows reloaded after a tail call)
//! and searches its own intervals. Each block is small, so the stage
//! splitter can put the groups in different stages; a packet pays one
//! more load and at most one more tail call. The search meets the same
//! interval with the same target as the one-level search did, so the
//! verdict is the same (the eBPF differential tests check it).
//!
//! [`plan_dispatch`] lays each group's block out right before the first
//! of its targets that is laid out in place (leaves are copied into the
//! stage that jumps to them, so they do not count), which keeps a group
//! in the stage of its targets and every jump forward.

use std::collections::HashMap;

use super::emit::{Block, Em, Entry, Gen};
use super::layout::ctx;
use crate::ebpf::{Label, Op, Origin, Reg, Size};
use crate::graph::ir::{Node, NodeId, TableKey};
use crate::graph::Graph;

/// Most intervals one table block searches; a table with more is split
/// into groups of this many (about 1,100 instructions and jumps each).
pub const DISPATCH_BRANCHES: usize = 1024;

/// Groups a table with `intervals` search intervals splits into (0: one
/// block searches them all).
pub fn groups(intervals: usize) -> usize {
    if intervals > DISPATCH_BRANCHES {
        intervals.div_ceil(DISPATCH_BRANCHES)
    } else {
        0
    }
}

/// Where a table's key is read from.
#[derive(Debug, Clone, Copy)]
struct KeyLoad {
    size: Size,
    base: Reg,
    off: i16,
}

impl Gen<'_> {
    /// The key load and search intervals `(lo, hi, child)` of table `n`,
    /// and its default: a map-backed class table searches the class's
    /// branch index (its column in the row), any other the key's value.
    fn table_search(&self, e: Entry, n: NodeId) -> (KeyLoad, Vec<(u32, u32, NodeId)>, NodeId) {
        let Node::Table {
            key,
            entries,
            default,
            ..
        } = self.graph_of(e).node(n)
        else {
            unreachable!("table_search on a table node")
        };
        // Map-backed class tables are the enforced graph's (audit walks
        // search inline: their node ids are another graph's).
        if let Some(t) = self.ctabs.get(&n).filter(|_| !e.is_audit()) {
            let base = if *key == TableKey::SrcClass {
                Reg::R8
            } else {
                Reg::R9
            };
            let off = (self.atom_words * 4 + 2 * t.id as usize) as i16;
            let iv = t
                .targets
                .iter()
                .enumerate()
                .map(|(i, &c)| (i as u32, i as u32, c))
                .collect();
            return (
                KeyLoad {
                    size: Size::U16,
                    base,
                    off,
                },
                iv,
                *default,
            );
        }
        let (size, off) = match key {
            TableKey::SrcClass => (Size::U32, ctx::SRC_CLASS),
            TableKey::DstClass => (Size::U32, ctx::DST_CLASS),
            TableKey::Proto => (Size::U8, ctx::PROTO),
            TableKey::DPort => (Size::U16, ctx::DPORT),
            TableKey::IcmpType => (Size::U8, ctx::ICMP_TYPE),
            TableKey::IcmpCode => (Size::U8, ctx::ICMP_CODE),
        };
        let iv = entries.iter().map(|x| (x.lo, x.hi, x.next)).collect();
        (
            KeyLoad {
                size,
                base: Reg::R6,
                off,
            },
            iv,
            *default,
        )
    }

    /// Table node `n` of walk `e`: the key, then a search over its
    /// intervals, or over its groups when it has more than
    /// [`DISPATCH_BRANCHES`].
    pub(super) fn table(&self, em: &mut Em, e: Entry, n: NodeId) {
        let (load, iv, default) = self.table_search(e, n);
        let d = em.to(self.index[&Block::Node(e, default)]);
        em.push(Op::load(load.size, Reg::R1, load.base, load.off));
        let ivs: Vec<(u32, u32, Label)> = if groups(iv.len()) == 0 {
            iv.iter()
                .map(|&(lo, hi, c)| (lo, hi, em.to(self.index[&Block::Node(e, c)])))
                .collect()
        } else {
            iv.chunks(DISPATCH_BRANCHES)
                .enumerate()
                .map(|(k, ch)| {
                    let b = self.index[&Block::Dispatch(e, n, k as u32)];
                    (ch[0].0, ch[ch.len() - 1].1, em.to(b))
                })
                .collect()
        };
        em.search(Reg::R1, &ivs, d);
    }

    /// Group `k` of table `n`: the key again, then a search over the
    /// group's intervals.
    pub(super) fn dispatch(&self, em: &mut Em, e: Entry, n: NodeId, k: u32) {
        let text = format!(
            "{} n{} group {k}: intervals from {}",
            e.short(),
            self.numbers_of(e)[&n],
            k as usize * DISPATCH_BRANCHES
        );
        em.a.set_origin(Origin::NONE, Some(&text));
        let (load, iv, default) = self.table_search(e, n);
        let d = em.to(self.index[&Block::Node(e, default)]);
        em.push(Op::load(load.size, Reg::R1, load.base, load.off));
        let ivs: Vec<(u32, u32, Label)> = iv
            .chunks(DISPATCH_BRANCHES)
            .nth(k as usize)
            .unwrap_or(&[])
            .iter()
            .map(|&(lo, hi, c)| (lo, hi, em.to(self.index[&Block::Node(e, c)])))
            .collect();
        em.search(Reg::R1, &ivs, d);
    }
}

/// Inserts the dispatch blocks of walk `e`'s split tables into `order`
/// (that walk's nodes in layout order): each group's block right before
/// the first of its targets laid out in place (and after its table), so
/// every jump stays forward. `children(n)` is, for a table node `n`, the
/// child of each of its search intervals in search order (what
/// [`Gen::table`] chunks).
pub fn plan_dispatch(
    g: &Graph,
    e: Entry,
    order: &[NodeId],
    children: impl Fn(NodeId) -> Option<Vec<NodeId>>,
) -> Vec<Block> {
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    // (position, 0 = dispatch before the node there, group order)
    let mut keyed: Vec<((usize, u8, usize), Block)> = order
        .iter()
        .enumerate()
        .map(|(i, &n)| ((i, 1, 0), Block::Node(e, n)))
        .collect();
    for (i, &n) in order.iter().enumerate() {
        let Some(targets) = children(n).filter(|t| groups(t.len()) > 0) else {
            continue;
        };
        let Node::Table { default, .. } = g.node(n) else {
            continue;
        };
        for (k, ch) in targets.chunks(DISPATCH_BRANCHES).enumerate() {
            let at = ch
                .iter()
                .chain(std::iter::once(default))
                .filter(|c| !g.node(**c).is_leaf())
                .map(|c| pos[c])
                .min()
                .unwrap_or(i + 1)
                .max(i + 1);
            keyed.push(((at, 0, k), Block::Dispatch(e, n, k as u32)));
        }
    }
    keyed.sort_by_key(|x| x.0);
    keyed.into_iter().map(|x| x.1).collect()
}
