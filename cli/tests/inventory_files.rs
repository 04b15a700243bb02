//! Which files `weir check` reads as endpoint inventories: an `inventory`
//! item names a regular file below the project (the directories of the
//! files on the command line), of at most 256 MiB; `--endpoints` names any
//! regular file. A file that is not an inventory is quoted by its first
//! characters only — never the environment, never an endless device.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn project(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-cli-inv-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("proj")).unwrap();
    dir
}

/// `weir check main.weir` in `dir/proj` with a canary in the environment.
fn check(dir: &Path, main: &str, extra: &[&str]) -> (Output, String) {
    std::fs::write(dir.join("proj/main.weir"), main).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .current_dir(dir.join("proj"))
        .env("WEIR_TEST_CANARY", "canary-0a1b2c3d4e5f")
        .arg("check")
        .arg("main.weir")
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !err.contains("0a1b2c3d4e5f"),
        "the environment was printed:\n{err}"
    );
    (out, err)
}

const EP: &str = "endpoint a { labels { app: \"a\" } addr 10.0.0.1 }\n";

#[test]
fn inventory_items_outside_the_project_are_refused() {
    let dir = project("outside");
    std::fs::write(dir.join("outside.json"), r#"{"endpoints": []}"#).unwrap();
    std::fs::write(dir.join("other.json"), r#"{"endpoints": []}"#).unwrap();
    std::os::unix::fs::symlink("../other.json", dir.join("proj/link.json")).unwrap();
    let main = format!(
        "inventory \"/proc/self/environ\"\ninventory \"/dev/zero\"\ninventory \"../outside.json\"\ninventory \"link.json\"\n{EP}"
    );
    let (out, err) = check(&dir, &main, &[]);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("error[E0016]").count(), 4, "{err}");
}

#[test]
fn devices_fifos_and_huge_files_are_not_read() {
    let dir = project("kinds");
    let fifo = dir.join("proj/fifo.json");
    let ok = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(ok.success());
    // Sparse: no disk space used.
    let big = std::fs::File::create(dir.join("proj/big.json")).unwrap();
    big.set_len(300 << 20).unwrap();
    std::fs::create_dir(dir.join("proj/dir.json")).unwrap();
    let main =
        format!("inventory \"fifo.json\"\ninventory \"big.json\"\ninventory \"dir.json\"\n{EP}");
    let (out, err) = check(&dir, &main, &["--endpoints", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("error[E0014]").count(), 3, "{err}");
    assert!(
        err.contains("this is a FIFO") && err.contains("character device"),
        "{err}"
    );
    assert_eq!(err.matches("error[E0015]").count(), 1, "{err}");
}

#[test]
fn a_file_that_is_not_an_inventory_is_quoted_briefly() {
    let dir = project("quote");
    std::fs::write(
        dir.join("proj/env.txt"),
        "API_TOKEN=s3cr3t-s3cr3t-s3cr3t\0HOME=/root\0",
    )
    .unwrap();
    let (out, err) = check(&dir, &format!("inventory \"env.txt\"\n{EP}"), &[]);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("error[E0017]"), "{err}");
    assert!(
        !err.contains("s3cr3t-s3cr3t") && !err.contains("HOME"),
        "{err}"
    );
    // `--endpoints` may name any regular file; /proc/self/environ is one.
    let (out, err) = check(&dir, EP, &["--endpoints", "/proc/self/environ"]);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("error[E0017]"), "{err}");
}

#[test]
fn an_inventory_below_the_project_is_read() {
    let dir = project("good");
    std::fs::create_dir(dir.join("proj/inv")).unwrap();
    std::fs::write(
        dir.join("proj/inv/nodes.json"),
        r#"{"endpoints": [{"name": "b", "labels": {"app": "b"}, "addrs": ["10.0.0.2"]}]}"#,
    )
    .unwrap();
    let (out, err) = check(&dir, &format!("inventory \"inv/nodes.json\"\n{EP}"), &[]);
    assert_eq!(out.status.code(), Some(0), "{err}");
}
