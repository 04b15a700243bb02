//! `weir endpoints` on the iptables back end: class changes become one
//! batch of ipset `del`/`add` lines, built beside the live sets and
//! swapped in; a selector service's backend changes rewrite its
//! frontends' nat chains in place (`iptables_services.rs`), or are
//! reported as needing a recompile, with the reason, when that cannot be
//! done.

use std::path::Path;
use std::time::Instant;

use weir_compiler::churn::{self, AddrChange, EndpointRec};
use weir_compiler::contract::endpoints_state::{self as state, BundleFiles, Header, Stale};

use super::plan::{backends_after, dry_report, plan, Planned, SCAN_LIMIT};
use super::{write_failed, EndpointsError, Report};
use crate::iptables::service_chains::BackendChange;
use crate::record::{bad_record, read_legacy, stale_update, Bytes, Record};
use crate::statefs::file_identity;

/// Applies `inventory` to the iptables generation in force (see the
/// module docs). `bundle` must be the applied bundle.
pub fn iptables(
    rt: &crate::iptables::Iptables,
    bundle: &crate::Bundle,
    inventory: &[EndpointRec],
) -> Result<Report, EndpointsError> {
    iptables_text(rt, bundle, &churn::inventory_text(inventory))
}

/// [`iptables`] given the inventory file's text: only the endpoints
/// whose text changed are parsed.
pub fn iptables_text(
    rt: &crate::iptables::Iptables,
    bundle: &crate::Bundle,
    inventory: &str,
) -> Result<Report, EndpointsError> {
    iptables_update(rt, Given::Read(bundle), inventory, false)
}

/// [`iptables_text`] given the bundle directory (what `weir endpoints`
/// runs): when `dir`'s files are the ones recorded for the generation in
/// force (same device, inode, size, modification and change time), the
/// bundle is neither read nor hashed; otherwise it is read
/// ([`crate::Bundle::read`]) and its content hash compared with the
/// applied one, as [`iptables_text`] does.
pub fn iptables_dir(
    rt: &crate::iptables::Iptables,
    dir: &Path,
    inventory: &str,
) -> Result<Report, EndpointsError> {
    iptables_dir_mode(rt, dir, inventory, false)
}

/// [`iptables_dir`] without writing anything: the report's `dry_run`
/// holds the update in endpoint names.
pub fn iptables_dry_run(
    rt: &crate::iptables::Iptables,
    dir: &Path,
    inventory: &str,
) -> Result<Report, EndpointsError> {
    iptables_dir_mode(rt, dir, inventory, true)
}

fn iptables_dir_mode(
    rt: &crate::iptables::Iptables,
    dir: &Path,
    inventory: &str,
    dry_run: bool,
) -> Result<Report, EndpointsError> {
    let ids = crate::bundle::identities(dir);
    if ids[0].1.is_none() {
        // No manifest: the reader's error.
        let b = crate::Bundle::read(dir)?;
        return iptables_update(rt, Given::Read(&b), inventory, dry_run);
    }
    iptables_update(rt, Given::Dir(dir, ids), inventory, dry_run)
}

/// The bundle `weir endpoints` was given.
enum Given<'a> {
    Read(&'a crate::Bundle),
    /// A directory and its files' identities (taken before anything
    /// else).
    Dir(&'a Path, BundleFiles),
}

fn iptables_update(
    rt: &crate::iptables::Iptables,
    given: Given<'_>,
    inventory: &str,
    dry_run: bool,
) -> Result<Report, EndpointsError> {
    use crate::iptables::exec;
    let t0 = Instant::now();
    exec::require_root()?;
    exec::require_program("ipset")?;
    let _lock = rt.lock()?;
    rt.recover()?;
    let state = rt.read_state()?.ok_or_else(|| {
        EndpointsError::NotInForce("nothing is applied (iptables): run `weir apply` first".into())
    })?;
    let generation = u64::from(state.generation);
    let dir = rt.options().state_dir.clone();
    let rec = generation_record(&state, &dir, given)?;
    let planned = plan(&rec, &dir, inventory)?;
    if rec.header.ipv6_class0 {
        refuse_classified_v6(&planned.changes)?;
    }
    // `self` first: the id sets are swapped in before the class sets, so
    // an address that moves to another endpoint leaves its old owner's
    // id before it takes its new class (no window where one endpoint's
    // `self` matches another's address).
    let self_text = self_lines(rt, &state, &rec.header, &planned)?;
    let text = set_lines(
        &planned.changes,
        &rec.header.sets.clone().unwrap_or_default(),
    );
    let (stale, backend_changes) = updated_stale(&rec, &planned)?;
    let mut svc = super::iptables_services::decide(rt, &state, stale, &backend_changes);
    let writes = self_text.lines().count() + text.lines().count();
    if dry_run {
        let needs_recompile = svc.needs_recompile();
        return Ok(dry_report(generation, planned, needs_recompile, writes, t0));
    }

    let t1 = Instant::now();
    swap_in(rt, &state, &self_text)?;
    swap_in(rt, &state, &text)?;
    // Backends after their addresses' classes: a new backend is in its
    // sets before a flow can be sent to it.
    let chain_writes = svc.write(rt, &state);
    let apply_time = t1.elapsed();
    let stale_bytes = (!backend_changes.is_empty()).then(|| state::encode_stale(&svc.stale));
    let needs_recompile = svc.needs_recompile();
    let Planned { diff, changes, .. } = planned;
    let parsed = diff.parsed;
    Record {
        header: Header {
            unique: diff.unique,
            ..rec.header
        },
        statics: rec.statics,
        lb: rec.lb,
        stale: stale_bytes.map_or(rec.stale, Bytes::New),
        endpoints: Bytes::New(diff.entries),
    }
    .write(&dir)
    .map_err(|e| write_failed(&dir, e))?;
    Ok(Report {
        generation,
        parsed,
        changes,
        services: svc.in_place,
        needs_recompile,
        writes: writes + chain_writes,
        apply_time,
        total_time: t0.elapsed(),
        dry_run: None,
    })
}

/// The record of the generation in force (`state`, whose files are in
/// `dir`): the one on disk when it is this generation's and `given` is
/// the bundle it records; otherwise built from the bundle, which must be
/// the one applied.
fn generation_record(
    state: &crate::iptables::State,
    dir: &Path,
    given: Given<'_>,
) -> Result<Record, EndpointsError> {
    let generation = u64::from(state.generation);
    // `state.json` is replaced by every apply (and removed by detach):
    // a record made after another apply is not this generation's, even
    // when the generation number repeats.
    let applied = file_identity(&dir.join("state.json"));
    let recorded = Record::read(dir).filter(|r| {
        r.header.generation == generation
            && r.header.bundle == state.bundle_hash
            && r.header.manifest == applied
    });
    // The bundle's files are the ones recorded for this generation: it
    // is the bundle in force, and the record holds what the update needs.
    let known = match (&given, &recorded) {
        (Given::Dir(_, ids), Some(r)) => {
            r.header.sets.is_some() && r.header.files.as_ref() == Some(ids)
        }
        _ => false,
    };
    if known {
        return Ok(recorded.expect("a record"));
    }
    let read;
    let bundle = match given {
        Given::Read(b) => b,
        Given::Dir(d, _) => {
            read = crate::Bundle::read(d)?;
            &read
        }
    };
    if state.bundle_hash != bundle.content_hash {
        return Err(EndpointsError::NotInForce(format!(
            "{} is not the bundle in force (generation {} was applied from {}); apply it first",
            bundle.dir.display(),
            state.generation,
            state.bundle_dir
        )));
    }
    let mut rec = match recorded {
        Some(r) => r,
        None => Record::from_manifest(
            &bundle.manifest,
            Header::new(generation, state.bundle_hash.clone(), applied.clone()),
            read_legacy(dir, generation, &state.bundle_hash).map(|(e, _)| (e, None)),
            true,
        )
        .map_err(EndpointsError::Bundle)?,
    };
    if bundle.files.is_some() {
        rec.header.files = bundle.files.clone();
    }
    rec.header.sets = Some(crate::iptables::endpoint_record::sets(bundle, state));
    rec.header.ipv6_class0 = crate::iptables::endpoint_record::ipv6_class0(bundle);
    rec.header.self_mark = crate::iptables::endpoint_record::self_mark(bundle);
    Ok(rec)
}

/// The `self` id sets' `del`/`add` lines (`iptables/self_set.rs`): the
/// live members read, the changed endpoints' ids kept or allocated by
/// [`churn::self_relation::iptables_changes`]. Empty when the generation
/// has no id sets (no `self` rule).
fn self_lines(
    rt: &crate::iptables::Iptables,
    state: &crate::iptables::State,
    header: &Header,
    planned: &Planned,
) -> Result<String, EndpointsError> {
    use std::fmt::Write;
    use weir_compiler::iptables::self_set;
    // The generation's mask, as its manifest records it.
    let mark = crate::iptables::endpoint_record::self_mark_of(header)
        .map_err(|e| EndpointsError::Refused(vec![format!("the endpoints record: {e}")]))?;
    let kernel = |base: &str| {
        state
            .sets
            .iter()
            .find(|s| s.name == base)
            .map(|s| s.kernel_name.clone())
    };
    // No IPv6 id set in a generation compiled with no IPv6 address
    // (`ipv6_class0`); an IPv6 endpoint address is refused before this.
    let Some(v4) = kernel(self_set::SET) else {
        return Ok(String::new());
    };
    let v6 = kernel(&format!("{}v6", self_set::SET));
    let (old, new) = &planned.compared;
    if old.is_empty() && new.is_empty() {
        return Ok(String::new());
    }
    let mut live = std::collections::BTreeMap::new();
    for set in std::iter::once(&v4).chain(v6.as_ref()) {
        for m in rt.set_members(set)? {
            if let Some((a, id)) = mark.parse_member(&m) {
                live.insert(a, id);
            }
        }
    }
    let c = churn::self_relation::iptables_changes(&live, old, new, mark.max_id())
        .map_err(|e| EndpointsError::Refused(vec![e]))?;
    // Without an IPv6 id set, an IPv6 address (class 0: no policy side
    // applies to it, so `self` is never tested for it) has no entry.
    let set_of = |a: std::net::IpAddr| if a.is_ipv4() { Some(&v4) } else { v6.as_ref() };
    let mut text = String::new();
    for a in &c.delete {
        if let Some(set) = set_of(*a) {
            let _ = writeln!(text, "del {set} {a}");
        }
    }
    for &(a, id) in &c.add {
        if let Some(set) = set_of(a) {
            let _ = writeln!(text, "add {set} {}", mark.member(a, id));
        }
    }
    Ok(text)
}

/// A generation compiled with no IPv6 address has no IPv6 sets: its
/// IPv6 rules decide every address as class 0. An IPv6 address that
/// would now have another class cannot be placed (treating it as class
/// 0 would judge its packets as another address's), so the update is
/// refused before anything is written.
fn refuse_classified_v6(changes: &[AddrChange]) -> Result<(), EndpointsError> {
    let refused: Vec<String> = changes
        .iter()
        .filter(|c| c.addr.is_ipv6())
        .filter_map(|c| {
            let class = c.new.unwrap_or(c.base);
            (class != 0).then(|| {
                format!(
                    "endpoint {}: IPv6 address {} needs class {class}, but the bundle in force was compiled with no IPv6 address (its ip6tables rules judge every IPv6 address as one that matches no peer); recompile with this inventory and apply",
                    c.endpoint, c.addr
                )
            })
        })
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(EndpointsError::Refused(refused))
    }
}

/// The ipset `del`/`add` lines moving each changed address between the
/// generation's address sets (`sets`: kernel name, family, classes).
fn set_lines(changes: &[AddrChange], sets: &[(String, u8, Vec<u32>)]) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    for c in changes {
        let family = if c.addr.is_ipv4() { 4 } else { 6 };
        for (kernel, f, classes) in sets {
            if *f != family {
                continue;
            }
            let a = c.addr;
            let _ = writeln!(text, "del {kernel} {a}");
            match c.new {
                Some(n) if classes.contains(&n) => {
                    let _ = writeln!(text, "add {kernel} {a}");
                }
                Some(_) if classes.contains(&c.base) => {
                    let _ = writeln!(text, "add {kernel} {a} nomatch");
                }
                None if classes.contains(&c.base) => {
                    let _ = writeln!(text, "add {kernel} {a}");
                }
                _ => {}
            }
        }
    }
    text
}

/// Services: each affected service group's backends over the new
/// inventory (the churn path eBPF uses), and the record's list of
/// services whose backends differ from the compiled ones (earlier
/// updates count too); only those whose selector matches a changed
/// endpoint are compared again. What can be rewritten in place is
/// decided after ([`super::iptables_services`]).
fn updated_stale(
    rec: &Record,
    planned: &Planned,
) -> Result<(Vec<Stale>, Vec<BackendChange>), EndpointsError> {
    let affected = &planned.affected;
    let stale: Vec<Stale> = state::decode_stale(&rec.stale).map_err(bad_record)?;
    if affected.is_empty() {
        return Ok((stale, Vec::new()));
    }
    let ids: std::collections::BTreeSet<usize> = affected.iter().map(|s| s.index).collect();
    let (before, mut kept): (Vec<Stale>, Vec<Stale>) =
        stale.into_iter().partition(|s| ids.contains(&s.index));
    let mut index = None;
    let many = affected.len() > SCAN_LIMIT;
    let mut changes = Vec::new();
    for s in affected {
        for g in &s.groups {
            let have = before
                .iter()
                .find(|x| x.index == s.index && x.group() == g.group)
                .map_or(g.compiled.as_slice(), |x| x.backends.as_slice());
            let want = backends_after(&planned.diff, s, g, have, &mut index, many);
            if want.as_slice() != have {
                changes.push(BackendChange {
                    service: s.index,
                    name: s.name.clone(),
                    group: g.group,
                    maglev: s.maglev,
                    want: want.clone(),
                });
            }
            kept.extend(stale_update(s, g, want));
        }
    }
    kept.sort_by_key(|s| (s.index, s.group()));
    Ok((kept, changes))
}

/// Writes `text` (ipset `del`/`add` lines) by building the touched sets
/// beside the live ones and swapping them in: a refused or failed update
/// writes nothing ([`crate::iptables::sets`]).
fn swap_in(
    rt: &crate::iptables::Iptables,
    state: &crate::iptables::State,
    text: &str,
) -> Result<(), EndpointsError> {
    use crate::iptables::sets::SwapError;
    if text.is_empty() {
        return Ok(());
    }
    match rt.swap_sets(text, state) {
        Ok(()) => Ok(()),
        Err(SwapError::Capacity(m)) => Err(EndpointsError::Refused(vec![m])),
        Err(SwapError::Failed(e)) => Err(e.into()),
    }
}
