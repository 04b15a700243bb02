//! Every program the iptables back end runs goes through [`Exec`]: one place
//! that finds the program, enters the network namespace, feeds standard
//! input, classifies failures, and keeps a log tests can inspect
//! (`WEIR_EXEC_TRACE=1` also prints each run with its wall time).
//!
//! A namespace is entered with `setns(2)` by a short-lived thread that then
//! spawns the program (the same thing `ip netns exec` does, without
//! remounting `/sys` and without needing `ip`; see [`spawn_in`]).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::error::Error;

/// One program run, as recorded in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub program: String,
    pub args: Vec<String>,
    pub netns: Option<String>,
    /// Standard input fed to the program, if any.
    pub stdin: Option<String>,
    /// Exit code (`None` if killed by a signal).
    pub status: Option<i32>,
    pub stderr: String,
}

/// What a finished program printed.
#[derive(Debug, Clone)]
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs programs, optionally inside a named network namespace
/// (`/var/run/netns/NAME`, as made by `ip netns add`).
#[derive(Debug, Clone, Default)]
pub struct Exec {
    netns: Option<String>,
    log: Arc<Mutex<Vec<Ran>>>,
    /// The state directory in which each running program is marked
    /// ([`super::orphans`]), if any.
    marks: Option<PathBuf>,
    /// Restore blocks the direct x_tables loader wrote, and those it sent
    /// to the tool ([`super::xt`]).
    directs: Arc<std::sync::atomic::AtomicUsize>,
    fallbacks: Arc<std::sync::atomic::AtomicUsize>,
    /// Batches of sets the direct set loader wrote, and those it sent to
    /// `ipset restore` ([`super::xt::ipset_load`]).
    ipset_directs: Arc<std::sync::atomic::AtomicUsize>,
    ipset_fallbacks: Arc<std::sync::atomic::AtomicUsize>,
}

/// Set (to anything) to print every program run, with its wall time, to
/// standard error: where an apply spends its time.
pub const TRACE_VAR: &str = "WEIR_EXEC_TRACE";

/// Directory holding named network namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";

/// Which Debian package provides a program we run.
fn package_of(program: &str) -> &'static str {
    if program.starts_with("ipset") {
        "ipset"
    } else if program.starts_with("ip6tables") || program.starts_with("iptables") {
        "iptables"
    } else if program == "ip" {
        "iproute2"
    } else {
        "unknown"
    }
}

/// Finds `name` on `PATH`, or in `/usr/sbin` and `/sbin` (which are not on
/// every user's `PATH`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Checks that a program is installed, with the error naming its package.
pub fn require_program(name: &str) -> Result<PathBuf, Error> {
    find_program(name).ok_or_else(|| Error::MissingProgram {
        program: name.to_string(),
        package: package_of(name),
    })
}

/// Fails with [`Error::NotPrivileged`] unless we run as root.
pub fn require_root() -> Result<(), Error> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        Ok(())
    } else {
        Err(Error::NotPrivileged {
            detail: format!("running as uid {euid}"),
        })
    }
}

impl Exec {
    /// Runs programs in the current network namespace, or in `netns`.
    pub fn new(netns: Option<String>) -> Exec {
        Exec {
            netns,
            log: Arc::default(),
            marks: None,
            directs: Arc::default(),
            fallbacks: Arc::default(),
            ipset_directs: Arc::default(),
            ipset_fallbacks: Arc::default(),
        }
    }

    /// Marks each running program in the state directory `dir`, so that
    /// one a killed weir leaves running is stopped by the next command
    /// ([`super::orphans`]).
    pub fn marking_in(mut self, dir: PathBuf) -> Exec {
        self.marks = Some(dir);
        self
    }

    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// Every program run so far, oldest first.
    pub fn log(&self) -> Vec<Ran> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Adds a run that was not a program (a table the direct x_tables
    /// loader wrote) to the log.
    pub(crate) fn record(&self, ran: Ran) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).push(ran);
    }

    pub(crate) fn count_fallback(&self) {
        self.fallbacks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn count_direct(&self) {
        self.directs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many restore blocks the direct x_tables loader sent to the
    /// tool so far.
    pub fn fallbacks(&self) -> usize {
        self.fallbacks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Blocks written directly and sent to the tool so far.
    pub fn xt_counts(&self) -> super::xt::Counts {
        super::xt::Counts {
            direct: self.directs.load(std::sync::atomic::Ordering::Relaxed),
            tool: self.fallbacks(),
        }
    }

    /// Counts a batch of sets loaded directly (`direct`) or sent to
    /// `ipset restore`.
    pub(crate) fn count_ipset(&self, direct: bool) {
        let c = if direct {
            &self.ipset_directs
        } else {
            &self.ipset_fallbacks
        };
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Batches of sets written directly and sent to `ipset restore` so
    /// far.
    pub fn ipset_counts(&self) -> super::xt::Counts {
        super::xt::Counts {
            direct: self
                .ipset_directs
                .load(std::sync::atomic::Ordering::Relaxed),
            tool: self
                .ipset_fallbacks
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Runs `program args…`, feeding `stdin`. A program that runs and exits
    /// non-zero is an `Ok` with `success == false`; `Err` means it could not
    /// run (not installed, namespace missing, spawn failure).
    pub fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<Output, Error> {
        let path = require_program(program)?;
        let netns_file = match &self.netns {
            Some(name) => Some(
                File::open(Path::new(NETNS_DIR).join(name)).map_err(|source| Error::NoNetns {
                    name: name.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        let started = std::time::Instant::now();
        let mut cmd = Command::new(&path);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("LC_ALL", "C");
        let mut child = match &netns_file {
            Some(file) => spawn_in(&mut cmd, file),
            None => cmd.spawn(),
        }
        .map_err(|e| Error::io(format!("cannot run {}", path.display()), e))?;
        drop(netns_file);
        // Before its input: see `orphans` (removed once it was waited for).
        let _mark = super::orphans::Mark::new(self.marks.as_deref(), child.id());
        if let Some(input) = stdin {
            // A program that exits early closes its stdin: the write error
            // is not interesting, its exit status and stderr are.
            if let Some(mut pipe) = child.stdin.take() {
                let _ = pipe.write_all(input.as_bytes());
            }
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Error::io(format!("waiting for {program}"), e))?;
        if std::env::var_os(TRACE_VAR).is_some() {
            eprintln!(
                "weir: ran {program} {args:?} ({} bytes in) in {:.3}s",
                stdin.map_or(0, str::len),
                started.elapsed().as_secs_f64()
            );
        }
        let output = Output {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Ran {
                program: program.to_string(),
                args: args.iter().map(|s| s.to_string()).collect(),
                netns: self.netns.clone(),
                stdin: stdin.map(str::to_string),
                status: out.status.code(),
                stderr: output.stderr.clone(),
            });
        Ok(output)
    }

    /// Runs a program that must succeed: a failure becomes an error naming
    /// `step`, classified into missing privileges or kernel modules where
    /// the message says so.
    pub fn run_ok(
        &self,
        step: &str,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<Output, Error> {
        let out = self.run(program, args, stdin)?;
        if out.success {
            Ok(out)
        } else {
            Err(classify_failure(step, program, &out.stderr, stdin))
        }
    }
}

/// Spawns `cmd` inside the network namespace `netns` (an open
/// `/var/run/netns/NAME`): from a short-lived thread that enters it first
/// (`setns(2)` moves only the calling thread; a child takes its
/// namespaces from the thread that creates it). Not with a `pre_exec`
/// hook: that makes the standard library fork the whole process instead
/// of `posix_spawn`'s `vfork`, and a fork copies the caller's page tables
/// (~10 ms per tool from the benchmark's large process, six tools per
/// endpoint update).
fn spawn_in(cmd: &mut Command, netns: &File) -> std::io::Result<std::process::Child> {
    in_netns(netns, || cmd.spawn())?
}

/// Runs `f` on a short-lived thread inside the network namespace `netns`
/// (an open `/var/run/netns/NAME`): what [`spawn_in`] spawns from, and
/// where the direct x_tables loader makes its socket (a socket keeps the
/// namespace it was made in).
pub(crate) fn in_netns<T: Send>(netns: &File, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    let fd = netns.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on an fd that stays open for the call; it
            // changes only this thread, which ends after `f`.
            if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the namespace thread panicked")))
    })
}

/// Turns a failed program's stderr into the most specific error.
pub fn classify_failure(step: &str, program: &str, stderr: &str, stdin: Option<&str>) -> Error {
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("permission denied (you must be root)")
        || lower.contains("operation not permitted")
        || lower.contains("you need to be root")
    {
        return Error::NotPrivileged {
            detail: format!("{program}: {}", stderr.trim()),
        };
    }
    let module = kernel_module_hint(program, stderr, stdin);
    if let Some(module) = module {
        return Error::MissingKernelModule {
            module,
            step: step.to_string(),
            stderr: stderr.to_string(),
        };
    }
    Error::Step {
        step: step.to_string(),
        program: program.to_string(),
        stderr: stderr.to_string(),
    }
}

/// Recognises the iptables and ipset messages for a missing kernel feature.
fn kernel_module_hint(program: &str, stderr: &str, stdin: Option<&str>) -> Option<String> {
    let lower = stderr.to_ascii_lowercase();
    if program.starts_with("ipset") {
        if lower.contains("cannot open session to kernel") {
            return Some("ip_set".into());
        }
        if lower.contains("set type not supported") || lower.contains("unknown set type") {
            // Name the type from the first `create` line that uses one.
            let ty = stdin
                .unwrap_or("")
                .lines()
                .filter_map(|l| {
                    let mut t = l.split_whitespace();
                    (t.next() == Some("create")).then(|| t.nth(1))?
                })
                .next()
                .unwrap_or("hash:ip");
            return Some(format!("ip_set_{}", ty.replace(':', "_").replace(',', "")));
        }
        return None;
    }
    // iptables: "Couldn't load match `set':No such file or directory",
    // "Couldn't load target `NFLOG'", "can't initialize iptables table
    // `nat': Table does not exist (do you need to insmod?)".
    for (marker, prefix) in [
        ("couldn't load match `", "xt_"),
        ("couldn't load target `", "xt_"),
    ] {
        if let Some(at) = lower.find(marker) {
            let rest = &stderr[at + marker.len()..];
            let name = rest.split('\'').next().unwrap_or("");
            return Some(format!("{prefix}{name}"));
        }
    }
    if lower.contains("do you need to insmod") || lower.contains("table does not exist") {
        let table = stderr
            .split("table `")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .unwrap_or("filter");
        let family = if program.starts_with("ip6") {
            "ip6table"
        } else {
            "iptable"
        };
        return Some(format!("{family}_{table}"));
    }
    if lower.contains("protocol not supported")
        || lower.contains("nf_tables") && lower.contains("not supported")
    {
        return Some("nf_tables".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(program: &str, stderr: &str, stdin: Option<&str>) -> Option<String> {
        match classify_failure("step", program, stderr, stdin) {
            Error::MissingKernelModule { module, .. } => Some(module),
            _ => None,
        }
    }

    #[test]
    fn classifies_tool_failures() {
        assert_eq!(
            module(
                "iptables-restore",
                "iptables-restore v1.8.9 (legacy): Couldn't load match `set':No such file or directory\n",
                None
            )
            .as_deref(),
            Some("xt_set")
        );
        assert_eq!(
            module(
                "iptables-restore",
                "iptables-restore: line 2 failed: can't initialize iptables table `nat': Table does not exist (do you need to insmod?)",
                None
            )
            .as_deref(),
            Some("iptable_nat")
        );
        assert_eq!(
            module(
                "ipset",
                "ipset v7.17: Kernel error received: Set type not supported",
                Some("create weir1-a hash:ip,port\n")
            )
            .as_deref(),
            Some("ip_set_hash_ipport")
        );
        assert_eq!(
            module("ipset", "ipset v7.17: Cannot open session to kernel.", None).as_deref(),
            Some("ip_set")
        );
        assert!(matches!(
            classify_failure(
                "s",
                "iptables-restore",
                "iptables-restore v1.8.9 (nf_tables): Permission denied (you must be root)",
                None
            ),
            Error::NotPrivileged { .. }
        ));
        let e = classify_failure("step 2", "iptables-restore", "invalid port", None);
        assert!(matches!(e, Error::Step { .. }));
        assert!(e
            .to_string()
            .starts_with("step 2 failed (iptables-restore): invalid port"));
        let e = require_program("weir-no-such-program").unwrap_err();
        assert!(e
            .to_string()
            .contains("`weir-no-such-program` is not installed"));
    }
}
