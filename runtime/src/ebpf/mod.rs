//! The eBPF runtime (aya 0.14): load a bundle's `weir.o`, fill its maps
//! from the manifest, attach the entry program to TC, switch generations
//! atomically, detach, report status and per-rule counters.
//!
//! - [`load`]: one generation — object, verifier, maps, prog array.
//! - [`attach`]: `apply` / `detach` / `status` / `stats` on one or more
//!   interfaces (one generation, one pinned link per interface), with
//!   everything pinned under `/sys/fs/bpf/weir/<instance>/`.
//! - [`pins`]: which bpffs, private pin directories, pinned links.
//! - [`record`]: the instance's record and lock; crash recovery.
//! - [`inforce`]: what the kernel runs on each interface, read back.
//! - [`txn`]: all-or-nothing writes to a running generation's maps.
//! - [`map_count`]: a hash map's entry count in a few batch calls.
//! - [`test_run`]: measuring runs (BPF_PROG_TEST_RUN) retried on `EINTR`.
//! - `shared_ct`: the shared conntrack map kept at the size the applied
//!   bundle declares (resized with its entries carried over).

pub mod attach;
pub mod cgroup;
pub mod collect;
pub mod ct_tables;
pub mod gc;
pub mod gc_prog;
pub mod inforce;
pub mod kfunc;
pub mod load;
pub mod map_count;
pub mod migrate;
pub mod pins;
pub mod record;
pub mod service;
mod shared_ct;
pub mod test_run;
pub mod txn;

pub use attach::{
    apply, apply_with, audit_stats, detach, service_stats, stats, status, Applied, Instance,
    RuleCount, ServiceCount, Status,
};
pub use load::{counters, load, Generation};

use std::fmt;

/// eBPF runtime errors, each naming what to do about it.
#[derive(Debug)]
pub enum EbpfError {
    /// Not root / no CAP_BPF + CAP_NET_ADMIN.
    NotPrivileged { detail: String },
    /// `--iface` names no interface.
    NoInterface { iface: String },
    /// The verifier rejected a program.
    Verifier {
        program: String,
        error: String,
        log_tail: String,
    },
    /// The bundle has no (or a malformed) eBPF part.
    Bundle(String),
    /// Nothing is applied for this instance.
    NotApplied { instance: String },
    /// A step through aya failed.
    Aya { step: String, message: String },
    Io {
        context: String,
        source: std::io::Error,
    },
    /// A redirect proxy of the bundle is at an address this host does
    /// not hold (E0570, [`crate::proxy_local`]).
    ProxyNotOnHost(crate::proxy_local::NotOnHost),
}

impl From<crate::proxy_local::CheckError> for EbpfError {
    fn from(e: crate::proxy_local::CheckError) -> EbpfError {
        match e {
            crate::proxy_local::CheckError::NotOnHost(n) => EbpfError::ProxyNotOnHost(n),
            crate::proxy_local::CheckError::Io { context, source } => {
                EbpfError::Io { context, source }
            }
        }
    }
}

impl fmt::Display for EbpfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EbpfError::NotPrivileged { detail } => write!(
                f,
                "not privileged: loading eBPF programs needs root (CAP_BPF and CAP_NET_ADMIN): {detail}"
            ),
            EbpfError::NoInterface { iface } => {
                write!(f, "interface `{iface}` does not exist (see `ip link`)")
            }
            EbpfError::Verifier {
                program,
                error,
                log_tail,
            } => write!(
                f,
                "the kernel verifier rejected program `{program}` ({error}); last lines of its log:\n{log_tail}"
            ),
            EbpfError::Bundle(m) => write!(f, "bundle: {m}"),
            EbpfError::NotApplied { instance } => {
                write!(f, "nothing is applied for instance `{instance}`")
            }
            EbpfError::Aya { step, message } => write!(f, "{step} failed: {message}"),
            EbpfError::Io { context, source } => write!(f, "{context}: {source}"),
            EbpfError::ProxyNotOnHost(n) => n.fmt(f),
        }
    }
}

impl std::error::Error for EbpfError {}
