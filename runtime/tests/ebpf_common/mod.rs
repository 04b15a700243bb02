//! Shared by the eBPF kernel tests: root check, frame building, running
//! a generation with BPF_PROG_TEST_RUN, counters, conntrack access, and
//! loading the examples.

#![allow(dead_code)]

pub mod cgroup;
pub mod headers;
pub mod icmp_error;
pub mod sctp;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use weir_compiler::check::{check_program, Checked};
use weir_compiler::ebpf::codegen::sparse_atoms::AtomLayout;
use weir_compiler::ebpf::codegen::{self, Budget, EbpfOutput, Mode, Options};
use weir_compiler::ebpf::layout;
use weir_compiler::flowhash::proto_number;
use weir_compiler::graph::Graph;
use weir_compiler::interp::Packet;
use weir_compiler::model::Model;
use weir_compiler::source::MemoryLoader;
use weir_runtime::ebpf::ct_tables;
use weir_runtime::ebpf::load::{delete_raw, keys_raw};
use weir_runtime::ebpf::{counters, load, Generation};

/// `true` if the test may touch the kernel; panics under `CI` without root.
pub fn have_root(test: &str) -> bool {
    weir_runtime::kernel_test::may_run(test, &[])
}

/// Finds a tool on PATH or in /usr/sbin; panics under `CI` if missing.
pub fn tool(name: &str) -> Option<PathBuf> {
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

/// The packet as the wire can carry it: ICMP has no ports, the others no
/// type / code.
pub fn normalize(p: &Packet) -> Packet {
    let mut p = p.clone();
    if p.proto.is_icmp() {
        p.sport = 0;
        p.dport = 0;
    } else {
        p.icmp_type = 0;
        p.icmp_code = 0;
    }
    p
}

#[allow(unused_imports)] // each test binary uses its own subset
pub use icmp_error::internet_checksum;
#[allow(unused_imports)] // each test binary uses its own subset
pub use sctp::sctp_crc_oracle;
#[allow(unused_imports)] // each test binary uses its own subset
pub use weir_runtime::frames::{checksums_ok, frame, set_checksums};

/// What one BPF_PROG_TEST_RUN produced.
pub struct RunOut {
    pub ret: u32,
    pub data: Vec<u8>,
    /// `skb->mark` afterwards (ctx_out).
    pub mark: u32,
}

/// Runs the entry program once on `frame` with an `__sk_buff` context in
/// and out.
pub fn run_full(g: &Generation, frame: &[u8]) -> RunOut {
    let p: &SchedClassifier = g
        .ebpf
        .program(layout::MAIN_PROGRAM)
        .unwrap()
        .try_into()
        .unwrap();
    let mut out = vec![0u8; frame.len() + 256];
    let ctx_in = [0u8; 192];
    let mut ctx_out = [0u8; 192];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: Some(&ctx_in),
        ctx_out: Some(&mut ctx_out),
        ..Default::default()
    };
    let r = p.test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    RunOut {
        ret: r.return_value,
        data: out,
        mark: u32::from_ne_bytes(ctx_out[8..12].try_into().unwrap()),
    }
}

/// Empties the service stage's per-flow state (translations: the
/// forward entries in `weir_ct` and, in the standalone service object,
/// `weir_lb_ct`; affinity), when the object has it.
pub fn clear_lb_state(g: &Generation) {
    use weir_compiler::ebpf::layout::service::{aff, map as lb, tuple};
    for (name, size) in [(lb::CT, tuple::SIZE), (lb::AFF, aff::KEY_SIZE)] {
        if let Some(m) = g.ebpf.map(name) {
            for k in keys_raw(m, size as usize).unwrap() {
                let _ = delete_raw(m, &k);
            }
        }
    }
    for k in forward_keys(g) {
        let _ = ct_tables::delete(|n| g.ebpf.map(n), &k);
    }
}

/// Every conntrack entry of both families' tables, keys in the 40-byte
/// layout (`weir_runtime::ebpf::ct_tables`).
pub fn ct_all(g: &Generation) -> Vec<(Vec<u8>, Vec<u8>)> {
    ct_tables::entries(|n| g.ebpf.map(n)).unwrap()
}

/// Whether a `weir_ct` value is a translated flow's forward entry
/// (`layout::ct::FORWARD`, a bit of its service word).
pub fn is_forward(v: &[u8]) -> bool {
    let at = layout::ct::SERVICE as usize;
    u32::from_ne_bytes(v[at..at + 4].try_into().unwrap()) & layout::ct::FORWARD as u32 != 0
}

/// The keys of the forward entries in the conntrack tables.
pub fn forward_keys(g: &Generation) -> Vec<Vec<u8>> {
    ct_all(g)
        .into_iter()
        .filter(|(_, v)| is_forward(v))
        .map(|(k, _)| k)
        .collect()
}

/// Translations (forward entries in `weir_ct`, one per translated flow)
/// and conntrack entries flagged translated (`weir_ct`, which carry the
/// replies' reverse translation); `(0, 0)` when the object has no
/// services.
pub fn lb_state_len(g: &Generation) -> (usize, usize) {
    (forward_keys(g).len(), translated_ct_len(g))
}

/// Conntrack entries flagged translated (`layout::ct::TRANSLATED`).
pub fn translated_ct_len(g: &Generation) -> usize {
    ct_all(g)
        .iter()
        .filter(|(_, v)| v[0] & layout::ct::TRANSLATED as u8 != 0)
        .count()
}

/// The conntrack key the programs build for `p` (see `layout::ct`).
pub fn ct_key(p: &Packet) -> Vec<u8> {
    let mut k = vec![0u8; layout::ct::KEY_SIZE as usize];
    let put = |k: &mut Vec<u8>, off: usize, a: IpAddr| match a {
        IpAddr::V4(a) => k[off..off + 4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => k[off..off + 16].copy_from_slice(&a.octets()),
    };
    put(&mut k, 0, p.src);
    put(&mut k, 16, p.dst);
    k[32..34].copy_from_slice(&p.sport.to_ne_bytes());
    k[34..36].copy_from_slice(&p.dport.to_ne_bytes());
    k[36] = proto_number(p.proto);
    k[37] = if p.src.is_ipv4() { 4 } else { 6 };
    // Canonical order, as the programs build it: the smaller (first 8
    // address bytes, next 8, port) end first, words in native order.
    let end = |o: usize, port: usize| {
        let w = |i: usize| u64::from_ne_bytes(k[i..i + 8].try_into().unwrap());
        (w(o), w(o + 8), u16::from_ne_bytes([k[port], k[port + 1]]))
    };
    if end(0, 32) > end(16, 34) {
        let (src, dst) = (k[0..16].to_vec(), k[16..32].to_vec());
        k[0..16].copy_from_slice(&dst);
        k[16..32].copy_from_slice(&src);
        k.swap(32, 34);
        k.swap(33, 35);
    }
    k
}

/// The model of a one-file program given as text (`main.weir`); the
/// program must check without errors.
pub fn model_of_source(src: &str) -> Model {
    let path = PathBuf::from("main.weir");
    let loader = weir_compiler::source::MemoryLoader::new().with(&path, src);
    let checked = check_program(std::slice::from_ref(&path), &loader, None);
    assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
    checked.model
}

pub fn compile(model: &Model, g: &Graph, mode: Mode) -> EbpfOutput {
    compile_with(model, g, mode, Budget::default())
}

thread_local! {
    /// The atom layout [`compile_with`] asks for: a test forces
    /// `Sparse` for itself (tests run on threads of their own);
    /// `WEIR_TEST_ATOMS=sparse` forces it for every test.
    pub static ATOMS: std::cell::Cell<AtomLayout> = const { std::cell::Cell::new(AtomLayout::Auto) };
}

/// The atom layout of this thread's compiles ([`ATOMS`]).
fn atom_layout() -> AtomLayout {
    match std::env::var("WEIR_TEST_ATOMS").as_deref() {
        Ok("sparse") => AtomLayout::Sparse,
        Ok("dense") => AtomLayout::Dense,
        _ => ATOMS.with(|a| a.get()),
    }
}

/// [`compile`] with a stage budget (small ones force many stages).
pub fn compile_with(model: &Model, g: &Graph, mode: Mode, budget: Budget) -> EbpfOutput {
    let opts = Options {
        mode,
        budget,
        // Small maps: hundreds of generations are created per run.
        tables: weir_compiler::ebpf::state_tables::StateTables {
            conntrack: 1024,
            translation: 1024,
            // `WEIR_TEST_CT_TABLE=hash` runs the differential tests on
            // the non-LRU tables (`--ct-table hash`).
            kind: std::env::var("WEIR_TEST_CT_TABLE")
                .ok()
                .and_then(|k| weir_compiler::ebpf::state_tables::CtTable::parse(&k))
                .unwrap_or_default(),
        },
        spare_endpoints: 64,
        // Generated models redirect without a protocol or for SCTP
        // (refused by default, E0525): BPF_PROG_TEST_RUN finds no proxy
        // socket for any protocol, so every redirect passes unsteered.
        unsteered_sctp_redirects: true,
        // Events without an effective rate limit (BPF_PROG_TEST_RUN sends
        // thousands of packets a millisecond; each test drains the ring
        // after every packet: `drain_events`).
        events: Some(codegen::events::EventOptions {
            burst: 1_000_000,
            rate: 1_000_000_000,
            ring_bytes: 64 * 1024,
        }),
        atoms: atom_layout(),
        ..Options::default()
    };
    codegen::generate(model, g, &opts).unwrap_or_else(|e| panic!("ebpf limits: {e:?}"))
}

/// Every verdict event the generation's ring buffer holds, read through
/// the runtime's reader (`weir_runtime::events::ringbuf`); empty without
/// events.
pub fn drain_events(g: &Generation) -> Vec<weir_compiler::contract::event::VerdictEvent> {
    use std::os::fd::AsFd;
    use weir_runtime::events::EventSource;
    let Some(aya::maps::Map::RingBuf(m)) = g.ebpf.map(weir_compiler::contract::event::EVENTS_MAP)
    else {
        return Vec::new();
    };
    // One reader per ring (mapping it per packet would cost the
    // differential tests seconds), kept while the same map is drained.
    thread_local! {
        static READER: std::cell::RefCell<Option<(u32, weir_runtime::events::ringbuf::RingBufReader)>> =
            const { std::cell::RefCell::new(None) };
    }
    let id = m.info().unwrap().id();
    READER.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|(have, _)| *have != id) {
            let fd = m.fd().as_fd().try_clone_to_owned().unwrap();
            let data = aya::maps::MapData::from_fd(fd).unwrap();
            let r = weir_runtime::events::ringbuf::RingBufReader::from_maps(data, None).unwrap();
            *cell = Some((id, r));
        }
        let r = &mut cell.as_mut().unwrap().1;
        let mut out = Vec::new();
        while let Some(e) = r.next_event(std::time::Duration::ZERO).unwrap() {
            out.push(e);
        }
        out
    })
}

pub fn load_output(out: &EbpfOutput) -> Generation {
    load(&out.object, &out.manifest, None).unwrap_or_else(|e| panic!("{e}"))
}

/// Loads `out` inside the node namespace of `topo` and attaches its
/// entry program to the ingress of the node's client-side link, so the
/// client's real packets go through it. The generation is returned to
/// keep the program alive.
pub fn attach_at_node_client_ingress(
    topo: &weir_runtime::netns::Topology,
    out: EbpfOutput,
) -> Generation {
    attach_at_node_ingress(topo, out, &[weir_runtime::netns::NODE_CLIENT_IF])
}

/// [`attach_at_node_client_ingress`] on each of the node's links in
/// `ifaces` (both: the client's packets and the server's answers go
/// through the program).
pub fn attach_at_node_ingress(
    topo: &weir_runtime::netns::Topology,
    out: EbpfOutput,
    ifaces: &'static [&'static str],
) -> Generation {
    topo.node
        .run(move || {
            use aya::programs::{tc, TcAttachType};
            let mut gen = load_output(&out);
            let p: &mut SchedClassifier = gen
                .ebpf
                .program_mut(layout::MAIN_PROGRAM)
                .unwrap()
                .try_into()
                .unwrap();
            for &iface in ifaces {
                let _ = tc::qdisc_add_clsact(iface);
                p.attach(iface, TcAttachType::Ingress)
                    .map_err(|e| format!("{iface}: {e}"))?;
            }
            Ok::<_, String>(gen)
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs the entry program once on `frame`; returns the TC verdict.
pub fn run(g: &Generation, frame: &[u8]) -> u32 {
    let p: &SchedClassifier = g
        .ebpf
        .program(layout::MAIN_PROGRAM)
        .unwrap()
        .try_into()
        .unwrap();
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..Default::default()
    };
    p.test_run(opts).expect("BPF_PROG_TEST_RUN").return_value
}

pub fn counts(g: &Generation) -> Vec<u64> {
    counters(&g.ebpf, g.manifest.counters).unwrap()
}

pub fn clear_conntrack(g: &Generation) {
    for (k, _) in ct_all(g) {
        let _ = ct_tables::delete(|n| g.ebpf.map(n), &k);
    }
}

/// Flows in `weir_ct` (its entries but translated flows' forward
/// entries: [`lb_state_len`] counts those).
pub fn conntrack_len(g: &Generation) -> usize {
    ct_entries(g) - forward_keys(g).len()
}

/// Every entry of `weir_ct` (flows and forward entries).
pub fn ct_entries(g: &Generation) -> usize {
    ct_all(g).len()
}

pub fn insert_conntrack(g: &Generation, p: &Packet) {
    // A time without flags (not translated), no frontend.
    let mut v = vec![0u8; layout::ct::VALUE_SIZE as usize];
    v[0] = 4;
    ct_tables::update(|n| g.ebpf.map(n), &ct_key(p), &v, 0).unwrap();
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Checks an example directory (its `.weir` files and inventory) or one
/// stdlib file, with the stdlib available.
pub fn load_policy(rel: &Path) -> Checked {
    let root = root();
    let mut loader = MemoryLoader::new().with_stdlib("stdlib-policies");
    for entry in std::fs::read_dir(root.join("stdlib-policies")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_none_or(|e| e != "weir") {
            continue;
        }
        let name = PathBuf::from("stdlib-policies").join(p.file_name().unwrap());
        loader = loader.with(name, std::fs::read_to_string(&p).unwrap());
    }
    let mut roots = Vec::new();
    let mut inventory = None;
    if root.join(rel).is_file() {
        roots.push(rel.to_path_buf());
    } else {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(root.join(rel))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let r = rel.join(p.file_name().unwrap());
            match p.extension().and_then(|e| e.to_str()) {
                Some("weir") => {
                    loader = loader.with(&r, std::fs::read_to_string(&p).unwrap());
                    roots.push(r);
                }
                Some("json") => {
                    loader = loader.with(&r, std::fs::read_to_string(&p).unwrap());
                    inventory = Some(r);
                }
                _ => {}
            }
        }
    }
    check_program(&roots, &loader, inventory.as_deref())
}

/// Every example directory and stdlib file, relative to the root.
pub fn policies() -> Vec<PathBuf> {
    let root = root();
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| PathBuf::from("examples").join(p.file_name().unwrap()))
        .collect();
    v.extend(
        std::fs::read_dir(root.join("stdlib-policies"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "weir"))
            .map(|p| PathBuf::from("stdlib-policies").join(p.file_name().unwrap())),
    );
    v.sort();
    v
}

/// One test run of the standalone service object's TC program on `data`:
/// its return value and the frame it left.
pub fn run_lb(r: &weir_runtime::ebpf::service::LbRuntime, data: &[u8]) -> (u32, Vec<u8>) {
    use weir_compiler::ebpf::service::object::prog;
    let p: &SchedClassifier = r.ebpf.program(prog::TC).unwrap().try_into().unwrap();
    let mut out = vec![0u8; data.len() + 256];
    let res = p
        .test_run(TestRunOptions {
            data_in: Some(data),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(res.data_size_out as usize);
    (res.return_value, out)
}
