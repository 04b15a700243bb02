//! The weir runtime: the only crate that touches the kernel.
//!
//! The compiler is pure: it turns policy source into a *bundle* directory
//! (`manifest.json` plus back-end output). This crate loads a bundle onto a
//! Linux node — for the iptables back end by running `ipset restore` and
//! `iptables-restore` transactions ([`iptables`]) — keeps track of what it
//! applied, updates endpoint sets at run time, and removes everything it made
//! on detach. [`events`] reads the verdict events the data path reports.
//! [`netns`] is the network-namespace test harness shared by the back
//! ends' kernel tests.

pub mod bundle;
pub mod counters;
pub mod ebpf;
pub mod endpoints;
pub mod error;
pub mod events;
pub mod frames;
pub mod iptables;
pub mod kernel_test;
pub mod netns;
mod nfnetlink;
pub mod proxy_local;
pub mod record;
pub mod statefs;

pub use bundle::Bundle;
pub use error::Error;
