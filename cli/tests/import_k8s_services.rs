//! `weir import k8s` of Services as users have them (tests/k8s-services):
//! a multi-port Service with a named and a numeric target, a LoadBalancer
//! with `externalTrafficPolicy: Local`, externalIPs and a load-balancer
//! ingress IP, a NodePort with `internalTrafficPolicy: Local` and a
//! multi-port EndpointSlice. Compiled for a node (`--node`) the program
//! passes `weir check --deny-warnings`, and `weir trace` translates each
//! kind of frontend to the backend and port kube-proxy on that node would
//! choose from. Without `--node`, Local is cluster-wide with W0330.

#[path = "support/run.rs"]
mod run;

use run::{ok, s, show, weir};
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/k8s-services")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-import-svc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Imports for `node` into a fresh directory; the program's path.
fn import(name: &str, node: Option<&str>) -> (PathBuf, String) {
    let out = tmp(name);
    let f = fixture();
    let mut args = vec!["import", "k8s", s(&f), "-o", s(&out)];
    if let Some(n) = node {
        args.extend(["--node", n]);
    }
    let o = weir(&args);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    (out, String::from_utf8_lossy(&o.stderr).into_owned())
}

/// `weir trace` of `packet`: (service, backend) and the whole JSON.
fn trace(program: &Path, packet: &str) -> (String, String, serde_json::Value) {
    let o = weir(&["trace", "--format", "json", "--packet", packet, s(program)]);
    let t: serde_json::Value = serde_json::from_str(&ok(o)).unwrap();
    let svc = &t["service"];
    let chosen = &svc["chosen"];
    let backend = match (chosen["addr"].as_str(), chosen["port"].as_u64()) {
        (Some(a), Some(p)) => format!("{a}:{p}"),
        _ => String::new(),
    };
    (
        svc["name"].as_str().unwrap_or_default().to_string(),
        backend,
        t,
    )
}

#[test]
fn services_for_a_node_check_clean_and_translate_per_frontend() {
    let (out, err) = import("node1", Some("node-1"));
    assert!(err.contains("0 warning(s)"), "{err}");
    let program = out.join("policy.weir");
    ok(weir(&["check", "--deny-warnings", s(&program)]));

    // Multi-port: each port its own target; `http` is each pod's own
    // (8080 on api-1, 8081 on api-2), `admin` the number 9090.
    for sport in 40000..40008 {
        let (svc, b, t) = trace(
            &program,
            &format!("tcp 10.244.1.50:{sport} -> 10.96.30.10:80"),
        );
        assert_eq!(svc, "svc_store_api_http", "{t:#}");
        assert!(b == "10.244.1.21:8080" || b == "10.244.2.21:8081", "{t:#}");
        let (svc, b, t) = trace(
            &program,
            &format!("tcp 10.244.1.50:{sport} -> 10.96.30.10:8000"),
        );
        assert_eq!(svc, "svc_store_api_admin", "{t:#}");
        assert!(b.ends_with(":9090"), "{t:#}");
    }
    // externalTrafficPolicy Local: node-1's node port, the external IP and
    // the load-balancer IP reach ingress-1 only (TCP and UDP alike);
    // the ClusterIP stays cluster-wide.
    for (packet, service) in [
        (
            "tcp 203.0.113.9:40000 -> 10.10.0.11:30443",
            "svc_edge_ingress_https_external",
        ),
        (
            "tcp 203.0.113.9:40001 -> 198.51.100.7:443",
            "svc_edge_ingress_https_external",
        ),
        (
            "tcp 203.0.113.9:40002 -> 203.0.113.10:443",
            "svc_edge_ingress_https_external",
        ),
        (
            "udp 203.0.113.9:40003 -> 203.0.113.10:443",
            "svc_edge_ingress_quic_external",
        ),
    ] {
        let (svc, b, t) = trace(&program, packet);
        assert_eq!(svc, service, "{t:#}");
        assert!(b.starts_with("10.244.1.31:8443"), "{t:#}");
        // The NetworkPolicy on the ingress pods decides on the backend.
        if packet.starts_with("tcp") {
            assert_eq!(t["verdict"], "allow", "{t:#}");
            assert!(t.to_string().contains("np_edge_ingress-https"), "{t:#}");
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for sport in 40000..40016 {
        let (svc, b, _) = trace(
            &program,
            &format!("tcp 10.244.1.50:{sport} -> 10.96.40.10:443"),
        );
        assert_eq!(svc, "svc_edge_ingress_https");
        seen.insert(b);
    }
    assert_eq!(
        seen.len(),
        2,
        "the ClusterIP is served by both pods: {seen:?}"
    );
    // node-2's node port is not a frontend on node-1.
    let (svc, _, t) = trace(&program, "tcp 203.0.113.9:40000 -> 10.10.0.12:30443");
    assert_eq!(svc, "", "{t:#}");
    // internalTrafficPolicy Local: the ClusterIP reaches node-1's exporter
    // only, at both ports of its EndpointSlice; the node port is
    // cluster-wide.
    for (port, target) in [(9100, "10.244.1.41:9100"), (6060, "10.244.1.41:6060")] {
        for sport in 40000..40004 {
            let (_, b, t) = trace(
                &program,
                &format!("tcp 10.244.1.50:{sport} -> 10.96.50.10:{port}"),
            );
            assert_eq!(b, target, "{t:#}");
        }
    }
    let (svc, _, t) = trace(&program, "tcp 203.0.113.9:40000 -> 10.10.0.11:30910");
    assert_eq!(svc, "svc_monitoring_exporter_metrics_external", "{t:#}");
    let _ = std::fs::remove_dir_all(&out);

    // On node-2 the same Services choose node-2's pods.
    let (out, _) = import("node2", Some("node-2"));
    let program = out.join("policy.weir");
    ok(weir(&["check", "--deny-warnings", s(&program)]));
    let (_, b, t) = trace(&program, "tcp 203.0.113.9:40000 -> 10.10.0.12:30443");
    assert!(b.starts_with("10.244.2.31:8443"), "{t:#}");
    let (_, b, t) = trace(&program, "tcp 10.244.2.50:40000 -> 10.96.50.10:9100");
    assert_eq!(b, "10.244.2.41:9100", "{t:#}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn without_a_node_local_is_cluster_wide_with_w0330() {
    let (out, err) = import("nonode", None);
    assert_eq!(err.matches("warning[W0330]").count(), 2, "{err}");
    assert!(
        err.contains("externalTrafficPolicy: Local") && err.contains("--node NAME"),
        "{err}"
    );
    let program = out.join("policy.weir");
    let text = std::fs::read_to_string(&program).unwrap();
    // One service per port: nothing differs between the frontends now.
    assert!(!text.contains("_external"), "{text}");
    // Node ports on every Node's addresses.
    assert!(
        text.contains("frontend 10.10.0.11:30443/tcp")
            && text.contains("frontend 10.10.0.12:30443/tcp"),
        "{text}"
    );
    let (_, b, t) = trace(&program, "tcp 203.0.113.9:40000 -> 10.10.0.12:30910");
    assert!(b.ends_with(":9100"), "{t:#}");
    let _ = std::fs::remove_dir_all(&out);
}
