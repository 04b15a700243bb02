//! What the compiler's integration tests share: a filesystem
//! `SourceLoader` (the compiler itself does no IO; tests may) and the
//! example programs of the repository.

#![allow(dead_code)] // each test binary uses its own subset

use std::io;
use std::path::{Path, PathBuf};
use weir_compiler::check::{check_program, Checked};
use weir_compiler::source::SourceLoader;

/// Reads the file system; `import std.X` resolves in `stdlib-policies/`.
pub struct Fs {
    pub stdlib: PathBuf,
}

impl SourceLoader for Fs {
    fn load(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn stdlib_dir(&self) -> Option<PathBuf> {
        Some(self.stdlib.clone())
    }
}

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn loader() -> Fs {
    Fs {
        stdlib: root().join("stdlib-policies"),
    }
}

/// `examples/*/*.weir`, sorted; at least six.
pub fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .filter_map(|d| d.ok().map(|d| d.path()))
        .filter(|d| d.is_dir())
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "weir"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "examples went missing: {files:?}");
    files
}

/// Check one example program (its `inventory` lines load its endpoints);
/// panics on errors.
pub fn check_example(file: &Path) -> Checked {
    let checked = check_program(&[file.to_path_buf()], &loader(), None);
    assert!(
        !checked.has_errors(),
        "{} has errors: {:#?}",
        file.display(),
        checked.diagnostics
    );
    checked
}
