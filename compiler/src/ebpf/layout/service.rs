//! Map names, key/value layouts and constants of the service maps, shared
//! by the emitters ([`crate::ebpf::service::tc`], [`crate::ebpf::service::sock`]), the fill computation
//! ([`crate::ebpf::service::fill`]) and the runtime (`weir_runtime::ebpf::service`).
//!
//! Byte order: addresses are in network order (IPv4 in the first 4 of 16
//! bytes, the rest zero), ports in **host** order — except in the socket
//! reverse map ([`sk`]), which mirrors `struct bpf_sock_addr` (network
//! order). Integers are native-endian (the runtime and the programs run on
//! the same host).

use crate::ebpf::{MapDef, MapType};

/// Maglev lookup-table size (prime; [`crate::maglev::TABLE_SIZE`]).
pub const MAGLEV_M: u32 = crate::maglev::TABLE_SIZE;

/// Map names (≤ 15 bytes, the kernel's limit).
pub mod map {
    /// Frontend (VIP, port, proto) → [`super::fe`] value.
    pub const FE: &str = "weir_lb_fe";
    /// (backend set, slot) → [`super::be`] backend.
    pub const SLOT: &str = "weir_lb_slot";
    /// Backend id → [`super::be`] backend (affinity validation, status).
    pub const BE: &str = "weir_lb_be";
    /// Maglev table index → `[u32; MAGLEV_M]` slot numbers.
    pub const MGL: &str = "weir_lb_mgl";
    /// (client, service) → backend id + last use (client-IP affinity).
    pub const AFF: &str = "weir_lb_aff";
    /// Original tuple (client → frontend) → backend (TC path conntrack).
    pub const CT: &str = "weir_lb_ct";
    /// Reply tuple (backend → client) → frontend (reverse NAT of the
    /// standalone TC program; the policy pipeline keeps the frontend in
    /// its conntrack entry, `layout::ct`).
    pub const REV: &str = "weir_lb_rev";
    /// (socket cookie, backend) → frontend (UDP `recvmsg4` / `recvmsg6`
    /// reverse).
    pub const SK: &str = "weir_lb_sk";
    /// Per-CPU counters of the standalone programs ([`super::cnt`]).
    pub const CNT: &str = "weir_lb_cnt";
    /// Per-CPU new flows (TC) and connect-time rewrites per service index.
    pub const SVC_CNT: &str = "weir_lb_scnt";
    /// Per-CPU new flows (TC) and connect-time rewrites per backend id.
    pub const BE_CNT: &str = "weir_lb_bcnt";
}

/// Frontend key (same shape as the policy pipeline's `weir_svc` key):
/// `{ addr[16], port u16 (host), proto u8, family u8 }`.
pub mod fe_key {
    pub const ADDR: i16 = 0;
    pub const PORT: i16 = 16;
    pub const PROTO: i16 = 18;
    pub const FAMILY: i16 = 19;
    pub const SIZE: u32 = 20;
}

/// Frontend value: eight u32.
pub mod fe {
    /// Service index (in `ServiceTable::services`).
    pub const SERVICE: i16 = 0;
    /// Backend set id (key half of [`super::map::SLOT`]).
    pub const SET: i16 = 4;
    /// Slots in the set; 0 = no usable backend (reject).
    pub const COUNT: i16 = 8;
    /// Maglev table index (in [`super::map::MGL`]); `u32::MAX` if random.
    pub const TABLE: i16 = 12;
    /// [`super::FLAG_MAGLEV`] | [`super::FLAG_AFFINITY`].
    pub const FLAGS: i16 = 16;
    /// Client-IP affinity timeout, seconds.
    pub const AFFINITY_SECS: i16 = 20;
    /// Provenance id of `NoBackends { service }` (counted on reject).
    pub const NO_BACKENDS: i16 = 24;
    pub const RESERVED: i16 = 28;
    pub const SIZE: u32 = 32;
}

/// `fe::FLAGS` bits.
pub const FLAG_MAGLEV: u32 = 1;
pub const FLAG_AFFINITY: u32 = 2;

/// Slot key: `{ set u32, slot u32 }`.
pub mod slot_key {
    pub const SET: i16 = 0;
    pub const SLOT: i16 = 4;
    pub const SIZE: u32 = 8;
}

/// Backend value: `{ addr[16], port u16 (host), family u8, pad u8, id u32 }`.
pub mod be {
    pub const ADDR: i16 = 0;
    pub const PORT: i16 = 16;
    pub const FAMILY: i16 = 18;
    pub const ID: i16 = 20;
    pub const SIZE: u32 = 24;
}

/// Affinity key `{ client[16], service u32, family u8, pad[3] }`, value
/// `{ backend id u32, pad u32, last use ns u64 }`.
pub mod aff {
    pub const CLIENT: i16 = 0;
    pub const SERVICE: i16 = 16;
    pub const FAMILY: i16 = 20;
    pub const KEY_SIZE: u32 = 24;
    pub const V_ID: i16 = 0;
    pub const V_TS: i16 = 8;
    pub const VALUE_SIZE: u32 = 16;
}

/// Tuple key of [`super::map::CT`] and [`super::map::REV`] (the policy
/// pipeline's conntrack layout): `{ src[16], dst[16], sport u16, dport
/// u16 (host), proto u8, family u8, pad u16 }`.
pub mod tuple {
    pub const SRC: i16 = 0;
    pub const DST: i16 = 16;
    pub const SPORT: i16 = 32;
    pub const DPORT: i16 = 34;
    pub const PROTO: i16 = 36;
    pub const FAMILY: i16 = 37;
    pub const SIZE: u32 = 40;
}

/// [`super::map::CT`] value: the backend ([`be`] layout), the service
/// index (u32) at 24, then the insertion time (ns) at 32.
pub mod ct {
    pub const SERVICE: i16 = 24;
    pub const TS: i16 = 32;
    pub const VALUE_SIZE: u32 = 40;
}

/// [`super::map::REV`] value: `{ frontend addr[16], port u16 (host),
/// family u8, pad u8, service u32 }`.
pub mod rev {
    pub const ADDR: i16 = 0;
    pub const PORT: i16 = 16;
    pub const FAMILY: i16 = 18;
    pub const SERVICE: i16 = 20;
    pub const VALUE_SIZE: u32 = 24;
}

/// [`super::map::SK`] key `{ cookie u64, backend addr[16] (net; IPv4 in
/// the first 4), port u16 (net), family u8, pad u8, pad u32 }`, value `{
/// frontend addr[16] (net), port u16 (net), pad u16 }`.
pub mod sk {
    pub const COOKIE: i16 = 0;
    pub const ADDR: i16 = 8;
    pub const PORT: i16 = 24;
    pub const FAMILY: i16 = 26;
    pub const KEY_SIZE: u32 = 32;
    pub const V_ADDR: i16 = 0;
    pub const V_PORT: i16 = 16;
    pub const VALUE_SIZE: u32 = 20;
}

/// Indexes of [`super::map::CNT`] (standalone programs; in the policy
/// pipeline the reject is counted under its `NoBackends` provenance id).
pub mod cnt {
    /// Packets / connects rejected because the service has no backend.
    pub const NO_BACKENDS: u32 = 0;
    /// New flows translated (TC) or connects rewritten (cgroup).
    pub const TRANSLATED: u32 = 1;
    /// Packets of known flows translated (TC conntrack hit).
    pub const ESTABLISHED: u32 = 2;
    /// Replies un-translated (TC reverse NAT, `recvmsg4`).
    pub const REVERSE: u32 = 3;
    /// A frontend pointed at a missing slot or table (update race).
    pub const MISSING: u32 = 4;
    /// SCTP packets dropped because a port change's CRC32c update could
    /// not be computed (`service::sctp_crc`: a first fragment, an IP
    /// length that disagrees with the frame).
    pub const SCTP_CRC: u32 = 5;
    pub const SIZE: u32 = 8;
}

pub use crate::contract::ebpf::Capacity;

impl Capacity {
    /// The reverse-NAT table of the standalone TC program
    /// ([`map::REV`]); the policy pipeline has none (a translated flow's
    /// conntrack entry carries its frontend).
    pub fn rev_map(&self) -> MapDef {
        MapDef::new(
            map::REV,
            MapType::LruHash,
            tuple::SIZE,
            rev::VALUE_SIZE,
            self.conntrack.max(1),
        )
    }

    /// The translation table of the standalone TC program
    /// ([`map::CT`]); the policy pipeline has none (a translated flow's
    /// forward entry is in its conntrack table, `layout::ct::FORWARD`).
    pub fn ct_map(&self) -> MapDef {
        MapDef::new(
            map::CT,
            MapType::LruHash,
            tuple::SIZE,
            ct::VALUE_SIZE,
            self.conntrack.max(1),
        )
    }

    /// The maps the policy pipeline and the connect-time programs share,
    /// sized by this capacity (every service map but the standalone TC
    /// program's [`map::CT`] and [`map::REV`]).
    pub fn maps(&self) -> Vec<MapDef> {
        vec![
            MapDef::new(
                map::FE,
                MapType::Hash,
                fe_key::SIZE,
                fe::SIZE,
                self.frontends.max(1),
            ),
            MapDef::new(
                map::SLOT,
                MapType::Hash,
                slot_key::SIZE,
                be::SIZE,
                self.slots.max(1),
            ),
            MapDef::new(map::BE, MapType::Hash, 4, be::SIZE, self.backends.max(1)),
            MapDef::new(
                map::MGL,
                MapType::Array,
                4,
                MAGLEV_M * 4,
                self.tables.max(1),
            ),
            MapDef::new(
                map::AFF,
                MapType::LruHash,
                aff::KEY_SIZE,
                aff::VALUE_SIZE,
                self.affinity.max(1),
            ),
            MapDef::new(
                map::SK,
                MapType::LruHash,
                sk::KEY_SIZE,
                sk::VALUE_SIZE,
                self.sockets.max(1),
            ),
            MapDef::new(map::CNT, MapType::PercpuArray, 4, 8, cnt::SIZE),
            MapDef::new(
                map::SVC_CNT,
                MapType::PercpuArray,
                4,
                8,
                self.services.max(1),
            ),
            MapDef::new(
                map::BE_CNT,
                MapType::PercpuArray,
                4,
                8,
                self.backends.max(1),
            ),
        ]
    }
}
