//! A minimal HTTP/1.1 server for scrapers and probes, on a std
//! `TcpListener`: `weir stats --serve` (`/metrics`) and `weir agent
//! --listen` (its probes and `/metrics`) both run on it.
//!
//! **Why this small.** A scraper sends `GET /metrics` every few seconds;
//! a probe, `GET /healthz`. Neither needs keep-alive, chunking or TLS, and
//! a hand-written answer of a few lines is easier to keep from panicking
//! than a framework is to vendor. What it guarantees: a thread per
//! connection, at most [`MAX_CONNECTIONS`] at once (more are answered
//! 503 at once, never queued without bound); a request head of at most
//! [`MAX_HEAD`] bytes read within [`TIMEOUT`] in all; `GET` and `HEAD` only
//! (405 otherwise); 400 on a request line that is not HTTP; 404 on a path
//! the handler does not know; every answer `Connection: close`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// The most bytes of a request head read.
pub const MAX_HEAD: u64 = 16 * 1024;
/// How long a client may take to send its request head.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// One connection being served; dropping it frees its place.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An answer.
pub struct Response {
    pub code: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn new(code: u16, content_type: &'static str, body: impl Into<String>) -> Response {
        Response {
            code,
            content_type,
            body: body.into(),
        }
    }

    fn text(code: u16, body: &str) -> Response {
        Response::new(code, "text/plain; charset=utf-8", body)
    }
}

/// Path (without the query string) → answer; `None` is a 404 that
/// lists `paths`.
pub trait Handler: Send + Sync + 'static {
    fn answer(&self, path: &str) -> Option<Response>;
    /// The paths served, for the 404 text.
    fn paths(&self) -> &'static str;
}

/// Binds `addr` and serves `handler` on a thread named `name`; the
/// address bound (port 0 picks one).
pub fn serve(addr: &str, name: &str, handler: Arc<dyn Handler>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                active.fetch_add(1, Ordering::SeqCst);
                let slot = Slot(active.clone());
                if active.load(Ordering::SeqCst) > MAX_CONNECTIONS {
                    drop(slot);
                    let r = Response::text(503, "busy: too many connections\n");
                    let _ = respond(stream, &r, false);
                    continue;
                }
                let handler = handler.clone();
                // If the thread cannot start, the closure and its slot are
                // dropped: the count stays right.
                let _ = std::thread::Builder::new()
                    .name("weir-http-conn".into())
                    .spawn(move || {
                        let _slot = slot;
                        let _ = connection(stream, handler.as_ref());
                    });
            }
        })?;
    Ok(local)
}

/// The stream, read until one deadline for the whole head: a client
/// trickling a byte at a time cannot hold its place longer than
/// [`TIMEOUT`].
struct Deadline<'a>(&'a TcpStream, Instant);

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.1.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        let mut s: &TcpStream = self.0;
        s.set_read_timeout(Some(left))?;
        s.read(buf)
    }
}

fn connection(stream: TcpStream, handler: &dyn Handler) -> std::io::Result<()> {
    stream.set_write_timeout(Some(TIMEOUT))?;
    let deadline = Deadline(&stream, Instant::now() + TIMEOUT);
    let mut head = BufReader::new(deadline.take(MAX_HEAD));
    let mut line = Vec::new();
    head.read_until(b'\n', &mut line)?;
    // Read the rest of the head, so that closing does not reset a
    // connection with unread request bytes.
    let mut rest = Vec::new();
    loop {
        rest.clear();
        if head.read_until(b'\n', &mut rest)? == 0 || rest == b"\r\n" || rest == b"\n" {
            break;
        }
    }
    let line = String::from_utf8_lossy(&line);
    let mut words = line.split_whitespace();
    let (method, target, version) = (words.next(), words.next(), words.next());
    let r = match (method, target, version) {
        (Some(m), Some(t), Some(v)) if v.starts_with("HTTP/") && t.starts_with('/') => {
            let path = t.split('?').next().unwrap_or(t);
            if m != "GET" && m != "HEAD" {
                Response::text(405, "only GET and HEAD\n")
            } else {
                handler.answer(path).unwrap_or_else(|| {
                    Response::text(404, &format!("not found: {}\n", handler.paths()))
                })
            }
        }
        _ => Response::text(400, "bad request\n"),
    };
    respond(stream, &r, method == Some("HEAD"))
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

fn respond(mut stream: TcpStream, r: &Response, head_only: bool) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.code,
        reason(r.code),
        r.content_type,
        r.body.len()
    );
    if r.code == 405 {
        out += "Allow: GET, HEAD\r\n";
    }
    out += "\r\n";
    if !head_only {
        out += &r.body;
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl Handler for Echo {
        fn answer(&self, path: &str) -> Option<Response> {
            (path == "/metrics").then(|| Response::new(200, "text/plain", "x 1\n"))
        }
        fn paths(&self) -> &'static str {
            "/metrics"
        }
    }

    fn send(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        // The server may close before reading an over-long head.
        let _ = s.write_all(raw);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn answers_and_refuses_without_panicking() {
        let addr = serve("127.0.0.1:0", "test-http", Arc::new(Echo)).unwrap();
        let ok = send(addr, b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nx 1\n"), "{ok}");
        let head = send(addr, b"HEAD /metrics HTTP/1.0\r\n\r\n");
        assert!(head.contains("Content-Length: 4\r\n") && head.ends_with("\r\n\r\n"));
        assert!(send(addr, b"GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(send(addr, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(send(addr, b"\xff\xfe garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
        assert!(send(addr, b"").starts_with("HTTP/1.1 400"));
        // A head longer than the limit: cut, answered, no panic.
        let mut long = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 40_000));
        long.extend(b"\r\n\r\n");
        let r = send(addr, &long);
        assert!(r.starts_with("HTTP/1.1 200") || r.is_empty(), "{r}");
        // Concurrent scrapes.
        let threads: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(move || send(addr, b"GET /metrics HTTP/1.1\r\n\r\n")))
            .collect();
        for t in threads {
            assert!(t.join().unwrap().starts_with("HTTP/1.1 200"));
        }
        // Still serving after all that.
        assert!(send(addr, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
    }
}
