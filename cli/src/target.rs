//! Where a runtime command acts and how it reports: the `--backend`,
//! `--netns`, `--iface`, `--state-dir`, `--iptables` and `--format`
//! flags shared by `weir apply`, `detach`, `status` and `endpoints`. Its
//! own module so that the iptables commands (apply.rs) and the eBPF ones
//! (ebpf_cmd.rs) both depend on it and not on each other.

use std::path::PathBuf;

use clap::{Args as ClapArgs, ValueEnum};
use weir_runtime::iptables::{Iptables, Options, Variant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Iptables,
    /// TC programs (`weir.o`) attached to `--iface`.
    Ebpf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IptablesVariant {
    /// `iptables-restore` as installed (the system's alternative).
    System,
    /// `iptables-legacy-restore`.
    Legacy,
    /// `iptables-nft-restore`.
    Nft,
}

/// Where the runtime acts.
#[derive(Debug, ClapArgs)]
pub struct Target {
    /// Back end to drive.
    #[arg(long, value_enum, default_value = "iptables")]
    pub backend: Backend,
    /// Act inside this named network namespace (`ip netns add NAME`).
    #[arg(long)]
    pub netns: Option<String>,
    /// Interface to attach to (TC ingress; `--backend ebpf`). Repeatable:
    /// the same program and maps on every listed interface (e.g. both
    /// links of a node, so replies of service flows are reverse-NATed);
    /// the first names the instance.
    #[arg(long)]
    pub iface: Vec<String>,
    /// Directory of the state file (default: /run/weir/host or
    /// /run/weir/netns-NAME).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Which iptables implementation to run [default: system].
    #[arg(long, value_enum)]
    pub iptables: Option<IptablesVariant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// How a runtime command prints its report (docs/json.md).
#[derive(Debug, ClapArgs)]
pub struct Output {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// The same as `--format json` (kept, hidden, for scripts written
    /// before `--format`).
    #[arg(long, hide = true, conflicts_with = "format")]
    pub json: bool,
}

impl Output {
    pub fn json(&self) -> bool {
        self.json || self.format == Format::Json
    }
}

impl Target {
    /// A flag of the other back end is a usage error, not ignored.
    pub(crate) fn validate(&self) -> Result<(), i32> {
        let problem = match self.backend {
            Backend::Iptables if !self.iface.is_empty() => {
                "--iface applies to --backend ebpf (the iptables rules hook every interface)"
            }
            Backend::Ebpf if self.state_dir.is_some() => {
                "--state-dir applies to --backend iptables (eBPF state is pinned under /sys/fs/bpf/weir)"
            }
            Backend::Ebpf if self.iptables.is_some() => "--iptables applies to --backend iptables",
            _ => return Ok(()),
        };
        Err(crate::program::usage(problem))
    }

    pub(crate) fn runtime(&self) -> Iptables {
        let mut opts = match &self.netns {
            Some(name) => Options::netns(name),
            None => Options::host(),
        };
        if let Some(dir) = &self.state_dir {
            opts = opts.with_state_dir(dir);
        }
        opts = opts.with_variant(match self.iptables.unwrap_or(IptablesVariant::System) {
            IptablesVariant::System => Variant::System,
            IptablesVariant::Legacy => Variant::Legacy,
            IptablesVariant::Nft => Variant::Nft,
        });
        Iptables::new(opts)
    }
}
