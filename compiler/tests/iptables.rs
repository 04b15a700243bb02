//! The iptables back end over every example: output is byte-identical for
//! the same input, and a refused example (E0501) is refused only for
//! Maglev. The generated text itself is snapshotted, with every other
//! artifact, by `cli/tests/artifacts.rs` (`snapshots/artifacts/`).

mod common;

use weir_compiler::graph;
use weir_compiler::iptables::{generate_text, Options, Output};

fn render(o: &Output) -> String {
    format!(
        "=== iptables.rules\n{}=== ip6tables.rules\n{}=== ipset.rules\n{}=== manifest (backends.iptables)\n{}\n",
        o.iptables,
        o.ip6tables,
        o.ipset,
        serde_json::to_string_pretty(&o.manifest).unwrap()
    )
}

#[test]
fn example_snapshots() {
    for f in common::example_files() {
        let checked = common::check_example(&f);
        let model = &checked.model;
        let g = graph::build(model);
        // Refused programs (E0501: Maglev) still generate with the
        // documented approximation.
        if let Err(refused) = generate_text(&g, model, &Options::default()) {
            assert!(refused
                .iter()
                .all(|u| u.diagnostic().code.as_str() == "E0501"));
            let approx = Options {
                maglev_as_random: true,
                ..Options::default()
            };
            generate_text(&g, model, &approx).expect("only Maglev refused");
        }
        // Byte-identical for the same input.
        let again = graph::build(model);
        assert_eq!(
            generate_text(&again, model, &Options::default())
                .map(|o| render(&o))
                .ok(),
            generate_text(&g, model, &Options::default())
                .map(|o| render(&o))
                .ok()
        );
    }
}
