//! The weir compiler: checker, reference interpreter, decision graph and
//! code generators. Pure: no IO beyond the `SourceLoader` trait, no
//! syscalls — only the runtime crate touches the kernel.

pub mod backends;
pub mod bundle;
pub mod check;
pub mod churn;
pub mod cidrs;
pub mod contract;
pub mod diagnostics;
pub mod diff;
pub mod driver;
pub mod ebpf;
pub mod endpoint_index;
pub mod flowhash;
pub mod fmt;
pub mod gen;
pub mod graph;
pub mod interp;
pub mod inventory;
pub mod iptables;
pub mod k8s;
pub mod labels;
pub mod maglev;
pub mod model;
pub mod named_ports;
pub mod namespaces;
pub mod nodes;
pub mod provenance;
pub mod proxy_addr;
pub mod source;
pub mod synth;
pub mod threads;
