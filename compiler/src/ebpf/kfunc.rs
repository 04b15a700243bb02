//! Calls to kernel functions (kfuncs) and how the object declares them.
//!
//! A kfunc is called with `call` whose `src_reg` is
//! `BPF_PSEUDO_KFUNC_CALL` and whose `imm` is the function's BTF type id
//! in the running kernel's vmlinux BTF — known only on the node. So the
//! object carries each call as an *extern*, the way clang writes
//! `extern int bpf_wq_start(...) __ksym;` and libbpf resolves it:
//! - an undefined global symbol named after the kfunc, and an
//!   `R_BPF_64_32` relocation against it at each call instruction;
//! - in `.BTF`, a `FUNC` of `BTF_FUNC_EXTERN` linkage with the kfunc's
//!   prototype (libbpf checks it against the kernel's: pointer to struct,
//!   pointer to void, integer, pointer to a callback prototype must match
//!   in kind and arity), listed in a `DATASEC ".ksyms"` — the last type of
//!   the section, so a loader that cannot resolve externs (aya 0.14) can
//!   drop it without renumbering (`weir_runtime::ebpf::kfunc` does, after
//!   patching each call's `imm` itself).
//!
//! `bpftool prog loadall` (libbpf) loads such an object as it is.
//!
//! The kfuncs the code generator calls are the [`KNOWN`] ones; each has
//! its prototype here, the one place it is written.

/// A parameter's type, as far as BTF compatibility checks look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    /// `struct bpf_wq *`.
    Wq,
    /// `void *`.
    VoidPtr,
    /// `unsigned int`.
    U32,
    /// `int (*)(void *map, int *key, void *value)`: a workqueue callback.
    WqCallback,
}

/// A kernel function the generated code calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kfunc {
    pub name: &'static str,
    /// Named parameters; every kfunc here returns `int`.
    pub params: &'static [(&'static str, Param)],
}

/// `int bpf_wq_init(struct bpf_wq *wq, void *p__map, unsigned int flags)`
/// (kernel ≥ 6.10).
pub const WQ_INIT: Kfunc = Kfunc {
    name: "bpf_wq_init",
    params: &[
        ("wq", Param::Wq),
        ("p__map", Param::VoidPtr),
        ("flags", Param::U32),
    ],
};

/// `int bpf_wq_set_callback_impl(struct bpf_wq *wq, int (callback_fn)(void
/// *map, int *key, void *value), unsigned int flags, void *aux__ign)`.
pub const WQ_SET_CALLBACK: Kfunc = Kfunc {
    name: "bpf_wq_set_callback_impl",
    params: &[
        ("wq", Param::Wq),
        ("callback_fn", Param::WqCallback),
        ("flags", Param::U32),
        ("aux__ign", Param::VoidPtr),
    ],
};

/// `int bpf_wq_start(struct bpf_wq *wq, unsigned int flags)`.
pub const WQ_START: Kfunc = Kfunc {
    name: "bpf_wq_start",
    params: &[("wq", Param::Wq), ("flags", Param::U32)],
};

/// Every kfunc the code generator may call.
pub const KNOWN: [Kfunc; 3] = [WQ_INIT, WQ_SET_CALLBACK, WQ_START];

/// The kfunc named `name`, if the code generator knows it.
pub fn by_name(name: &str) -> Option<Kfunc> {
    KNOWN.iter().copied().find(|k| k.name == name)
}

/// The name of the `DATASEC` listing the extern kfuncs (libbpf's).
pub const KSYMS_SEC: &str = ".ksyms";

/// `BTF_FUNC_EXTERN`.
pub const FUNC_EXTERN: u32 = 2;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::elf::{write_object_with, Extras, ObjectDef, ProgramDef};
    use crate::ebpf::{Asm, Op, Reg};
    use object::read::{Object as _, ObjectSection as _, ObjectSymbol as _};
    use object::{RelocationFlags, RelocationTarget};

    fn calling(names: &[&str]) -> ObjectDef {
        let mut a = Asm::new();
        for n in names {
            a.push(Op::CallKfunc { name: (*n).into() });
        }
        a.push(Op::mov64(Reg::R0, 0));
        a.push(Op::Exit);
        ObjectDef {
            programs: vec![ProgramDef {
                name: "p".into(),
                section: "classifier".into(),
                code: a.assemble().unwrap(),
            }],
            maps: vec![crate::ebpf::MapDef::new(
                "m",
                crate::ebpf::MapType::Array,
                4,
                4,
                1,
            )],
            license: "GPL".into(),
        }
    }

    /// Reads the `.BTF` types: (kind, name, vlen) per type id from 1.
    fn btf_types(btf: &[u8]) -> Vec<(u32, String, u32, u32)> {
        let u = |o: usize| u32::from_le_bytes(btf[o..o + 4].try_into().unwrap());
        let hdr = u(4) as usize;
        let (toff, tlen, soff) = (hdr + u(8) as usize, u(12) as usize, hdr + u(16) as usize);
        let name = |off: u32| {
            let s = &btf[soff + off as usize..];
            String::from_utf8(s[..s.iter().position(|&b| b == 0).unwrap()].to_vec()).unwrap()
        };
        let mut out = Vec::new();
        let mut at = toff;
        while at < toff + tlen {
            let info = u(at + 4);
            let (kind, vlen) = ((info >> 24) & 0x1f, info & 0xffff);
            out.push((kind, name(u(at)), vlen, u(at + 8)));
            at += 12
                + match kind {
                    1 | 14 => 4,
                    3 => 12,
                    4 | 5 | 15 => 12 * vlen as usize,
                    6 | 13 => 8 * vlen as usize,
                    _ => 0,
                };
        }
        out
    }

    #[test]
    fn ebpf_kfunc_calls_are_ksym_externs() {
        let obj = calling(&[WQ_START.name, WQ_INIT.name, WQ_START.name]);
        let extras = Extras {
            described: vec!["p".into()],
            ..Extras::default()
        };
        let bytes = write_object_with(&obj, &extras).unwrap();
        let f = object::File::parse(&*bytes).unwrap();
        let code = f.section_by_name("classifier").unwrap();
        let data = code.data().unwrap();
        // Each call: src_reg BPF_PSEUDO_KFUNC_CALL, imm 0, relocated
        // R_BPF_64_32 against an undefined global symbol of its name.
        let relocs: Vec<_> = code.relocations().collect();
        assert_eq!(relocs.len(), 3);
        for ((off, r), want) in relocs
            .iter()
            .zip(["bpf_wq_start", "bpf_wq_init", "bpf_wq_start"])
        {
            assert_eq!(
                r.flags(),
                RelocationFlags::Elf {
                    r_type: object::elf::R_BPF_64_32
                }
            );
            let RelocationTarget::Symbol(s) = r.target() else {
                panic!()
            };
            let sym = f.symbol_by_index(s).unwrap();
            assert_eq!(sym.name(), Ok(want));
            assert!(sym.is_undefined() && sym.is_global());
            let at = *off as usize;
            assert_eq!(data[at], 0x85, "call");
            assert_eq!(data[at + 1] >> 4, 2, "BPF_PSEUDO_KFUNC_CALL");
            assert_eq!(&data[at + 4..at + 8], &[0; 4]);
        }
        // One extern FUNC per kfunc, in a `.ksyms` DATASEC that is the
        // last type (a loader without extern support drops it).
        let types = btf_types(f.section_by_name(".BTF").unwrap().data().unwrap());
        let (kind, name, vlen, _) = types.last().unwrap().clone();
        assert_eq!((kind, name.as_str(), vlen), (15, KSYMS_SEC, 2));
        let externs: Vec<_> = types
            .iter()
            .filter(|t| t.0 == 12 && t.2 == FUNC_EXTERN)
            .map(|t| t.1.as_str())
            .collect();
        assert_eq!(externs, ["bpf_wq_start", "bpf_wq_init"]);
        // The prototype's arity is the kernel's (libbpf compares them).
        let start = types.iter().find(|t| t.1 == "bpf_wq_start").unwrap();
        assert_eq!(types[start.3 as usize - 1].2, 2);
    }

    #[test]
    fn ebpf_unknown_kfunc_is_refused() {
        let e = write_object_with(&calling(&["bpf_nope"]), &Extras::default()).unwrap_err();
        assert_eq!(
            e,
            crate::ebpf::ElfError::UnknownKfunc {
                function: "p".into(),
                kfunc: "bpf_nope".into()
            }
        );
    }
}
