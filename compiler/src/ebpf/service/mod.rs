//! Services in eBPF: load balancing in the TC data path and at
//! `connect()`.
//!
//! # Maps ([`layout`])
//!
//! | map | type | key | value |
//! |---|---|---|---|
//! | `weir_lb_fe` | hash | frontend `{addr[16], port, proto, family}` (20) | `{service, set, count, table, flags, affinity_secs, no_backends_prov, 0}` (32) |
//! | `weir_lb_slot` | hash | `{set, slot}` (8) | backend `{addr[16], port, family, pad, id}` (24) |
//! | `weir_lb_be` | hash | backend id (4) | backend (24) |
//! | `weir_lb_mgl` | array | table index | `[u32; 16381]` slot numbers (65,524 bytes) |
//! | `weir_lb_aff` | LRU hash | `{client[16], service, family}` (24) | `{backend id, 0, last use ns}` (16) |
//! | `weir_lb_ct` | LRU hash | original tuple client → frontend (40) | backend, service, ts (40); only in the standalone service object ([`object`]): the policy pipeline keeps a translated flow's backend in its forward entry in `weir_ct` (`layout::ct::FORWARD`) |
//! | `weir_lb_rev` | LRU hash | reply tuple backend → client (40) | frontend `{addr[16], port, family, service}` (24); only in the standalone service object ([`object`]): the policy pipeline keeps a translated flow's frontend in its `weir_ct` entry (`layout::ct`) |
//! | `weir_lb_sk` | LRU hash | `{socket cookie, backend addr[16], port, family}` (32) | frontend `{addr[16], port}` (20) |
//! | `weir_lb_cnt` | per-CPU array | [`layout::cnt`] index | u64 |
//! | `weir_lb_scnt` | per-CPU array | service index | u64 new flows (TC) + connects |
//! | `weir_lb_bcnt` | per-CPU array | backend id | u64 new flows (TC) + connects |
//!
//! A *backend set* is the usable backends (ready, weight > 0, sorted — the
//! interpreter's candidates) of one service for one address family.
//! Random sets expand weights into slots (backend `i` appears
//! `weight_i / gcd` times; a uniform draw over the slots is the weighted
//! choice); Maglev sets have one slot per backend and a 16,381-entry table
//! ([`crate::maglev::table`], the interpreter's) of slot numbers.
//! [`fill::LbState`] computes every entry from the
//! [`ServiceTable`](crate::graph::ir::ServiceTable) and the writes for
//! backend changes at run time; its module docs describe the atomic
//! generation swap (generation-indexed table array rather than
//! map-in-map).
//!
//! # Which path
//!
//! - **TC** ([`emit`]): traffic that crosses the hook (forwarded or from
//!   other hosts). New flow → choice (affinity, then Maglev on
//!   [`crate::flowhash::flow_hash`] of the real 5-tuple — the same choice
//!   as the interpreter — or weighted random) → the translation (the
//!   flow keeps its backend; the policy pipeline: a forward entry in
//!   `weir_ct`; the standalone program: `weir_lb_ct`) and the reply's reverse translation (the policy
//!   pipeline: in the flow's conntrack entry; the standalone program:
//!   `weir_lb_rev`, keyed by the reply tuple) → DNAT with
//!   checksum fix-up (IPv4: header and L4; IPv6: the L4 checksum's
//!   pseudo-header addresses; SCTP: none, [`sctp`]). Replies are
//!   un-translated by [`emit::emit_reverse_nat`] (standalone) or
//!   [`emit::emit_reverse_nat_from`] (pipeline). Source IP is preserved (no SNAT). TCP,
//!   UDP and SCTP of both families take the same path: every map above is
//!   keyed by 16-byte addresses and a family byte, and the flow hash
//!   folds all four address words (an IPv4 address is its first).
//! - **Connect time** ([`sock`]): processes in the cgroup given at
//!   `weir apply` (`connect4`/`6`, `sendmsg4`/`6`, `recvmsg4`/`6`); one
//!   rewrite per `connect()` / unconnected `sendmsg()`,
//!   no per-packet work. Maglev hashes `(bound source, frontend, sport 0,
//!   port, proto)` (see [`sock::connect_flow_hash`]); an IPv6 socket's
//!   IPv4-mapped destination is balanced like the IPv4 frontend
//!   ([`mapped`]). Packets of such
//!   sockets already carry the backend address, so a TC hook on the same
//!   host sees them as plain backend traffic.
//!
//! # Known gaps
//!
//! - **Reject**: in the policy pipeline a TCP segment to a frontend
//!   without backends is answered with a reset (`codegen::emit`,
//!   `tcp_reset`, and `codegen::reject6` for IPv6), a UDP datagram with an
//!   ICMP / ICMPv6 port unreachable (`codegen::reject`, `reject6`); the
//!   standalone TC program drops; `connect()` fails with `EPERM`.
//! - **SCTP** is translated like TCP and UDP ([`sctp`]: its CRC32c has no
//!   pseudo-header, so an address change needs no checksum update); a
//!   changed port updates the CRC32c ([`sctp_crc`], in programs that can
//!   change one). The connect-time programs leave SCTP sockets alone.
//! - ICMP errors about translated flows are rewritten by one
//!   implementation ([`icmp_error`]) that two programs call: the policy
//!   pipeline (`codegen::emit::related`, finding the flow in `weir_ct`)
//!   in both directions (an error about a reply is rewritten on its way
//!   to the backend), and the standalone TC program (finding it in
//!   `weir_lb_rev`) on the way back to the client only, IPv4 only as its
//!   parse.
//! - The affinity timeout counts from the last new flow that used it.

mod direct;
pub mod emit;
pub mod fill;
pub mod icmp_error;
pub mod mapped;
pub mod object;
pub mod sctp;
pub mod sctp_crc;
pub mod sock;

use crate::ebpf::layout::service as layout;

pub use emit::{
    emit_established_dnat, emit_recorded_dnat, emit_reverse_nat, emit_rewrite, emit_service_stage,
    CtxLayout, End, RejectCount, StageEnv,
};
pub use fill::{Be, LbState, MapOp, MapsModel, Options};
pub use layout::Capacity;

#[cfg(test)]
pub(crate) mod tests;
