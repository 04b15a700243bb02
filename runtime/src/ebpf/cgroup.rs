//! Connect-time load balancing at `weir apply --cgroup PATH`.
//!
//! The `cgroup/connect4`, `cgroup/sendmsg4` and `cgroup/recvmsg4`
//! programs and their IPv6 twins (`connect6`, `sendmsg6`, `recvmsg6`;
//! [`sock_object`]) are loaded against the `weir_lb_*` maps the
//! generation pinned under `gen-N/` (same definitions: `Capacity::maps`),
//! so TC and connect-time paths share frontends, backends, Maglev tables,
//! affinity and counters, and `weir endpoints` updates both. Their links
//! are pinned as `cgroup_connect4`, `cgroup_sendmsg4`, `cgroup_recvmsg4`,
//! `cgroup_connect6`, `cgroup_sendmsg6`, `cgroup_recvmsg6` next to the TC
//! `link` (they outlive the process; `weir detach` removes
//! them with the instance's pin directory). A later apply replaces the
//! programs on the pinned links (`BPF_LINK_UPDATE`, one step per hook)
//! with the new generation's; an apply whose bundle has no services
//! removes them.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use aya::programs::links::{CgroupAttachMode, FdLink};
use aya::programs::{CgroupSockAddr, ProgramError};
use aya::{Ebpf, EbpfLoader};
use weir_compiler::ebpf::service::object::{prog, sock_object};
use weir_compiler::ebpf::service::LbState;
use weir_compiler::ebpf::write_object;

use super::EbpfError;

/// (program, link pin name) of the connect-time hooks.
pub const HOOKS: [(&str, &str); 6] = [
    (prog::CONNECT4, "cgroup_connect4"),
    (prog::SENDMSG4, "cgroup_sendmsg4"),
    (prog::RECVMSG4, "cgroup_recvmsg4"),
    (prog::CONNECT6, "cgroup_connect6"),
    (prog::SENDMSG6, "cgroup_sendmsg6"),
    (prog::RECVMSG6, "cgroup_recvmsg6"),
];

fn aya_err(step: impl Into<String>, e: impl std::fmt::Display) -> EbpfError {
    EbpfError::Aya {
        step: step.into(),
        message: e.to_string(),
    }
}

/// Whether every connect-time link of the instance at `base` is pinned.
pub fn attached(base: &Path) -> bool {
    HOOKS.iter().all(|(_, pin)| base.join(pin).exists())
}

/// Opens `cgroup` (a cgroup v2 directory), checking it is one.
pub fn open_cgroup(cgroup: &Path) -> Result<File, EbpfError> {
    let dir = File::open(cgroup).map_err(|source| EbpfError::Io {
        context: format!("opening cgroup {}", cgroup.display()),
        source,
    })?;
    if !cgroup.join("cgroup.procs").exists() {
        return Err(EbpfError::Bundle(format!(
            "{} is not a cgroup v2 directory (no cgroup.procs)",
            cgroup.display()
        )));
    }
    Ok(dir)
}

/// Loads the connect-time programs over the service maps pinned in
/// `gen_dir` (nothing attached yet).
pub fn load(lb: &LbState, gen_dir: &Path) -> Result<Ebpf, EbpfError> {
    let bytes = write_object(&sock_object(&lb.capacity))
        .map_err(|e| EbpfError::Bundle(format!("connect-time object: {e}")))?;
    let maps = lb.capacity.maps();
    let mut loader = EbpfLoader::new();
    loader.btf(None);
    for m in &maps {
        loader.map_pin_path(m.name.as_str(), gen_dir.join(&m.name));
    }
    let mut ebpf = loader
        .load(&bytes)
        .map_err(|e| aya_err("loading the connect-time object", e))?;
    for (name, _) in HOOKS {
        let p: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or_else(|| EbpfError::Bundle(format!("no program {name}")))?
            .try_into()
            .map_err(|e: ProgramError| aya_err(name, e))?;
        p.load().map_err(|e| super::load::verifier(name, e))?;
    }
    Ok(ebpf)
}

/// `BPF_OBJ_GET`: an fd for a pinned object.
fn obj_get(path: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut attr = [0u8; 16];
    attr[0..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
    let fd = super::load::sys_bpf(7, &mut attr)?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_LINK_UPDATE`: put `prog_fd` on the link pinned at `path`.
fn link_update(path: &Path, prog_fd: i32) -> std::io::Result<()> {
    let link = obj_get(path)?;
    let mut attr = [0u8; 16];
    attr[0..4].copy_from_slice(&(link.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(prog_fd as u32).to_ne_bytes());
    super::load::sys_bpf(29, &mut attr).map(|_| ())
}

/// Removes the pinned connect-time links of `base` (detaching them).
pub fn remove(base: &Path) {
    for (_, pin) in HOOKS {
        let _ = std::fs::remove_file(base.join(pin));
    }
}

/// Puts the loaded programs of `ebpf` on `cgroup`: replaces the programs
/// of the pinned links when they exist for the same cgroup (`previous`),
/// else (re)creates and pins the links.
pub fn switch(
    ebpf: &mut Ebpf,
    base: &Path,
    cgroup: &Path,
    previous: Option<&Path>,
) -> Result<PathBuf, EbpfError> {
    let same = previous == Some(cgroup) && attached(base);
    if !same {
        remove(base);
    }
    let dir = if same {
        None
    } else {
        Some(open_cgroup(cgroup)?)
    };
    for (name, pin) in HOOKS {
        let p: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .expect("loaded")
            .try_into()
            .map_err(|e: ProgramError| aya_err(name, e))?;
        let path = base.join(pin);
        match &dir {
            None => {
                let fd = p.fd().map_err(|e| aya_err(name, e))?;
                link_update(&path, fd.as_fd().as_raw_fd())
                    .map_err(|e| aya_err(format!("replacing {name} on {}", path.display()), e))?;
            }
            Some(dir) => {
                let step = format!("attaching {name} to {}", cgroup.display());
                let id = p
                    .attach(dir, CgroupAttachMode::Single)
                    .map_err(|e| aya_err(&step, e))?;
                let link = p.take_link(id).map_err(|e| aya_err(&step, e))?;
                let fd: FdLink = link
                    .try_into()
                    .map_err(|e: aya::programs::links::LinkError| aya_err(&step, e))?;
                fd.pin(&path)
                    .map_err(|e| aya_err(format!("pinning {}", path.display()), e))?;
            }
        }
    }
    Ok(cgroup.to_path_buf())
}
