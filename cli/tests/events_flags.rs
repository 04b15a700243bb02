//! `weir compile --events on|off --event-group N` (issue 20): the iptables
//! rules report verdict events through NFLOG by default, to the group the
//! flag names, recorded in the manifest; `--events off` compiles without
//! any event rule; naming a group with events off is a usage error.

#[path = "support/run.rs"]
mod run;

use run::{ok, s, show, weir};
use serde_json::Value;
use std::path::PathBuf;

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/three-tier/three-tier.weir")
}

fn emit(what: &str, extra: &[&str]) -> String {
    let file = example();
    let mut args = vec!["compile", s(&file), "--target", "iptables", "--emit", what];
    args.extend(extra);
    ok(weir(&args))
}

#[test]
fn events_are_on_by_default_and_follow_the_flags() {
    let rules = emit("iptables", &[]);
    // Prefix, then group: as `iptables-save` prints them.
    assert!(rules.contains("-j NFLOG --nflog-prefix \"weir:"), "{rules}");
    assert!(rules.contains("--nflog-group 100\n"), "{rules}");
    let m: Value = serde_json::from_str(&emit("manifest", &[])).unwrap();
    assert_eq!(
        m["backends"]["iptables"]["events"],
        serde_json::json!({"burst": 200, "group": 100, "rate": 100})
    );

    let rules = emit("iptables", &["--event-group", "7"]);
    assert!(rules.contains("--nflog-group 7\n"), "{rules}");
    assert!(!rules.contains("--nflog-group 100"), "{rules}");
    let m: Value = serde_json::from_str(&emit("manifest", &["--event-group", "7"])).unwrap();
    assert_eq!(m["backends"]["iptables"]["events"]["group"], 7);
    assert_eq!(
        m["backends"]["iptables"]["log"],
        serde_json::json!({"group": 7, "target": "NFLOG"})
    );

    let rules = emit("iptables", &["--events", "off"]);
    assert!(
        !rules.contains("NFLOG") && !rules.contains("weir:ev:"),
        "{rules}"
    );
    let m: Value = serde_json::from_str(&emit("manifest", &["--events", "off"])).unwrap();
    assert!(m["backends"]["iptables"].get("events").is_none());
    assert_eq!(
        m["backends"]["iptables"]["log"],
        serde_json::json!({"target": "LOG"})
    );
}

#[test]
fn a_group_with_events_off_is_a_usage_error() {
    let file = example();
    let o = weir(&[
        "compile",
        s(&file),
        "--target",
        "iptables",
        "--emit",
        "iptables",
        "--events",
        "off",
        "--event-group",
        "7",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--event-group"),
        "{}",
        show(&o)
    );
}
