//! The live watch (cargo feature `kube`): one kube-rs watcher per kind,
//! each turned into the agent's [`Event`]s — the only code that talks to
//! the API server, kept thin so that a recorded stream (`--replay`)
//! exercises everything else.
//!
//! Every kind is read as a `DynamicObject` (the three policy-api CRDs
//! have no k8s-openapi types, and the importer reads JSON anyway); the
//! object is handed over as JSON with its `apiVersion` and `kind` set
//! (list responses may leave them out of items). A watcher's initial
//! list (`Init` … `InitDone`, after start and after every expired or
//! broken watch) becomes one `RELIST`; errors become `ERROR` (the
//! watcher retries with kube's default backoff). A kind the API server
//! does not serve (a policy-api CRD not installed: 404) is an empty
//! relist and is not watched — a cluster without AdminNetworkPolicy has
//! none.
//!
//! Connection: in-cluster (the pod's service account) or `KUBECONFIG` /
//! `~/.kube/config`, as `kube::Client::try_default` finds them.

use std::sync::mpsc::{channel, Receiver, Sender};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::Value;

use super::event::Event;

/// (group, version, kind) of every watched kind (event::KINDS).
const RESOURCES: [(&str, &str, &str); 9] = [
    ("networking.k8s.io", "v1", "NetworkPolicy"),
    ("policy.networking.k8s.io", "v1alpha1", "AdminNetworkPolicy"),
    (
        "policy.networking.k8s.io",
        "v1alpha1",
        "BaselineAdminNetworkPolicy",
    ),
    (
        "policy.networking.k8s.io",
        "v1alpha2",
        "ClusterNetworkPolicy",
    ),
    ("", "v1", "Pod"),
    ("", "v1", "Namespace"),
    ("", "v1", "Node"),
    ("", "v1", "Service"),
    ("discovery.k8s.io", "v1", "EndpointSlice"),
];

/// Connects and starts the watchers on their own thread (a one-worker
/// tokio runtime); events arrive on the receiver.
pub fn start() -> Result<Receiver<Event>, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    let client = rt
        .block_on(kube::Client::try_default())
        .map_err(|e| format!("no Kubernetes client configuration: {e}"))?;
    let (tx, rx) = channel();
    std::thread::Builder::new()
        .name("weir-agent-watch".into())
        .spawn(move || {
            rt.block_on(async move {
                let watches = RESOURCES.iter().map(|(g, v, k)| {
                    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(g, v, k));
                    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
                    watch_kind(api, ar, tx.clone())
                });
                futures::future::join_all(watches).await;
            })
        })
        .map_err(|e| e.to_string())?;
    Ok(rx)
}

fn value(o: &DynamicObject, ar: &ApiResource) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("apiVersion".into(), Value::String(ar.api_version.clone()));
        m.insert("kind".into(), Value::String(ar.kind.clone()));
    }
    v
}

async fn watch_kind(api: Api<DynamicObject>, ar: ApiResource, tx: Sender<Event>) {
    if let Err(kube::Error::Api(s)) = api.list(&ListParams::default().limit(1)).await {
        if s.code == 404 {
            crate::errln!(
                "weir agent: the API server does not serve {} ({}): none, not watched",
                ar.kind,
                ar.api_version
            );
            let _ = tx.send(Event::Relist {
                kind: ar.kind.clone(),
                objects: Vec::new(),
            });
            return;
        }
    }
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listed: Vec<Value> = Vec::new();
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(watcher::Event::Init) => {
                listed.clear();
                continue;
            }
            Ok(watcher::Event::InitApply(o)) => {
                listed.push(value(&o, &ar));
                continue;
            }
            Ok(watcher::Event::InitDone) => Event::Relist {
                kind: ar.kind.clone(),
                objects: std::mem::take(&mut listed),
            },
            Ok(watcher::Event::Apply(o)) => Event::Upsert(value(&o, &ar)),
            Ok(watcher::Event::Delete(o)) => Event::Delete(value(&o, &ar)),
            Err(e) => Event::Error(format!("watch {}: {e}", ar.kind)),
        };
        if tx.send(event).is_err() {
            return;
        }
    }
}
