//! When memory the program frees goes back to the OS: mimalloc's
//! `purge_delay`, set by command, and held around the agent's applies.
//!
//! Why one module: the compile wants freed memory back quickly (its peak
//! RSS), a one-shot `weir apply` never (it ends with the apply), and the
//! agent, a daemon that does both, wants its applies fast and its memory
//! back after them. The numbers behind each choice are beside it. The
//! `MIMALLOC_PURGE_DELAY` environment variable, when set, decides alone:
//! nothing here changes the allocator then.

use std::ffi::c_long;

/// mimalloc's delay before memory freed by the program goes back to the
/// OS (`purge_delay`, milliseconds; its default, 1,000; -1: never).
/// Freed memory goes back after 10 ms, not after a second: `weir
/// compile` frees large structures in turn (the syntax trees, each
/// optimization pass's graph, each eBPF stage's listing as the bundle's
/// is written) and, held a second longer, they stacked up in the peak
/// RSS. Measured on 100,000 one-peer-per-pod rules (issue 21):
/// 1,090-1,190 MiB peak with the default, 859-934 MiB with 10 ms (about
/// 1 s more system time); on the headline model 296 -> 186 MiB, CPU time
/// within noise (BENCHMARKS.md).
pub const PURGE_DELAY_MS: c_long = 10;

/// The purge delay of `weir apply`: never. The process ends when the
/// apply does, so memory given back would only be faulted in again:
/// an iptables apply reads the kernel's tables three times (86 MB each at
/// 100,000 rules) and builds and drops the rule texts phase by phase.
/// Measured replacing one 100,000-rule generation by another with the
/// CLI (issue 21): 5.5-6.1 s wall and ~570,000 page faults with 10 ms,
/// 4.8-5.3 s and ~250,000 with never; peak RSS 770 -> 960-1,020 MiB.
pub const APPLY_PURGE_DELAY_MS: c_long = -1;

/// The purge delay while the agent applies a generation
/// ([`holding_freed_memory`]): a minute, longer than any apply, so its
/// phases reuse what the ones before them freed instead of faulting it
/// in again, as `weir apply`'s "never" does. Not "never" itself:
/// mimalloc does not even schedule what is freed then, so no collection
/// could give it back afterwards. Measured with the CLI replacing one
/// 100,000-rule generation by another (issue 21, session 20, `MIMALLOC_PURGE_DELAY`,
/// runs interleaved): 10 ms 6.11-6.90 s wall and 570k-585k page faults;
/// 1 s 5.88-6.44 s, 323k-369k; 60 s 5.08-5.44 s, 251k-261k; never
/// 5.11-6.26 s, 236k-259k.
pub const AGENT_APPLY_PURGE_DELAY_MS: c_long = 60_000;

/// Does this process decide the purge delay (not the environment)?
fn ours() -> bool {
    std::env::var_os("MIMALLOC_PURGE_DELAY").is_none()
}

/// Freed memory goes back to the OS after `delay` ms (-1: never).
pub fn purge_after(delay: c_long) {
    if ours() {
        mi::set_purge_delay(delay);
    }
}

/// Runs `f` (one of the agent's applies) with freed memory held for
/// [`AGENT_APPLY_PURGE_DELAY_MS`], then sets [`PURGE_DELAY_MS`] again and
/// gives back everything freed and not reused (`mi_collect(true)`: the
/// purges scheduled are done now), so the daemon does not keep the
/// apply's peak.
pub fn holding_freed_memory<T>(f: impl FnOnce() -> T) -> T {
    purge_after(AGENT_APPLY_PURGE_DELAY_MS);
    let out = f();
    purge_after(PURGE_DELAY_MS);
    if ours() {
        mi::collect();
    }
    out
}

/// The two calls into mimalloc (none with feature `system-alloc`).
#[cfg(not(feature = "system-alloc"))]
mod mi {
    use std::ffi::{c_int, c_long};

    // `mi_option_purge_delay` in mimalloc.h (v2 and v3).
    pub const OPTION_PURGE_DELAY: c_int = 15;

    extern "C" {
        fn mi_option_set(option: c_int, value: c_long);
        fn mi_collect(force: bool);
    }

    pub fn set_purge_delay(delay: c_long) {
        // SAFETY: sets one integer option of the allocator linked in;
        // mimalloc reads its options atomically.
        unsafe { mi_option_set(OPTION_PURGE_DELAY, delay) }
    }

    /// This thread's heap collected and the arenas' scheduled purges
    /// done now; no memory in use is touched.
    pub fn collect() {
        // SAFETY: as said; mimalloc's collection is thread-safe.
        unsafe { mi_collect(true) }
    }
}

#[cfg(feature = "system-alloc")]
mod mi {
    pub fn set_purge_delay(_: std::ffi::c_long) {}
    pub fn collect() {}
}

#[cfg(all(test, not(feature = "system-alloc")))]
mod tests {
    use super::*;

    /// Resident memory of this process in bytes (`/proc/self/statm`).
    fn rss() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    /// During an agent's apply the purge delay is the held one, after it
    /// the compile's again, and what the apply freed is given back when
    /// it ends (not a second later). (The test binary's allocator is
    /// mimalloc, as the CLI's.)
    #[test]
    fn an_agent_apply_gives_back_what_it_freed_when_it_ends() {
        extern "C" {
            fn mi_option_get(option: std::ffi::c_int) -> c_long;
        }
        if !ours() {
            return;
        }
        const MB: usize = 1 << 20;
        // SAFETY: reads one integer option.
        let delay = || unsafe { mi_option_get(mi::OPTION_PURGE_DELAY) };
        let (full, during) = holding_freed_memory(|| {
            // 256 MiB in 64 KiB blocks (arena memory, not direct OS
            // mappings), touched, then freed.
            let blocks: Vec<Vec<u8>> = (0..4096).map(|_| vec![1u8; 64 * 1024]).collect();
            let full = rss();
            drop(blocks);
            (full, delay())
        });
        assert_eq!(during, AGENT_APPLY_PURGE_DELAY_MS);
        assert_eq!(delay(), PURGE_DELAY_MS);
        let after = rss();
        assert!(
            after + 128 * MB < full,
            "freed memory stayed after the apply: {} -> {} MiB",
            full / MB,
            after / MB
        );
    }
}
