//! The `weir` binary on programs deep in the ways a user controls: 20,000
//! chained selectors or sets (with `except`) used to overflow the stack
//! and abort (SIGABRT), in `check`, `compile` and the language server
//! alike. Now they check and compile; an exit by signal fails the test.

use std::fmt::Write;
use std::path::PathBuf;
use std::process::Command;

const N: usize = 20_000;

fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-cli-deep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn run(file: &PathBuf, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "weir {args:?} {}: {:?}\n{}",
        file.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn both(file: &PathBuf) {
    run(file, &["check"]);
    let dir = file.with_extension("out");
    run(
        file,
        &["compile", "--target", "all", "-o", dir.to_str().unwrap()],
    );
}

#[test]
fn chained_selectors_check_and_compile() {
    let mut src = String::new();
    for i in 0..N {
        writeln!(src, "selector s{i} = s{}", i + 1).unwrap();
    }
    writeln!(src, "selector s{N} = app == \"a\"").unwrap();
    src.push_str("endpoint a { labels { app: \"a\" } addr 10.0.0.1 }\n");
    src.push_str("policy p priority 1 {\n  applies to s0\n  ingress { allow tcp 80 from s0 }\n}\n");
    both(&scratch("selectors.weir", &src));
}

#[test]
fn chained_sets_with_except_check_and_compile() {
    let mut src = String::new();
    for i in 0..N {
        writeln!(
            src,
            "set t{i} = {{ t{}, 10.0.0.1 }} except {{ 10.0.0.1 }}",
            i + 1
        )
        .unwrap();
    }
    writeln!(src, "set t{N} = {{ 10.0.0.0/8 }}").unwrap();
    src.push_str("endpoint a { labels { app: \"a\" } addr 10.0.0.1 }\n");
    src.push_str(
        "policy p priority 1 {\n  applies to app == \"a\"\n  ingress { allow tcp 80 from t0 }\n}\n",
    );
    both(&scratch("sets.weir", &src));
}
