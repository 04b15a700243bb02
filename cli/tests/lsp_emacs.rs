//! Emacs with eglot (the client built into Emacs 29; Debian 12's Emacs 28
//! with the `elpa-eglot` package) against `weir lsp`, in batch mode with
//! docs/editors.md's eglot setup as its init file, running
//! `emacs/session.el`.
//!
//! scripts/test does not install Emacs (a large package), so without an
//! Emacs that has eglot the test is skipped, under CI too; the Neovim test
//! is the one CI requires.

mod lsp_common;

use lsp_common::{doc_snippet, have, path_with_weir, project, run_bounded, stdlib, MAIN};
use std::path::Path;
use std::process::Command;

fn emacs(ws: &Path) -> Command {
    let mut c = Command::new("emacs");
    c.current_dir(ws)
        .args(["--batch", "-q", "--eval", "(package-initialize)"])
        .env("HOME", ws.join(".home"))
        .env("PATH", path_with_weir())
        .env("WEIR_STDLIB", stdlib());
    c
}

#[test]
fn eglot_session() {
    let ws = project("lsp-emacs");
    std::fs::create_dir_all(ws.join(".home")).unwrap();
    let has_eglot = have("emacs")
        && run_bounded(emacs(&ws).args(["--eval", "(require 'eglot)"]))
            .status
            .success();
    if !has_eglot {
        let _ = std::fs::remove_dir_all(&ws);
        eprintln!("lsp_emacs: no Emacs with eglot, skipped");
        return;
    }
    std::fs::write(ws.join("init.el"), doc_snippet("## Emacs (eglot)", "elisp")).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/emacs/session.el");
    let out = ws.join("result.txt");
    let run = run_bounded(
        emacs(&ws)
            .args(["-l", "init.el", "-l"])
            .arg(&script)
            .env("WEIR_EMACS_OUT", &out),
    );
    let text = std::fs::read_to_string(&out).unwrap_or_else(|e| {
        panic!(
            "session.el wrote no result ({e}):\n{}",
            String::from_utf8_lossy(&run.stderr)
        )
    });
    let _ = std::fs::remove_dir_all(&ws);
    // How elisp's `%S` prints a string: quoted, `"` and `\` escaped.
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    for want in [
        "mode: weir-mode".to_string(),
        "hover-capable: t".to_string(),
        "diagnostic: (\"weir [E0201]: unknown selector or set `webb`\")".to_string(),
        "cleared: t".to_string(),
        "references: (\"lib.weir\" \"main.weir\" \"other.weir\" \"other.weir\")".to_string(),
        format!("formatted: {}", q(MAIN)),
    ] {
        assert!(text.contains(&want), "{want}\nnot in:\n{text}");
    }
    assert!(!text.contains("error:"), "{text}");
    let hover = text.split("hover: ").nth(1).unwrap_or("");
    assert!(
        hover.contains("`web-1`, `web-2`"),
        "hover names the endpoints: {hover}"
    );
}
