//! `weir endpoints` on the eBPF back end: host entries in the pinned
//! class maps and selector-service backends through
//! [`LbState::set_backends`], capacity checked first and every write
//! rolled back on failure; programs are not reloaded.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use weir_compiler::churn::{self, AddrChange, EndpointRec};
use weir_compiler::contract::endpoints_state::{self as state, Header};
use weir_compiler::contract::Manifest;
use weir_compiler::ebpf::layout::self_entry;
use weir_compiler::ebpf::service::LbState;

use super::plan::{backends_after, dry_report, plan, set_host_prefix, Planned, SCAN_LIMIT};
use super::{write_failed, EndpointsError, FileIdentity, Report, ServiceUpdate};
use crate::record::{bad_record, read_legacy, socket, Bytes, Record, Side};
use crate::statefs::file_identity;

/// The generation in force on an eBPF instance (`state.json`).
fn ebpf_generation(inst: &crate::ebpf::Instance) -> Result<u64, EndpointsError> {
    let not = || {
        EndpointsError::NotInForce(format!(
            "nothing is applied for eBPF instance `{}`: run `weir apply --backend ebpf` first",
            inst.name()
        ))
    };
    /// The part of the eBPF state record read here.
    #[derive(serde::Deserialize)]
    struct Generation {
        generation: u64,
    }
    let st: Generation = std::fs::read(inst.state_dir().join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
        .ok_or_else(not)?;
    Ok(st.generation)
}

/// The manifest recorded at apply (its text and contents).
fn ebpf_manifest(inst: &crate::ebpf::Instance) -> Result<(String, Manifest), EndpointsError> {
    let not = || {
        EndpointsError::NotInForce(format!(
            "nothing is applied for eBPF instance `{}`: run `weir apply --backend ebpf` first",
            inst.name()
        ))
    };
    let text =
        std::fs::read_to_string(inst.state_dir().join("manifest.json")).map_err(|_| not())?;
    let manifest = weir_compiler::contract::parse(text.as_bytes()).map_err(|e| {
        EndpointsError::Bundle(format!(
            "the manifest recorded at apply for `{}`: {e} (apply the bundle again)",
            inst.name()
        ))
    })?;
    Ok((text, manifest))
}

fn bundle_id(m: &Manifest) -> String {
    m.source_hash.clone()
}

/// Steps 1–3 of an eBPF endpoint update (see [`ebpf_text`]): the writes
/// and the services whose backends changed. The caller rolls back on
/// error.
fn write_maps(
    pinned: &mut crate::ebpf::txn::PinnedMaps,
    planned: &Planned,
    same: &churn::self_relation::SelfChanges,
    lb: Option<&mut LbState>,
) -> Result<(usize, Vec<ServiceUpdate>), EndpointsError> {
    let changes = &planned.changes;
    let affected = &planned.affected;
    let mut writes = 0;
    // 0. The `self` relation, before any class entry: an address moving
    // to another endpoint stops being "the same endpoint" as its old
    // owner's addresses before it takes its new class, so no window lets
    // one endpoint's `self` match another.
    for a in &same.delete {
        let (map, key, _) = self_entry(*a, *a);
        pinned.delete(map, &key)?;
        writes += 1;
    }
    for &(a, c) in &same.write {
        let (map, key, value) = self_entry(a, c);
        pinned.update(map, &key, &value)?;
        writes += 1;
    }
    // 1. New and re-classed addresses: a backend must be classified
    // before the service maps can send traffic to it.
    for c in changes {
        if let Some(n) = c.new {
            let (map, key) = host_key(c.addr);
            pinned.update(map, &key, &n.to_ne_bytes())?;
            writes += 1;
        }
    }
    // 2. Services.
    let mut updated = Vec::new();
    if let Some(lb) = lb {
        let mut index = None;
        let many = affected.len() > SCAN_LIMIT;
        for s in affected {
            for g in &s.groups {
                let have = lb
                    .services
                    .get(s.index)
                    .and_then(|x| x.sets.get(&g.group))
                    .map(|x| x.backends.as_slice())
                    .unwrap_or_default();
                let want = backends_after(&planned.diff, s, g, have, &mut index, many);
                if want == have {
                    continue;
                }
                let ops = lb
                    .set_backends(s.index, g.group, want.clone())
                    .map_err(|e| EndpointsError::Bundle(format!("service `{}`: {e}", s.name)))?;
                for op in &ops {
                    match op {
                        weir_compiler::ebpf::service::MapOp::Update { map, key, value } => {
                            pinned.update(map, key, value)?
                        }
                        weir_compiler::ebpf::service::MapOp::Delete { map, key } => {
                            pinned.delete(map, key)?
                        }
                    }
                    writes += 1;
                }
                updated.push(ServiceUpdate::new(
                    &s.name,
                    g.group,
                    want.iter().map(socket).collect(),
                ));
            }
        }
    }
    // 3. Removals: the host entry goes (or falls back to the class of a
    // set prefix naming exactly this host).
    for c in changes {
        if c.new.is_none() {
            let (map, key) = host_key(c.addr);
            let view = planned.view.as_ref().expect("parsed on a change");
            if set_host_prefix(view, c.addr) {
                pinned.update(map, &key, &c.base.to_ne_bytes())?;
            } else {
                pinned.delete(map, &key)?;
            }
            writes += 1;
        }
    }
    Ok((writes, updated))
}

/// Reads every written key back: when the kernel holds something else
/// for any, the update's writes are rolled back, the record is not
/// written (the previous endpoints stay recorded, as the rollback left
/// the maps), and the update fails naming the entries.
fn read_back(pinned: &mut crate::ebpf::txn::PinnedMaps) -> Result<(), EndpointsError> {
    let differ = pinned.read_back()?;
    if differ.is_empty() {
        return Ok(());
    }
    let n = pinned.writes();
    let failed = pinned.rollback();
    Err(EndpointsError::NotHeld {
        differ: differ.iter().map(describe).collect(),
        rolled_back: n,
        rollback_failed: failed,
    })
}

/// The map and key of an endpoint's class-map (host) entry.
fn host_key(addr: std::net::IpAddr) -> (&'static str, Vec<u8>) {
    use weir_compiler::ebpf::layout::class_key;
    match addr {
        std::net::IpAddr::V4(a) => class_key(&a.octets(), 32),
        std::net::IpAddr::V6(a) => class_key(&a.octets(), 128),
    }
}

/// Applies `inventory` to the eBPF generation in force on `inst` (see
/// the module docs). `dir` must be the applied bundle (its manifest is
/// the one recorded at apply: the same file, or the same content).
pub fn ebpf(
    inst: &crate::ebpf::Instance,
    dir: &Path,
    inventory: &[EndpointRec],
) -> Result<Report, EndpointsError> {
    ebpf_text(inst, dir, &churn::inventory_text(inventory))
}

/// [`ebpf_text`] without writing anything: the report's `dry_run` holds
/// the update in endpoint names (service backend changes are not
/// computed).
pub fn ebpf_dry_run(
    inst: &crate::ebpf::Instance,
    dir: &Path,
    inventory: &str,
) -> Result<Report, EndpointsError> {
    ebpf_mode(inst, dir, inventory, true, None)
}

/// [`ebpf`] given the inventory file's text (what `weir endpoints`
/// reads): only the endpoints whose text changed are parsed.
pub fn ebpf_text(
    inst: &crate::ebpf::Instance,
    dir: &Path,
    inventory: &str,
) -> Result<Report, EndpointsError> {
    ebpf_mode(inst, dir, inventory, false, None)
}

/// [`ebpf_text`] with `between` run after the writes and before they are
/// read back: how a test makes the kernel disagree with the update (a
/// write by another program, a map replaced under its pin) and sees the
/// update fail. Not for production callers.
#[doc(hidden)]
pub fn ebpf_text_with_hook(
    inst: &crate::ebpf::Instance,
    dir: &Path,
    inventory: &str,
    between: &mut dyn FnMut(),
) -> Result<Report, EndpointsError> {
    ebpf_mode(inst, dir, inventory, false, Some(between))
}

/// One written key the kernel holds something else for, in words (an
/// address key of the class and `self` maps is named as the address).
fn describe(d: &crate::ebpf::txn::Differs) -> String {
    use weir_compiler::ebpf::layout::map;
    let addr: Option<std::net::IpAddr> = match (d.map.as_str(), d.key.len()) {
        (map::HOST4 | map::SELF4, 4) => <[u8; 4]>::try_from(d.key.as_slice()).ok().map(Into::into),
        (map::HOST6 | map::SELF6, 16) => {
            <[u8; 16]>::try_from(d.key.as_slice()).ok().map(Into::into)
        }
        _ => None,
    };
    d.describe(addr.map(|a| format!("address {a}")).as_deref())
}

/// Capacity first: a full hash map must refuse the update before any
/// entry is written (the class-map host entries and the `self` entries
/// the update inserts).
fn check_capacity(
    pinned: &mut crate::ebpf::txn::PinnedMaps,
    changes: &[AddrChange],
    same: &churn::self_relation::SelfChanges,
) -> Result<(), EndpointsError> {
    let mut inserts: BTreeMap<&str, Vec<Vec<u8>>> = BTreeMap::new();
    for c in changes.iter().filter(|c| c.new.is_some()) {
        let (map, key) = host_key(c.addr);
        inserts.entry(map).or_default().push(key);
    }
    for &(a, c) in &same.write {
        let (map, key, _) = self_entry(a, c);
        inserts.entry(map).or_default().push(key);
    }
    for (map, keys) in &inserts {
        pinned
            .check_capacity(map, keys)
            .map_err(|e| EndpointsError::Refused(vec![e]))?;
    }
    Ok(())
}

/// The endpoints record of the generation in force, once `dir` is shown
/// to be its bundle: by the manifest file's identity recorded at the last
/// update, else by its contents against the manifest recorded at apply
/// (a record of another bundle, or none, is rebuilt from the manifest).
/// Also the identity to record for the next update: the file's, unless
/// it was compared by content and changed too recently to stand for it
/// (see `crate::bundle::trusted_identities`).
fn record_of_given_bundle(
    inst: &crate::ebpf::Instance,
    dir: &Path,
    generation: u64,
) -> Result<(Record, Option<FileIdentity>), EndpointsError> {
    let sd = inst.state_dir();
    let given_path = dir.join("manifest.json");
    let unreadable =
        || EndpointsError::Bundle(format!("{}/manifest.json is unreadable", dir.display()));
    let taken = std::time::SystemTime::now();
    let given_id = file_identity(&given_path).ok_or_else(unreadable)?;
    let mut rec = Record::read(&sd).filter(|r| r.header.generation == generation);
    let mut record_id = Some(given_id.clone());
    if rec
        .as_ref()
        .is_none_or(|r| r.header.manifest.as_ref() != Some(&given_id))
    {
        record_id = crate::bundle::trusted_identities(
            vec![(crate::bundle::MANIFEST.to_string(), Some(given_id.clone()))],
            taken,
        )
        .map(|_| given_id.clone());
        // Not the file recorded at apply: compare the contents with the
        // manifest recorded at apply (identical text is the same
        // manifest).
        let (recorded_text, manifest) = ebpf_manifest(inst)?;
        let given_text = std::fs::read_to_string(&given_path).map_err(|_| unreadable())?;
        let same = given_text == recorded_text || {
            let given = weir_compiler::contract::parse(given_text.as_bytes())
                .map_err(|e| EndpointsError::Bundle(format!("{}: {e}", given_path.display())))?;
            given == manifest
        };
        if !same {
            return Err(EndpointsError::NotInForce(format!(
                "{} is not the bundle in force on `{}` (generation {generation}); apply it first",
                dir.display(),
                inst.name()
            )));
        }
        let id = bundle_id(&manifest);
        rec = Some(match rec.filter(|r| r.header.bundle == id) {
            Some(r) => r,
            None => Record::from_manifest(
                &manifest,
                Header::new(generation, id.clone(), None),
                read_legacy(&sd, generation, &id),
                false,
            )
            .map_err(EndpointsError::Bundle)?,
        });
    }
    Ok((rec.expect("a record"), record_id))
}

fn ebpf_mode(
    inst: &crate::ebpf::Instance,
    dir: &Path,
    inventory: &str,
    dry_run: bool,
    between: Option<&mut dyn FnMut()>,
) -> Result<Report, EndpointsError> {
    let t0 = Instant::now();
    if unsafe { libc::geteuid() } != 0 {
        return Err(crate::ebpf::EbpfError::NotPrivileged {
            detail: "run as root".into(),
        }
        .into());
    }
    // Not while an apply runs; an interrupted one is finished first.
    let _lock = match inst.state_dir().exists() {
        true => Some(crate::ebpf::record::settle(inst)?),
        false => None,
    };
    let generation = ebpf_generation(inst)?;
    let sd = inst.state_dir();
    let (rec, record_id) = record_of_given_bundle(inst, dir, generation)?;
    let planned = plan(&rec, &sd, inventory)?;
    if dry_run {
        let writes = planned.changes.len();
        return Ok(dry_report(generation, planned, Vec::new(), writes, t0));
    }
    let changes = &planned.changes;
    // The service maps hold the backends over the recorded endpoints:
    // only services whose selector matches an endpoint that changed
    // (either version) can differ.
    let affected = &planned.affected;
    let mut lb: Option<LbState> = None;
    if !affected.is_empty() {
        lb = state::decode_lb(rec.lb.get(&sd)?).map_err(bad_record)?;
    }

    let t1 = Instant::now();
    let gen_dir = inst.pin_dir().join(format!("gen-{generation}"));
    // `self` (programs with a `self` rule pin `weir_self4`): the relation's
    // entries that change with the endpoints.
    let same = if gen_dir
        .join(weir_compiler::ebpf::layout::map::SELF4)
        .exists()
    {
        churn::self_relation::ebpf_changes(&planned.compared.0, &planned.compared.1)
    } else {
        Default::default()
    };
    let mut pinned = crate::ebpf::txn::PinnedMaps::new(gen_dir);
    check_capacity(&mut pinned, changes, &same)?;
    let (writes, updated) = match write_maps(&mut pinned, &planned, &same, lb.as_mut()) {
        Ok(w) => w,
        Err(e) => {
            let n = pinned.writes();
            let failed = pinned.rollback();
            return Err(if failed.is_empty() {
                EndpointsError::Refused(vec![format!(
                    "{e} (the {n} map writes made before were rolled back)"
                )])
            } else {
                EndpointsError::Bundle(format!(
                    "{e}; rolling back the {n} map writes made before failed ({}): the generation in force is partly updated, re-run `weir endpoints` or `weir apply`",
                    failed.join("; ")
                ))
            });
        }
    };
    if let Some(f) = between {
        f();
    }
    read_back(&mut pinned)?;
    let apply_time = t1.elapsed();
    let lb_bytes = if updated.is_empty() {
        rec.lb
    } else {
        Side::new("lb", state::encode_lb(&lb))
    };
    let Planned { diff, changes, .. } = planned;
    let parsed = diff.parsed;
    Record {
        header: Header {
            manifest: record_id,
            unique: diff.unique,
            ..rec.header
        },
        statics: rec.statics,
        lb: lb_bytes,
        stale: rec.stale,
        endpoints: Bytes::New(diff.entries),
    }
    .write(&sd)
    .map_err(|e| write_failed(&sd, e))?;
    Ok(Report {
        generation,
        parsed,
        changes,
        services: updated,
        needs_recompile: Vec::new(),
        writes,
        apply_time,
        total_time: t0.elapsed(),
        dry_run: None,
    })
}
