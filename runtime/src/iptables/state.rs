//! The state file: what generation is in force in a namespace.

use serde::{Deserialize, Serialize};

use super::Iptables;
use crate::bundle::Family;
use crate::error::Error;

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
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::State {
                    path,
                    message: format!("not a weir state file: {e}"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    pub(crate) fn write_state(&self, state: &State) -> Result<(), Error> {
        let path = self.state_path();
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(state).expect("state serialises");
        std::fs::write(&tmp, text + "\n")
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }

    pub(crate) fn remove_state(&self) -> Result<(), Error> {
        let path = self.state_path();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
        }
    }
}
