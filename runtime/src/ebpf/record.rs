//! The eBPF instance's record, written so that a crash at any point is
//! recovered by the next command.
//!
//! Files in the instance's state directory (`0700`, files `0600`, see
//! [`crate::statefs`]): `state.json` (the generation in force, its
//! interfaces and programs), `manifest.json` (its bundle manifest, for
//! `stats` and `endpoints`), `pending.json` (an apply in progress: the
//! state and manifest it will record), `lock`, and the endpoint record.
//!
//! Protocol of an apply of generation K (under the lock):
//!
//! 1. `pending.json` is written (K's state and manifest);
//! 2. `gen-K/` is loaded and pinned; the links switch to K;
//! 3. the kernel is read back ([`super::inforce`]);
//! 4. [`commit`]: `manifest.json`, `state.json`, the endpoint record, then
//!    `pending.json` is removed; older generations and links of
//!    interfaces no longer listed go.
//!
//! [`recover`] runs first in every command that reads the record. The
//! pinned links say which generation is in force: with `pending.json`
//! present, if any link runs K the switch happened (at least in part), so
//! the remaining links are switched and K is committed (roll forward);
//! if none runs K, K's pins and the intent are removed (roll back). Without
//! `pending.json`, generations that are neither recorded nor run by a link
//! are leftovers of a crash and are removed.

use std::path::{Path, PathBuf};

use aya::programs::SchedClassifier;
use serde::{Deserialize, Serialize};
use weir_compiler::ebpf::layout;

use super::attach::{attach_new, in_netns, update_link, Instance};
use super::{cgroup, inforce, pins, EbpfError};
use crate::statefs;
use weir_compiler::contract::endpoints_state::{FileIdentity, Header};

pub const STATE: &str = "state.json";
pub const MANIFEST: &str = "manifest.json";
pub const PENDING: &str = "pending.json";

fn default_entry() -> String {
    layout::MAIN_PROGRAM.to_string()
}

/// `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub generation: u64,
    pub iface: String,
    /// Further interfaces (links `link-<iface>`); absent in state written
    /// by single-interface versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_ifaces: Vec<String>,
    pub netns: Option<String>,
    pub programs: Vec<String>,
    /// The entry program (pinned `gen-N/prog_<entry>`, on the links).
    #[serde(default = "default_entry")]
    pub entry: String,
    /// The cgroup the connect-time programs are attached to.
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
    /// The cookie of the namespace applied to ([`statefs::netns_cookie`]):
    /// the instance is named by the namespace's inode number, which the
    /// kernel gives to a new namespace once the old one is gone. Absent
    /// in state written by earlier versions (then not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_cookie: Option<u64>,
}

impl State {
    /// Every interface, the primary first.
    pub fn ifaces(&self) -> Vec<String> {
        let mut v = vec![self.iface.clone()];
        v.extend(self.extra_ifaces.iter().cloned());
        v
    }
}

/// `pending.json`: what an apply in progress will record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    state: State,
    /// The bundle's manifest, its exact text (recorded as is at commit).
    manifest: String,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EbpfError {
    let context = context.into();
    move |source| EbpfError::Io { context, source }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let text = statefs::read_text(path).ok().flatten()?;
    serde_json::from_str(&text).ok()
}

/// The recorded state, or [`EbpfError::NotApplied`].
pub fn read_state(inst: &Instance) -> Result<State, EbpfError> {
    let p = inst.state_dir().join(STATE);
    let text = match statefs::read_text(&p) {
        Ok(Some(t)) => t,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(EbpfError::NotPrivileged {
                detail: format!("reading {}: {e} (the state is root's)", p.display()),
            })
        }
        _ => {
            return Err(EbpfError::NotApplied {
                instance: inst.name(),
            })
        }
    };
    serde_json::from_str(&text).map_err(|e| EbpfError::Bundle(format!("{}: {e}", p.display())))
}

fn write_json(dir: &Path, name: &str, v: &impl Serialize) -> Result<(), EbpfError> {
    statefs::write_file(
        &dir.join(name),
        &serde_json::to_vec_pretty(v).expect("JSON"),
    )
    .map_err(io(format!("writing {}", dir.join(name).display())))
}

/// A crash injected for the fault tests: when `WEIR_CRASH_AT` names this
/// point, the process kills itself with SIGKILL (as `kill -9` would).
/// Points: `pending` (intent written), `pinned` (generation loaded and
/// pinned, nothing switched), `switched` (links switched and read back,
/// nothing recorded), `recorded` (`state.json` written, intent not yet
/// removed).
pub fn crash_point(name: &str) {
    if std::env::var_os("WEIR_CRASH_AT").is_some_and(|v| v == name) {
        // SAFETY: kill/getpid have no preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Step 1: records the intent to apply `state` (see the module docs).
pub fn write_pending(inst: &Instance, state: &State, manifest: &[u8]) -> Result<(), EbpfError> {
    let sd = inst.state_dir();
    statefs::secure_dir(&sd).map_err(io(format!("state directory {}", sd.display())))?;
    write_json(
        &sd,
        PENDING,
        &Pending {
            state: state.clone(),
            manifest: String::from_utf8_lossy(manifest).into_owned(),
        },
    )
}

/// Step 4: records `state` as in force and retires everything else.
pub fn commit(
    inst: &Instance,
    state: &State,
    manifest: &[u8],
    manifest_id: Option<FileIdentity>,
) -> Result<(), EbpfError> {
    let sd = inst.state_dir();
    statefs::write_file(&sd.join(MANIFEST), manifest)
        .map_err(io(format!("writing {}", sd.join(MANIFEST).display())))?;
    write_json(&sd, STATE, state)?;
    crash_point("recorded");
    // The endpoints in force: the compiled ones (for `weir endpoints`).
    // The manifest was checked when the bundle was read; one recovered
    // from `pending.json` is checked again here.
    if let Ok(m) = weir_compiler::contract::parse(manifest) {
        let header = Header::new(state.generation, m.source_hash.clone(), manifest_id);
        crate::record::applied(&sd, &m, header, false);
    }
    statefs::remove_file(&sd.join(PENDING)).map_err(io("removing pending.json"))?;
    retire(&inst.pin_dir(), Some(state));
    Ok(())
}

/// The service-map state of the generation in force (after any endpoint
/// updates, [`crate::record::lb_in_force`]); `None` without services or
/// without a generation in force.
pub fn services_in_force(inst: &Instance) -> Option<weir_compiler::ebpf::service::LbState> {
    let generation = read_state(inst).ok()?.generation;
    let sd = inst.state_dir();
    crate::record::lb_in_force(&sd, generation, || {
        let text = std::fs::read(sd.join(MANIFEST)).ok()?;
        weir_compiler::contract::parse(&text).ok()
    })
}

/// Removes generations other than `keep`'s and links of interfaces it
/// does not list — but never a generation a link still runs (its prog
/// array would lose its slots).
fn retire(base: &Path, keep: Option<&State>) {
    let Some(keep) = keep else { return };
    let listed: Vec<PathBuf> = keep
        .ifaces()
        .iter()
        .map(|i| pins::link_path(base, &keep.iface, i))
        .collect();
    for lp in pins::pinned_links(base) {
        if !listed.contains(&lp) {
            let _ = pins::unpin_link(&lp);
        }
    }
    let running: Vec<u32> = pins::pinned_links(base)
        .iter()
        .filter_map(|l| inforce::link_program(l))
        .collect();
    for g in pins::generations(base) {
        let runs = inforce::entry_id(base, g, &keep.entry).is_some_and(|id| running.contains(&id));
        if g != keep.generation && !runs {
            pins::remove_all(&pins::gen_dir(base, g));
        }
    }
}

/// Undoes an apply of generation `g` that did not switch: its pins and
/// intent go; after a failed first apply (`first`), everything the
/// instance had — the node is as before — except the lock when the caller
/// goes on holding it (`keep_lock`: recovery before an apply; removing it
/// then would let a second apply lock a new file).
pub fn abort(inst: &Instance, g: u64, first: bool, keep_lock: bool) {
    let base = inst.pin_dir();
    pins::remove_all(&pins::gen_dir(&base, g));
    // The aborted generation may have armed the shared conntrack
    // collector (its timer and workqueue then hold its program): the
    // generation in force arms it again with its own callbacks, which
    // releases the aborted one's. Best effort: without it the aborted
    // program keeps collecting by the same rules until the next apply.
    if !first && read_state(inst).is_ok_and(|st| st.generation != g) {
        let _ = super::gc::rearm(inst, super::gc::Config::default(), false);
    }
    let sd = inst.state_dir();
    let _ = statefs::remove_file(&sd.join(PENDING));
    if first && pins::pinned_links(&base).is_empty() {
        pins::remove_all(&base);
        let _ = std::fs::remove_dir(pins::host_view(&inst.pin_root));
        if keep_lock {
            let _ = crate::statefs::remove_state(&sd, &[STATE, MANIFEST, PENDING]);
        } else {
            remove_state(inst);
        }
    }
}

/// Removes the instance's state directory contents (and the directory,
/// and the state root when empty).
pub fn remove_state(inst: &Instance) {
    let sd = inst.state_dir();
    let _ = crate::statefs::remove_state(&sd, &[STATE, MANIFEST, PENDING, statefs::LOCK]);
    let _ = std::fs::remove_dir(&inst.state_root);
    if inst.state_root == Path::new(super::attach::STATE_ROOT) {
        let _ = std::fs::remove_dir(statefs::STATE_ROOT);
    }
}

/// Switches every interface of `state` that does not run its generation
/// to it, from the pinned program (finishing an interrupted switch).
fn finish_switch(base: &Path, state: &State, att: &[inforce::Attachment]) -> Result<(), EbpfError> {
    let g = state.generation;
    let path = pins::gen_dir(base, g).join(format!("prog_{}", state.entry));
    let mut prog = SchedClassifier::from_pin(&path).map_err(|e| EbpfError::Aya {
        step: format!("opening {}", path.display()),
        message: e.to_string(),
    })?;
    for a in att.iter().filter(|a| a.generation != Some(g)) {
        let lp = pins::link_path(base, &state.iface, &a.iface);
        if lp.exists() {
            update_link(&mut prog, &lp)?;
        } else {
            attach_new(&mut prog, &a.iface, &lp)?;
        }
    }
    Ok(())
}

/// Finishes or rolls back an interrupted apply (see the module docs). Runs
/// in the instance's namespace, under its lock. Returns what it did.
pub fn recover(inst: &Instance) -> Result<Option<String>, EbpfError> {
    let base = inst.pin_dir();
    let recorded = read_state(inst).ok();
    let pending = read_json::<Pending>(&inst.state_dir().join(PENDING));
    let made_for = recorded.as_ref().or(pending.as_ref().map(|p| &p.state));
    if let Some(note) = forget_dead_namespace(inst, made_for) {
        return Ok(Some(note));
    }
    let Some(p) = pending else {
        retire(&base, recorded.as_ref());
        return Ok(None);
    };
    let g = p.state.generation;
    let ifaces = p.state.ifaces();
    let att = inforce::read(&base, &p.state.iface, &ifaces, &p.state.entry);
    if !att.iter().any(|a| a.generation == Some(g)) {
        abort(inst, g, recorded.is_none(), true);
        return Ok(Some(format!(
            "rolled back an interrupted apply of generation {g} (it never ran)"
        )));
    }
    finish_switch(&base, &p.state, &att)?;
    let att = inforce::read(&base, &p.state.iface, &ifaces, &p.state.entry);
    if !inforce::all_run(&att, g) {
        return Err(EbpfError::Aya {
            step: format!("finishing the interrupted apply of generation {g}"),
            message: inforce::differences(&att, g).join("; "),
        });
    }
    let mut state = p.state;
    if !cgroup::attached(&base) {
        state.cgroup = None;
    }
    commit(inst, &state, p.manifest.as_bytes(), None)?;
    Ok(Some(format!(
        "finished an interrupted apply of generation {g}"
    )))
}

/// Removes an instance recorded for another namespace that had this
/// one's inode number (see [`State::netns_cookie`]): that namespace is
/// gone, so its links hold nothing and its record describes nothing here.
/// Runs in the instance's namespace, under its lock (which stays).
fn forget_dead_namespace(inst: &Instance, made_for: Option<&State>) -> Option<String> {
    let (st, recorded) = made_for.and_then(|s| s.netns_cookie.map(|c| (s, c)))?;
    let here = statefs::netns_cookie()?;
    if here == recorded {
        return None;
    }
    let base = inst.pin_dir();
    for lp in pins::pinned_links(&base) {
        let _ = pins::unpin_link(&lp);
    }
    pins::remove_all(&base);
    let _ = std::fs::remove_dir(pins::host_view(&inst.pin_root));
    let sd = inst.state_dir();
    let _ = crate::statefs::remove_state(&sd, &[STATE, MANIFEST, PENDING]);
    Some(format!(
        "removed generation {} of namespace {} (cookie {recorded}), which is gone: this namespace (cookie {here}) was given its inode number",
        st.generation,
        st.netns.as_deref().unwrap_or("(unnamed)")
    ))
}

/// Takes the instance's lock and recovers an interrupted apply; the lock
/// is held while the returned file lives. `NotApplied` (creating nothing)
/// when the instance has neither state nor pins.
pub fn settle(inst: &Instance) -> Result<std::fs::File, EbpfError> {
    if !inst.state_dir().exists() && !inst.pin_dir().exists() {
        return Err(EbpfError::NotApplied {
            instance: inst.name(),
        });
    }
    let lock = lock(inst)?;
    pins::ensure_bpffs_for(&inst.pin_root)?;
    in_netns(inst.netns.as_deref(), || recover(inst))?;
    Ok(lock)
}

/// The instance's lock (one per namespace and interface).
pub fn lock(inst: &Instance) -> Result<std::fs::File, EbpfError> {
    let sd = inst.state_dir();
    statefs::lock(&sd).map_err(io(format!("locking {}", sd.join(statefs::LOCK).display())))
}
