//! eBPF code emission: an assembler and a relocatable ELF writer.
//!
//! The compiler emits BPF instructions itself (no clang, no C) and writes one
//! relocatable ELF object that both aya 0.14 and libbpf (`bpftool prog
//! loadall`) load. Everything here is a pure function producing bytes: no IO,
//! no syscalls; the `weir-runtime` crate loads the result.
//!
//! - [`insn`]: instructions as values ([`Op`], [`Insn`]), registers,
//!   labels, provenance ([`Origin`]), helper ids.
//! - [`asm`]: the builder ([`Asm`]), label resolution, encoding and a
//!   deterministic listing ([`Assembled`]).
//! - [`maps`]: map definitions ([`MapDef`], [`MapType`]).
//! - [`btf`]: the `.BTF` section for BTF-defined maps.
//! - [`btf_ext`]: typed map values, function types and `.BTF.ext`
//!   `func_info`, for objects with callbacks (the conntrack collector).
//! - [`elf`]: the object writer ([`write_object`]).
//! - [`kfunc`]: the kernel functions the code calls (a BPF workqueue's),
//!   declared as externs the loader resolves against the node's kernel.
//! - [`state_tables`]: the sizes of the per-flow tables (conntrack,
//!   translation), a compile option recorded in the manifest.
//!
//! ```
//! use weir_compiler::ebpf::*;
//!
//! let mut a = Asm::new();
//! a.set_origin(Origin(1), Some("default allow"));
//! a.push(Op::mov64(Reg::R0, 0)); // TC_ACT_OK
//! a.push(Op::Exit);
//! let code = a.assemble().unwrap();
//! let bytes = write_object(&ObjectDef {
//!     programs: vec![ProgramDef { name: "allow_all".into(), section: "classifier".into(), code }],
//!     maps: vec![],
//!     license: "GPL".into(),
//! })
//! .unwrap();
//! assert_eq!(&bytes[..4], b"\x7fELF");
//! ```

pub mod asm;
pub mod btf;
pub mod btf_ext;
pub mod codegen;
pub mod elf;
pub mod insn;
pub mod kfunc;
pub mod layout;
pub mod maps;
pub mod service;
pub mod state_tables;

pub use asm::{Asm, AsmError, AsmOptions, Assembled, KfuncReloc, MapReloc};
pub use elf::{
    write_object, write_object_with, ElfError, Extras, FuncRef, ObjectDef, ProgramDef, Subprogram,
};
pub use insn::{
    helper, AluOp, ByteOrder, Insn, JmpCond, Label, Op, Operand, Origin, Reg, Size, Width,
};
pub use maps::{MapDef, MapDefError, MapType, Pinning, BPF_F_NO_PREALLOC};
