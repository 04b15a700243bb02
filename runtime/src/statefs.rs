//! The runtime's own files: state directories, records, locks, and the
//! identity of the network namespace they describe. One rule for both
//! back ends.
//!
//! Why: the runtime runs as root and writes where it is told
//! (`--state-dir`, `/run/weir/...`). A directory another local user can
//! write to lets that user plant a symlink where root will write (root
//! then overwrites a file of the attacker's choosing) or read endpoint
//! names, labels and addresses. So:
//!
//! - [`secure_dir`] creates a state directory (and any missing parent)
//!   `0700`, and refuses one — or any ancestor — that is not a directory
//!   owned by root (or us) or that group/others may write to (a root-owned
//!   sticky directory such as `/tmp` is allowed as an ancestor: nobody else
//!   can replace what we create in it). A symlink on the way is followed
//!   only when root owns it.
//! - [`write_file`] writes `0600` to a fresh temporary name
//!   (`O_CREAT|O_EXCL|O_NOFOLLOW`), fsyncs, renames over the target and
//!   fsyncs the directory: a crash leaves the old or the new file, never a
//!   mix. [`read_file`] opens with `O_NOFOLLOW`.
//! - [`lock`] takes the per-namespace `flock` (a file `lock` in the state
//!   directory); the lock file may be removed by whoever holds it (detach),
//!   so a waiter checks that it locked the file still at that path.
//! - [`netns_label`] names a network namespace by what it is — the inode
//!   of its nsfs file — so `--netns X` and `ip netns exec X weir …` find
//!   the same state. Inode numbers are reused once a namespace is gone,
//!   so records also keep the namespace's [`netns_cookie`], which is not.

/// Root of the default state directories: the iptables back end's
/// per-namespace directories, and the eBPF back end's `ebpf/` below it.
pub const STATE_ROOT: &str = "/run/weir";

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use weir_compiler::contract::endpoints_state::FileIdentity;

fn refuse(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "refusing {}: {why} (state and pin directories must be owned by root and writable by no one else)",
            path.display()
        ),
    )
}

fn owner_ok(uid: u32) -> bool {
    // SAFETY: geteuid has no preconditions.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

/// Checks one existing directory on the way to (or at) a state directory.
/// `leaf`: the directory itself (no sticky exception).
fn check_dir(path: &Path, m: &std::fs::Metadata, leaf: bool) -> io::Result<()> {
    if !m.is_dir() {
        return Err(refuse(path, "not a directory"));
    }
    if !owner_ok(m.uid()) {
        return Err(refuse(path, &format!("owned by uid {}", m.uid())));
    }
    let mode = m.mode();
    let sticky = mode & libc::S_ISVTX != 0;
    if mode & 0o022 != 0 && (leaf || !sticky) {
        return Err(refuse(
            path,
            &format!("mode {:o} lets group or others write", mode & 0o7777),
        ));
    }
    Ok(())
}

/// Creates `dir` (and missing parents) `0700`, or checks the existing one
/// (see the module docs); an existing leaf is tightened to `0700`.
pub fn secure_dir(dir: &Path) -> io::Result<()> {
    let mut at = PathBuf::new();
    let parts: Vec<Component> = dir.components().collect();
    for (i, c) in parts.iter().enumerate() {
        at.push(c);
        if matches!(c, Component::RootDir | Component::Prefix(_)) {
            continue;
        }
        if matches!(c, Component::ParentDir) {
            return Err(refuse(dir, "`..` in the path"));
        }
        let leaf = i + 1 == parts.len();
        let m = match std::fs::symlink_metadata(&at) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match std::fs::DirBuilder::new().mode(0o700).create(&at) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                std::fs::symlink_metadata(&at)?
            }
            Err(e) => return Err(e),
        };
        if m.file_type().is_symlink() {
            if !owner_ok(m.uid()) {
                return Err(refuse(&at, &format!("a symlink owned by uid {}", m.uid())));
            }
            if leaf {
                return Err(refuse(&at, "a symlink"));
            }
            // A root-owned link (`/var/run`, `/proc/1/root`): check the
            // directory it leads to.
            check_dir(&at, &std::fs::metadata(&at)?, false)?;
            continue;
        }
        check_dir(&at, &m, leaf)?;
    }
    let m = std::fs::symlink_metadata(dir)?;
    if m.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Reads a state file, refusing a symlink.
pub fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = open_nofollow(path)?;
    if !f.metadata()?.is_file() {
        return Err(refuse(path, "not a regular file"));
    }
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(v)
}

/// [`read_file`] as text; `None` when the file does not exist.
pub fn read_text(path: &Path) -> io::Result<Option<String>> {
    match read_file(path) {
        Ok(b) => String::from_utf8(b)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn create_excl(path: &Path) -> io::Result<File> {
    File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Replaces `path` with `data` atomically and durably, mode `0600` (see
/// the module docs). The directory must have passed [`secure_dir`].
pub fn write_file(path: &Path, data: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| refuse(path, "no file name"))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut f = match create_excl(&tmp) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Left by a killed process with our pid: unlink (never
            // follows a symlink) and create afresh.
            std::fs::remove_file(&tmp)?;
            create_excl(&tmp)?
        }
        Err(e) => return Err(e),
    };
    let written = f.write_all(data).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// Makes a rename or unlink in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)?
        .sync_all()
}

/// Removes a file; a missing one is fine.
pub fn remove_file(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes what weir keeps in a state directory — the files named in
/// `names` (with [`LOCK`] when the lock goes too), those starting with one
/// of `prefixes`, and temporaries of [`write_file`] — then the directory
/// itself if that left it empty (it may be an operator's `--state-dir` holding other
/// files: those stay). A missing directory is fine.
pub fn remove_ours(dir: &Path, names: &[&str], prefixes: &[&str]) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        let ours = names.contains(&name.as_ref())
            || prefixes.iter().any(|p| name.starts_with(p))
            || (name.starts_with('.') && name.contains(".tmp-"));
        if ours {
            remove_file(&e.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e)
            if e.kind() != io::ErrorKind::NotFound && e.raw_os_error() != Some(libc::ENOTEMPTY) =>
        {
            Err(e)
        }
        _ => Ok(()),
    }
}

/// Name of the lock file in a state directory.
pub const LOCK: &str = "lock";

/// Takes the exclusive lock of the state directory `dir` (created and
/// checked by [`secure_dir`]); released when the file is dropped. Blocks
/// while another weir holds it.
pub fn lock(dir: &Path) -> io::Result<File> {
    let path = dir.join(LOCK);
    loop {
        // (Again on every turn: the holder may have removed the directory.)
        secure_dir(dir)?;
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        // SAFETY: flock on a valid fd.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // The holder we waited for may have removed (detach) the file:
        // then our lock is on an orphan; take the one at the path.
        let ours = file.metadata()?;
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.dev() == ours.dev() && m.ino() == ours.ino() => return Ok(file),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What a network namespace is: its nsfs device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

/// The nsfs file of a named namespace (`ip netns add NAME`).
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// The identity of the named namespace, or of the calling thread's.
pub fn netns_id(netns: Option<&str>) -> io::Result<NsId> {
    let path = match netns {
        Some(n) => netns_path(n),
        None => PathBuf::from("/proc/thread-self/ns/net"),
    };
    let m = std::fs::metadata(path)?;
    Ok(NsId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// `SO_NETNS_COOKIE` (Linux 5.14+; not in the libc crate).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of the calling thread's network namespace: unlike its
/// inode number (reused once the namespace is gone), never given to
/// another namespace while the kernel runs. `None` when the kernel
/// cannot tell (before 5.14).
pub fn netns_cookie() -> Option<u64> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a fresh socket nobody else owns.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: valid fd, out pointer and length.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    (r == 0 && len as usize == std::mem::size_of::<u64>()).then_some(cookie)
}

/// The namespace's name in state and pin paths: `host` for the initial
/// namespace (PID 1's), `netns-<inode>` for any other, however it was
/// entered. A named namespace that does not exist keeps `netns-NAME` (the
/// command fails when it enters it).
pub fn netns_label(netns: Option<&str>) -> String {
    let init = std::fs::metadata("/proc/1/ns/net").ok().map(|m| NsId {
        dev: m.dev(),
        ino: m.ino(),
    });
    match (netns_id(netns), netns) {
        (Ok(id), _) if Some(id) == init => "host".to_string(),
        (Ok(id), _) if init.is_none_or(|i| i.dev == id.dev) => format!("netns-{}", id.ino),
        (Ok(id), _) => format!("netns-{}-{}", id.dev, id.ino),
        (Err(_), Some(n)) => format!("netns-{n}"),
        (Err(_), None) => "host".to_string(),
    }
}

/// The state directory of the named namespace below `root`:
/// `netns-<inode>`, or `netns-NAME` when only an earlier weir's directory
/// of that name exists (kept until detach).
pub fn state_dir_of(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(netns_label(Some(name)));
    let legacy = root.join(format!("netns-{name}"));
    if !dir.exists() && legacy.exists() {
        return legacy;
    }
    dir
}

/// The identity of `path` (device, inode, size, times), if it exists:
/// how the endpoints record and the bundle reader recognise a file they
/// have seen without reading it.
pub fn file_identity(path: &Path) -> Option<FileIdentity> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileIdentity {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// Removes the endpoint record, its side files and an earlier weir's
/// record from the state directory `dir` (detach), with the back end's
/// own files `names`, and the directory when nothing else is left.
pub fn remove_state(dir: &Path, names: &[&str]) -> std::io::Result<()> {
    use weir_compiler::contract::endpoints_state::{LEGACY_RECORD, RECORD, SIDE};
    let mut all = vec![RECORD, LEGACY_RECORD];
    all.extend_from_slice(names);
    remove_ours(dir, &all, &[SIDE])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("weir-statefs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn creates_private_dirs_and_files() {
        let d = scratch("create").join("a").join("b");
        secure_dir(&d).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        let p = d.join("state.json");
        write_file(&p, b"one").unwrap();
        write_file(&p, b"two").unwrap();
        assert_eq!(read_file(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        // Only the file: no temporary left behind.
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(d.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn refuses_symlinks_and_writable_dirs() {
        let base = scratch("refuse");
        secure_dir(&base).unwrap();
        // A symlink as the state file: read and write refuse it.
        let target = base.join("target");
        std::fs::write(&target, b"precious").unwrap();
        let link = base.join("state.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(read_file(&link).is_err());
        write_file(&link, b"x").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        // A symlink as the state directory.
        let dl = base.join("dirlink");
        std::os::unix::fs::symlink(&base, &dl).unwrap();
        assert!(secure_dir(&dl).is_err());
        // A directory others may write to.
        let open = base.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(secure_dir(&open).is_err());
        assert!(secure_dir(&open.join("below")).is_err());
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn refuses_a_dir_owned_by_someone_else() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let base = scratch("owner");
        secure_dir(&base).unwrap();
        let theirs = base.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        assert!(secure_dir(&theirs).is_err());
        assert!(lock(&theirs).is_err());
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn lock_survives_removal_by_its_holder() {
        let d = scratch("lock");
        let held = lock(&d).unwrap();
        let d2 = d.clone();
        let waiter = std::thread::spawn(move || {
            let f = lock(&d2).unwrap();
            let at = std::fs::metadata(d2.join(LOCK)).unwrap();
            assert_eq!(f.metadata().unwrap().ino(), at.ino());
        });
        std::fs::remove_file(d.join(LOCK)).unwrap();
        drop(held);
        waiter.join().unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_caller_namespace_has_a_label() {
        let l = netns_label(None);
        assert!(l == "host" || l.starts_with("netns-"), "{l}");
        assert_eq!(
            netns_label(Some("weir-no-such-ns")),
            "netns-weir-no-such-ns"
        );
    }
}
