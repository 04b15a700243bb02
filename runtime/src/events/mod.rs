//! Verdict events on a running node: one [`EventSource`] per back end,
//! each decoding what its data path reports into the one
//! [`VerdictEvent`](weir_compiler::contract::event::VerdictEvent) of the
//! contract (`compiler/src/contract/event.rs`), which `weir monitor`
//! prints.
//!
//! - [`ringbuf`]: the eBPF back end's `weir_events` ring buffer (a
//!   reader of the kernel's ring-buffer ABI on raw `mmap`/`epoll`, no
//!   libbpf), and the per-CPU drop counters of its rate limit.
//! - [`nflog`]: the iptables back end's NFLOG group; [`ip`] reads the
//!   headers of the packets it logs.

pub mod ip;
pub mod nflog;
pub mod ringbuf;

/// A stream of verdict events from one back end on this node.
pub trait EventSource {
    /// Waits up to `timeout` for the next event; `Ok(None)` on timeout.
    fn next_event(
        &mut self,
        timeout: std::time::Duration,
    ) -> std::io::Result<Option<weir_compiler::contract::event::VerdictEvent>>;
    /// Events the data path could not report (rate limit, full buffer,
    /// undecodable records), when the source can know it.
    fn dropped(&self) -> std::io::Result<u64>;
}
