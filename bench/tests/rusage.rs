//! `weir-rusage` reports the peak RSS of the command it runs, not of the
//! process that started it (a direct child inherits its parent's
//! high-water mark through fork and exec).

use std::process::Command;

#[test]
fn peak_is_the_commands_not_the_callers() {
    // Make this process big: 256 MiB, every page touched.
    let big = vec![1u8; 256 << 20];
    let out = Command::new(env!("CARGO_BIN_EXE_weir-rusage"))
        .args(["sh", "-c", "exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "the command's exit status");
    let err = String::from_utf8_lossy(&out.stderr);
    let kib: u64 = err
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("weir-rusage: maxrss_kib="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no peak in {err:?}"));
    assert!(kib > 0 && kib < 64 << 10, "sh's peak is {kib} KiB");
    let cpu_ms: f64 = err
        .lines()
        .find_map(|l| l.strip_prefix("weir-rusage: cpu_ms="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no CPU time in {err:?}"));
    assert!(cpu_ms >= 0.0, "sh's CPU time is {cpu_ms} ms");
    // A direct child of this process reports this process's peak instead.
    let direct = direct_child_peak_kib();
    assert!(direct > 200 << 10, "a direct child reported {direct} KiB");
    assert_eq!(big.iter().map(|&b| b as u64).sum::<u64>(), 256 << 20);
}

// The child is reaped by `wait4` (which `Child::wait` does not expose
// with its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn direct_child_peak_kib() -> u64 {
    let child = Command::new("sh").args(["-c", "exit 0"]).spawn().unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 on our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    assert!(r > 0);
    ru.ru_maxrss as u64
}
