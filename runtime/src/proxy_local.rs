//! Is every node-address redirect proxy on this host? (E0570)
//!
//! The checker allows `redirect … to proxy ADDR:PORT` with ADDR an
//! address of the program's only declared `node` (docs/language.md §4,
//! "Where the proxy is"). That means "the proxy on this node" only on
//! the host that holds ADDR. On any other host the back ends part ways
//! again: iptables `DNAT`s to ADDR and forwards the packet to whoever
//! has it, eBPF's socket lookup assigns it to a local listener on PORT.
//! The compiler cannot know where the bundle will be applied, so it
//! lists these proxies in the manifest (`local_proxies`,
//! [`weir_compiler::contract::local_proxy`]) and both back ends' apply
//! entries (`Iptables::apply`, `ebpf::apply_with`; `weir agent` goes
//! through them) call [`check`] first, before taking a lock, reading
//! kernel state or loading anything: a refused bundle leaves nothing
//! behind.
//!
//! "Holds ADDR" is read from the kernel with `getifaddrs(3)` (netlink
//! `RTM_GETADDR`) in the network namespace the bundle is applied to:
//! ADDR must be an address of an interface that is up. An address on an
//! interface that is down has no local route, so a `DNAT` to it would be
//! routed off the host; it is refused too. Loopback and unspecified
//! proxies are on every host and never listed.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use weir_compiler::contract::local_proxy::LocalProxy;
use weir_compiler::contract::Manifest;
use weir_compiler::diagnostics::Code;

/// The stable code of the refusal (docs/diagnostics.md).
pub const CODE: Code = Code::E0570;

/// The refusal: listed proxies whose address this host does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotOnHost {
    /// The proxies missing, in manifest order.
    pub missing: Vec<LocalProxy>,
    /// The network namespace the addresses were read in (`None`: the
    /// caller's).
    pub netns: Option<String>,
}

impl fmt::Display for NotOnHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.netns {
            Some(ns) => format!("this host (network namespace `{ns}`)"),
            None => "this host".to_string(),
        };
        write!(f, "{CODE}: refusing to apply: ")?;
        for (i, p) in self.missing.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "the proxy address {} of {p} is an address of node `{}`, but not of {host} (no interface that is up holds it)",
                p.addr, p.node
            )?;
        }
        write!(
            f,
            ". Applied here, iptables would forward the redirected packets to that address and eBPF would deliver them to a proxy on this host; nothing was changed. Apply the bundle on node `{}`, or give this host the address (`weir explain {CODE}`)",
            self.missing.first().map(|p| p.node.as_str()).unwrap_or("?")
        )
    }
}

impl std::error::Error for NotOnHost {}

/// Why [`check`] refused.
#[derive(Debug)]
pub enum CheckError {
    NotOnHost(NotOnHost),
    /// The host's addresses could not be read.
    Io {
        context: String,
        source: io::Error,
    },
}

/// The listed proxies of `proxies` whose address is not in `host`.
pub fn missing(proxies: &[LocalProxy], host: &[IpAddr]) -> Vec<LocalProxy> {
    proxies
        .iter()
        .filter(|p| !host.contains(&p.addr))
        .cloned()
        .collect()
}

/// Refuses `manifest` when a proxy it lists is not an address of this
/// host in `netns` (`None`: the calling thread's namespace). Reads the
/// host's addresses only when the manifest lists a proxy.
pub fn check(manifest: &Manifest, netns: Option<&str>) -> Result<(), CheckError> {
    if manifest.local_proxies.is_empty() {
        return Ok(());
    }
    let host = host_addrs_in(netns).map_err(|source| CheckError::Io {
        context: match netns {
            Some(ns) => format!("reading the addresses of network namespace `{ns}`"),
            None => "reading this host's addresses".to_string(),
        },
        source,
    })?;
    let missing = missing(&manifest.local_proxies, &host);
    if missing.is_empty() {
        return Ok(());
    }
    Err(CheckError::NotOnHost(NotOnHost {
        missing,
        netns: netns.map(str::to_string),
    }))
}

/// The addresses of the interfaces that are up, in network namespace
/// `netns` (`/run/netns/NAME`, as `ip netns add` makes it), read from a
/// short-lived thread that enters it (`setns(2)` moves only the calling
/// thread; the netlink socket `getifaddrs` opens belongs to the
/// namespace of the thread that opens it).
pub fn host_addrs_in(netns: Option<&str>) -> io::Result<Vec<IpAddr>> {
    let Some(ns) = netns else {
        return host_addrs();
    };
    let file = std::fs::File::open(format!("/run/netns/{ns}"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            use std::os::fd::AsRawFd;
            // SAFETY: setns on an fd that stays open for the call; it
            // moves only this thread, which ends after the read.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            host_addrs()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the address-reading thread panicked")))
    })
}

/// The IPv4 and IPv6 addresses of the interfaces that are up
/// (`IFF_UP`), in the calling thread's network namespace.
pub fn host_addrs() -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_flags & libc::IFF_UP as u32 == 0 {
            continue;
        }
        // SAFETY: `ifa_addr` points at a sockaddr of the family it names.
        let addr = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        sin.sin_addr.s_addr,
                    ))))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
                }
                _ => None,
            }
        };
        out.extend(addr);
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(addr: &str, index: usize) -> LocalProxy {
        LocalProxy {
            addr: addr.parse().unwrap(),
            index,
            location: None,
            node: "n1".into(),
            port: 15001,
            steer: "mesh".into(),
        }
    }

    #[test]
    fn a_proxy_is_missing_unless_the_host_holds_its_address() {
        let ps = [proxy("10.99.0.1", 1), proxy("fd99::1", 2)];
        let host: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "10.99.0.1".parse().unwrap()];
        let m = missing(&ps, &host);
        assert_eq!(m, vec![proxy("fd99::1", 2)]);
        let e = NotOnHost {
            missing: m,
            netns: Some("node".into()),
        };
        let text = e.to_string();
        assert!(text.starts_with("E0570: refusing to apply: the proxy address fd99::1 of redirect rule 2 of steer `mesh` to proxy [fd99::1]:15001 is an address of node `n1`, but not of this host (network namespace `node`)"), "{text}");
        assert!(text.contains("nothing was changed"), "{text}");
    }

    #[test]
    fn this_host_holds_its_loopback_address() {
        // The namespace the tests run in has `lo` up.
        let a = host_addrs().unwrap();
        assert!(a.contains(&"127.0.0.1".parse().unwrap()), "{a:?}");
    }
}
