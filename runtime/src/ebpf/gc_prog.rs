//! Loading the conntrack collector's arming program, which aya 0.14
//! cannot: a sleepable `BPF_PROG_TYPE_SYSCALL` program (this kernel sets
//! a BPF workqueue's callback only from a sleepable program: "sleepable
//! callback in a program that is not sleepable") that calls kernel
//! functions (`super::kfunc`).
//!
//! The object is the compiler's own (`weir_compiler::ebpf::elf`), so the
//! link is small and done here, from the object's relocations:
//! - the program's instructions, then all of `.text` (the collector's
//!   callbacks, the only functions there);
//! - a map `ld_imm64` (`R_BPF_64_64` against a `.maps` symbol) gets the
//!   fd of the map aya created (`BPF_PSEUDO_MAP_FD`);
//! - a callback reference (`R_BPF_64_64` against `.text`, immediate the
//!   byte offset there) gets its pc-relative instruction offset;
//! - a kfunc call (`R_BPF_64_32` against an undefined symbol) gets the
//!   kfunc's BTF id in vmlinux (`BPF_PSEUDO_KFUNC_CALL`);
//! - the object's BTF (externs stripped) is loaded, and `func_info` names
//!   each function's `FUNC`, as the kernel requires for callbacks.
//!
//! A verifier refusal comes back with the log's tail, like aya's.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use aya::Ebpf;
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SymbolSection};

use super::load::{map_data, sys_bpf};
use super::EbpfError;

const PROG_LOAD: libc::c_long = 5;
const OBJ_PIN: libc::c_long = 6;
const OBJ_GET: libc::c_long = 7;
const PROG_TEST_RUN: libc::c_long = 10;
const BTF_LOAD: libc::c_long = 18;
const PROG_TYPE_SYSCALL: u32 = 31;
const F_SLEEPABLE: u32 = 1 << 4;

fn bundle(m: impl std::fmt::Display) -> EbpfError {
    EbpfError::Bundle(format!("conntrack collector program: {m}"))
}

/// Loads `program` (in `section`) of `object` as a sleepable syscall
/// program against the maps of `ebpf`.
pub fn load(
    object: &[u8],
    ebpf: &Ebpf,
    program: &str,
    section: &str,
) -> Result<OwnedFd, EbpfError> {
    let f = object::File::parse(object).map_err(bundle)?;
    let sec = f
        .section_by_name(section)
        .ok_or_else(|| bundle(format!("no section {section}")))?;
    let sym = f
        .symbols()
        .find(|s| s.name() == Ok(program) && s.section_index() == Some(sec.index()))
        .ok_or_else(|| bundle(format!("no function {program} in {section}")))?;
    let (base, size) = (sym.address(), sym.size());
    let sec_data = sec.data().map_err(bundle)?;
    let mut insns = sec_data
        .get(base as usize..(base + size) as usize)
        .ok_or_else(|| bundle(format!("{program} lies outside its section")))?
        .to_vec();
    let p = insns.len() / 8;
    let text = f.section_by_name(".text");
    let mut funcs: Vec<(u32, String)> = vec![(0, program.to_string())];
    if let Some(t) = &text {
        insns.extend_from_slice(t.data().map_err(bundle)?);
        for s in f.symbols() {
            if s.section_index() == Some(t.index()) && s.kind() == object::SymbolKind::Text {
                funcs.push((
                    (p + s.address() as usize / 8) as u32,
                    s.name().map_err(bundle)?.into(),
                ));
            }
        }
    }
    funcs.sort();
    // Relocations: (instruction index in `insns`, target).
    let mut relocs = Vec::new();
    for (off, r) in sec.relocations() {
        if off >= base && off < base + size {
            relocs.push((((off - base) / 8) as usize, r));
        }
    }
    if let Some(t) = &text {
        for (off, r) in t.relocations() {
            relocs.push((p + off as usize / 8, r));
        }
    }
    let kfuncs: Vec<String> = relocs
        .iter()
        .filter_map(|(_, r)| match r.target() {
            RelocationTarget::Symbol(i) => f
                .symbol_by_index(i)
                .ok()
                .filter(|s| s.is_undefined())
                .and_then(|s| s.name().ok().map(String::from)),
            _ => None,
        })
        .collect();
    let names: Vec<&str> = kfuncs.iter().map(String::as_str).collect();
    let ids = super::kfunc::vmlinux_ids(&names)?;
    for (i, r) in &relocs {
        let RelocationTarget::Symbol(si) = r.target() else {
            return Err(bundle("a relocation without a symbol"));
        };
        let s = f.symbol_by_index(si).map_err(bundle)?;
        let at = 8 * i;
        if at + 8 > insns.len() {
            return Err(bundle("a relocation outside the program's instructions"));
        }
        let imm = i32::from_le_bytes(insns[at + 4..at + 8].try_into().expect("4"));
        let set_src =
            |insns: &mut Vec<u8>, src: u8| insns[at + 1] = (insns[at + 1] & 0x0f) | (src << 4);
        let set_imm =
            |insns: &mut Vec<u8>, v: i32| insns[at + 4..at + 8].copy_from_slice(&v.to_le_bytes());
        if s.is_undefined() {
            let name = s.name().map_err(bundle)?;
            set_src(&mut insns, 2);
            insns[at + 2..at + 4].copy_from_slice(&0u16.to_le_bytes());
            let id = ids
                .get(name)
                .ok_or_else(|| bundle(format!("no BTF id for kfunc {name}")))?;
            set_imm(&mut insns, *id as i32);
        } else if text
            .as_ref()
            .is_some_and(|t| s.section() == SymbolSection::Section(t.index()))
        {
            let target = (p as i64) + i64::from(imm) / 8;
            set_imm(&mut insns, (target - *i as i64 - 1) as i32);
        } else {
            let name = s.name().map_err(bundle)?;
            let m = ebpf
                .map(name)
                .ok_or_else(|| bundle(format!("no map {name}")))?;
            set_src(&mut insns, 1);
            set_imm(&mut insns, map_data(m).fd().as_fd().as_raw_fd());
        }
    }
    // BTF, and the FUNC type of each function.
    let btf_sec = f.section_by_name(".BTF").ok_or_else(|| bundle("no .BTF"))?;
    let mut btf = btf_sec.data().map_err(bundle)?.to_vec();
    super::kfunc::strip_externs(&mut btf)?;
    let func_ids = super::kfunc::ids_in(
        &btf,
        &funcs.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>(),
    )?;
    let mut func_info = Vec::new();
    for (at, n) in &funcs {
        let id = func_ids
            .get(n)
            .ok_or_else(|| bundle(format!("no BTF FUNC {n}")))?;
        func_info.extend_from_slice(&at.to_ne_bytes());
        func_info.extend_from_slice(&id.to_ne_bytes());
    }
    let btf_fd = load_btf(&btf)?;
    let license = b"GPL\0";
    let attempt = |log: &mut Vec<u8>| -> std::io::Result<i64> {
        let mut attr = [0u8; 160];
        let put32 = |a: &mut [u8], o: usize, v: u32| a[o..o + 4].copy_from_slice(&v.to_ne_bytes());
        let put64 = |a: &mut [u8], o: usize, v: u64| a[o..o + 8].copy_from_slice(&v.to_ne_bytes());
        put32(&mut attr, 0, PROG_TYPE_SYSCALL);
        put32(&mut attr, 4, (insns.len() / 8) as u32);
        put64(&mut attr, 8, insns.as_ptr() as u64);
        put64(&mut attr, 16, license.as_ptr() as u64);
        if !log.is_empty() {
            put32(&mut attr, 24, 1);
            put32(&mut attr, 28, log.len() as u32);
            put64(&mut attr, 32, log.as_mut_ptr() as u64);
        }
        put32(&mut attr, 44, F_SLEEPABLE);
        let name = program.as_bytes();
        let n = name.len().min(15);
        attr[48..48 + n].copy_from_slice(&name[..n]);
        put32(&mut attr, 72, btf_fd.as_raw_fd() as u32);
        put32(&mut attr, 76, 8);
        put64(&mut attr, 80, func_info.as_ptr() as u64);
        put32(&mut attr, 88, (func_info.len() / 8) as u32);
        sys_bpf(PROG_LOAD, &mut attr)
    };
    match attempt(&mut Vec::new()) {
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(_) => {
            let mut log = vec![0u8; 4 << 20];
            let e = attempt(&mut log).err();
            let text =
                String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)])
                    .to_string();
            let lines: Vec<&str> = text.lines().collect();
            Err(EbpfError::Verifier {
                program: program.into(),
                error: e
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "load failed".into()),
                log_tail: lines[lines.len().saturating_sub(20)..].join("\n"),
            })
        }
    }
}

fn load_btf(btf: &[u8]) -> Result<OwnedFd, EbpfError> {
    let mut log = vec![0u8; 1 << 16];
    let mut attr = [0u8; 32];
    attr[0..8].copy_from_slice(&(btf.as_ptr() as u64).to_ne_bytes());
    attr[8..16].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
    attr[16..20].copy_from_slice(&(btf.len() as u32).to_ne_bytes());
    attr[20..24].copy_from_slice(&(log.len() as u32).to_ne_bytes());
    attr[24..28].copy_from_slice(&1u32.to_ne_bytes());
    match sys_bpf(BTF_LOAD, &mut attr) {
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => Err(EbpfError::Aya {
            step: "loading the conntrack collector's BTF".into(),
            message: format!(
                "{e}: {}",
                String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)])
            ),
        }),
    }
}

/// One test run of the program with `ctx` as its context; its return
/// value.
pub fn run(prog: BorrowedFd<'_>, ctx: &[u8]) -> std::io::Result<u32> {
    let mut attr = [0u8; 80];
    attr[0..4].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    attr[40..44].copy_from_slice(&(ctx.len() as u32).to_ne_bytes());
    attr[48..56].copy_from_slice(&(ctx.as_ptr() as u64).to_ne_bytes());
    sys_bpf(PROG_TEST_RUN, &mut attr)?;
    Ok(u32::from_ne_bytes(attr[4..8].try_into().expect("4")))
}

fn c_path(path: &std::path::Path) -> std::io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt as _;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// Pins the program at `path` (bpffs).
pub fn pin(prog: BorrowedFd<'_>, path: &std::path::Path) -> std::io::Result<()> {
    let p = c_path(path)?;
    let mut attr = [0u8; 16];
    attr[0..8].copy_from_slice(&(p.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    sys_bpf(OBJ_PIN, &mut attr).map(|_| ())
}

/// The program pinned at `path`.
pub fn from_pin(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    let p = c_path(path)?;
    let mut attr = [0u8; 16];
    attr[0..8].copy_from_slice(&(p.as_ptr() as u64).to_ne_bytes());
    let fd = sys_bpf(OBJ_GET, &mut attr)?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
