//! The meaning, data-driven: every `compiler/tests/semantics/*.weir` file
//! is a program whose `test` blocks state what docs/language.md §4 says
//! about one topic. All must check cleanly and every expectation must hold
//! in the reference interpreter.

use std::path::{Path, PathBuf};
use weir_compiler::check::check_program;
use weir_compiler::interp::{parse_packet, run_tests, Interp};
use weir_compiler::model::{SteerAction, Verdict};
use weir_compiler::source::MemoryLoader;

fn load(path: &Path) -> weir_compiler::check::Checked {
    let text = std::fs::read_to_string(path).unwrap();
    let loader = MemoryLoader::new().with(path, text);
    check_program(&[path.to_path_buf()], &loader, None)
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/semantics")
}

#[test]
fn every_semantics_file_passes() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "weir"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "semantics files went missing: {files:?}");
    let mut total = 0;
    for f in &files {
        let checked = load(f);
        assert!(
            !checked.has_errors(),
            "{}: {:#?}",
            f.display(),
            checked.diagnostics
        );
        let report = run_tests(&checked.model);
        assert!(
            !report.results.is_empty(),
            "{} has no expectations",
            f.display()
        );
        for r in &report.results {
            assert!(
                r.failure.is_none(),
                "{}: test {:?}: {}",
                f.display(),
                r.test,
                r.failure.as_deref().unwrap_or("")
            );
        }
        total += report.results.len();
    }
    assert!(total >= 60, "only {total} expectations ran");
}

#[test]
fn steering_actions_ride_on_allowed_packets() {
    let checked = load(&dir().join("steering.weir"));
    let interp = Interp::new(&checked.model);
    let o = interp.evaluate(&parse_packet("tcp 10.0.0.1:1234 -> 203.0.113.1:80").unwrap());
    assert_eq!(o.verdict, Verdict::Allow);
    assert_eq!(
        o.steering.map(|s| s.action),
        Some(SteerAction::Redirect {
            addr: "127.0.0.1".parse().unwrap(),
            port: 15001
        })
    );
    let o = interp.evaluate(&parse_packet("udp 10.0.0.9:1234 -> 203.0.113.1:53").unwrap());
    // The proxy endpoint has no policy: allowed, and marked.
    assert_eq!(o.verdict, Verdict::Allow);
    assert_eq!(o.steering.map(|s| s.action), Some(SteerAction::Mark(0x10)));
    // Denied packets carry no steering.
    let o = interp.evaluate(&parse_packet("udp 10.0.0.1:1234 -> 203.0.113.1:54").unwrap());
    assert_eq!(o.verdict, Verdict::Deny);
    assert!(o.steering.is_none());
}

#[test]
fn maglev_service_choice_is_stable_and_spread() {
    let checked = load(&dir().join("services.weir"));
    let interp = Interp::new(&checked.model);
    let mut seen = std::collections::BTreeSet::new();
    for sport in 1000..1200 {
        let p = parse_packet(&format!("tcp 10.0.0.1:{sport} -> 10.96.0.1:80")).unwrap();
        let a = interp.evaluate(&p);
        let b = interp.evaluate(&p);
        let chosen = a.service.as_ref().unwrap().chosen.clone().unwrap();
        assert_eq!(Some(chosen.clone()), b.service.unwrap().chosen);
        seen.insert(chosen.addr);
    }
    assert_eq!(seen.len(), 2, "both backends get flows");
}

/// A policy of a `default pass` tier lets through what it does not
/// decide, so a deny-only one turns on no default deny (W0304), and
/// `self` / `world` peers check clean.
#[test]
fn default_pass_tier_turns_nothing_on() {
    let src = r#"
tier admin order 10 default pass
endpoint a { labels { app: "a" } addr 10.0.0.1 }
endpoint b { labels { app: "b" } addr 10.0.0.2 }
policy guard tier admin {
  applies to all
  ingress {
    deny tcp 22 from world
    allow from self
  }
  egress {
    deny to world { 192.0.2.0/24 } except { 192.0.2.1 }
  }
}
policy web {
  applies to app == "a"
  ingress {
    allow tcp 80 from app == "b"
  }
}
"#;
    let path = Path::new("/mem/default-pass.weir");
    let loader = MemoryLoader::new().with(path, src.to_string());
    let checked = check_program(&[path.to_path_buf()], &loader, None);
    assert!(checked.diagnostics.is_empty(), "{:#?}", checked.diagnostics);
    // Without `default pass` the same deny-only egress turns it on.
    let strict = src.replace("order 10 default pass", "order 10");
    let loader = MemoryLoader::new().with(path, strict);
    let checked = check_program(&[path.to_path_buf()], &loader, None);
    let codes: Vec<String> = checked
        .diagnostics
        .iter()
        .map(|d| d.code.to_string())
        .collect();
    assert_eq!(codes, ["W0304"], "{:#?}", checked.diagnostics);
}
