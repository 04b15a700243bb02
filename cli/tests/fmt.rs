//! `weir fmt`: rewriting, `--check`, syntax errors, exit codes.

use std::process::Command;

fn weir(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_rewrite_and_errors() {
    let dir = std::env::temp_dir().join(format!("weir-fmt-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let ugly = dir.join("sub/ugly.weir");
    let good = dir.join("good.weir");
    std::fs::write(&ugly, "selector  a=app==\"x\"   # note\n").unwrap();
    std::fs::write(&good, "selector a = app == \"x\"\n").unwrap();
    let d = dir.to_str().unwrap();

    let (code, out, _) = weir(&["fmt", "--check", d]);
    assert_eq!(code, 1);
    assert_eq!(out.trim(), ugly.display().to_string());
    assert_eq!(
        std::fs::read_to_string(&ugly).unwrap(),
        "selector  a=app==\"x\"   # note\n"
    );

    assert_eq!(weir(&["fmt", d]).0, 0);
    assert_eq!(
        std::fs::read_to_string(&ugly).unwrap(),
        "selector a = app == \"x\"  # note\n"
    );
    assert_eq!(weir(&["fmt", "--check", d]).0, 0);

    let bad = dir.join("bad.weir");
    std::fs::write(&bad, "selector = \n").unwrap();
    let (code, _, err) = weir(&["fmt", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("E0010"), "{err}");
    assert_eq!(std::fs::read_to_string(&bad).unwrap(), "selector = \n");

    assert_eq!(weir(&["fmt", dir.join("missing").to_str().unwrap()]).0, 2);
    let _ = std::fs::remove_dir_all(&dir);
}
