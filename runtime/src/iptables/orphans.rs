//! Tools a killed weir left running: stopped before the next command
//! looks at the kernel.
//!
//! Every program the back end runs (`iptables-restore`, `ipset restore`,
//! …) is a child process that gets its whole input on a pipe and then
//! acts on it. When weir is killed (`kill -9`, the OOM killer) while one
//! runs, the child is not: it is re-parented and goes on to commit its
//! transaction — after the lock died with weir, so possibly in the
//! middle of the next command's recovery. That is how the kill test
//! (`iptables_failclosed::kill_apply_at_random_points`) once failed under
//! load: an orphaned `ip6tables-restore` of the killed apply loaded the
//! new generation's chains after the recovery had read the kernel and
//! decided to roll that generation back, so the rollback's `ipset
//! destroy` of the generation's sets found them referenced by those
//! chains ("Set cannot be destroyed: in use by a kernel component") for
//! as long as it retried. Retrying longer cannot help: the reference is
//! a rule, not a deferred release.
//!
//! So each running tool is marked in the state directory
//! (`tool-<pid>`: its pid and start time, and those of the weir process
//! that started it) while it runs ([`Mark`]), and whoever takes the lock
//! next stops every marked tool whose weir is gone ([`stop`]) before
//! reading anything: `SIGKILL` through a pidfd (never a recycled pid),
//! then it waits for the exit. Killing a tool at any point is what a
//! machine crash does to it, which the recovery already handles; the
//! kernel commits a restore's transaction whole or not at all. A tool
//! whose weir still runs is that weir's own (a command that runs tools
//! without the lock) and is left alone.
//!
//! A mark is written after the spawn and before the tool's input: a kill
//! between the two leaves a tool that reads no input (its pipe is
//! closed) and so changes nothing. Marks are not synced: after a machine
//! crash there is no tool left to stop.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The marks' file name prefix in the state directory.
pub(crate) const PREFIX: &str = "tool-";

/// How long a killed tool may take to exit (it finishes the system call
/// it is in: a netlink commit) before the command gives up.
const EXIT_WAIT_MS: i32 = 10_000;

/// A process's start time (clock ticks after boot, `/proc/PID/stat`
/// field 22): with the pid, its identity.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, which may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This process's pid and start time.
fn me() -> Option<(u32, u64)> {
    static ME: OnceLock<Option<(u32, u64)>> = OnceLock::new();
    *ME.get_or_init(|| {
        let pid = std::process::id();
        start_time(pid).map(|s| (pid, s))
    })
}

/// Is the process `pid` that started at `start` still there?
fn alive(pid: u32, start: u64) -> bool {
    start_time(pid) == Some(start)
}

/// A running tool's mark; removed when dropped (after the tool was
/// waited for).
#[derive(Debug)]
pub(crate) struct Mark(Option<PathBuf>);

impl Mark {
    /// Marks `child` in `dir` when that state directory exists (it is
    /// created, locked, by the commands that change the kernel).
    /// Best effort: a mark that cannot be written leaves only the race
    /// this module closes, and the tool's own command must not fail on
    /// it.
    pub(crate) fn new(dir: Option<&Path>, child: u32) -> Mark {
        let (Some(dir), Some((me, my_start)), Some(start)) = (dir, me(), start_time(child)) else {
            return Mark(None);
        };
        if !dir.is_dir() {
            return Mark(None);
        }
        let path = dir.join(format!("{PREFIX}{child}"));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{child} {start} {me} {my_start}"));
        Mark(written.is_ok().then_some(path))
    }
}

impl Drop for Mark {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A mark's content: (tool pid, tool start, weir pid, weir start).
fn parse(text: &str) -> Option<(u32, u64, u32, u64)> {
    let mut w = text.split_whitespace();
    let v = (
        w.next()?.parse().ok()?,
        w.next()?.parse().ok()?,
        w.next()?.parse().ok()?,
        w.next()?.parse().ok()?,
    );
    w.next().is_none().then_some(v)
}

/// Stops every tool marked in `dir` whose weir is gone, waits for it to
/// exit, and removes its mark (and the marks of tools already gone).
/// Returns the pids stopped. Called with the state directory's lock
/// held, before anything reads the kernel.
pub(crate) fn stop(dir: &Path) -> io::Result<Vec<u32>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut stopped = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let path = e.path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some((pid, start, weir, weir_start)) = parse(&text) {
            if alive(weir, weir_start) {
                continue; // its weir runs: not an orphan
            }
            if alive(pid, start) && kill_and_wait(pid, start)? {
                stopped.push(pid);
            }
        }
        std::fs::remove_file(&path).or_else(|e| match e.kind() {
            io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        })?;
    }
    Ok(stopped)
}

/// `SIGKILL`s the process `pid` that started at `start` through a pidfd
/// and waits for it to exit. `false` if it was gone already.
fn kill_and_wait(pid: u32, start: u64) -> io::Result<bool> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ESRCH) => Ok(false),
            _ => Err(e),
        };
    }
    // SAFETY: `fd` is the pidfd just opened, owned here.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    use std::os::fd::AsRawFd;
    // The pidfd names one process; it is ours if the pid still has the
    // marked start time now that the pidfd holds it.
    if !alive(pid, start) {
        return Ok(false);
    }
    // SAFETY: pidfd_send_signal on a valid pidfd, no siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ESRCH) => Ok(false),
            _ => Err(e),
        };
    }
    // A pidfd polls readable once its process has exited.
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, EXIT_WAIT_MS) };
        match n {
            1.. => return Ok(true),
            0 => {
                return Err(io::Error::other(format!(
                    "a tool left running by a killed weir (pid {pid}) did not exit within {} s of SIGKILL",
                    EXIT_WAIT_MS / 1000
                )))
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_tool_of_a_gone_weir_is_stopped_and_one_of_a_live_weir_is_not() {
        let dir = std::env::temp_dir().join(format!("weir-orphans-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id();
        // Marked by this (live) process: left alone, and the mark stays.
        let mark = Mark::new(Some(&dir), pid);
        assert!(dir.join(format!("{PREFIX}{pid}")).exists());
        assert_eq!(stop(&dir).unwrap(), Vec::<u32>::new());
        assert!(alive(pid, start_time(pid).unwrap()));
        // Rewritten as if by a weir that is gone (pid 0 has no /proc entry).
        std::mem::forget(mark);
        let start = start_time(pid).unwrap();
        std::fs::write(
            dir.join(format!("{PREFIX}{pid}")),
            format!("{pid} {start} 0 1\n"),
        )
        .unwrap();
        // A stale mark of a tool long gone, and a malformed one.
        // (No pid reaches 4194399: the kernel's limit is 2^22.)
        std::fs::write(dir.join(format!("{PREFIX}4194399")), "4194399 1 0 1\n").unwrap();
        std::fs::write(dir.join(format!("{PREFIX}x")), "junk").unwrap();
        assert_eq!(stop(&dir).unwrap(), vec![pid]);
        let status = child.wait().unwrap();
        assert!(!status.success(), "killed: {status:?}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "marks removed");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn marks_parse_only_in_their_form() {
        assert_eq!(parse("12 34 56 78\n"), Some((12, 34, 56, 78)));
        assert_eq!(parse("12 34 56"), None);
        assert_eq!(parse("12 34 56 78 9"), None);
    }
}
