//! The in-kernel conntrack collector as the eBPF manifest declares it
//! (fields in sorted key order, as the manifest section's are)
//! (`backends.ebpf.collector`; `crate::ebpf::codegen::ct_gc` builds it).
//!
//! Why declared: the collector's program is never attached and its
//! callbacks are static functions in `.text`, so `programs` (what the
//! runtime loads, pins and puts in the prog array) does not list them.
//! Until session 13 the runtime found them by their layout names alone;
//! now the manifest says which program arms the collector, which
//! callbacks it installs and which map holds its state, and the runtime
//! checks the object against it before loading (fail closed on a
//! mismatch). A manifest without the field reads as `None`: no
//! collector, and the runtime refuses an object that has the collector's
//! map without it (bundle format 6 introduced the field; older bundles
//! are refused by their version first).

use serde::{Deserialize, Serialize};

/// One callback of the collector: a static function in `.text`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectorCallback {
    /// Instruction slots.
    pub insns: usize,
    pub name: String,
    /// What calls it: `timer` (`bpf_timer_set_callback`, softirq),
    /// `work` (`bpf_wq_set_callback_impl`, a kernel worker), `for-each`
    /// (`bpf_for_each_map_elem`'s visit).
    pub role: String,
}

/// The collector of a non-LRU `weir_ct`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collector {
    pub callbacks: Vec<CollectorCallback>,
    pub insns: usize,
    /// The array holding its timer, configuration and figures (pinned
    /// beside `weir_ct`).
    pub map: String,
    /// The arming program (test-run once per apply, never attached; a
    /// sleepable `syscall` program the runtime loads itself).
    pub program: String,
    pub section: String,
}

#[cfg(test)]
mod tests {
    use crate::ebpf::layout::gc;

    #[test]
    fn ebpf_collector_declares_its_program_callbacks_and_map() {
        let c = crate::ebpf::codegen::ct_gc::collector().unwrap();
        let d = c.declared();
        assert_eq!((d.program.as_str(), d.map.as_str()), (gc::PROGRAM, gc::MAP));
        assert_eq!(d.section, gc::SECTION);
        assert_eq!(d.insns, c.program.code.len());
        let cbs: Vec<(&str, &str)> = d
            .callbacks
            .iter()
            .map(|b| (b.name.as_str(), b.role.as_str()))
            .collect();
        assert_eq!(
            cbs,
            [
                (gc::TIMER_CB, "timer"),
                (gc::WORK_CB, "work"),
                (gc::SWEEP_CB, "for-each"),
                (gc::SWEEP_CB4, "for-each")
            ]
        );
        let names: Vec<&str> = cbs.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, gc::CALLBACKS);
        // A key a later weir adds is ignored by this reader.
        let mut v = serde_json::to_value(&d).unwrap();
        v["extra"] = serde_json::json!(1);
        let back: super::Collector = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
    }
}
