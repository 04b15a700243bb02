//! The agent's HTTP endpoints on `--listen ADDR` (probes and a scraper,
//! not traffic):
//!
//! - `GET /healthz`: 200 while the reconcile loop is alive (it published
//!   within the last [`STALE`] seconds; an idle loop publishes every
//!   second);
//! - `GET /readyz`: 200 when ready (a generation in force, the API server
//!   reachable), 503 otherwise, with the reason;
//! - `GET /metrics`: Prometheus text — the agent's own metrics and the
//!   back end's counters (the same renderer as `weir stats --serve`,
//!   `crate::metrics`; docs/metrics.md);
//! - `GET /status`: the status as JSON (last decision, events).
//!
//! The server itself (threads, limits, 404/405/400) is
//! `crate::metrics::serve`, shared with `weir stats --serve`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::metrics::serve::{self, Handler, Response};
use crate::metrics::text::CONTENT_TYPE;

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

/// The agent's routes on the shared server ([`crate::metrics::serve`]).
struct Agent {
    shared: Shared,
    /// The back end's metrics, read at each scrape (one at a time).
    extra: Mutex<Box<dyn FnMut() -> String + Send>>,
}

impl Handler for Agent {
    fn answer(&self, path: &str) -> Option<Response> {
        const TEXT: &str = "text/plain; charset=utf-8";
        if path == "/metrics" {
            // The back end is read outside the status lock: a slow read
            // never holds up the reconcile loop's publishing.
            let own = self.lock().metrics.clone();
            let backend = (self.extra.lock().unwrap_or_else(|e| e.into_inner()))();
            return Some(Response::new(200, CONTENT_TYPE, own + &backend));
        }
        let p = self.lock();
        Some(match path {
            "/healthz" if p.at.elapsed().as_secs() < STALE => Response::new(200, TEXT, "ok\n"),
            "/healthz" => Response::new(503, TEXT, "the reconcile loop is stuck\n"),
            "/readyz" if p.ready => Response::new(200, TEXT, "ready\n"),
            "/readyz" => Response::new(503, TEXT, format!("not ready: {}\n", p.not_ready_because)),
            "/status" => Response::new(200, "application/json", p.status.clone() + "\n"),
            _ => return None,
        })
    }

    fn paths(&self) -> &'static str {
        "/healthz, /readyz, /metrics, /status"
    }
}

impl Agent {
    fn lock(&self) -> std::sync::MutexGuard<'_, Published> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Binds `addr` and serves on a thread; `extra` adds back-end metrics
/// at each scrape.
pub fn serve(
    addr: &str,
    shared: Shared,
    extra: Box<dyn FnMut() -> String + Send>,
) -> std::io::Result<std::net::SocketAddr> {
    let agent = Agent {
        shared,
        extra: Mutex::new(extra),
    };
    serve::serve(addr, "weir-agent-http", Arc::new(agent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

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
            m.contains("weir_agent_ready 1\n") && m.ends_with("weir_rule_packets_total 7\n"),
            "{m}"
        );
        assert!(get(addr, "/nope").starts_with("HTTP/1.1 404"));
    }
}
