//! Objects with the service programs: the standalone TC program (parse +
//! ICMP errors about translated flows + reverse NAT + service stage), the connect-time programs, and a
//! hand-written parse + hash-lookup baseline for measurements.

use crate::ebpf::layout::{ctx, map as pmap};
use crate::ebpf::{
    AluOp, Asm, Assembled, JmpCond, MapDef, MapType, ObjectDef, Op, ProgramDef, Reg, Size,
};

use super::emit::{
    copy, count, emit_established_dnat, emit_reverse_nat, emit_service_stage, lookup, CtxLayout,
    RejectCount, StageEnv,
};
use super::icmp_error::{self as quote, FE, V4};
use super::layout::{cnt, fe_key, map, rev, Capacity};
use super::sock::{connect_program, recvmsg_program, Hook};
use crate::ebpf::Operand;
use Reg::*;

/// Program names.
pub mod prog {
    pub const TC: &str = "weir_lb_tc";
    pub const CONNECT4: &str = "weir_lb_conn4";
    pub const SENDMSG4: &str = "weir_lb_send4";
    pub const RECVMSG4: &str = "weir_lb_recv4";
    pub const CONNECT6: &str = "weir_lb_conn6";
    pub const SENDMSG6: &str = "weir_lb_send6";
    pub const RECVMSG6: &str = "weir_lb_recv6";
    /// The connect-time programs, in attach order.
    pub const SOCK: [&str; 6] = [CONNECT4, SENDMSG4, RECVMSG4, CONNECT6, SENDMSG6, RECVMSG6];
    pub const BASELINE: &str = "weir_lb_base";
}

/// `__sk_buff` offsets.
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;

/// Parses Ethernet / IPv4 / TCP-UDP-SCTP ports into the context at r6 (pass
/// non-IPv4 to `pass`, malformed to `drop`).
fn parse_v4(a: &mut Asm, pass: crate::ebpf::Label, drop: crate::ebpf::Label) {
    let parsed = a.new_label("parsed");
    let ports = a.new_label("ports");
    for off in [0i16, 8, 16, 24, 32] {
        a.push(Op::store(Size::U64, R6, off, 0));
    }
    a.push(Op::load(Size::U32, R2, R7, SKB_DATA));
    a.push(Op::load(Size::U32, R3, R7, SKB_DATA_END));
    a.push(Op::mov64(R4, R2));
    a.push(Op::alu64(AluOp::Add, R4, 34));
    a.push(Op::jmp(JmpCond::Gt, R4, R3, pass));
    a.push(Op::load(Size::U16, R4, R2, 12));
    a.push(Op::jmp(JmpCond::Ne, R4, 0x0008, pass));
    a.push(Op::load(Size::U8, R5, R2, 14));
    a.push(Op::alu64(AluOp::And, R5, 15));
    a.push(Op::alu64(AluOp::Lsh, R5, 2));
    a.push(Op::jmp(JmpCond::Lt, R5, 20, drop));
    a.push(Op::load(Size::U32, R4, R2, 26));
    a.push(Op::store(Size::U32, R6, ctx::SRC, R4));
    a.push(Op::load(Size::U32, R4, R2, 30));
    a.push(Op::store(Size::U32, R6, ctx::DST, R4));
    a.push(Op::store(Size::U8, R6, ctx::FAMILY, 4));
    a.push(Op::load(Size::U8, R4, R2, 23));
    a.push(Op::store(Size::U8, R6, ctx::RAW_PROTO, R4));
    a.push(Op::store(Size::U8, R6, ctx::PROTO, R4));
    a.push(Op::load(Size::U16, R0, R2, 20));
    a.push(Op::be16(R0));
    a.push(Op::alu64(AluOp::And, R0, 0x1fff));
    a.push(Op::jmp(JmpCond::Ne, R0, 0, parsed));
    let icmp = a.new_label("icmp");
    a.push(Op::jmp(JmpCond::Eq, R4, 1, icmp));
    a.push(Op::jmp(JmpCond::Eq, R4, 6, ports));
    a.push(Op::jmp(JmpCond::Eq, R4, super::sctp::IPPROTO_SCTP, ports));
    a.push(Op::jmp(JmpCond::Ne, R4, 17, parsed));
    a.bind(ports);
    a.push(Op::alu64(AluOp::Add, R2, 14));
    a.push(Op::alu64(AluOp::Add, R2, R5));
    a.push(Op::mov64(R4, R2));
    a.push(Op::alu64(AluOp::Add, R4, 4));
    a.push(Op::jmp(JmpCond::Gt, R4, R3, drop));
    a.push(Op::load(Size::U16, R4, R2, 0));
    a.push(Op::be16(R4));
    a.push(Op::store(Size::U16, R6, ctx::SPORT, R4));
    a.push(Op::load(Size::U16, R4, R2, 2));
    a.push(Op::be16(R4));
    a.push(Op::store(Size::U16, R6, ctx::DPORT, R4));
    a.push(Op::Ja { target: parsed });
    // ICMP: its type (for the related-error check).
    a.bind(icmp);
    a.push(Op::alu64(AluOp::Add, R2, 14));
    a.push(Op::alu64(AluOp::Add, R2, R5));
    a.push(Op::mov64(R4, R2));
    a.push(Op::alu64(AluOp::Add, R4, 1));
    a.push(Op::jmp(JmpCond::Gt, R4, R3, parsed));
    a.push(Op::load(Size::U8, R4, R2, 0));
    a.push(Op::store(Size::U8, R6, ctx::ICMP_TYPE, R4));
    a.bind(parsed);
}

/// An ICMP error about a translated flow, on its way back to the flow's
/// client: the quote is a packet the client sent (client → backend), so
/// the quote reversed is the flow's reply tuple, a `weir_lb_rev` key. A
/// hit is reverse-translated with the policy pipeline's code
/// ([`quote::reverse_nat_error`]: quote, its checksums, the ICMP checksum,
/// the outer source when the backend sent it), counted as a reverse NAT,
/// and passed (`done`); anything else falls through.
fn related_errors(a: &mut Asm, done: crate::ebpf::Label) {
    /// The reply tuple's key (clear of the quote's stack area).
    const K: i16 = -400;
    let not = a.new_label("lb_not_related");
    a.push(Op::load(Size::U8, R1, R6, ctx::PROTO));
    a.push(Op::jmp(JmpCond::Ne, R1, 1, not));
    quote::error_type(a, V4, not);
    quote::read_quote(a, V4, not);
    quote::reversed_quote_key(a, K);
    lookup(a, map::REV, K);
    a.push(Op::jmp(JmpCond::Eq, R0, 0, not));
    copy(a, R10, FE, R0, rev::ADDR, 16);
    copy(a, R10, FE + 16, R0, rev::PORT, 2);
    count(a, map::CNT, Operand::Imm(cnt::REVERSE as i32));
    quote::set_toward(a, quote::Toward::Client);
    quote::reverse_nat_error(a, V4);
    a.push(Op::Ja { target: done });
    a.bind(not);
}

/// `r7 = skb`, `r6 = &weir_ctx[0]` (drop on failure).
fn entry(a: &mut Asm, drop: crate::ebpf::Label) {
    a.push(Op::mov64(R7, R1));
    a.push(Op::store(Size::U32, R10, -4, 0));
    a.push(Op::mov64(R2, R10));
    a.push(Op::alu64(AluOp::Add, R2, -4));
    a.push(Op::ld_map_fd(R1, pmap::CTX));
    a.push(Op::Call { helper: 1 });
    a.push(Op::jmp(JmpCond::Eq, R0, 0, drop));
    a.push(Op::mov64(R6, R0));
}

/// The standalone TC program: parse, reverse NAT (replies), service stage.
/// Returns `TC_ACT_OK` (0) or `TC_ACT_SHOT` (2) for rejects.
pub fn tc_program() -> Assembled {
    let mut a = Asm::new();
    let ok = a.new_label("ok");
    let drop = a.new_label("drop");
    entry(&mut a, drop);
    parse_v4(&mut a, ok, drop);
    let env = StageEnv {
        // No model here: the CRC32c update for any SCTP port change.
        ctx: CtxLayout {
            sctp_crc: true,
            ..CtxLayout::pipeline()
        },
        cont: ok,
        drop,
        reject: RejectCount::LbCounter,
        rejected: None,
        lb_counters: true,
    };
    related_errors(&mut a, ok);
    emit_reverse_nat(&mut a, &env, ok);
    emit_established_dnat(&mut a, &env, Some(ok));
    emit_service_stage(&mut a, &env);
    a.bind(ok);
    a.push(Op::mov64(R0, 0));
    a.push(Op::Exit);
    a.bind(drop);
    a.push(Op::mov64(R0, 2));
    a.push(Op::Exit);
    a.assemble().expect("service TC program assembles")
}

/// Baseline for measurements: the same parse, then one hash lookup of
/// (destination, port, proto) in `weir_lb_fe`; returns `TC_ACT_OK`.
pub fn baseline_program() -> Assembled {
    let mut a = Asm::new();
    let ok = a.new_label("ok");
    let drop = a.new_label("drop");
    entry(&mut a, drop);
    parse_v4(&mut a, ok, drop);
    const K: i16 = -32;
    for (dst, src, size) in [
        (fe_key::ADDR, ctx::DST, Size::U64),
        (fe_key::ADDR + 8, ctx::DST + 8, Size::U64),
        (fe_key::PORT, ctx::DPORT, Size::U16),
        (fe_key::PROTO, ctx::RAW_PROTO, Size::U8),
        (fe_key::FAMILY, ctx::FAMILY, Size::U8),
    ] {
        a.push(Op::load(size, R1, R6, src));
        a.push(Op::store(size, R10, K + dst, R1));
    }
    a.push(Op::mov64(R2, R10));
    a.push(Op::alu64(AluOp::Add, R2, i32::from(K)));
    a.push(Op::ld_map_fd(R1, map::FE));
    a.push(Op::Call { helper: 1 });
    a.push(Op::jmp(JmpCond::Eq, R0, 0, ok));
    a.push(Op::load(Size::U32, R1, R0, 0));
    a.bind(ok);
    a.push(Op::mov64(R0, 0));
    a.push(Op::Exit);
    a.bind(drop);
    a.push(Op::mov64(R0, 2));
    a.push(Op::Exit);
    a.assemble().expect("baseline assembles")
}

/// Maps of the service object: the service maps (with the translation
/// and reverse-NAT tables its TC program keeps) plus the scratch context.
pub fn object_maps(cap: &Capacity) -> Vec<MapDef> {
    let mut maps = cap.maps();
    maps.push(cap.ct_map());
    maps.push(cap.rev_map());
    maps.push(MapDef::new(
        pmap::CTX,
        MapType::PercpuArray,
        4,
        ctx::SIZE,
        1,
    ));
    maps
}

fn program(name: &str, section: &str, code: Assembled) -> ProgramDef {
    ProgramDef {
        name: name.into(),
        section: section.into(),
        code,
    }
}

/// `cgroup/connect4`, `cgroup/sendmsg4`, `cgroup/recvmsg4` and their
/// IPv6 twins.
fn sock_programs() -> Vec<ProgramDef> {
    vec![
        program(
            prog::CONNECT4,
            "cgroup/connect4",
            connect_program(Hook::Connect4),
        ),
        program(
            prog::SENDMSG4,
            "cgroup/sendmsg4",
            connect_program(Hook::Sendmsg4),
        ),
        program(prog::RECVMSG4, "cgroup/recvmsg4", recvmsg_program(4)),
        program(
            prog::CONNECT6,
            "cgroup/connect6",
            connect_program(Hook::Connect6),
        ),
        program(
            prog::SENDMSG6,
            "cgroup/sendmsg6",
            connect_program(Hook::Sendmsg6),
        ),
        program(prog::RECVMSG6, "cgroup/recvmsg6", recvmsg_program(6)),
    ]
}

/// One object with the TC program, the three connect-time programs and
/// the baseline, sharing the service maps.
pub fn service_object(cap: &Capacity) -> ObjectDef {
    let mut programs = vec![program(prog::TC, "classifier", tc_program())];
    programs.extend(sock_programs());
    programs.push(program(prog::BASELINE, "classifier", baseline_program()));
    ObjectDef {
        programs,
        maps: object_maps(cap),
        license: "GPL".into(),
    }
}

/// The connect-time programs alone over the service maps of `cap` (the
/// same definitions as the policy pipeline's `weir_lb_*` maps, so the
/// runtime can load this object against a generation's pinned maps and
/// attach it to a cgroup at `weir apply --cgroup`).
pub fn sock_object(cap: &Capacity) -> ObjectDef {
    ObjectDef {
        programs: sock_programs(),
        maps: cap.maps(),
        license: "GPL".into(),
    }
}
