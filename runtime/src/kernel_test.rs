//! The one rule for tests that touch the kernel: they run as root; when
//! not root (or a needed program is missing) they skip — except under
//! `CI`, where they fail, so a skipped kernel test is never counted as a
//! pass.

use crate::iptables::exec::find_program;

/// `true` if `test` may run: root and every program in `programs` found.
/// Prints why it skips; panics instead when the `CI` variable is set.
pub fn may_run(test: &str, programs: &[&str]) -> bool {
    let ci = std::env::var_os("CI").is_some();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(!ci, "{test}: needs root (CI is set, so not skipping)");
        eprintln!("{test}: skipped, needs root");
        return false;
    }
    for p in programs {
        if find_program(p).is_none() {
            assert!(!ci, "{test}: `{p}` is not installed (CI is set)");
            eprintln!("{test}: skipped, `{p}` is not installed");
            return false;
        }
    }
    true
}

/// A fresh, empty directory `weir-{name}-{pid}` for a test's or a
/// benchmark's runtime state: under /dev/shm (tmpfs, like `/run`, the
/// runtime's default state root on systemd hosts) when it exists, else
/// the temp dir. On ext4 the state file's replacing rename flushes data
/// (auto_da_alloc, ~3 ms), which would dominate an endpoint update's
/// latency. The caller removes it.
pub fn state_dir(name: &str) -> std::io::Result<std::path::PathBuf> {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("weir-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
