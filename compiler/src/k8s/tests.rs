//! The importer's diagnostics (each code triggered) and its fail-closed
//! translations, on small inputs. The semantics against Kubernetes'
//! truth tables is runtime/tests/k8s_conformance.rs.

use super::{import, Endpoints, Import};
use crate::diagnostics::Code;
use weir_grammar::FileId;

fn run(text: &str) -> Import {
    import(&[(FileId(0), text)], Endpoints::Inline)
}

fn codes(i: &Import) -> Vec<Code> {
    i.diagnostics.iter().map(|d| d.code).collect()
}

const NS_X: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n";

#[test]
fn e0601_malformed_input() {
    assert_eq!(codes(&run("kind: [\n")), [Code::E0601]);
    assert_eq!(codes(&run("metadata: {name: a}\n")), [Code::E0601]);
    let i = run(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n\
         spec:\n  podSelector: {matchLabels: [web]}\n",
    );
    assert_eq!(codes(&i), [Code::E0601]);
    assert!(
        i.diagnostics[0].message.contains("NetworkPolicy x/p"),
        "{:?}",
        i.diagnostics
    );
}

#[test]
fn e0602_refused_objects() {
    let i = run(
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: c}\n\
         spec:\n  tier: Emergency\n  priority: 1\n  subject: {namespaces: {}}\n",
    );
    assert_eq!(codes(&i), [Code::E0602]);
    assert!(
        i.diagnostics[0].message.contains("`spec.tier`"),
        "{}",
        i.diagnostics[0].message
    );
    // An unknown field of the spec could change who is isolated.
    let i = run(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n\
         spec:\n  podSelector: {}\n  nodeSelector: {}\n",
    );
    assert_eq!(codes(&i), [Code::E0602]);
    // ANP priority out of range; a bad selector operator.
    let i = run(
        "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: a}\n\
         spec:\n  priority: 1001\n  subject: {namespaces: {}}\n",
    );
    assert_eq!(codes(&i), [Code::E0602]);
    let i = run(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n\
         spec:\n  podSelector: {matchExpressions: [{key: a, operator: Gt, values: ['1']}]}\n",
    );
    assert_eq!(codes(&i), [Code::E0602]);
}

#[test]
fn w0601_networkpolicy_drops_what_it_does_not_know() {
    // One unknown port of two: the other port stays; the rule whose only
    // port is unknown is dropped — it must not become "every port".
    let i = run(&format!(
        "{NS_X}apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: x}}\n\
         spec:\n  podSelector: {{}}\n  ingress:\n  - ports:\n    - {{port: 80, appProtocol: h2}}\n    - {{port: 81}}\n\
         \x20 - ports:\n    - {{port: 82, protocol: ICMP}}\n"
    ));
    assert_eq!(
        codes(&i),
        [Code::W0601, Code::W0601, Code::W0601],
        "{:#?}",
        i.diagnostics
    );
    assert!(i.program.contains("allow tcp 81\n"), "{}", i.program);
    assert!(
        !i.program.contains("allow\n")
            && !i.program.contains("tcp 80")
            && !i.program.contains("82"),
        "{}",
        i.program
    );
    assert!(
        i.diagnostics[0]
            .message
            .contains("spec.ingress[0].ports[0].appProtocol"),
        "{}",
        i.diagnostics[0].message
    );
}

#[test]
fn w0601_admin_rules_fail_closed_by_action() {
    let i = run(
        "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: a}\n\
         spec:\n  priority: 1\n  subject: {namespaces: {}}\n  egress:\n\
         \x20 - {action: Allow, to: [{domainNames: [a.example]}]}\n\
         \x20 - {action: Pass, to: [{namespaces: {}}], ports: [{portNumber: {port: 80, protocol: TCP}, future: 1}]}\n",
    );
    assert_eq!(
        codes(&i),
        [Code::W0601, Code::W0601],
        "{:#?}",
        i.diagnostics
    );
    assert!(i
        .diagnostics
        .iter()
        .any(|d| d.message.contains("the rule matches nothing")));
    assert!(i
        .diagnostics
        .iter()
        .any(|d| d.message.contains("the rule denies all traffic")));
    let policy = &i.program[i.program.find("policy anp_a").unwrap()..];
    let egress = &policy[policy.find("egress {").unwrap()..policy.find("}\n").unwrap()];
    assert!(
        egress.contains("    deny\n") && !egress.contains("allow") && !egress.contains("pass"),
        "{egress}"
    );
}

#[test]
fn w0602_w0603_w0604() {
    let i = run(&format!(
        "{NS_X}apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c, namespace: x}}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: x}}\n\
         spec:\n  podSelector: {{}}\n  ingress:\n  - from:\n    - ipBlock: {{cidr: 192.168.1.1/24}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: h, namespace: x}}\nspec: {{hostNetwork: true}}\nstatus: {{podIP: 10.0.0.1}}\n"
    ));
    assert_eq!(
        codes(&i),
        [Code::W0602, Code::W0603, Code::W0604],
        "{:#?}",
        i.diagnostics
    );
    assert!(
        i.program.contains("allow from { 192.168.1.0/24 }"),
        "{}",
        i.program
    );
}

#[test]
fn output_is_deterministic_and_checks() {
    let text = format!(
        "{NS_X}apiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: x, labels: {{app: web}}}}\n\
         spec: {{containers: [{{ports: [{{name: http, containerPort: 8080}}]}}]}}\nstatus: {{podIP: 10.0.0.1}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: x}}\n\
         spec: {{clusterIP: 10.96.0.1, selector: {{app: web}}, ports: [{{port: 80, targetPort: http}}]}}\n"
    );
    let a = run(&text);
    assert_eq!(a.program, run(&text).program);
    assert!(a.program.contains("backends select \"k8s:io.kubernetes.pod.namespace\" == \"x\" && \"app\" == \"web\" port \"http\""), "{}", a.program);
    let m = crate::check::model_of(&a.program);
    assert_eq!(m.services.len(), 1);
    // The pod's own `http` (a named target port), 8080.
    let s = &m.services[0];
    let b = crate::interp::backends_of(s, &s.frontends[0], &m.endpoints);
    assert_eq!(b.iter().map(|b| b.port).collect::<Vec<_>>(), vec![8080]);
}

const NODE_AND_POD: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {zone: a}}\n\
    status: {addresses: [{type: InternalIP, address: 10.10.0.1}, {type: Hostname, address: n1}]}\n---\n\
    apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec: {nodeName: n1}\nstatus: {podIP: 10.0.0.5}\n";

#[test]
fn implicit_allowance_covers_the_pod_and_its_node() {
    let i = run(&format!("{NS_X}{NODE_AND_POD}"));
    assert!(i.diagnostics.is_empty(), "{:#?}", i.diagnostics);
    // One `self` policy for every pod, one policy per node for its pods;
    // the tier falls through.
    assert!(
        i.program
            .contains("tier k8s-implicit order 10 default pass"),
        "{}",
        i.program
    );
    let p = &i.program[i.program.find("policy k8s-self").unwrap()..];
    assert!(
        p.contains("allow from self") && p.contains("allow to self"),
        "{p}"
    );
    // One `node` policy for every pod (a pod moving nodes is an
    // endpoint change); the Node is declared, the pod names it.
    let p = &i.program[i.program.find("policy k8s-node").unwrap()..];
    assert!(
        p.contains("allow from node") && p.contains("allow to node"),
        "{p}"
    );
    assert!(i.program.contains("node n1 {"), "{}", i.program);
    assert_eq!(i.inventory["endpoints"][0]["node"], "n1");
    assert!(!i.program.contains("k8s-admin-pass"), "{}", i.program);
    // Without the Node, the node's allowance is missing and said so.
    let i = run(&format!("{NS_X}apiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: x}}\nspec: {{nodeName: n9}}\nstatus: {{podIP: 10.0.0.5}}\n"));
    assert_eq!(codes(&i), [Code::W0604]);
    assert!(
        i.diagnostics[0].message.contains("node `n9`"),
        "{}",
        i.diagnostics[0].message
    );
}

#[test]
fn admin_nodes_peer_is_the_matching_nodes_addresses() {
    let i = run(&format!(
        "{NS_X}{NODE_AND_POD}---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {{name: n}}\n\
         spec:\n  priority: 1\n  subject: {{namespaces: {{}}}}\n  egress:\n\
         \x20 - {{action: Deny, to: [{{nodes: {{matchLabels: {{zone: a}}}}}}]}}\n\
         \x20 - {{action: Deny, to: [{{nodes: {{matchLabels: {{zone: b}}}}}}]}}\n"
    ));
    assert!(i.diagnostics.is_empty(), "{:#?}", i.diagnostics);
    let p = &i.program[i.program.find("policy anp_n").unwrap()..];
    // Zone b has no node: that rule matches nothing (exactly), it is not
    // a deny of everything.
    assert!(
        p.contains("deny to nodes \"zone\" == \"a\"") && !p.contains("    deny\n"),
        "{p}"
    );
}

/// A host-network pod on a declared node is a `host network` endpoint: no
/// address of its own, so it never clashes with the Node's (E0210 gone);
/// its traffic is judged as the node's.
#[test]
fn host_network_pod_takes_its_nodes_address() {
    let i = run(&format!(
        "{NS_X}{NODE_AND_POD}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: h, namespace: x}}\n\
         spec: {{nodeName: n1, hostNetwork: true}}\nstatus: {{podIP: 10.10.0.1}}\n"
    ));
    assert!(i.diagnostics.is_empty(), "{:#?}", i.diagnostics);
    let h = i.inventory["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["hostNetwork"] == true)
        .unwrap()
        .clone();
    assert_eq!(h["node"], "n1");
    assert_eq!(h["addrs"], serde_json::json!([]));
}
