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
