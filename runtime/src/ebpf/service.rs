//! Service maps at run time: load the service object, fill its maps from
//! [`LbState`], change backends without reloading programs (the Maglev
//! table is swapped atomically: see `weir_compiler::ebpf::service::fill`),
//! attach the connect-time programs to a cgroup and the TC program to an
//! interface.
//!
//! `weir apply --cgroup` (the pipeline's generation, not this standalone
//! object) is in [`super::cgroup`]; `weir status` / `weir stats` read the
//! applied generation ([`super::attach::status`],
//! [`super::attach::service_stats`]).

use std::fs::File;
use std::path::Path;

use aya::maps::{MapData, PerCpuArray};
use aya::programs::links::CgroupAttachMode;
use aya::programs::{CgroupSockAddr, ProgramError, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use weir_compiler::ebpf::layout::service::{cnt, map as names};
use weir_compiler::ebpf::service::fill::Be;
use weir_compiler::ebpf::service::object::{prog, service_object};
use weir_compiler::ebpf::service::LbState;
use weir_compiler::ebpf::write_object;

use super::load::apply_ops;
use super::EbpfError;

fn aya_err(step: impl Into<String>, e: impl std::fmt::Display) -> EbpfError {
    EbpfError::Aya {
        step: step.into(),
        message: e.to_string(),
    }
}

/// A loaded service object with its allocation state.
pub struct LbRuntime {
    pub ebpf: Ebpf,
    pub state: LbState,
}

impl LbRuntime {
    /// Builds the object for `state`'s capacity, loads every program
    /// through the verifier and fills the maps.
    pub fn load(state: LbState) -> Result<LbRuntime, EbpfError> {
        let bytes = write_object(&service_object(&state.capacity))
            .map_err(|e| EbpfError::Bundle(format!("service object: {e}")))?;
        let mut ebpf = EbpfLoader::new()
            .load(&bytes)
            .map_err(|e| aya_err("loading the service object", e))?;
        for name in [prog::TC, prog::BASELINE] {
            let p: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| EbpfError::Bundle(format!("no program {name}")))?
                .try_into()
                .map_err(|e: ProgramError| aya_err(name, e))?;
            p.load().map_err(|e| verifier(name, e))?;
        }
        for name in prog::SOCK {
            let p: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or_else(|| EbpfError::Bundle(format!("no program {name}")))?
                .try_into()
                .map_err(|e: ProgramError| aya_err(name, e))?;
            p.load().map_err(|e| verifier(name, e))?;
        }
        apply_ops(&ebpf, &state.initial_ops())?;
        Ok(LbRuntime { ebpf, state })
    }

    /// Replaces the backends of `service` (address family `fam`, 4 or 6):
    /// new set and table first, then the frontend entries (the swap), then
    /// the old set is retired. Programs are not touched.
    pub fn set_backends(
        &mut self,
        service: usize,
        fam: u8,
        backends: Vec<Be>,
    ) -> Result<(), EbpfError> {
        let ops = self
            .state
            .set_backends(service, fam, backends)
            .map_err(EbpfError::Bundle)?;
        apply_ops(&self.ebpf, &ops)
    }

    /// Attaches `connect4`, `sendmsg4`, `recvmsg4` and their IPv6 twins
    /// to the cgroup v2 directory `cgroup` (links live as long as `self`).
    pub fn attach_cgroup(&mut self, cgroup: &Path) -> Result<(), EbpfError> {
        let dir = File::open(cgroup).map_err(|source| EbpfError::Io {
            context: format!("opening cgroup {}", cgroup.display()),
            source,
        })?;
        for name in prog::SOCK {
            let p: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .expect("loaded")
                .try_into()
                .map_err(|e: ProgramError| aya_err(name, e))?;
            p.attach(&dir, CgroupAttachMode::Single)
                .map_err(|e| aya_err(format!("attaching {name} to {}", cgroup.display()), e))?;
        }
        Ok(())
    }

    /// Attaches the TC program to `iface` ingress (adds the clsact qdisc
    /// if needed). Call it in the interface's network namespace.
    pub fn attach_tc(&mut self, iface: &str) -> Result<(), EbpfError> {
        let _ = aya::programs::tc::qdisc_add_clsact(iface);
        let p: &mut SchedClassifier = self
            .ebpf
            .program_mut(prog::TC)
            .expect("loaded")
            .try_into()
            .map_err(|e: ProgramError| aya_err(prog::TC, e))?;
        p.attach(iface, TcAttachType::Ingress)
            .map_err(|e| aya_err(format!("attaching {} to {iface}", prog::TC), e))?;
        Ok(())
    }

    /// `weir_lb_cnt`, summed over CPUs ([`cnt`] indexes).
    pub fn counters(&self) -> Result<Vec<u64>, EbpfError> {
        let m = self
            .ebpf
            .map(names::CNT)
            .ok_or_else(|| EbpfError::Bundle("no counter map".into()))?;
        let arr: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(m).map_err(|e| aya_err(names::CNT, e))?;
        (0..cnt::SIZE)
            .map(|i| {
                arr.get(&i, 0)
                    .map(|v| v.iter().sum())
                    .map_err(|e| aya_err(names::CNT, e))
            })
            .collect()
    }
}

fn verifier(program: &str, e: ProgramError) -> EbpfError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let lines: Vec<&str> = log.lines().collect();
            EbpfError::Verifier {
                program: program.to_string(),
                error: io_error.to_string(),
                log_tail: lines[lines.len().saturating_sub(30)..].join("\n"),
            }
        }
        other => aya_err(format!("loading program {program}"), other),
    }
}
