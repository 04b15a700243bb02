//! `weir endpoints`: endpoint churn at run time is a map / ipset update,
//! never a recompile.
//!
//! The caller hands over the **full** new inventory. What changes is
//! computed purely by [`weir_compiler::churn`] against the endpoints
//! currently applied — recorded in `endpoints.state` next to the back
//! end's state (see [`RECORD`]) — and only the differences are written:
//!
//! - **iptables** ([`iptables`]): for every address that appears,
//!   disappears or changes class, one host entry in each of the
//!   generation's address sets, all in one `ipset restore -exist` batch:
//!   `del` then `add ADDR` when the set holds the new class, `add ADDR
//!   nomatch` when it does not but a covering prefix of the address's
//!   base class is in it (so membership is exactly "the class is one of
//!   the set's classes"). No rule changes. Selector-backed service
//!   backends are DNAT rules in chains, so a backend change cannot be
//!   applied here: the report lists those services
//!   ([`Report::needs_recompile`]) and the CLI exits 1 after applying the
//!   class part.
//! - **eBPF** ([`ebpf`]): host entries in the pinned host hashes
//!   `weir_host4` / `weir_host6` (added or changed first), then the
//!   backends of selector-backed services through
//!   [`LbState::set_backends`] (new backend set and Maglev table, frontend
//!   swap, old set retired), then removals. Programs are not reloaded; the
//!   service allocation state is recorded with the endpoints. Every key
//!   written or deleted is then looked up again
//!   ([`crate::ebpf::txn::PinnedMaps::read_back`]): if the kernel holds
//!   something else, the writes are rolled back, nothing is recorded and
//!   the update fails naming the entries ([`EndpointsError::NotHeld`]).
//!
//! Refused (nothing written): an address whose signature no compiled
//! class has ("needs a recompile", see [`weir_compiler::churn`]), an
//! address claimed by two endpoints, a name used twice, an inventory for
//! a bundle that is not the one in force.
//!
//! Files: [`plan`] (what an inventory changes), `iptables_update` and
//! `ebpf_update` (the writes of each back end). The record's IO is
//! [`crate::record`] (its format is
//! [`weir_compiler::contract::endpoints_state`]), below the back ends,
//! which write it at apply.

use std::time::Duration;

use serde::Serialize;
use weir_compiler::churn::{self, AddrChange};

mod ebpf_update;
mod iptables_services;
mod iptables_update;
mod plan;

pub use ebpf_update::{ebpf, ebpf_dry_run, ebpf_text, ebpf_text_with_hook};
pub use iptables_update::{iptables, iptables_dir, iptables_dry_run, iptables_text};
pub use weir_compiler::contract::endpoints_state::{FileIdentity, ServiceUpdate, RECORD};

/// What [`iptables`] / [`ebpf`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The generation in force (unchanged by an endpoint update).
    pub generation: u64,
    /// Addresses that appeared, disappeared or changed class.
    pub changes: Vec<AddrChange>,
    /// Services whose backends were updated in place (eBPF).
    pub services: Vec<ServiceUpdate>,
    /// Services whose backends differ from the compiled ones but cannot be
    /// changed without a new generation (iptables: `weir compile` +
    /// `weir apply`).
    pub needs_recompile: Vec<ServiceUpdate>,
    /// Kernel writes (ipset lines, map updates / deletes).
    pub writes: usize,
    /// Endpoint objects of the inventory parsed: those whose text changed
    /// since the recorded update (all of them when the file had to be
    /// parsed whole).
    pub parsed: usize,
    /// Time spent writing to the kernel (JSON: microseconds).
    #[serde(with = "micros", rename = "apply_us")]
    pub apply_time: Duration,
    /// Total time, reading state included (JSON: microseconds).
    #[serde(with = "micros", rename = "total_us")]
    pub total_time: Duration,
    /// `--dry-run`: the update in endpoint names; nothing was written
    /// (`writes` counts the writes the update would make).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<churn::NamePlan>,
}

mod micros {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }
}

/// The update is in force but its record could not be written.
fn write_failed(dir: &std::path::Path, e: std::io::Error) -> EndpointsError {
    EndpointsError::Bundle(format!(
        "the update is in force but recording it in {} failed: {e}",
        dir.join(RECORD).display()
    ))
}

#[derive(Debug)]
pub enum EndpointsError {
    /// The update needs a recompile or is malformed; nothing was written.
    Refused(Vec<String>),
    /// The inventory text has problems (`weir_compiler::inventory::
    /// parse_inventory` reports them); nothing was written.
    Inventory,
    /// Nothing applied, or DIR is not the bundle in force.
    NotInForce(String),
    /// The manifest lacks what the update needs.
    Bundle(String),
    /// Read back after the writes, the kernel holds something else for
    /// these entries (eBPF): the update is not in force. Its writes were
    /// rolled back (`rolled_back` of them; `rollback_failed`: the ones
    /// that could not be) and the record was not written.
    NotHeld {
        differ: Vec<String>,
        rolled_back: usize,
        rollback_failed: Vec<String>,
    },
    Iptables(crate::Error),
    Ebpf(crate::ebpf::EbpfError),
}

impl std::fmt::Display for EndpointsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointsError::Refused(r) => {
                write!(
                    f,
                    "endpoint update refused, nothing changed (the running generation stays as it is):"
                )?;
                for x in r {
                    write!(f, "\n  {x}")?;
                }
                Ok(())
            }
            EndpointsError::Inventory => {
                f.write_str("the inventory has problems (run `weir check` on it), nothing changed")
            }
            EndpointsError::NotInForce(m) | EndpointsError::Bundle(m) => f.write_str(m),
            EndpointsError::NotHeld {
                differ,
                rolled_back,
                rollback_failed,
            } => {
                write!(
                    f,
                    "the endpoint update is not in force: read back, the kernel holds something else than it wrote for {} entr{}:",
                    differ.len(),
                    if differ.len() == 1 { "y" } else { "ies" }
                )?;
                for d in differ {
                    write!(f, "\n  {d}")?;
                }
                if rollback_failed.is_empty() {
                    write!(f, "\nits {rolled_back} map writes were rolled back; the previous endpoints stay recorded")
                } else {
                    write!(
                        f,
                        "\nrolling back its {rolled_back} map writes failed ({}): the generation in force is partly updated, run `weir apply` again",
                        rollback_failed.join("; ")
                    )
                }
            }
            EndpointsError::Iptables(e) => write!(f, "{e}"),
            EndpointsError::Ebpf(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for EndpointsError {}

impl From<crate::Error> for EndpointsError {
    fn from(e: crate::Error) -> Self {
        EndpointsError::Iptables(e)
    }
}

impl From<crate::record::RecordError> for EndpointsError {
    fn from(e: crate::record::RecordError) -> Self {
        EndpointsError::Bundle(e.to_string())
    }
}

impl From<crate::ebpf::EbpfError> for EndpointsError {
    fn from(e: crate::ebpf::EbpfError) -> Self {
        EndpointsError::Ebpf(e)
    }
}
