//! The program and flows both verdict-event tests send
//! (`ebpf_events.rs`, `iptables_monitor.rs`), with what `weir monitor
//! --json` must print for them: the interpreter's events
//! (`interp::events::events`). Included with `#[path]`.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::Value;
use weir_compiler::check::check_program;
use weir_compiler::interp::events::events;
use weir_compiler::interp::{Interp, Packet};
use weir_compiler::model::{Model, Proto};
use weir_compiler::provenance::ProvenanceTable;
use weir_compiler::source::MemoryLoader;

pub const PROGRAM: &str = r#"
endpoint web   { labels { app: "web" }   addr 10.1.0.10 }
endpoint other { labels { app: "other" } addr 10.1.0.11 }
endpoint db    { labels { app: "db" }    addr 10.2.0.20 }

policy db-in {
  applies to app == "db"
  ingress {
    log udp 6000 from any
    allow tcp 5432 from app == "web" log
    allow udp 5000 from any
    allow udp 6000 from any
    deny tcp 22 from any
  }
}

policy web-out {
  applies to app == "web"
  egress {
    allow to app == "db" log
  }
}

policy out-stage priority 10 audit {
  applies to all
  egress {
    allow tcp to any
    allow udp 5000 to any
    allow udp 6000 to any
    deny udp 7000 to any
  }
}

policy db-tighten priority 10 audit {
  applies to app == "db"
  ingress {
    allow udp 5000 from app == "web"
    deny from any
  }
}
"#;

/// What one expected event must look like in `weir monitor --json`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Want {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub dport: u16,
    pub proto: String,
    pub verdict: String,
    pub audit: bool,
    pub provenance: u64,
}

pub fn ip(a: &str) -> IpAddr {
    a.parse().unwrap()
}

/// The client endpoints `web` and `other`, and `db`.
pub fn addrs() -> (IpAddr, IpAddr, IpAddr) {
    (ip("10.1.0.10"), ip("10.1.0.11"), ip("10.2.0.20"))
}

/// (protocol, source, destination port, gets through), all to `db`: a
/// denied TCP connect, a denied datagram (both audit sides would deny it,
/// each by an audit policy: two audit events), a TCP connection allowed
/// by a rule with `log` on each side (each side reports its `allow`,
/// though the ingress rule decides the packet), a UDP flow past a `log`
/// rule, a UDP flow the staged policies allow too (only the egress side's
/// `allow`).
pub fn flows() -> [(Proto, IpAddr, u16, bool); 5] {
    let (web, other, _) = addrs();
    [
        (Proto::Tcp, other, 22, false),
        (Proto::Udp, other, 7000, false),
        (Proto::Tcp, web, 5432, true),
        (Proto::Udp, web, 6000, true),
        (Proto::Udp, web, 5000, true),
    ]
}

/// The checked program, its provenance ids.
pub fn model() -> (Model, ProvenanceTable) {
    let loader = MemoryLoader::new().with("main.weir", PROGRAM);
    let c = check_program(&[PathBuf::from("main.weir")], &loader, None);
    let prov = ProvenanceTable::new(&c.model);
    (c.model, prov)
}

/// The interpreter's events for the flows, in sending order.
pub fn expected(model: &Model, prov: &ProvenanceTable) -> Vec<Want> {
    let interp = Interp::new(model);
    let (_, _, db) = addrs();
    let mut want = Vec::new();
    for (proto, from, port, _) in flows() {
        let o = interp.evaluate(&Packet::new(proto, from, 40000, db, port));
        for e in events(model, &o) {
            want.push(Want {
                src: from,
                dst: db,
                dport: port,
                proto: if proto == Proto::Tcp { "tcp" } else { "udp" }.into(),
                verdict: e.verdict.name().into(),
                audit: e.audit,
                provenance: u64::from(prov.id(&e.by)),
            });
        }
    }
    want
}

/// One `weir monitor --json` line as a [`Want`].
pub fn seen(l: &Value) -> Want {
    Want {
        src: l["src"].as_str().unwrap().parse().unwrap(),
        dst: l["dst"].as_str().unwrap().parse().unwrap(),
        dport: l["dport"].as_u64().unwrap() as u16,
        proto: l["proto"].as_str().unwrap().into(),
        verdict: l["verdict"].as_str().unwrap().into(),
        audit: l["audit"].as_bool().unwrap(),
        provenance: l["provenance"].as_u64().unwrap(),
    }
}
