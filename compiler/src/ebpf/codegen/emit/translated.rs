//! Whether the program translates at all: only a program with a TCP,
//! UDP or SCTP frontend (either family) DNATs, so only it emits the
//! forward entry's DNAT (`forward.rs`); any other treats a forward entry
//! an earlier generation left in the shared `weir_ct` as no entry.

use super::*;

/// Whether some frontend of the graph is one the TC path translates
/// (TCP / UDP / SCTP, either family).
pub(super) fn translates(g: &Graph) -> bool {
    g.services
        .frontends
        .iter()
        .any(|f| matches!(proto_number(f.frontend.proto), 6 | 17 | 132))
}
