//! The sizes table: program, map and rule sizes from the capacity report
//! and the eBPF back end's manifest.

use crate::case::Case;
use crate::report::{Report, Table};
use crate::stats::thousands;
use crate::tables::ebpf::EbpfResult;

pub(crate) fn table(
    rep: &mut Report,
    rules: &[Case],
    svcs: &[Case],
    headline: &Case,
    er: &[EbpfResult],
    es: &[EbpfResult],
) {
    let mut t = Table::new(
        "Program, map and rule sizes (capacity report)",
        &[
            "model",
            "graph nodes (tests / tables)",
            "max depth egress / ingress",
            "atoms / classes",
            "class-map entries",
            "table entries",
            "frontends / backends / Maglev slots",
            "eBPF programs (insns)",
            "eBPF map entries filled",
        ],
    );
    t.note("From `graph::cost::capacity` and the eBPF back end's manifest (programs are the entry program plus tail-called stages). Label sets: the models have at most 300 distinct policy-relevant label sets (deployments); the `instance` label that service selectors use never becomes an atom.".to_string());
    // A case without an eBPF result (not run, or the headline) reads its
    // in-process figures.
    let ebs = (0..rules.len())
        .map(|i| er.get(i))
        .chain((0..svcs.len()).map(|i| es.get(i)))
        .chain([None]);
    for (c, e) in rules
        .iter()
        .chain(svcs)
        .chain(std::iter::once(headline))
        .zip(ebs)
    {
        let cap = &c.cap;
        let depth = |name: &str| {
            cap.entries
                .iter()
                .find(|x| x.entry == name)
                .map_or("–".into(), |x| x.max_depth.to_string())
        };
        let (progs, filled) = match e {
            Some(Ok((w, _))) => (
                format!("{} ({})", w.programs, thousands(w.insns)),
                thousands(w.maps.iter().map(|m| m.2 as usize).sum()),
            ),
            _ => match c.inproc.ebpf_size {
                Some((p, i, f)) => (format!("{p} ({})", thousands(i)), thousands(f as usize)),
                None => ("refused".into(), "–".into()),
            },
        };
        t.row(vec![
            c.label.clone(),
            format!(
                "{} ({} / {})",
                thousands(cap.nodes),
                thousands(cap.tests),
                thousands(cap.tables)
            ),
            format!("{} / {}", depth("egress"), depth("ingress")),
            format!("{} / {}", thousands(cap.atoms), thousands(cap.classes)),
            thousands(cap.class_map_entries),
            thousands(cap.table_entries_total),
            format!(
                "{} / {} / {}",
                thousands(cap.frontends),
                thousands(cap.backends),
                thousands(cap.maglev_slots)
            ),
            progs,
            filled,
        ]);
    }
    rep.tables.push(t);
}
