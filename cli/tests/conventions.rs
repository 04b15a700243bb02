//! One CLI convention (issue 16, item 4), end to end through the binary:
//! every command that prints takes `--format`; a closed pipe ends a
//! command quietly (no panic, no backtrace); a flag that does not apply
//! is an error; `trace --packet` takes endpoint names.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs weir with its standard output a pipe whose reader is already
/// closed (`weir … | head -0`): the process must end by SIGPIPE or exit
/// cleanly, and print no panic.
fn into_closed_pipe(args: &[&str]) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .current_dir(root())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "weir {args:?} into a closed pipe:\n{err}"
    );
    assert!(
        status.signal() == Some(libc_sigpipe()) || status.code() == Some(0),
        "weir {args:?} into a closed pipe: {status:?}\n{err}"
    );
}

fn libc_sigpipe() -> i32 {
    13
}

#[test]
fn a_closed_pipe_ends_quietly() {
    // The runtime's report of nothing applied (a state directory with no
    // state): `println!` panicked here.
    let state = std::env::temp_dir().join(format!("weir-pipe-state-{}", std::process::id()));
    std::fs::create_dir_all(&state).unwrap();
    into_closed_pipe(&["status", "--state-dir", state.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(state);
    into_closed_pipe(&["check", "--format", "json", "examples"]);
    into_closed_pipe(&["check", "--format", "sarif", "examples"]);
    into_closed_pipe(&["test", "-v", "examples"]);
    into_closed_pipe(&["test", "--format", "junit", "examples"]);
    into_closed_pipe(&[
        "compile",
        "examples/three-tier/three-tier.weir",
        "--emit",
        "asm",
    ]);
    into_closed_pipe(&["compile", "examples/three-tier/three-tier.weir", "--report"]);
    into_closed_pipe(&[
        "trace",
        "examples/three-tier/three-tier.weir",
        "--packet",
        "tcp web-1 -> db-1:5432",
    ]);
    into_closed_pipe(&["explain", "E0501"]);
    into_closed_pipe(&["man"]);
    into_closed_pipe(&["completions", "bash"]);
}

#[test]
fn every_printing_command_takes_format() {
    for cmd in [
        "check",
        "compile",
        "trace",
        "diff",
        "test",
        "fmt",
        "apply",
        "detach",
        "status",
        "stats",
        "endpoints",
        "explain",
        "import k8s",
        "agent",
    ] {
        let out = weir(&cmd.split(' ').chain(["--help"]).collect::<Vec<_>>());
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("--format <FORMAT>"),
            "weir {cmd} has no --format:\n{help}"
        );
        assert!(
            help.contains("human") && help.contains("json"),
            "weir {cmd}: --format human|json:\n{help}"
        );
    }
    let help = String::from_utf8_lossy(&weir(&["test", "--help"]).stdout).into_owned();
    assert!(help.contains("junit"), "{help}");
    // stats: --json is a hidden alias of --format json, and not both.
    let help = String::from_utf8_lossy(&weir(&["stats", "--help"]).stdout).into_owned();
    assert!(!help.contains("--json"), "{help}");
    let o = weir(&["stats", "--json", "--format", "human", "--iface", "lo"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn flags_that_do_not_apply_are_errors() {
    let three = "examples/three-tier/three-tier.weir";
    for (args, says) in [
        (
            vec!["compile", three, "--emit", "iptables", "--target", "ebpf"],
            "--emit iptables is an artifact of the iptables back end",
        ),
        (
            vec!["compile", three, "--emit", "ipset", "--target", "ebpf"],
            "--emit ipset is an artifact of the iptables back end",
        ),
        (
            vec!["compile", three, "--emit", "asm", "--target", "iptables"],
            "--emit asm is an artifact of the ebpf back end",
        ),
        (
            vec!["compile", three, "--emit", "graph", "--format", "json"],
            "--format applies to --report",
        ),
        (
            vec!["compile", three, "--emit", "graph", "--report"],
            "--emit and --report",
        ),
        (
            vec!["check", three, "--docs-url", "https://example.org"],
            "--docs-url applies only to --format sarif",
        ),
        (
            vec!["test", "-v", "--format", "json", three],
            "--verbose applies to --format human",
        ),
        (
            vec![
                "trace",
                three,
                "--packet",
                "tcp web-1 -> db-1:5432",
                "--backend",
                "10.1.1.5:8080",
            ],
            "--backend 10.1.1.5:8080 applies to a packet sent to a service",
        ),
        (
            vec!["status", "--iface", "eth0"],
            "--iface applies to --backend ebpf",
        ),
        (
            vec!["apply", "bundle", "--cgroup", "/sys/fs/cgroup"],
            "--cgroup applies to --backend ebpf",
        ),
        (
            vec![
                "detach",
                "--backend",
                "ebpf",
                "--iface",
                "lo",
                "--state-dir",
                "/tmp",
            ],
            "--state-dir applies to --backend iptables",
        ),
        (
            vec![
                "status",
                "--backend",
                "ebpf",
                "--iface",
                "lo",
                "--iptables",
                "nft",
            ],
            "--iptables applies to --backend iptables",
        ),
    ] {
        let o = weir(&args);
        assert_eq!(o.status.code(), Some(2), "weir {args:?}:\n{}", text(&o));
        assert!(o.stdout.is_empty(), "weir {args:?}:\n{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "weir {args:?}:\n{err}");
    }
    let o = weir(&["test", "--target", "ebpf", "examples"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "--target needs --snapshot:\n{}",
        text(&o)
    );
}

#[test]
fn trace_packet_takes_endpoint_names() {
    let three = "examples/three-tier/three-tier.weir";
    let by_name = weir(&["trace", three, "--packet", "tcp web-1 -> db-1:5432"]);
    let by_addr = weir(&[
        "trace",
        three,
        "--packet",
        "tcp 10.1.0.5:40000 -> 10.1.2.7:5432",
    ]);
    assert_eq!(by_name.status.code(), Some(0), "{}", text(&by_name));
    assert_eq!(by_name.stdout, by_addr.stdout);
    let o = weir(&["trace", three, "--packet", "tcp web-11 -> db-1:5432"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("did you mean `web-1`"), "{err}");
    // IPv6: a name stands for the endpoint's address of the other side's
    // family.
    let host = "examples/host-firewall/host-firewall.weir";
    let o = weir(&["trace", host, "--packet", "tcp 2001:db8::1 -> node-1:22"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.code() == Some(0) && out.contains("tcp [2001:db8::"),
        "{}",
        text(&o)
    );
}
