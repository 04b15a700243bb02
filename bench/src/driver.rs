//! The test driver (issue 21): a TC program, built with weir's own
//! assembler and ELF writer like the floors in [`crate::ebpf`], that
//! restores the packet and (optionally) writes a fresh source port each
//! repetition, then tail-calls the program under test.
//!
//! Why: BPF_PROG_TEST_RUN with `repeat = N` runs the program N times on
//! one skb. Without a driver, every repetition after the first sees the
//! flow the first one created (an allowed packet becomes an established
//! flow after one repetition) and a translated packet stays translated.
//! The driver makes every repetition a fresh 5-tuple on the original
//! bytes, so "new allowed flow" and "new flow to a service" measure the
//! conntrack and translation inserts a new flow pays. Without rotation it
//! only restores the packet: the established-flow rows.
//!
//! The source port is `1024 + counter` (16 bits) where the counter lives
//! in the driver's own array map, so a driver gives at most
//! [`FRESH_PORTS`] distinct flows; the caller keeps the repetitions of a
//! rotating driver (all rounds together) below that, so no flow repeats.
//! The driver's own cost is measured by driving the empty program (the
//! "driver + empty" floor).

use aya::maps::ProgramArray;
use aya::programs::SchedClassifier;
use aya::Ebpf;
use weir_compiler::ebpf::*;

use crate::ebpf::Subject;

/// Distinct source ports one rotating driver gives before they repeat.
pub const FRESH_PORTS: u32 = 64_000;

/// The driver's program name.
pub const DRIVER: &str = "bench_driver";
const CTR: &str = "bench_ctr";
const JMP: &str = "bench_jmp";
/// Returned when the tail call fails (no program in the slot).
pub const NO_TAIL_CALL: i32 = 99;
/// Stack offset of the frame copy.
const FRAME_AT: i16 = -256;

/// Offset of the transport source port in an Ethernet frame: after the
/// IPv4 header (its IHL) or the fixed IPv6 header (no extension headers).
fn sport_offset(frame: &[u8]) -> usize {
    if frame[12..14] == [0x86, 0xdd] {
        14 + 40
    } else {
        14 + usize::from(frame[14] & 15) * 4
    }
}

/// The driver object for `frame`: restores it and, if `rotate`, sets a
/// fresh source port (TCP / UDP over IPv4 or IPv6 without extension
/// headers) each repetition, then tail-calls slot 0 of its prog array.
pub fn object(frame: &[u8], rotate: bool) -> Result<ObjectDef, String> {
    if frame.len() > 240 || frame.len() < 38 || sport_offset(frame) + 2 > frame.len() {
        return Err(format!("driver: frame of {} bytes", frame.len()));
    }
    let sport_at = FRAME_AT + sport_offset(frame) as i16;
    let mut a = Asm::new();
    let out = a.new_label("out");
    a.push(Op::mov64(Reg::R6, Reg::R1));
    // The frame onto the stack, 4 bytes at a time.
    let mut padded = frame.to_vec();
    padded.resize(frame.len().div_ceil(4) * 4, 0);
    for (i, w) in padded.chunks(4).enumerate() {
        let v = i32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
        a.push(Op::store(Size::U32, Reg::R10, FRAME_AT + 4 * i as i16, v));
    }
    if rotate {
        // r7 = counter++ (one CPU runs a test run: no atomics needed).
        a.push(Op::store(Size::U32, Reg::R10, -4, 0));
        a.push(Op::mov64(Reg::R2, Reg::R10));
        a.push(Op::alu64(AluOp::Add, Reg::R2, -4));
        a.push(Op::ld_map_fd(Reg::R1, CTR));
        a.push(Op::Call {
            helper: helper::MAP_LOOKUP_ELEM,
        });
        a.push(Op::jmp(JmpCond::Eq, Reg::R0, 0, out));
        a.push(Op::load(Size::U32, Reg::R7, Reg::R0, 0));
        a.push(Op::mov64(Reg::R8, Reg::R7));
        a.push(Op::alu64(AluOp::Add, Reg::R8, 1));
        a.push(Op::store(Size::U32, Reg::R0, 0, Reg::R8));
        // sport = htons(1024 + counter)
        a.push(Op::alu64(AluOp::Add, Reg::R7, 1024));
        a.push(Op::Endian {
            order: ByteOrder::Be,
            bits: 16,
            dst: Reg::R7,
        });
        a.push(Op::store(Size::U16, Reg::R10, sport_at, Reg::R7));
    }
    // bpf_skb_store_bytes(skb, 0, frame, len, 0)
    a.push(Op::mov64(Reg::R1, Reg::R6));
    a.push(Op::mov64(Reg::R2, 0));
    a.push(Op::mov64(Reg::R3, Reg::R10));
    a.push(Op::alu64(AluOp::Add, Reg::R3, FRAME_AT as i32));
    a.push(Op::mov64(Reg::R4, frame.len() as i32));
    a.push(Op::mov64(Reg::R5, 0));
    a.push(Op::Call {
        helper: helper::SKB_STORE_BYTES,
    });
    // bpf_tail_call(skb, jmp, 0)
    a.push(Op::mov64(Reg::R1, Reg::R6));
    a.push(Op::ld_map_fd(Reg::R2, JMP));
    a.push(Op::mov64(Reg::R3, 0));
    a.push(Op::Call {
        helper: helper::TAIL_CALL,
    });
    a.bind(out);
    a.push(Op::mov64(Reg::R0, NO_TAIL_CALL));
    a.push(Op::Exit);
    Ok(ObjectDef {
        programs: vec![ProgramDef {
            name: DRIVER.into(),
            section: "classifier".into(),
            code: a.assemble().map_err(|e| format!("driver: {e:?}"))?,
        }],
        maps: vec![
            MapDef::new(CTR, MapType::Array, 4, 4, 1),
            MapDef::prog_array(JMP, 1),
        ],
        license: "GPL".into(),
    })
}

/// A loaded driver for `frame` whose slot 0 is `program` of `target`
/// (loaded), as a subject of [`crate::ebpf::measure_interleaved`] running
/// `repeat` repetitions per round.
pub fn drive(
    target: &Ebpf,
    program: &str,
    label: &str,
    frame: Vec<u8>,
    rotate: bool,
    repeat: u32,
) -> Result<Subject, String> {
    let obj = object(&frame, rotate)?;
    let bytes = write_object(&obj).map_err(|e| format!("driver: ELF: {e:?}"))?;
    let mut ebpf = Ebpf::load(&bytes).map_err(|e| format!("driver: load: {e}"))?;
    let p: &mut SchedClassifier = ebpf
        .program_mut(DRIVER)
        .ok_or("no driver program")?
        .try_into()
        .map_err(|e| format!("driver: {e}"))?;
    p.load().map_err(|e| format!("driver: verifier: {e}"))?;
    let under: &SchedClassifier = target
        .program(program)
        .ok_or_else(|| format!("no program {program}"))?
        .try_into()
        .map_err(|e| format!("{program}: {e}"))?;
    let fd = under
        .fd()
        .map_err(|e| format!("{program}: {e}"))?
        .try_clone()
        .map_err(|e| format!("{program}: {e}"))?;
    let mut jmp = ProgramArray::try_from(ebpf.map_mut(JMP).ok_or("no driver prog array")?)
        .map_err(|e| format!("driver: {e}"))?;
    jmp.set(0, &fd, 0)
        .map_err(|e| format!("driver: tail-call slot: {e}"))?;
    Ok(Subject::new(ebpf, DRIVER, vec![(label.into(), frame)]).with_repeat(repeat))
}

/// Repetitions per round of a rotating driver: every round (and the
/// warm-up round) a fresh flow each repetition, no port used twice.
pub fn fresh_repeat(repeat: u32, runs: usize) -> u32 {
    repeat.min(FRESH_PORTS / (runs as u32 + 1))
}

/// Entries in a hash map (read back from the kernel, key by key).
pub fn entries(ebpf: &Ebpf, map: &str, key_size: usize) -> Result<usize, String> {
    let m = ebpf.map(map).ok_or_else(|| format!("no map {map}"))?;
    weir_runtime::ebpf::load::keys_raw(m, key_size)
        .map(|k| k.len())
        .map_err(|e| format!("{map}: reading keys: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_assembles_and_rejects_odd_frames() {
        let f = vec![0u8; 54];
        let o = object(&f, true).unwrap();
        assert_eq!(o.programs.len(), 1);
        assert!(write_object(&o).is_ok());
        assert!(object(&[0u8; 20], false).is_err());
        assert_eq!(fresh_repeat(1_000_000, 5), 10_666);
        assert_eq!(fresh_repeat(10_000, 3), 10_000);
    }
}
