//! Snapshots of the iptables back end's output for every example
//! (`snapshots/iptables/`). An example the back end refuses (E0501)
//! snapshots the diagnostics and then the output with Maglev balanced
//! randomly (`Options::maglev_as_random`, not faithful), so its rules are
//! still reviewed.

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
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        let text = match generate_text(&g, model, &Options::default()) {
            Ok(o) => render(&o),
            Err(refused) => {
                let mut s = String::from("=== refused\n");
                for u in &refused {
                    let d = u.diagnostic();
                    let (line, _) = checked.sources.start(d.primary.span);
                    s.push_str(&format!(
                        "{} line {}: {} ({})\n",
                        d.code,
                        line + 1,
                        d.message,
                        d.primary.message
                    ));
                }
                let approx = Options {
                    maglev_as_random: true,
                    ..Options::default()
                };
                let o = generate_text(&g, model, &approx).expect("only Maglev refused");
                s.push_str("=== with maglev_as_random (not faithful)\n");
                s.push_str(&render(&o));
                s
            }
        };
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
        insta::with_settings!({
            snapshot_path => "../../snapshots/iptables",
            prepend_module_to_snapshot => false,
        }, {
            insta::assert_snapshot!(name, text);
        });
    }
}
