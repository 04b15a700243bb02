//! Connect-time load balancing: `cgroup/connect4`, `cgroup/sendmsg4` and
//! `cgroup/recvmsg4` programs, and their IPv6 twins `connect6`,
//! `sendmsg6` and `recvmsg6`, over the same service maps.
//!
//! `connect4` / `connect6` (TCP and connected UDP) and `sendmsg4` /
//! `sendmsg6` (unconnected UDP) look the destination up in `weir_lb_fe`,
//! choose a backend exactly as the TC stage does (affinity, Maglev,
//! weighted random) and rewrite `user_ip4` (`user_ip6`) / `user_port`, so
//! the socket talks to the backend directly: no per-packet NAT. For UDP
//! they record `(socket cookie, backend) → frontend` in `weir_lb_sk`;
//! `recvmsg4` / `recvmsg6` rewrite the source of a received datagram back
//! to the frontend so `recvfrom` reports the address the application sent
//! to. One program text per hook kind: the family decides only where the
//! addresses are (one word or four); tuples, keys and map entries are the
//! 16-byte, family-tagged layouts of [`super::layout`]. An IPv6 socket's
//! IPv4-mapped destination (`::ffff:a.b.c.d`) is balanced like the IPv4
//! frontend ([`super::mapped`]). SCTP sockets are left alone (the TC path
//! translates their packets, [`super::sctp`]).
//!
//! **Maglev at connect time.** The source port is not known when
//! `connect()` runs (or not meaningful for `sendmsg`), so the hashed tuple
//! is `(bound source address or the unspecified address, frontend, sport
//! 0, frontend port, proto)` — [`connect_flow_hash`]. All connections of
//! one client address to one frontend therefore go to the same backend
//! (as if with affinity); the TC path hashes the real source port, like
//! the interpreter.
//!
//! A frontend without backends makes `connect()` / `sendmsg()` fail with
//! `EPERM` (the program returns 0), counted in `weir_lb_cnt[NO_BACKENDS]`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::ebpf::{Asm, Assembled, JmpCond, Op, Operand, Reg, Size};
use crate::flowhash::flow_hash;
use crate::model::Proto;

use super::emit::{
    copy, count, count_flow, emit_choose, frontend_key_from_tuple, helper, lookup, st, update,
};
use super::layout::{be, cnt, fe, map, sk, tuple};
use super::mapped;
use Reg::*;

/// `struct bpf_sock_addr` offsets.
pub mod sock_addr {
    pub const USER_IP4: i16 = 4;
    /// `user_ip6[4]` (network order words).
    pub const USER_IP6: i16 = 8;
    pub const USER_PORT: i16 = 24;
    pub const PROTOCOL: i16 = 36;
    pub const SK: i16 = 64;
    /// `struct bpf_sock` `src_ip4`.
    pub const SK_SRC_IP4: i16 = 24;
    /// `struct bpf_sock` `src_ip6[4]`.
    pub const SK_SRC_IP6: i16 = 28;
}

/// The flow hash the connect-time programs use for Maglev: source port 0;
/// no bound source is the unspecified address of the frontend's family.
pub fn connect_flow_hash(src: Option<IpAddr>, frontend: IpAddr, port: u16, proto: Proto) -> u32 {
    let unspecified = if frontend.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    flow_hash(src.unwrap_or(unspecified), frontend, 0, port, proto)
}

/// Which hook a connect-time program is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Connect4,
    Sendmsg4,
    Connect6,
    Sendmsg6,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Connect4 => "connect4",
            Hook::Sendmsg4 => "sendmsg4",
            Hook::Connect6 => "connect6",
            Hook::Sendmsg6 => "sendmsg6",
        }
    }

    /// The address family (4 or 6).
    pub fn family(self) -> u8 {
        match self {
            Hook::Connect4 | Hook::Sendmsg4 => 4,
            Hook::Connect6 | Hook::Sendmsg6 => 6,
        }
    }
}

/// Address words of a family (1 for IPv4, 4 for IPv6) and where they are
/// in `bpf_sock_addr` (the destination) and `bpf_sock` (the bound source).
fn words(fam: u8) -> (i16, i16, i16) {
    if fam == 4 {
        (1, sock_addr::USER_IP4, sock_addr::SK_SRC_IP4)
    } else {
        (4, sock_addr::USER_IP6, sock_addr::SK_SRC_IP6)
    }
}

/// `cgroup/connect4` / `cgroup/sendmsg4` or their IPv6 twins: one
/// program text, the family deciding only where the addresses are (one
/// word or four) — the tuple, the frontend key and every map entry are
/// the family-generic 16-byte layouts.
pub fn connect_program(hook: Hook) -> Assembled {
    let mut a = Asm::new();
    let a_ = &mut a;
    let allow = a_.new_label("allow");
    let reject = a_.new_label("reject");
    let missing = a_.new_label("missing");
    let proto_ok = a_.new_label("proto_ok");
    let not_udp = a_.new_label("not_udp");
    let what = hook.name();
    let fam = hook.family();
    let (n, user_ip, sk_src) = words(fam);
    a_.set_origin(
        crate::ebpf::Origin::NONE,
        Some(&format!("{what}: frontend?")),
    );
    a_.push(Op::mov64(R6, R1));
    a_.push(Op::load(Size::U32, R1, R6, sock_addr::PROTOCOL));
    a_.push(Op::jmp(JmpCond::Eq, R1, 6, proto_ok));
    a_.push(Op::jmp(JmpCond::Ne, R1, 17, allow));
    a_.bind(proto_ok);
    // The tuple: (bound source, frontend, 0, port, proto, family),
    // addresses zero-padded to 16 bytes.
    for off in (0..32i16).step_by(8) {
        a_.push(Op::store(Size::U64, R10, st::TK + off, 0));
    }
    a_.push(Op::load(Size::U64, R2, R6, sock_addr::SK));
    for w in 0..n {
        a_.push(Op::load(Size::U32, R1, R2, sk_src + 4 * w));
        a_.push(Op::store(Size::U32, R10, st::TK + tuple::SRC + 4 * w, R1));
    }
    for w in 0..n {
        a_.push(Op::load(Size::U32, R1, R6, user_ip + 4 * w));
        a_.push(Op::store(Size::U32, R10, st::TK + tuple::DST + 4 * w, R1));
    }
    a_.push(Op::store(Size::U16, R10, st::TK + tuple::SPORT, 0));
    a_.push(Op::load(Size::U32, R1, R6, sock_addr::USER_PORT));
    a_.push(Op::be16(R1));
    a_.push(Op::store(Size::U16, R10, st::TK + tuple::DPORT, R1));
    a_.push(Op::store(Size::U32, R10, st::TK + tuple::PROTO, 0));
    a_.push(Op::load(Size::U32, R1, R6, sock_addr::PROTOCOL));
    a_.push(Op::store(Size::U8, R10, st::TK + tuple::PROTO, R1));
    a_.push(Op::store(
        Size::U8,
        R10,
        st::TK + tuple::FAMILY,
        i32::from(fam),
    ));
    if fam == 6 {
        // `::ffff:a.b.c.d`: the IPv4 frontend (`mapped.rs`).
        mapped::unmap_tuple(a_);
    }
    frontend_key_from_tuple(a_);
    lookup(a_, map::FE, st::FEK);
    a_.push(Op::jmp(JmpCond::Eq, R0, 0, allow));
    copy(a_, R10, st::FEV, R0, 0, fe::SIZE as i16);
    a_.push(Op::load(Size::U32, R1, R10, st::FEV + fe::COUNT));
    a_.push(Op::jmp(JmpCond::Eq, R1, 0, reject));
    a_.set_origin(
        crate::ebpf::Origin::NONE,
        Some(&format!("{what}: backend choice")),
    );
    emit_choose(a_, missing);
    a_.set_origin(
        crate::ebpf::Origin::NONE,
        Some(&format!("{what}: rewrite destination")),
    );
    if fam == 6 {
        mapped::write_user_ip6(a_, user_ip, R10, st::CTV + be::ADDR);
    } else {
        a_.push(Op::load(Size::U32, R1, R10, st::CTV + be::ADDR));
        a_.push(Op::store(Size::U32, R6, user_ip, R1));
    }
    a_.push(Op::load(Size::U16, R1, R10, st::CTV + be::PORT));
    a_.push(Op::be16(R1));
    a_.push(Op::store(Size::U32, R6, sock_addr::USER_PORT, R1));
    // UDP: remember (cookie, backend) → frontend for recvmsg.
    a_.push(Op::load(Size::U8, R1, R10, st::TK + tuple::PROTO));
    a_.push(Op::jmp(JmpCond::Ne, R1, 17, not_udp));
    a_.push(Op::mov64(R1, R6));
    a_.push(Op::Call {
        helper: helper::GET_SOCKET_COOKIE,
    });
    a_.push(Op::store(Size::U64, R10, st::RK + sk::COOKIE, R0));
    copy(a_, R10, st::RK + sk::ADDR, R10, st::CTV + be::ADDR, 16);
    a_.push(Op::load(Size::U16, R1, R10, st::CTV + be::PORT));
    a_.push(Op::be16(R1));
    a_.push(Op::store(Size::U16, R10, st::RK + sk::PORT, R1));
    a_.push(Op::store(Size::U16, R10, st::RK + sk::FAMILY, 0));
    copy(a_, R10, st::RK + sk::FAMILY, R10, st::TK + tuple::FAMILY, 1);
    a_.push(Op::store(Size::U32, R10, st::RK + sk::FAMILY + 2, 0));
    // An IPv4-mapped flow's entry is the IPv4 one (`mapped.rs`).
    copy(a_, R10, st::RV + sk::V_ADDR, R10, st::TK + tuple::DST, 16);
    a_.push(Op::load(Size::U16, R1, R10, st::TK + tuple::DPORT));
    a_.push(Op::be16(R1));
    a_.push(Op::store(Size::U16, R10, st::RV + sk::V_PORT, R1));
    a_.push(Op::store(Size::U16, R10, st::RV + sk::V_PORT + 2, 0));
    update(a_, map::SK, st::RK, st::RV);
    a_.bind(not_udp);
    count_flow(a_);
    count(a_, map::CNT, Operand::Imm(cnt::TRANSLATED as i32));
    a_.bind(allow);
    a_.push(Op::mov64(R0, 1));
    a_.push(Op::Exit);
    a_.set_origin(
        crate::ebpf::Origin::NONE,
        Some(&format!("{what}: no backends: EPERM")),
    );
    a_.bind(reject);
    count(a_, map::CNT, Operand::Imm(cnt::NO_BACKENDS as i32));
    a_.push(Op::mov64(R0, 0));
    a_.push(Op::Exit);
    a_.bind(missing);
    count(a_, map::CNT, Operand::Imm(cnt::MISSING as i32));
    a_.push(Op::mov64(R0, 0));
    a_.push(Op::Exit);
    a.assemble().expect("connect program assembles")
}

/// `cgroup/recvmsg4` (`fam` 4) or `cgroup/recvmsg6` (6): a datagram from
/// a backend this socket reached through a frontend is reported as coming
/// from the frontend.
pub fn recvmsg_program(fam: u8) -> Assembled {
    let mut a = Asm::new();
    let allow = a.new_label("allow");
    let (n, user_ip, _) = words(fam);
    a.set_origin(
        crate::ebpf::Origin::NONE,
        Some(&format!("recvmsg{fam}: reverse translation")),
    );
    a.push(Op::mov64(R6, R1));
    a.push(Op::Call {
        helper: helper::GET_SOCKET_COOKIE,
    });
    a.push(Op::store(Size::U64, R10, st::RK + sk::COOKIE, R0));
    for off in (sk::ADDR..sk::ADDR + 16).step_by(8) {
        a.push(Op::store(Size::U64, R10, st::RK + off, 0));
    }
    for w in 0..n {
        a.push(Op::load(Size::U32, R1, R6, user_ip + 4 * w));
        a.push(Op::store(Size::U32, R10, st::RK + sk::ADDR + 4 * w, R1));
    }
    a.push(Op::load(Size::U32, R1, R6, sock_addr::USER_PORT));
    a.push(Op::store(Size::U16, R10, st::RK + sk::PORT, R1));
    a.push(Op::store(
        Size::U16,
        R10,
        st::RK + sk::FAMILY,
        i32::from(fam),
    ));
    a.push(Op::store(Size::U32, R10, st::RK + sk::FAMILY + 2, 0));
    if fam == 6 {
        mapped::unmap_sk_key(&mut a, st::RK + sk::ADDR, st::RK + sk::FAMILY);
    }
    lookup(&mut a, map::SK, st::RK);
    a.push(Op::jmp(JmpCond::Eq, R0, 0, allow));
    if fam == 6 {
        mapped::write_user_ip6(&mut a, user_ip, R0, sk::V_ADDR);
    } else {
        a.push(Op::load(Size::U32, R1, R0, sk::V_ADDR));
        a.push(Op::store(Size::U32, R6, user_ip, R1));
    }
    a.push(Op::load(Size::U16, R1, R0, sk::V_PORT));
    a.push(Op::store(Size::U32, R6, sock_addr::USER_PORT, R1));
    count(&mut a, map::CNT, Operand::Imm(cnt::REVERSE as i32));
    a.bind(allow);
    a.push(Op::mov64(R0, 1));
    a.push(Op::Exit);
    a.assemble().expect("recvmsg program assembles")
}
