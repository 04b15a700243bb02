//! The state file: what generation is in force in a namespace.

use serde::{Deserialize, Serialize};

use super::Iptables;
use crate::bundle::Family;
use crate::error::Error;
use crate::statefs;

/// `state.json`, written after every successful apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Always `"iptables"`.
    pub backend: String,
    pub generation: u32,
    /// [`crate::Bundle::content_hash`] of the applied bundle.
    pub bundle_hash: String,
    /// The manifest's source hash, if it has one.
    pub source_hash: Option<String>,
    pub bundle_dir: String,
    pub netns: Option<String>,
    /// `system`, `legacy` or `nft`.
    pub variant: String,
    /// Seconds since the Unix epoch.
    pub applied_at: u64,
    /// Every chain of the generation.
    pub chains: Vec<StateChain>,
    /// Every hook: built-in chain → hook chain → generation chain.
    pub hooks: Vec<StateHook>,
    /// Every set of the generation.
    pub sets: Vec<StateSet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChain {
    pub family: Family,
    pub table: String,
    pub chain: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateHook {
    pub family: Family,
    pub table: String,
    /// The built-in chain, e.g. `FORWARD`.
    pub builtin: String,
    /// Our stable chain, e.g. `WEIR-HOOK-FORWARD`.
    pub hook_chain: String,
    /// The generation's chain, e.g. `WEIR3-FORWARD`.
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSet {
    /// The bundle's name, `weir-…`.
    pub name: String,
    /// The kernel's name, `weir<g>-…`.
    pub kernel_name: String,
}

impl Iptables {
    /// The state file, if something was applied.
    pub fn read_state(&self) -> Result<Option<State>, Error> {
        let path = self.state_path();
        match statefs::read_text(&path) {
            Ok(Some(text)) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::State {
                    path,
                    message: format!("not a weir state file: {e}"),
                }),
            Ok(None) => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    pub(crate) fn write_state(&self, state: &State) -> Result<(), Error> {
        let path = self.state_path();
        let text = serde_json::to_string_pretty(state).expect("state serialises");
        statefs::secure_dir(&self.options().state_dir)
            .and_then(|()| statefs::write_file(&path, (text + "\n").as_bytes()))
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }

    /// Removes the state file, the endpoint record and its side files,
    /// and the lock (detach: the node as before the first apply).
    pub(crate) fn remove_state(&self) -> Result<(), Error> {
        let dir = &self.options().state_dir;
        crate::statefs::remove_state(dir, &["state.json", statefs::LOCK])
            .map_err(|e| Error::io(format!("removing the state in {}", dir.display()), e))
    }
}
