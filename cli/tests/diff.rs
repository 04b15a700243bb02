//! `weir diff` on two versions of examples/three-tier: the exact rows
//! reported for one changed rule, the exit codes (0 same, 3 allows more,
//! 4 only denies more, 1 errors, 2 usage), every output format (JSON
//! against docs/schemas/diff.json, SARIF through serde-sarif's typed
//! model, Markdown), and `--git` on a scratch repository.

#[path = "support/run.rs"]
mod run;
mod support;

use run::{show, weir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::schema::assert_valid;

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/three-tier/three-tier.weir")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-diff-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The example with `from` replaced by `to` (which must occur once).
fn edited(dir: &Path, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(example()).unwrap();
    assert_eq!(text.matches(from).count(), 1, "{from}");
    let p = dir.join("three-tier.weir");
    std::fs::write(&p, text.replace(from, to)).unwrap();
    p
}

fn json(args: &[&str]) -> (i32, Value) {
    let o = weir(args);
    let v: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}\n{}", show(&o)));
    assert_valid("diff", &v);
    (o.status.code().unwrap(), v)
}

/// Rows as `from | to | traffic | old rule | new rule` strings.
fn rows(v: &Value) -> Vec<String> {
    let ports = |c: &Value| -> String {
        let r: Vec<String> = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| format!("{}-{}", r["lo"], r["hi"]))
            .collect();
        r.join(",")
    };
    let dec = |d: &Value| {
        format!(
            "{} {}",
            d["verdict"].as_str().unwrap(),
            d["decided_by"]["description"].as_str().unwrap()
        )
    };
    v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} | {} | {} {} | {} | {}",
                c["from_name"].as_str().unwrap(),
                c["to_name"].as_str().unwrap(),
                c["proto"].as_str().unwrap(),
                ports(c),
                dec(&c["old"]),
                dec(&c["new"])
            )
        })
        .collect()
}

#[test]
fn one_widened_rule_reports_exactly_its_pairs() {
    let dir = scratch("widen");
    let new = edited(
        &dir,
        "allow tcp 5432 from corp",
        "allow tcp 5432-5433 from corp",
    );
    let old = example();
    let (code, v) = json(&["diff", run::s(&old), run::s(&new), "--format", "json"]);
    assert_eq!(code, 3, "{v:#}");
    assert_eq!(v["summary"], "allows-more");
    assert_eq!(
        rows(&v),
        ["set corp | db-1 | tcp 5433-5433 | deny db-ingress ingress rule #3 | allow db-ingress ingress rule #2"]
    );
    assert_eq!(v["services"], serde_json::json!([]));
    let at = v["changes"][0]["new"]["decided_by"]["location"]["at"]
        .as_str()
        .unwrap();
    assert!(at.ends_with("three-tier.weir:51:5"), "{at}");
    // The group is the set, as addresses.
    let g = &v["groups"][v["changes"][0]["from"][0].as_u64().unwrap() as usize];
    assert_eq!(
        g["cidrs"],
        serde_json::json!([
            "172.16.0.0/14",
            "172.21.0.0/16",
            "172.22.0.0/15",
            "172.24.0.0/13",
            "192.168.0.0/16"
        ])
    );
    // Human: the same row, with both rules and their lines.
    let o = weir(&["diff", run::s(&old), run::s(&new)]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("now allowed  tcp 5433\n  from  set corp\n  to    db-1\n"),
        "{text}"
    );
    assert!(text.contains("allow tcp 5432-5433 from corp"), "{text}");
    assert!(text.contains("deny from any log"), "{text}");
}

#[test]
fn a_rule_without_a_protocol_reports_every_other_protocol() {
    let dir = scratch("other");
    let new = edited(&dir, "allow tcp 5432 from api", "allow from api");
    let (code, v) = json(&["diff", run::s(&example()), run::s(&new), "--format", "json"]);
    assert_eq!(code, 3, "{v:#}");
    let protos: Vec<&str> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["proto"].as_str().unwrap())
        .collect();
    // The example is IPv4 only: ICMP is `icmp`, and ESP, GRE, ICMPv6 in
    // IPv4 and every other protocol are one `other` row.
    assert_eq!(protos, ["tcp", "udp", "sctp", "icmp", "other"], "{v:#}");
    let other = &v["changes"][4];
    assert_eq!(other["to_name"], "db-1");
    assert_eq!(other["ports"], serde_json::json!([]));
    assert_eq!(other["icmp_types"], serde_json::json!([]));
    let o = weir(&["diff", run::s(&example()), run::s(&new)]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("now allowed  other\n"), "{text}");
}

#[test]
fn a_narrowed_rule_only_denies_more() {
    let dir = scratch("narrow");
    let new = edited(&dir, "allow tcp 8443 from any", "allow tcp 8443 from corp");
    let (code, v) = json(&["diff", run::s(&example()), run::s(&new), "--format", "json"]);
    assert_eq!(code, 4, "{v:#}");
    assert_eq!(v["summary"], "denies-more");
    assert_eq!(
        rows(&v),
        [
            "any IPv4 address except set corp | web-1, web-2 | tcp 8443-8443 | allow web-ingress ingress rule #1 | deny default deny (ingress): endpoint is selected by policies in tier default and no rule allowed it",
            "any IPv4 address except set corp | 10.96.0.10 (frontend of web-vip) | tcp 443-443 | allow web-ingress ingress rule #1 | deny default deny (ingress): endpoint is selected by policies in tier default and no rule allowed it"
        ]
    );
    // Connections to the frontend name the backend they are balanced to.
    let via: Vec<String> = v["changes"][1]["via"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| format!("{} {}", x["old"]["endpoint"], x["new"]["endpoint"]))
        .collect();
    assert_eq!(via, [r#""web-1" "web-1""#, r#""web-2" "web-2""#]);
    assert_eq!(v["changes"][0]["via"], serde_json::json!([]));
}

#[test]
fn the_same_program_is_no_change() {
    let dir = scratch("same");
    let new = edited(&dir, "# A classic", "# Still a classic");
    let o = weir(&["diff", run::s(&example()), run::s(&new)]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("no connectivity change"));
    let (code, v) = json(&["diff", run::s(&example()), run::s(&new), "--format", "json"]);
    assert_eq!((code, &v["summary"]), (0, &Value::from("same")));
}

#[test]
fn a_moved_backend_port_is_a_service_change() {
    let dir = scratch("svc");
    let new = edited(
        &dir,
        "backends select web port 8443",
        "backends select web port 8444",
    );
    let (code, v) = json(&["diff", run::s(&example()), run::s(&new), "--format", "json"]);
    assert_eq!(code, 3, "{v:#}");
    let s = &v["services"][0];
    assert_eq!(s["frontend"]["addr"], "10.96.0.10");
    assert_eq!(s["old"]["backends"][0]["port"], 8443);
    assert_eq!(s["new"]["backends"][0]["port"], 8444);
    assert_eq!(s["adds"], true);
    // Connections to the frontend now reach port 8444, which no rule
    // allows: every one of them is denied, whichever backend it gets.
    assert_eq!(
        rows(&v),
        ["any IPv4 address | 10.96.0.10 (frontend of web-vip) | tcp 443-443 | allow web-ingress ingress rule #1 | deny default deny (ingress): endpoint is selected by policies in tier default and no rule allowed it"]
    );
    assert_eq!(v["changes"][0]["via"].as_array().unwrap().len(), 4);
    let o = weir(&["diff", run::s(&example()), run::s(&new)]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("  via   backends web-1:8443, web-2:8443 before, web-1:8444, web-2:8444 now (every combination)\n"),
        "{text}"
    );
}

#[test]
fn markdown_and_sarif() {
    let dir = scratch("formats");
    let new = edited(&dir, "allow tcp 5432 from api", "allow tcp 5432 from web");
    let o = weir(&[
        "diff",
        run::s(&example()),
        run::s(&new),
        "--format",
        "markdown",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let md = String::from_utf8(o.stdout).unwrap();
    assert!(
        md.starts_with("### weir diff: 2 changed connections (1 now allowed, 1 now denied)"),
        "{md}"
    );
    assert!(
        md.contains("| ⚠️ now allowed | web-1, web-2 | db-1 | tcp 5432 |"),
        "{md}"
    );
    assert!(
        md.contains("| now denied | api-1, api-2 | db-1 | tcp 5432 |"),
        "{md}"
    );
    let o = weir(&[
        "diff",
        run::s(&example()),
        run::s(&new),
        "--format",
        "sarif",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let typed: Result<serde_sarif::sarif::Sarif, _> = serde_json::from_value(v.clone());
    assert!(typed.is_ok(), "{typed:?}\n{v:#}");
    let results = v["runs"][0]["results"].as_array().unwrap();
    let ids: Vec<&str> = results
        .iter()
        .map(|r| r["ruleId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["weir-diff/now-allowed", "weir-diff/now-denied"]);
    let loc = &results[0]["locations"][0]["physicalLocation"];
    assert_eq!(loc["region"]["startLine"], 50, "{v:#}");
    assert!(loc["artifactLocation"]["uri"]
        .as_str()
        .unwrap()
        .ends_with("three-tier.weir"));
}

#[test]
fn errors_and_usage() {
    let dir = scratch("errors");
    let bad = edited(&dir, "applies to db", "applies to nosuch");
    let o = weir(&["diff", run::s(&example()), run::s(&bad)]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let o = weir(&["diff", run::s(&example())]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let o = weir(&["diff", run::s(&example()), "/nonexistent/x.weir"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
}

fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {}", show(&o));
}

#[test]
fn two_git_revisions() {
    let repo = scratch("git");
    let pol = repo.join("policies");
    std::fs::create_dir_all(&pol).unwrap();
    let text = std::fs::read_to_string(example()).unwrap();
    // The rule under test lives in an imported file: imports are read at
    // each revision too.
    let (main, lib) = text.split_once("policy web-ingress").unwrap();
    std::fs::write(pol.join("main.weir"), format!("import lib.web\n{main}")).unwrap();
    std::fs::create_dir_all(pol.join("lib")).unwrap();
    let lib = format!("policy web-ingress{lib}");
    std::fs::write(pol.join("lib/web.weir"), &lib).unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "one"]);
    std::fs::write(
        pol.join("lib/web.weir"),
        lib.replace("allow tcp 5432 from api", "allow tcp 5432 from web"),
    )
    .unwrap();
    // The working tree differs from HEAD; HEAD~0..HEAD does not.
    let o = Command::new(env!("CARGO_BIN_EXE_weir"))
        .current_dir(&repo)
        .args([
            "diff",
            "--git",
            "HEAD",
            "policies/main.weir",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    git(&repo, &["commit", "-qam", "two"]);
    let o = Command::new(env!("CARGO_BIN_EXE_weir"))
        .current_dir(&pol)
        .args([
            "diff",
            "--git",
            "HEAD~1..HEAD",
            "main.weir",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_valid("diff", &v);
    assert_eq!(v["old"], "HEAD~1");
    assert_eq!(
        rows(&v),
        [
            "web-1, web-2 | db-1 | tcp 5432-5432 | deny db-ingress ingress rule #3 | allow db-ingress ingress rule #1",
            "api-1, api-2 | db-1 | tcp 5432-5432 | allow db-ingress ingress rule #1 | deny db-ingress ingress rule #3"
        ]
    );
    // Locations are paths in the repository, not the temporary copy.
    let at = v["changes"][0]["new"]["decided_by"]["location"]["at"]
        .as_str()
        .unwrap();
    assert!(at.starts_with("policies/lib/web.weir:"), "{at}");
    let o = Command::new(env!("CARGO_BIN_EXE_weir"))
        .current_dir(&pol)
        .args(["diff", "--git", "HEAD..HEAD", "main.weir"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_weir"))
        .current_dir(&pol)
        .args(["diff", "--git", "nosuch..HEAD", "main.weir"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let _ = std::fs::remove_dir_all(&repo);
}

/// The `weir` line of docs/ci.md's pull-request workflow (its `yml`
/// block), run as written in a repository whose `origin/main` is one
/// commit behind HEAD: it writes the Markdown comment and exits 3.
#[test]
fn the_pull_request_workflow_works_as_written() {
    let doc =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/ci.md"))
            .unwrap();
    let mut cmds = Vec::new();
    let mut inside = false;
    for line in doc.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            inside = t == "```yml";
            continue;
        }
        if inside && t.starts_with("weir ") {
            cmds.push(t.to_string());
        }
    }
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    assert!(cmds[0].contains("--git origin/main...HEAD") && cmds[0].contains("--format markdown"));
    let repo = scratch("workflow");
    std::fs::create_dir_all(repo.join("policies")).unwrap();
    std::fs::copy(example(), repo.join("policies/main.weir")).unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "base"]);
    git(&repo, &["update-ref", "refs/remotes/origin/main", "HEAD"]);
    let text = std::fs::read_to_string(repo.join("policies/main.weir")).unwrap();
    std::fs::write(
        repo.join("policies/main.weir"),
        text.replace("allow tcp 5432 from corp", "allow tcp 5432 from any"),
    )
    .unwrap();
    git(&repo, &["commit", "-qam", "open the database"]);
    let bin = Path::new(env!("CARGO_BIN_EXE_weir")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new("sh")
        .arg("-c")
        .arg(&cmds[0])
        .current_dir(&repo)
        .env("PATH", path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let md = std::fs::read_to_string(repo.join("weir-diff.md")).unwrap();
    assert!(md.starts_with("### weir diff: "), "{md}");
    assert!(md.contains("| ⚠️ now allowed | "), "{md}");
    assert!(md.contains("db-1"), "{md}");
    let _ = std::fs::remove_dir_all(&repo);
}

/// Every pair of examples (different inventories, services, steering,
/// tiers): JSON valid against its schema, SARIF readable by serde-sarif,
/// and the exit code agreeing with the summary.
#[test]
fn every_pair_of_examples() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut examples: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    examples.sort();
    assert!(examples.len() >= 5);
    for a in &examples {
        for b in &examples {
            let (code, v) = json(&["diff", run::s(a), run::s(b), "--format", "json"]);
            let want = match v["summary"].as_str().unwrap() {
                "same" => 0,
                "allows-more" => 3,
                _ => 4,
            };
            assert_eq!(code, want, "{} {}", a.display(), b.display());
            assert_eq!(a == b, code == 0, "{} {}", a.display(), b.display());
            let o = weir(&["diff", run::s(a), run::s(b), "--format", "sarif"]);
            let s: Value = serde_json::from_slice(&o.stdout).unwrap();
            let typed: Result<serde_sarif::sarif::Sarif, _> = serde_json::from_value(s.clone());
            assert!(typed.is_ok(), "{typed:?}");
            let results = s["runs"][0]["results"].as_array().unwrap().len();
            let rows =
                v["changes"].as_array().unwrap().len() + v["services"].as_array().unwrap().len();
            assert_eq!(results, rows, "{} {}", a.display(), b.display());
        }
    }
}
