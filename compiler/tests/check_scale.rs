//! Programs that are large or deep in the ways a user controls: long
//! chains of named definitions must resolve (or be refused with a
//! diagnostic) without overflowing the stack, and a set of 200,000
//! prefixes must check in seconds, not hours. No timing assertions: a
//! regression shows as a stack overflow (the test process aborts) or as a
//! test that does not finish.

use std::fmt::Write;
use weir_compiler::check::{check_program, Checked};
use weir_compiler::source::MemoryLoader;

/// Checks `src` on a thread with the default 2 MiB stack of spawned
/// threads (smaller than the CLI's main thread).
fn check_small_stack(src: String) -> Checked {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let loader = MemoryLoader::new().with("main.weir", src);
            check_program(&["main.weir".into()], &loader, None)
        })
        .unwrap()
        .join()
        .expect("the checker does not panic")
}

fn codes(c: &Checked) -> Vec<&str> {
    c.diagnostics.iter().map(|d| d.code.as_str()).collect()
}

const CHAIN: usize = 20_000;

const TAIL: &str = "endpoint a { labels { app: \"a\" } addr 10.0.0.1 }\n";

#[test]
fn a_long_chain_of_selectors_resolves() {
    let mut src = String::new();
    for i in 0..CHAIN {
        writeln!(src, "selector s{i} = s{}", i + 1).unwrap();
    }
    writeln!(src, "selector s{CHAIN} = app == \"a\"").unwrap();
    src.push_str(TAIL);
    src.push_str("policy p priority 1 {\n  applies to s0\n  ingress { allow tcp 80 from s0 }\n}\n");
    let c = check_small_stack(src);
    assert!(!c.has_errors(), "{:?}", codes(&c));
    assert_eq!(c.model.named_selectors.len(), CHAIN + 1);
}

#[test]
fn a_long_chain_of_sets_with_except_resolves() {
    let mut src = String::new();
    for i in 0..CHAIN {
        writeln!(
            src,
            "set t{i} = {{ t{}, 10.0.0.1 }} except {{ 10.0.0.1 }}",
            i + 1
        )
        .unwrap();
    }
    writeln!(src, "set t{CHAIN} = {{ 10.0.0.0/8 }}").unwrap();
    src.push_str(TAIL);
    src.push_str(
        "policy p priority 1 {\n  applies to app == \"a\"\n  ingress { allow tcp 80 from t0 }\n}\n",
    );
    let c = check_small_stack(src);
    assert!(!c.has_errors(), "{:?}", codes(&c));
    let t0 = &c.model.named_sets["t0"];
    assert!(t0.contains("10.0.0.2".parse().unwrap()));
    assert!(!t0.contains("10.0.0.1".parse().unwrap()));
}

#[test]
fn a_chain_that_inlines_too_deep_is_refused() {
    let mut src = String::new();
    for i in 0..CHAIN {
        writeln!(src, "selector s{i} = s{} && app == \"a\"", i + 1).unwrap();
    }
    writeln!(src, "selector s{CHAIN} = app == \"a\"").unwrap();
    src.push_str(TAIL);
    src.push_str("policy p priority 1 {\n  applies to s0\n}\n");
    let c = check_small_stack(src);
    let deep: Vec<_> = c
        .diagnostics
        .iter()
        .filter(|d| d.code.as_str() == "E0013")
        .collect();
    // The first selector past the limit is refused; those built on it
    // resolve to nothing and say nothing more.
    assert_eq!(deep.len(), 1, "{:?}", codes(&c));
    assert!(deep[0].message.contains("s18976"), "{}", deep[0].message);
}

#[test]
fn a_long_cycle_is_reported_once() {
    let mut src = String::new();
    for i in 0..CHAIN {
        writeln!(src, "selector s{i} = s{}", (i + 1) % CHAIN).unwrap();
    }
    src.push_str(TAIL);
    src.push_str("policy p priority 1 {\n  applies to s0\n}\n");
    let c = check_small_stack(src);
    assert_eq!(codes(&c), ["E0207"]);
}

/// 200,000 host and network prefixes in one set, with holes: resolved by
/// sorted sweeps (the per-element normalisation this replaces took 208 s
/// for 8,000 hosts).
#[test]
fn a_set_of_200k_prefixes_checks() {
    let mut src = String::from("set big = {\n");
    for i in 0..200_000u32 {
        let a = 0x0a00_0000 + i * 3;
        let [_, b, c, d] = a.to_be_bytes();
        if i % 10 == 0 {
            writeln!(src, "  fd00::{:x}:{:x},", i >> 16, i & 0xffff).unwrap();
        } else {
            writeln!(src, "  10.{b}.{c}.{d},").unwrap();
        }
    }
    src.push_str("  172.16.0.0/12\n} except { 10.0.0.3, 172.16.5.0/24, fd00::1 }\n");
    src.push_str(TAIL);
    src.push_str("policy p priority 1 {\n  applies to app == \"a\"\n  ingress { allow tcp 80 from big }\n}\n");
    let loader = MemoryLoader::new().with("main.weir", src);
    let c = check_program(&["main.weir".into()], &loader, None);
    assert!(!c.has_errors(), "{:?}", codes(&c));
    let big = &c.model.named_sets["big"];
    assert_eq!(big.include.len(), 200_001);
    assert_eq!(big.exclude.len(), 3);
    assert!(big.contains("10.0.0.6".parse().unwrap()));
    assert!(!big.contains("10.0.0.3".parse().unwrap()));
    assert!(!big.contains("fd00::1".parse().unwrap()));
    assert!(big.contains("fd00::2:5".parse().unwrap()) == (0x2_0005 % 10 == 0));
    assert!(!big.contains("172.16.5.9".parse().unwrap()));
    assert!(big.contains("172.16.6.9".parse().unwrap()));
}
