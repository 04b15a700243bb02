//! Steering match: the first rule over all steer blocks, in model order,
//! whose protocol and peers match the packet as sent.

use super::{proto_matches, Interp, Packet, SteerHit};

impl Interp<'_> {
    pub fn first_steer(&self, p: &Packet) -> Option<SteerHit> {
        for (steer, s) in self.model.steers.iter().enumerate() {
            for (index, r) in s.rules.iter().enumerate() {
                if proto_matches(&r.proto, p, self.endpoint_of(p.dst))
                    && self.peer_matches(&r.from, p.src)
                    && self.peer_matches(&r.to, p.dst)
                {
                    return Some(SteerHit {
                        steer,
                        index,
                        action: r.action.clone(),
                    });
                }
            }
        }
        None
    }
}
