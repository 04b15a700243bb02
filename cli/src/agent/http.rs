//! The agent's HTTP endpoints on `--listen ADDR`, on a plain std
//! TcpListener (one thread, one request per connection — probes and a
//! scraper, not traffic):
//!
//! - `GET /healthz`: 200 while the reconcile loop is alive (it published
//!   within the last [`STALE`] seconds; an idle loop publishes every
//!   second);
//! - `GET /readyz`: 200 when ready (a generation in force, the API server
//!   reachable), 503 otherwise, with the reason;
//! - `GET /metrics`: Prometheus text — the agent's own metrics and, on
//!   the eBPF back end, the `weir stats` counters;
//! - `GET /status`: the status as JSON (last decision, events).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A loop that has not published for this long is not alive.
pub const STALE: u64 = 120;

/// What the loop publishes for the server.
pub struct Published {
    pub ready: bool,
    pub not_ready_because: String,
    pub metrics: String,
    pub status: String,
    pub at: Instant,
}

pub type Shared = Arc<Mutex<Published>>;

pub fn shared() -> Shared {
    Arc::new(Mutex::new(Published {
        ready: false,
        not_ready_because: "starting: nothing listed yet".into(),
        metrics: String::new(),
        status: "{}".into(),
        at: Instant::now(),
    }))
}

/// Binds `addr` and serves on a thread; `extra` adds back-end metrics
/// at each scrape.
pub fn serve(
    addr: &str,
    shared: Shared,
    extra: Box<dyn Fn() -> String + Send>,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("weir-agent-http".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = answer(stream, &shared, extra.as_ref());
            }
        })?;
    Ok(local)
}

fn answer(
    mut stream: TcpStream,
    shared: &Shared,
    extra: &dyn Fn() -> String,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let (code, ctype, body) = {
        let p = shared.lock().unwrap_or_else(|e| e.into_inner());
        match path {
            "/healthz" if p.at.elapsed().as_secs() < STALE => (200, "text/plain", "ok\n".into()),
            "/healthz" => (503, "text/plain", "the reconcile loop is stuck\n".into()),
            "/readyz" if p.ready => (200, "text/plain", "ready\n".into()),
            "/readyz" => (
                503,
                "text/plain",
                format!("not ready: {}\n", p.not_ready_because),
            ),
            "/metrics" => (
                200,
                "text/plain; version=0.0.4",
                format!("{}{}", p.metrics, extra()),
            ),
            "/status" => (200, "application/json", p.status.clone() + "\n"),
            _ => (
                404,
                "text/plain",
                "not found: /healthz, /readyz, /metrics, /status\n".into(),
            ),
        }
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    write!(
        stream,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn probes_and_metrics() {
        let shared = shared();
        let addr = serve(
            "127.0.0.1:0",
            shared.clone(),
            Box::new(|| "weir_rule_packets_total 7\n".into()),
        )
        .unwrap();
        assert!(get(addr, "/healthz").starts_with("HTTP/1.1 200"));
        let r = get(addr, "/readyz");
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.contains("not ready: starting"), "{r}");
        {
            let mut p = shared.lock().unwrap();
            p.ready = true;
            p.metrics = "weir_agent_ready 1\n".into();
        }
        assert!(get(addr, "/readyz").starts_with("HTTP/1.1 200"));
        let m = get(addr, "/metrics");
        assert!(
            m.contains("weir_agent_ready 1\nweir_rule_packets_total 7\n"),
            "{m}"
        );
        assert!(get(addr, "/nope").starts_with("HTTP/1.1 404"));
    }
}
