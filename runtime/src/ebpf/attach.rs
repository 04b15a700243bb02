//! Applying a bundle to an interface, generation by generation.
//!
//! Everything lives under `/sys/fs/bpf/weir/<instance>/` (bpffs is
//! mounted there if it is not):
//!
//! - `link` — the pinned TCX link of the entry program on the interface's
//!   ingress (it outlives this process);
//! - `weir_ct` — the conntrack map, shared by every generation (reused by
//!   name when a new generation loads), so a switch loses no connection;
//! - `gen-N/` — generation N's maps (`weir_cnt`, `weir_jmp`, …) and
//!   programs, pinned so that the prog array keeps its slots and `weir
//!   stats` can read the counters after we exit.
//!
//! and the bundle's manifest plus a small state file under
//! `/run/weir/ebpf/<instance>/` (rule names for `stats`).
//!
//! **Apply** loads and fills generation N+1 completely (verifier, maps,
//! prog array), pins it, and only then switches: the first time by
//! creating the TCX link, later by `bpf_link_update` on the pinned link —
//! one atomic step. Any failure before the switch leaves generation N
//! running untouched. After the switch generation N's pins are removed
//! (the kernel frees its programs and maps once the link drops them).
//! **Detach** unpins the link (which detaches the program) and removes the
//! instance's pins and state.

use std::path::{Path, PathBuf};

use aya::maps::{Map, MapData};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use serde::{Deserialize, Serialize};
use weir_compiler::ebpf::codegen::layout::{self, map as names};
use weir_compiler::ebpf::codegen::EbpfManifest;

use super::load::{load, read_counters};
use super::EbpfError;

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
            state_root: PathBuf::from("/run/weir/ebpf"),
        }
    }

    /// `host-eth0`, `netns-node-veth1`.
    pub fn name(&self) -> String {
        match &self.netns {
            Some(n) => format!("netns-{n}-{}", self.iface),
            None => format!("host-{}", self.iface),
        }
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.pin_root.join(self.name())
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

/// The pinned link of `iface` under `base` (`link` for the primary).
fn link_path(base: &Path, primary: &str, iface: &str) -> PathBuf {
    if iface == primary {
        base.join("link")
    } else {
        base.join(format!("link-{iface}"))
    }
}

/// Pinned TC links under `base`: `link` and `link-*`.
fn pinned_links(base: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(base)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n == "link" || n.starts_with("link-")
        })
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

fn unpin_link(path: &Path) -> Result<(), EbpfError> {
    let link = PinnedLink::from_pin(path)
        .map_err(|e| aya_err("opening the pinned link")(e.to_string()))?;
    let fd = link
        .unpin()
        .map_err(io(format!("unpinning {}", path.display())))?;
    // Closing the last reference destroys the link: detached.
    drop(fd);
    Ok(())
}

/// Points the pinned link at `path` to `prog` (link update).
fn update_link(prog: &mut SchedClassifier, path: &Path) -> Result<(), EbpfError> {
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
fn attach_new(prog: &mut SchedClassifier, iface: &str, path: &Path) -> Result<(), EbpfError> {
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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    generation: u64,
    iface: String,
    /// Further interfaces (links `link-<iface>`); absent in state written
    /// by single-interface versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    extra_ifaces: Vec<String>,
    netns: Option<String>,
    programs: Vec<String>,
    /// The cgroup the connect-time programs are attached to.
    #[serde(default)]
    cgroup: Option<PathBuf>,
}

/// Result of [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub generation: u64,
    pub previous: Option<u64>,
    pub programs: Vec<(String, usize)>,
}

/// Result of [`status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub instance: String,
    pub iface: String,
    /// Every interface the program is attached to (`iface` first).
    pub ifaces: Vec<String>,
    pub generation: u64,
    /// The pinned link of every interface exists (the program is attached).
    pub attached: bool,
    pub programs: Vec<String>,
    /// The cgroup the connect-time programs (`connect4`, `sendmsg4`,
    /// `recvmsg4`) were attached to at `weir apply --cgroup`.
    pub cgroup: Option<String>,
    /// Their pinned links exist.
    pub cgroup_attached: bool,
    /// Services with their current backends (after `weir endpoints`
    /// updates; from the recorded service-map state).
    pub services: Vec<ServiceStatus>,
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

/// One counter of [`stats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleCount {
    pub id: u32,
    pub kind: String,
    pub description: String,
    pub packets: u64,
}

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

fn require_root() -> Result<(), EbpfError> {
    if unsafe { libc::geteuid() } != 0 {
        return Err(EbpfError::NotPrivileged {
            detail: "run as root".into(),
        });
    }
    Ok(())
}

/// Mounts bpffs on `/sys/fs/bpf` when nothing is mounted there.
pub fn ensure_bpffs() -> Result<(), EbpfError> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some("/sys/fs/bpf") && l.split(' ').nth(2) == Some("bpf"))
    {
        return Ok(());
    }
    let _ = std::fs::create_dir_all("/sys/fs/bpf");
    let st = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .status()
        .map_err(io("running mount -t bpf"))?;
    if !st.success() {
        return Err(EbpfError::Aya {
            step: "mounting bpffs on /sys/fs/bpf".into(),
            message: format!("mount exited with {st}"),
        });
    }
    Ok(())
}

/// Runs `f` on a thread that has entered `netns` (if any): interface names
/// and TC attachment then refer to that namespace, while bpffs and the
/// file system stay the host's.
fn in_netns<T: Send>(
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

fn generations(pin_dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(pin_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("gen-"))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    v.sort();
    v
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
            crate::endpoints::file_identity(&dir.join("manifest.json")),
        )],
        taken,
    )
    .and_then(|mut ids| ids.pop())
    .and_then(|(_, id)| id);
    let bundle = read_bundle(dir)?;
    let (full, manifest, object) = (&bundle.manifest, bundle.ebpf(), &bundle.object);
    if cgroup.is_some() && manifest.lb.is_none() {
        return Err(EbpfError::Bundle(
            "`--cgroup` attaches connect-time load balancing, but the bundle has no services"
                .into(),
        ));
    }
    if let Some(c) = cgroup {
        super::cgroup::open_cgroup(c)?;
    }
    ensure_bpffs()?;
    let applied = in_netns(inst.netns.as_deref(), || {
        for i in inst.ifaces() {
            check_iface(&i)?;
        }
        apply_here(&bundle.text, manifest, object, inst, cgroup)
    })?;
    // The endpoints in force: the compiled ones (for `weir endpoints`).
    crate::endpoints::ebpf_applied(inst, full, applied.generation, manifest_id);
    Ok(applied)
}

fn apply_here(
    full: &[u8],
    manifest: &EbpfManifest,
    object: &[u8],
    inst: &Instance,
    cgroup: Option<&Path>,
) -> Result<Applied, EbpfError> {
    let base_ = inst.pin_dir();
    let prev_cgroup = read_state(inst)
        .ok()
        .and_then(|s| s.cgroup)
        .filter(|_| super::cgroup::attached(&base_));
    let target_cgroup = cgroup.map(Path::to_path_buf).or(prev_cgroup.clone());
    let base = inst.pin_dir();
    std::fs::create_dir_all(&base).map_err(io(format!("creating {}", base.display())))?;
    let gens = generations(&base);
    let previous = gens.last().copied();
    let generation = previous.map_or(1, |g| g + 1);
    let gen_dir = base.join(format!("gen-{generation}"));
    let _ = std::fs::remove_dir_all(&gen_dir);

    // 1. Load and fill the new generation completely.
    let mut g = load(object, manifest, Some(&base))?;
    std::fs::create_dir_all(&gen_dir).map_err(io(format!("creating {}", gen_dir.display())))?;
    let pin_all = |g: &mut super::Generation| -> Result<(), EbpfError> {
        for (name, map) in g.ebpf.maps() {
            if name == names::CT {
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
                .map_err(|e: aya::programs::ProgramError| {
                    aya_err("pinning programs")(e.to_string())
                })?;
            prog.pin(gen_dir.join(format!("prog_{}", p.name)))
                .map_err(|e| aya_err("pinning programs")(e.to_string()))?;
        }
        Ok(())
    };
    if let Err(e) = pin_all(&mut g) {
        let _ = std::fs::remove_dir_all(&gen_dir);
        return Err(e);
    }
    // 1b. The connect-time programs over this generation's service maps.
    let mut sock = match (&target_cgroup, &manifest.lb) {
        (Some(_), Some(lb)) => match super::cgroup::load(lb, &gen_dir) {
            Ok(e) => Some(e),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&gen_dir);
                return Err(e);
            }
        },
        _ => None,
    };

    // 2. Switch in one step per interface; on failure, the links already
    // switched go back to the previous generation, new ones are removed.
    let entry: &mut SchedClassifier = g
        .ebpf
        .program_mut(&manifest.entry)
        .ok_or_else(|| EbpfError::Bundle(format!("no entry program {}", manifest.entry)))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| aya_err("entry program")(e.to_string()))?;
    let ifaces = inst.ifaces();
    let mut updated: Vec<PathBuf> = Vec::new();
    let mut created: Vec<PathBuf> = Vec::new();
    let mut switched = Ok(());
    for i in &ifaces {
        let lp = link_path(&base, &inst.iface, i);
        let r = if lp.exists() {
            update_link(entry, &lp).map(|_| updated.push(lp.clone()))
        } else {
            attach_new(entry, i, &lp).map(|_| created.push(lp.clone()))
        };
        if let Err(e) = r {
            switched = Err(e);
            break;
        }
    }
    if switched.is_err() {
        for lp in &created {
            let _ = unpin_link(lp);
        }
        if let (false, Some(prev)) = (updated.is_empty(), previous) {
            let prev_prog = base
                .join(format!("gen-{prev}"))
                .join(format!("prog_{}", manifest.entry));
            if let Ok(mut old) = SchedClassifier::from_pin(&prev_prog) {
                for lp in &updated {
                    let _ = update_link(&mut old, lp);
                }
            }
        }
    }
    if let Err(e) = switched {
        let _ = std::fs::remove_dir_all(&gen_dir);
        return Err(e);
    }
    // 2b. The connect-time links follow (or go, without services).
    // A failure here is reported after the state of the (switched) TC
    // generation is recorded.
    let cgroup_result = match (&mut sock, &target_cgroup) {
        (Some(s), Some(c)) => super::cgroup::switch(s, &base, c, prev_cgroup.as_deref()).map(Some),
        _ => {
            super::cgroup::remove(&base);
            Ok(None)
        }
    };
    if cgroup_result.is_err() {
        super::cgroup::remove(&base);
    }
    let attached_cgroup = cgroup_result.as_ref().ok().cloned().flatten();

    // Links of interfaces no longer listed go.
    let keep: Vec<PathBuf> = ifaces
        .iter()
        .map(|i| link_path(&base, &inst.iface, i))
        .collect();
    for lp in pinned_links(&base) {
        if !keep.contains(&lp) {
            let _ = unpin_link(&lp);
        }
    }

    // 3. Retire older generations; record state.
    for old in gens {
        let _ = std::fs::remove_dir_all(base.join(format!("gen-{old}")));
    }
    let sd = inst.state_dir();
    std::fs::create_dir_all(&sd).map_err(io(format!("creating {}", sd.display())))?;
    let state = State {
        generation,
        iface: inst.iface.clone(),
        extra_ifaces: ifaces[1..].to_vec(),
        netns: inst.netns.clone(),
        programs: manifest.programs.iter().map(|p| p.name.clone()).collect(),
        cgroup: attached_cgroup,
    };
    std::fs::write(sd.join("manifest.json"), full).map_err(io("writing the state manifest"))?;
    std::fs::write(
        sd.join("state.json"),
        serde_json::to_vec_pretty(&state).expect("JSON"),
    )
    .map_err(io("writing the state file"))?;
    cgroup_result?;
    Ok(Applied {
        generation,
        previous,
        programs: manifest
            .programs
            .iter()
            .map(|p| (p.name.clone(), p.insns))
            .collect(),
    })
}

fn read_state(inst: &Instance) -> Result<State, EbpfError> {
    let p = inst.state_dir().join("state.json");
    let text = std::fs::read_to_string(&p).map_err(|_| EbpfError::NotApplied {
        instance: inst.name(),
    })?;
    serde_json::from_str(&text).map_err(|e| EbpfError::Bundle(format!("{}: {e}", p.display())))
}

/// Detaches and removes everything this instance pinned and recorded.
/// Returns whether anything was there.
pub fn detach(inst: &Instance) -> Result<bool, EbpfError> {
    require_root()?;
    ensure_bpffs()?;
    let base = inst.pin_dir();
    let mut found = false;
    for lp in pinned_links(&base) {
        found = true;
        unpin_link(&lp)?;
    }
    if base.exists() {
        found = true;
        std::fs::remove_dir_all(&base).map_err(io(format!("removing {}", base.display())))?;
    }
    let sd = inst.state_dir();
    if sd.exists() {
        found = true;
        std::fs::remove_dir_all(&sd).map_err(io(format!("removing {}", sd.display())))?;
    }
    Ok(found)
}

/// What is applied, and whether it is attached.
pub fn status(inst: &Instance) -> Result<Status, EbpfError> {
    let st = read_state(inst)?;
    let base = inst.pin_dir();
    let mut ifaces = vec![st.iface.clone()];
    ifaces.extend(st.extra_ifaces.iter().cloned());
    Ok(Status {
        instance: inst.name(),
        attached: ifaces
            .iter()
            .all(|i| link_path(&base, &st.iface, i).exists())
            && base.join(format!("gen-{}", st.generation)).exists(),
        iface: st.iface,
        ifaces,
        generation: st.generation,
        programs: st.programs,
        cgroup_attached: st.cgroup.is_some() && super::cgroup::attached(&base),
        cgroup: st.cgroup.map(|c| c.display().to_string()),
        services: crate::endpoints::ebpf_services(inst)
            .map(|lb| service_status(&lb))
            .unwrap_or_default(),
    })
}

/// Per-rule counters of the running generation, with rule names.
pub fn stats(inst: &Instance) -> Result<Vec<RuleCount>, EbpfError> {
    require_root()?;
    let st = read_state(inst)?;
    let text = std::fs::read_to_string(inst.state_dir().join("manifest.json"))
        .map_err(io("reading the state manifest"))?;
    let full = weir_compiler::contract::parse(text.as_bytes()).map_err(|e| {
        EbpfError::Bundle(format!(
            "the manifest recorded at apply: {e} (apply the bundle again)"
        ))
    })?;
    let prov = full.provenance;
    let path = inst
        .pin_dir()
        .join(format!("gen-{}", st.generation))
        .join(names::CNT);
    let data =
        MapData::from_pin(&path).map_err(|e| aya_err("opening the counter map")(e.to_string()))?;
    let map =
        Map::from_map_data(data).map_err(|e| aya_err("opening the counter map")(e.to_string()))?;
    let counts = read_counters(&map, prov.len() as u32)?;
    Ok(prov
        .iter()
        .zip(counts)
        .enumerate()
        .map(|(i, (p, n))| RuleCount {
            id: i as u32,
            kind: p.kind.name().to_string(),
            description: p.description.clone(),
            packets: n,
        })
        .collect())
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
    let st = read_state(inst)?;
    let Some(lb) = crate::endpoints::ebpf_services(inst) else {
        return Ok(Vec::new());
    };
    let dir = inst.pin_dir().join(format!("gen-{}", st.generation));
    use weir_compiler::ebpf::service::layout::map as lbm;
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

/// Prometheus text exposition of [`service_stats`].
pub fn prometheus_services(inst: &Instance, counts: &[ServiceCount]) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut s = String::from(
        "# HELP weir_service_flows_total New flows (TC) and connect-time rewrites per service (eBPF back end).\n# TYPE weir_service_flows_total counter\n",
    );
    for c in counts.iter().filter(|c| c.backend.is_none()) {
        s += &format!(
            "weir_service_flows_total{{instance=\"{}\",service=\"{}\"}} {}\n",
            esc(&inst.name()),
            esc(&c.service),
            c.flows
        );
    }
    s += "# HELP weir_backend_flows_total New flows (TC) and connect-time rewrites per service backend (eBPF back end).\n# TYPE weir_backend_flows_total counter\n";
    for c in counts {
        if let Some(b) = &c.backend {
            s += &format!(
                "weir_backend_flows_total{{instance=\"{}\",service=\"{}\",backend=\"{}\"}} {}\n",
                esc(&inst.name()),
                esc(&c.service),
                esc(b),
                c.flows
            );
        }
    }
    s
}

/// Prometheus text exposition of [`stats`].
pub fn prometheus(inst: &Instance, counts: &[RuleCount]) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut s = String::from(
        "# HELP weir_rule_packets_total Packets decided or logged by each rule (eBPF back end).\n# TYPE weir_rule_packets_total counter\n",
    );
    for c in counts {
        s += &format!(
            "weir_rule_packets_total{{instance=\"{}\",id=\"{}\",kind=\"{}\",rule=\"{}\"}} {}\n",
            esc(&inst.name()),
            c.id,
            esc(&c.kind),
            esc(&c.description),
            c.packets
        );
    }
    s
}

/// Name of the entry program (for tools).
pub const ENTRY: &str = layout::MAIN_PROGRAM;
