//! Network-namespace test harness, shared by the back ends' kernel tests.
//!
//! [`Topology`] builds three namespaces joined by two veth pairs:
//!
//! ```text
//!  client ns              node ns                         server ns
//!  eth0  ◀──veth──▶  to-client   to-server  ◀──veth──▶  eth0
//!                    169.254.0.1  169.254.0.2
//!                    fe80::1      fe80::1
//! ```
//!
//! The node forwards (IPv4 and IPv6) and is where rules and programs are
//! applied. Client source and server destination addresses are added on
//! demand as host addresses (`/32`, `/128`) on the end's `eth0`, with a
//! host route toward that side in the node; both ends default-route via the
//! node. Any address works, so endpoint addresses can come straight from a
//! policy's inventory.
//!
//! Traffic is sent from Rust: a socket belongs to the namespace of the
//! thread that created it, so each [`Netns`] has a worker thread that
//! entered the namespace with `setns(2)` and creates sockets there; they are
//! then used from any thread, so probes may run in parallel. Servers (one
//! per address, port and protocol, reused across probes) answer every TCP
//! connection and UDP datagram with the address they are bound to, so a
//! probe also tells which server answered (for service/DNAT checks).
//!
//! Names are unique per process and run (`weir-t<pid>-<n>-…`), so tests run
//! in parallel; namespaces are deleted on drop (also when a test panics)
//! and left-overs of dead processes are removed when a topology is made.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use crate::iptables::exec::NETNS_DIR;

type Job = Box<dyn FnOnce() + Send>;

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    name: String,
    worker: Mutex<Option<Sender<Job>>>,
}

fn ip_tool() -> io::Result<std::path::PathBuf> {
    crate::iptables::exec::find_program("ip").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "`ip` is not installed (Debian package iproute2)",
        )
    })
}

fn check(out: Output, what: &str) -> io::Result<Output> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Runs `ip ARGS…` (in the caller's namespace), failing on a non-zero exit.
fn ip(args: &[&str]) -> io::Result<Output> {
    let out = Command::new(ip_tool()?).args(args).output()?;
    check(out, &format!("ip {}", args.join(" ")))
}

/// Runs `ip -n NS -batch -` with `commands`, one per line.
fn ip_batch(ns: &str, commands: &[String]) -> io::Result<()> {
    let mut child = Command::new(ip_tool()?)
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(commands.join("\n").as_bytes())?;
    check(
        child.wait_with_output()?,
        &format!("ip -n {ns} -batch: {}", commands.join("; ")),
    )
    .map(|_| ())
}

impl Netns {
    /// Creates the namespace `name` (`/var/run/netns/NAME`).
    pub fn create(name: &str) -> io::Result<Netns> {
        ip(&["netns", "add", name])?;
        Ok(Netns {
            name: name.to_string(),
            worker: Mutex::new(None),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self) -> std::path::PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// A TCP server on `sa` inside the namespace that writes `reply` to
    /// every connection and closes it (a proxy or backend that says who
    /// it is); it runs until the process exits.
    pub fn answer_tcp(&self, sa: SocketAddr, reply: Vec<u8>) -> io::Result<()> {
        let listener = self.run(move || TcpListener::bind(sa))??;
        std::thread::Builder::new()
            .name(format!("answer-tcp-{sa}"))
            .spawn(move || {
                for mut c in listener.incoming().flatten() {
                    let _ = c.write_all(&reply);
                }
            })?;
        Ok(())
    }

    /// Runs `f` on a thread inside the namespace and returns its result.
    /// Sockets `f` creates belong to the namespace and may be used from any
    /// thread afterwards.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
        let sender = {
            let mut worker = self.worker.lock().unwrap_or_else(|e| e.into_inner());
            if worker.is_none() {
                *worker = Some(self.spawn_worker()?);
            }
            worker.as_ref().expect("just set").clone()
        };
        let (tx, rx) = channel();
        sender
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| io::Error::other("namespace worker is gone"))?;
        rx.recv()
            .map_err(|_| io::Error::other("namespace worker panicked"))
    }

    fn spawn_worker(&self) -> io::Result<Sender<Job>> {
        let file = File::open(self.path())?;
        let (tx, rx) = channel::<Job>();
        let (ready_tx, ready_rx) = channel();
        std::thread::Builder::new()
            .name(format!("netns-{}", self.name))
            .spawn(move || {
                // SAFETY: setns on a valid namespace fd; affects this thread.
                let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                let ok = r == 0;
                let _ = ready_tx.send(if ok {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                });
                drop(file);
                if ok {
                    for job in rx {
                        job();
                    }
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("namespace worker died"))??;
        Ok(tx)
    }

    /// Runs a program inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        self.exec_with_input(program, args, None)
    }

    /// Runs a program inside the namespace, feeding `stdin`.
    pub fn exec_with_input(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> io::Result<Output> {
        let path = crate::iptables::exec::find_program(program).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("`{program}` is not installed"),
            )
        })?;
        let file = File::open(self.path())?;
        let fd = file.as_raw_fd();
        let mut cmd = Command::new(path);
        cmd.args(args)
            .env("LC_ALL", "C")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: only setns between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        drop(file);
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let _ = pipe.write_all(input.as_bytes());
        }
        child.wait_with_output()
    }

    /// Writes a sysctl of this namespace, e.g. `net/ipv4/ip_forward`.
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_string();
        self.run(move || std::fs::write(&path, value))?
    }

    /// Reads a sysctl of this namespace.
    pub fn read_sysctl(&self, key: &str) -> io::Result<String> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(move || std::fs::read_to_string(&path).map(|s| s.trim().to_string()))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(mut w) = self.worker.lock() {
            w.take();
        }
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Transport protocol of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

struct Server {
    fd: i32,
    stop: Arc<AtomicBool>,
    // Keeps the socket open as long as the topology lives.
    _socket: Arc<dyn Send + Sync>,
}

#[derive(Default)]
struct Inner {
    client_addrs: HashSet<IpAddr>,
    server_addrs: HashSet<IpAddr>,
    servers: HashMap<(Proto, SocketAddr), Server>,
}

/// Client, node and server namespaces joined by two veth pairs.
pub struct Topology {
    // Field order matters for drop: servers first (in `inner`), then the
    // namespaces.
    inner: Mutex<Inner>,
    pub client: Netns,
    pub node: Netns,
    pub server: Netns,
}

/// The node's address on the client link (the client's gateway).
pub const NODE_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);
/// The node's address on the server link (the server's gateway).
pub const NODE_SERVER_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 2);
/// The node's link-local IPv6 address on both links.
pub const NODE_V6: &str = "fe80::1";
/// Interface names: `eth0` in client and server, these in the node.
pub const NODE_CLIENT_IF: &str = "to-client";
pub const NODE_SERVER_IF: &str = "to-server";

static COUNTER: AtomicUsize = AtomicUsize::new(0);
static CLEANUP: Once = Once::new();

/// Deletes `weir-t<pid>-…` namespaces whose process is gone.
fn remove_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("weir-t") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

impl Topology {
    /// Builds the three namespaces and links. Needs root.
    pub fn new() -> io::Result<Topology> {
        CLEANUP.call_once(remove_stale_namespaces);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let base = format!("weir-t{}-{n}", std::process::id());
        let client = Netns::create(&format!("{base}-client"))?;
        let node = Netns::create(&format!("{base}-node"))?;
        let server = Netns::create(&format!("{base}-server"))?;
        let topo = Topology {
            inner: Mutex::default(),
            client,
            node,
            server,
        };
        for ns in [&topo.client, &topo.node, &topo.server] {
            for (k, v) in [
                ("net/ipv4/conf/all/rp_filter", "0"),
                ("net/ipv4/conf/default/rp_filter", "0"),
                ("net/ipv6/conf/all/accept_dad", "0"),
                ("net/ipv6/conf/default/accept_dad", "0"),
            ] {
                ns.sysctl(k, v)?;
            }
        }
        topo.node.sysctl("net/ipv4/ip_forward", "1")?;
        topo.node.sysctl("net/ipv6/conf/all/forwarding", "1")?;
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            topo.client.name(),
            "type",
            "veth",
            "peer",
            "name",
            NODE_CLIENT_IF,
            "netns",
            topo.node.name(),
        ])?;
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            topo.server.name(),
            "type",
            "veth",
            "peer",
            "name",
            NODE_SERVER_IF,
            "netns",
            topo.node.name(),
        ])?;
        ip_batch(
            topo.node.name(),
            &[
                "link set lo up".into(),
                format!("link set {NODE_CLIENT_IF} up"),
                format!("link set {NODE_SERVER_IF} up"),
                format!("addr add {NODE_CLIENT_V4}/32 dev {NODE_CLIENT_IF}"),
                format!("addr add {NODE_SERVER_V4}/32 dev {NODE_SERVER_IF}"),
                format!("addr add {NODE_V6}/64 dev {NODE_CLIENT_IF} nodad"),
                format!("addr add {NODE_V6}/64 dev {NODE_SERVER_IF} nodad"),
            ],
        )?;
        for (ns, gw) in [
            (&topo.client, NODE_CLIENT_V4),
            (&topo.server, NODE_SERVER_V4),
        ] {
            ip_batch(
                ns.name(),
                &[
                    "link set lo up".into(),
                    "link set eth0 up".into(),
                    format!("route add default via {gw} dev eth0 onlink"),
                    format!("route add default via {NODE_V6} dev eth0"),
                ],
            )?;
        }
        Ok(topo)
    }

    fn add_addr(&self, side: Side, ip: IpAddr) -> io::Result<()> {
        let (ns, node_if) = match side {
            Side::Client => (&self.client, NODE_CLIENT_IF),
            Side::Server => (&self.server, NODE_SERVER_IF),
        };
        {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let set = match side {
                Side::Client => &inner.client_addrs,
                Side::Server => &inner.server_addrs,
            };
            if set.contains(&ip) {
                return Ok(());
            }
        }
        let (plen, extra) = if ip.is_ipv4() {
            (32, "")
        } else {
            (128, " nodad")
        };
        ip_batch(
            ns.name(),
            &[format!("addr add {ip}/{plen} dev eth0{extra}")],
        )?;
        ip_batch(
            self.node.name(),
            &[format!("route add {ip}/{plen} dev {node_if}")],
        )?;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match side {
            Side::Client => inner.client_addrs.insert(ip),
            Side::Server => inner.server_addrs.insert(ip),
        };
        Ok(())
    }

    /// Adds a source address to the client side (idempotent).
    pub fn add_client_addr(&self, ip: IpAddr) -> io::Result<()> {
        self.add_addr(Side::Client, ip)
    }

    /// Adds a destination address to the server side (idempotent).
    pub fn add_server_addr(&self, ip: IpAddr) -> io::Result<()> {
        self.add_addr(Side::Server, ip)
    }

    /// Starts (once) a TCP server on `addr:port` in the server namespace
    /// that writes its bound address and closes. Adds the address.
    pub fn serve_tcp(&self, addr: IpAddr, port: u16) -> io::Result<()> {
        self.serve(Proto::Tcp, addr, port)
    }

    /// Starts (once) a UDP server on `addr:port` in the server namespace
    /// that answers every datagram with its bound address. Adds the address.
    pub fn serve_udp(&self, addr: IpAddr, port: u16) -> io::Result<()> {
        self.serve(Proto::Udp, addr, port)
    }

    fn serve(&self, proto: Proto, addr: IpAddr, port: u16) -> io::Result<()> {
        let sa = SocketAddr::new(addr, port);
        if self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .servers
            .contains_key(&(proto, sa))
        {
            return Ok(());
        }
        self.add_server_addr(addr)?;
        let stop = Arc::new(AtomicBool::new(false));
        let server = match proto {
            Proto::Tcp => {
                let listener = Arc::new(self.server.run(move || TcpListener::bind(sa))??);
                let fd = listener.as_raw_fd();
                let l = listener.clone();
                let stop2 = stop.clone();
                std::thread::Builder::new()
                    .name(format!("tcp-server-{sa}"))
                    .spawn(move || {
                        let reply = addr.to_string();
                        for conn in l.incoming() {
                            if stop2.load(Ordering::SeqCst) {
                                break;
                            }
                            if let Ok(mut c) = conn {
                                let _ = c.write_all(reply.as_bytes());
                            }
                        }
                    })?;
                Server {
                    fd,
                    stop,
                    _socket: listener,
                }
            }
            Proto::Udp => {
                let socket = Arc::new(self.server.run(move || UdpSocket::bind(sa))??);
                socket.set_read_timeout(Some(Duration::from_millis(200)))?;
                let fd = socket.as_raw_fd();
                let s = socket.clone();
                let stop2 = stop.clone();
                std::thread::Builder::new()
                    .name(format!("udp-server-{sa}"))
                    .spawn(move || {
                        let reply = addr.to_string();
                        let mut buf = [0u8; 2048];
                        while !stop2.load(Ordering::SeqCst) {
                            if let Ok((_, peer)) = s.recv_from(&mut buf) {
                                let _ = s.send_to(reply.as_bytes(), peer);
                            }
                        }
                    })?;
                Server {
                    fd,
                    stop,
                    _socket: socket,
                }
            }
        };
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .servers
            .insert((proto, sa), server);
        Ok(())
    }

    /// Connects over TCP from `src` (client side) to `dst:port` (a server
    /// on the server side, started if needed); `true` if the connection
    /// was made and the server's answer arrived within `timeout`.
    pub fn tcp_connect(&self, src: IpAddr, dst: IpAddr, port: u16, timeout: Duration) -> bool {
        if self.serve_tcp(dst, port).is_err() {
            return false;
        }
        self.tcp_probe(src, dst, port, timeout).is_some()
    }

    /// Connects over TCP from `src` to `dst:port` without starting a server
    /// at `dst` (e.g. a service VIP the node translates); returns the bound
    /// address of the server that answered.
    pub fn tcp_probe(
        &self,
        src: IpAddr,
        dst: IpAddr,
        port: u16,
        timeout: Duration,
    ) -> Option<IpAddr> {
        self.add_client_addr(src).ok()?;
        let fd = self
            .client
            .run(move || bound_socket(src, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0))
            .ok()?
            .ok()?;
        let deadline = Instant::now() + timeout;
        connect_nonblocking(&fd, SocketAddr::new(dst, port), timeout).ok()?;
        let mut stream = TcpStream::from(fd);
        stream.set_nonblocking(false).ok()?;
        let left = deadline.saturating_duration_since(Instant::now());
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).ok()?;
        reply.trim().parse().ok()
    }

    /// Sends a UDP datagram from `src` to `dst:port` (a server on the
    /// server side, started if needed); `true` if the answer came back
    /// within `timeout`.
    pub fn udp_exchange(&self, src: IpAddr, dst: IpAddr, port: u16, timeout: Duration) -> bool {
        if self.serve_udp(dst, port).is_err() {
            return false;
        }
        self.udp_probe(src, dst, port, timeout).is_some()
    }

    /// Like [`Topology::udp_exchange`] without starting a server; returns
    /// the bound address of the server that answered.
    pub fn udp_probe(
        &self,
        src: IpAddr,
        dst: IpAddr,
        port: u16,
        timeout: Duration,
    ) -> Option<IpAddr> {
        self.add_client_addr(src).ok()?;
        let socket = self
            .client
            .run(move || UdpSocket::bind(SocketAddr::new(src, 0)))
            .ok()?
            .ok()?;
        socket.connect(SocketAddr::new(dst, port)).ok()?;
        socket.set_read_timeout(Some(timeout)).ok()?;
        socket.send(b"weir").ok()?;
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).ok()?;
        std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
    }

    /// Sends an ICMP (or ICMPv6) echo request from `src` to `dst` (added to
    /// the server side if needed); `true` if the reply came within
    /// `timeout`.
    pub fn icmp_echo(&self, src: IpAddr, dst: IpAddr, timeout: Duration) -> bool {
        if self.add_client_addr(src).is_err() || self.add_server_addr(dst).is_err() {
            return false;
        }
        self.icmp_probe(src, dst, timeout)
    }

    /// Like [`Topology::icmp_echo`] without adding `dst` anywhere.
    pub fn icmp_probe(&self, src: IpAddr, dst: IpAddr, timeout: Duration) -> bool {
        if self.add_client_addr(src).is_err() {
            return false;
        }
        let proto = if src.is_ipv4() {
            libc::IPPROTO_ICMP
        } else {
            libc::IPPROTO_ICMPV6
        };
        let Ok(Ok(fd)) = self
            .client
            .run(move || bound_socket(src, libc::SOCK_RAW, proto))
        else {
            return false;
        };
        icmp_ping(fd, src, dst, timeout).unwrap_or(false)
    }
}

#[derive(Clone, Copy)]
enum Side {
    Client,
    Server,
}

impl Drop for Topology {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        for ((proto, _), server) in inner.servers.iter() {
            server.stop.store(true, Ordering::SeqCst);
            // A TCP listener blocks in accept: shutdown wakes it. A UDP
            // server wakes by itself (read timeout) and sees `stop`;
            // shutting a UDP socket down makes `recv_from` return an empty
            // source address, which std does not expect.
            if *proto == Proto::Tcp {
                // SAFETY: the socket is still open (kept by `_socket`).
                unsafe { libc::shutdown(server.fd, libc::SHUT_RDWR) };
            }
        }
        inner.servers.clear();
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large enough and suitably aligned.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// A socket of `ty`/`proto` bound to `src` (port 0), in the calling
/// thread's namespace.
fn bound_socket(src: IpAddr, ty: i32, proto: i32) -> io::Result<OwnedFd> {
    let domain = if src.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscalls; the fd is owned right away.
    unsafe {
        let fd = libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let (sa, len) = sockaddr(SocketAddr::new(src, 0));
        if libc::bind(
            fd.as_raw_fd(),
            &sa as *const _ as *const libc::sockaddr,
            len,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }
}

/// Connects a non-blocking socket, waiting at most `timeout`.
fn connect_nonblocking(fd: &OwnedFd, dst: SocketAddr, timeout: Duration) -> io::Result<()> {
    let (sa, len) = sockaddr(dst);
    // SAFETY: valid fd and sockaddr.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &sa as *const _ as *const libc::sockaddr,
            len,
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
    }
    let mut err: libc::c_int = 0;
    let mut elen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid out-pointers.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut err as *mut _ as *mut libc::c_void,
            &mut elen,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err));
    }
    Ok(())
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

static ICMP_ID: AtomicU16 = AtomicU16::new(1);

/// Sends one echo request on a raw ICMP socket and waits for its reply.
fn icmp_ping(fd: OwnedFd, src: IpAddr, dst: IpAddr, timeout: Duration) -> io::Result<bool> {
    // A raw socket's sendto/recvfrom are the same syscalls UdpSocket uses.
    let socket = UdpSocket::from(fd);
    let v4 = src.is_ipv4();
    let id = ICMP_ID
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(std::process::id() as u16);
    let seq: u16 = 1;
    let mut pkt = vec![if v4 { 8 } else { 128 }, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(b"weir-harness");
    if v4 {
        let c = checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
    } // ICMPv6: the kernel fills in the checksum.
    socket.send_to(&pkt, SocketAddr::new(dst, 0))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        socket.set_read_timeout(Some(left))?;
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(false)
            }
            Err(e) => return Err(e),
        };
        if from.ip() != dst {
            continue;
        }
        // IPv4 raw sockets deliver the IP header; IPv6 ones do not.
        let icmp = if v4 {
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            if n < ihl + 8 {
                continue;
            }
            &buf[ihl..n]
        } else {
            &buf[..n]
        };
        if icmp.len() < 8 {
            continue;
        }
        let reply_type = if v4 { 0 } else { 129 };
        if icmp[0] == reply_type
            && u16::from_be_bytes([icmp[4], icmp[5]]) == id
            && u16::from_be_bytes([icmp[6], icmp[7]]) == seq
        {
            return Ok(true);
        }
    }
}

/// A TCP socket bound to `src` (port 0: the source address a test client
/// speaks from), not connected. Create it on a namespace's worker thread
/// to speak from inside that namespace; it may connect from any thread.
pub fn tcp_bound_socket(src: std::net::IpAddr) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let domain = if src.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let (b, len) = sockaddr(SocketAddr::new(src, 0));
    // SAFETY: plain syscalls; the fd is owned right away.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        if libc::bind(fd.as_raw_fd(), &b as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(fd)
    }
}

/// Connects a socket from [`tcp_bound_socket`] to `dst` (blocking).
pub fn tcp_connect(
    fd: std::os::fd::OwnedFd,
    dst: SocketAddr,
) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::AsRawFd;
    let (d, len) = sockaddr(dst);
    // SAFETY: a valid fd and sockaddr.
    if unsafe { libc::connect(fd.as_raw_fd(), &d as *const _ as *const libc::sockaddr, len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(std::net::TcpStream::from(fd))
}

/// A TCP connection from `src` ([`tcp_bound_socket`]) to `dst`, with a
/// send timeout. Call it on a namespace's worker thread to connect from
/// inside that namespace.
pub fn tcp_connect_from(
    src: std::net::IpAddr,
    dst: SocketAddr,
    timeout: std::time::Duration,
) -> std::io::Result<std::net::TcpStream> {
    use std::io::Write;
    let fd = tcp_bound_socket(src)?;
    let probe = std::net::TcpStream::from(fd);
    probe.set_write_timeout(Some(timeout))?;
    let mut stream = tcp_connect(probe.into(), dst)?;
    let _ = stream.write(b"");
    Ok(stream)
}
