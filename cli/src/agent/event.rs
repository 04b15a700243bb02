//! The watch events the agent consumes, and their JSON-lines form (the
//! `--replay` format, docs/kubernetes.md "Agent").
//!
//! One event per line; blank lines and lines starting with `#` are
//! skipped:
//!
//! ```text
//! {"type":"ADDED","object":{"apiVersion":"v1","kind":"Pod","metadata":{…},…}}
//! {"type":"MODIFIED","object":{…}}
//! {"type":"DELETED","object":{…}}       (only kind, namespace and name are read)
//! {"type":"RELIST","kind":"Pod","objects":[{…},…]}
//! {"type":"SYNC"}
//! {"type":"ERROR","message":"watch failed: connection refused"}
//! ```
//!
//! `RELIST` replaces every object of `kind` (objects missing from it are
//! deleted) — what a watcher does after its watch expired or broke.
//! `SYNC` is the debounce timer firing: the agent reconciles (a replay
//! also reconciles at its end). `ERROR` is the API server out of reach:
//! the agent keeps the generation in force and reports not ready until
//! the next `RELIST`. The live watcher (feature `kube`) produces exactly
//! these events, so a recorded stream replays through the same code.

use serde_json::Value;

/// The kinds the agent watches (docs/kubernetes.md lists their API
/// groups; deploy/rbac.yaml grants get/list/watch on exactly these).
pub const KINDS: [&str; 9] = [
    "NetworkPolicy",
    "AdminNetworkPolicy",
    "BaselineAdminNetworkPolicy",
    "ClusterNetworkPolicy",
    "Pod",
    "Namespace",
    "Node",
    "Service",
    "EndpointSlice",
];

/// Where an object lives in the store: (kind, namespace, name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl Key {
    /// The key of a Kubernetes object: `kind`, `metadata.namespace`,
    /// `metadata.name`.
    pub fn of(object: &Value) -> Result<Key, String> {
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .ok_or("the object has no `kind`")?;
        let meta = object.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the {kind} has no `metadata.name`"))?;
        let namespace = meta
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Key {
            kind: kind.to_string(),
            namespace,
            name: name.to_string(),
        })
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// One event of the watch stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// ADDED or MODIFIED: the object as it now is.
    Upsert(Value),
    /// DELETED.
    Delete(Value),
    /// Every object of `kind` (the others are gone).
    Relist { kind: String, objects: Vec<Value> },
    /// Reconcile now (the debounce timer fired).
    Sync,
    /// The API server could not be reached or the watch failed.
    Error(String),
}

/// Parses one line; `Ok(None)` for blank lines and `#` comments.
pub fn parse_line(line: &str) -> Result<Option<Event>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let ty = v
        .get("type")
        .and_then(Value::as_str)
        .ok_or("no `type` (ADDED, MODIFIED, DELETED, RELIST, SYNC or ERROR)")?;
    let object = || -> Result<Value, String> {
        let o = v.get("object").cloned().ok_or("no `object`")?;
        Key::of(&o)?;
        Ok(o)
    };
    Ok(Some(match ty {
        "ADDED" | "MODIFIED" => Event::Upsert(object()?),
        "DELETED" => Event::Delete(object()?),
        "RELIST" => {
            let kind = v
                .get("kind")
                .and_then(Value::as_str)
                .ok_or("a RELIST needs `kind`")?
                .to_string();
            let objects = match v.get("objects") {
                Some(Value::Array(a)) => a.clone(),
                _ => return Err("a RELIST needs `objects` (a list)".into()),
            };
            for o in &objects {
                let k = Key::of(o)?;
                if k.kind != kind {
                    return Err(format!("a RELIST of {kind} holds a {}", k.kind));
                }
            }
            Event::Relist { kind, objects }
        }
        "SYNC" => Event::Sync,
        "ERROR" => Event::Error(
            v.get("message")
                .and_then(Value::as_str)
                .unwrap_or("the watch failed")
                .to_string(),
        ),
        other => return Err(format!("unknown event type `{other}`")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(parse_line("  # a comment"), Ok(None));
        assert_eq!(parse_line(""), Ok(None));
        assert_eq!(parse_line(r#"{"type":"SYNC"}"#), Ok(Some(Event::Sync)));
        let e = parse_line(
            r#"{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"a","namespace":"x"}}}"#,
        )
        .unwrap()
        .unwrap();
        let Event::Upsert(o) = e else { panic!() };
        assert_eq!(Key::of(&o).unwrap().to_string(), "Pod x/a");
        assert!(parse_line(r#"{"type":"ADDED","object":{"kind":"Pod"}}"#).is_err());
        assert!(parse_line(
            r#"{"type":"RELIST","kind":"Pod","objects":[{"kind":"Node","metadata":{"name":"n"}}]}"#
        )
        .is_err());
        assert!(parse_line(r#"{"type":"BOOKMARK"}"#).is_err());
        assert!(parse_line("{").is_err());
    }
}
