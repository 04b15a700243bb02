//! The runtime arms only the conntrack collector the manifest declares
//! (`backends.ebpf.collector`, `weir_compiler::contract::collector`): a
//! declaration that names another program, section or map, a declared
//! collector whose map the object lacks, and an object with a collector
//! map but no declaration are each refused before anything is armed.

mod ebpf_common;

use ebpf_common::*;
use weir_compiler::ebpf::codegen::{self, Mode, Options};
use weir_compiler::ebpf::state_tables::{CtTable, StateTables};
use weir_compiler::graph;
use weir_runtime::ebpf::gc;

const SRC: &str = r#"
endpoint c { labels { app: "c" } addr 10.1.0.1 }
endpoint b { labels { app: "b" } addr 10.2.0.1 }
policy b-in {
  applies to app == "b"
  ingress { allow tcp 8080 from app == "c" }
}
"#;

fn output(kind: CtTable) -> codegen::EbpfOutput {
    let model = model_of_source(SRC);
    let g = graph::build(&model);
    codegen::generate(
        &model,
        &g,
        &Options {
            mode: Mode::Node,
            tables: StateTables {
                conntrack: 64,
                translation: 8,
                kind,
            },
            ..Options::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e:?}"))
}

fn refusal(r: Result<Option<std::os::fd::OwnedFd>, weir_runtime::ebpf::EbpfError>) -> String {
    match r {
        Ok(_) => panic!("a collector was loaded where it must be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn ebpf_collector_is_armed_only_as_declared() {
    if !have_root("ebpf_collector_is_armed_only_as_declared") {
        return;
    }
    let out = output(CtTable::Hash);
    let gen = load_output(&out);
    let declared = out
        .manifest
        .collector
        .clone()
        .expect("a hash bundle declares its collector");
    // As declared: loads.
    assert!(gc::load_program(&gen.ebpf, &out.object, &out.manifest)
        .unwrap_or_else(|e| panic!("{e}"))
        .is_some());
    // Another program, section or map than this weir arms.
    for change in [
        |c: &mut weir_compiler::contract::collector::Collector| c.program = "other".into(),
        |c: &mut weir_compiler::contract::collector::Collector| c.section = "classifier".into(),
        |c: &mut weir_compiler::contract::collector::Collector| c.map = "weir_ct".into(),
    ] {
        let mut m = out.manifest.clone();
        let mut c = declared.clone();
        change(&mut c);
        m.collector = Some(c);
        let e = refusal(gc::load_program(&gen.ebpf, &out.object, &m));
        assert!(e.contains("this weir does not arm"), "{e}");
    }
    // The collector's map without its declaration.
    let mut m = out.manifest.clone();
    m.collector = None;
    let e = refusal(gc::load_program(&gen.ebpf, &out.object, &m));
    assert!(e.contains("does not declare it"), "{e}");
    // A declaration over an object without the collector's map (an LRU
    // bundle's object).
    let lru = output(CtTable::Lru);
    let lru_gen = load_output(&lru);
    let mut m = lru.manifest.clone();
    m.collector = Some(declared);
    let e = refusal(gc::load_program(&lru_gen.ebpf, &lru.object, &m));
    assert!(e.contains("the object has no map"), "{e}");
}
