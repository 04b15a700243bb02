//! The decision graph from source: shadowing diagnostics, example dumps
//! determinism (the dumps themselves are snapshotted by cli/tests/artifacts.rs).

mod common;

use std::path::PathBuf;

use weir_compiler::check::{check_program, Checked};
use weir_compiler::graph;
use weir_compiler::source::MemoryLoader;

fn check_src(src: &str) -> Checked {
    let loader = MemoryLoader::new().with("main.weir", src);
    let checked = check_program(&[PathBuf::from("main.weir")], &loader, None);
    assert!(
        !checked.has_errors(),
        "unexpected errors: {:#?}",
        checked.diagnostics
    );
    checked
}

#[test]
fn shadowed_rule_names_the_shadowing_rule() {
    let src = "\
endpoint a { labels { app: \"a\" } addr 10.0.0.1 }
policy p {
  applies to app == \"a\"
  ingress {
    allow tcp from any
    deny tcp 22 from any
  }
}
";
    let checked = check_src(src);
    let c = graph::compile(&checked.model);
    let w: Vec<_> = c.findings.iter().filter(|f| f.code == "W0401").collect();
    assert_eq!(w.len(), 1, "{:#?}", c.findings);
    let snippet = |s| checked.sources.snippet(s).to_string();
    assert_eq!(snippet(w[0].primary), "deny tcp 22 from any");
    assert_eq!(w[0].secondary.len(), 1);
    assert_eq!(snippet(w[0].secondary[0].0), "allow tcp from any");
}

#[test]
fn conflicts_and_policies_that_select_nothing() {
    let src = "\
endpoint a { labels { app: \"a\" } addr 10.0.0.1 }
policy p1 priority 10 {
  applies to app == \"a\"
  ingress { allow tcp 80 from any }
}
policy p2 priority 10 {
  applies to app == \"a\"
  ingress { deny tcp 80 from 10.0.0.0/8 }
}
policy ghost {
  applies to app == \"nobody\"
  ingress { allow from any }
}
";
    let checked = check_src(src);
    let c = graph::compile(&checked.model);
    let codes: Vec<&str> = c.findings.iter().map(|f| f.code).collect();
    assert!(codes.contains(&"W0402"), "{codes:?}");
    assert!(codes.contains(&"W0403"), "{codes:?}");
    let snippet = |s| checked.sources.snippet(s).to_string();
    let w = c.findings.iter().find(|f| f.code == "W0402").unwrap();
    assert_eq!(snippet(w.secondary[0].0), "allow tcp 80 from any");
}

#[test]
fn example_graph_dumps() {
    for f in common::example_files() {
        let ex = f.file_stem().unwrap().to_string_lossy().into_owned();
        let checked = common::check_example(&f);
        let model = &checked.model;
        let g = graph::build(model);
        let text = graph::dump::text(model, &g);
        // Deterministic: a second build dumps the same bytes.
        assert_eq!(text, graph::dump::text(model, &graph::build(model)));
        // The text form reads back to the same graph.
        round_trip(&text, &g, &ex);
        // The interpreter's tests pass on the graph too.
        let interp = weir_compiler::interp::Interp::new(model);
        for t in &model.tests {
            for e in &t.expects {
                if e.from.synthetic_labels.is_some() || e.to.synthetic_labels.is_some() {
                    continue; // synthetic endpoints are not in the compiled classes
                }
                let p = weir_compiler::interp::expect_packet(e);
                let want = graph::GraphOutcome::from_interp(&interp.evaluate(&p));
                let got = g.evaluate(&p, weir_compiler::interp::BackendChoice::ByHash);
                assert_eq!(got, want, "{ex}: {}", t.name);
            }
        }
    }
}

/// One endpoint behind one policy with thousands of CIDR rules: the
/// passes must not recurse once per rule on a test thread's stack.
#[test]
fn long_rule_chain() {
    let mut src = String::from(
        "endpoint a { labels { app: \"a\" } addr 10.0.0.1 }\npolicy p {\n  applies to app == \"a\"\n  ingress {\n",
    );
    for i in 0..2000u32 {
        src.push_str(&format!(
            "    allow tcp {} from 172.{}.{}.0/24\n",
            80,
            16 + i / 256,
            i % 256
        ));
    }
    src.push_str("  }\n}\n");
    let checked = check_src(&src);
    let g = graph::build(&checked.model);
    let cap = graph::cost::capacity(&g);
    assert!(cap.tables > 0);
}

/// `text` parses, prints back byte for byte, and the parsed node set
/// verifies (steer blocks are numbered by first appearance in a parsed
/// graph, so its own bounds, with the compiled graph's atom, class and
/// provenance counts).
fn round_trip(text: &str, g: &graph::Graph, what: &str) {
    let parsed = graph::text::parse(text).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(parsed.print(), text, "{what}: parse → print");
    let bounds = graph::verify::Bounds {
        steer_rules: parsed.bounds().steer_rules,
        ..graph::verify::Bounds::of(g)
    };
    graph::verify::verify_dag(&parsed.dag, &bounds)
        .unwrap_or_else(|e| panic!("{what}: {}", graph::verify::report(&e)));
}

#[test]
fn generated_graph_dumps_round_trip() {
    for seed in 0..60 {
        let model = weir_compiler::gen::model(seed);
        let unopt = graph::build(&model);
        round_trip(
            &graph::dump::text(&model, &unopt),
            &unopt,
            &format!("seed {seed}"),
        );
        let opt = graph::compile(&model).graph;
        round_trip(
            &graph::dump::text(&model, &opt),
            &opt,
            &format!("seed {seed} (optimized)"),
        );
    }
}
