//! A namespace relabelled at run time: one update, not one per endpoint.
//!
//! A namespace's labels live in the namespace (an inventory's
//! `"namespaces"` entry, [`crate::namespaces`]); its endpoints carry them
//! only as derived labels. [`relabel_namespace`] takes the endpoints in
//! force and the one changed entry, re-derives the labels of that
//! namespace's endpoints only (the others are not touched, not even
//! compared) and places them by [`plan`], as relabelled endpoints are
//! placed: the update is incremental when every new signature is a
//! compiled class, and refused ("needs a recompile") otherwise — never
//! stale.

use std::collections::BTreeMap;

use super::placement::ClassView;
use super::plan::{plan, Plan};
use super::record::EndpointRec;
use crate::namespaces;

/// The result of one namespace relabel.
#[derive(Debug, Clone)]
pub struct NamespaceUpdate {
    /// The endpoints in force afterwards (the caller records them once
    /// the plan is applied).
    pub endpoints: Vec<EndpointRec>,
    /// How many endpoints are in the namespace (all that were looked at
    /// again).
    pub members: usize,
    /// The address changes, or why the update needs a recompile.
    pub plan: Plan,
}

/// Relabels namespace `ns` to `labels` over the endpoints in force.
pub fn relabel_namespace(
    view: &ClassView,
    current: &[EndpointRec],
    ns: &str,
    labels: &BTreeMap<String, String>,
) -> NamespaceUpdate {
    let mut endpoints = current.to_vec();
    let mut old = Vec::new();
    let mut new = Vec::new();
    for e in endpoints.iter_mut() {
        if namespaces::of(&e.labels) != Some(ns) {
            continue;
        }
        old.push(e.clone());
        e.labels = namespaces::derive(&e.labels, ns, labels);
        new.push(e.clone());
    }
    let members = new.len();
    NamespaceUpdate {
        endpoints,
        members,
        plan: plan(view, &old, &new),
    }
}
