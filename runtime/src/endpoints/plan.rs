//! What an inventory changes against the record: the text diff, the
//! source-declared endpoints kept, the class plan and the selector
//! services affected — computed by [`weir_compiler::churn`], before any
//! back end writes anything.

use std::path::Path;
use std::time::{Duration, Instant};

use weir_compiler::churn::{self, entries, AddrChange, ClassView, EndpointRec, SelectorService};
use weir_compiler::ebpf::service::Be;

use super::{EndpointsError, Report, ServiceUpdate};
use crate::record::{bad_record, Record};

/// What an inventory changes against a record.
pub(super) struct Planned {
    pub(super) diff: churn::TextDiff,
    pub(super) changes: Vec<AddrChange>,
    /// Parsed when something changed.
    pub(super) view: Option<ClassView>,
    /// The selector services whose backends may differ: their selector
    /// matches a changed endpoint (either version), or every one when
    /// the whole inventory was compared.
    pub(super) affected: Vec<SelectorService>,
    /// The update in endpoint names (`--dry-run`).
    pub(super) names: churn::NamePlan,
    /// The endpoints compared (old and new versions of the changed ones,
    /// or both whole inventories): what the `self` relation's changes are
    /// computed from ([`churn::self_relation`]).
    pub(super) compared: (Vec<EndpointRec>, Vec<EndpointRec>),
}

pub(super) fn decode_all(entries_: &[u8]) -> Result<Vec<EndpointRec>, EndpointsError> {
    entries::decode_all(entries_).map_err(|e| bad_record(e).into())
}

pub(super) fn plan(rec: &Record, dir: &Path, text: &str) -> Result<Planned, EndpointsError> {
    let mut diff =
        churn::diff_text(&rec.endpoints, rec.header.unique, text).map_err(|e| match e {
            churn::DiffError::Inventory => EndpointsError::Inventory,
            churn::DiffError::Record(m) => bad_record(m).into(),
        })?;
    keep_declared(&mut diff, &rec.header.declared)?;
    if let Some((o, n)) = &diff.changed {
        if o.is_empty() && n.is_empty() {
            return Ok(Planned {
                diff,
                changes: Vec::new(),
                view: None,
                affected: Vec::new(),
                names: churn::NamePlan::default(),
                compared: Default::default(),
            });
        }
    }
    let (view, table) = rec.statics(dir)?;
    let (p, names, compared) = match (&diff.changed, &diff.full) {
        (Some((o, n)), _) => (
            churn::plan(&view, o, n),
            churn::name_plan(o, n),
            (o.clone(), n.clone()),
        ),
        (None, Some(all)) => {
            let mut old = decode_all(&rec.endpoints)?;
            let (o, _, _) = churn::filter_declared(&rec.header.declared, old, Vec::new());
            old = o;
            old.extend(rec.header.declared.iter().cloned());
            let (p, names) = (churn::plan(&view, &old, all), churn::name_plan(&old, all));
            (p, names, (old, all.clone()))
        }
        (None, None) => unreachable!("diff_text gives the changes or the inventory"),
    };
    if !p.refused.is_empty() {
        return Err(EndpointsError::Refused(p.refused));
    }
    let affected = match &diff.changed {
        Some((o, n)) => {
            let both: Vec<EndpointRec> = o.iter().chain(n).cloned().collect();
            churn::service_table::affected(table, &both)
        }
        None => churn::service_table::decode_all(table),
    }
    .map_err(bad_record)?;
    Ok(Planned {
        diff,
        changes: p.changes,
        view: Some(view),
        affected,
        names,
        compared,
    })
}

/// Takes the source-declared endpoints out of `diff` (see
/// [`churn::filter_declared`]): the changed endpoints lose them, a whole
/// inventory gets them back as they were declared. Refuses an inventory
/// that changes or shadows one.
pub(super) fn keep_declared(
    diff: &mut churn::TextDiff,
    declared: &[EndpointRec],
) -> Result<(), EndpointsError> {
    if declared.is_empty() {
        return Ok(());
    }
    if let Some((o, n)) = diff.changed.take() {
        let (o, n, refused) = churn::filter_declared(declared, o, n);
        if !refused.is_empty() {
            return Err(EndpointsError::Refused(refused));
        }
        diff.changed = Some((o, n));
    }
    if let Some(all) = diff.full.take() {
        let (_, mut n, refused) = churn::filter_declared(declared, Vec::new(), all);
        if !refused.is_empty() {
            return Err(EndpointsError::Refused(refused));
        }
        n.extend(declared.iter().cloned());
        diff.full = Some(n);
    }
    Ok(())
}

/// The backends `s` has for its group `g` after the update: from those it
/// had (`have`) and the changed endpoints, or over the whole inventory
/// when that was parsed (through a label index for many services).
pub(super) fn backends_after<'a>(
    diff: &'a churn::TextDiff,
    s: &SelectorService,
    g: &churn::GroupBackends,
    have: &[Be],
    index: &mut Option<weir_compiler::endpoint_index::EndpointIndex<'a>>,
    many: bool,
) -> Vec<Be> {
    match (&diff.changed, &diff.full) {
        (Some((o, n)), _) => churn::backends_delta(s, g, have, o, n),
        (None, Some(all)) => churn::backends_auto(s, g, all, index, many),
        (None, None) => unreachable!("diff_text gives the changes or the inventory"),
    }
}

/// Does some set atom name exactly the host prefix of `addr` (then the
/// class map has a host entry of its own, which a removal restores)?
pub(super) fn set_host_prefix(view: &ClassView, addr: std::net::IpAddr) -> bool {
    let host = weir_compiler::model::Cidr::host(addr);
    view.atoms.iter().any(|a| match a {
        weir_compiler::graph::classes::Atom::Set(s) => {
            s.include.contains(&host) || s.exclude.contains(&host)
        }
        _ => false,
    })
}

/// Services affected by more than this are computed through a label
/// index of the inventory instead of one scan each.
pub(super) const SCAN_LIMIT: usize = 8;

/// The report of a `--dry-run`: nothing was written.
pub(super) fn dry_report(
    generation: u64,
    planned: Planned,
    needs_recompile: Vec<ServiceUpdate>,
    writes: usize,
    t0: Instant,
) -> Report {
    Report {
        generation,
        parsed: planned.diff.parsed,
        changes: planned.changes,
        services: Vec::new(),
        needs_recompile,
        writes,
        apply_time: Duration::ZERO,
        total_time: t0.elapsed(),
        dry_run: Some(planned.names),
    }
}
