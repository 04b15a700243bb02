//! A newcomer's first hour with the CLI (issue 16, items 2, 3 and 5):
//! `weir explain`, the hint that points at it, non-`.weir` files refused,
//! a library judged in its importers' context, back-end refusals before
//! compile (`check --target`) as one diagnostic per construct, every
//! example compiling with the command its README gives, snapshots of
//! every example, shell completions and the man page.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "support/markdown.rs"]
mod markdown;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn weir_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .args(args)
        .output()
        .unwrap()
}

fn weir(args: &[&str]) -> Output {
    weir_in(&root(), args)
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn scratch_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-first-hour-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn explain_prints_the_documented_section() {
    let o = weir(&["explain", "E0202"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let doc = std::fs::read_to_string(root().join("docs/diagnostics.md")).unwrap();
    let start = doc.find("## E0202:").unwrap();
    let end = start + doc[start + 3..].find("\n## ").unwrap() + 4;
    assert_eq!(out.trim_end(), doc[start..end].trim_end());
    // Lower case works; an unknown code is a usage error.
    assert_eq!(weir(&["explain", "w0301"]).status.code(), Some(0));
    let o = weir(&["explain", "E9999"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a weir diagnostic code"));
}

#[test]
fn human_diagnostics_point_at_weir_explain_once() {
    let d = scratch_dir("hint");
    std::fs::write(
        d.join("a.weir"),
        "set s = { 10.1.0.1/8 }\nset t = { 10.2.0.1/8 }\n",
    )
    .unwrap();
    let o = weir_in(&d, &["check", "a.weir"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.matches("try `weir explain E0202`").count(),
        1,
        "one hint per run:\n{err}"
    );
    assert!(
        err.trim_end()
            .ends_with("For more information about this diagnostic, try `weir explain E0202`."),
        "{err}"
    );
    // Several codes: listed once.
    std::fs::write(
        d.join("b.weir"),
        "set s = { 10.1.0.1/8 }\nselector x = y == \"z\" @\n",
    )
    .unwrap();
    let o = weir_in(&d, &["check", "b.weir"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Some diagnostics have detailed explanations: E0001, E0202."),
        "{err}"
    );
    // Machine formats carry no hint.
    let o = weir_in(&d, &["check", "--format", "json", "b.weir"]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("weir explain"));
}

#[test]
fn files_that_are_not_weir_are_refused() {
    for cmd in [
        &["check"][..],
        &["test"],
        &["fmt", "--check"],
        &["compile", "--emit", "graph"],
        &["trace", "--packet", "tcp 1.1.1.1 -> 2.2.2.2:1"],
    ] {
        let mut args = cmd.to_vec();
        args.push("README.md");
        let o = weir(&args);
        assert_eq!(o.status.code(), Some(2), "weir {args:?}:\n{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "one clear error:\n{err}");
        assert!(err.contains("README.md is not a policy file"), "{err}");
    }
    // Directories are still walked for *.weir (examples/ holds READMEs).
    let o = weir(&["check", "examples"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn a_library_is_judged_in_its_importers_context() {
    let d = scratch_dir("lib");
    std::fs::write(
        d.join("common.weir"),
        "selector web = app == \"web\"\nselector db = app == \"db\"\nselector never = app == \"nothing\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("a.weir"),
        "import common\nendpoint w { labels { app: \"web\" } addr 10.0.0.1 }\nendpoint d { labels { app: \"db\" } addr 10.0.0.2 }\npolicy p {\n  applies to db\n  ingress { allow tcp 5432 from web }\n}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("b.weir"),
        "import common\nendpoint w { labels { app: \"web\" } addr 10.0.0.1 }\npolicy q {\n  applies to web\n  ingress { allow tcp 80 from any }\n}\n",
    )
    .unwrap();
    let o = weir_in(&d, &["check", "--format", "json", "."]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let msgs: Vec<String> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{} {}", d["code"], d["message"]))
        .collect();
    // `web` and `db` are used by the importers; `never` by nobody.
    assert!(
        !msgs
            .iter()
            .any(|m| m.contains("`web`") || m.contains("`db`")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("W0301") && m.contains("`never`")),
        "{msgs:#?}"
    );
    // Alone, the library's names are all unused (it is its own program).
    let o = weir_in(&d, &["check", "--format", "json", "common.weir"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["warnings"].as_u64().unwrap() >= 3, "{v}");
}

#[test]
fn check_target_reports_back_end_refusals_as_one_diagnostic() {
    let kp = "examples/kube-proxy/kube-proxy.weir";
    assert_eq!(weir(&["check", kp]).status.code(), Some(0));
    let o = weir(&["check", "--color", "never", "--target", "iptables", kp]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("error[E0501]").count(), 1, "{err}");
    assert!(err.contains("the iptables back end cannot express `balance maglev`"));
    for svc in [
        "payments",
        "users",
        "shipping",
        "notify",
        "analytics",
        "chat",
        "quotes",
        "tax",
    ] {
        assert!(
            err.contains(&format!("service `{svc}`")),
            "{svc} missing:\n{err}"
        );
    }
    assert!(
        err.contains("weir check: 1 error, 0 warnings in 1 file"),
        "{err}"
    );
    assert_eq!(
        weir(&["check", "--target", "ebpf", kp]).status.code(),
        Some(0)
    );
    // `--target all` (compile's default): an error naming the back end,
    // nothing written.
    let out = scratch_dir("kp-all");
    let o = weir(&["compile", kp, "-o", out.join("b").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!out.join("b").exists(), "nothing written");
    assert_eq!(
        String::from_utf8_lossy(&o.stderr)
            .matches("error[E0501]")
            .count(),
        1
    );
}

/// `sh -c CMD` from the repository root, this build's `weir` first on
/// PATH.
fn sh(cmd: &str) -> Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_weir")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(root())
        .env("PATH", path)
        .output()
        .unwrap()
}

/// The `weir …` commands in a README's fenced `sh` blocks.
fn readme_commands(readme: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(readme).unwrap();
    markdown::sh_commands(&text)
        .into_iter()
        .map(|c| c.text)
        .filter(|c| c.starts_with("weir "))
        .collect()
}

#[test]
fn every_example_compiles_with_its_readme_command() {
    let mut examples = 0;
    for e in std::fs::read_dir(root().join("examples")).unwrap() {
        let dir = e.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        examples += 1;
        let cmds = readme_commands(&dir.join("README.md"));
        let compile: Vec<&String> = cmds
            .iter()
            .filter(|c| c.starts_with("weir compile "))
            .collect();
        assert!(
            !compile.is_empty(),
            "{}: no `weir compile` command in a ```sh block",
            dir.display()
        );
        let out = scratch_dir(&format!(
            "readme-{}",
            dir.file_name().unwrap().to_string_lossy()
        ));
        for cmd in cmds {
            // As a shell runs it, from the repository root, with this
            // build's weir first on PATH; the bundle in a scratch directory.
            let cmd = cmd.replace(" out/", &format!(" {}/", out.display()));
            let o = sh(&cmd);
            assert_eq!(o.status.code(), Some(0), "{cmd}:\n{}", text(&o));
        }
    }
    assert!(examples >= 6);
}

#[test]
fn snapshots_work_on_every_example() {
    let dir = scratch_dir("snap");
    let s = dir.to_str().unwrap();
    let o = weir(&["test", "--snapshot", s, "examples"]);
    assert_eq!(o.status.code(), Some(1), "no snapshots yet: {}", text(&o));
    let o = weir(&["test", "--snapshot", s, "--update", "examples"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = weir(&["test", "--snapshot", s, "examples"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // kube-proxy's iptables refusal is its snapshot, beside the eBPF one.
    let kp = dir.join("examples/kube-proxy/kube-proxy");
    let refused = std::fs::read_to_string(kp.join("refused-iptables.txt")).unwrap();
    assert!(
        refused.starts_with("E0501: the iptables back end cannot express `balance maglev`"),
        "{refused}"
    );
    assert!(kp.join("weir.asm").exists() && !kp.join("iptables.rules").exists());
    // With an explicit --target, the target must accept the program.
    let o = weir(&[
        "test",
        "--snapshot",
        s,
        "--target",
        "iptables",
        "examples/kube-proxy",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn completions_and_man_page() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef weir"),
        ("fish", "complete -c weir"),
    ] {
        let o = weir(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0));
        let s = String::from_utf8_lossy(&o.stdout);
        assert!(s.contains(marker), "{shell}:\n{s:.300}");
        for cmd in ["check", "compile", "explain", "stats"] {
            assert!(s.contains(cmd), "{shell} completes {cmd}");
        }
    }
    let o = weir(&["man"]);
    assert_eq!(o.status.code(), Some(0));
    let man = String::from_utf8_lossy(&o.stdout);
    assert!(man.contains(".TH weir 1"), "{man:.300}");
    for section in ["WEIR CHECK", "WEIR COMPILE", "WEIR EXPLAIN"] {
        assert!(man.contains(&format!(".SH \"{section}\"")), "{section}");
    }
    // bash accepts the script, and man renders the page, when installed.
    let script = std::env::temp_dir().join(format!("weir-completion-{}.bash", std::process::id()));
    std::fs::write(&script, weir(&["completions", "bash"]).stdout).unwrap();
    let o = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_file(script);
    // groff renders the page without a warning (where it is installed).
    let page = std::env::temp_dir().join(format!("weir-{}.1", std::process::id()));
    std::fs::write(&page, man.as_bytes()).unwrap();
    if let Ok(o) = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(&page)
        .output()
    {
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "groff: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let _ = std::fs::remove_file(page);
    assert!(
        !man.contains("true|false"),
        "flags without values show none"
    );
}

#[test]
fn the_readme_lists_every_doc() {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = text
        .find("## Documentation")
        .expect("a Documentation section");
    let readme = &text[start..];
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            let name = format!("docs/{}", p.file_name().unwrap().to_string_lossy());
            assert!(
                readme.contains(&format!("`{name}`")),
                "README.md's Documentation section does not list {name}"
            );
        }
    }
}

/// The `weir …` lines of docs/ci.md's pipelines (YAML `run:` and script
/// items) and its snapshot block, run as written on a `policies/`
/// directory holding one example.
#[test]
fn the_ci_pipelines_work_as_written() {
    let doc = std::fs::read_to_string(root().join("docs/ci.md")).unwrap();
    let mut pipeline = Vec::new();
    let mut snapshot = Vec::new();
    let mut fence = None;
    for line in doc.lines() {
        let t = line.trim();
        if let Some(lang) = t.strip_prefix("```") {
            fence = if fence.is_some() {
                None
            } else {
                Some(lang.to_string())
            };
            continue;
        }
        let cmd = t.trim_start_matches("- ").trim_start_matches("run: ");
        let cmd = cmd.split("  #").next().unwrap().trim();
        match fence.as_deref() {
            Some("yaml") if cmd.starts_with("weir ") => pipeline.push(cmd.to_string()),
            Some("sh") if cmd.starts_with("weir ") => snapshot.push(cmd.to_string()),
            _ => {}
        }
    }
    assert!(pipeline.len() >= 8, "{pipeline:#?}");
    assert!(
        doc.contains("--rev \"$WEIR_REV\"") && !doc.contains("--tag v"),
        "no nonexistent tag"
    );
    // The update first (a fresh repository has no snapshots), then the check.
    snapshot.sort_by_key(|c| !c.contains("--update"));
    let work = scratch_dir("ci");
    std::fs::create_dir_all(work.join("policies")).unwrap();
    std::fs::copy(
        root().join("examples/three-tier/three-tier.weir"),
        work.join("policies/main.weir"),
    )
    .unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_weir")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for cmd in pipeline.iter().chain(&snapshot) {
        let o = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&work)
            .env("PATH", &path)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{cmd}:\n{}", text(&o));
    }
    for f in [
        "weir.sarif",
        "weir-junit.xml",
        "capacity.json",
        "bundle/weir.o",
    ] {
        assert!(work.join(f).exists(), "{f} not written");
    }
}
