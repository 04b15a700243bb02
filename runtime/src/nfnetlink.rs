//! The one way the runtime opens a `NETLINK_NETFILTER` socket: the
//! verdict events' NFLOG reader (`events/nflog.rs`), the x_tables
//! loader's ipset header dump (`iptables/xt/sys.rs`), the direct set
//! loader (`iptables/xt/ipset_load.rs`) and the sets' read
//! (`iptables/xt/ipset_save.rs`) each speak nfnetlink over one.
//! The socket belongs to the network namespace of the thread that makes
//! it, so callers that need another namespace make it inside that one
//! (`iptables::exec::in_netns`).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// A fresh `AF_NETLINK` / `NETLINK_NETFILTER` raw socket, close-on-exec,
/// in the calling thread's network namespace.
pub(crate) fn socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
