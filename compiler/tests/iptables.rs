//! The iptables back end over every example: output is byte-identical for
//! the same input, and a refused example (E0501) is refused only for
//! Maglev. The generated text itself is snapshotted, with every other
//! artifact, by `cli/tests/artifacts.rs` (`snapshots/artifacts/`).

use std::io;
use std::path::{Path, PathBuf};
use weir_compiler::check::check_program;
use weir_compiler::graph;
use weir_compiler::iptables::{generate_text, Options, Output};
use weir_compiler::source::SourceLoader;

/// Reads the file system; `import std.X` from `stdlib-policies/`.
struct Fs {
    stdlib: PathBuf,
}

impl SourceLoader for Fs {
    fn load(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn stdlib_dir(&self) -> Option<PathBuf> {
        Some(self.stdlib.clone())
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

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
    let root = root();
    let loader = Fs {
        stdlib: root.join("stdlib-policies"),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "weir"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in files {
        let inv = f.with_file_name("inventory.json");
        let inv = inv.exists().then_some(inv);
        let checked = check_program(std::slice::from_ref(&f), &loader, inv.as_deref());
        assert!(!checked.has_errors(), "{} has errors", f.display());
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
