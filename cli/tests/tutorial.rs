//! docs/tutorial.md, run as written: every command of its ```sh blocks,
//! in order, in an empty directory, with this build's `weir` first on
//! `PATH`. Each must exit 0 (the tutorial marks an expected failure with
//! `!`), so a command whose behaviour or output format drifts from the
//! page fails here and the page never goes stale. What the prose says an
//! output shows (the rule that decided, the counters, the endpoint that
//! changed) is checked in that command's output.
//!
//! The tutorial creates its own network namespaces (`ip netns add`, veth)
//! and removes them in its "Clean up" section. That section, preceded by
//! every `weir detach` command of the page, also runs before the
//! tutorial (left-overs of a killed run) and when a step fails or the
//! test panics, so a failure leaves nothing behind.
//!
//! Needs root, `ip`, `sysctl`, `curl`, `python3` and the iptables tools;
//! skipped without them unless `CI` is set (then it fails).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "support/markdown.rs"]
mod markdown;

use markdown::{sh_commands, ShellCommand};

const CLEANUP_SECTION: &str = "Clean up";

fn doc() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/tutorial.md");
    std::fs::read_to_string(path).unwrap()
}

/// `bash -c CMD` in `dir`, this build's `weir` first on `PATH`.
fn run(cmd: &str, dir: &Path) -> Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_weir")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("NO_COLOR")
        .output()
        .unwrap()
}

fn show(c: &ShellCommand, o: &Output) -> String {
    format!(
        "docs/tutorial.md:{}: `{}` exited {:?}\nstdout:\n{}\nstderr:\n{}",
        c.line,
        c.text,
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs the page's detach and clean-up commands (ignoring failures:
/// some of what they remove may not exist) when dropped, so a failing
/// step or a panic still removes the namespaces.
struct Cleanup<'a> {
    commands: Vec<&'a ShellCommand>,
    dir: PathBuf,
}

impl Cleanup<'_> {
    fn run(&self) {
        for c in &self.commands {
            if namespace_exists(&c.text) {
                let _ = run(&c.text, &self.dir);
            }
        }
    }
}

/// `false` for a command naming `--netns NS` when NS does not exist (a
/// `weir detach` there has nothing to remove, and would leave a lock
/// file behind).
fn namespace_exists(cmd: &str) -> bool {
    let mut words = cmd.split_whitespace();
    while let Some(w) = words.next() {
        if w == "--netns" {
            return words
                .next()
                .is_some_and(|ns| Path::new("/run/netns").join(ns).exists());
        }
    }
    true
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        self.run();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The tutorial walks the whole first hour the issue asked for.
fn assert_covers_the_first_hour(cmds: &[ShellCommand]) {
    for step in [
        "weir check ",
        "weir test ",
        "weir trace ",
        "weir compile ",
        "--target iptables",
        "ip netns add ",
        "weir apply bundle --backend ebpf",
        "weir apply bundle --backend iptables",
        "curl ",
        "weir stats ",
        "weir endpoints ",
        "weir detach ",
        "ip netns del ",
    ] {
        assert!(
            cmds.iter().any(|c| c.text.contains(step)),
            "docs/tutorial.md has no `{step}` command"
        );
    }
}

/// What the prose around a command says its output shows (the rule
/// that decided, the counters, the changed endpoint), so the explanation
/// cannot drift from the output either.
fn assert_what_the_page_says(c: &ShellCommand, o: &Output) {
    let out = String::from_utf8_lossy(&o.stdout);
    let says: &[(&str, &[&str])] = &[
        ("weir test ", &["3 passed, 0 failed"]),
        (
            "--packet \"tcp web-1 ",
            &["ALLOW — db-ingress ingress rule #1"],
        ),
        (
            "--packet \"tcp 10.77.1.11",
            &["DENY — db-ingress ingress rule #2"],
        ),
        ("--emit iptables", &["-j WEIR-", "--match-set weir-"]),
        (
            "weir apply bundle --backend ebpf",
            &["applied generation 1 on to-web"],
        ),
        (
            "weir apply bundle --backend iptables",
            &["applied generation 1"],
        ),
        (
            "weir stats ",
            &["db-ingress ingress rule #1", "db-ingress ingress rule #2"],
        ),
        (
            "weir endpoints ",
            &["1 address(es) changed", "10.77.1.11 (web-2)"],
        ),
        ("%{http_code}", &["200"]),
        ("weir detach --backend ebpf", &["detached"]),
    ];
    for (command, shows) in says {
        if c.text.contains(command) {
            for s in *shows {
                assert!(out.contains(s), "{}\nexpected `{s}`", show(c, o));
            }
        }
    }
}

/// The ```text block that follows a command's ```sh block (separated
/// by blank lines only), if the page shows one: the output the command
/// prints, verbatim.
fn shown_output(doc: &str, c: &ShellCommand) -> Option<String> {
    let mut lines = doc.lines().skip(c.line);
    lines.by_ref().find(|l| l.trim() == "```")?;
    let mut rest = lines.skip_while(|l| l.trim().is_empty());
    if rest.next()?.trim() != "```text" {
        return None;
    }
    let shown: Vec<&str> = rest.take_while(|l| l.trim() != "```").collect();
    Some(shown.join("\n") + "\n")
}

#[test]
fn the_tutorial_runs_as_written() {
    if !weir_runtime::kernel_test::may_run(
        "the_tutorial_runs_as_written",
        &[
            "ip",
            "curl",
            "python3",
            "sysctl",
            "iptables-restore",
            "ip6tables-restore",
            "ipset",
        ],
    ) {
        return;
    }
    let text = doc();
    let cmds = sh_commands(&text);
    assert_covers_the_first_hour(&cmds);
    let (cleanup, steps): (Vec<&ShellCommand>, Vec<&ShellCommand>) =
        cmds.iter().partition(|c| c.section == CLEANUP_SECTION);
    assert!(
        cleanup.iter().any(|c| c.text.starts_with("ip netns del ")),
        "the \"{CLEANUP_SECTION}\" section deletes the namespaces"
    );
    let dir = weir_runtime::kernel_test::state_dir("tutorial").unwrap();
    let guard = Cleanup {
        commands: steps
            .iter()
            .filter(|c| c.text.starts_with("weir detach "))
            .chain(&cleanup)
            .copied()
            .collect(),
        dir: dir.clone(),
    };
    guard.run();
    for c in steps.iter().chain(&cleanup) {
        let o = run(&c.text, &dir);
        assert_eq!(o.status.code(), Some(0), "{}", show(c, &o));
        assert_what_the_page_says(c, &o);
        if let Some(shown) = shown_output(&text, c) {
            assert_eq!(String::from_utf8_lossy(&o.stdout), shown, "{}", show(c, &o));
        }
    }
    // The clean-up removed what the tutorial created.
    let o = run("ip netns list", &dir);
    let left = String::from_utf8_lossy(&o.stdout);
    for c in &cmds {
        let Some(ns) = c.text.strip_prefix("ip netns add ") else {
            continue;
        };
        assert!(
            !left
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "{ns} left behind:\n{left}"
        );
    }
    drop(guard);
}
