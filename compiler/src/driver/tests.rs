//! `SyntaxTrees::Free` (what `weir compile` asks for) frees the syntax
//! trees once the lints are done, while the graph is still being built:
//! nothing else may change, neither the diagnostics (lints, graph
//! findings, errors) nor the model and the graph.

use super::*;
use crate::graph::dump;
use crate::source::MemoryLoader;

/// A program with a lint (an unused selector), a graph finding (a
/// shadowed rule) and a policy that compiles.
const WARNED: &str = r#"
selector unused = app == "nobody"
selector web = app == "web"
selector db = app == "db"
endpoint web-1 { labels { app: "web" } addr 10.0.0.1 }
endpoint db-1 { labels { app: "db" } addr 10.0.0.2 }
policy db-ingress {
  applies to db
  ingress {
    allow tcp 5432 from web
    allow tcp 5432 from web
  }
}
"#;

fn both(src: &str) -> (Analyzed, Analyzed) {
    let path = PathBuf::from("p.weir");
    let loader = MemoryLoader::new().with(&path, src);
    let roots = std::slice::from_ref(&path);
    (
        analyze(roots, &loader, None),
        analyze_with(roots, &loader, None, SyntaxTrees::Free),
    )
}

#[test]
fn freeing_the_syntax_trees_changes_no_diagnostic_model_or_graph() {
    let (kept, freed) = both(WARNED);
    let codes: Vec<&str> = kept
        .checked
        .diagnostics
        .iter()
        .map(|d| d.code.as_str())
        .collect();
    assert!(codes.contains(&"W0301"), "{codes:?}");
    assert!(codes.iter().any(|c| c.starts_with("W04")), "{codes:?}");
    assert_eq!(
        format!("{:?}", kept.checked.diagnostics),
        format!("{:?}", freed.checked.diagnostics)
    );
    assert_eq!(
        format!("{:?}", kept.checked.model),
        format!("{:?}", freed.checked.model)
    );
    let (k, f) = (kept.compiled.unwrap(), freed.compiled.unwrap());
    assert_eq!(
        dump::text(&kept.checked.model, &k.graph),
        dump::text(&freed.checked.model, &f.graph)
    );
    assert_eq!(format!("{:?}", k.findings), format!("{:?}", f.findings));
    // The trees are kept, or freed (the files' ids and roots stay).
    assert!(kept.checked.files.iter().all(|f| !f.ast.items.is_empty()));
    assert!(freed.checked.files.iter().all(|f| f.ast.items.is_empty()));
    assert_eq!(kept.checked.files.len(), freed.checked.files.len());
    assert!(freed.checked.files.iter().all(|f| f.root));
}

#[test]
fn a_program_with_errors_is_reported_the_same() {
    let (kept, freed) =
        both("policy p {\n  applies to ghost\n  ingress {\n    allow from ghost\n  }\n}\n");
    assert!(kept.checked.has_errors());
    assert!(kept.compiled.is_none() && freed.compiled.is_none());
    assert_eq!(
        format!("{:?}", kept.checked.diagnostics),
        format!("{:?}", freed.checked.diagnostics)
    );
}

/// `meanwhile` runs while the graph is built, with the very parts the
/// finished graph holds; with errors before the lints it does not run.
#[test]
fn meanwhile_gets_the_graphs_own_parts() {
    let path = PathBuf::from("p.weir");
    let loader = MemoryLoader::new().with(&path, WARNED);
    let roots = std::slice::from_ref(&path);
    let (analyzed, early) = analyze_meanwhile(roots, &loader, None, SyntaxTrees::Free, |e| {
        (e.parts.clone(), e.model.endpoints.len())
    });
    let (parts, endpoints) = early.expect("meanwhile ran");
    assert_eq!(endpoints, 2);
    let compiled = analyzed.compiled.expect("compiles");
    assert!(parts.of(&compiled.graph));

    let loader = MemoryLoader::new().with(&path, "policy p { applies to nothing }");
    let (analyzed, early) = analyze_meanwhile(roots, &loader, None, SyntaxTrees::Free, |_| ());
    assert!(analyzed.checked.has_errors());
    assert!(early.is_none());
}
