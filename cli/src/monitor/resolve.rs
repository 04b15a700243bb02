//! What an event's numbers mean on this node: provenance ids, addresses
//! and frontends resolved through the manifest recorded at apply, and the
//! event's kernel time turned into wall-clock time.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use weir_compiler::contract::event::VerdictEvent;
use weir_compiler::contract::manifest::{DirectionName, Manifest, ProvenanceEntry};

/// One printed event: `weir monitor --json` writes this object per line
/// (docs/monitor.md lists the fields).
#[derive(Debug, Clone, Serialize)]
pub struct EventLine {
    /// Wall-clock time, RFC 3339 UTC with microseconds.
    pub time: String,
    /// `allow`, `deny`, `reject` or `log`.
    pub verdict: &'static str,
    /// An audit ("would") verdict: not enforced.
    pub audit: bool,
    /// `tcp`, `udp`, `icmp`, `icmp6`, `sctp`, or the protocol number.
    pub proto: String,
    pub src: IpAddr,
    pub sport: u16,
    /// The destination as sent (a service frontend when translated).
    pub dst: IpAddr,
    pub dport: u16,
    pub src_endpoint: Option<String>,
    pub dst_endpoint: Option<String>,
    /// The provenance id (the manifest's `provenance[].id`).
    pub provenance: u32,
    /// `policy/direction#N` for a rule (N from 1, as `weir trace`), else
    /// the provenance's description.
    pub rule: String,
    pub policy: Option<String>,
    /// `file:line:column` of the deciding declaration, when it has one.
    pub location: Option<String>,
    /// The service whose frontend the packet was sent to, if translated.
    pub service: Option<String>,
    /// The backend the service chose (`addr:port`).
    pub backend: Option<String>,
}

impl EventLine {
    /// The human line.
    pub fn human(&self) -> String {
        let verdict = if self.audit {
            format!("would {}", self.verdict)
        } else {
            self.verdict.to_string()
        };
        let name = |n: &Option<String>| n.clone().unwrap_or_else(|| "-".into());
        let mut s = format!(
            "{} {:<12} {} {} -> {} ({} -> {}) by {}",
            self.time,
            verdict.to_uppercase(),
            self.proto,
            SocketAddr::new(self.src, self.sport),
            SocketAddr::new(self.dst, self.dport),
            name(&self.src_endpoint),
            name(&self.dst_endpoint),
            self.rule
        );
        if let Some(l) = &self.location {
            s += &format!(" at {l}");
        }
        if let Some(svc) = &self.service {
            s += &format!(" via {svc}");
            if let Some(b) = &self.backend {
                s += &format!(" -> {b}");
            }
        }
        s
    }
}

/// The manifest's names, indexed.
pub struct Resolver {
    provenance: BTreeMap<u32, ProvenanceEntry>,
    endpoints: BTreeMap<IpAddr, String>,
    frontends: BTreeMap<String, String>,
    /// Wall clock minus CLOCK_MONOTONIC, ns (eBPF times are monotonic).
    offset_ns: i128,
}

impl Resolver {
    pub fn from_file(path: &Path) -> Result<Resolver, String> {
        let text = std::fs::read(path).map_err(|e| {
            format!(
                "reading the manifest recorded at apply ({}): {e}",
                path.display()
            )
        })?;
        let m = weir_compiler::contract::parse(&text)
            .map_err(|e| format!("the manifest recorded at apply: {e}"))?;
        Ok(Resolver::new(&m))
    }

    pub fn new(m: &Manifest) -> Resolver {
        let mut endpoints = BTreeMap::new();
        for e in &m.endpoints {
            for a in &e.addrs {
                endpoints.entry(a.addr).or_insert_with(|| e.name.clone());
            }
        }
        let mut frontends = BTreeMap::new();
        for s in &m.services {
            for f in &s.frontends {
                let fe = &f.frontend;
                frontends.insert(format!("{}/{}", fe.addr, fe.proto), s.name.clone());
            }
        }
        Resolver {
            provenance: m.provenance.iter().map(|p| (p.id, p.clone())).collect(),
            endpoints,
            frontends,
            offset_ns: wall_minus_monotonic(),
        }
    }

    pub fn line(&self, e: &VerdictEvent) -> EventLine {
        let p = self.provenance.get(&e.provenance);
        let rule = match p {
            Some(ProvenanceEntry {
                policy: Some(pol),
                direction: Some(d),
                index: Some(i),
                ..
            }) => format!(
                "{pol}/{}#{}",
                match d {
                    DirectionName::Egress => "egress",
                    DirectionName::Ingress => "ingress",
                },
                i + 1
            ),
            Some(p) => p.description.clone(),
            None => format!("provenance {} (not in the applied manifest)", e.provenance),
        };
        let proto = proto_name(e.proto);
        let service = e.backend.and_then(|_| {
            self.frontends
                .get(&format!("{}/{proto}", SocketAddr::new(e.dst, e.dport)))
                .cloned()
        });
        let ns = if e.wall {
            e.time_ns as i128
        } else {
            e.time_ns as i128 + self.offset_ns
        };
        EventLine {
            time: rfc3339(ns),
            verdict: e.verdict.name(),
            audit: e.audit,
            proto,
            src: e.src,
            sport: e.sport,
            dst: e.dst,
            dport: e.dport,
            src_endpoint: self.endpoints.get(&e.src).cloned(),
            dst_endpoint: self.endpoints.get(&e.dst).cloned(),
            provenance: e.provenance,
            rule,
            policy: p.and_then(|p| p.policy.clone()),
            location: p.and_then(|p| p.location.as_ref().map(|l| l.at.clone())),
            service,
            backend: e.backend.map(|(a, p)| SocketAddr::new(a, p).to_string()),
        }
    }
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmp6".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

fn wall_minus_monotonic() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let mono = ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128;
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    wall - mono
}

/// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` for nanoseconds since the epoch.
pub fn rfc3339(ns: i128) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let micros = ns.rem_euclid(1_000_000_000) / 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i128::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_line_names_rule_line_endpoints_and_backend() {
        let l = EventLine {
            time: rfc3339(0),
            verdict: "deny",
            audit: true,
            proto: "tcp".into(),
            src: "10.1.0.5".parse().unwrap(),
            sport: 40000,
            dst: "10.96.0.10".parse().unwrap(),
            dport: 443,
            src_endpoint: Some("web-1".into()),
            dst_endpoint: None,
            provenance: 7,
            rule: "api-ingress/ingress#2".into(),
            policy: Some("api-ingress".into()),
            location: Some("t.weir:41:5".into()),
            service: Some("web-vip".into()),
            backend: Some("10.1.0.6:8443".into()),
        };
        assert_eq!(
            l.human(),
            "1970-01-01T00:00:00.000000Z WOULD DENY   tcp 10.1.0.5:40000 -> 10.96.0.10:443 \
             (web-1 -> -) by api-ingress/ingress#2 at t.weir:41:5 via web-vip -> 10.1.0.6:8443"
        );
    }

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        // 2026-12-06T10:04:29.5Z
        assert_eq!(
            rfc3339(1_796_551_469_500_000_000),
            "2026-12-06T10:04:29.500000Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }
}
