//! The report's tables, one module per group of figures (`--only`
//! names them): each measures the cases it is given through the
//! measuring modules beside it (`crate::ebpf`, `crate::iptables`,
//! `crate::compile`) and pushes its tables, targets and problems.

pub(crate) mod compile;
pub(crate) mod compile_targets;
pub(crate) mod driven;
pub(crate) mod ebpf;
pub(crate) mod ipt_apply;
pub(crate) mod ipt_small;
pub(crate) mod iptables;
pub(crate) mod per_pod;
pub(crate) mod sizes;
pub(crate) mod updates;
