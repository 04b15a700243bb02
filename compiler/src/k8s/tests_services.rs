//! Service frontends and traffic policies (frontends.rs, service.rs) on
//! small inputs: node ports, load-balancer and external IPs, `Local`
//! with and without the node compiled for.

use super::{import_with, Endpoints, Import, Options};
use crate::diagnostics::Code;
use weir_grammar::FileId;

fn run(text: &str, node: Option<&str>) -> Import {
    let opts = Options {
        node: node.map(str::to_string),
    };
    import_with(&[(FileId(0), text)], Endpoints::Inline, &opts)
}

fn codes(i: &Import) -> Vec<Code> {
    i.diagnostics.iter().map(|d| d.code).collect()
}

/// The text of service `name` in the program.
fn service<'a>(i: &'a Import, name: &str) -> &'a str {
    let at = i
        .program
        .find(&format!("service {name} {{"))
        .unwrap_or_else(|| panic!("no service {name}:\n{}", i.program));
    let rest = &i.program[at..];
    &rest[..rest.find("\n}").unwrap()]
}

const NODES: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus: {addresses: [{type: InternalIP, address: 10.10.0.1}, {type: Hostname, address: n1}]}\n---\n\
apiVersion: v1\nkind: Node\nmetadata: {name: n2}\nstatus: {addresses: [{type: InternalIP, address: 10.10.0.2}, {type: ExternalIP, address: 192.0.2.2}]}\n---\n";

fn svc(kind: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: x}}\n\
         spec:\n  type: {kind}\n  clusterIP: 10.96.0.5\n{extra}  ports:\n  - {{name: web, port: 80, protocol: TCP, nodePort: 30080}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s-1, namespace: x, labels: {{kubernetes.io/service-name: s}}}}\n\
         addressType: IPv4\nendpoints:\n- {{addresses: [10.244.1.5], nodeName: n1}}\n- {{addresses: [10.244.2.5], nodeName: n2}}\n\
         ports:\n- {{name: web, port: 8080, protocol: TCP}}\n"
    )
}

#[test]
fn node_ports_are_the_nodes_addresses() {
    let text = format!("{NODES}{}", svc("NodePort", ""));
    // No node: every Node's addresses (InternalIP and ExternalIP).
    let i = run(&text, None);
    assert!(i.diagnostics.is_empty(), "{:#?}", i.diagnostics);
    let s = service(&i, "svc_x_s_web");
    for f in [
        "10.96.0.5:80/tcp",
        "10.10.0.1:30080/tcp",
        "10.10.0.2:30080/tcp",
        "192.0.2.2:30080/tcp",
    ] {
        assert!(s.contains(&format!("frontend {f}")), "{f}: {s}");
    }
    assert!(
        s.contains("backends { 10.244.1.5:8080, 10.244.2.5:8080 }"),
        "{s}"
    );
    // For n1: n1's only.
    let i = run(&text, Some("n1"));
    let s = service(&i, "svc_x_s_web");
    assert!(
        s.contains("frontend 10.10.0.1:30080/tcp") && !s.contains("10.10.0.2"),
        "{s}"
    );
    // A node not in the input: no node ports, said (W0604).
    let i = run(&text, Some("n7"));
    assert_eq!(codes(&i), [Code::W0604]);
    assert!(
        i.diagnostics[0].message.contains("Node n7"),
        "{:?}",
        i.diagnostics
    );
    assert!(
        !service(&i, "svc_x_s_web").contains(":30080"),
        "{}",
        i.program
    );
}

#[test]
fn external_local_splits_the_service_per_node() {
    let service_text = svc(
        "LoadBalancer",
        "  externalTrafficPolicy: Local\n  externalIPs: [198.51.100.1]\n",
    );
    // `status` belongs to the Service, before its EndpointSlice.
    let status = "status: {loadBalancer: {ingress: [{ip: 203.0.113.1}, {hostname: lb.example}]}}\n";
    let text = format!(
        "{NODES}{}",
        service_text.replacen(
            "---\napiVersion: discovery",
            &format!("{status}---\napiVersion: discovery"),
            1
        )
    );
    let i = run(&text, Some("n2"));
    assert_eq!(codes(&i), [Code::W0604], "the hostname ingress");
    assert!(
        i.diagnostics[0].message.contains("lb.example"),
        "{:?}",
        i.diagnostics
    );
    let int = service(&i, "svc_x_s_web");
    assert!(
        int.contains("frontend 10.96.0.5:80/tcp") && !int.contains("30080"),
        "{int}"
    );
    assert!(
        int.contains("backends { 10.244.1.5:8080, 10.244.2.5:8080 }"),
        "{int}"
    );
    let ext = service(&i, "svc_x_s_web_external");
    for f in [
        "10.10.0.2:30080/tcp",
        "192.0.2.2:30080/tcp",
        "198.51.100.1:80/tcp",
        "203.0.113.1:80/tcp",
    ] {
        assert!(ext.contains(&format!("frontend {f}")), "{f}: {ext}");
    }
    assert!(
        ext.contains("backends { 10.244.2.5:8080 }"),
        "only n2's endpoint: {ext}"
    );
    // Without a node: one service, every endpoint, W0330.
    let i = run(&text, None);
    assert_eq!(codes(&i), [Code::W0330, Code::W0604]);
    assert!(!i.program.contains("_external"), "{}", i.program);
}

#[test]
fn internal_local_without_local_endpoints_has_no_backends() {
    let text = format!(
        "{NODES}{}",
        svc("ClusterIP", "  internalTrafficPolicy: Local\n")
    );
    let i = run(&text, Some("n1"));
    assert!(i.diagnostics.is_empty(), "{:#?}", i.diagnostics);
    assert!(
        service(&i, "svc_x_s_web").contains("backends { 10.244.1.5:8080 }"),
        "{}",
        i.program
    );
    // A node without an endpoint of the Service: nothing to reach.
    let i = run(&text.replace("nodeName: n1", "nodeName: n2"), Some("n1"));
    assert!(
        service(&i, "svc_x_s_web").contains("backends {}"),
        "{}",
        i.program
    );
    // externalTrafficPolicy governs external frontends only: none here.
    let text = format!(
        "{NODES}{}",
        svc("ClusterIP", "  externalTrafficPolicy: Local\n")
    );
    assert!(run(&text, None).diagnostics.is_empty());
}

#[test]
fn local_selector_backends_are_the_nodes_pods() {
    let pods = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n\
        apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {app: s}}\nspec: {nodeName: n1, containers: [{name: m, ports: [{name: web, containerPort: 8080}]}]}\nstatus: {podIP: 10.244.1.5}\n---\n\
        apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: x, labels: {app: s}}\nspec: {nodeName: n2, containers: [{name: m, ports: [{name: web, containerPort: 8081}]}]}\nstatus: {podIP: 10.244.2.5}\n---\n\
        apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: x}\nspec:\n  clusterIP: 10.96.0.5\n  selector: {app: s}\n  internalTrafficPolicy: Local\n  ports:\n  - {name: web, port: 80, targetPort: web}\n";
    let i = run(&format!("{NODES}{pods}"), Some("n2"));
    assert!(i.diagnostics.is_empty(), "{:#?}", i.diagnostics);
    let s = service(&i, "svc_x_s_web");
    assert!(
        s.contains("\"k8s:io.kubernetes.pod.name\" in {")
            && s.contains("\"b\"")
            && !s.contains("\"a\"")
            && s.contains("port \"web\""),
        "{s}"
    );
    let i = run(&format!("{NODES}{pods}"), None);
    assert_eq!(codes(&i), [Code::W0330]);
    assert!(
        !service(&i, "svc_x_s_web").contains("pod.name\""),
        "{}",
        i.program
    );
}

#[test]
fn malformed_node_port_is_e0601() {
    let text = format!("{NODES}{}", svc("NodePort", "")).replace("30080", "70000");
    assert_eq!(codes(&run(&text, None)), [Code::E0601]);
}
