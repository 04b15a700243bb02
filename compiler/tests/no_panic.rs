//! Random and mutated inputs never panic the front end, the checker or the
//! interpreter: they produce diagnostics. Mutations start from every
//! example, stdlib and semantics file and splice, delete, duplicate and
//! swap pieces of them (deterministic seed, so a failure reproduces).

use std::path::{Path, PathBuf};
use weir_compiler::check::check_program;
use weir_compiler::gen::Rng;
use weir_compiler::interp::run_tests;
use weir_compiler::source::MemoryLoader;

fn corpus() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = ["examples", "stdlib-policies", "compiler/tests/semantics"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if p.extension().is_some_and(|e| e == "weir") {
            out.push(std::fs::read_to_string(&p).unwrap());
        }
    }
    out.sort();
    assert!(out.len() >= 10);
    out
}

const PIECES: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    ";",
    ":",
    "=",
    "==",
    "!=",
    "&&",
    "||",
    "!",
    "/",
    "-",
    ".",
    "\n",
    " ",
    "\"",
    "#",
    "@",
    "10.0.0.1",
    "10.0.0.0/8",
    "fd00::/8",
    "300.1.1.1",
    "70000",
    "0x10",
    "3h",
    "all",
    "any",
    "allow",
    "deny",
    "pass",
    "log",
    "from",
    "to",
    "tcp",
    "icmp",
    "type",
    "code",
    "policy p {",
    "applies to all",
    "ingress {",
    "egress {",
    "tier",
    "priority",
    "service s {",
    "frontend 1.2.3.4:80/tcp",
    "backends select all port 1",
    "import std.dns",
    "import nothere",
    "selector x = x",
    "set y = y",
    "inventory \"nope.json\"",
    "test \"t\" {",
    "expect allow tcp from any to any port 1",
    "default deny ingress",
    "steer s {",
    "redirect tcp 80 to proxy 127.0.0.1:1",
    "endpoint e { addr 10.0.0.1 }",
];

fn mutate(rng: &mut Rng, src: &str) -> String {
    let mut b: Vec<u8> = src.as_bytes().to_vec();
    for _ in 0..1 + rng.below(6) {
        let at = rng.below(b.len() + 1);
        match rng.below(5) {
            0 if !b.is_empty() => {
                let end = (at + 1 + rng.below(20)).min(b.len());
                b.drain(at.min(end)..end);
            }
            1 => {
                let piece = PIECES[rng.below(PIECES.len())];
                b.splice(at..at, piece.bytes());
            }
            2 if !b.is_empty() => {
                let start = rng.below(b.len());
                let end = (start + rng.below(80)).min(b.len());
                let chunk: Vec<u8> = b[start..end].to_vec();
                b.splice(at..at, chunk);
            }
            3 => {
                let junk: Vec<u8> = (0..rng.below(8)).map(|_| rng.next_u64() as u8).collect();
                b.splice(at..at, junk);
            }
            _ => {
                if at < b.len() {
                    b[at] = rng.next_u64() as u8;
                }
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn run(src: String) {
    let path = PathBuf::from("/fuzz/input.weir");
    let loader = MemoryLoader::new().with(&path, src);
    let checked = check_program(&[path], &loader, None);
    if !checked.has_errors() {
        run_tests(&checked.model);
    }
}

#[test]
fn mutated_sources_never_panic() {
    let corpus = corpus();
    let mut rng = Rng::new(0x5EED);
    for i in 0..3000 {
        let base = &corpus[i % corpus.len()];
        let src = mutate(&mut rng, base);
        let shown = src.clone();
        if std::panic::catch_unwind(|| run(src)).is_err() {
            panic!("panic on mutated input #{i}:\n{shown}");
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng::new(42);
    for _ in 0..500 {
        let len = rng.below(400);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        run(String::from_utf8_lossy(&bytes).into_owned());
    }
}
