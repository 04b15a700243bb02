//! Running the `weir` binary from a test: its output, a readable dump of
//! it for assertion messages, and paths as arguments. Included with
//! `#[path]` by the tests that use it (not every test uses every helper).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `weir` this test crate was built with.
pub fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .unwrap()
}

/// Exit code, stdout and stderr, for an assertion message.
pub fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The stdout of a run that must have succeeded.
pub fn ok(o: Output) -> String {
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
