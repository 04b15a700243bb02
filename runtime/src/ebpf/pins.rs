//! The bpffs side of an instance: which bpffs holds its pins, the pin
//! directories, and the pinned links in them.
//!
//! Why a module: pins are the only thing that keeps a generation running
//! after `weir` exits, so where they go decides whether an apply lasts.
//!
//! - **Which bpffs.** Each `mount -t bpf` is a new, empty file system.
//!   `ip netns exec` runs the command in a new mount namespace with `/sys`
//!   remounted, so `/sys/fs/bpf` there is not the node's bpffs; pins made
//!   in a bpffs mounted inside vanish with the command, detaching
//!   everything. [`host_view`] therefore reaches the node's bpffs through
//!   the root of the process `ip netns exec` was started from
//!   (`/proc/<pid>/root/sys/fs/bpf/...`), and [`ensure_bpffs_for`] refuses
//!   when there is no lasting bpffs to pin in.
//! - **Who may write.** A pin directory another user can write to lets
//!   that user unpin the links (detaching the policy) or plant objects. The
//!   node's bpffs is mounted `mode=700` (as systemd does) and every pin
//!   directory is created root-owned `0700` and refused otherwise
//!   ([`crate::statefs::secure_dir`]).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use aya::programs::links::PinnedLink;

use super::EbpfError;
use crate::statefs;

/// Where the node's bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

/// `statfs(2)` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn is_bpffs(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

fn mount_ns(pid: &str) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
}

fn parent(pid: &str) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may contain spaces and parens.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1).map(str::to_string)
}

/// The nearest ancestor process in another mount namespace (the one
/// `ip netns exec` was started from), and whether its `/sys/fs/bpf` is a
/// bpffs we can reach through `/proc/<pid>/root`. PID 1 may be
/// unreadable (it is on some hosts), so the walk goes up the parents.
fn outer_bpffs() -> (bool, Option<PathBuf>) {
    let Some(ours) = mount_ns("self") else {
        return (false, None);
    };
    let mut pid = "self".to_string();
    for _ in 0..64 {
        let Some(pp) = parent(&pid) else { break };
        if pp == "0" {
            break;
        }
        match mount_ns(&pp) {
            Some(ns) if ns != ours => {
                let root =
                    PathBuf::from(format!("/proc/{pp}/root")).join(BPFFS.trim_start_matches('/'));
                return (true, is_bpffs(&root).then_some(root));
            }
            _ => {}
        }
        pid = pp;
    }
    (false, None)
}

/// The path through which `pin_root` reaches the node's bpffs: itself
/// when `/sys/fs/bpf` is a bpffs here; else, when we run in a mount
/// namespace of our own whose `/sys` was remounted (`ip netns exec`), the
/// same path below the root of the nearest ancestor process in another
/// mount namespace that has one (`/proc/<pid>/root/sys/fs/bpf/...`).
pub fn host_view(pin_root: &Path) -> PathBuf {
    let Ok(rest) = pin_root.strip_prefix(BPFFS) else {
        return pin_root.to_path_buf();
    };
    if is_bpffs(Path::new(BPFFS)) {
        return pin_root.to_path_buf();
    }
    match outer_bpffs() {
        (_, Some(root)) => root.join(rest),
        _ => pin_root.to_path_buf(),
    }
}

/// Makes sure `pin_root` lies on a bpffs that outlives this command:
/// mounts the node's bpffs `mode=700` on `/sys/fs/bpf` when nothing is
/// mounted there and we run in the namespace we were started in; refuses
/// in a mount namespace of our own (`ip netns exec`) when no ancestor's
/// bpffs can be reached — a bpffs mounted there would vanish with the
/// command, detaching everything.
pub fn ensure_bpffs_for(pin_root: &Path) -> Result<(), EbpfError> {
    if !pin_root.starts_with(BPFFS) || is_bpffs(Path::new(BPFFS)) {
        // A pin root elsewhere (tests): its own bpffs, the caller's choice.
        return Ok(());
    }
    match outer_bpffs() {
        (_, Some(_)) => Ok(()),
        (true, None) => Err(EbpfError::Aya {
            step: "finding the node's bpffs".into(),
            message: format!(
                "{BPFFS} is not mounted in this mount namespace (`ip netns exec` remounts /sys) and the node's cannot be reached: pins made here would vanish when weir exits, detaching the policy; mount bpffs on the node's {BPFFS} or use `--netns NAME`"
            ),
        }),
        (false, None) => mount_bpffs(),
    }
}

/// Mounts bpffs on `/sys/fs/bpf` when nothing is mounted there (the
/// default pin root).
pub fn ensure_bpffs() -> Result<(), EbpfError> {
    ensure_bpffs_for(Path::new(BPFFS))
}

fn mount_bpffs() -> Result<(), EbpfError> {
    let _ = std::fs::create_dir_all(BPFFS);
    let st = std::process::Command::new("mount")
        .args(["-t", "bpf", "-o", "mode=700", "bpf", BPFFS])
        .status()
        .map_err(|source| EbpfError::Io {
            context: "running mount -t bpf".into(),
            source,
        })?;
    if !st.success() {
        return Err(EbpfError::Aya {
            step: format!("mounting bpffs on {BPFFS}"),
            message: format!("mount exited with {st}"),
        });
    }
    Ok(())
}

/// Creates (root-owned `0700`) or checks an instance's pin directory and
/// every directory above it.
pub fn secure(dir: &Path) -> Result<(), EbpfError> {
    statefs::secure_dir(dir).map_err(|source| EbpfError::Io {
        context: format!("pin directory {}", dir.display()),
        source,
    })
}

/// Creates a generation's directory `0700` below a secured pin directory.
pub fn create_gen_dir(dir: &Path) -> Result<(), EbpfError> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|source| EbpfError::Io {
            context: format!("creating {}", dir.display()),
            source,
        })
}

/// `gen-N` of a pin directory.
pub fn gen_dir(base: &Path, generation: u64) -> PathBuf {
    base.join(format!("gen-{generation}"))
}

/// The pinned link of `iface` under `base` (`link` for the primary).
pub fn link_path(base: &Path, primary: &str, iface: &str) -> PathBuf {
    if iface == primary {
        base.join("link")
    } else {
        base.join(format!("link-{iface}"))
    }
}

/// Pinned TC links under `base`: `link` and `link-*`.
pub fn pinned_links(base: &Path) -> Vec<PathBuf> {
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

/// Unpins a link: the last reference goes, the program is detached.
pub fn unpin_link(path: &Path) -> Result<(), EbpfError> {
    let link = PinnedLink::from_pin(path).map_err(|e| EbpfError::Aya {
        step: "opening the pinned link".into(),
        message: e.to_string(),
    })?;
    let fd = link.unpin().map_err(|source| EbpfError::Io {
        context: format!("unpinning {}", path.display()),
        source,
    })?;
    drop(fd);
    Ok(())
}

/// The generations pinned under `base`, ascending.
pub fn generations(pin_dir: &Path) -> Vec<u64> {
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

/// Removes a pin directory (or a generation's) with everything in it.
pub fn remove_all(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}
