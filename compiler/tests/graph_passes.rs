//! Text fixtures for the optimizer passes and the verifier (Cranelift's
//! filetests): each `tests/graph/*.graph` file is a decision graph in its
//! text form with a `; run: PASS…` line; the passes run in order, and the
//! snapshot is the graph printed back, then what the verifier says of it.
//! Passes: `hashcons`, `redundant`, `order`, `tables`, `optimize` (the
//! whole pipeline) — or `verify` alone, for fixtures of broken graphs.

use weir_compiler::graph::ir::Dag;
use weir_compiler::graph::text::{self, GraphText};
use weir_compiler::graph::{opt, verify};

fn run_pass(name: &str, g: &GraphText) -> Dag {
    let d = &g.dag;
    match name {
        "hashcons" => opt::hashcons::run(d),
        "redundant" => opt::redundant::run(d),
        "order" => opt::order::run(d),
        "tables" => opt::tables::run(d, &g.class_table()),
        "optimize" => {
            let classes = g.class_table();
            let d = opt::hashcons::run(d);
            let d = opt::redundant::run(&d);
            let d = opt::order::run(&d);
            let d = opt::tables::run(&d, &classes);
            let d = opt::redundant::run(&d);
            opt::hashcons::run(&d)
        }
        other => panic!("unknown pass `{other}`"),
    }
}

fn passes(src: &str) -> Vec<String> {
    src.lines()
        .find_map(|l| l.strip_prefix("; run:"))
        .expect("a `; run: PASS…` line")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn verdict(g: &GraphText) -> String {
    match verify::verify_dag(&g.dag, &g.bounds()) {
        Ok(()) => "; verify: ok\n".into(),
        Err(e) => format!("; verify:\n{}\n", verify::report(&e)),
    }
}

#[test]
fn graph_fixtures() {
    insta::with_settings!({
        snapshot_path => "../../snapshots/graph",
        prepend_module_to_snapshot => false,
    }, {
        insta::glob!("graph/*.graph", |path| {
            let src = std::fs::read_to_string(path).unwrap();
            let mut g = text::parse(&src).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for p in passes(&src).iter().filter(|p| *p != "verify") {
                let d = run_pass(p, &g);
                g = g.with_dag(d);
            }
            insta::assert_snapshot!(format!("{}{}", g.print(), verdict(&g)));
        });
    });
}

/// A fixture that does not parse names its line.
#[test]
fn parse_errors_name_the_line() {
    let bad = "entry steer -> n0\nentry egress -> n0\nentry ingress -> n0\nn0 = maybe\n";
    let e = text::parse(bad).unwrap_err();
    assert_eq!((e.line, e.message.as_str()), (4, "unknown node `maybe`"));
    let undefined =
        "entry steer -> n0\nentry egress -> n1\nentry ingress -> n1\nn0 = no steering\n";
    assert!(text::parse(undefined)
        .unwrap_err()
        .message
        .contains("n1 is used but not defined"));
    let cycle = "entry steer -> n0\nentry egress -> n1\nentry ingress -> n1\nn0 = no steering\nn1 = if proto == tcp then n2 else n2\nn2 = if dport == 1 then n1 else n1\n";
    assert!(text::parse(cycle).unwrap_err().message.contains("cycle"));
}
