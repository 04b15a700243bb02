//! Fixed layout shared by the generated programs, the runtime and the
//! tests: the per-CPU scratch context, map names and key/value layouts,
//! `__sk_buff` offsets and TC return codes. One module for both halves of
//! the object: the policy pipeline's layout here, the service maps' in
//! [`service`]; codegen, services, the runtime and the tests all read it
//! from here (the services no longer reach up into `codegen`).

pub mod gc;
pub mod service;

/// `TC_ACT_OK`: let the packet through.
pub const TC_ACT_OK: i32 = 0;
/// `TC_ACT_SHOT`: drop it.
pub const TC_ACT_SHOT: i32 = 2;

/// `struct __sk_buff` offsets used by the programs.
pub mod skb {
    pub const LEN: i16 = 0;
    pub const MARK: i16 = 8;
    pub const IFINDEX: i16 = 40;
    pub const DATA: i16 = 76;
    pub const DATA_END: i16 = 80;
}

/// The per-CPU scratch context (`weir_ctx`, one entry): everything a
/// stage needs from earlier stages, so that a tail call loses nothing.
/// Addresses are in network byte order (IPv4 in the first 4 bytes, the
/// rest zero); ports are in host order.
pub mod ctx {
    pub const SRC: i16 = 0; // [u8; 16]
    pub const DST: i16 = 16; // [u8; 16]
    pub const SPORT: i16 = 32; // u16
    pub const DPORT: i16 = 34; // u16
    /// The protocol the rules see: the wire protocol, except the other
    /// family's ICMP (58 in IPv4, 1 in IPv6) reads as
    /// `interp::OTHER_PROTO` (`icmp` is ICMPv4 only, `icmp6` ICMPv6 only).
    pub const PROTO: i16 = 36; // u8
    pub const ICMP_TYPE: i16 = 37; // u8
    pub const ICMP_CODE: i16 = 38; // u8
    /// 4 or 6.
    pub const FAMILY: i16 = 39; // u8
    pub const SRC_CLASS: i16 = 40; // u32
    pub const DST_CLASS: i16 = 44; // u32
    /// A side's decision, one word written by its leaf with one store:
    /// `decided << DECIDED_SHIFT | logged << LOGGED_SHIFT | FLAG_*`
    /// (see [`super::side_word`]); 0 when the side was not evaluated.
    pub const EG_WORD: i16 = 48; // u32
    /// Scratch of the prologue's IPv6 extension-header walk: the offset
    /// of the current header (see `codegen::parse`); after it, the
    /// transport header's (0: no walk, 54), which the service stage's
    /// rewrite reads. In a program with services an IPv4 packet's parse
    /// writes its transport header's offset (14 + IHL × 4) here too, so
    /// the rewrite needs no helper call to find it. In the padding after
    /// `EG_WORD`, zeroed with it.
    pub const PARSE_OFF: i16 = 52; // u16
    pub const IN_WORD: i16 = 56; // u32
    /// Block to continue at after a tail call.
    pub const NEXT: i16 = 64; // u32
    /// Steering action of the first matching steering rule (`STEER_*`).
    pub const STEER_KIND: i16 = 68; // u32
    pub const STEER_ARG: i16 = 72; // u32
    /// Translated by service: service index + 1 (0: none).
    pub const SERVICE: i16 = 76; // u32
    /// Set by the service stage: the original destination (frontend) and
    /// port.
    pub const ORIG_DST: i16 = 80; // [u8; 16]
    pub const ORIG_DPORT: i16 = 96; // u16
    /// The IP protocol number on the wire (58 for ICMPv6).
    pub const RAW_PROTO: i16 = 100; // u8
    /// The conntrack key of the packet ([`super::ct`] layout), built once.
    pub const CT_KEY: i16 = 104; // [u8; 40]
    /// `redirect … to proxy ADDR:PORT`: ADDR for an IPv4 connection (the
    /// rule's IPv4 address, network order; 0 for an IPv6 one, which only a
    /// wildcard listener matches; the port is `STEER_ARG`).
    pub const STEER_ADDR: i16 = 144; // u32
    /// The first [`super::LOG_SLOTS`] provenance ids of `log` rules the
    /// side's leaf passed ([u32; LOG_SLOTS] each); the final block counts
    /// them, so a leaf records them with one store each instead of a
    /// counter update.
    pub const EG_LOG: i16 = 152;
    pub const IN_LOG: i16 = 152 + 4 * super::LOG_SLOTS as i16;
    /// Translation state of this packet (`LB_*`): the service stage
    /// defers writing `weir_lb_ct` for a new translation
    /// to the final block, which writes them only when the packet is
    /// allowed (a denied flow never creates translation state).
    pub const LB_STATE: i16 = IN_LOG + 4 * super::LOG_SLOTS as i16; // u32
    /// The pending `weir_lb_ct` value without its timestamp: backend (24),
    /// service (4), pad (4).
    pub const LB_CTV: i16 = LB_STATE + 8; // [u8; 32]
    /// `redirect … to proxy ADDR:PORT`: ADDR for an IPv6 connection (the
    /// rule's IPv6 address; `::` for an IPv4 one, which only a wildcard
    /// listener matches), written beside [`STEER_ADDR`].
    pub const STEER_ADDR6: i16 = LB_CTV + 32; // [u8; 16]
    pub const SIZE: u32 = STEER_ADDR6 as u32 + 16;
}

/// `ctx::LB_STATE`: no new translation (the prologue's or an existing
/// one), or a new one waiting for the verdict.
pub const LB_NONE: i32 = 0;
pub const LB_PENDING: i32 = 1;

/// Side flags, the low bits of `ctx::EG_WORD` / `ctx::IN_WORD`.
pub const FLAG_EVALUATED: i32 = 1;
pub const FLAG_ALLOW: i32 = 2;
pub const FLAG_RULE: i32 = 4;
/// Logged ids recorded in the context (bits 3..8 of the side word);
/// further ones are counted at the leaf.
pub const LOG_SLOTS: usize = 8;
pub const LOGGED_SHIFT: u32 = 3;
pub const DECIDED_SHIFT: u32 = 8;
/// Provenance ids must fit the side word (`MAX_MAP_ENTRIES` keeps them
/// far below).
pub const MAX_DECIDED: u32 = (1 << (32 - DECIDED_SHIFT)) - 1;

/// The side word a leaf stores: what decided, how many logged ids it
/// recorded in the context, and its flags.
pub fn side_word(decided: u32, logged: usize, flags: i32) -> i32 {
    debug_assert!(decided <= MAX_DECIDED && logged <= LOG_SLOTS);
    ((decided << DECIDED_SHIFT) | ((logged as u32) << LOGGED_SHIFT) | flags as u32) as i32
}

/// `ctx::STEER_KIND` values.
pub const STEER_NONE: i32 = 0;
pub const STEER_REDIRECT: i32 = 1;
pub const STEER_MARK: i32 = 2;
pub const STEER_DSCP: i32 = 3;
/// A `redirect` already applied: the packet is assigned to the proxy's
/// socket (`bpf_sk_assign` succeeded; `codegen::emit::redirect_udp`).
pub const STEER_ASSIGNED: i32 = 4;

/// Conntrack key: `{ src[16], dst[16], sport u16, dport u16, proto u8,
/// family u8, pad u16 }` (ports host order; ICMP: ports 0). `ctx::CT_KEY`
/// holds it source first; `weir_ct` is keyed by its canonical order (the
/// smaller of (address words, port) first), so both directions of a flow
/// find the one entry.
pub mod ct {
    pub const SRC: i16 = 0;
    pub const DST: i16 = 16;
    pub const SPORT: i16 = 32;
    pub const DPORT: i16 = 34;
    pub const PROTO: i16 = 36;
    pub const FAMILY: i16 = 37;
    pub const KEY_SIZE: u32 = 40;
    /// The IPv4 table's key (`weir_ct4`, issue 21): the 40-byte key of an
    /// IPv4 flow without its 24 bytes of address padding, `{ src[4],
    /// dst[4], sport u16, dport u16, proto u8, family u8 (4), pad u16 }`
    /// — the same canonical order (an IPv4 address compares as its
    /// first 8 bytes do, the rest being zero) and the same value.
    /// The programs build the 40-byte key and compact it at the call
    /// (`codegen::emit::ct_family`); [`compact`] is the one definition
    /// for the runtime.
    pub mod v4 {
        pub const SRC: i16 = 0;
        pub const DST: i16 = 4;
        /// Ports, protocol, family and pad: the 40-byte key's last 8
        /// bytes.
        pub const SPORT: i16 = 8;
        pub const KEY_SIZE: u32 = 16;

        /// The `weir_ct4` key of a 40-byte IPv4 key.
        pub fn compact(key: &[u8]) -> [u8; KEY_SIZE as usize] {
            let mut out = [0u8; KEY_SIZE as usize];
            out[..4].copy_from_slice(&key[super::SRC as usize..][..4]);
            out[4..8].copy_from_slice(&key[super::DST as usize..][..4]);
            out[8..].copy_from_slice(&key[super::SPORT as usize..][..8]);
            out
        }

        /// The 40-byte key of a `weir_ct4` key (the inverse of
        /// [`compact`]).
        pub fn widen(key: &[u8]) -> [u8; super::KEY_SIZE as usize] {
            let mut out = [0u8; super::KEY_SIZE as usize];
            out[super::SRC as usize..][..4].copy_from_slice(&key[..4]);
            out[super::DST as usize..][..4].copy_from_slice(&key[4..8]);
            out[super::SPORT as usize..][..8].copy_from_slice(&key[8..16]);
            out
        }
    }
    /// Value `{ time u64, frontend addr[16], frontend port u16 (host),
    /// proxy port u16 (host), service u32 }`: the insertion time (ns,
    /// `bpf_ktime_get_coarse_ns`: `CLOCK_MONOTONIC` at the last tick)
    /// with its low bits as flags ([`TRANSLATED`], [`CLIENT_FIRST`]); for a translated flow the frontend its client
    /// sent to and the service index + 1 (else zero). A translated flow's
    /// entry is keyed by the client ↔ backend tuple, so a reply finds its
    /// reverse translation in the conntrack lookup it makes anyway: one
    /// entry per flow carries both (no separate reverse-NAT table).
    pub const TIME: i16 = 0;
    pub const FE_ADDR: i16 = 8;
    pub const FE_PORT: i16 = 24;
    pub const SERVICE: i16 = 28;
    /// A UDP flow steered to a proxy (`codegen::emit::redirect_udp`): the
    /// proxy's port (host order; 0: not steered), its lookup address in
    /// [`FE_ADDR`] (IPv4 in the first 4 bytes) — the proxy takes the
    /// frontend's place: such a flow is never [`TRANSLATED`].
    pub const PROXY_PORT: i16 = 26;
    pub const VALUE_SIZE: u32 = 32;
    /// Bit of the time: the flow was translated (its replies need reverse
    /// NAT).
    pub const TRANSLATED: i32 = 1;
    /// Bit of the time: the flow's client (the end that sent the first
    /// packet) is the canonical key's first end. A packet of a translated
    /// flow whose source is the other end (the backend) is a reply.
    pub const CLIENT_FIRST: i32 = 2;
    /// Bit of the time, non-LRU tables only (`--ct-table hash`): a packet
    /// found the entry since the collector last looked (it clears the
    /// bit and stamps the time; `weir_runtime::ebpf::collect`).
    pub const SEEN: i32 = 4;
    /// Bit of the [`SERVICE`] word (not of the time): a translated
    /// flow's *forward* entry (issue 21, "one table"), keyed by the
    /// client ↔ frontend tuple as the client sends it (canonical order,
    /// [`CLIENT_FIRST`] as in its flow's entry): [`FE_ADDR`] and
    /// [`FE_PORT`] hold the **backend** the flow is translated to,
    /// [`SERVICE`] the service index + 1 with this bit. The flow's own
    /// entry (client ↔ backend, [`TRANSLATED`]) is beside it. A packet
    /// from the client finds it in the lookup every packet makes and is
    /// DNATed to the backend; one from the other end (the frontend: a
    /// reverse-NATed reply seen by a second hook) is established.
    /// Written once, when the flow's first packet is allowed; never
    /// [`SEEN`]: the collector removes it with its flow. In the service
    /// word because every entry an earlier weir wrote has it clear (a
    /// service index + 1 far below 2³¹; the time's low bits were the
    /// clock's), so an upgrade finds no forward entry it did not write.
    pub const FORWARD: i32 = i32::MIN;
    /// The flag bits of the time.
    pub const FLAGS: i32 = TRANSLATED | CLIENT_FIRST | SEEN;
}

/// `TC_ACT_REDIRECT`: `bpf_redirect`'s return value (the reset a
/// service without backends answers a TCP packet with).
pub const TC_ACT_REDIRECT: i32 = 7;

/// Map names (the kernel keeps 15 bytes; these are shorter).
pub mod map {
    pub const CTX: &str = "weir_ctx";
    pub const CT: &str = "weir_ct";
    /// IPv4 flows' conntrack table (16-byte keys, [`super::ct::v4`]);
    /// `CT` holds the IPv6 ones.
    pub const CT4: &str = "weir_ct4";
    pub const CLS4: &str = "weir_cls4";
    pub const CLS6: &str = "weir_cls6";
    pub const HOST4: &str = "weir_host4";
    pub const HOST6: &str = "weir_host6";
    pub const ATOMS: &str = crate::contract::atom_rows::MAP;
    pub const CNT: &str = "weir_cnt";
    /// Audit decisions per provenance id (`codegen/audit.rs`).
    pub const AUDIT_CNT: &str = "weir_audit_cnt";
    pub const JMP: &str = "weir_jmp";
    /// `self`: endpoint address → its endpoint's canonical address
    /// (`codegen/same_endpoint.rs`).
    pub const SELF4: &str = "weir_self4";
    pub const SELF6: &str = "weir_self6";
}

/// Where a class-map entry (`addr`/`len` → class) lives, and its key
/// there: a host (a full-length prefix: every endpoint, and any `/32` or
/// `/128` a policy names) in the exact-match hash `weir_host4` /
/// `weir_host6` (key: the address), any shorter prefix in the LPM trie
/// `weir_cls4` / `weir_cls6` (key: length, address). A host entry is the
/// longest match of its address whenever it exists, so a program that
/// looks in the hash first and in the trie only on a miss classifies as
/// one longest-prefix map would, at the cost of one short hash lookup
/// instead of a walk of a trie as deep as the number of endpoints; the
/// trie keeps only the policies' CIDRs. One place decides, for the
/// compiler's fill and the runtime's endpoint writes alike.
pub fn class_key(addr: &[u8], len: u32) -> (&'static str, Vec<u8>) {
    let v4 = addr.len() == 4;
    if len as usize == addr.len() * 8 {
        (if v4 { map::HOST4 } else { map::HOST6 }, addr.to_vec())
    } else {
        let mut k = len.to_ne_bytes().to_vec();
        k.extend_from_slice(addr);
        (if v4 { map::CLS4 } else { map::CLS6 }, k)
    }
}

/// A `self` map entry (`codegen/same_endpoint.rs`): the map, the key
/// (the address) and the value (its endpoint's canonical address, of the
/// same family). One place decides, for the fill and `weir endpoints`.
pub fn self_entry(
    addr: std::net::IpAddr,
    canonical: std::net::IpAddr,
) -> (&'static str, Vec<u8>, Vec<u8>) {
    let bytes = |a: std::net::IpAddr| match a {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    let map = if addr.is_ipv4() {
        map::SELF4
    } else {
        map::SELF6
    };
    (map, bytes(addr), bytes(canonical))
}

/// Name of the entry program.
pub const MAIN_PROGRAM: &str = "weir_main";

/// Name of tail-called stage `k` (k ≥ 1; its prog-array slot is `k`).
pub fn stage_name(k: usize) -> String {
    format!("weir_s{k}")
}
