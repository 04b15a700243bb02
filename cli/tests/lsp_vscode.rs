//! The VS Code extension (editors/vscode/extension.js, a dependency-free
//! LSP client) against the real `weir lsp`: `node editors/vscode/test/run.js`
//! with a stand-in for the `vscode` module. It checks the extension's
//! protocol half (document sync, diagnostics, every provider), not VS Code.
//!
//! Without `node` the test is skipped, but under `CI=true` it fails
//! (scripts/test installs `nodejs`). node is killed after two minutes.

mod lsp_common;

use lsp_common::{have, run_bounded, stdlib};
use std::path::Path;
use std::process::Command;

#[test]
fn vscode_extension_session() {
    if !have("node") {
        assert!(
            std::env::var("CI").is_err(),
            "node is not installed (CI=true: this is a failure; scripts/test installs nodejs)"
        );
        eprintln!("lsp_vscode: node not found, skipped");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = run_bounded(
        Command::new("node")
            .arg(root.join("editors/vscode/test/run.js"))
            .env("WEIR_BIN", env!("CARGO_BIN_EXE_weir"))
            .env("WEIR_STDLIB", stdlib()),
    );
    assert!(
        out.status.success(),
        "editors/vscode/test/run.js failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
