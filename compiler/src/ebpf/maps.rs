//! BPF map definitions (what goes into `.maps` and its BTF).

use std::fmt;

/// `BPF_F_NO_PREALLOC`: required by LPM tries, optional for hash maps.
pub const BPF_F_NO_PREALLOC: u32 = 1;

/// Map types (`enum bpf_map_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapType {
    Hash,
    Array,
    ProgArray,
    PerfEventArray,
    PercpuHash,
    PercpuArray,
    LruHash,
    LruPercpuHash,
    LpmTrie,
    RingBuf,
    /// Any other `bpf_map_type` value.
    Other(u32),
}

impl MapType {
    /// The kernel's `BPF_MAP_TYPE_*` value.
    pub const fn id(self) -> u32 {
        match self {
            MapType::Hash => 1,
            MapType::Array => 2,
            MapType::ProgArray => 3,
            MapType::PerfEventArray => 4,
            MapType::PercpuHash => 5,
            MapType::PercpuArray => 6,
            MapType::LruHash => 9,
            MapType::LruPercpuHash => 10,
            MapType::LpmTrie => 11,
            MapType::RingBuf => 27,
            MapType::Other(n) => n,
        }
    }
}

/// `pinning` attribute (libbpf `LIBBPF_PIN_*`; aya honours it with
/// `EbpfLoader::map_pin_path`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Pinning {
    /// No `pinning` member is emitted.
    #[default]
    None,
    /// `LIBBPF_PIN_BY_NAME` (1): pinned under the loader's pin path by name.
    ByName,
}

/// One map of the object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MapDef {
    /// Symbol name; also the name the loaders give the map (the kernel keeps
    /// the first 15 bytes).
    pub name: String,
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub pinning: Pinning,
}

impl MapDef {
    /// A map with no flags and no pinning.
    pub fn new(
        name: impl Into<String>,
        map_type: MapType,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    ) -> MapDef {
        let map_flags = if map_type == MapType::LpmTrie {
            BPF_F_NO_PREALLOC
        } else {
            0
        };
        MapDef {
            name: name.into(),
            map_type,
            key_size,
            value_size,
            max_entries,
            map_flags,
            pinning: Pinning::None,
        }
    }

    /// An LPM trie keyed by `struct { u32 prefixlen; u8 data[data_len]; }`
    /// (`BPF_F_NO_PREALLOC` set, as the kernel requires).
    pub fn lpm_trie(name: impl Into<String>, data_len: u32, value_size: u32, max: u32) -> MapDef {
        MapDef::new(name, MapType::LpmTrie, 4 + data_len, value_size, max)
    }

    /// A program array for tail calls (4-byte keys and values).
    pub fn prog_array(name: impl Into<String>, max_entries: u32) -> MapDef {
        MapDef::new(name, MapType::ProgArray, 4, 4, max_entries)
    }

    /// Checks what the kernel would reject at map creation with a less
    /// helpful error.
    pub fn validate(&self) -> Result<(), MapDefError> {
        let err = |reason: &'static str| {
            Err(MapDefError {
                map: self.name.clone(),
                reason,
            })
        };
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || self.name.as_bytes()[0].is_ascii_digit()
        {
            return err("map name must be a C identifier");
        }
        if self.max_entries == 0 && self.map_type != MapType::RingBuf {
            return err("max_entries must be > 0");
        }
        match self.map_type {
            MapType::LpmTrie => {
                if self.map_flags & BPF_F_NO_PREALLOC == 0 {
                    return err("LPM trie maps need map_flags BPF_F_NO_PREALLOC (1)");
                }
                if self.key_size <= 4 {
                    return err("LPM trie key is u32 prefixlen + at least one data byte");
                }
            }
            MapType::ProgArray if self.key_size != 4 || self.value_size != 4 => {
                return err("prog array key and value size must be 4");
            }
            MapType::Array | MapType::PercpuArray if self.key_size != 4 => {
                return err("array key size must be 4");
            }
            _ => {}
        }
        Ok(())
    }
}

/// An invalid map definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDefError {
    pub map: String,
    pub reason: &'static str,
}

impl fmt::Display for MapDefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "map `{}`: {}", self.map, self.reason)
    }
}

impl std::error::Error for MapDefError {}
