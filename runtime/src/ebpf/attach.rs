//! Applying a bundle to an interface, generation by generation.
//!
//! Everything lives under `/sys/fs/bpf/weir/<instance>/` on the node's
//! bpffs (mounted `mode=700` if it is not; reached from `ip netns exec`
//! too — see [`super::pins`]), every directory root-owned `0700`:
//!
//! - `link` — the pinned TCX link of the entry program on the interface's
//!   ingress (it outlives this process);
//! - `weir_ct` — the conntrack map, shared by every generation (reused by
//!   name when a new generation loads), so a switch loses no connection;
//! - `gen-N/` — generation N's maps (`weir_cnt`, `weir_jmp`, …) and
//!   programs, pinned so that the prog array keeps its slots and `weir
//!   stats` can read the counters after we exit.
//!
//! and the record (state, manifest, intent, lock; see [`super::record`])
//! under `/run/weir/ebpf/<instance>/`. The instance is named by its
//! namespace's inode and the first interface (`host-eth0`,
//! `netns-4026532281-eth0`).
//!
//! **Apply** (under the instance's lock, after recovering an interrupted
//! apply) records its intent, loads and fills generation N+1 completely
//! (verifier, maps, prog array), pins it, and only then switches: the
//! first time by creating the TCX link, later by `bpf_link_update` on the
//! pinned link — one atomic step per interface. It then reads back from
//! the kernel that every interface runs the new program
//! ([`super::inforce`]) and only then records it; any failure before
//! that puts the links back and leaves generation N running untouched,
//! with no pins of N+1 left. After the record generation N's pins are
//! removed (the kernel frees its programs and maps once the link drops
//! them). **Detach** unpins the links (which detaches the program) and
//! removes the instance's pins, record and lock.

use std::path::{Path, PathBuf};

use aya::maps::{Map, MapData};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use serde::Serialize;
use weir_compiler::ebpf::codegen::EbpfManifest;
use weir_compiler::ebpf::layout::{self, map as names};

use super::load::{load, read_counters};
pub use super::pins::ensure_bpffs;
use super::record::{self, State};
use super::{inforce, pins, EbpfError};
use crate::statefs;

/// Default root of the instances' state directories.
pub const STATE_ROOT: &str = "/run/weir/ebpf";

/// Where an instance lives.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Interface the entry program is attached to (names the instance;
    /// its pinned link is `link`).
    pub iface: String,
    /// Further interfaces the same program (same generation, same maps)
    /// is attached to, each with its own pinned link `link-<iface>` —
    /// e.g. both node links, so replies of translated flows pass the
    /// same conntrack / reverse NAT.
    pub extra_ifaces: Vec<String>,
    /// Network namespace (`ip netns` name) of the interface.
    pub netns: Option<String>,
    /// Pin root (default `/sys/fs/bpf/weir`).
    pub pin_root: PathBuf,
    /// State root (default `/run/weir/ebpf`).
    pub state_root: PathBuf,
}

impl Instance {
    pub fn new(iface: &str, netns: Option<&str>) -> Instance {
        Instance {
            iface: iface.to_string(),
            extra_ifaces: Vec::new(),
            netns: netns.map(str::to_string),
            pin_root: PathBuf::from("/sys/fs/bpf/weir"),
            state_root: PathBuf::from(STATE_ROOT),
        }
    }

    /// `host-eth0`, `netns-4026532281-veth1`: the namespace by what it is
    /// ([`statefs::netns_label`]), so `--netns X` and `ip netns exec X`
    /// name the same instance.
    /// An instance applied by an earlier weir under `--netns NAME` keeps
    /// its name `netns-NAME-<iface>` until it is detached.
    pub fn name(&self) -> String {
        let name = format!(
            "{}-{}",
            statefs::netns_label(self.netns.as_deref()),
            self.iface
        );
        if let Some(n) = &self.netns {
            let legacy = format!("netns-{n}-{}", self.iface);
            let exists = |n: &str| {
                self.state_root.join(n).exists() || pins::host_view(&self.pin_root).join(n).exists()
            };
            if legacy != name && !exists(&name) && exists(&legacy) {
                return legacy;
            }
        }
        name
    }

    /// The instance's pin directory, on the node's bpffs however the
    /// command was entered ([`pins::host_view`]).
    pub fn pin_dir(&self) -> PathBuf {
        pins::host_view(&self.pin_root).join(self.name())
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state_root.join(self.name())
    }

    /// Every interface: `iface`, then `extra_ifaces` (duplicates dropped).
    pub fn ifaces(&self) -> Vec<String> {
        let mut v = vec![self.iface.clone()];
        for i in &self.extra_ifaces {
            if !v.contains(i) {
                v.push(i.clone());
            }
        }
        v
    }
}

/// Points the pinned link at `path` to `prog` (link update).
pub(super) fn update_link(prog: &mut SchedClassifier, path: &Path) -> Result<(), EbpfError> {
    let old = PinnedLink::from_pin(path)
        .map_err(|e| aya_err("opening the pinned link")(e.to_string()))?;
    let link: SchedClassifierLink =
        FdLink::from(old)
            .try_into()
            .map_err(|e: aya::programs::links::LinkError| {
                aya_err("opening the pinned link")(e.to_string())
            })?;
    let id = prog
        .attach_to_link(link)
        .map_err(|e| aya_err("replacing the program on the link")(e.to_string()))?;
    // The link stays pinned; drop our fd without detaching.
    let link = prog
        .take_link(id)
        .map_err(|e| aya_err("replacing the program on the link")(e.to_string()))?;
    let fd: FdLink = link
        .try_into()
        .map_err(|e: aya::programs::links::LinkError| aya_err("link")(e.to_string()))?;
    drop(fd);
    Ok(())
}

/// Attaches `prog` to TCX ingress of `iface` and pins the link at `path`.
pub(super) fn attach_new(
    prog: &mut SchedClassifier,
    iface: &str,
    path: &Path,
) -> Result<(), EbpfError> {
    let id = prog
        .attach_with_options(
            iface,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| {
            aya_err(&format!("attaching to TC ingress (TCX) of {iface}"))(e.to_string())
        })?;
    let link = prog
        .take_link(id)
        .map_err(|e| aya_err("attaching to TC ingress (TCX)")(e.to_string()))?;
    let fd: FdLink = link
        .try_into()
        .map_err(|e: aya::programs::links::LinkError| aya_err("link")(e.to_string()))?;
    fd.pin(path)
        .map_err(|e| aya_err("pinning the link")(e.to_string()))?;
    Ok(())
}

/// Result of [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub generation: u64,
    pub previous: Option<u64>,
    pub programs: Vec<(String, usize)>,
    /// The in-kernel conntrack collector (non-LRU `weir_ct`), read back
    /// after the apply armed it; `None`: LRU tables (the kernel evicts).
    pub collector: Option<super::gc::State>,
}

/// Result of [`status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub instance: String,
    pub iface: String,
    /// Every interface the program is attached to (`iface` first).
    pub ifaces: Vec<String>,
    /// The recorded generation.
    pub generation: u64,
    /// Every interface runs the recorded generation: read back from the
    /// kernel (link, program id, the interface's TCX ingress).
    pub attached: bool,
    /// What each interface runs, read back.
    pub in_force: Vec<inforce::Attachment>,
    /// Where that differs from the record, one line per interface.
    pub differences: Vec<String>,
    /// What the runtime did about an interrupted apply, if anything.
    pub recovered: Option<String>,
    pub programs: Vec<String>,
    /// The cgroup the connect-time programs (`connect4`, `sendmsg4`,
    /// `recvmsg4`) were attached to at `weir apply --cgroup`.
    pub cgroup: Option<String>,
    /// Their pinned links exist.
    pub cgroup_attached: bool,
    /// Services with their current backends (after `weir endpoints`
    /// updates; from the recorded service-map state).
    pub services: Vec<ServiceStatus>,
    /// The in-kernel conntrack collector's figures (last sweep, entries
    /// removed), read from its pinned map; `None` with LRU tables.
    pub collector: Option<super::gc::State>,
}

/// One service of [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    /// `maglev` or `random`.
    pub balance: String,
    /// `addr:port/proto-number`.
    pub frontends: Vec<String>,
    /// `addr:port` (weight), every family.
    pub backends: Vec<String>,
}

fn sock(a: std::net::IpAddr, port: u16) -> String {
    match a {
        std::net::IpAddr::V4(_) => format!("{a}:{port}"),
        std::net::IpAddr::V6(_) => format!("[{a}]:{port}"),
    }
}

fn service_status(lb: &weir_compiler::ebpf::service::LbState) -> Vec<ServiceStatus> {
    lb.services
        .iter()
        .map(|s| ServiceStatus {
            name: s.name.clone(),
            balance: if s.maglev { "maglev" } else { "random" }.into(),
            frontends: s
                .frontends
                .iter()
                .map(|f| {
                    let p = match f.proto {
                        6 => "tcp".to_string(),
                        17 => "udp".to_string(),
                        132 => "sctp".to_string(),
                        n => n.to_string(),
                    };
                    format!("{}/{p}", sock(f.addr, f.port))
                })
                .collect(),
            backends: s
                .sets
                .values()
                .flat_map(|set| &set.backends)
                .map(|b| format!("{} (weight {})", sock(b.addr, b.port), b.weight))
                .collect(),
        })
        .collect()
}

pub use crate::counters::RuleCount;

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EbpfError {
    let context = context.into();
    move |source| EbpfError::Io { context, source }
}

fn aya_err(step: &str) -> impl FnOnce(String) -> EbpfError + '_ {
    move |message| EbpfError::Aya {
        step: step.to_string(),
        message,
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn require_root() -> Result<(), EbpfError> {
    if !is_root() {
        return Err(EbpfError::NotPrivileged {
            detail: "run as root".into(),
        });
    }
    Ok(())
}

/// Runs `f` on a thread that has entered `netns` (if any): interface names
/// and TC attachment then refer to that namespace, while bpffs and the
/// file system stay the host's.
pub(super) fn in_netns<T: Send>(
    netns: Option<&str>,
    f: impl FnOnce() -> Result<T, EbpfError> + Send,
) -> Result<T, EbpfError> {
    let Some(ns) = netns else { return f() };
    std::thread::scope(|s| {
        s.spawn(|| {
            let path = format!("/run/netns/{ns}");
            let file = std::fs::File::open(&path).map_err(io(format!("opening {path}")))?;
            use std::os::fd::AsRawFd;
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(EbpfError::Io {
                    context: format!("entering network namespace {ns}"),
                    source: std::io::Error::last_os_error(),
                });
            }
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

fn check_iface(iface: &str) -> Result<(), EbpfError> {
    let c = std::ffi::CString::new(iface).map_err(|_| EbpfError::NoInterface {
        iface: iface.into(),
    })?;
    if unsafe { libc::if_nametoindex(c.as_ptr()) } == 0 {
        return Err(EbpfError::NoInterface {
            iface: iface.into(),
        });
    }
    Ok(())
}

/// Reads a bundle directory for the eBPF back end: the manifest
/// (version, shape and values checked) and the object, checked against
/// the manifest's hash ([`crate::bundle::EbpfBundle`]).
pub fn read_bundle(dir: &Path) -> Result<crate::bundle::EbpfBundle, EbpfError> {
    crate::bundle::EbpfBundle::read(dir).map_err(|e| EbpfError::Bundle(e.to_string()))
}

/// Loads the bundle in `dir` as the next generation and switches to it
/// (see the module docs).
pub fn apply(dir: &Path, inst: &Instance) -> Result<Applied, EbpfError> {
    apply_with(dir, inst, None)
}

/// [`apply`], also attaching the connect-time load-balancing programs to
/// the cgroup v2 directory `cgroup` (see [`super::cgroup`]). With `None`,
/// connect-time programs attached by an earlier apply follow the new
/// generation (or are removed if the new bundle has no services).
pub fn apply_with(
    dir: &Path,
    inst: &Instance,
    cgroup: Option<&Path>,
) -> Result<Applied, EbpfError> {
    require_root()?;
    // Taken before reading: a later change of the file changes it. Kept
    // only when the file's last change is old enough that a same-size
    // rewrite could not share its timestamps (`trusted_identities`).
    let taken = std::time::SystemTime::now();
    let manifest_id = crate::bundle::trusted_identities(
        vec![(
            "manifest.json".to_string(),
            crate::statefs::file_identity(&dir.join("manifest.json")),
        )],
        taken,
    )
    .and_then(|mut ids| ids.pop())
    .and_then(|(_, id)| id);
    let bundle = read_bundle(dir)?;
    let (full, manifest, object) = (&bundle.text, bundle.ebpf(), &bundle.object);
    if cgroup.is_some() && manifest.lb.is_none() {
        return Err(EbpfError::Bundle(
            "`--cgroup` attaches connect-time load balancing, but the bundle has no services"
                .into(),
        ));
    }
    if let Some(c) = cgroup {
        super::cgroup::open_cgroup(c)?;
    }
    pins::ensure_bpffs_for(&inst.pin_root)?;
    in_netns(inst.netns.as_deref(), || {
        for i in inst.ifaces() {
            check_iface(&i)?;
        }
        // Before the lock and anything loaded: a refused bundle leaves
        // nothing behind (E0570).
        crate::proxy_local::check(&bundle.manifest, None)?;
        // One apply at a time per instance; an interrupted one is
        // finished or rolled back first (`record`).
        let _lock = record::lock(inst)?;
        record::recover(inst)?;
        apply_here(full, manifest, object, inst, cgroup, manifest_id)
    })
}

/// Maps and programs of a generation, loaded, filled and pinned (step 1),
/// with the connect-time programs when a cgroup is to have them.
fn load_pinned(
    manifest: &EbpfManifest,
    object: &[u8],
    base: &Path,
    gen_dir: &Path,
    target_cgroup: Option<&Path>,
) -> Result<(super::Generation, Option<aya::Ebpf>), EbpfError> {
    let mut g = load(object, manifest, Some(base))?;
    pins::create_gen_dir(gen_dir)?;
    for (name, map) in g.ebpf.maps() {
        if super::shared_ct::SHARED.contains(&name) || name == weir_compiler::ebpf::layout::gc::MAP
        {
            continue;
        }
        map.pin(gen_dir.join(name))
            .map_err(|e| aya_err("pinning maps")(e.to_string()))?;
    }
    for p in &manifest.programs {
        let prog: &mut SchedClassifier = g
            .ebpf
            .program_mut(&p.name)
            .expect("loaded")
            .try_into()
            .map_err(|e: aya::programs::ProgramError| aya_err("pinning programs")(e.to_string()))?;
        prog.pin(gen_dir.join(format!("prog_{}", p.name)))
            .map_err(|e| aya_err("pinning programs")(e.to_string()))?;
    }
    // A non-LRU weir_ct's collector: armed with this generation's
    // callback before the switch (its sweep is read back by `arm`).
    if super::gc::present(&g) {
        super::gc::arm(&g, super::gc::Config::default())?;
        super::gc::pin(&g, gen_dir)?;
    }
    let sock = match (target_cgroup, &manifest.lb) {
        (Some(_), Some(lb)) => Some(super::cgroup::load(lb, gen_dir)?),
        _ => None,
    };
    Ok((g, sock))
}

/// Links switched by step 2: updated ones (they ran the previous
/// generation) and new ones.
#[derive(Default)]
struct Switched {
    updated: Vec<PathBuf>,
    created: Vec<PathBuf>,
}

impl Switched {
    /// Puts every link back: new ones go, updated ones run `previous`.
    fn undo(&self, base: &Path, previous: Option<u64>, entry: &str) {
        for lp in &self.created {
            let _ = pins::unpin_link(lp);
        }
        if let (false, Some(prev)) = (self.updated.is_empty(), previous) {
            let prev_prog = pins::gen_dir(base, prev).join(format!("prog_{entry}"));
            if let Ok(mut old) = SchedClassifier::from_pin(&prev_prog) {
                for lp in &self.updated {
                    let _ = update_link(&mut old, lp);
                }
            }
        }
    }
}

/// Step 2: one atomic step per interface; on failure the links already
/// switched are put back.
fn switch_links(
    entry: &mut SchedClassifier,
    base: &Path,
    inst: &Instance,
    previous: Option<u64>,
    entry_name: &str,
) -> Result<Switched, EbpfError> {
    let mut sw = Switched::default();
    for i in &inst.ifaces() {
        let lp = pins::link_path(base, &inst.iface, i);
        if lp.exists() && !inforce::link_on_interface(&lp, i) {
            // A link left defunct (its interface or namespace went away):
            // it holds nothing; a new one replaces it.
            let _ = pins::unpin_link(&lp);
        }
        let r = if lp.exists() {
            update_link(entry, &lp).map(|_| sw.updated.push(lp.clone()))
        } else {
            attach_new(entry, i, &lp).map(|_| sw.created.push(lp.clone()))
        };
        if let Err(e) = r {
            sw.undo(base, previous, entry_name);
            return Err(e);
        }
    }
    Ok(sw)
}

/// Steps 1–3 of generation `state.generation` (see [`record`]); on error
/// nothing of it is attached (the caller removes its pins).
fn load_and_switch(
    manifest: &EbpfManifest,
    object: &[u8],
    inst: &Instance,
    state: &State,
    previous: Option<u64>,
    prev_cgroup: Option<&Path>,
) -> Result<Result<Option<PathBuf>, EbpfError>, EbpfError> {
    let base = inst.pin_dir();
    let generation = state.generation;
    let gen_dir = pins::gen_dir(&base, generation);
    let target_cgroup = state.cgroup.as_deref();
    record::crash_point("pending");
    let (mut g, mut sock) = load_pinned(manifest, object, &base, &gen_dir, target_cgroup)?;
    // From a generation of the older layout: its translations become
    // forward entries in the shared conntrack map before the switch.
    if let Some(prev) = previous {
        super::migrate::lb_ct_to_forward(&pins::gen_dir(&base, prev), |n| g.ebpf.map(n), manifest)?;
    }
    record::crash_point("pinned");
    let entry: &mut SchedClassifier = g
        .ebpf
        .program_mut(&manifest.entry)
        .ok_or_else(|| EbpfError::Bundle(format!("no entry program {}", manifest.entry)))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| aya_err("entry program")(e.to_string()))?;
    let sw = switch_links(entry, &base, inst, previous, &manifest.entry)?;
    // 3. Read back: our new program on every interface promised.
    let att = inforce::read(&base, &inst.iface, &inst.ifaces(), &manifest.entry);
    if !inforce::all_run(&att, generation) {
        sw.undo(&base, previous, &manifest.entry);
        return Err(EbpfError::Aya {
            step: format!("reading back generation {generation} after the switch"),
            message: inforce::differences(&att, generation).join("; "),
        });
    }
    record::crash_point("switched");
    // An earlier weir's IPv4 flows, moved into weir_ct4 at the load:
    // no program looks them up in weir_ct any more.
    if let Some(ct) = g.ebpf.map(names::CT) {
        super::shared_ct::drop_split(ct, &g.split_v4);
    }
    // The connect-time links follow (or go, without services). A failure
    // here is reported after the switched TC generation is recorded.
    let cgroup_result = match (&mut sock, target_cgroup) {
        (Some(s), Some(c)) => super::cgroup::switch(s, &base, c, prev_cgroup).map(Some),
        _ => {
            super::cgroup::remove(&base);
            Ok(None)
        }
    };
    if cgroup_result.is_err() {
        super::cgroup::remove(&base);
    }
    Ok(cgroup_result)
}

fn apply_here(
    full: &[u8],
    manifest: &EbpfManifest,
    object: &[u8],
    inst: &Instance,
    cgroup: Option<&Path>,
    manifest_id: Option<weir_compiler::contract::endpoints_state::FileIdentity>,
) -> Result<Applied, EbpfError> {
    let base = inst.pin_dir();
    let recorded = record::read_state(inst).ok();
    let previous = recorded.as_ref().map(|s| s.generation);
    let prev_cgroup = recorded
        .as_ref()
        .and_then(|s| s.cgroup.clone())
        .filter(|_| super::cgroup::attached(&base));
    if let Err(e) = pins::secure(&base) {
        if previous.is_none() {
            record::remove_state(inst);
        }
        return Err(e);
    }
    let generation = pins::generations(&base)
        .last()
        .copied()
        .max(previous)
        .map_or(1, |g| g + 1);
    let ifaces = inst.ifaces();
    let mut state = State {
        generation,
        iface: inst.iface.clone(),
        extra_ifaces: ifaces[1..].to_vec(),
        netns: inst.netns.clone(),
        programs: manifest.programs.iter().map(|p| p.name.clone()).collect(),
        entry: manifest.entry.clone(),
        cgroup: cgroup.map(Path::to_path_buf).or(prev_cgroup.clone()),
        netns_cookie: statefs::netns_cookie(),
    };
    let switched = record::write_pending(inst, &state, full).and_then(|()| {
        load_and_switch(
            manifest,
            object,
            inst,
            &state,
            previous,
            prev_cgroup.as_deref(),
        )
    });
    let cgroup_result = match switched {
        Ok(r) => r,
        Err(e) => {
            record::abort(inst, generation, previous.is_none(), false);
            return Err(e);
        }
    };
    state.cgroup = cgroup_result.as_ref().ok().cloned().flatten();
    // 4. Record; older generations go.
    record::commit(inst, &state, full, manifest_id)?;
    cgroup_result?;
    // The collector in force, read back from the kernel; an LRU
    // generation's pinned collector (from an earlier hash one) goes, and
    // with its last reference its timer.
    let gc_pin = base.join(weir_compiler::ebpf::layout::gc::MAP);
    let collector = if manifest
        .maps
        .iter()
        .any(|m| m.name == weir_compiler::ebpf::layout::gc::MAP)
    {
        Some(super::gc::read_pinned(&gc_pin)?)
    } else {
        let _ = std::fs::remove_file(&gc_pin);
        None
    };
    Ok(Applied {
        collector,
        generation,
        previous,
        programs: manifest
            .programs
            .iter()
            .map(|p| (p.name.clone(), p.insns))
            .collect(),
    })
}

/// Detaches and removes everything this instance pinned and recorded —
/// links, pins, state, endpoint record, lock, and the pin and state roots
/// when nothing else is in them. Returns whether anything was there.
pub fn detach(inst: &Instance) -> Result<bool, EbpfError> {
    require_root()?;
    pins::ensure_bpffs_for(&inst.pin_root)?;
    let base = inst.pin_dir();
    if !base.exists() && !inst.state_dir().exists() {
        return Ok(false);
    }
    let _lock = record::lock(inst)?;
    for lp in pins::pinned_links(&base) {
        pins::unpin_link(&lp)?;
    }
    if base.exists() {
        std::fs::remove_dir_all(&base).map_err(io(format!("removing {}", base.display())))?;
    }
    let _ = std::fs::remove_dir(pins::host_view(&inst.pin_root));
    record::remove_state(inst);
    Ok(true)
}

/// What is applied, and what the kernel holds: each interface's link and
/// program, read back. As root, an interrupted apply is finished or
/// rolled back first (and said so in `recovered`).
pub fn status(inst: &Instance) -> Result<Status, EbpfError> {
    let mut recovered = None;
    let _lock = if is_root() && (inst.state_dir().exists() || inst.pin_dir().exists()) {
        let lock = record::lock(inst)?;
        pins::ensure_bpffs_for(&inst.pin_root)?;
        recovered = match in_netns(inst.netns.as_deref(), || record::recover(inst)) {
            Ok(note) => note,
            Err(e) => Some(format!("recovering an interrupted apply failed: {e}")),
        };
        Some(lock)
    } else {
        None
    };
    let st = record::read_state(inst)?;
    let base = inst.pin_dir();
    let ifaces = st.ifaces();
    let in_force = in_netns(inst.netns.as_deref(), || {
        Ok(inforce::read(&base, &st.iface, &ifaces, &st.entry))
    })?;
    Ok(Status {
        instance: inst.name(),
        attached: inforce::all_run(&in_force, st.generation),
        differences: inforce::differences(&in_force, st.generation),
        in_force,
        recovered,
        iface: st.iface,
        ifaces,
        generation: st.generation,
        programs: st.programs,
        cgroup_attached: st.cgroup.is_some() && super::cgroup::attached(&base),
        cgroup: st.cgroup.map(|c| c.display().to_string()),
        services: record::services_in_force(inst)
            .map(|lb| service_status(&lb))
            .unwrap_or_default(),
        collector: super::gc::read_pinned(&base.join(weir_compiler::ebpf::layout::gc::MAP)).ok(),
    })
}

/// Per-rule counters of the running generation, with rule names.
pub fn stats(inst: &Instance) -> Result<Vec<RuleCount>, EbpfError> {
    rule_counts(inst, false)
}

/// The audit counters of the running generation (`weir_audit_cnt`: what
/// audit policies would have decided, docs/language.md §4, "Audit
/// policies"), with rule names; empty when it has no audit policies.
pub fn audit_stats(inst: &Instance) -> Result<Vec<RuleCount>, EbpfError> {
    rule_counts(inst, true)
}

/// The enforced (`weir_cnt`) or audit (`weir_audit_cnt`) counters, one
/// per provenance id of the recorded manifest.
fn rule_counts(inst: &Instance, audit: bool) -> Result<Vec<RuleCount>, EbpfError> {
    require_root()?;
    let _lock = record::settle(inst)?;
    let st = record::read_state(inst)?;
    let text = std::fs::read_to_string(inst.state_dir().join("manifest.json"))
        .map_err(io("reading the state manifest"))?;
    let full = weir_compiler::contract::parse(text.as_bytes()).map_err(|e| {
        EbpfError::Bundle(format!(
            "the manifest recorded at apply: {e} (apply the bundle again)"
        ))
    })?;
    let prov = full.provenance;
    let (map_name, n) = if audit {
        let n = full
            .backends
            .ebpf
            .as_ref()
            .map_or(0, |e| e.program.audit_counters);
        if n == 0 {
            return Ok(Vec::new());
        }
        (names::AUDIT_CNT, n.min(prov.len() as u32))
    } else {
        (names::CNT, prov.len() as u32)
    };
    let path = inst
        .pin_dir()
        .join(format!("gen-{}", st.generation))
        .join(map_name);
    let data =
        MapData::from_pin(&path).map_err(|e| aya_err("opening the counter map")(e.to_string()))?;
    let map =
        Map::from_map_data(data).map_err(|e| aya_err("opening the counter map")(e.to_string()))?;
    // Non-LRU tables: one more counter after the provenance ids.
    let fixed = !audit
        && full.backends.ebpf.as_ref().is_some_and(|e| {
            e.program.state_tables.kind == weir_compiler::ebpf::state_tables::CtTable::Hash
        });
    let counts = read_counters(&map, n + u32::from(fixed))?;
    let mut out: Vec<RuleCount> = prov
        .iter()
        .zip(&counts)
        .enumerate()
        .map(|(i, (p, n))| RuleCount {
            id: i as u32,
            kind: p.kind.name().to_string(),
            description: p.description.clone(),
            packets: *n,
        })
        .collect();
    if fixed {
        out.push(RuleCount {
            id: n,
            kind: "table-full".into(),
            description: "new flow denied: the per-flow table weir_ct was full".into(),
            packets: counts.get(n as usize).copied().unwrap_or(0),
        });
    }
    Ok(out)
}

/// New flows (TC) and connect-time rewrites of one service, or of one
/// backend of it, from [`service_stats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceCount {
    pub service: String,
    /// `addr:port`; `None` for the service total.
    pub backend: Option<String>,
    pub flows: u64,
}

fn open_pinned(path: &Path) -> Option<Map> {
    let data = MapData::from_pin(path).ok()?;
    Map::from_map_data(data).ok()
}

/// Per-service and per-backend flow counts of the running generation
/// (`weir_lb_scnt`, `weir_lb_bcnt`, summed over CPUs; names from the
/// recorded service state). Empty without services.
pub fn service_stats(inst: &Instance) -> Result<Vec<ServiceCount>, EbpfError> {
    require_root()?;
    let _lock = record::settle(inst)?;
    let st = record::read_state(inst)?;
    let Some(lb) = record::services_in_force(inst) else {
        return Ok(Vec::new());
    };
    let dir = inst.pin_dir().join(format!("gen-{}", st.generation));
    use weir_compiler::ebpf::layout::service::map as lbm;
    let (Some(sm), Some(bm)) = (
        open_pinned(&dir.join(lbm::SVC_CNT)),
        open_pinned(&dir.join(lbm::BE_CNT)),
    ) else {
        return Ok(Vec::new());
    };
    let per_service = read_counters(&sm, lb.capacity.services.max(1))?;
    let per_backend = read_counters(&bm, lb.capacity.backends.max(1))?;
    let mut out = Vec::new();
    for (i, svc) in lb.services.iter().enumerate() {
        out.push(ServiceCount {
            service: svc.name.clone(),
            backend: None,
            flows: per_service.get(i).copied().unwrap_or(0),
        });
        let mut seen = std::collections::BTreeSet::new();
        for b in svc.sets.values().flat_map(|set| &set.backends) {
            if !seen.insert((b.addr, b.port)) {
                continue;
            }
            let flows = lb
                .backend_id(i, b.addr, b.port)
                .and_then(|id| per_backend.get(id as usize).copied())
                .unwrap_or(0);
            out.push(ServiceCount {
                service: svc.name.clone(),
                backend: Some(sock(b.addr, b.port)),
                flows,
            });
        }
    }
    Ok(out)
}

/// Name of the entry program (for tools).
pub const ENTRY: &str = layout::MAIN_PROGRAM;
