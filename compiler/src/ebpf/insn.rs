//! BPF instructions as plain values: registers, operations, labels and
//! provenance ([`Origin`]). Encoding lives in [`super::asm`].

use std::sync::Arc;

/// Instruction classes.
pub(crate) mod code {
    pub const LD: u8 = 0x00;
    pub const LDX: u8 = 0x01;
    pub const ST: u8 = 0x02;
    pub const STX: u8 = 0x03;
    pub const ALU: u8 = 0x04;
    pub const JMP: u8 = 0x05;
    pub const JMP32: u8 = 0x06;
    pub const ALU64: u8 = 0x07;

    pub const K: u8 = 0x00;
    pub const X: u8 = 0x08;

    pub const IMM: u8 = 0x00;
    pub const MEM: u8 = 0x60;
    pub const ATOMIC: u8 = 0xc0;

    pub const DW: u8 = 0x18;

    pub const NEG: u8 = 0x80;
    pub const END: u8 = 0xd0;

    pub const JA: u8 = 0x00;
    pub const CALL: u8 = 0x80;
    pub const EXIT: u8 = 0x90;

    /// `BPF_PSEUDO_MAP_FD`: the src register of a map-fd `ld_imm64`.
    pub const PSEUDO_MAP_FD: u8 = 1;
    /// `BPF_PSEUDO_KFUNC_CALL`: the src register of a call to a kernel
    /// function (its `imm` is the function's BTF id in vmlinux, which the
    /// loader fills in: `crate::ebpf::kfunc`).
    pub const PSEUDO_KFUNC_CALL: u8 = 2;
}

/// Well-known helper ids (see `enum bpf_func_id` in `linux/bpf.h`).
pub mod helper {
    /// `void *bpf_map_lookup_elem(map, key)`
    pub const MAP_LOOKUP_ELEM: u32 = 1;
    /// `long bpf_map_update_elem(map, key, value, flags)`
    pub const MAP_UPDATE_ELEM: u32 = 2;
    /// `long bpf_map_delete_elem(map, key)`
    pub const MAP_DELETE_ELEM: u32 = 3;
    /// `u64 bpf_ktime_get_ns(void)`
    pub const KTIME_GET_NS: u32 = 5;
    /// `u64 bpf_ktime_get_coarse_ns(void)`: `CLOCK_MONOTONIC_COARSE`, the
    /// same clock as [`KTIME_GET_NS`] read at the last timer tick (no
    /// clock-source read; kernel 5.11).
    pub const KTIME_GET_COARSE_NS: u32 = 160;
    /// `long bpf_tail_call(ctx, prog_array, index)`
    pub const TAIL_CALL: u32 = 12;
    /// `u32 bpf_get_smp_processor_id(void)`
    pub const GET_SMP_PROCESSOR_ID: u32 = 8;
    /// `long bpf_skb_load_bytes(skb, offset, to, len)`
    pub const SKB_LOAD_BYTES: u32 = 26;
    /// `long bpf_redirect(ifindex, flags)`
    pub const REDIRECT: u32 = 23;
    /// `u32 bpf_get_prandom_u32(void)`
    pub const GET_PRANDOM_U32: u32 = 7;
    /// `long bpf_skb_store_bytes(skb, offset, from, len, flags)`
    pub const SKB_STORE_BYTES: u32 = 9;
    /// `long bpf_l3_csum_replace(skb, offset, from, to, size)`
    pub const L3_CSUM_REPLACE: u32 = 10;
    /// `long bpf_l4_csum_replace(skb, offset, from, to, flags)`
    pub const L4_CSUM_REPLACE: u32 = 11;
    /// `s64 bpf_csum_diff(from, from_size, to, to_size, seed)`
    pub const CSUM_DIFF: u32 = 28;
    /// `long bpf_skb_change_tail(skb, len, flags)`
    pub const SKB_CHANGE_TAIL: u32 = 38;
    /// `long bpf_skb_change_head(skb, len, flags)`
    pub const SKB_CHANGE_HEAD: u32 = 43;
    /// `struct bpf_sock *bpf_sk_lookup_tcp(ctx, tuple, size, netns, flags)`
    pub const SK_LOOKUP_TCP: u32 = 84;
    /// `struct bpf_sock *bpf_sk_lookup_udp(ctx, tuple, size, netns, flags)`
    pub const SK_LOOKUP_UDP: u32 = 85;
    /// `long bpf_sk_release(sk)`
    pub const SK_RELEASE: u32 = 86;
    /// `long bpf_sk_assign(skb, sk, flags)`
    pub const SK_ASSIGN: u32 = 124;

    /// `long bpf_for_each_map_elem(map, callback, ctx, flags)`
    pub const FOR_EACH_MAP_ELEM: u32 = 164;
    /// `long bpf_timer_init(timer, map, flags)`
    pub const TIMER_INIT: u32 = 169;
    /// `long bpf_timer_set_callback(timer, callback)`
    pub const TIMER_SET_CALLBACK: u32 = 170;
    /// `long bpf_timer_start(timer, nsecs, flags)`
    pub const TIMER_START: u32 = 171;

    /// Name of a helper for listings, if it is one of the known ones.
    pub fn name(id: u32) -> Option<&'static str> {
        Some(match id {
            MAP_LOOKUP_ELEM => "bpf_map_lookup_elem",
            MAP_UPDATE_ELEM => "bpf_map_update_elem",
            MAP_DELETE_ELEM => "bpf_map_delete_elem",
            KTIME_GET_NS => "bpf_ktime_get_ns",
            KTIME_GET_COARSE_NS => "bpf_ktime_get_coarse_ns",
            GET_SMP_PROCESSOR_ID => "bpf_get_smp_processor_id",
            TAIL_CALL => "bpf_tail_call",
            REDIRECT => "bpf_redirect",
            SKB_LOAD_BYTES => "bpf_skb_load_bytes",
            GET_PRANDOM_U32 => "bpf_get_prandom_u32",
            SKB_STORE_BYTES => "bpf_skb_store_bytes",
            L3_CSUM_REPLACE => "bpf_l3_csum_replace",
            L4_CSUM_REPLACE => "bpf_l4_csum_replace",
            CSUM_DIFF => "bpf_csum_diff",
            SKB_CHANGE_TAIL => "bpf_skb_change_tail",
            SKB_CHANGE_HEAD => "bpf_skb_change_head",
            SK_LOOKUP_TCP => "bpf_sk_lookup_tcp",
            SK_LOOKUP_UDP => "bpf_sk_lookup_udp",
            SK_RELEASE => "bpf_sk_release",
            SK_ASSIGN => "bpf_sk_assign",
            FOR_EACH_MAP_ELEM => "bpf_for_each_map_elem",
            TIMER_INIT => "bpf_timer_init",
            TIMER_SET_CALLBACK => "bpf_timer_set_callback",
            TIMER_START => "bpf_timer_start",
            _ => return None,
        })
    }
}

/// A BPF register. `R10` is the read-only frame pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Reg {
    R0 = 0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
}

impl Reg {
    /// Register number 0..=10.
    pub const fn index(self) -> u8 {
        self as u8
    }
}

/// Operation width: `ALU64`/`JMP` (64-bit) or `ALU`/`JMP32` (32-bit, listed
/// as `wN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Width {
    W64,
    W32,
}

/// Memory access size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Size {
    U8,
    U16,
    U32,
    U64,
}

impl Size {
    pub(crate) const fn code(self) -> u8 {
        match self {
            Size::U32 => 0x00,
            Size::U16 => 0x08,
            Size::U8 => 0x10,
            Size::U64 => 0x18,
        }
    }
    pub(crate) const fn c_name(self) -> &'static str {
        match self {
            Size::U8 => "u8",
            Size::U16 => "u16",
            Size::U32 => "u32",
            Size::U64 => "u64",
        }
    }
}

/// Two-operand ALU operations (`dst op= src`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AluOp {
    Add,
    Sub,
    Mul,
    Div,
    Or,
    And,
    Lsh,
    Rsh,
    Mod,
    Xor,
    Mov,
    Arsh,
}

impl AluOp {
    pub(crate) const fn code(self) -> u8 {
        match self {
            AluOp::Add => 0x00,
            AluOp::Sub => 0x10,
            AluOp::Mul => 0x20,
            AluOp::Div => 0x30,
            AluOp::Or => 0x40,
            AluOp::And => 0x50,
            AluOp::Lsh => 0x60,
            AluOp::Rsh => 0x70,
            AluOp::Mod => 0x90,
            AluOp::Xor => 0xa0,
            AluOp::Mov => 0xb0,
            AluOp::Arsh => 0xc0,
        }
    }
    pub(crate) const fn symbol(self) -> &'static str {
        match self {
            AluOp::Add => "+=",
            AluOp::Sub => "-=",
            AluOp::Mul => "*=",
            AluOp::Div => "/=",
            AluOp::Or => "|=",
            AluOp::And => "&=",
            AluOp::Lsh => "<<=",
            AluOp::Rsh => ">>=",
            AluOp::Mod => "%=",
            AluOp::Xor => "^=",
            AluOp::Mov => "=",
            AluOp::Arsh => "s>>=",
        }
    }
}

/// Conditional-jump predicates (`if dst <cond> src goto label`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JmpCond {
    Eq,
    Gt,
    Ge,
    Set,
    Ne,
    Sgt,
    Sge,
    Lt,
    Le,
    Slt,
    Sle,
}

impl JmpCond {
    pub(crate) const fn code(self) -> u8 {
        match self {
            JmpCond::Eq => 0x10,
            JmpCond::Gt => 0x20,
            JmpCond::Ge => 0x30,
            JmpCond::Set => 0x40,
            JmpCond::Ne => 0x50,
            JmpCond::Sgt => 0x60,
            JmpCond::Sge => 0x70,
            JmpCond::Lt => 0xa0,
            JmpCond::Le => 0xb0,
            JmpCond::Slt => 0xc0,
            JmpCond::Sle => 0xd0,
        }
    }
    pub(crate) const fn symbol(self) -> &'static str {
        match self {
            JmpCond::Eq => "==",
            JmpCond::Gt => ">",
            JmpCond::Ge => ">=",
            JmpCond::Set => "&",
            JmpCond::Ne => "!=",
            JmpCond::Sgt => "s>",
            JmpCond::Sge => "s>=",
            JmpCond::Lt => "<",
            JmpCond::Le => "<=",
            JmpCond::Slt => "s<",
            JmpCond::Sle => "s<=",
        }
    }
    /// The condition that holds exactly when `self` does not (`jset` has
    /// none).
    pub const fn negate(self) -> Option<JmpCond> {
        Some(match self {
            JmpCond::Eq => JmpCond::Ne,
            JmpCond::Ne => JmpCond::Eq,
            JmpCond::Gt => JmpCond::Le,
            JmpCond::Le => JmpCond::Gt,
            JmpCond::Ge => JmpCond::Lt,
            JmpCond::Lt => JmpCond::Ge,
            JmpCond::Sgt => JmpCond::Sle,
            JmpCond::Sle => JmpCond::Sgt,
            JmpCond::Sge => JmpCond::Slt,
            JmpCond::Slt => JmpCond::Sge,
            JmpCond::Set => return None,
        })
    }
}

/// Second operand: a 32-bit immediate (sign-extended by the CPU for 64-bit
/// operations) or a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    Imm(i32),
    Reg(Reg),
}

impl From<Reg> for Operand {
    fn from(r: Reg) -> Self {
        Operand::Reg(r)
    }
}

impl From<i32> for Operand {
    fn from(i: i32) -> Self {
        Operand::Imm(i)
    }
}

/// Byte-order conversion target (`BPF_END`): `Be` = `htobe`/`bswap` on
/// little-endian hosts (use it for network-order fields), `Le` truncates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    Be,
    Le,
}

/// A jump target, created by [`Asm::new_label`](super::asm::Asm::new_label) and placed by
/// [`Asm::bind`](super::asm::Asm::bind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(pub(crate) u32);

/// Provenance of an instruction: an opaque id chosen by the code generator
/// (decision-graph node, rule id, …). [`Origin::NONE`] means "no origin".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin(pub u32);

impl Origin {
    pub const NONE: Origin = Origin(u32::MAX);
}

impl Default for Origin {
    fn default() -> Self {
        Origin::NONE
    }
}

/// One BPF operation. `LoadImm64`/`LoadMapFd` take two slots, all others one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `dst op= src` (ALU64 for `W64`, ALU for `W32`).
    Alu {
        width: Width,
        op: AluOp,
        dst: Reg,
        src: Operand,
    },
    /// `dst = -dst`.
    Neg { width: Width, dst: Reg },
    /// `dst = be16/be32/be64 dst` (or `le…`); `bits` is 16, 32 or 64.
    Endian {
        order: ByteOrder,
        bits: u8,
        dst: Reg,
    },
    /// `dst = *(size *)(base + off)` (LDX MEM).
    Load {
        size: Size,
        dst: Reg,
        base: Reg,
        off: i16,
    },
    /// `*(size *)(base + off) = src` (STX MEM for a register, ST MEM for an
    /// immediate).
    Store {
        size: Size,
        base: Reg,
        off: i16,
        src: Operand,
    },
    /// `lock *(size *)(base + off) += src` (STX ATOMIC ADD, `U32` or `U64`).
    AtomicAdd {
        size: Size,
        base: Reg,
        off: i16,
        src: Reg,
    },
    /// `dst = imm ll` (two slots).
    LoadImm64 { dst: Reg, imm: i64 },
    /// `dst = map fd` (two slots, `src_reg = BPF_PSEUDO_MAP_FD`), relocated
    /// against the map symbol `map` by the ELF writer.
    LoadMapFd { dst: Reg, map: String },
    /// `if dst cond src goto target` (JMP for `W64`, JMP32 for `W32`).
    Jump {
        width: Width,
        cond: JmpCond,
        dst: Reg,
        src: Operand,
        target: Label,
    },
    /// `goto target`.
    Ja { target: Label },
    /// `call helper`.
    Call { helper: u32 },
    /// `call kfunc` (`src_reg = BPF_PSEUDO_KFUNC_CALL`, `imm` 0): a call
    /// to the kernel function `name`, relocated by the ELF writer against
    /// an extern symbol (`crate::ebpf::kfunc`).
    CallKfunc { name: String },
    /// `exit` (returns `r0`).
    Exit,
}

impl Op {
    /// `dst = htobe16(dst)`: a 16-bit field loaded from the packet (network
    /// order) to its value, or a value to network order.
    pub fn be16(dst: Reg) -> Op {
        Op::Endian {
            order: ByteOrder::Be,
            bits: 16,
            dst,
        }
    }
    /// `dst = htobe32(dst)`.
    pub fn be32(dst: Reg) -> Op {
        Op::Endian {
            order: ByteOrder::Be,
            bits: 32,
            dst,
        }
    }
    /// `dst = src` (64-bit).
    pub fn mov64(dst: Reg, src: impl Into<Operand>) -> Op {
        Op::alu64(AluOp::Mov, dst, src)
    }
    /// `wdst = src` (32-bit, zero-extends).
    pub fn mov32(dst: Reg, src: impl Into<Operand>) -> Op {
        Op::alu32(AluOp::Mov, dst, src)
    }
    /// 64-bit ALU operation.
    pub fn alu64(op: AluOp, dst: Reg, src: impl Into<Operand>) -> Op {
        Op::Alu {
            width: Width::W64,
            op,
            dst,
            src: src.into(),
        }
    }
    /// 32-bit ALU operation.
    pub fn alu32(op: AluOp, dst: Reg, src: impl Into<Operand>) -> Op {
        Op::Alu {
            width: Width::W32,
            op,
            dst,
            src: src.into(),
        }
    }
    /// `dst = *(size *)(base + off)`.
    pub fn load(size: Size, dst: Reg, base: Reg, off: i16) -> Op {
        Op::Load {
            size,
            dst,
            base,
            off,
        }
    }
    /// `*(size *)(base + off) = src`.
    pub fn store(size: Size, base: Reg, off: i16, src: impl Into<Operand>) -> Op {
        Op::Store {
            size,
            base,
            off,
            src: src.into(),
        }
    }
    /// `if dst cond src goto target` (64-bit compare).
    pub fn jmp(cond: JmpCond, dst: Reg, src: impl Into<Operand>, target: Label) -> Op {
        Op::Jump {
            width: Width::W64,
            cond,
            dst,
            src: src.into(),
            target,
        }
    }
    /// `if wdst cond src goto target` (32-bit compare).
    pub fn jmp32(cond: JmpCond, dst: Reg, src: impl Into<Operand>, target: Label) -> Op {
        Op::Jump {
            width: Width::W32,
            cond,
            dst,
            src: src.into(),
            target,
        }
    }
    /// `dst = <fd of map>`.
    pub fn ld_map_fd(dst: Reg, map: impl Into<String>) -> Op {
        Op::LoadMapFd {
            dst,
            map: map.into(),
        }
    }
    /// Number of 8-byte slots this operation occupies.
    pub fn slots(&self) -> usize {
        match self {
            Op::LoadImm64 { .. } | Op::LoadMapFd { .. } => 2,
            _ => 1,
        }
    }
}

/// An operation with its provenance.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Insn {
    pub op: Op,
    pub origin: Origin,
    pub comment: Option<Arc<str>>,
}
