//! Kernel-function (kfunc) resolution on this node, and the object as
//! aya 0.14 can load it.
//!
//! The compiler writes each kfunc call as a ksym extern
//! (`weir_compiler::ebpf::kfunc`): an undefined global symbol with an
//! `R_BPF_64_32` relocation at the call, an extern `FUNC` in a `.ksyms`
//! `DATASEC` that is the last BTF type. libbpf resolves these itself.
//! aya 0.14 does not: it fails on the `.ksyms` `DATASEC` (no such ELF
//! section to size it by) and the kernel refuses extern `FUNC`s. So:
//! - [`vmlinux_ids`] finds each kfunc's BTF id in `/sys/kernel/btf/vmlinux`
//!   by name (a `FUNC` of that name); a kernel without it is refused,
//!   naming the kfunc ([`missing`]), never loaded with a guessed id;
//! - [`for_aya`] rewrites a copy of the object in place (same size): the
//!   `.ksyms` `DATASEC` dropped (its bytes moved to the string section's
//!   end as NULs, so no type id changes), extern `FUNC`s made static, and
//!   the sections aya cannot load (the collector's sleepable `syscall`
//!   program, which `super::gc_prog` loads) marked non-executable so aya
//!   skips them.
//!
//! The patch sites are the object's own relocations, not guessed.

use std::collections::BTreeMap;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget};

use super::EbpfError;

/// The refusal's code ([`missing`]).
pub const CODE: weir_compiler::diagnostics::Code = weir_compiler::diagnostics::Code::E0555;

/// Where the running kernel's BTF is.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const KIND_FUNC: u32 = 12;
const KIND_DATASEC: u32 = 15;

/// One BTF type: its kind, name offset, vlen (linkage for a `FUNC`), the
/// byte offset of its header in the type section, and its length.
#[derive(Clone, Copy, Debug)]
struct Type {
    kind: u32,
    name_off: u32,
    vlen: u32,
    at: usize,
    len: usize,
}

/// A parsed BTF blob (little- or native-endian: BTF is the host's).
struct Btf<'a> {
    data: &'a [u8],
    types_at: usize,
    types_len: usize,
    strs_at: usize,
    strs_len: usize,
}

fn u32_at(d: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(d.get(o..o + 4)?.try_into().ok()?))
}

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8]) -> Option<Btf<'a>> {
        if data.get(0..2)? != 0xeb9fu16.to_ne_bytes() {
            return None;
        }
        let hdr = u32_at(data, 4)? as usize;
        let b = Btf {
            data,
            types_at: hdr + u32_at(data, 8)? as usize,
            types_len: u32_at(data, 12)? as usize,
            strs_at: hdr + u32_at(data, 16)? as usize,
            strs_len: u32_at(data, 20)? as usize,
        };
        (b.types_at + b.types_len <= data.len() && b.strs_at + b.strs_len <= data.len())
            .then_some(b)
    }

    /// The string at `off` (empty when `off` is outside the strings).
    fn name(&self, off: u32) -> &'a [u8] {
        let s = self
            .data
            .get(self.strs_at + off as usize..self.strs_at + self.strs_len)
            .unwrap_or_default();
        &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())]
    }

    /// The types, id 1 first.
    fn types(&self) -> Option<Vec<Type>> {
        let mut out = Vec::new();
        let mut at = self.types_at;
        let end = self.types_at + self.types_len;
        while at < end {
            let info = u32_at(self.data, at + 4)?;
            let (kind, vlen) = ((info >> 24) & 0x1f, info & 0xffff);
            let extra = match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 15 | 19 => 12 * vlen as usize,
                6 | 13 => 8 * vlen as usize,
                2 | 7..=12 | 16 | 18 => 0,
                _ => return None,
            };
            out.push(Type {
                kind,
                name_off: u32_at(self.data, at)?,
                vlen,
                at,
                len: 12 + extra,
            });
            at += 12 + extra;
        }
        Some(out)
    }
}

/// The BTF ids of `names` (kernel `FUNC`s) in the BTF `vmlinux`; a name
/// the kernel has no `FUNC` of is absent from the result.
pub fn ids_in(vmlinux: &[u8], names: &[&str]) -> Result<BTreeMap<String, u32>, EbpfError> {
    let btf =
        Btf::parse(vmlinux).ok_or_else(|| EbpfError::Bundle(format!("{VMLINUX} is not BTF")))?;
    let types = btf
        .types()
        .ok_or_else(|| EbpfError::Bundle(format!("{VMLINUX}: unknown BTF kind")))?;
    let mut out = BTreeMap::new();
    for (i, t) in types.iter().enumerate() {
        if t.kind == KIND_FUNC {
            let n = btf.name(t.name_off);
            if let Some(name) = names.iter().find(|x| x.as_bytes() == n) {
                out.entry(name.to_string()).or_insert(i as u32 + 1);
            }
        }
    }
    Ok(out)
}

/// The running kernel's BTF ids of `names`, every one required:
/// [`missing`] names the first the kernel lacks.
pub fn vmlinux_ids(names: &[&str]) -> Result<BTreeMap<String, u32>, EbpfError> {
    let data = std::fs::read(VMLINUX).map_err(|e| EbpfError::Io {
        context: format!("reading {VMLINUX} (the kernel's BTF, to resolve kernel functions)"),
        source: e,
    })?;
    let ids = ids_in(&data, names)?;
    if let Some(n) = names.iter().find(|n| !ids.contains_key(**n)) {
        return Err(missing(n));
    }
    Ok(ids)
}

/// The refusal of a kernel that lacks the kfunc `name`.
pub fn missing(name: &str) -> EbpfError {
    EbpfError::Bundle(format!(
        "{}: this kernel has no kernel function `{name}` (no FUNC of that name in {VMLINUX}); \
         the bundle's conntrack collector needs it (BPF workqueues: Linux 6.10 or later). \
         Nothing was attached; compile with `--ct-table lru` for this node (`weir explain {}`)",
        CODE, CODE
    ))
}

/// A kfunc call site of the object: the byte offset of the `call` in its
/// section, and the kfunc's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSite {
    pub section: String,
    pub offset: u64,
    pub name: String,
}

/// The kfunc calls of an ELF object: every relocation against an
/// undefined symbol.
pub fn call_sites(object: &[u8]) -> Result<Vec<CallSite>, EbpfError> {
    let f = object::File::parse(object).map_err(|e| EbpfError::Bundle(e.to_string()))?;
    let mut out = Vec::new();
    for s in f.sections() {
        for (offset, r) in s.relocations() {
            let RelocationTarget::Symbol(i) = r.target() else {
                continue;
            };
            let sym = f
                .symbol_by_index(i)
                .map_err(|e| EbpfError::Bundle(e.to_string()))?;
            if sym.is_undefined() {
                out.push(CallSite {
                    section: s.name().unwrap_or_default().to_string(),
                    offset,
                    name: sym.name().unwrap_or_default().to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// `btf` with the `.ksyms` `DATASEC` dropped (when it is the last type)
/// and extern `FUNC`s made static, in place; the type ids stay.
pub fn strip_externs(btf: &mut [u8]) -> Result<(), EbpfError> {
    let bad = || EbpfError::Bundle("the object's .BTF does not parse".into());
    let (types, last_is_ksyms, strs_at, strs_len, types_at, types_len) = {
        let b = Btf::parse(btf).ok_or_else(bad)?;
        let types = b.types().ok_or_else(bad)?;
        let last = types.last().copied();
        let ksyms = last.is_some_and(|t| {
            t.kind == KIND_DATASEC
                && b.name(t.name_off) == weir_compiler::ebpf::kfunc::KSYMS_SEC.as_bytes()
        });
        (types, ksyms, b.strs_at, b.strs_len, b.types_at, b.types_len)
    };
    for t in &types {
        if t.kind == KIND_FUNC && t.vlen == weir_compiler::ebpf::kfunc::FUNC_EXTERN {
            let info = u32_at(btf, t.at + 4).ok_or_else(bad)? & !0xffff;
            btf[t.at + 4..t.at + 8].copy_from_slice(&info.to_ne_bytes());
        }
    }
    if !last_is_ksyms {
        return Ok(());
    }
    let cut = types.last().map(|t| t.len).unwrap_or(0);
    // Types, then strings: the strings move down by `cut`, NULs after.
    if strs_at != types_at + types_len {
        return Err(bad());
    }
    let strings = btf[strs_at..strs_at + strs_len].to_vec();
    let new_strs = strs_at - cut;
    btf[new_strs..new_strs + strs_len].copy_from_slice(&strings);
    btf[new_strs + strs_len..strs_at + strs_len].fill(0);
    let hdr = u32_at(btf, 4).ok_or_else(bad)? as usize;
    let set = |btf: &mut [u8], o: usize, v: usize| {
        btf[o..o + 4].copy_from_slice(&(v as u32).to_ne_bytes())
    };
    set(btf, 12, types_len - cut);
    set(btf, 16, new_strs - hdr);
    set(btf, 20, strs_len + cut);
    Ok(())
}

/// A copy of `object` that aya 0.14 loads: externs stripped from `.BTF`
/// ([`strip_externs`]) and each section in `skip` made non-executable.
pub fn for_aya(object: &[u8], skip: &[&str]) -> Result<Vec<u8>, EbpfError> {
    let f = object::File::parse(object).map_err(|e| EbpfError::Bundle(e.to_string()))?;
    let mut out = object.to_vec();
    if let Some(s) = f.section_by_name(".BTF") {
        if let Some((at, len)) = s.file_range() {
            strip_externs(&mut out[at as usize..(at + len) as usize])?;
        }
    }
    // ELF64 little-endian: e_shoff at 0x28, e_shentsize at 0x3a; sh_flags
    // at 8 in a section header.
    let shoff = u64::from_le_bytes(object[0x28..0x30].try_into().expect("8")) as usize;
    let shentsize = u16::from_le_bytes(object[0x3a..0x3c].try_into().expect("2")) as usize;
    for s in f.sections() {
        if skip.contains(&s.name().unwrap_or_default()) {
            let at = shoff + s.index().0 * shentsize + 8;
            let flags = u64::from_le_bytes(out[at..at + 8].try_into().expect("8"));
            let flags = flags & !u64::from(object::elf::SHF_EXECINSTR);
            out[at..at + 8].copy_from_slice(&flags.to_le_bytes());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object_with_collector() -> Vec<u8> {
        use weir_compiler::ebpf::layout::ct;
        let c = weir_compiler::ebpf::codegen::ct_gc::collector().unwrap();
        let obj = weir_compiler::ebpf::ObjectDef {
            programs: vec![c.program.clone()],
            maps: vec![
                weir_compiler::ebpf::MapDef::new(
                    weir_compiler::ebpf::layout::map::CT,
                    weir_compiler::ebpf::MapType::Hash,
                    ct::KEY_SIZE,
                    ct::VALUE_SIZE,
                    16,
                ),
                weir_compiler::ebpf::MapDef::new(
                    weir_compiler::ebpf::layout::map::CT4,
                    weir_compiler::ebpf::MapType::Hash,
                    ct::v4::KEY_SIZE,
                    ct::VALUE_SIZE,
                    16,
                ),
                c.map.clone(),
            ],
            license: "GPL".into(),
        };
        let extras = weir_compiler::ebpf::Extras {
            described: vec![c.program.name.clone()],
            subprograms: c.subprograms.clone(),
            func_refs: c.refs.clone(),
            typed: vec![c.typed.clone()],
        };
        weir_compiler::ebpf::write_object_with(&obj, &extras).unwrap()
    }

    #[test]
    fn ebpf_kfunc_call_sites_and_aya_copy() {
        let o = object_with_collector();
        let sites = call_sites(&o).unwrap();
        let names: Vec<&str> = sites.iter().map(|s| s.name.as_str()).collect();
        assert!(
            names.contains(&"bpf_wq_init") && names.contains(&"bpf_wq_start"),
            "{names:?}"
        );
        let a = for_aya(&o, &[weir_compiler::ebpf::layout::gc::SECTION]).unwrap();
        assert_eq!(a.len(), o.len());
        let f = object::File::parse(&*a).unwrap();
        let btf = f.section_by_name(".BTF").unwrap().data().unwrap();
        let b = Btf::parse(btf).unwrap();
        let types = b.types().unwrap();
        assert!(types
            .iter()
            .all(|t| !(t.kind == KIND_DATASEC && b.name(t.name_off) == b".ksyms")));
        assert!(types.iter().all(|t| !(t.kind == KIND_FUNC && t.vlen == 2)));
        // Type names still resolve after the strings moved.
        assert!(types
            .iter()
            .any(|t| t.kind == KIND_FUNC && b.name(t.name_off) == b"bpf_wq_start"));
        let sec = f
            .section_by_name(weir_compiler::ebpf::layout::gc::SECTION)
            .unwrap();
        assert_ne!(sec.kind(), object::SectionKind::Text);
    }
}
