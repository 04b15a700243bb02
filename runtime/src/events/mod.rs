//! Verdict events on this node: the back ends' event streams, each
//! decoded into the one record `weir monitor` prints
//! ([`weir_compiler::contract::event::VerdictEvent`]).
//!
//! [`nflog`] reads the iptables back end's NFLOG group; [`ip`] reads the
//! headers of the packets it logs.

pub mod ip;
pub mod nflog;

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
