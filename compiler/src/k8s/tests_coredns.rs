//! A CoreDNS-like Service (issue 19): ServicePorts `53/UDP` and `53/TCP`,
//! both `targetPort: dns`, over pods that name `dns` for UDP and for TCP
//! in two containers (the API server accepts that with a warning; a
//! Service resolves the name by name *and* protocol, `podutil.FindPort`),
//! with different numbers — and the same Service with its EndpointSlices.
//! Each imported service takes its own protocol's port of each pod.

use super::{import, Endpoints, Import};
use crate::model::{Model, Proto};
use std::collections::BTreeMap;
use weir_grammar::FileId;

const OBJECTS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: kube-system}\n---\n\
apiVersion: v1\nkind: Pod\nmetadata: {name: coredns-a, namespace: kube-system, labels: {k8s-app: kube-dns}}\n\
spec: {containers: [{name: udp, ports: [{name: dns, containerPort: 53, protocol: UDP}]}, {name: tcp, ports: [{name: dns, containerPort: 5353, protocol: TCP}]}]}\n\
status: {podIP: 10.244.1.53}\n---\n\
apiVersion: v1\nkind: Pod\nmetadata: {name: coredns-b, namespace: kube-system, labels: {k8s-app: kube-dns}}\n\
spec: {containers: [{name: udp, ports: [{name: dns, containerPort: 1053, protocol: UDP}]}]}\n\
status: {podIP: 10.244.2.53}\n---\n\
apiVersion: v1\nkind: Service\nmetadata: {name: kube-dns, namespace: kube-system}\n\
spec: {clusterIP: 10.96.0.10, selector: {k8s-app: kube-dns}, ports: [\
{name: dns, port: 53, protocol: UDP, targetPort: dns}, \
{name: dns-tcp, port: 53, protocol: TCP, targetPort: dns}]}\n";

/// What the EndpointSlice controller writes for [`OBJECTS`]: one slice
/// per port mapping (coredns-b has no TCP `dns`).
const SLICES: &str = "---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: kube-dns-a, namespace: kube-system, labels: {kubernetes.io/service-name: kube-dns}}\n\
addressType: IPv4\nendpoints:\n- {addresses: [10.244.1.53], conditions: {ready: true}}\n\
ports:\n- {name: dns, port: 53, protocol: UDP}\n- {name: dns-tcp, port: 5353, protocol: TCP}\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: kube-dns-b, namespace: kube-system, labels: {kubernetes.io/service-name: kube-dns}}\n\
addressType: IPv4\nendpoints:\n- {addresses: [10.244.2.53], conditions: {ready: true}}\n\
ports:\n- {name: dns, port: 1053, protocol: UDP}\n";

fn run(text: &str) -> Import {
    let i = import(&[(FileId(0), text)], Endpoints::Inline);
    assert!(i.diagnostics.is_empty(), "{:#?}", i.diagnostics);
    i
}

/// Service name → its frontends' backends (`addr:port`), per protocol.
fn backends(m: &Model) -> BTreeMap<(String, Proto), Vec<String>> {
    let mut out = BTreeMap::new();
    for s in &m.services {
        for f in &s.frontends {
            let b = crate::interp::backends_of(s, f, &m.endpoints);
            out.insert(
                (s.name.clone(), f.proto),
                b.iter().map(|b| format!("{}:{}", b.addr, b.port)).collect(),
            );
        }
    }
    out
}

fn want() -> BTreeMap<(String, Proto), Vec<String>> {
    BTreeMap::from([
        (
            ("svc_kube-system_kube-dns_dns".to_string(), Proto::Udp),
            vec!["10.244.1.53:53".to_string(), "10.244.2.53:1053".to_string()],
        ),
        (
            ("svc_kube-system_kube-dns_dns-tcp".to_string(), Proto::Tcp),
            vec!["10.244.1.53:5353".to_string()],
        ),
    ])
}

#[test]
fn coredns_named_target_per_protocol() {
    // From the selector: each pod's own `dns` of the port's protocol.
    let i = run(OBJECTS);
    assert!(
        i.program
            .contains("ports { \"dns\": 5353/tcp, \"dns\": 53/udp }"),
        "{}",
        i.program
    );
    let m = crate::check::model_of(&i.program);
    assert_eq!(backends(&m), want(), "{}", i.program);
    // From the EndpointSlices: the same backends, listed.
    let i = run(&format!("{OBJECTS}{SLICES}"));
    let m = crate::check::model_of(&i.program);
    assert_eq!(backends(&m), want(), "{}", i.program);
    // The inventory form: one name, a list of one port per protocol,
    // which the inventory reader takes back.
    let i = import(
        &[(FileId(0), OBJECTS)],
        Endpoints::Inventory("inv.json".into()),
    );
    let a = &i.inventory["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str().is_some_and(|n| n.contains("coredns-a")))
        .unwrap_or_else(|| panic!("{:#}", i.inventory))["ports"];
    assert_eq!(a["dns"], serde_json::json!(["5353/tcp", "53/udp"]));
    let recs = crate::churn::EndpointRec::parse_inventory(&i.inventory.to_string()).unwrap();
    let rec = recs
        .iter()
        .find(|e| e.addrs[0].to_string() == "10.244.1.53")
        .unwrap();
    assert_eq!(
        (
            crate::named_ports::resolve(&rec.labels, "dns", Proto::Udp),
            crate::named_ports::resolve(&rec.labels, "dns", Proto::Tcp)
        ),
        (Some(53), Some(5353))
    );
}
