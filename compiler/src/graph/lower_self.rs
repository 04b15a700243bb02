//! The lowering of `self` (`Cond::SameEndpoint`; see `same_endpoint.rs`):
//! one test of the relation "source and destination are one endpoint",
//! not a class split. A child of `lower.rs` (it extends the peer walk).

use super::{Item, Walk};
use crate::graph::bits::Bits;
use crate::graph::ir::{Cond, Node, NodeId};

impl Walk<'_, '_> {
    /// `self`: the relation test, emitted unless the path already knows
    /// its outcome. A match narrows the peer to the subject's own classes.
    pub(super) fn self_test(
        &mut self,
        seg: usize,
        pos: usize,
        logged: &[u32],
        possible: &Bits,
        same: Option<bool>,
        item: Item,
    ) -> NodeId {
        let in_peer = if same == Some(false) {
            Bits::new()
        } else {
            possible.and(self.own)
        };
        let Some(on_match) = self.on_match(seg, pos, logged, in_peer, Some(true), item) else {
            return self.walk(seg, pos + 1, logged.to_vec(), possible.clone(), same);
        };
        if same == Some(true) {
            return on_match;
        }
        let els = self.walk(seg, pos + 1, logged.to_vec(), possible.clone(), Some(false));
        self.cx.b.add(Node::Test {
            cond: Cond::SameEndpoint,
            then: on_match,
            els,
        })
    }
}
