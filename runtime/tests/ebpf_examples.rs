//! Every example and stdlib policy compiles for eBPF, its object
//! disassembles with `llvm-objdump -d`, loads through the verifier with
//! aya (maps filled, prog array set) and with libbpf (`bpftool prog
//! loadall`), and its `test` blocks' packets get the interpreter's
//! verdicts from the loaded program.
//!
//! Needs root for the kernel parts; skipped without it unless `CI` is set.

mod ebpf_common;

use std::path::PathBuf;
use std::process::Command;

use ebpf_common::*;
use weir_compiler::ebpf::codegen::Mode;
use weir_compiler::graph;

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
fn ebpf_examples_compile_disassemble_and_load() {
    let root = have_root("ebpf_examples_compile_disassemble_and_load");
    let objdump = tool("llvm-objdump");
    let bpftool = if root { tool("bpftool") } else { None };
    if root {
        let _ = weir_runtime::ebpf::attach::ensure_bpffs();
    }
    let dir = std::env::temp_dir().join(format!("weir-ebpf-examples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut checked_count = 0;
    for rel in policies() {
        let checked = load_policy(&rel);
        let model = checked
            .model_if_ok()
            .unwrap_or_else(|| panic!("{} has errors", rel.display()));
        let g = graph::build(model);
        let out = compile(model, &g, Mode::Node);
        let name = rel.to_string_lossy().replace(['/', '.', '-'], "_");
        let file = dir.join(format!("{name}.o"));
        std::fs::write(&file, &out.object).unwrap();
        if let Some(objdump) = &objdump {
            let dis = output(Command::new(objdump).arg("-d").arg(&file));
            assert!(dis.contains("<weir_main>:"), "{name}: {dis}");
        }
        if !root {
            continue;
        }
        let gen = load_output(&out);
        // The example's own tests, through the kernel.
        let interp = weir_compiler::interp::Interp::new(model);
        for t in &model.tests {
            for e in &t.expects {
                let p = normalize(&weir_compiler::interp::expect_packet(e));
                if p.src.is_ipv4() != p.dst.is_ipv4()
                    || g.services.lookup(p.dst, p.dport, p.proto).is_some()
                    || !weir_compiler::interp::synthetic_endpoints(e).is_empty()
                {
                    continue;
                }
                clear_conntrack(&gen);
                if p.state == weir_compiler::model::ConnState::Established {
                    let mut fwd = p.clone();
                    fwd.state = weir_compiler::model::ConnState::New;
                    insert_conntrack(&gen, &fwd);
                }
                let gen_m = if p.at.is_none() { Some(&gen) } else { None };
                let Some(gm) = gen_m else { continue };
                let want = interp.evaluate(&p).verdict;
                let ret = run(gm, &frame(&p));
                let want_ret = if want == weir_compiler::model::Verdict::Allow {
                    0
                } else {
                    2
                };
                assert_eq!(ret, want_ret, "{name}: test packet {p:?}");
                checked_count += 1;
            }
        }
        if let Some(bpftool) = &bpftool {
            let pins = PathBuf::from(format!("/sys/fs/bpf/weir-ex-{}-{name}", std::process::id()));
            output(
                Command::new(bpftool)
                    .args(["prog", "loadall"])
                    .arg(&file)
                    .arg(&pins),
            );
            let pinned: Vec<String> = std::fs::read_dir(&pins)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                pinned.iter().any(|p| p == "weir_main"),
                "{name}: {pinned:?}"
            );
            let _ = std::fs::remove_dir_all(&pins);
        }
        eprintln!(
            "{}: {} programs, {} insns",
            rel.display(),
            out.manifest.programs.len(),
            out.manifest.programs.iter().map(|p| p.insns).sum::<usize>()
        );
    }
    eprintln!("{checked_count} example test packets agreed in the kernel");
    let _ = std::fs::remove_dir_all(&dir);
}
