//! `weir-rusage CMD [ARGS...]`: runs CMD and prints its CPU time (user +
//! system, ms) as `weir-rusage: cpu_ms=N` and its peak RSS (KiB) on
//! stderr's last line as `weir-rusage: maxrss_kib=N`, exiting with CMD's
//! status.
//!
//! Why a separate process: a child's `ru_maxrss` starts from the memory
//! of the process that forked it (Linux carries the forking process's
//! RSS high-water mark through fork and exec), so a child of the
//! benchmark, which holds every model in memory, reported the
//! benchmark's peak. This small process forks the command instead.

use std::process::Command;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(cmd) = args.next() else {
        eprintln!("usage: weir-rusage CMD [ARGS...]");
        std::process::exit(2);
    };
    let child = match Command::new(&cmd).args(args).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weir-rusage: running {}: {e}", cmd.to_string_lossy());
            std::process::exit(127);
        }
    };
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 on our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    if r < 0 {
        eprintln!("weir-rusage: wait4: {}", std::io::Error::last_os_error());
        std::process::exit(127);
    }
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    eprintln!(
        "weir-rusage: cpu_ms={:.1}",
        ms(ru.ru_utime) + ms(ru.ru_stime)
    );
    eprintln!("weir-rusage: maxrss_kib={}", ru.ru_maxrss);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    std::process::exit(code);
}
