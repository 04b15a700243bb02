//! The x_tables and ipset socket options the direct loader uses, on raw
//! sockets made inside the target network namespace (one of the table's
//! family for x_tables, [`super::abi`]; an IPv4 one for ipset, whose
//! socket option the kernel only registers for IPv4, as libxt_set uses
//! it for both families), and the `/run/xtables.lock` both iptables and
//! ip6tables take with `-w`.
//!
//! Every `unsafe` of the loader is here: each call passes a buffer it owns
//! and the buffer's length, so the kernel never writes past it.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::abi::Abi;

/// `IPT_BASE_CTL` and the option numbers of `ip_tables.h`, the same in
/// `ip6_tables.h` (the revision questions differ: [`Abi`]).
const IPT_SO_SET_REPLACE: i32 = 64;
const IPT_SO_SET_ADD_COUNTERS: i32 = 65;
const IPT_SO_GET_INFO: i32 = 64;
const IPT_SO_GET_ENTRIES: i32 = 65;
/// `SO_IP_SET` (`ip_set.h`) and its operations.
const SO_IP_SET: i32 = 83;
const IP_SET_OP_VERSION: u32 = 0x100;
const IP_SET_OP_GET_FNAME: u32 = 0x8;
const IP_SET_OP_GET_BYINDEX: u32 = 0x7;
/// `ip_set_id_t`'s "no such set".
const IPSET_INVALID_ID: u16 = 0xffff;

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

/// Raw sockets in one network namespace: one of the family's for
/// x_tables, an IPv4 one for ipset (the same socket for IPv4), and a
/// netfilter netlink socket beside them for the ipset dump
/// ([`super::ipset_dump`]), if one could be made.
pub(crate) struct Sock {
    xt: OwnedFd,
    /// The IPv4 socket for ipset when `xt` is not one.
    ipset: Option<OwnedFd>,
    nl: Option<OwnedFd>,
    version: std::sync::OnceLock<u32>,
    abi: &'static Abi,
}

/// socket(2) of `domain`, raw.
fn raw(domain: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the fd is owned by the
    // OwnedFd from here on.
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: a fresh fd nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

impl Sock {
    /// Opens the sockets for the tables of `abi` in the namespace `netns`
    /// (an open `/var/run/netns/NAME`), or in ours: a socket keeps the
    /// namespace it was made in ([`crate::iptables::exec::in_netns`]).
    pub fn open(netns: Option<&File>, abi: &'static Abi) -> io::Result<Sock> {
        let make = || {
            let xt = raw(abi.domain)?;
            let ipset = if abi.domain == libc::AF_INET {
                None
            } else {
                Some(raw(libc::AF_INET)?)
            };
            // A failure only leaves the dump out.
            let nl = crate::nfnetlink::socket().ok();
            Ok(Sock {
                xt,
                ipset,
                nl,
                version: std::sync::OnceLock::new(),
                abi,
            })
        };
        match netns {
            Some(f) => crate::iptables::exec::in_netns(f, make)?,
            None => make(),
        }
    }

    /// The family's ABI.
    pub fn abi(&self) -> &'static Abi {
        self.abi
    }

    /// An x_tables getsockopt (the family's level).
    fn get(&self, opt: i32, buf: &mut [u8]) -> io::Result<usize> {
        get(&self.xt, self.abi.level, opt, buf)
    }

    /// An ipset getsockopt (`SOL_IP` on the IPv4 socket).
    fn get_ipset(&self, buf: &mut [u8]) -> io::Result<usize> {
        get(
            self.ipset.as_ref().unwrap_or(&self.xt),
            libc::SOL_IP,
            SO_IP_SET,
            buf,
        )
    }
}

/// getsockopt(2) into `buf`; the length the kernel wrote.
fn get(fd: &OwnedFd, level: i32, opt: i32, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf is valid for len bytes; the kernel writes at most len.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
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

impl Sock {
    fn set(&self, opt: i32, buf: &[u8]) -> io::Result<()> {
        // SAFETY: buf is valid for its length; the kernel only reads it
        // (and writes the old counters through the pointer inside it,
        // into a buffer the caller keeps alive, see `replace`).
        let r = unsafe {
            libc::setsockopt(
                self.xt.as_raw_fd(),
                self.abi.level,
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

    /// IPT_SO_GET_INFO (IP6T_…) of `table`.
    pub fn info(&self, table: &str) -> io::Result<Info> {
        let mut b = vec![0u8; 84];
        put_name(&mut b[..32], table);
        self.get(IPT_SO_GET_INFO, &mut b)?;
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
        self.get(IPT_SO_GET_ENTRIES, &mut b)?;
        Ok(b.split_off(40))
    }

    /// [`Sock::entries`] without copying the blob out of the reply: the
    /// reply whole, the entries from byte [`ENTRIES_AT`] on (the start
    /// state's read, tens of megabytes at 100,000 rules).
    pub fn entries_reply(&self, table: &str, size: u32) -> io::Result<Vec<u8>> {
        let mut b = vec![0u8; ENTRIES_AT + size as usize];
        put_name(&mut b[..32], table);
        b[32..36].copy_from_slice(&size.to_ne_bytes());
        self.get(IPT_SO_GET_ENTRIES, &mut b)?;
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
            self.abi.rev_target
        } else {
            self.abi.rev_match
        };
        self.get(opt, &mut b).is_ok()
    }

    /// Every set's index and family, from one netlink dump
    /// ([`super::ipset_dump`]).
    pub fn ipset_headers(
        &self,
    ) -> io::Result<std::collections::HashMap<String, super::ipset_dump::SetHeader>> {
        match &self.nl {
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
        if let Some(v) = self.version.get() {
            return Ok(*v);
        }
        let v = self.ask_ipset_version()?;
        Ok(*self.version.get_or_init(|| v))
    }

    fn ask_ipset_version(&self) -> io::Result<u32> {
        let mut b = vec![0u8; 8];
        b[..4].copy_from_slice(&IP_SET_OP_VERSION.to_ne_bytes());
        self.get_ipset(&mut b)?;
        Ok(u32::from_ne_bytes(b[4..8].try_into().unwrap_or_default()))
    }

    /// The index of the set `name` of the socket's family
    /// (IP_SET_OP_GET_FNAME), `None` if there is none or it is of another
    /// family (libxt_set also takes a family-less set; the loader leaves
    /// those to the tool).
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
        self.get_ipset(&mut b)?;
        let family = u32::from_ne_bytes(b[8..12].try_into().unwrap_or_default());
        let index = u16::from_ne_bytes([b[12], b[13]]);
        Ok((index != IPSET_INVALID_ID && family == u32::from(self.abi.nfproto)).then_some(index))
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
        self.get_ipset(&mut b)?;
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
