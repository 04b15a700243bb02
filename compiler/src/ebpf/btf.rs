//! A minimal BTF (`.BTF` section) encoder, and the BTF that describes
//! BTF-defined maps.
//!
//! Layout (little-endian): `struct btf_header` (24 bytes), the type section,
//! the string section. Type ids start at 1 (0 is `void`).
//!
//! Maps are described the way clang encodes libbpf's
//! `struct { __uint(type, T); __uint(key_size, K); … } name SEC(".maps");`:
//! each `__uint(f, N)` member has type `int (*)[N]` (a `PTR` to an `ARRAY`
//! of `N` ints), the struct is anonymous, each map is a global `VAR`, and a
//! `DATASEC ".maps"` lists the variables with their offsets and sizes.

use std::collections::BTreeMap;

use super::maps::{MapDef, MapType, Pinning};

const BTF_MAGIC: u16 = 0xeb9f;
const HEADER_LEN: u32 = 24;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;

/// `BTF_INT_SIGNED`
const INT_SIGNED: u32 = 1;

/// `BTF_VAR_GLOBAL_ALLOCATED`
pub const VAR_GLOBAL_ALLOCATED: u32 = 1;

/// A BTF type id (0 = void).
pub type TypeId = u32;

/// Appends BTF types and strings; [`BtfBuilder::finish`] returns the section.
#[derive(Clone, Debug)]
pub struct BtfBuilder {
    types: Vec<u8>,
    strings: Vec<u8>,
    string_offsets: BTreeMap<String, u32>,
    next_id: TypeId,
}

impl Default for BtfBuilder {
    fn default() -> Self {
        BtfBuilder::new()
    }
}

impl BtfBuilder {
    pub fn new() -> BtfBuilder {
        let mut string_offsets = BTreeMap::new();
        string_offsets.insert(String::new(), 0);
        BtfBuilder {
            types: Vec::new(),
            strings: vec![0],
            string_offsets,
            next_id: 1,
        }
    }

    /// Offset of `s` in the string section (deduplicated; "" is 0).
    pub fn string(&mut self, s: &str) -> u32 {
        if let Some(&off) = self.string_offsets.get(s) {
            return off;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        self.string_offsets.insert(s.to_string(), off);
        off
    }

    fn u32(&mut self, v: u32) {
        self.types.extend_from_slice(&v.to_le_bytes());
    }

    fn header(&mut self, name_off: u32, kind: u32, vlen: u32, size_or_type: u32) -> TypeId {
        self.u32(name_off);
        self.u32((kind << 24) | (vlen & 0xffff));
        self.u32(size_or_type);
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// `INT name` of `size` bytes.
    pub fn int(&mut self, name: &str, size: u32, signed: bool) -> TypeId {
        let n = self.string(name);
        let id = self.header(n, KIND_INT, 0, size);
        let encoding = if signed { INT_SIGNED } else { 0 };
        self.u32((encoding << 24) | (size * 8));
        id
    }

    /// Anonymous `PTR` to `target`.
    pub fn ptr(&mut self, target: TypeId) -> TypeId {
        self.header(0, KIND_PTR, 0, target)
    }

    /// `ARRAY` of `nelems` × `elem`, indexed by `index`.
    pub fn array(&mut self, elem: TypeId, index: TypeId, nelems: u32) -> TypeId {
        let id = self.header(0, KIND_ARRAY, 0, 0);
        self.u32(elem);
        self.u32(index);
        self.u32(nelems);
        id
    }

    /// `STRUCT` (anonymous when `name` is ""), `members` are
    /// `(name, type, bit offset)`.
    pub fn structure(&mut self, name: &str, size: u32, members: &[(&str, TypeId, u32)]) -> TypeId {
        let n = self.string(name);
        let names: Vec<u32> = members.iter().map(|(m, _, _)| self.string(m)).collect();
        let id = self.header(n, KIND_STRUCT, members.len() as u32, size);
        for ((_, ty, bit_off), name_off) in members.iter().zip(names) {
            self.u32(name_off);
            self.u32(*ty);
            self.u32(*bit_off);
        }
        id
    }

    /// Anonymous `FUNC_PROTO` returning `ret` with `params` (name, type).
    pub fn func_proto(&mut self, ret: TypeId, params: &[(&str, TypeId)]) -> TypeId {
        let names: Vec<u32> = params.iter().map(|(p, _)| self.string(p)).collect();
        let id = self.header(0, KIND_FUNC_PROTO, params.len() as u32, ret);
        for ((_, ty), name_off) in params.iter().zip(names) {
            self.u32(name_off);
            self.u32(*ty);
        }
        id
    }

    /// `FUNC name` of prototype `proto`; `global`: `BTF_FUNC_GLOBAL`
    /// linkage, else `BTF_FUNC_STATIC` (a callback must be static).
    pub fn func(&mut self, name: &str, proto: TypeId, global: bool) -> TypeId {
        self.func_linkage(name, proto, u32::from(global))
    }

    /// `FUNC name` of prototype `proto` with BTF linkage `linkage` (0
    /// static, 1 global, 2 extern: a kfunc, `super::kfunc`).
    pub fn func_linkage(&mut self, name: &str, proto: TypeId, linkage: u32) -> TypeId {
        let n = self.string(name);
        self.header(n, KIND_FUNC, linkage, proto)
    }

    /// `VAR name` of type `ty` with `linkage` (see [`VAR_GLOBAL_ALLOCATED`]).
    pub fn var(&mut self, name: &str, ty: TypeId, linkage: u32) -> TypeId {
        let n = self.string(name);
        let id = self.header(n, KIND_VAR, 0, ty);
        self.u32(linkage);
        id
    }

    /// `DATASEC name` of `size` bytes; `entries` are `(var, offset, size)`
    /// sorted by offset.
    pub fn datasec(&mut self, name: &str, size: u32, entries: &[(TypeId, u32, u32)]) -> TypeId {
        let n = self.string(name);
        let id = self.header(n, KIND_DATASEC, entries.len() as u32, size);
        for (ty, off, sz) in entries {
            self.u32(*ty);
            self.u32(*off);
            self.u32(*sz);
        }
        id
    }

    /// The encoded section: header, types, strings.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.types.len() + self.strings.len());
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.push(1); // version
        out.push(0); // flags
        out.extend_from_slice(&HEADER_LEN.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // type_off
        out.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.types.len() as u32).to_le_bytes()); // str_off
        out.extend_from_slice(&(self.strings.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

/// Size of one map definition in `.maps`: one pointer per member.
pub fn map_def_size(map: &MapDef) -> u32 {
    8 * map_members(map).len() as u32
}

fn map_members(map: &MapDef) -> Vec<(&'static str, u32)> {
    let mut m = vec![("type", map.map_type.id())];
    // A ring buffer has no key or value (libbpf's definitions leave them
    // out; the kernel wants both 0).
    if map.map_type != MapType::RingBuf {
        m.push(("key_size", map.key_size));
        m.push(("value_size", map.value_size));
    }
    m.push(("max_entries", map.max_entries));
    m.push(("map_flags", map.map_flags));
    if map.pinning == Pinning::ByName {
        m.push(("pinning", 1));
    }
    m
}

/// The `.BTF` section for `maps`, laid out back to back in `.maps` in the
/// given order (offsets are the running sum of [`map_def_size`]).
pub fn maps_btf(maps: &[MapDef]) -> Vec<u8> {
    let mut b = BtfBuilder::new();
    maps_btf_into(&mut b, maps, &BTreeMap::new());
    b.finish()
}

/// The `.maps` types and `DATASEC` of [`maps_btf`] in `b`; a map named in
/// `typed` is described by its key and value types (`key` / `value`
/// members, `PTR`s to the given type ids, in place of `key_size` /
/// `value_size`), as the kernel needs for a value holding a
/// `struct bpf_timer` (`super::btf_ext`).
pub fn maps_btf_into(
    b: &mut BtfBuilder,
    maps: &[MapDef],
    typed: &BTreeMap<String, (TypeId, TypeId)>,
) {
    let int = b.int("int", 4, true);
    // One `int (*)[N]` per distinct N, in first-use order.
    let mut arrays: BTreeMap<u32, TypeId> = BTreeMap::new();
    let mut vars = Vec::with_capacity(maps.len());
    let mut offset = 0;
    for map in maps {
        let members: Vec<(&str, TypeId, u32)> = map_members(map)
            .into_iter()
            .enumerate()
            .map(|(i, (name, n))| {
                let ty = match (typed.get(&map.name), name) {
                    (Some(&(k, _)), "key_size") => return ("key", b.ptr(k), 64 * i as u32),
                    (Some(&(_, v)), "value_size") => return ("value", b.ptr(v), 64 * i as u32),
                    _ => *arrays.entry(n).or_insert_with(|| {
                        let arr = b.array(int, int, n);
                        b.ptr(arr)
                    }),
                };
                (name, ty, 64 * i as u32)
            })
            .collect();
        let size = 8 * members.len() as u32;
        let st = b.structure("", size, &members);
        let var = b.var(&map.name, st, VAR_GLOBAL_ALLOCATED);
        vars.push((var, offset, size));
        offset += size;
    }
    b.datasec(".maps", offset, &vars);
}
