//! Connect-time (cgroup) tests' helpers: the cgroup v2 mount, a test
//! cgroup removed on drop, and a child process that joins the cgroup and
//! the client namespace and makes connections there (a cgroup holds whole
//! processes, so the test itself cannot join it).

use std::io::Read;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_runtime::netns::Topology;

/// The cgroup v2 mount point.
pub fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("a cgroup2 mount")
}

/// A test cgroup, removed on drop.
pub struct Cgroup(pub PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `CGROUP|NETNS|JOB;JOB;…` for the child.
pub const CHILD_ENV: &str = "WEIR_LB_CHILD";

/// The child's side: joins the cgroup and the client namespace named in
/// [`CHILD_ENV`] and runs its jobs (`tcp`, `udpc` connected UDP, `udpu`
/// unconnected UDP: `KIND SRC DST PORT`), printing `RESULT JOB ANSWER
/// PEER` or `RESULT JOB ERR MESSAGE` per job. Does nothing without the
/// variable (so the child test is a no-op in a normal run).
pub fn child_main() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, '|');
    let (cg, ns, jobs) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    // Join the cgroup (the whole process), then the client namespace (this
    // thread: sockets made here belong to it).
    std::fs::write(Path::new(cg).join("cgroup.procs"), "0").unwrap();
    let f = std::fs::File::open(Path::new("/var/run/netns").join(ns)).unwrap();
    use std::os::fd::AsRawFd;
    assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
    let timeout = Duration::from_millis(1500);
    for job in jobs.split(';') {
        let f: Vec<&str> = job.split(' ').collect();
        let src: IpAddr = f[1].parse().unwrap();
        let dst = SocketAddr::new(f[2].parse().unwrap(), f[3].parse().unwrap());
        let res: Result<(String, String), std::io::Error> = (|| match f[0] {
            "tcp" => {
                let s = weir_runtime::netns::tcp_connect_from(src, dst, timeout)?;
                let mut s = s;
                s.set_read_timeout(Some(timeout))?;
                let mut reply = String::new();
                s.read_to_string(&mut reply)?;
                Ok((reply.trim().to_string(), s.peer_addr()?.to_string()))
            }
            "udpc" => {
                let s = UdpSocket::bind(SocketAddr::new(src, 0))?;
                s.connect(dst)?;
                s.set_read_timeout(Some(timeout))?;
                s.send(b"weir")?;
                let mut buf = [0u8; 256];
                let n = s.recv(&mut buf)?;
                Ok((
                    String::from_utf8_lossy(&buf[..n]).trim().to_string(),
                    "-".into(),
                ))
            }
            _ => {
                let s = UdpSocket::bind(SocketAddr::new(src, 0))?;
                s.set_read_timeout(Some(timeout))?;
                s.send_to(b"weir", dst)?;
                let mut buf = [0u8; 256];
                let (n, peer) = s.recv_from(&mut buf)?;
                Ok((
                    String::from_utf8_lossy(&buf[..n]).trim().to_string(),
                    peer.to_string(),
                ))
            }
        })();
        match res {
            Ok((answer, peer)) => println!("RESULT {job} {answer} {peer}"),
            Err(e) => println!("RESULT {job} ERR {}", e.to_string().replace(' ', "_")),
        }
    }
}

/// Runs `jobs` in a child process (this test binary running only
/// `child_test`, which calls [`child_main`]) in cgroup `cg` and the client
/// namespace; returns the `RESULT` lines (without the prefix).
pub fn child_results(child_test: &str, cg: &Path, topo: &Topology, jobs: &[String]) -> Vec<String> {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child_test, "--nocapture", "--test-threads=1"])
        .env(
            CHILD_ENV,
            format!("{}|{}|{}", cg.display(), topo.client.name(), jobs.join(";")),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.find("RESULT ").map(|i| l[i + 7..].to_string()))
        .collect()
}
