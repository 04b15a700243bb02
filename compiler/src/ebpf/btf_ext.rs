//! What an object with BPF-to-BPF callbacks needs beyond [`super::btf`]'s
//! map BTF: typed map values (a value holding a `struct bpf_timer`), the
//! `FUNC` / `FUNC_PROTO` types of its functions, and the `.BTF.ext`
//! section's `func_info` that points each function at its type.
//!
//! Why: the kernel refuses a callback reference (`ld_imm64` with
//! `src_reg = BPF_PSEUDO_FUNC`, the argument of `bpf_timer_set_callback`
//! and `bpf_for_each_map_elem`) in a program without BTF `func_info`
//! ("missing btf func_info"), and a callback whose `FUNC` is not
//! static; it finds a map value's timer only through the map's BTF value
//! type (a member whose struct is named `bpf_timer`, 16 bytes, 8-aligned).
//! Both aya (`aya-obj`) and libbpf read these from the object, as clang
//! writes them.
//!
//! `.BTF.ext` layout (little-endian): header `{ magic u16 = 0xeb9f,
//! version u8 = 1, flags u8, hdr_len u32 = 32, func_info_off u32,
//! func_info_len u32, line_info_off u32, line_info_len u32,
//! core_relo_off u32, core_relo_len u32 }`, then `func_info`: `rec_size
//! u32 = 8`, then per ELF section `{ sec_name_off u32 (in .BTF's
//! strings), num_info u32, { insn_off u32 (bytes), type_id u32 } ×
//! num_info }`. No line info, no CO-RE relocations.

use std::collections::BTreeMap;

use super::btf::{maps_btf_into, BtfBuilder, TypeId};
use super::kfunc::{Kfunc, Param};
use super::maps::MapDef;

/// One field of a typed map value (8-aligned, in order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    U64,
    /// `struct bpf_timer` (16 bytes).
    Timer,
    /// `struct bpf_wq` (16 bytes): a BPF workqueue (kernel >= 6.10).
    Wq,
}

impl Field {
    pub const fn size(self) -> u32 {
        match self {
            Field::U64 => 8,
            Field::Timer | Field::Wq => 16,
        }
    }
}

/// A map whose BTF names its key (`u32`) and value (a struct of
/// [`Field`]s) types.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TypedMap {
    pub map: String,
    /// The value struct's name.
    pub value_name: String,
    pub fields: Vec<(String, Field)>,
}

impl TypedMap {
    pub fn value_size(&self) -> u32 {
        self.fields.iter().map(|(_, f)| f.size()).sum()
    }
}

/// A function of the object that gets a `func_info` record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FuncInfo {
    pub name: String,
    /// ELF section holding it (`classifier`, `.text`).
    pub section: String,
    /// Byte offset in the section.
    pub offset: u32,
    /// Global (a program) or static (a subprogram / callback).
    pub global: bool,
    /// Pointer arguments.
    pub args: u32,
}

/// The `.BTF` and `.BTF.ext` sections for `maps`, `typed`, `funcs` and
/// the extern `kfuncs` the code calls (`super::kfunc`: their `FUNC`s and
/// the `.ksyms` `DATASEC`, which is the last type).
pub fn object_btf(
    maps: &[MapDef],
    typed: &[TypedMap],
    funcs: &[FuncInfo],
    kfuncs: &[Kfunc],
) -> (Vec<u8>, Vec<u8>) {
    let mut b = BtfBuilder::new();
    let mut ids = BTreeMap::new();
    let mut kfunc_ids = Vec::new();
    if !typed.is_empty() || !kfuncs.is_empty() {
        let u32_t = b.int("unsigned int", 4, false);
        let u64_t = b.int("unsigned long long", 8, false);
        let int = b.int("int", 4, true);
        let pair = b.array(u64_t, int, 2);
        let timer = b.structure("bpf_timer", 16, &[("__opaque", pair, 0)]);
        // `struct bpf_wq` only where something names it (objects without
        // a workqueue keep their bytes).
        let needs_wq = !kfuncs.is_empty()
            || typed
                .iter()
                .any(|t| t.fields.iter().any(|(_, f)| *f == Field::Wq));
        let wq = if needs_wq {
            b.structure("bpf_wq", 16, &[("__opaque", pair, 0)])
        } else {
            0
        };
        if !kfuncs.is_empty() {
            let void_ptr = b.ptr(0);
            let wq_ptr = b.ptr(wq);
            let int_ptr = b.ptr(int);
            let cb = b.func_proto(
                int,
                &[("map", void_ptr), ("key", int_ptr), ("value", void_ptr)],
            );
            let cb_ptr = b.ptr(cb);
            for k in kfuncs {
                let params: Vec<(&str, TypeId)> = k
                    .params
                    .iter()
                    .map(|(n, p)| {
                        let ty = match p {
                            Param::Wq => wq_ptr,
                            Param::VoidPtr => void_ptr,
                            Param::U32 => u32_t,
                            Param::WqCallback => cb_ptr,
                        };
                        (*n, ty)
                    })
                    .collect();
                let proto = b.func_proto(int, &params);
                kfunc_ids.push(b.func_linkage(k.name, proto, super::kfunc::FUNC_EXTERN));
            }
        }
        for t in typed {
            let mut off = 0;
            let members: Vec<(&str, TypeId, u32)> = t
                .fields
                .iter()
                .map(|(n, f)| {
                    let ty = match f {
                        Field::U64 => u64_t,
                        Field::Timer => timer,
                        Field::Wq => wq,
                    };
                    let m = (n.as_str(), ty, off * 8);
                    off += f.size();
                    m
                })
                .collect();
            let v = b.structure(&t.value_name, t.value_size(), &members);
            ids.insert(t.map.clone(), (u32_t, v));
        }
    }
    maps_btf_into(&mut b, maps, &ids);
    let mut by_section: BTreeMap<&str, Vec<(u32, TypeId)>> = BTreeMap::new();
    if !funcs.is_empty() {
        let int = b.int("int", 4, true);
        let void_ptr = b.ptr(0);
        for f in funcs {
            let names = ["a", "b", "c", "d", "e"];
            let params: Vec<(&str, TypeId)> = names[..f.args as usize]
                .iter()
                .map(|n| (*n, void_ptr))
                .collect();
            let proto = b.func_proto(int, &params);
            let id = b.func(&f.name, proto, f.global);
            by_section
                .entry(f.section.as_str())
                .or_default()
                .push((f.offset, id));
        }
    }
    // Last: a loader without extern support drops it (module docs of
    // `super::kfunc`).
    if !kfunc_ids.is_empty() {
        let entries: Vec<(TypeId, u32, u32)> = kfunc_ids.iter().map(|&id| (id, 0, 0)).collect();
        b.datasec(super::kfunc::KSYMS_SEC, 0, &entries);
    }
    let mut info = Vec::new();
    info.extend_from_slice(&8u32.to_le_bytes());
    for (sec, recs) in &mut by_section {
        recs.sort();
        info.extend_from_slice(&b.string(sec).to_le_bytes());
        info.extend_from_slice(&(recs.len() as u32).to_le_bytes());
        for (off, id) in recs.iter() {
            info.extend_from_slice(&off.to_le_bytes());
            info.extend_from_slice(&id.to_le_bytes());
        }
    }
    let mut ext = Vec::new();
    ext.extend_from_slice(&0xeb9fu16.to_le_bytes());
    ext.push(1);
    ext.push(0);
    ext.extend_from_slice(&32u32.to_le_bytes());
    for v in [
        0,
        info.len() as u32,
        info.len() as u32,
        0,
        info.len() as u32,
        0,
    ] {
        ext.extend_from_slice(&v.to_le_bytes());
    }
    ext.extend_from_slice(&info);
    (b.finish(), ext)
}
