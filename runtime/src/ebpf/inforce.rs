//! What the kernel holds for an instance, read back: per interface, the
//! program its pinned link runs, whether the interface's TCX ingress
//! really lists that program, and which pinned generation it belongs to.
//!
//! Why: a record or a pin is our claim; the kernel's link and program ids
//! are the fact. `apply` reports success only after this read-back shows
//! the new generation on every interface it promised; `status` and crash
//! recovery ([`super::record`]) say what *is* in force from it.

use std::path::Path;

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{ProgramInfo, SchedClassifier, TcAttachType};
use serde::Serialize;

use super::pins;

/// One interface, as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    pub iface: String,
    /// The id of the program our pinned link runs (`None`: no pinned link).
    pub program_id: Option<u32>,
    /// The pinned generation that program belongs to (`None`: none of
    /// ours, or no link).
    pub generation: Option<u64>,
    /// The interface's TCX ingress lists the program (kernel query, not
    /// our pin).
    pub on_interface: bool,
}

/// The id of the program pinned at `path`.
pub fn program_id(path: &Path) -> Option<u32> {
    ProgramInfo::from_pin(path).ok().map(|i| i.id())
}

/// The id of the entry program of generation `g` under `base`.
pub fn entry_id(base: &Path, g: u64, entry: &str) -> Option<u32> {
    program_id(&pins::gen_dir(base, g).join(format!("prog_{entry}")))
}

/// The program a pinned link runs.
pub fn link_program(path: &Path) -> Option<u32> {
    let link = PinnedLink::from_pin(path).ok()?;
    let fd = FdLink::from(link);
    fd.info().ok().map(|i| i.program_id())
}

/// Program ids on `iface`'s TCX ingress (must run in its namespace);
/// `None` when the kernel cannot be asked (no such interface, …).
fn query_tcx(iface: &str) -> Option<Vec<u32>> {
    SchedClassifier::query_tcx(iface, TcAttachType::Ingress)
        .ok()
        .map(|(_, progs)| progs.iter().map(ProgramInfo::id).collect())
}

fn tcx_programs(iface: &str) -> Vec<u32> {
    query_tcx(iface).unwrap_or_default()
}

/// Whether the pinned link at `path` may be attached to `iface`: `false`
/// only when the kernel answers and the interface's TCX ingress does not
/// list the link's program (a defunct link).
pub fn link_on_interface(path: &Path, iface: &str) -> bool {
    match (link_program(path), query_tcx(iface)) {
        (Some(p), Some(progs)) => progs.contains(&p),
        _ => true,
    }
}

/// Reads back every interface of an instance (in its namespace).
pub fn read(base: &Path, primary: &str, ifaces: &[String], entry: &str) -> Vec<Attachment> {
    let gens: Vec<(u64, u32)> = pins::generations(base)
        .into_iter()
        .filter_map(|g| entry_id(base, g, entry).map(|id| (g, id)))
        .collect();
    ifaces
        .iter()
        .map(|i| {
            let program_id = link_program(&pins::link_path(base, primary, i));
            Attachment {
                iface: i.clone(),
                program_id,
                generation: program_id
                    .and_then(|p| gens.iter().find(|(_, id)| *id == p).map(|(g, _)| *g)),
                on_interface: program_id.is_some_and(|p| tcx_programs(i).contains(&p)),
            }
        })
        .collect()
}

/// Whether every interface runs generation `g` (link and TCX agree).
pub fn all_run(att: &[Attachment], g: u64) -> bool {
    att.iter()
        .all(|a| a.generation == Some(g) && a.on_interface)
}

/// One line per interface that does not run `g`, for errors and status.
pub fn differences(att: &[Attachment], g: u64) -> Vec<String> {
    att.iter()
        .filter(|a| a.generation != Some(g) || !a.on_interface)
        .map(|a| match (a.program_id, a.generation, a.on_interface) {
            (None, _, _) => format!("{}: no pinned link (nothing of ours attached)", a.iface),
            (Some(p), _, false) => format!(
                "{}: the pinned link's program {p} is not on the interface's TCX ingress",
                a.iface
            ),
            (Some(p), Some(h), true) => {
                format!("{}: runs generation {h} (program {p})", a.iface)
            }
            (Some(p), None, true) => format!(
                "{}: runs program {p}, which belongs to no pinned generation",
                a.iface
            ),
        })
        .collect()
}
