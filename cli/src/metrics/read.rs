//! One scrape of a back end: the counters `weir stats` reads (the same
//! runtime calls), plus the manifest recorded at apply for the labels and
//! the bundle's identity. Each source is read on its own, so one failing
//! (say, the service maps of an older generation) leaves the others'
//! numbers and is reported as a scrape error, never as zeros.

use std::collections::BTreeMap;
use std::path::Path;

use weir_runtime::ebpf::{self, Instance};
use weir_runtime::iptables::Iptables;

use super::{Bundle, Scrape};
use crate::target::{Backend, Target};

/// The back end a scrape reads.
pub enum Source {
    Ebpf(Instance),
    /// The runtime and the instance label (`weir stats` names it so).
    Iptables(Iptables, String),
}

impl Source {
    /// The back end `weir stats` reads for these flags: eBPF with
    /// `--iface` (or `--backend ebpf`), iptables otherwise.
    pub fn of(target: &Target) -> Result<Source, i32> {
        if target.backend == Backend::Iptables && target.iface.is_empty() {
            let label = weir_runtime::statefs::netns_label(target.netns.as_deref());
            return Ok(Source::Iptables(target.runtime(), label));
        }
        crate::ebpf_cmd::instance(target).map(Source::Ebpf)
    }

    pub fn read(&self) -> Scrape {
        match self {
            Source::Ebpf(inst) => read_ebpf(inst),
            Source::Iptables(rt, label) => read_iptables(rt, label),
        }
    }
}

fn manifest(path: &Path, generation: u64) -> Result<Bundle, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let m =
        weir_compiler::contract::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Bundle {
        generation,
        source_hash: m.source_hash,
        format_version: m.format_version,
        provenance: m.provenance,
    })
}

fn keep<T, E: std::fmt::Display>(
    errors: &mut BTreeMap<&'static str, String>,
    source: &'static str,
    r: Result<T, E>,
) -> Option<T> {
    r.map_err(|e| errors.insert(source, e.to_string())).ok()
}

fn read_ebpf(inst: &Instance) -> Scrape {
    let mut errors = BTreeMap::new();
    let bundle = ebpf::record::read_state(inst)
        .map_err(|e| e.to_string())
        .and_then(|st| {
            manifest(
                &inst.state_dir().join(weir_compiler::bundle::MANIFEST),
                st.generation,
            )
        });
    let bundle = keep(&mut errors, "manifest", bundle);
    let rules = keep(&mut errors, "rules", ebpf::stats(inst));
    let audit = keep(&mut errors, "audit", ebpf::audit_stats(inst));
    let services = keep(&mut errors, "services", ebpf::service_stats(inst));
    Scrape {
        dataplane: "ebpf",
        attachment: inst.name(),
        bundle,
        rules,
        audit,
        services,
        sources: super::SOURCES,
        errors,
    }
}

fn read_iptables(rt: &Iptables, label: &str) -> Scrape {
    let mut errors = BTreeMap::new();
    let bundle = match rt.read_state() {
        Ok(Some(st)) => manifest(
            &Path::new(&st.bundle_dir).join(weir_compiler::bundle::MANIFEST),
            st.generation.into(),
        ),
        Ok(None) => Err("nothing is applied here".to_string()),
        Err(e) => Err(e.to_string()),
    };
    let bundle = keep(&mut errors, "manifest", bundle);
    let (rules, audit) = match keep(&mut errors, "rules", rt.stats()) {
        Some(s) => (Some(s.rules), Some(s.audit)),
        None => {
            errors.insert("audit", "read with the rule counters".into());
            (None, None)
        }
    };
    Scrape {
        dataplane: "iptables",
        attachment: label.to_string(),
        bundle,
        rules,
        audit,
        // The iptables back end keeps no per-service or per-backend flow
        // counter (docs/metrics.md).
        services: None,
        sources: super::IPTABLES_SOURCES,
        errors,
    }
}
