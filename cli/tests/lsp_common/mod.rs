//! What the real-editor tests (lsp_nvim.rs, lsp_emacs.rs, lsp_vscode.rs)
//! share: the two-file project plus an unopened third file, the setups
//! read from docs/editors.md, and running an editor with a bound.

#![allow(dead_code)] // each test binary uses its own part

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const LIB: &str = "# Shared definitions.
selector web = app == \"web\"

endpoint web-1 { labels { app: \"web\" } addr 10.1.0.5 }
endpoint web-2 { labels { app: \"web\" } addr 10.1.0.6 }
endpoint api-1 { labels { app: \"api\" } addr 10.1.1.5 }
";

pub const MAIN: &str = "import lib

selector api = app == \"api\"

policy api-in priority 100 {
  applies to api
  ingress {
    allow tcp 8080 from web
  }
}
";

/// Never opened in the editor: find-references must read it from disk.
pub const OTHER: &str = "import lib

policy web-out priority 10 {
  applies to web
  egress {
    allow tcp 443 to web
  }
}
";

/// A fresh directory holding lib.weir, main.weir and other.weir.
pub fn project(name: &str) -> PathBuf {
    let ws = std::env::temp_dir().join(format!("weir-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ws);
    std::fs::create_dir_all(&ws).unwrap();
    let ws = std::fs::canonicalize(&ws).unwrap();
    for (file, text) in [
        ("lib.weir", LIB),
        ("main.weir", MAIN),
        ("other.weir", OTHER),
    ] {
        std::fs::write(ws.join(file), text).unwrap();
    }
    ws
}

/// The first fenced block of `lang` after `heading` in docs/editors.md:
/// the setups are tested exactly as the documentation gives them.
pub fn doc_snippet(heading: &str, lang: &str) -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/editors.md"))
            .expect("docs/editors.md");
    let rest = &doc[doc.find(heading).expect("the heading in docs/editors.md")..];
    let fence = format!("```{lang}\n");
    let body = &rest[rest.find(&fence).expect("the fenced block") + fence.len()..];
    body[..body.find("```").expect("the block's end")].to_string()
}

pub fn stdlib() -> PathBuf {
    std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../stdlib-policies")).unwrap()
}

/// `PATH` with the `weir` under test first.
pub fn path_with_weir() -> String {
    let weir = Path::new(env!("CARGO_BIN_EXE_weir"));
    format!(
        "{}:{}",
        weir.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Whether `program --version` runs.
pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `cmd` (stdin closed, output captured), killing it after two
/// minutes: a bound so that a hung editor cannot stall CI, not a timing
/// assertion.
pub fn run_bounded(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    // Drained while it runs, so a chatty child never blocks on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within 120 s (killed)");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}
