//! Loading one generation: the object through aya, every program through
//! the verifier, then the maps filled from the manifest and the stage
//! prog array set — all before anything is attached.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use aya::maps::{Map, MapData, PerCpuArray, ProgramArray};
use aya::programs::{ProgramError, SchedClassifier};
use aya::{Ebpf, EbpfLoader};
use weir_compiler::contract::atom_rows::BITS_MAP;
use weir_compiler::ebpf::codegen::EbpfManifest;
use weir_compiler::ebpf::layout::{class_key, map as names};
use weir_compiler::ebpf::service::MapOp;

use super::EbpfError;

/// A loaded, filled generation (not attached).
pub struct Generation {
    pub ebpf: Ebpf,
    pub manifest: EbpfManifest,
    /// The IPv4 keys copied from a shared `weir_ct` that held both
    /// families (an earlier weir) into `weir_ct4` at this load
    /// (`shared_ct::split_v4`); the apply removes them from `weir_ct`
    /// once this generation runs.
    pub split_v4: Vec<Vec<u8>>,
    /// The conntrack collector's arming program (`super::gc`), loaded
    /// outside aya (`super::gc_prog`); `None` without a collector.
    pub collector: Option<std::os::fd::OwnedFd>,
}

/// The underlying map of any map kind we create.
pub fn map_data(m: &Map) -> &MapData {
    match m {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::LpmTrie(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::ProgramArray(d) => d,
        _ => panic!("unexpected map kind"),
    }
}

/// The raw `bpf(2)` syscall on an attribute buffer (the BPF commands aya
/// does not wrap for raw bytes).
pub(super) fn sys_bpf(cmd: libc::c_long, attr: &mut [u8]) -> std::io::Result<i64> {
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `bpf_map_update_elem(fd, key, value, BPF_ANY)` with raw bytes.
pub fn update_raw(m: &Map, key: &[u8], value: &[u8]) -> std::io::Result<()> {
    update_raw_flags(m, key, value, 0)
}

/// [`update_raw`] with `flags` (`BPF_NOEXIST` 1, `BPF_EXIST` 2).
pub fn update_raw_flags(m: &Map, key: &[u8], value: &[u8], flags: u64) -> std::io::Result<()> {
    let fd = map_data(m).fd().as_fd().as_raw_fd();
    let mut attr = [0u8; 32];
    attr[0..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(key.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(value.as_ptr() as u64).to_ne_bytes());
    attr[24..32].copy_from_slice(&flags.to_ne_bytes());
    sys_bpf(2, &mut attr).map(|_| ())
}

/// `bpf_map_lookup_elem` with raw bytes; `None` when the key is absent.
pub fn lookup_raw(m: &Map, key: &[u8], value_size: usize) -> std::io::Result<Option<Vec<u8>>> {
    let fd = map_data(m).fd().as_fd().as_raw_fd();
    let mut value = vec![0u8; value_size];
    let mut attr = [0u8; 32];
    attr[0..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(key.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(value.as_mut_ptr() as u64).to_ne_bytes());
    match sys_bpf(1, &mut attr) {
        Ok(_) => Ok(Some(value)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `bpf_map_delete_elem`.
pub fn delete_raw(m: &Map, key: &[u8]) -> std::io::Result<()> {
    let fd = map_data(m).fd().as_fd().as_raw_fd();
    let mut attr = [0u8; 32];
    attr[0..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(key.as_ptr() as u64).to_ne_bytes());
    sys_bpf(3, &mut attr).map(|_| ())
}

/// Applies map writes (the service maps' [`MapOp`]s) in order. A delete of a missing key is not an error.
pub fn apply_ops(ebpf: &Ebpf, ops: &[MapOp]) -> Result<(), EbpfError> {
    for op in ops {
        let name = op.map();
        let m = ebpf
            .map(name)
            .ok_or_else(|| EbpfError::Bundle(format!("object has no map {name}")))?;
        match op {
            MapOp::Update { key, value, .. } => {
                update_raw(m, key, value).map_err(|e| EbpfError::Aya {
                    step: format!("updating map {name}"),
                    message: e.to_string(),
                })?
            }
            MapOp::Delete { key, .. } => match delete_raw(m, key) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                r => r.map_err(|e| EbpfError::Aya {
                    step: format!("deleting from map {name}"),
                    message: e.to_string(),
                })?,
            },
        }
    }
    Ok(())
}

/// Every key of a hash map (`key_size` bytes each).
pub fn keys_raw(m: &Map, key_size: usize) -> std::io::Result<Vec<Vec<u8>>> {
    let fd = map_data(m).fd().as_fd().as_raw_fd();
    let mut out = Vec::new();
    let mut cur: Option<Vec<u8>> = None;
    loop {
        let mut next = vec![0u8; key_size];
        let mut attr = [0u8; 32];
        attr[0..4].copy_from_slice(&(fd as u32).to_ne_bytes());
        let kp = cur.as_ref().map_or(0u64, |k| k.as_ptr() as u64);
        attr[8..16].copy_from_slice(&kp.to_ne_bytes());
        attr[16..24].copy_from_slice(&(next.as_mut_ptr() as u64).to_ne_bytes());
        match sys_bpf(4, &mut attr) {
            Ok(_) => {
                out.push(next.clone());
                cur = Some(next);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

pub(crate) fn verifier(program: &str, e: ProgramError) -> EbpfError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            EbpfError::Verifier {
                program: program.to_string(),
                error: io_error.to_string(),
                log_tail: tail,
            }
        }
        other => EbpfError::Aya {
            step: format!("loading program {program}"),
            message: other.to_string(),
        },
    }
}

fn fill_err(map: &str, e: impl std::fmt::Display) -> EbpfError {
    EbpfError::Aya {
        step: format!("filling map {map}"),
        message: e.to_string(),
    }
}

/// Loads `object`, verifies every program, fills every map from the
/// manifest and sets the stage prog array. `shared`: a bpffs directory
/// where maps shared across generations (conntrack) are pinned by name
/// and reused.
pub fn load(
    object: &[u8],
    manifest: &EbpfManifest,
    shared: Option<&Path>,
) -> Result<Generation, EbpfError> {
    // The conntrack tables (one per family). A pinned one of another
    // size is replaced (and its entries carried over below), never
    // silently kept.
    let mut resized = Vec::new();
    // A pinned weir_ct and no weir_ct4: an earlier weir's one table of
    // both families, whose IPv4 flows move into weir_ct4 below.
    let split = shared.is_some_and(|d| {
        manifest.maps.iter().any(|m| m.name == names::CT4)
            && !d.join(names::CT4).exists()
            && d.join(names::CT).exists()
    });
    let mut loader = EbpfLoader::new();
    // No CO-RE relocations to do: skip parsing the kernel's BTF.
    loader.btf(None);
    let ct_paths: Vec<_> = shared
        .map(|d| super::shared_ct::SHARED.map(|n| (n, d.join(n))).to_vec())
        .unwrap_or_default();
    for (name, p) in &ct_paths {
        if let Some(old) = super::shared_ct::unpin_if_resized(p, name, manifest)? {
            resized.push(old);
        }
    }
    for (name, p) in &ct_paths {
        loader.map_pin_path(name, p.as_path());
    }
    // The conntrack collector's state lives as long as weir_ct, beside it.
    let gc_path = shared.map(|d| d.join(weir_compiler::ebpf::layout::gc::MAP));
    if let Some(p) = &gc_path {
        super::gc::unpin_if_changed(p, manifest)?;
        loader.map_pin_path(weir_compiler::ebpf::layout::gc::MAP, p.as_path());
    }
    // The collector's program and kfunc externs are not for aya
    // (`super::kfunc`).
    let for_aya = match &manifest.collector {
        Some(c) => Some(super::kfunc::for_aya(object, &[c.section.as_str()])?),
        None => None,
    };
    let mut ebpf = loader
        .load(for_aya.as_deref().unwrap_or(object))
        .map_err(|e| EbpfError::Aya {
            step: "loading the object".into(),
            message: e.to_string(),
        })?;
    drop(for_aya);
    for p in &manifest.programs {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(&p.name)
            .ok_or_else(|| EbpfError::Bundle(format!("object has no program {}", p.name)))?
            .try_into()
            .map_err(|e: ProgramError| verifier(&p.name, e))?;
        prog.load().map_err(|e| verifier(&p.name, e))?;
    }
    fill(&mut ebpf, manifest)?;
    for old in &resized {
        super::shared_ct::carry_over(old, |n| ebpf.map(n))?;
    }
    let split_v4 = match (split, ebpf.map(names::CT), ebpf.map(names::CT4)) {
        (true, Some(ct), Some(ct4)) => super::shared_ct::split_v4(ct, ct4)?,
        _ => Vec::new(),
    };
    let collector = super::gc::load_program(&ebpf, object, manifest)?;
    Ok(Generation {
        ebpf,
        manifest: manifest.clone(),
        split_v4,
        collector,
    })
}

/// Writes the manifest's fill data and the prog array.
pub fn fill(ebpf: &mut Ebpf, m: &EbpfManifest) -> Result<(), EbpfError> {
    let f = &m.fill;
    let get = |ebpf: &Ebpf, name: &str| -> Result<(), EbpfError> {
        ebpf.map(name)
            .map(|_| ())
            .ok_or_else(|| EbpfError::Bundle(format!("object has no map {name}")))
    };
    for e in f.cls4.iter().chain(&f.cls6) {
        let (name, key) = class_key(&e.addr, e.len);
        get(ebpf, name)?;
        let map = ebpf.map(name).expect("checked");
        update_raw(map, &key, &e.class.to_ne_bytes()).map_err(|x| fill_err(name, x))?;
    }
    for &(addr, canonical) in &f.same_endpoint {
        let (name, key, value) = weir_compiler::ebpf::layout::self_entry(addr, canonical);
        get(ebpf, name)?;
        let map = ebpf.map(name).expect("checked");
        update_raw(map, &key, &value).map_err(|x| fill_err(name, x))?;
    }
    if let Some(map) = ebpf.map(names::ATOMS) {
        // Each row expanded from its non-zero words into one buffer.
        let mut v = Vec::new();
        for c in 0..f.atom_rows.len() {
            f.atom_rows.row_bytes(c, &mut v).expect("c < len");
            update_raw(map, &(c as u32).to_ne_bytes(), &v)
                .map_err(|x| fill_err(names::ATOMS, x))?;
        }
    }
    if let Some(map) = ebpf.map(BITS_MAP) {
        // The atom bits held sparse (`codegen::sparse_atoms`): key
        // (class, word index), one entry per non-zero word.
        for c in 0..f.atom_bits.len() {
            for &(i, w) in f.atom_bits.nonzero(c) {
                let mut key = [0u8; 8];
                key[..4].copy_from_slice(&(c as u32).to_ne_bytes());
                key[4..].copy_from_slice(&i.to_ne_bytes());
                update_raw(map, &key, &w.to_ne_bytes()).map_err(|x| fill_err(BITS_MAP, x))?;
            }
        }
    }
    if let Some(lb) = &m.lb {
        // Service maps: backends, slots, Maglev tables, then frontends.
        apply_ops(ebpf, &lb.initial_ops())?;
    }
    if m.programs.len() > 1 {
        let mut fds = Vec::new();
        for p in m.programs.iter().filter(|p| p.slot.is_some()) {
            let prog: &SchedClassifier = ebpf
                .program(&p.name)
                .expect("loaded above")
                .try_into()
                .map_err(|e: ProgramError| fill_err(names::JMP, e))?;
            let fd = prog
                .fd()
                .map_err(|e| fill_err(names::JMP, e))?
                .try_clone()
                .map_err(|e| fill_err(names::JMP, e))?;
            fds.push((p.slot.expect("filtered"), fd));
        }
        let mut jmp = ProgramArray::try_from(
            ebpf.map_mut(names::JMP)
                .ok_or_else(|| EbpfError::Bundle("object has no prog array".into()))?,
        )
        .map_err(|e| fill_err(names::JMP, e))?;
        for (slot, fd) in &fds {
            jmp.set(*slot, fd, 0).map_err(|e| fill_err(names::JMP, e))?;
        }
    }
    Ok(())
}

/// Per-provenance packet counts (summed over CPUs).
pub fn counters(ebpf: &Ebpf, n: u32) -> Result<Vec<u64>, EbpfError> {
    let map = ebpf
        .map(names::CNT)
        .ok_or_else(|| EbpfError::Bundle("object has no counter map".into()))?;
    read_counters(map, n)
}

/// The audit counters (`weir_audit_cnt`, `n` = the manifest's
/// `audit_counters`): per provenance id, the audit decisions counted
/// (docs/language.md §4, "Audit policies"). Empty when `n` is 0 (no
/// audit policies, no map).
pub fn audit_counters(ebpf: &Ebpf, n: u32) -> Result<Vec<u64>, EbpfError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let map = ebpf
        .map(names::AUDIT_CNT)
        .ok_or_else(|| EbpfError::Bundle("object has no audit counter map".into()))?;
    read_counters(map, n)
}

/// Per-provenance packet counts from a counter map: one
/// `BPF_MAP_LOOKUP_BATCH` when the kernel has it, else one lookup per id.
pub fn read_counters(map: &Map, n: u32) -> Result<Vec<u64>, EbpfError> {
    if let Some(v) = batch_counters(map, n) {
        return Ok(v);
    }
    let arr: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map).map_err(|e| fill_err(names::CNT, e))?;
    (0..n)
        .map(|i| {
            arr.get(&i, 0)
                .map(|v| v.iter().sum())
                .map_err(|e| fill_err(names::CNT, e))
        })
        .collect()
}

fn batch_counters(map: &Map, n: u32) -> Option<Vec<u64>> {
    let cpus = aya::util::nr_cpus().ok()?;
    let fd = map_data(map).fd().as_fd().as_raw_fd();
    let mut keys = vec![0u32; n as usize];
    let mut values = vec![0u64; n as usize * cpus];
    let mut out_batch = 0u64;
    // struct { in_batch, out_batch, keys, values: u64; count, map_fd: u32;
    //          elem_flags, flags: u64 }
    let mut attr = [0u8; 48];
    attr[8..16].copy_from_slice(&(std::ptr::addr_of_mut!(out_batch) as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(keys.as_mut_ptr() as u64).to_ne_bytes());
    attr[24..32].copy_from_slice(&(values.as_mut_ptr() as u64).to_ne_bytes());
    attr[32..36].copy_from_slice(&n.to_ne_bytes());
    attr[36..40].copy_from_slice(&(fd as u32).to_ne_bytes());
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            24 as libc::c_long, // BPF_MAP_LOOKUP_BATCH
            attr.as_mut_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    let count = u32::from_ne_bytes(attr[32..36].try_into().ok()?);
    let ok = r == 0
        || (std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT) && count == n);
    if !ok || count != n {
        return None;
    }
    let mut out = vec![0u64; n as usize];
    for (i, k) in keys.iter().enumerate() {
        let sum: u64 = values[i * cpus..(i + 1) * cpus].iter().sum();
        *out.get_mut(*k as usize)? = sum;
    }
    Some(out)
}
