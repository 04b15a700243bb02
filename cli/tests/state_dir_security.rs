//! The runtime's state directory against a hostile local user (issue 15,
//! items 19 and 20), as a user runs weir: a `--state-dir` owned by another
//! user, holding a symlink where weir writes its state, is refused before
//! anything is applied and the link's target is untouched; a proper state
//! directory gets `0700` and `0600` files; `detach` leaves nothing of
//! weir's in it (state, endpoint record, lock).
//!
//! Needs root, `ip` and `iptables`; skipped without them unless `CI` is
//! set (then it fails).

#[path = "support/run.rs"]
mod run;
use run::{s, show, weir};

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use weir_runtime::netns::Topology;

const SRC: &str = r#"
endpoint web { labels { app: "web" } addr 10.1.0.10 }
endpoint db  { labels { app: "db" }  addr 10.2.0.20 }
policy db-in {
  applies to app == "db"
  ingress {
    allow tcp 5432 from app == "web"
    deny from any
  }
}
"#;

/// Our chains in the namespace, from iptables-save.
fn weir_chains(ns: &str) -> usize {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "iptables-save"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with(":WEIR"))
        .count()
}

#[test]
fn a_hostile_state_dir_is_refused_and_detach_leaves_nothing() {
    if !weir_runtime::kernel_test::may_run(
        "a_hostile_state_dir_is_refused_and_detach_leaves_nothing",
        &["ip", "iptables", "ipset"],
    ) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir("cli-state-dir").unwrap();
    let file = work.join("policy.weir");
    std::fs::write(&file, SRC).unwrap();
    let bundle = work.join("bundle");
    let o = weir(&[
        "compile",
        s(&file),
        "--target",
        "iptables",
        "-o",
        s(&bundle),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let topo = Topology::new().expect("netns topology");
    let ns = topo.node.name();

    // Another user's directory with a link where weir writes its state.
    let theirs = work.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    let victim = work.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    // (Where weir writes, and wrote its temporary files before.)
    for name in ["state.json.tmp", "endpoints.state.tmp"] {
        std::os::unix::fs::symlink(&victim, theirs.join(name)).unwrap();
    }
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let o = weir(&[
        "apply",
        s(&bundle),
        "--netns",
        ns,
        "--state-dir",
        s(&theirs),
    ]);
    assert_ne!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("refusing"),
        "{}",
        show(&o)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(weir_chains(ns), 0, "nothing applied");

    // A proper one: private, and empty again after detach.
    let ours = work.join("ours");
    let o = weir(&["apply", s(&bundle), "--netns", ns, "--state-dir", s(&ours)]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(weir_chains(ns) > 0);
    assert_eq!(std::fs::metadata(&ours).unwrap().mode() & 0o777, 0o700);
    for e in std::fs::read_dir(&ours).unwrap().flatten() {
        let m = e.metadata().unwrap();
        assert_eq!(
            m.mode() & 0o077,
            0,
            "{} is readable by others",
            e.path().display()
        );
    }
    let o = weir(&["detach", "--netns", ns, "--state-dir", s(&ours)]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(weir_chains(ns), 0);
    assert!(
        !ours.exists(),
        "detach leaves {:?}",
        std::fs::read_dir(&ours).map(|d| d.count())
    );
    let _ = std::fs::remove_dir_all(&work);
}
