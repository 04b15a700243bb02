//! The x_tables and ipset socket options the direct loader uses, on a raw
//! IPv4 socket made inside the target network namespace, and the
//! `/run/xtables.lock` the iptables tools take with `-w`.
//!
//! Every `unsafe` of the loader is here: each call passes a buffer it owns
//! and the buffer's length, so the kernel never writes past it.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// `IPT_BASE_CTL` and the option numbers of `ip_tables.h`.
const IPT_SO_SET_REPLACE: i32 = 64;
const IPT_SO_SET_ADD_COUNTERS: i32 = 65;
const IPT_SO_GET_INFO: i32 = 64;
const IPT_SO_GET_ENTRIES: i32 = 65;
const IPT_SO_GET_REVISION_MATCH: i32 = 66;
const IPT_SO_GET_REVISION_TARGET: i32 = 67;
/// `SO_IP_SET` (`ip_set.h`) and its operations.
const SO_IP_SET: i32 = 83;
const IP_SET_OP_VERSION: u32 = 0x100;
const IP_SET_OP_GET_FNAME: u32 = 0x8;
const IP_SET_OP_GET_BYINDEX: u32 = 0x7;
/// `ip_set_id_t`'s "no such set".
const IPSET_INVALID_ID: u16 = 0xffff;
const NFPROTO_IPV4: u32 = 2;

/// Where the entries start in a GET_ENTRIES reply (`struct ipt_get_entries`).
pub(crate) const ENTRIES_AT: usize = 40;

/// The lock file of the iptables tools' `-w` (`XT_LOCK_NAME`).
const XT_LOCK: &str = "/run/xtables.lock";

/// `struct ipt_getinfo`: what GET_INFO says about a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Info {
    pub valid_hooks: u32,
    pub hook_entry: [u32; 5],
    pub underflow: [u32; 5],
    pub num_entries: u32,
    pub size: u32,
}

/// A raw IPv4 socket in one network namespace, and a netfilter netlink
/// socket beside it for the ipset dump ([`super::ipset_dump`]), if one
/// could be made.
pub(crate) struct Sock(OwnedFd, Option<OwnedFd>, std::sync::OnceLock<u32>);

impl Sock {
    /// Opens the socket in the namespace `netns` (an open
    /// `/var/run/netns/NAME`), or in ours: a socket keeps the namespace it
    /// was made in ([`crate::iptables::exec::in_netns`]).
    pub fn open(netns: Option<&File>) -> io::Result<Sock> {
        let make = || {
            // SAFETY: socket(2) with constant arguments; the fd is owned
            // by the OwnedFd from here on.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
            if fd < 0 {
                Err(io::Error::last_os_error())
            } else {
                // SAFETY: a fresh fd nobody else owns.
                let raw = unsafe { OwnedFd::from_raw_fd(fd) };
                // SAFETY: as above; a failure only leaves the dump out.
                let nl = unsafe {
                    libc::socket(
                        libc::AF_NETLINK,
                        libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                        libc::NETLINK_NETFILTER,
                    )
                };
                // SAFETY: a fresh fd nobody else owns.
                let nl = (nl >= 0).then(|| unsafe { OwnedFd::from_raw_fd(nl) });
                Ok(Sock(raw, nl, std::sync::OnceLock::new()))
            }
        };
        match netns {
            Some(f) => crate::iptables::exec::in_netns(f, make)?,
            None => make(),
        }
    }

    fn get(&self, level: i32, opt: i32, buf: &mut [u8]) -> io::Result<usize> {
        let mut len = buf.len() as libc::socklen_t;
        // SAFETY: buf is valid for len bytes; the kernel writes at most len.
        let r = unsafe {
            libc::getsockopt(
                self.0.as_raw_fd(),
                level,
                opt,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(len as usize)
        }
    }

    fn set(&self, opt: i32, buf: &[u8]) -> io::Result<()> {
        // SAFETY: buf is valid for its length; the kernel only reads it
        // (and writes the old counters through the pointer inside it,
        // into a buffer the caller keeps alive, see `replace`).
        let r = unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                libc::SOL_IP,
                opt,
                buf.as_ptr().cast(),
                buf.len() as libc::socklen_t,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// IPT_SO_GET_INFO of `table`.
    pub fn info(&self, table: &str) -> io::Result<Info> {
        let mut b = vec![0u8; 84];
        put_name(&mut b[..32], table);
        self.get(libc::SOL_IP, IPT_SO_GET_INFO, &mut b)?;
        let u = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().unwrap_or_default());
        let mut hook_entry = [0; 5];
        let mut underflow = [0; 5];
        for i in 0..5 {
            hook_entry[i] = u(36 + 4 * i);
            underflow[i] = u(56 + 4 * i);
        }
        Ok(Info {
            valid_hooks: u(32),
            hook_entry,
            underflow,
            num_entries: u(76),
            size: u(80),
        })
    }

    /// IPT_SO_GET_ENTRIES: the table's `size` bytes of entries.
    pub fn entries(&self, table: &str, size: u32) -> io::Result<Vec<u8>> {
        // struct ipt_get_entries: name[32], u32 size, pad, entries at 40.
        let mut b = vec![0u8; 40 + size as usize];
        put_name(&mut b[..32], table);
        b[32..36].copy_from_slice(&size.to_ne_bytes());
        self.get(libc::SOL_IP, IPT_SO_GET_ENTRIES, &mut b)?;
        Ok(b.split_off(40))
    }

    /// [`Sock::entries`] without copying the blob out of the reply: the
    /// reply whole, the entries from byte [`ENTRIES_AT`] on (the start
    /// state's read, tens of megabytes at 100,000 rules).
    pub fn entries_reply(&self, table: &str, size: u32) -> io::Result<Vec<u8>> {
        let mut b = vec![0u8; ENTRIES_AT + size as usize];
        put_name(&mut b[..32], table);
        b[32..36].copy_from_slice(&size.to_ne_bytes());
        self.get(libc::SOL_IP, IPT_SO_GET_ENTRIES, &mut b)?;
        Ok(b)
    }

    /// IPT_SO_SET_REPLACE. Returns the old table's counters, one
    /// `(packets, bytes)` per old entry (`num_counters` of them).
    #[allow(clippy::too_many_arguments)]
    pub fn replace(
        &self,
        table: &str,
        valid_hooks: u32,
        num_entries: u32,
        hook_entry: [u32; 5],
        underflow: [u32; 5],
        num_counters: u32,
        entries: &[u8],
    ) -> io::Result<Vec<(u64, u64)>> {
        let mut old = vec![0u8; 16 * num_counters as usize];
        // struct ipt_replace: name[32], valid_hooks, num_entries, size,
        // hook_entry[5], underflow[5], num_counters, pad, counters*, then
        // the entries at 96.
        let mut b = vec![0u8; 96];
        put_name(&mut b[..32], table);
        b[32..36].copy_from_slice(&valid_hooks.to_ne_bytes());
        b[36..40].copy_from_slice(&num_entries.to_ne_bytes());
        b[40..44].copy_from_slice(&(entries.len() as u32).to_ne_bytes());
        for i in 0..5 {
            b[44 + 4 * i..48 + 4 * i].copy_from_slice(&hook_entry[i].to_ne_bytes());
            b[64 + 4 * i..68 + 4 * i].copy_from_slice(&underflow[i].to_ne_bytes());
        }
        b[84..88].copy_from_slice(&num_counters.to_ne_bytes());
        let ptr = old.as_mut_ptr() as u64;
        b[88..96].copy_from_slice(&ptr.to_ne_bytes());
        b.extend_from_slice(entries);
        self.set(IPT_SO_SET_REPLACE, &b)?;
        Ok(old
            .chunks_exact(16)
            .map(|c| {
                (
                    u64::from_ne_bytes(c[..8].try_into().unwrap_or_default()),
                    u64::from_ne_bytes(c[8..].try_into().unwrap_or_default()),
                )
            })
            .collect())
    }

    /// IPT_SO_SET_ADD_COUNTERS: adds `counters` (one per entry of the
    /// table now in force) to the table's counters.
    pub fn add_counters(&self, table: &str, counters: &[(u64, u64)]) -> io::Result<()> {
        // struct xt_counters_info: name[32], num_counters, pad, counters.
        let mut b = vec![0u8; 40];
        put_name(&mut b[..32], table);
        b[32..36].copy_from_slice(&(counters.len() as u32).to_ne_bytes());
        for (p, by) in counters {
            b.extend_from_slice(&p.to_ne_bytes());
            b.extend_from_slice(&by.to_ne_bytes());
        }
        self.set(IPT_SO_SET_ADD_COUNTERS, &b)
    }

    /// Whether the kernel has match (or target) `name` at `revision`
    /// (IPT_SO_GET_REVISION_MATCH/TARGET, as libxtables asks).
    pub fn has_revision(&self, target: bool, name: &str, revision: u8) -> bool {
        // struct xt_get_revision: name[29], u8 revision.
        let mut b = vec![0u8; 30];
        put_name(&mut b[..29], name);
        b[29] = revision;
        let opt = if target {
            IPT_SO_GET_REVISION_TARGET
        } else {
            IPT_SO_GET_REVISION_MATCH
        };
        self.get(libc::SOL_IP, opt, &mut b).is_ok()
    }

    /// Every set's index and family, from one netlink dump
    /// ([`super::ipset_dump`]).
    pub fn ipset_headers(
        &self,
    ) -> io::Result<std::collections::HashMap<String, super::ipset_dump::SetHeader>> {
        match &self.1 {
            Some(nl) => super::ipset_dump::dump(nl),
            None => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no netlink socket",
            )),
        }
    }

    /// The ipset protocol version (IP_SET_OP_VERSION), asked once per
    /// socket.
    pub fn ipset_version(&self) -> io::Result<u32> {
        if let Some(v) = self.2.get() {
            return Ok(*v);
        }
        let v = self.ask_ipset_version()?;
        Ok(*self.2.get_or_init(|| v))
    }

    fn ask_ipset_version(&self) -> io::Result<u32> {
        let mut b = vec![0u8; 8];
        b[..4].copy_from_slice(&IP_SET_OP_VERSION.to_ne_bytes());
        self.get(libc::SOL_IP, SO_IP_SET, &mut b)?;
        Ok(u32::from_ne_bytes(b[4..8].try_into().unwrap_or_default()))
    }

    /// The index of the IPv4 set `name` (IP_SET_OP_GET_FNAME), `None` if
    /// there is none or it is of another family.
    pub fn set_index(&self, name: &str) -> io::Result<Option<u16>> {
        let version = self.ipset_version()?;
        // struct ip_set_req_get_set_family: op, version, family, name[32].
        let mut b = vec![0u8; 44];
        b[..4].copy_from_slice(&IP_SET_OP_GET_FNAME.to_ne_bytes());
        b[4..8].copy_from_slice(&version.to_ne_bytes());
        if name.len() >= 32 {
            return Ok(None);
        }
        put_name(&mut b[12..44], name);
        self.get(libc::SOL_IP, SO_IP_SET, &mut b)?;
        let family = u32::from_ne_bytes(b[8..12].try_into().unwrap_or_default());
        let index = u16::from_ne_bytes([b[12], b[13]]);
        Ok((index != IPSET_INVALID_ID && family == NFPROTO_IPV4).then_some(index))
    }
}

impl Sock {
    /// The name of the set with `index` (IP_SET_OP_GET_BYINDEX, what
    /// libxt_set asks when it prints a rule), `None` if there is none.
    pub fn set_name(&self, index: u16) -> io::Result<Option<String>> {
        let version = self.ipset_version()?;
        // struct ip_set_req_get_set: op, version, union { name[32]; index }.
        let mut b = vec![0u8; 40];
        b[..4].copy_from_slice(&IP_SET_OP_GET_BYINDEX.to_ne_bytes());
        b[4..8].copy_from_slice(&version.to_ne_bytes());
        b[8..10].copy_from_slice(&index.to_ne_bytes());
        self.get(libc::SOL_IP, SO_IP_SET, &mut b)?;
        let name = super::table::c_name(&b[8..40]);
        Ok((!name.is_empty()).then_some(name))
    }
}

/// Copies `name` NUL-padded into `dst` (truncated to leave a NUL).
fn put_name(dst: &mut [u8], name: &str) {
    let n = name.len().min(dst.len() - 1);
    dst[..n].copy_from_slice(&name.as_bytes()[..n]);
}

/// Holds `/run/xtables.lock` (flock, exclusive) as `iptables -w` does, so
/// no tool changes a table between our read and our replace.
pub(crate) struct XtLock(File);

impl XtLock {
    pub fn take() -> io::Result<XtLock> {
        let path = std::env::var_os("XTABLES_LOCKFILE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new(XT_LOCK).to_path_buf());
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        // SAFETY: flock on an fd we own; blocks until the lock is ours.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(XtLock(f))
    }
}

impl Drop for XtLock {
    fn drop(&mut self) {
        // SAFETY: unlocking an fd we own (closing it would too).
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}
