//! `weir compile --iptables-self-mark MASK`: the packet-mark bits of
//! `self` in the iptables rules and the manifest's `self_mark`; a mask
//! that is not one contiguous run of at least 2 bits, or the flag with
//! `--target ebpf`, is a usage error (exit 2), never a panic.

#[path = "support/run.rs"]
mod run;

use run::{ok, s, show, weir};
use serde_json::Value;
use std::path::PathBuf;

const SRC: &str = r#"
endpoint a { labels { app: "a" } addr 10.0.0.1 }
endpoint b { labels { app: "b" } addr 10.0.0.2 }
policy itself {
  applies to all
  ingress {
    allow from self
  }
}
"#;

fn program() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-self-mark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("self.weir");
    std::fs::write(&p, SRC).unwrap();
    p
}

fn emit(what: &str, extra: &[&str]) -> String {
    let file = program();
    let mut args = vec!["compile", s(&file), "--target", "iptables", "--emit", what];
    args.extend(extra);
    ok(weir(&args))
}

#[test]
fn the_mask_reaches_the_rules_and_the_manifest() {
    let rules = emit("iptables", &["--iptables-self-mark", "0x0fff0000"]);
    assert!(
        rules.contains("-j MARK --set-xmark 0x0/0xfff0000"),
        "{rules}"
    );
    assert!(rules.contains("-m mark --mark 0x10000/0x10000"), "{rules}");
    let m: Value =
        serde_json::from_str(&emit("manifest", &["--iptables-self-mark", "0x0fff0000"])).unwrap();
    assert_eq!(m["backends"]["iptables"]["self_mark"], 0x0fff_0000);
    // Without the flag: the default, kube-proxy's 0xc000 left alone, and
    // written (a manifest without it means the earlier default).
    let m: Value = serde_json::from_str(&emit("manifest", &[])).unwrap();
    assert_eq!(m["backends"]["iptables"]["self_mark"], 0xffff_0000u32);
    let rules = emit("iptables", &[]);
    assert!(
        rules.contains("-j MARK --set-xmark 0x0/0xffff0000"),
        "{rules}"
    );
    assert!(!rules.contains("0xfffff800"), "{rules}");
}

#[test]
fn bad_masks_are_usage_errors() {
    let file = program();
    for bad in ["0x5", "0x1000", "0xff00ff00", "0", "banana"] {
        let o = weir(&[
            "compile",
            s(&file),
            "--target",
            "iptables",
            "--emit",
            "iptables",
            "--iptables-self-mark",
            bad,
        ]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--iptables-self-mark"), "{bad}: {err}");
        assert!(
            err.contains("contiguous run of at least 2 bits") || err.contains("not a 32-bit mask"),
            "{bad}: {err}"
        );
    }
    let o = weir(&[
        "compile",
        s(&file),
        "--target",
        "ebpf",
        "--emit",
        "manifest",
        "--iptables-self-mark",
        "0x0fff0000",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
}
