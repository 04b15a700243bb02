//! `weir agent --replay`: recorded watch streams (cli/tests/fixtures/
//! agent/*.jsonl, written by make.py there) through the same reconciler
//! the live watcher feeds. With `--dry-run` nothing is applied, so these
//! run anywhere: a relist that deletes what it no longer lists, a deleted
//! namespace, a pod IP reused by a pod with other labels, a policy the
//! importer refuses (the last good generation stays; the status says so),
//! pod churn that takes the endpoint path without a recompile, and an
//! unreachable API server (not ready until the next relist). One replay
//! applies for real with the iptables back end in a network namespace and
//! reads the kernel back.

#[path = "support/run.rs"]
mod run;

use run::{s, show, weir};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/agent/{name}.jsonl"))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-agent-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A replay's JSON lines: decisions and readiness changes, with the run.
struct Replay {
    lines: Vec<Value>,
    code: Option<i32>,
    stderr: String,
    shown: String,
}

impl Replay {
    fn verdicts(&self) -> Vec<&str> {
        self.decisions()
            .iter()
            .map(|d| d["verdict"].as_str().unwrap())
            .collect()
    }

    fn decisions(&self) -> Vec<&Value> {
        self.lines
            .iter()
            .filter(|l| l.get("verdict").is_some())
            .collect()
    }

    fn readiness(&self) -> Vec<bool> {
        self.lines
            .iter()
            .filter_map(|l| l.get("ready").and_then(Value::as_bool))
            .collect()
    }
}

fn replay(name: &str, extra: &[&str]) -> Replay {
    let file = fixture(name);
    let mut args = vec!["agent", "--replay", s(&file), "--format", "json"];
    args.extend_from_slice(extra);
    let o = weir(&args);
    let shown = show(&o);
    let lines = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{shown}")))
        .collect();
    Replay {
        lines,
        code: o.status.code(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        shown,
    }
}

/// A dry run keeping its generations in `work`.
fn dry(name: &str, backend: &str, work: &Path) -> Replay {
    replay(
        name,
        &["--dry-run", "--backend", backend, "--work-dir", s(work)],
    )
}

/// The directory of the newest generation (`gen-N`, highest N) in `work`.
fn newest_dir(work: &Path) -> PathBuf {
    let mut gens: Vec<(u64, PathBuf)> = std::fs::read_dir(work)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let n = e.file_name().to_str()?.strip_prefix("gen-")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    gens.sort();
    gens.pop().expect("a generation").1
}

/// The sources of the newest generation in `work`.
fn newest(work: &Path) -> (String, Value) {
    let dir = &newest_dir(work);
    let program = std::fs::read_to_string(dir.join("policy.weir")).unwrap();
    let inv = serde_json::from_str(&std::fs::read_to_string(dir.join("inventory.json")).unwrap())
        .unwrap();
    (program, inv)
}

/// The inventory's endpoint named `name`.
fn endpoint<'a>(inv: &'a Value, name: &str) -> Option<&'a Value> {
    inv["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
}

#[test]
fn relist_deletes_what_it_no_longer_lists() {
    let work = tmp("relist");
    let r = dry("relist", "iptables", &work);
    assert_eq!(r.code, Some(0), "{}", r.shown);
    // The relist drops db-1 and adds web-2 (web-1's labels): the
    // endpoint path, as `self` is decided in the data path (before, web-2
    // under `self` needed a class of its own and this recompiled).
    assert_eq!(r.verdicts(), ["recompile", "endpoints"], "{}", r.shown);
    let d = &r.decisions()[1];
    assert_eq!(
        d["changed"],
        serde_json::json!(["Pod shop/db-1", "Pod web/web-2"]),
        "{}",
        r.shown
    );
    assert!(
        d["detail"]
            .as_str()
            .unwrap()
            .contains("2 address(es) changed class"),
        "{}",
        r.shown
    );
    let (program, inv) = newest(&work);
    assert!(endpoint(&inv, "pod_web_web-1").is_some(), "{inv}");
    assert!(!program.contains("db-1"), "{program}");
    // Only the generation in force is kept.
    assert_eq!(std::fs::read_dir(&work).unwrap().count(), 1);
}

#[test]
fn deleted_namespace_leaves_no_trace() {
    let work = tmp("ns");
    let r = dry("namespace-deleted", "iptables", &work);
    // The namespace's pod goes by the endpoint path: the program does not
    // list pods (the implicit allowances are `self` and `node` for all),
    // and a removed address needs no class.
    assert_eq!(r.verdicts(), ["recompile", "endpoints"], "{}", r.shown);
    // The endpoint update removes web-1's address (the generation's own
    // files keep what it was compiled from).
    let d = &r.decisions()[1];
    assert!(
        d["detail"]
            .as_str()
            .unwrap()
            .contains("1 address(es) changed class"),
        "{}",
        r.shown
    );
    assert!(
        d["changed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "Pod web/web-1"),
        "{}",
        r.shown
    );
    let (program, _) = newest(&work);
    assert!(!program.contains("pod.namespace\" == \"web\""), "{program}");
}

#[test]
fn pod_ip_reuse_takes_the_new_pods_labels() {
    let work = tmp("reuse");
    let r = dry("ip-reuse", "iptables", &work);
    // web-3 takes db-1's address with web's labels: the endpoint path
    // (`self` is decided in the data path), and the address changes class
    // — from db's to web's.
    assert_eq!(r.verdicts(), ["recompile", "endpoints"], "{}", r.shown);
    let d = &r.decisions()[1];
    assert_eq!(
        d["changed"],
        serde_json::json!(["Pod shop/db-1", "Pod web/web-3"]),
        "{}",
        r.shown
    );
    assert!(
        d["detail"]
            .as_str()
            .unwrap()
            .contains("1 address(es) changed class"),
        "{}",
        r.shown
    );
    // The generation in force was compiled with db-1 owning it.
    let (_, inv) = newest(&work);
    let db1 = endpoint(&inv, "pod_shop_db-1").expect("db-1");
    assert_eq!(db1["addrs"], serde_json::json!(["10.244.1.30"]));
}

#[test]
fn refused_policy_keeps_the_last_good_generation() {
    let work = tmp("refused");
    let r = dry("refused", "iptables", &work);
    // Exit 1: the last reconcile was refused.
    assert_eq!(r.code, Some(1), "{}", r.shown);
    assert_eq!(
        r.verdicts(),
        ["recompile", "refused", "refused"],
        "{}",
        r.shown
    );
    for d in r.decisions() {
        assert_eq!(d["generation"], 1, "{}", r.shown);
    }
    let detail = r.decisions()[1]["detail"].as_str().unwrap();
    assert!(
        detail.contains("E0602") && detail.contains("NetworkPolicy shop/broken"),
        "{detail}"
    );
    assert!(detail.contains("generation 1 stays in force"), "{detail}");
    // The event log: a Kubernetes-Event-like warning naming the object.
    let refused: Value = r
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["reason"] == "PolicyRefused")
        .unwrap_or_else(|| panic!("no PolicyRefused event\n{}", r.shown));
    assert_eq!(refused["type"], "Warning");
    assert_eq!(
        refused["involvedObject"],
        serde_json::json!({"kind": "NetworkPolicy", "namespace": "shop", "name": "broken"})
    );
    // The generation in force is still the first one's program.
    let (program, _) = newest(&work);
    assert!(!program.contains("broken"), "{program}");

    // Deleting the refused policy: the program in force is right again.
    let r = dry("refused-then-fixed", "iptables", &tmp("fixed"));
    assert_eq!(r.code, Some(0), "{}", r.shown);
    assert_eq!(
        r.verdicts(),
        ["recompile", "refused", "unchanged"],
        "{}",
        r.shown
    );
}

#[test]
fn pod_churn_takes_the_endpoint_path() {
    // eBPF updates service backends in place: only the relabel into
    // other selectors (a new class) recompiles.
    let work = tmp("churn-ebpf");
    let r = dry("churn", "ebpf", &work);
    assert_eq!(r.code, Some(0), "{}", r.shown);
    assert_eq!(
        r.verdicts(),
        [
            "recompile",
            "endpoints",
            "endpoints",
            "endpoints",
            "recompile"
        ],
        "{}",
        r.shown
    );
    let gens: Vec<_> = r
        .decisions()
        .iter()
        .map(|d| d["generation"].clone())
        .collect();
    assert_eq!(gens, [1, 1, 1, 1, 2], "{}", r.shown);
    assert!(
        r.decisions()[4]["detail"]
            .as_str()
            .unwrap()
            .contains("needs a recompile"),
        "{}",
        r.shown
    );
    // iptables rewrites the service's chains in place: a readiness
    // change of a backend is the endpoint path too (the last backend
    // gone would not be: its frontend must reject, a filter rule).
    let r = dry("churn", "iptables", &tmp("churn-ipt"));
    assert_eq!(
        r.verdicts(),
        [
            "recompile",
            "endpoints",
            "endpoints",
            "endpoints",
            "recompile"
        ],
        "{}",
        r.shown
    );
}

#[test]
fn unreachable_api_server_is_not_ready_until_a_relist() {
    let r = dry("unreachable", "iptables", &tmp("unreachable"));
    assert_eq!(r.code, Some(0), "{}", r.shown);
    assert_eq!(r.readiness(), [true, false, true], "{}", r.shown);
    assert_eq!(r.verdicts(), ["recompile", "unchanged"], "{}", r.shown);
    assert!(r.stderr.contains("APIServerUnreachable"), "{}", r.shown);
    let not_ready = r.lines.iter().find(|l| l["ready"] == false).unwrap();
    assert!(
        not_ready["reason"]
            .as_str()
            .unwrap()
            .contains("the last good generation stays in force"),
        "{not_ready}"
    );
}

#[test]
fn policy_change_recompiles() {
    let r = dry("policy-change", "iptables", &tmp("policy"));
    assert_eq!(r.verdicts(), ["recompile", "recompile"], "{}", r.shown);
    assert_eq!(
        r.decisions()[1]["changed"],
        serde_json::json!(["NetworkPolicy web/web-deny"])
    );
}

#[test]
fn bad_input_is_a_usage_error() {
    let dir = tmp("bad");
    let f = dir.join("bad.jsonl");
    std::fs::write(
        &f,
        "{\"type\":\"SYNC\"}\n{\"type\":\"ADDED\",\"object\":{}}\n",
    )
    .unwrap();
    let o = weir(&["agent", "--replay", s(&f), "--dry-run"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bad.jsonl:2: the object has no `kind`"),
        "{}",
        show(&o)
    );
    let o = weir(&["agent", "--dry-run"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
}

/// `iptables-save` of the namespace's filter table, weir's lines only.
fn weir_rules(ns: &weir_runtime::netns::Netns) -> String {
    let o = ns.exec("iptables-save", &[]).unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("WEIR") || l.contains("weir"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn status_generation(ns: &str, state: &Path) -> (u64, bool) {
    let o = weir(&[
        "status",
        "--netns",
        ns,
        "--state-dir",
        s(state),
        "--format",
        "json",
    ]);
    let v: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&o)));
    (
        v["state"]["generation"].as_u64().unwrap(),
        v["in_force"] == true,
    )
}

#[test]
fn replay_applies_for_real_with_iptables() {
    if !weir_runtime::kernel_test::may_run(
        "replay_applies_for_real_with_iptables",
        &["ip", "iptables-restore", "ip6tables-restore", "ipset"],
    ) {
        return;
    }
    let ns = weir_runtime::netns::Netns::create(&format!("weir-agent-{}", std::process::id()))
        .expect("netns");
    let base = weir_runtime::kernel_test::state_dir("agent-replay").unwrap();
    let run = |name: &str, sub: &str| {
        let state = base.join(sub).join("state");
        let work = base.join(sub).join("work");
        let r = replay(
            name,
            &[
                "--backend",
                "iptables",
                "--netns",
                ns.name(),
                "--state-dir",
                s(&state),
                "--work-dir",
                s(&work),
            ],
        );
        (r, state)
    };

    // Pod churn, applied: the endpoint update goes to the ipsets of the
    // generation in force, a backend's readiness flip to its service's
    // chains (rewritten in place); recompiles replace the generation.
    let (r, state) = run("churn", "churn");
    assert_eq!(r.code, Some(0), "{}", r.shown);
    assert_eq!(
        r.verdicts(),
        [
            "recompile",
            "endpoints",
            "endpoints",
            "endpoints",
            "recompile"
        ],
        "{}",
        r.shown
    );
    let last = r.decisions()[4]["generation"].as_u64().unwrap();
    let (g, in_force) = status_generation(ns.name(), &state);
    assert_eq!((g, in_force), (last, true), "{}", r.shown);
    let sets = ns.exec("ipset", &["save"]).unwrap();
    let sets = String::from_utf8_lossy(&sets.stdout);
    for ip in ["10.244.1.10", "10.244.1.20", "10.244.1.21", "10.244.1.30"] {
        assert!(sets.contains(ip), "{ip} not in the sets:\n{sets}");
    }
    // Only one generation's chains are left.
    let rules = weir_rules(&ns);
    assert!(!rules.is_empty());

    // A refused policy: the kernel keeps the first generation exactly.
    let ns_name = ns.name().to_string();
    let (r0, state0) = run("policy-change", "before");
    assert_eq!(r0.code, Some(0), "{}", r0.shown);
    let before = weir_rules(&ns);
    let (g0, _) = status_generation(&ns_name, &state0);
    let (r, state) = run("refused", "refused");
    assert_eq!(r.code, Some(1), "{}", r.shown);
    assert_eq!(
        r.verdicts(),
        ["recompile", "refused", "refused"],
        "{}",
        r.shown
    );
    let first = r.decisions()[0]["generation"].as_u64().unwrap();
    let (g, in_force) = status_generation(&ns_name, &state);
    assert_eq!((g, in_force), (first, true), "{}", r.shown);
    let after = weir_rules(&ns);
    assert!(!after.contains("broken"), "{after}");
    assert!(
        g0 != 0 && before != after,
        "the refused replay applied its first generation"
    );
    let _ = weir(&["detach", "--netns", &ns_name, "--state-dir", s(&state)]);
    let _ = std::fs::remove_dir_all(&base);
}

/// `--node`: the agent imports for its own node. The Services of
/// tests/k8s-services (node ports, `internalTrafficPolicy: Local`), then
/// node-1's exporter stops being ready: on node-1 the ClusterIP side has
/// no backend left, on node-2 nothing local changed.
#[test]
fn node_local_services_follow_the_agents_node() {
    let service = |program: &str, name: &str| -> String {
        let at = program
            .find(&format!("service {name} {{"))
            .unwrap_or_else(|| panic!("no {name}:\n{program}"));
        let rest = &program[at..];
        rest[..rest.find("\n}").unwrap()].to_string()
    };
    for (node, addr, before, after) in [
        (
            "node-1",
            "10.10.0.11",
            "backends { 10.244.1.41:9100 }",
            "backends {}",
        ),
        (
            "node-2",
            "10.10.0.12",
            "backends { 10.244.2.41:9100 }",
            "backends { 10.244.2.41:9100 }",
        ),
    ] {
        let work = tmp(&format!("local-{node}"));
        let r = replay(
            "local-service",
            &[
                "--dry-run",
                "--backend",
                "iptables",
                "--work-dir",
                s(&work),
                "--node",
                node,
            ],
        );
        assert_eq!(r.code, Some(0), "{}", r.shown);
        assert_eq!(r.verdicts(), ["recompile", "recompile"], "{}", r.shown);
        // The first generation is in the first decision's work; the store
        // keeps only the newest, so read it back from a replay cut there.
        let (program, _) = newest(&work);
        let internal = service(&program, "svc_monitoring_exporter_metrics");
        assert!(internal.contains(after), "{node}: {internal}");
        let external = service(&program, "svc_monitoring_exporter_metrics_external");
        assert!(
            external.contains(&format!("frontend {addr}:30910/tcp"))
                && !external.contains("30910/tcp\n  frontend 10.10"),
            "{node}: only its own node port: {external}"
        );
        let text = std::fs::read_to_string(fixture("local-service")).unwrap();
        let first: String = text
            .split_inclusive('\n')
            .take_while(|l| !l.contains("MODIFIED"))
            .collect();
        let cut = work.join("first.jsonl");
        std::fs::write(&cut, first).unwrap();
        let work1 = work.join("first");
        let o = weir(&[
            "agent",
            "--replay",
            s(&cut),
            "--dry-run",
            "--backend",
            "iptables",
            "--work-dir",
            s(&work1),
            "--node",
            node,
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", show(&o));
        let (program, _) = newest(&work1);
        let internal = service(&program, "svc_monitoring_exporter_metrics");
        assert!(internal.contains(before), "{node}: {internal}");
        assert!(!r.stderr.contains("W0330"), "{}", r.shown);
        let _ = std::fs::remove_dir_all(&work);
    }
}

#[test]
fn namespace_relabel_is_one_inventory_entry() {
    let work = tmp("ns-relabel");
    let r = dry("namespace-relabel", "ebpf", &work);
    assert_eq!(r.code, Some(0), "{}", r.shown);
    assert_eq!(
        r.verdicts(),
        ["recompile", "endpoints", "recompile"],
        "{}",
        r.shown
    );
    assert!(
        r.decisions()[2]["detail"]
            .as_str()
            .unwrap()
            .contains("needs a recompile"),
        "{}",
        r.shown
    );
    // The namespace's labels are in its one entry, not on its pods.
    let (_, inv) = newest(&work);
    assert_eq!(inv["namespaces"]["ns_web"]["team"], "other", "{inv}");
    let web1 = endpoint(&inv, "pod_web_web-1").unwrap();
    assert_eq!(web1["namespace"], "ns_web");
    assert!(
        web1["labels"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.contains("team")),
        "{web1}"
    );
}

/// The packet-mark bits of `self`: the agent's generations are compiled
/// with kube-proxy's 0xc000 left free by default (recorded in the
/// bundle's manifest), with the mask the DaemonSet passes, and the flag
/// is accepted (and unused) with `--backend ebpf`, so one DaemonSet
/// passes it for either back end.
#[test]
fn the_self_mark_reaches_the_agents_generations() {
    let manifest = |work: &Path| -> Value {
        let m = newest_dir(work).join("bundle/manifest.json");
        serde_json::from_str(&std::fs::read_to_string(m).unwrap()).unwrap()
    };
    let work = tmp("self-mark-default");
    let r = dry("namespace-relabel", "iptables", &work);
    assert_eq!(r.code, Some(0), "{}", r.shown);
    let mark = manifest(&work)["backends"]["iptables"]["self_mark"]
        .as_u64()
        .unwrap();
    assert_eq!(mark, 0xffff_0000);
    assert_eq!(mark & 0xc000, 0, "kube-proxy's bits stay free");

    let work = tmp("self-mark-given");
    let r = replay(
        "namespace-relabel",
        &[
            "--dry-run",
            "--backend",
            "iptables",
            "--work-dir",
            s(&work),
            "--iptables-self-mark=0x0fff0000",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.shown);
    assert_eq!(
        manifest(&work)["backends"]["iptables"]["self_mark"],
        0x0fff_0000
    );

    let work = tmp("self-mark-ebpf");
    let r = replay(
        "namespace-relabel",
        &[
            "--dry-run",
            "--backend",
            "ebpf",
            "--work-dir",
            s(&work),
            "--iptables-self-mark=0xffff0000",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.shown);
    assert_eq!(r.verdicts(), ["recompile", "endpoints", "recompile"]);
    for w in ["self-mark-default", "self-mark-given", "self-mark-ebpf"] {
        let _ = std::fs::remove_dir_all(tmp(w));
    }
}
