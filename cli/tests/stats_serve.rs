//! `weir stats --serve` as a scraper sees it, for both back ends: a small
//! program is compiled and applied in a network namespace, UDP probes go
//! through it (one new flow, so one decision, each), then `weir stats
//! --serve 127.0.0.1:0` is started and `/metrics` fetched with curl. The
//! exposition must pass Prometheus' own checker (`promtool check
//! metrics`), parse with an independent parser (`prometheus-parse`), and
//! its counters must equal, id by id, `weir stats --json` read right
//! after and, for every id the reference interpreter names for the
//! packets sent, the interpreter's count. The bundle's identity
//! (`weir_bundle_info`) must be the manifest's.
//!
//! Needs root, `ip`, `curl`, `promtool` (and `iptables` for that back
//! end); skipped without, unless `CI` is set (then it fails).

#[path = "support/run.rs"]
mod run;
use run::{ok, s, show, weir};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use weir_compiler::check::check_program;
use weir_compiler::interp::{Interp, Packet};
use weir_compiler::model::{Proto, Verdict};
use weir_compiler::provenance::ProvenanceTable;
use weir_compiler::source::MemoryLoader;
use weir_runtime::netns::{Topology, NODE_CLIENT_IF, NODE_SERVER_IF};

const PROGRAM: &str = r#"
endpoint web   { labels { app: "web" }   addr 10.1.0.10 }
endpoint other { labels { app: "other" } addr 10.1.0.11 }
endpoint db    { labels { app: "db" }    addr 10.2.0.20 }

policy db-in {
  applies to app == "db"
  ingress {
    allow udp 5000 from app == "web"
    deny from any
  }
}

service dbsvc {
  frontend 10.96.0.1:5000/udp
  backends select app == "db" port 5000
}
"#;

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Detaches what the test applied and removes its directory when it
/// ends, however it ends (a failed assertion must not leave pins behind).
struct Detach(Vec<String>, PathBuf);

impl Drop for Detach {
    fn drop(&mut self) {
        let mut a = vec!["detach"];
        a.extend(self.0.iter().map(String::as_str));
        let o = weir(&a);
        let _ = std::fs::remove_dir_all(&self.1);
        if !std::thread::panicking() {
            assert_eq!(o.status.code(), Some(0), "{}", show(&o));
        }
    }
}

/// Starts `weir stats --serve 127.0.0.1:0 TARGET…`; the address it bound.
fn serve(target: &[&str]) -> (Server, String) {
    let mut args = vec!["stats", "--serve", "127.0.0.1:0"];
    args.extend_from_slice(target);
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    err.read_line(&mut line).unwrap();
    // Keep reading: the server logs scrape errors there.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let server = Server(child);
    let addr = line
        .trim()
        .strip_prefix("weir stats: serving http://")
        .and_then(|l| l.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("weir stats --serve said: {line:?}"))
        .to_string();
    (server, addr)
}

/// `curl` of `url`: (HTTP status, body).
fn curl(url: &str) -> (u16, String) {
    let o = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}", url])
        .output()
        .unwrap();
    assert!(o.status.success(), "curl {url}: {}", show(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool check metrics: {}\n{text}",
        show(&o)
    );
}

/// The samples of `metric`, by their `id` label.
fn by_id(parsed: &prometheus_parse::Scrape, metric: &str) -> BTreeMap<u64, u64> {
    parsed
        .samples
        .iter()
        .filter(|x| x.metric == metric)
        .map(|x| {
            let id = x.labels.get("id").unwrap().parse().unwrap();
            let v = match x.value {
                prometheus_parse::Value::Counter(v) => v,
                ref other => panic!("{metric}: {other:?}"),
            };
            (id, v as u64)
        })
        .collect()
}

fn scrape_matches_stats_and_interpreter(name: &str, ebpf: bool, programs: &[&str]) {
    if !weir_runtime::kernel_test::may_run(name, programs) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir(name).unwrap();
    let src = work.join("main.weir");
    std::fs::write(&src, PROGRAM).unwrap();
    let bundle = work.join("bundle");
    let backend = if ebpf { "ebpf" } else { "iptables" };
    ok(weir(&[
        "compile",
        s(&src),
        "--target",
        backend,
        "-o",
        s(&bundle),
    ]));
    let topo = Topology::new().expect("netns topology");
    let state = work.join("state");
    let mut target = vec!["--backend", backend, "--netns", topo.node.name()];
    if ebpf {
        // Both links: replies from the backend are reverse-translated.
        target.extend(["--iface", NODE_CLIENT_IF, "--iface", NODE_SERVER_IF]);
    } else {
        target.extend(["--state-dir", s(&state)]);
    }
    let run = |verb: &str, extra: &[&str]| {
        let mut a = vec![verb];
        a.extend_from_slice(extra);
        a.extend_from_slice(&target);
        weir(&a)
    };
    ok(run("apply", &[s(&bundle)]));
    let _detach = Detach(target.iter().map(|a| a.to_string()).collect(), work.clone());

    // Traffic, and what the interpreter says each packet was decided by.
    let loader = MemoryLoader::new().with("main.weir", PROGRAM);
    let model = check_program(&[PathBuf::from("main.weir")], &loader, None).model;
    let prov = ProvenanceTable::new(&model);
    let interp = Interp::new(&model);
    let db: IpAddr = "10.2.0.20".parse().unwrap();
    topo.serve_udp(db, 5000).unwrap();
    let vip: IpAddr = "10.96.0.1".parse().unwrap();
    let mut want: BTreeMap<u64, u64> = BTreeMap::new();
    let mut service_flows = 0u64;
    for (src, dst, n) in [
        ("10.1.0.10", db, 3),
        ("10.1.0.11", db, 2),
        ("10.1.0.10", vip, 2),
    ] {
        let src: IpAddr = src.parse().unwrap();
        let o = interp.evaluate(&Packet::new(Proto::Udp, src, 40000, dst, 5000));
        let wait = if o.verdict == Verdict::Allow {
            2500
        } else {
            300
        };
        for _ in 0..n {
            let got = topo.udp_probe(src, dst, 5000, Duration::from_millis(wait));
            if o.verdict == Verdict::Allow {
                assert_eq!(got, Some(db), "{src} → {dst}: {o:?}");
            } else {
                assert_eq!(got, None, "{src} → {dst}: {o:?}");
            }
            for by in std::iter::once(o.decided_by).chain(o.logged.iter().copied()) {
                *want.entry(u64::from(prov.id(&by))).or_default() += 1;
            }
            service_flows += u64::from(o.service.as_ref().is_some_and(|s| s.chosen.is_some()));
        }
    }
    assert_eq!(service_flows, 2, "the interpreter translates the VIP");

    // The scrape, through a real HTTP client.
    let (_server, addr) = serve(&target);
    let (code, text) = curl(&format!("http://{addr}/metrics"));
    assert_eq!(code, 200, "{text}");
    let (code, _) = curl(&format!("http://{addr}/nope"));
    assert_eq!(code, 404);
    promtool_check(&text);
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("prometheus-parse reads the exposition");

    // Against `weir stats --json`, read right after (no traffic between).
    let json: Value = serde_json::from_str(&ok(run("stats", &["--json"]))).unwrap();
    let stats = |k: &str| -> BTreeMap<u64, u64> {
        json[k]
            .as_array()
            .unwrap_or_else(|| panic!("{k} in {json}"))
            .iter()
            .map(|c| (c["id"].as_u64().unwrap(), c["packets"].as_u64().unwrap()))
            .collect()
    };
    // The ids the probes were decided by must match exactly; the others
    // (conntrack, the defaults) may still count a stray packet of the
    // links (IPv6 neighbour discovery) between the scrape and the read,
    // never fewer.
    let rules = by_id(&parsed, "weir_rule_packets_total");
    let json_rules = stats("rules");
    // eBPF (hash tables, the default): one more, the `table-full` slot.
    let full = usize::from(ebpf);
    assert_eq!(
        rules.len(),
        prov.len() + full,
        "one sample per provenance id (and table-full)"
    );
    assert_eq!(
        rules.keys().collect::<Vec<_>>(),
        json_rules.keys().collect::<Vec<_>>()
    );
    for (id, n) in &rules {
        let j = json_rules[id];
        match want.get(id) {
            Some(w) => assert!(
                n == w && j == *w,
                "id {id}: /metrics {n}, weir stats --json {j}, interpreter {w}\n{text}"
            ),
            None => assert!(
                *n <= j,
                "id {id}: /metrics {n} > weir stats --json {j} read after\n{text}"
            ),
        }
    }
    // The deny rule's sample carries the rule's labels.
    let deny = prov.id(&weir_compiler::provenance::Provenance::Rule {
        policy: 0,
        dir: weir_compiler::model::Direction::Ingress,
        index: 1,
    });
    let sample = parsed
        .samples
        .iter()
        .find(|x| {
            x.metric == "weir_rule_packets_total" && x.labels.get("id") == Some(&deny.to_string())
        })
        .unwrap();
    for (k, v) in [
        ("dataplane", backend),
        ("kind", "rule"),
        ("action", "deny"),
        ("policy", "db-in"),
        ("direction", "ingress"),
        ("index", "2"),
        ("rule", "db-in ingress rule #2"),
    ] {
        assert_eq!(sample.labels.get(k), Some(v), "{k} of {sample:?}");
    }
    assert_eq!(rules[&u64::from(deny)], 2, "{text}");

    // Per service and backend: eBPF counts new flows (the same numbers
    // as `weir stats --json`, and as many as the interpreter translated);
    // the iptables back end keeps no such counter, and says nothing.
    let flows = |metric: &str| -> BTreeMap<(String, Option<String>), u64> {
        parsed
            .samples
            .iter()
            .filter(|x| x.metric == metric)
            .map(|x| {
                let key = (
                    x.labels.get("service").unwrap().to_string(),
                    x.labels.get("backend").map(str::to_string),
                );
                match x.value {
                    prometheus_parse::Value::Counter(v) => (key, v as u64),
                    ref other => panic!("{metric}: {other:?}"),
                }
            })
            .collect()
    };
    let mut served = flows("weir_service_flows_total");
    served.extend(flows("weir_backend_flows_total"));
    let json_services: BTreeMap<(String, Option<String>), u64> = json["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                (
                    c["service"].as_str().unwrap().to_string(),
                    c["backend"].as_str().map(str::to_string),
                ),
                c["flows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(served, json_services, "{text}");
    if ebpf {
        let key = |b: Option<&str>| ("dbsvc".to_string(), b.map(str::to_string));
        assert_eq!(served.get(&key(None)), Some(&service_flows), "{text}");
        assert_eq!(
            served.get(&key(Some("10.2.0.20:5000"))),
            Some(&service_flows),
            "{text}"
        );
    } else {
        assert!(served.is_empty(), "{text}");
    }

    // The bundle in force, and no scrape error.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(Path::new(&bundle).join("manifest.json")).unwrap())
            .unwrap();
    let info = parsed
        .samples
        .iter()
        .find(|x| x.metric == "weir_bundle_info")
        .unwrap_or_else(|| panic!("no weir_bundle_info\n{text}"));
    assert_eq!(
        info.labels.get("source_hash"),
        manifest["source_hash"].as_str(),
        "{text}"
    );
    let generation = info.labels.get("generation").unwrap().to_string();
    assert!(
        text.lines()
            .any(|l| l.starts_with("weir_generation{") && l.ends_with(&format!(" {generation}"))),
        "{text}"
    );
    let errors: Vec<_> = parsed
        .samples
        .iter()
        .filter(|x| x.metric == "weir_scrape_error")
        .filter(|x| !matches!(x.value, prometheus_parse::Value::Gauge(v) if v == 0.0))
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{text}");

    drop(_server);
    drop(_detach);
}

#[test]
fn stats_serve_ebpf_matches_stats_and_interpreter() {
    scrape_matches_stats_and_interpreter("cli-stats-serve-ebpf", true, &["ip", "curl", "promtool"]);
}

#[test]
fn stats_serve_iptables_matches_stats_and_interpreter() {
    scrape_matches_stats_and_interpreter(
        "cli-stats-serve-iptables",
        false,
        &["ip", "curl", "promtool", "iptables", "ipset"],
    );
}
