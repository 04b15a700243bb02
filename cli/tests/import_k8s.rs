//! `weir import k8s` end to end: the realistic fixture (tests/k8s-fixture:
//! 5 namespaces, 11 NetworkPolicies, an AdminNetworkPolicy, the
//! BaselineAdminNetworkPolicy, a ClusterNetworkPolicy, Services with
//! named target ports and an EndpointSlice) imports without warnings,
//! `weir check --deny-warnings` accepts the program, and `weir trace`
//! names the Kubernetes object that decided. The conformance of the
//! translation itself is runtime/tests/k8s_conformance.rs.

#[path = "support/run.rs"]
mod run;
#[path = "support/schema.rs"]
mod schema;

use run::{ok, s, show, weir};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-import-k8s-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn fixture_imports_checks_clean_and_traces_to_its_objects() {
    let out = tmp("fixture");
    let fixture = root().join("tests/k8s-fixture");
    let o = weir(&["import", "k8s", s(&fixture), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("11 NetworkPolicy") && err.contains("0 warning(s)"),
        "{err}"
    );
    let program = std::fs::read_to_string(out.join("policy.weir")).unwrap();
    assert!(
        program.contains("# AdminNetworkPolicy cluster-guardrails"),
        "{program}"
    );
    assert!(
        program.contains("# NetworkPolicy shop/cart-from-web\npolicy np_shop_cart-from-web"),
        "{program}"
    );
    // The program is formatted: `weir fmt --check` has nothing to change.
    ok(weir(&["fmt", "--check", s(&out.join("policy.weir"))]));
    ok(weir(&[
        "check",
        "--deny-warnings",
        s(&out.join("policy.weir")),
    ]));

    let trace = |packet: &str| {
        let o = weir(&[
            "trace",
            "--format",
            "json",
            "--packet",
            packet,
            s(&out.join("policy.weir")),
        ]);
        serde_json::from_str::<serde_json::Value>(&ok(o)).unwrap()
    };
    // web → payments gRPC: the ANP's Deny decides at ingress (the egress
    // side is denied too, by frontend's default-deny NetworkPolicy).
    let t = trace("tcp 10.244.1.10:40000 -> 10.244.1.30:50051");
    let text = t.to_string();
    assert!(text.contains("anp_cluster-guardrails"), "{t:#}");
    // web → cart's ClusterIP: translated to the cart pod at its named
    // port `http` (8081), allowed by shop/cart-from-web.
    let t = trace("tcp 10.244.1.10:40000 -> 10.96.20.10:80");
    assert_eq!(t["verdict"], "allow", "{t:#}");
    assert!(t.to_string().contains("np_shop_cart-from-web"), "{t:#}");
    assert!(t.to_string().contains("8081"), "{t:#}");
    // DNS through the kube-dns Service (backends from its EndpointSlice),
    // accepted by the ClusterNetworkPolicy.
    let t = trace("udp 10.244.1.20:40000 -> 10.96.0.10:53");
    assert!(t.to_string().contains("cnp_allow-dns"), "{t:#}");
    // A pod and its own node: always allowed, by the one `k8s-node`
    // policy (`allow to node`); another node's kubelet: the CNP's `nodes`
    // peer denies it. The host-network node-exporter owns no address, so
    // node-1's address is judged as the node's.
    let t = trace("tcp 10.244.1.10:40000 -> 10.10.0.11:10250");
    assert_eq!(t["verdict"], "allow", "{t:#}");
    assert!(t.to_string().contains("k8s-node"), "{t:#}");
    let t = trace("tcp 10.244.1.10:40000 -> 10.10.0.12:10250");
    assert_eq!(t["verdict"], "deny", "{t:#}");
    assert!(t.to_string().contains("cnp_kubelet-own-node-only"), "{t:#}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn stdout_program_has_the_endpoints_inline_and_checks() {
    let out = tmp("stdout");
    let o = weir(&["import", "k8s", s(&root().join("tests/k8s-fixture"))]);
    let program = ok(o);
    assert!(
        program.contains("endpoint pod_shop_catalog-0 {"),
        "{program}"
    );
    assert!(!program.contains("inventory \""), "{program}");
    std::fs::write(out.join("p.weir"), &program).unwrap();
    ok(weir(&["check", "--deny-warnings", s(&out.join("p.weir"))]));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn stdin_and_lists() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["import", "k8s", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            br#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
   "metadata": {"name": "test", "namespace": "default"},
   "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}]}"#,
        )
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let program = ok(o);
    // `test` is a weir keyword: the mangled name never is one.
    assert!(
        program.contains("policy np_default_test priority"),
        "{program}"
    );
}

#[test]
fn errors_fail_closed_and_warnings_name_object_and_field() {
    let out = tmp("errors");
    let bad = out.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n\
         metadata: {name: lockdown}\nspec:\n  tier: Emergency\n  priority: 1\n  subject: {namespaces: {}}\n",
    )
    .unwrap();
    let o = weir(&["import", "k8s", s(&bad), "-o", s(&out.join("o"))]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("E0602")
            && err.contains("ClusterNetworkPolicy lockdown")
            && err.contains("spec.tier"),
        "{err}"
    );
    assert!(!out.join("o").exists(), "nothing is written on errors");

    let warn = out.join("warn.yaml");
    std::fs::write(
        &warn,
        "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\n\
         metadata: {name: no-exfil}\nspec:\n  priority: 3\n  subject: {namespaces: {}}\n  egress:\n  - action: Deny\n    to: [{domainNames: [\"*.example.com\"]}]\n\
         ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: d}\n",
    )
    .unwrap();
    let o = weir(&["import", "k8s", "--format", "json", s(&warn)]);
    let program = ok(o.clone());
    assert!(
        program.contains("deny\n"),
        "fail closed: the Deny rule denies everything\n{program}"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    let json = &err[..err.find("weir import k8s:").unwrap_or(err.len())];
    let report: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let codes: Vec<String> = report["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| d["code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes, ["W0601", "W0602"], "{}", show(&o));
    // The report is `weir check --format json`'s (docs/json.md).
    schema::assert_valid("check", &report);
    let _ = std::fs::remove_dir_all(&out);
}
