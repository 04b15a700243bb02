//! Relocatable BPF ELF writer (the object aya and libbpf load).
//!
//! Layout, per `/work/shared/notes/toolchain-facts.md`:
//! - one `SHF_ALLOC|SHF_EXECINSTR` section per distinct program section name
//!   (`classifier`, `xdp`, …), programs of the same section concatenated in
//!   input order, each with a global `STT_FUNC` symbol of its exact size;
//! - `.rel<section>` (`SHT_REL`) with one `R_BPF_64_64` per map `ld_imm64`,
//!   against the map's symbol, addend 0;
//! - `license` (NUL-terminated);
//! - `.maps`: zeroed BTF map definitions, one global `STT_OBJECT` per map;
//! - `.BTF` describing them (see [`super::btf`]).
//!
//! Pure function of its input: identical input gives identical bytes.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use object::write::{Object, Relocation, Symbol, SymbolId, SymbolSection};
use object::{
    elf, Architecture, BinaryFormat, Endianness, FileFlags, RelocationFlags, SectionFlags,
    SectionKind, SymbolFlags, SymbolKind, SymbolScope,
};

use super::asm::Assembled;
use super::btf;
use super::maps::{MapDef, MapDefError};

/// One program of the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramDef {
    /// Function symbol name (the name loaders know the program by).
    pub name: String,
    /// ELF section, which selects the program type: `classifier`, `xdp`,
    /// `cgroup/connect4`, … (aya 0.14 rejects `tc`).
    pub section: String,
    pub code: Assembled,
}

/// Input of [`write_object`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectDef {
    pub programs: Vec<ProgramDef>,
    pub maps: Vec<MapDef>,
    /// License string without the NUL, e.g. `"GPL"` (GPL-only helpers need a
    /// GPL-compatible license).
    pub license: String,
}

/// Errors from [`write_object`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElfError {
    NoPrograms,
    EmptyProgram {
        program: String,
    },
    DuplicateSymbol {
        name: String,
    },
    InvalidSectionName {
        section: String,
    },
    InvalidProgramName {
        program: String,
    },
    /// A program references a map not in [`ObjectDef::maps`].
    UnknownMap {
        program: String,
        map: String,
    },
    InvalidMap(MapDefError),
    InvalidLicense,
    /// A function calls a kernel function [`super::kfunc`] does not know.
    UnknownKfunc {
        function: String,
        kfunc: String,
    },
    /// The `object` crate refused to write (should not happen).
    Write(String),
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfError::NoPrograms => write!(f, "BPF object has no programs"),
            ElfError::EmptyProgram { program } => write!(f, "program `{program}` is empty"),
            ElfError::DuplicateSymbol { name } => {
                write!(
                    f,
                    "`{name}` is defined twice (programs and maps share one symbol table)"
                )
            }
            ElfError::InvalidSectionName { section } => {
                write!(f, "invalid program section name `{section}`")
            }
            ElfError::InvalidProgramName { program } => {
                write!(f, "program name `{program}` must be a C identifier")
            }
            ElfError::UnknownMap { program, map } => {
                write!(f, "program `{program}` references unknown map `{map}`")
            }
            ElfError::InvalidMap(e) => e.fmt(f),
            ElfError::InvalidLicense => write!(f, "license must be non-empty and contain no NUL"),
            ElfError::UnknownKfunc { function, kfunc } => {
                write!(f, "`{function}` calls unknown kernel function `{kfunc}`")
            }
            ElfError::Write(e) => write!(f, "writing ELF: {e}"),
        }
    }
}

impl std::error::Error for ElfError {}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn validate(obj: &ObjectDef) -> Result<(), ElfError> {
    if obj.programs.is_empty() {
        return Err(ElfError::NoPrograms);
    }
    if obj.license.is_empty() || obj.license.contains('\0') {
        return Err(ElfError::InvalidLicense);
    }
    let mut names = HashSet::new();
    for p in &obj.programs {
        if !is_ident(&p.name) {
            return Err(ElfError::InvalidProgramName {
                program: p.name.clone(),
            });
        }
        let reserved = p.section.starts_with('.') || p.section == "license" || p.section == "maps";
        if p.section.is_empty() || reserved || p.section.contains('\0') {
            return Err(ElfError::InvalidSectionName {
                section: p.section.clone(),
            });
        }
        if p.code.is_empty() {
            return Err(ElfError::EmptyProgram {
                program: p.name.clone(),
            });
        }
        if !names.insert(p.name.as_str()) {
            return Err(ElfError::DuplicateSymbol {
                name: p.name.clone(),
            });
        }
    }
    for m in &obj.maps {
        m.validate().map_err(ElfError::InvalidMap)?;
        if !names.insert(m.name.as_str()) {
            return Err(ElfError::DuplicateSymbol {
                name: m.name.clone(),
            });
        }
    }
    let maps: HashSet<&str> = obj.maps.iter().map(|m| m.name.as_str()).collect();
    for p in &obj.programs {
        for r in &p.code.map_relocs {
            if !maps.contains(r.map.as_str()) {
                return Err(ElfError::UnknownMap {
                    program: p.name.clone(),
                    map: r.map.clone(),
                });
            }
        }
    }
    Ok(())
}

fn elf_flags(sh_flags: u32) -> SectionFlags {
    SectionFlags::Elf {
        sh_flags: u64::from(sh_flags),
    }
}

/// Writes the relocatable ELF object.
pub fn write_object(obj: &ObjectDef) -> Result<Vec<u8>, ElfError> {
    write_object_with(obj, &Extras::default())
}

/// A static subprogram (a callback) of the object, in `.text`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subprogram {
    pub name: String,
    /// Its pointer arguments (for its BTF prototype).
    pub args: u32,
    pub code: Assembled,
}

/// A callback reference: the `ld_imm64` at `slot` of function `from` (a
/// program or a subprogram) loads the address of subprogram `to`
/// (`src_reg = BPF_PSEUDO_FUNC`, relocated `R_BPF_64_64` against `.text`
/// with the callee's byte offset as its immediate, as clang writes it for
/// a static function).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuncRef {
    pub from: String,
    pub slot: usize,
    pub to: String,
}

/// What an object with callbacks adds to [`ObjectDef`] (see
/// [`super::btf_ext`]): subprograms, callback references, typed map values,
/// and the programs that get BTF `func_info` (all subprograms get it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extras {
    pub subprograms: Vec<Subprogram>,
    pub func_refs: Vec<FuncRef>,
    pub typed: Vec<super::btf_ext::TypedMap>,
    /// Programs (by name) described in `func_info`, with their argument
    /// count (one: the context).
    pub described: Vec<String>,
}

/// `BPF_PSEUDO_FUNC`
const PSEUDO_FUNC: u64 = 4;

/// Writes the relocatable ELF object with `extras`.
pub fn write_object_with(obj: &ObjectDef, extras: &Extras) -> Result<Vec<u8>, ElfError> {
    elf_object(obj, extras)?
        .write()
        .map_err(|e| ElfError::Write(e.to_string()))
}

/// Why [`write_object_to`] failed: the object, or the writer.
#[derive(Debug)]
pub enum WriteError {
    Elf(ElfError),
    Io(std::io::Error),
}

/// [`write_object_with`] into a writer (a bundle's file as it is made),
/// the same bytes.
pub fn write_object_to(
    obj: &ObjectDef,
    extras: &Extras,
    out: &mut dyn std::io::Write,
) -> Result<(), WriteError> {
    let o = elf_object(obj, extras).map_err(WriteError::Elf)?;
    o.write_stream(out)
        .map_err(|e| match e.downcast::<std::io::Error>() {
            Ok(io) => WriteError::Io(*io),
            Err(e) => WriteError::Elf(ElfError::Write(e.to_string())),
        })
}

/// The object of [`write_object_with`], before it is written.
fn elf_object(obj: &ObjectDef, extras: &Extras) -> Result<Object<'static>, ElfError> {
    validate(obj)?;
    let sub_off: BTreeMap<&str, u64> = {
        let mut at = 0u64;
        extras
            .subprograms
            .iter()
            .map(|p| {
                let o = at;
                at += 8 * p.code.len() as u64;
                (p.name.as_str(), o)
            })
            .collect()
    };
    let patched = |name: &str, code: &Assembled| -> Result<Vec<u8>, ElfError> {
        let mut bytes = code.to_bytes();
        for r in extras.func_refs.iter().filter(|r| r.from == name) {
            let Some(&off) = sub_off.get(r.to.as_str()) else {
                return Err(ElfError::UnknownMap {
                    program: name.into(),
                    map: r.to.clone(),
                });
            };
            let at = 8 * r.slot;
            let mut w = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
            w = (w & !(0xf << 12) & 0xffff_ffff) | (PSEUDO_FUNC << 12);
            w |= off << 32;
            bytes[at..at + 8].copy_from_slice(&w.to_le_bytes());
        }
        Ok(bytes)
    };
    let mut funcs = Vec::new();
    let kfuncs = kfuncs_of(obj, extras)?;

    let mut o = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    o.flags = FileFlags::Elf {
        os_abi: elf::ELFOSABI_NONE,
        abi_version: 0,
        e_flags: 0,
    };

    // Program sections, in order of first appearance.
    let mut sections: Vec<(&str, Vec<&ProgramDef>)> = Vec::new();
    for p in &obj.programs {
        match sections.iter_mut().find(|(s, _)| *s == p.section) {
            Some((_, v)) => v.push(p),
            None => sections.push((&p.section, vec![p])),
        }
    }

    // Maps first so that program relocations can reference their symbols.
    let mut map_syms: BTreeMap<&str, SymbolId> = BTreeMap::new();
    if !obj.maps.is_empty() {
        let maps_sec = o.add_section(Vec::new(), b".maps".to_vec(), SectionKind::Data);
        let mut offset = 0u64;
        for m in &obj.maps {
            let size = u64::from(btf::map_def_size(m));
            let sym = o.add_symbol(Symbol {
                name: m.name.as_bytes().to_vec(),
                value: offset,
                size,
                kind: SymbolKind::Data,
                scope: SymbolScope::Dynamic,
                weak: false,
                section: SymbolSection::Section(maps_sec),
                flags: SymbolFlags::None,
            });
            map_syms.insert(&m.name, sym);
            offset += size;
        }
        let s = o.section_mut(maps_sec);
        s.set_data(vec![0u8; offset as usize], 8);
        s.flags = elf_flags(elf::SHF_ALLOC | elf::SHF_WRITE);
    }

    // The extern kfuncs: an undefined global symbol each
    // (`super::kfunc`).
    let kfunc_syms: BTreeMap<&str, SymbolId> = kfuncs
        .iter()
        .map(|k| {
            let sym = o.add_symbol(Symbol {
                name: k.name.as_bytes().to_vec(),
                value: 0,
                size: 0,
                kind: SymbolKind::Unknown,
                scope: SymbolScope::Dynamic,
                weak: false,
                section: SymbolSection::Undefined,
                flags: SymbolFlags::None,
            });
            (k.name, sym)
        })
        .collect();

    // `.text`: the static subprograms, and the references to them.
    let mut text_relocs: Vec<(object::write::SectionId, u64)> = Vec::new();
    let mut text_sym = None;
    if !extras.subprograms.is_empty() {
        let id = o.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
        o.section_mut(id).flags = elf_flags(elf::SHF_ALLOC | elf::SHF_EXECINSTR);
        let mut data = Vec::new();
        let mut relocs = Vec::new();
        for p in &extras.subprograms {
            let base = data.len() as u64;
            let bytes = patched(&p.name, &p.code)?;
            o.add_symbol(function_symbol(
                &p.name,
                id,
                base,
                bytes.len(),
                SymbolScope::Compilation,
            ));
            funcs.push(super::btf_ext::FuncInfo {
                name: p.name.clone(),
                section: ".text".into(),
                offset: base as u32,
                global: false,
                args: p.args,
            });
            data.extend_from_slice(&bytes);
            relocs.extend(map_relocations(base, &p.code, &map_syms));
            relocs.extend(kfunc_relocations(base, &p.code, &kfunc_syms));
            func_relocs(&mut text_relocs, id, base, &p.name, extras);
        }
        o.section_mut(id).set_data(data, 8);
        for r in relocs {
            o.add_relocation(id, r)
                .map_err(|e| ElfError::Write(e.to_string()))?;
        }
        text_sym = Some(o.section_symbol(id));
    }

    for (name, progs) in &sections {
        let id = o.add_section(Vec::new(), name.as_bytes().to_vec(), SectionKind::Text);
        o.section_mut(id).flags = elf_flags(elf::SHF_ALLOC | elf::SHF_EXECINSTR);
        // At its size: the stages of 100,000 one-peer rules are 19 MB of
        // code, and a doubling vector held up to twice that (issue 21).
        let mut data = Vec::with_capacity(progs.iter().map(|p| 8 * p.code.len()).sum());
        let mut relocs = Vec::new();
        for p in progs {
            let base = data.len() as u64;
            let bytes = patched(&p.name, &p.code)?;
            if extras.described.contains(&p.name) {
                funcs.push(super::btf_ext::FuncInfo {
                    name: p.name.clone(),
                    section: p.section.clone(),
                    offset: base as u32,
                    global: true,
                    args: 1,
                });
            }
            func_relocs(&mut text_relocs, id, base, &p.name, extras);
            o.add_symbol(function_symbol(
                &p.name,
                id,
                base,
                bytes.len(),
                SymbolScope::Dynamic,
            ));
            data.extend_from_slice(&bytes);
            relocs.extend(map_relocations(base, &p.code, &map_syms));
            relocs.extend(kfunc_relocations(base, &p.code, &kfunc_syms));
        }
        o.section_mut(id).set_data(data, 8);
        for r in relocs {
            o.add_relocation(id, r)
                .map_err(|e| ElfError::Write(e.to_string()))?;
        }
    }

    for (sec, offset) in text_relocs {
        let r = Relocation {
            offset,
            symbol: text_sym.ok_or_else(|| ElfError::Write("no .text".into()))?,
            addend: 0,
            flags: RelocationFlags::Elf {
                r_type: elf::R_BPF_64_64,
            },
        };
        o.add_relocation(sec, r)
            .map_err(|e| ElfError::Write(e.to_string()))?;
    }

    let license = o.add_section(Vec::new(), b"license".to_vec(), SectionKind::Data);
    let mut lic = obj.license.as_bytes().to_vec();
    lic.push(0);
    let s = o.section_mut(license);
    s.set_data(lic, 1);
    s.flags = elf_flags(elf::SHF_ALLOC | elf::SHF_WRITE);

    if !obj.maps.is_empty() {
        let btf_sec = o.add_section(Vec::new(), b".BTF".to_vec(), SectionKind::Other);
        let s = o.section_mut(btf_sec);
        if extras == &Extras::default() {
            s.set_data(btf::maps_btf(&obj.maps), 4);
            s.flags = elf_flags(0);
        } else {
            let (btf, ext) = super::btf_ext::object_btf(&obj.maps, &extras.typed, &funcs, &kfuncs);
            s.set_data(btf, 4);
            s.flags = elf_flags(0);
            let ext_sec = o.add_section(Vec::new(), b".BTF.ext".to_vec(), SectionKind::Other);
            let s = o.section_mut(ext_sec);
            s.set_data(ext, 4);
            s.flags = elf_flags(0);
        }
    }

    Ok(o)
}

/// The `STT_FUNC` symbol of a function (`len` bytes at `base` of section
/// `id`): programs are global (`Dynamic`), the callbacks in `.text`
/// local (`Compilation`).
fn function_symbol(
    name: &str,
    id: object::write::SectionId,
    base: u64,
    len: usize,
    scope: SymbolScope,
) -> Symbol {
    Symbol {
        name: name.as_bytes().to_vec(),
        value: base,
        size: len as u64,
        kind: SymbolKind::Text,
        scope,
        weak: false,
        section: SymbolSection::Section(id),
        flags: SymbolFlags::None,
    }
}

/// The `R_BPF_64_64` relocations of a program's map references (`code`
/// at byte `base` of its section): each `ld_imm64` against its map's
/// symbol, addend 0 (BPF uses REL).
fn map_relocations<'a>(
    base: u64,
    code: &'a Assembled,
    map_syms: &'a BTreeMap<&str, SymbolId>,
) -> impl Iterator<Item = Relocation> + 'a {
    let sites = code.map_relocs.iter().map(|r| (r.slot, r.map.as_str()));
    relocations(base, sites, map_syms, elf::R_BPF_64_64)
}

/// The kfuncs the object's functions call, in order of first call.
fn kfuncs_of(obj: &ObjectDef, extras: &Extras) -> Result<Vec<super::kfunc::Kfunc>, ElfError> {
    let mut out: Vec<super::kfunc::Kfunc> = Vec::new();
    let functions = obj
        .programs
        .iter()
        .map(|p| (&p.name, &p.code))
        .chain(extras.subprograms.iter().map(|p| (&p.name, &p.code)));
    for (name, code) in functions {
        for r in &code.kfunc_relocs {
            let k = super::kfunc::by_name(&r.name).ok_or_else(|| ElfError::UnknownKfunc {
                function: name.clone(),
                kfunc: r.name.clone(),
            })?;
            if !out.contains(&k) {
                out.push(k);
            }
        }
    }
    Ok(out)
}

/// The `R_BPF_64_32` relocations of a function's kfunc calls (`code` at
/// byte `base` of its section), each against its extern symbol, as
/// clang writes a call to an `extern … __ksym` function.
fn kfunc_relocations<'a>(
    base: u64,
    code: &'a Assembled,
    syms: &'a BTreeMap<&str, SymbolId>,
) -> impl Iterator<Item = Relocation> + 'a {
    let sites = code.kfunc_relocs.iter().map(|r| (r.slot, r.name.as_str()));
    relocations(base, sites, syms, elf::R_BPF_64_32)
}

/// One relocation of type `r_type` per (instruction slot, symbol name)
/// of a function at byte `base` of its section, addend 0 (BPF uses REL:
/// the addend is in the instruction).
fn relocations<'a>(
    base: u64,
    sites: impl Iterator<Item = (usize, &'a str)> + 'a,
    syms: &'a BTreeMap<&str, SymbolId>,
    r_type: u32,
) -> impl Iterator<Item = Relocation> + 'a {
    sites.map(move |(slot, name)| Relocation {
        offset: base + 8 * slot as u64,
        symbol: syms[name],
        addend: 0,
        flags: RelocationFlags::Elf { r_type },
    })
}

/// Where `from`'s callback references are (section, byte offset; `from`
/// at `base` of `sec`): each gets an `R_BPF_64_64` against `.text`.
fn func_relocs(
    out: &mut Vec<(object::write::SectionId, u64)>,
    sec: object::write::SectionId,
    base: u64,
    from: &str,
    extras: &Extras,
) {
    for r in extras.func_refs.iter().filter(|r| r.from == from) {
        out.push((sec, base + 8 * r.slot as u64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::asm::Asm;
    use crate::ebpf::insn::{Op, Reg};
    use crate::ebpf::maps::{MapType, BPF_F_NO_PREALLOC};
    use object::read::{Object as _, ObjectSection as _, ObjectSymbol as _};
    use object::RelocationTarget;

    fn code(map: Option<&str>) -> Assembled {
        let mut a = Asm::new();
        if let Some(m) = map {
            a.push(Op::ld_map_fd(Reg::R1, m));
        }
        a.push(Op::mov64(Reg::R0, 0));
        a.push(Op::Exit);
        a.assemble().unwrap()
    }

    fn sample() -> ObjectDef {
        ObjectDef {
            programs: vec![
                ProgramDef {
                    name: "first".into(),
                    section: "classifier".into(),
                    code: code(None),
                },
                ProgramDef {
                    name: "second".into(),
                    section: "classifier".into(),
                    code: code(Some("lpm")),
                },
            ],
            maps: vec![
                MapDef::new("h", MapType::Hash, 4, 4, 16),
                MapDef::lpm_trie("lpm", 4, 4, 16),
            ],
            license: "GPL".into(),
        }
    }

    #[test]
    fn ebpf_elf_layout() {
        let bytes = write_object(&sample()).unwrap();
        assert_eq!(bytes, write_object(&sample()).unwrap(), "deterministic");
        let f = object::File::parse(&*bytes).unwrap();
        assert_eq!(f.architecture(), Architecture::Bpf);
        let sym = |n: &str| f.symbols().find(|s| s.name() == Ok(n)).unwrap();
        let first = sym("first");
        let second = sym("second");
        assert_eq!((first.address(), first.size()), (0, 16));
        assert_eq!((second.address(), second.size()), (16, 32));
        assert_eq!(first.kind(), SymbolKind::Text);
        assert!(first.is_global());
        let lpm = sym("lpm");
        assert_eq!(
            (lpm.address(), lpm.size(), lpm.kind()),
            (40, 40, SymbolKind::Data)
        );

        let text = f.section_by_name("classifier").unwrap();
        let relocs: Vec<_> = text.relocations().collect();
        assert_eq!(relocs.len(), 1);
        let (off, r) = &relocs[0];
        assert_eq!(*off, 16);
        assert_eq!(
            r.flags(),
            RelocationFlags::Elf {
                r_type: elf::R_BPF_64_64
            }
        );
        assert_eq!(r.target(), RelocationTarget::Symbol(lpm.index()));
        assert_eq!(
            f.section_by_name(".relclassifier").unwrap().kind(),
            SectionKind::Metadata
        );
        assert_eq!(
            f.section_by_name("license").unwrap().data().unwrap(),
            b"GPL\0"
        );
        assert_eq!(f.section_by_name(".maps").unwrap().size(), 80);
        let btf = f.section_by_name(".BTF").unwrap();
        assert_eq!(&btf.data().unwrap()[..2], &[0x9f, 0xeb]);
    }

    #[test]
    fn ebpf_elf_errors() {
        let mut o = sample();
        o.programs[1].code = code(Some("nope"));
        assert_eq!(
            write_object(&o),
            Err(ElfError::UnknownMap {
                program: "second".into(),
                map: "nope".into()
            })
        );
        let mut o = sample();
        o.maps[1].map_flags &= !BPF_F_NO_PREALLOC;
        assert!(matches!(write_object(&o), Err(ElfError::InvalidMap(_))));
        let mut o = sample();
        o.maps[0].name = "first".into();
        assert!(matches!(
            write_object(&o),
            Err(ElfError::DuplicateSymbol { .. })
        ));
        let mut o = sample();
        o.programs[0].section = ".text".into();
        assert!(matches!(
            write_object(&o),
            Err(ElfError::InvalidSectionName { .. })
        ));
    }

    #[test]
    fn ebpf_elf_callbacks_in_text_with_func_info() {
        let gc = crate::ebpf::codegen::ct_gc::collector().unwrap();
        let mut obj = sample();
        obj.maps
            .push(MapDef::new("weir_ct", MapType::Hash, 40, 32, 16));
        obj.maps
            .push(MapDef::new("weir_ct4", MapType::Hash, 16, 32, 16));
        obj.maps.push(gc.map.clone());
        obj.programs.push(gc.program.clone());
        let extras = Extras {
            described: vec![gc.program.name.clone()],
            subprograms: gc.subprograms.clone(),
            func_refs: gc.refs.clone(),
            typed: vec![gc.typed.clone()],
        };
        let bytes = write_object_with(&obj, &extras).unwrap();
        assert_eq!(bytes, write_object_with(&obj, &extras).unwrap());
        let f = object::File::parse(&*bytes).unwrap();
        let text = f.section_by_name(".text").unwrap();
        // Every callback reference: relocated against .text, src_reg
        // BPF_PSEUDO_FUNC, the callee's byte offset as immediate.
        let relocs: Vec<_> = text
            .relocations()
            .chain(
                f.section_by_name(&gc.program.section)
                    .unwrap()
                    .relocations(),
            )
            .filter(|(_, r)| {
                matches!(r.target(), RelocationTarget::Symbol(s)
                    if f.symbol_by_index(s).unwrap().kind() == SymbolKind::Section)
            })
            .collect();
        assert_eq!(relocs.len(), gc.refs.len());
        let sub = |n: &str| f.symbols().find(|s| s.name() == Ok(n)).unwrap();
        assert!(sub(gc.subprograms[0].name.as_str()).is_local());
        assert_eq!(
            sub(gc.subprograms[1].name.as_str()).address(),
            8 * gc.subprograms[0].code.len() as u64
        );
        let prog = sub(gc.program.name.as_str());
        let data = f
            .section_by_name(&gc.program.section)
            .unwrap()
            .data()
            .unwrap();
        for r in &gc.refs {
            if r.from != gc.program.name {
                continue;
            }
            let at = prog.address() as usize + 8 * r.slot;
            assert_eq!(data[at], 0x18, "ld_imm64");
            assert_eq!(data[at + 1] >> 4, 4, "BPF_PSEUDO_FUNC");
            let imm = u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap());
            assert_eq!(u64::from(imm), sub(&r.to).address());
        }
        let ext = f.section_by_name(".BTF.ext").unwrap().data().unwrap();
        assert_eq!(&ext[..2], &[0x9f, 0xeb]);
        // func_info: rec_size 8, two sections (the program's: 1, .text:
        // one per callback).
        let info = &ext[32..];
        assert_eq!(u32::from_le_bytes(info[..4].try_into().unwrap()), 8);
        let n = gc.subprograms.len();
        assert_eq!(info.len(), 4 + (8 + 8) + (8 + n * 8));
    }
}
