#!/usr/bin/env python3
"""A cluster-sized replay for `weir agent` (docs/kubernetes.md "Scaling"):
NS namespaces x PODS pods (10 apps per namespace), POLICIES
NetworkPolicies, a Service per app; then one pod relabel that no selector
reads (the endpoint path), one pod readiness flip of a service backend,
one pod added, a namespace relabelled with a label no selector reads (the
endpoint path: its 100 pods compared again, none changes class), a
namespace relabelled into a combination no compiled class has (needs a
recompile), and one NetworkPolicy added (recompiles).

    python3 bench/agent/scale.py 50 100 1000 > /tmp/scale.jsonl
    target/release/weir agent --replay /tmp/scale.jsonl --dry-run --backend ebpf
"""
import json
import sys

NS, PODS, POLICIES = (int(a) for a in sys.argv[1:4])
APPS = 10


def ip(n):
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def pod(ns, i, ready=True, extra=None):
    labels = {"app": f"app{i % APPS}", "shard": str(i % 7)}
    labels.update(extra or {})
    n = 1 << 20 | (ns * (PODS + 1) + i)  # room for the added pod p{PODS}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"p{i}", "namespace": f"ns{ns}", "labels": labels},
            "spec": {"nodeName": f"node{(ns * PODS + i) % 50}",
                     "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip(n), "podIPs": [{"ip": ip(n)}],
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def policy(k):
    ns = k % NS
    app = (k // NS) % APPS
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"np{k}", "namespace": f"ns{ns}"},
            "spec": {"podSelector": {"matchLabels": {"app": f"app{app}"}},
                     "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": f"t{(ns + 1) % NS}"}},
                                            "podSelector": {"matchLabels": {"app": f"app{(app + 1) % APPS}"}}}],
                                  "ports": [{"port": 8080 + k % 3, "protocol": "TCP"}]}]}}


def namespace(n, labels):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns{n}", "labels": labels}}


out = sys.stdout
nss = [namespace(n, {"team": f"t{n}"}) for n in range(NS)]
nodes = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"node{n}"},
          "status": {"addresses": [{"type": "InternalIP", "address": f"192.168.{n // 250}.{n % 250 + 1}"}]}}
         for n in range(50)]
svcs = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"app{a}", "namespace": f"ns{n}"},
         "spec": {"clusterIP": f"10.96.{n}.{a + 1}", "selector": {"app": f"app{a}"},
                  "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}
        for n in range(NS) for a in range(APPS)]
for kind, objs in [("Namespace", nss), ("Node", nodes),
                   ("Pod", [pod(n, i) for n in range(NS) for i in range(PODS)]),
                   ("NetworkPolicy", [policy(k) for k in range(POLICIES)]), ("Service", svcs)]:
    out.write(json.dumps({"type": "RELIST", "kind": kind, "objects": objs}) + "\n")
out.write('{"type":"SYNC"}\n')


events = [("MODIFIED", pod(0, 0, extra={"version": "2"})),
          ("MODIFIED", pod(0, 1, ready=False)),
          ("ADDED", pod(0, PODS)),
          ("MODIFIED", namespace(1, {"team": "t1", "env": "x"})),
          ("MODIFIED", namespace(1, {"team": "unused"})),
          ("ADDED", policy(POLICIES))]
for ty, o in events:
    out.write(json.dumps({"type": ty, "object": o}) + "\n")
    out.write('{"type":"SYNC"}\n')
