//! Endpoint churn: incremental updates of the generation's sets, without
//! touching any rule.

use super::{exec, names, Iptables};
use crate::error::Error;

impl Iptables {
    /// Adds and removes entries of one set of the generation in force, in
    /// one `ipset restore -exist` batch (deletions first; adding a present
    /// entry or deleting an absent one is not an error). `set` is the
    /// bundle's name (`weir-c3`) or the kernel's (`weir4-c3`); entries are
    /// in ipset syntax for the set's type (`10.1.0.5`, `10.1.0.0/24`,
    /// `10.1.0.5,tcp:80`).
    pub fn update_set(&self, set: &str, add: &[String], del: &[String]) -> Result<(), Error> {
        exec::require_root()?;
        exec::require_program("ipset")?;
        let _lock = self.lock()?;
        let state = self.read_state()?.ok_or_else(|| Error::State {
            path: self.state_path(),
            message: "nothing is applied, so there is no set to update".into(),
        })?;
        let bundle_name = names::bundle_set_name(set).unwrap_or_else(|| set.to_string());
        let kernel = state
            .sets
            .iter()
            .find(|s| s.name == bundle_name)
            .map(|s| s.kernel_name.clone())
            .ok_or_else(|| Error::State {
                path: self.state_path(),
                message: format!("generation {} has no set `{bundle_name}`", state.generation),
            })?;
        let mut text = String::new();
        for (verb, entries) in [("del", del), ("add", add)] {
            for e in entries {
                let e = e.trim();
                if e.is_empty() || e.contains(['\n', '\r']) {
                    return Err(Error::Step {
                        step: format!("updating set {kernel}"),
                        program: "ipset".into(),
                        stderr: format!("invalid entry {e:?}"),
                    });
                }
                text.push_str(&format!("{verb} {kernel} {e}\n"));
            }
        }
        if text.is_empty() {
            return Ok(());
        }
        self.exec
            .run_ok(
                &format!("updating set {kernel}"),
                "ipset",
                &["restore", "-exist"],
                Some(&text),
            )
            .map(|_| ())
    }
}
