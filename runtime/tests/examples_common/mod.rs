//! The models the iptables kernel tests feed the back end and the direct
//! x_tables loader: every example of `examples/`, checked as `weir check`
//! would (its `inventory.json` beside it), and the generated model with
//! sets the x_tables oracles add. One place, so the differential test
//! and both oracles walk the same examples. Included by the tests that
//! use it.
#![allow(dead_code)]

use std::io;
use std::path::{Path, PathBuf};

use weir_compiler::check::check_program;
use weir_compiler::graph;
use weir_compiler::model::Model;
use weir_compiler::source::SourceLoader;
use weir_compiler::synth;

struct Fs(PathBuf);

impl SourceLoader for Fs {
    fn load(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn stdlib_dir(&self) -> Option<PathBuf> {
        Some(self.0.clone())
    }
}

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every example, checked (name, model as written), in file order; the
/// test fails if one does not check.
pub fn examples() -> Vec<(String, Model)> {
    let root = root();
    let loader = Fs(root.join("stdlib-policies"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "weir"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let inv = f.with_file_name("inventory.json");
            let inv = inv.exists().then_some(inv);
            let c = check_program(std::slice::from_ref(&f), &loader, inv.as_deref());
            assert!(!c.has_errors(), "{} does not check", f.display());
            (
                f.file_stem().unwrap().to_string_lossy().into_owned(),
                c.model,
            )
        })
        .collect()
}

/// The iptables bundle texts of a model `(ipset, iptables)` (Maglev
/// balanced at random, as the iptables back end can), `None` if the back
/// end refuses it.
pub fn texts(m: &Model) -> Option<(String, String)> {
    let g = graph::compile(m);
    let opts = weir_compiler::iptables::Options {
        maglev_as_random: true,
        ..weir_compiler::iptables::Options::default()
    };
    let out = weir_compiler::iptables::generate_text(&g.graph, m, &opts).ok()?;
    Some((out.ipset, out.iptables))
}

/// The generated model with sets the oracles add to the examples
/// ("synth-300": 30 policies of 10 rules over 300 endpoints).
pub fn synth_300() -> Model {
    synth::model(&synth::Params {
        policies: 30,
        rules: 10,
        endpoints: 300,
        deployments: 60,
        ..synth::Params::default()
    })
}
