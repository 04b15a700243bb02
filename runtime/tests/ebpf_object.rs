//! Kernel tests for the compiler's eBPF assembler and ELF writer: objects
//! built with `weir_compiler::ebpf` are loaded with aya and run with
//! BPF_PROG_TEST_RUN, and loaded with libbpf (`bpftool prog loadall`).
//!
//! Needs root. Without root the tests are skipped, unless `CI` is set, in
//! which case they fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, PerCpuArray, ProgramArray};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use aya::Ebpf;
use weir_compiler::ebpf::*;

/// `true` if the test may touch the kernel; panics under `CI` without root.
fn have_root(test: &str) -> bool {
    weir_runtime::kernel_test::may_run(test, &[])
}

/// Finds a tool on PATH or in /usr/sbin; panics under `CI` if missing.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{name} is not installed (CI is set, so not skipping)");
        }
        eprintln!("{name} not installed: skipping that part");
    }
    found
}

// struct __sk_buff offsets.
const SKB_LEN: i16 = 0;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;

const ETH_HLEN: i32 = 14;
const DADDR_OFF: i16 = (ETH_HLEN + 16) as i16;

/// Ethernet + IPv4 + TCP, 54 bytes, to `daddr`.
fn packet(daddr: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0u8; 54];
    p[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    p[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    p[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut p[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 6; // TCP
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&daddr);
    let tcp = &mut p[34..54];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&5432u16.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    p
}

/// Emits: r2 = data, r3 = data_end, jump to `short` unless `need` bytes are
/// there.
fn bounds_check(a: &mut Asm, need: i32, short: Label) {
    a.push(Op::load(Size::U32, Reg::R2, Reg::R6, SKB_DATA));
    a.push(Op::load(Size::U32, Reg::R3, Reg::R6, SKB_DATA_END));
    a.push(Op::mov64(Reg::R4, Reg::R2));
    a.push(Op::alu64(AluOp::Add, Reg::R4, need));
    a.push(Op::jmp(JmpCond::Gt, Reg::R4, Reg::R3, short));
}

const SHORT_VERDICT: u32 = 99;

/// (a) skb->len check, ethertype check, hash lookup of daddr in `verdicts`,
/// returns the value or 0 (TC_ACT_OK) on miss, 99 for short packets.
fn lookup_program() -> Assembled {
    let mut a = Asm::new();
    let short = a.new_label("short");
    let pass = a.new_label("pass");
    a.set_origin(Origin(1), Some("parse"));
    a.push(Op::mov64(Reg::R6, Reg::R1));
    a.push(Op::load(Size::U32, Reg::R2, Reg::R6, SKB_LEN));
    a.push(Op::jmp32(JmpCond::Lt, Reg::R2, 54, short));
    bounds_check(&mut a, 34, short);
    a.push(Op::load(Size::U16, Reg::R4, Reg::R2, 12));
    a.push(Op::Endian {
        order: ByteOrder::Be,
        bits: 16,
        dst: Reg::R4,
    });
    a.push(Op::jmp(JmpCond::Ne, Reg::R4, 0x0800, pass));
    a.push(Op::load(Size::U32, Reg::R4, Reg::R2, DADDR_OFF));
    a.push(Op::store(Size::U32, Reg::R10, -4, Reg::R4));
    a.set_origin(Origin(2), Some("rule 1 (verdict by daddr)"));
    a.push(Op::mov64(Reg::R2, Reg::R10));
    a.push(Op::alu64(AluOp::Add, Reg::R2, -4));
    a.push(Op::ld_map_fd(Reg::R1, "verdicts"));
    a.push(Op::Call {
        helper: helper::MAP_LOOKUP_ELEM,
    });
    a.push(Op::jmp(JmpCond::Eq, Reg::R0, 0, pass));
    a.push(Op::load(Size::U32, Reg::R0, Reg::R0, 0));
    a.push(Op::Exit);
    a.set_origin(Origin(3), Some("default"));
    a.bind(pass);
    a.push(Op::mov64(Reg::R0, 0));
    a.push(Op::Exit);
    a.bind(short);
    a.push(Op::mov64(Reg::R0, SHORT_VERDICT as i32));
    a.push(Op::Exit);
    a.assemble().unwrap()
}

/// (b) LPM lookup of daddr in `nets` → class (0 on miss), counts per class
/// in the per-CPU array `counters`, returns the class.
fn lpm_program() -> Assembled {
    let mut a = Asm::new();
    let out = a.new_label("out");
    let count = a.new_label("count");
    a.push(Op::mov64(Reg::R6, Reg::R1));
    a.push(Op::mov64(Reg::R7, 0));
    bounds_check(&mut a, 34, out);
    a.push(Op::load(Size::U32, Reg::R4, Reg::R2, DADDR_OFF));
    a.push(Op::store(Size::U32, Reg::R10, -8, 32)); // prefixlen
    a.push(Op::store(Size::U32, Reg::R10, -4, Reg::R4));
    a.push(Op::mov64(Reg::R2, Reg::R10));
    a.push(Op::alu64(AluOp::Add, Reg::R2, -8));
    a.push(Op::ld_map_fd(Reg::R1, "nets"));
    a.push(Op::Call {
        helper: helper::MAP_LOOKUP_ELEM,
    });
    a.push(Op::jmp(JmpCond::Eq, Reg::R0, 0, count));
    a.push(Op::load(Size::U32, Reg::R7, Reg::R0, 0));
    a.bind(count);
    a.push(Op::store(Size::U32, Reg::R10, -12, Reg::R7));
    a.push(Op::mov64(Reg::R2, Reg::R10));
    a.push(Op::alu64(AluOp::Add, Reg::R2, -12));
    a.push(Op::ld_map_fd(Reg::R1, "counters"));
    a.push(Op::Call {
        helper: helper::MAP_LOOKUP_ELEM,
    });
    a.push(Op::jmp(JmpCond::Eq, Reg::R0, 0, out));
    a.push(Op::mov64(Reg::R1, 1));
    a.push(Op::AtomicAdd {
        size: Size::U64,
        base: Reg::R0,
        off: 0,
        src: Reg::R1,
    });
    a.bind(out);
    a.push(Op::mov64(Reg::R0, Reg::R7));
    a.push(Op::Exit);
    a.assemble().unwrap()
}

const TAIL_FALLTHROUGH: u32 = 1;
const TAIL_TARGET: u32 = 7;

/// (c) tail call into slot 0 of `jmp_table`; returns 1 if the call fails.
fn tail_entry_program() -> Assembled {
    let mut a = Asm::new();
    a.push(Op::mov64(Reg::R6, Reg::R1));
    a.push(Op::mov64(Reg::R1, Reg::R6));
    a.push(Op::ld_map_fd(Reg::R2, "jmp_table"));
    a.push(Op::mov64(Reg::R3, 0));
    a.push(Op::Call {
        helper: helper::TAIL_CALL,
    });
    a.push(Op::mov64(Reg::R0, TAIL_FALLTHROUGH as i32));
    a.push(Op::Exit);
    a.assemble().unwrap()
}

fn tail_target_program() -> Assembled {
    let mut a = Asm::new();
    a.push(Op::LoadImm64 {
        dst: Reg::R0,
        imm: i64::from(TAIL_TARGET),
    });
    a.push(Op::Exit);
    a.assemble().unwrap()
}

fn prog(name: &str, code: Assembled) -> ProgramDef {
    ProgramDef {
        name: name.into(),
        section: "classifier".into(),
        code,
    }
}

fn lookup_object() -> ObjectDef {
    ObjectDef {
        programs: vec![prog("weir_lookup", lookup_program())],
        maps: vec![MapDef::new("verdicts", MapType::Hash, 4, 4, 1024)],
        license: "GPL".into(),
    }
}

fn lpm_object() -> ObjectDef {
    ObjectDef {
        programs: vec![prog("weir_lpm", lpm_program())],
        maps: vec![
            MapDef::lpm_trie("nets", 4, 4, 1024),
            MapDef::new("counters", MapType::PercpuArray, 4, 8, 4),
        ],
        license: "GPL".into(),
    }
}

fn tail_object() -> ObjectDef {
    ObjectDef {
        programs: vec![
            prog("weir_entry", tail_entry_program()),
            prog("weir_target", tail_target_program()),
        ],
        maps: vec![MapDef::prog_array("jmp_table", 4)],
        license: "GPL".into(),
    }
}

/// Everything in one object (several sections, several maps).
fn combined_object() -> ObjectDef {
    let mut obj = lookup_object();
    for other in [lpm_object(), tail_object()] {
        obj.programs.extend(other.programs);
        obj.maps.extend(other.maps);
    }
    obj.programs.push(ProgramDef {
        name: "weir_xdp_pass".into(),
        section: "xdp".into(),
        code: {
            let mut a = Asm::new();
            a.push(Op::mov64(Reg::R0, 2)); // XDP_PASS
            a.push(Op::Exit);
            a.assemble().unwrap()
        },
    });
    obj
}

fn load_classifier<'a>(ebpf: &'a mut Ebpf, name: &str) -> &'a mut SchedClassifier {
    let p: &mut SchedClassifier = ebpf
        .program_mut(name)
        .unwrap_or_else(|| panic!("no program {name}"))
        .try_into()
        .unwrap();
    p.load().unwrap_or_else(|e| panic!("loading {name}: {e:?}"));
    p
}

fn run(p: &SchedClassifier, data: &[u8]) -> u32 {
    let mut out = vec![0u8; data.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(data),
        data_out: Some(&mut out),
        ..Default::default()
    };
    p.test_run(opts).expect("BPF_PROG_TEST_RUN").return_value
}

#[test]
fn ebpf_hash_lookup_verdict_follows_map() {
    if !have_root("ebpf_hash_lookup_verdict_follows_map") {
        return;
    }
    let bytes = write_object(&lookup_object()).unwrap();
    let mut ebpf = Ebpf::load(&bytes).expect("aya loads the object");
    load_classifier(&mut ebpf, "weir_lookup");

    let dst = [10, 1, 2, 3];
    let key = u32::from_ne_bytes(dst);
    let pkt = packet(dst);
    {
        let p: &SchedClassifier = ebpf.program("weir_lookup").unwrap().try_into().unwrap();
        assert_eq!(run(p, &pkt), 0, "miss → TC_ACT_OK");
        assert_eq!(run(p, &pkt[..40]), SHORT_VERDICT, "short packet");
    }
    let mut verdicts: HashMap<_, u32, u32> =
        HashMap::try_from(ebpf.map_mut("verdicts").unwrap()).unwrap();
    verdicts.insert(key, 2, 0).unwrap();
    let p: &SchedClassifier = ebpf.program("weir_lookup").unwrap().try_into().unwrap();
    assert_eq!(run(p, &pkt), 2, "hit → map value");
    assert_eq!(run(p, &packet([10, 1, 2, 4])), 0, "other daddr misses");

    let mut verdicts: HashMap<_, u32, u32> =
        HashMap::try_from(ebpf.map_mut("verdicts").unwrap()).unwrap();
    verdicts.insert(key, 3, 0).unwrap();
    let p: &SchedClassifier = ebpf.program("weir_lookup").unwrap().try_into().unwrap();
    assert_eq!(run(p, &pkt), 3, "value change is seen");
}

#[test]
fn ebpf_lpm_trie_and_percpu_counters() {
    if !have_root("ebpf_lpm_trie_and_percpu_counters") {
        return;
    }
    let bytes = write_object(&lpm_object()).unwrap();
    let mut ebpf = Ebpf::load(&bytes).expect("aya loads the object");
    load_classifier(&mut ebpf, "weir_lpm");
    {
        let mut nets: LpmTrie<_, [u8; 4], u32> =
            LpmTrie::try_from(ebpf.map_mut("nets").unwrap()).unwrap();
        nets.insert(&Key::new(8, [10, 0, 0, 0]), 1, 0).unwrap();
        nets.insert(&Key::new(16, [10, 1, 0, 0]), 2, 0).unwrap();
    }
    let p: &SchedClassifier = ebpf.program("weir_lpm").unwrap().try_into().unwrap();
    assert_eq!(run(p, &packet([10, 1, 2, 3])), 2, "longest prefix wins");
    assert_eq!(run(p, &packet([10, 9, 9, 9])), 1);
    assert_eq!(run(p, &packet([10, 1, 0, 0])), 2);
    assert_eq!(run(p, &packet([192, 168, 1, 1])), 0, "miss");
    assert_eq!(run(p, &packet([192, 168, 1, 2])), 0, "miss");

    let counters: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map("counters").unwrap()).unwrap();
    let sum = |class: u32| -> u64 { counters.get(&class, 0).unwrap().iter().sum() };
    assert_eq!((sum(0), sum(1), sum(2), sum(3)), (2, 1, 2, 0));
}

#[test]
fn ebpf_tail_call_through_prog_array() {
    if !have_root("ebpf_tail_call_through_prog_array") {
        return;
    }
    let bytes = write_object(&tail_object()).unwrap();
    let mut ebpf = Ebpf::load(&bytes).expect("aya loads the object");
    load_classifier(&mut ebpf, "weir_entry");
    load_classifier(&mut ebpf, "weir_target");
    let pkt = packet([10, 0, 0, 2]);
    {
        let entry: &SchedClassifier = ebpf.program("weir_entry").unwrap().try_into().unwrap();
        assert_eq!(
            run(entry, &pkt),
            TAIL_FALLTHROUGH,
            "empty slot falls through"
        );
    }
    let mut table = ProgramArray::try_from(ebpf.take_map("jmp_table").unwrap()).unwrap();
    let target: &SchedClassifier = ebpf.program("weir_target").unwrap().try_into().unwrap();
    assert_eq!(run(target, &pkt), TAIL_TARGET);
    table.set(0, target.fd().unwrap(), 0).unwrap();
    let entry: &SchedClassifier = ebpf.program("weir_entry").unwrap().try_into().unwrap();
    assert_eq!(run(entry, &pkt), TAIL_TARGET, "tail call taken");
    table.clear_index(&0).unwrap();
    assert_eq!(run(entry, &pkt), TAIL_FALLTHROUGH);
}

/// Mounts bpffs on /sys/fs/bpf if it is not.
fn ensure_bpffs() {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some("/sys/fs/bpf") && l.split(' ').nth(2) == Some("bpf"))
    {
        return;
    }
    let st = Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .status()
        .expect("running mount");
    assert!(st.success(), "mount -t bpf bpf /sys/fs/bpf failed");
}

struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn output(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn ebpf_object_loads_with_aya_and_libbpf() {
    let bytes = write_object(&combined_object()).unwrap();
    assert_eq!(
        bytes,
        write_object(&combined_object()).unwrap(),
        "deterministic"
    );
    let file =
        TempPath(std::env::temp_dir().join(format!("weir-ebpf-object-{}.o", std::process::id())));
    std::fs::write(&file.0, &bytes).unwrap();
    // For debugging: WEIR_EBPF_DUMP=path keeps a copy of the object.
    if let Some(keep) = std::env::var_os("WEIR_EBPF_DUMP") {
        std::fs::write(keep, &bytes).unwrap();
    }

    if let Some(objdump) = tool("llvm-objdump") {
        let dis = output(Command::new(objdump).arg("-d").arg(&file.0));
        for name in [
            "weir_lookup",
            "weir_lpm",
            "weir_entry",
            "weir_target",
            "weir_xdp_pass",
        ] {
            assert!(dis.contains(&format!("<{name}>:")), "{name} in:\n{dis}");
        }
        assert!(dis.contains("call 12"), "tail call in:\n{dis}");
    }

    if !have_root("ebpf_object_loads_with_aya_and_libbpf") {
        return;
    }
    let mut ebpf = Ebpf::load(&bytes).expect("aya loads the combined object");
    for name in ["weir_lookup", "weir_lpm", "weir_entry", "weir_target"] {
        load_classifier(&mut ebpf, name);
    }
    let xdp: &mut aya::programs::Xdp = ebpf
        .program_mut("weir_xdp_pass")
        .unwrap()
        .try_into()
        .unwrap();
    xdp.load().unwrap();

    let Some(bpftool) = tool("bpftool") else {
        return;
    };
    let btf = output(
        Command::new(&bpftool)
            .args(["btf", "dump", "file"])
            .arg(&file.0),
    );
    assert!(btf.contains("DATASEC '.maps'"), "{btf}");
    ensure_bpffs();
    let pins = TempPath(PathBuf::from(format!(
        "/sys/fs/bpf/weir-ebpf-test-{}",
        std::process::id()
    )));
    output(
        Command::new(&bpftool)
            .args(["prog", "loadall"])
            .arg(&file.0)
            .arg(&pins.0),
    );
    let pinned: Vec<String> = std::fs::read_dir(&pins.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for name in [
        "weir_lookup",
        "weir_lpm",
        "weir_entry",
        "weir_target",
        "weir_xdp_pass",
    ] {
        assert!(
            pinned.iter().any(|p| p == name),
            "{name} pinned: {pinned:?}"
        );
    }
    assert!(Path::new(&pins.0).is_dir());
}

/// Both loaders tolerate a `.BTF` the kernel rejects (they log and go on), so
/// check the map BTF with BPF_BTF_LOAD directly.
#[test]
fn ebpf_map_btf_is_accepted_by_the_kernel() {
    if !have_root("ebpf_map_btf_is_accepted_by_the_kernel") {
        return;
    }
    let maps = combined_object().maps;
    let btf = weir_compiler::ebpf::btf::maps_btf(&maps);
    let mut log = vec![0u8; 1 << 16];
    // union bpf_attr for BPF_BTF_LOAD: btf, btf_log_buf, btf_size,
    // btf_log_size, btf_log_level.
    let mut attr = [0u8; 128];
    attr[0..8].copy_from_slice(&(btf.as_ptr() as u64).to_ne_bytes());
    attr[8..16].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
    attr[16..20].copy_from_slice(&(btf.len() as u32).to_ne_bytes());
    attr[20..24].copy_from_slice(&(log.len() as u32).to_ne_bytes());
    attr[24..28].copy_from_slice(&1u32.to_ne_bytes());
    const BPF_BTF_LOAD: libc::c_long = 18;
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_BTF_LOAD,
            attr.as_mut_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    let err = std::io::Error::last_os_error();
    let text =
        String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)]).into_owned();
    assert!(fd >= 0, "BPF_BTF_LOAD: {err}\n{text}");
    unsafe { libc::close(fd as libc::c_int) };
}

/// `ja` beyond ±32767 slots, encoded as `gotol` (forward and backward).
#[test]
fn ebpf_long_ja_runs() {
    if !have_root("ebpf_long_ja_runs") {
        return;
    }
    const FILL: i32 = 40_000;
    let mut a = Asm::new();
    let mid = a.new_label("mid");
    let far = a.new_label("far");
    a.push(Op::Ja { target: far });
    a.bind(mid);
    for _ in 0..FILL {
        a.push(Op::alu64(AluOp::Add, Reg::R0, 1));
    }
    a.push(Op::Exit);
    a.bind(far);
    a.push(Op::mov64(Reg::R0, 5));
    a.push(Op::Ja { target: mid });
    assert!(matches!(a.assemble(), Err(AsmError::JumpOutOfRange { .. })));
    let code = a.assemble_with(AsmOptions { long_jumps: true }).unwrap();
    let bytes = write_object(&ObjectDef {
        programs: vec![prog("weir_long", code)],
        maps: vec![],
        license: "GPL".into(),
    })
    .unwrap();
    let mut ebpf = Ebpf::load(&bytes).expect("aya loads the object");
    let p = load_classifier(&mut ebpf, "weir_long");
    assert_eq!(run(p, &packet([1, 2, 3, 4])), 5 + FILL as u32);
}

/// Conditional jumps beyond ±32767 slots, relaxed into an inverted short
/// jump over a `gotol` (and `jset` into `jset; ja; gotol`), forward and
/// backward, taken and not taken, run through the verifier and the JIT.
#[test]
fn ebpf_far_conditional_jumps_run() {
    if !have_root("ebpf_far_conditional_jumps_run") {
        return;
    }
    let mut a = Asm::new();
    let (bad, fa, back) = (a.new_label("bad"), a.new_label("a"), a.new_label("b"));
    let fill = a.new_label("fill");
    a.push(Op::load(Size::U32, Reg::R6, Reg::R1, 0)); // skb->len: 54
    a.push(Op::mov64(Reg::R0, 0));
    a.push(Op::jmp(JmpCond::Eq, Reg::R6, 7, fill));
    a.push(Op::jmp(JmpCond::Ne, Reg::R6, 54, bad)); // far, not taken
    a.push(Op::jmp(JmpCond::Set, Reg::R6, 2, fa)); // far jset, taken
    a.push(Op::Ja { target: bad });
    a.bind(back);
    a.push(Op::alu64(AluOp::Add, Reg::R0, 100));
    a.push(Op::Exit);
    // Reachable for the verifier (never taken here).
    a.bind(fill);
    for _ in 0..40_000 {
        a.push(Op::alu64(AluOp::Add, Reg::R0, 1));
    }
    a.push(Op::Exit);
    a.bind(fa);
    a.push(Op::alu64(AluOp::Add, Reg::R0, 7));
    a.push(Op::jmp(JmpCond::Slt, Reg::R6, 60, back)); // far backward, taken
    a.push(Op::Ja { target: bad });
    a.bind(bad);
    a.push(Op::mov64(Reg::R0, 99));
    a.push(Op::Exit);
    assert!(matches!(a.assemble(), Err(AsmError::JumpOutOfRange { .. })));
    let code = a.assemble_with(AsmOptions { long_jumps: true }).unwrap();
    assert!(code.listing().contains("gotol"));
    let bytes = write_object(&ObjectDef {
        programs: vec![prog("weir_far", code)],
        maps: vec![],
        license: "GPL".into(),
    })
    .unwrap();
    let mut ebpf = Ebpf::load(&bytes).expect("aya loads the object");
    let p = load_classifier(&mut ebpf, "weir_far");
    assert_eq!(run(p, &packet([1, 2, 3, 4])), 107);
}
