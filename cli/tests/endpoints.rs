//! `weir endpoints` end to end, as a user runs it: `weir compile`,
//! `weir apply`, then `weir endpoints DIR INVENTORY.json` adding and
//! removing an endpoint (exit 0, the change reported), an inventory with
//! errors (exit 1, the problem located by line), a bundle changed in
//! place after the apply and a bundle that was never applied (refused,
//! nothing changed), and the bundle restored (accepted again). iptables
//! and eBPF, in the node namespace of a client — node — server topology.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

#[path = "support/run.rs"]
mod run;
use run::{ok, s, show, weir};

use std::path::{Path, PathBuf};

use weir_compiler::churn::{inventory_text, EndpointRec};
use weir_runtime::netns::{Topology, NODE_CLIENT_IF};

const SRC: &str = r#"
endpoint web   { labels { app: "web" }   addr 10.1.0.10 }
endpoint db    { labels { app: "db" }    addr 10.2.0.20 }
endpoint api-1 { labels { app: "api" }   addr 10.3.0.1 }

policy db-in {
  applies to app == "db"
  ingress {
    allow tcp 5432 from app == "web"
    deny from any
  }
}

service api {
  frontend 10.96.0.1:80/tcp
  backends select app == "api" port 8080
}
"#;

fn ep(name: &str, app: &str, addr: &str) -> EndpointRec {
    EndpointRec {
        name: name.into(),
        labels: [("app".to_string(), app.to_string())].into(),
        ready: true,
        addrs: vec![addr.parse().unwrap()],
    }
}

fn base() -> Vec<EndpointRec> {
    vec![
        ep("web", "web", "10.1.0.10"),
        ep("db", "db", "10.2.0.20"),
        ep("api-1", "api", "10.3.0.1"),
    ]
}

fn scratch(name: &str) -> PathBuf {
    weir_runtime::kernel_test::state_dir(&format!("cli-endpoints-{name}")).unwrap()
}

/// Compiles [`SRC`] for `target` into `dir`, and lets the files age past
/// the time resolution `weir endpoints` needs to recognise them by
/// identity (so the fast path is the one exercised).
fn compile(work: &Path, dir: &Path, target: &str, src: &str) {
    let file = work.join("policy.weir");
    std::fs::write(&file, src).unwrap();
    ok(weir(&[
        "compile",
        s(&file),
        "--target",
        target,
        "-o",
        s(dir),
    ]));
    std::thread::sleep(std::time::Duration::from_millis(300));
}

/// The add / remove / refuse sequence against `backend` (`args`: the
/// target options).
fn churn(work: &Path, bundle: &Path, args: &[&str]) {
    let inv = work.join("inventory.json");
    let run = |dir: &Path, inventory: &str| {
        std::fs::write(&inv, inventory).unwrap();
        let mut a = vec!["endpoints", s(dir), s(&inv)];
        a.extend_from_slice(args);
        weir(&a)
    };
    let mut with = base();
    with.push(ep("web-2", "web", "10.1.0.12"));
    let with = inventory_text(&with);
    let base = inventory_text(&base());

    // Unchanged, added, removed.
    let out = ok(run(bundle, &base));
    assert!(out.contains("0 address(es) changed"), "{out}");
    let out = ok(run(bundle, &with));
    assert!(out.contains("1 address(es) changed"), "{out}");
    assert!(out.contains("10.1.0.12 (web-2): - -> class"), "{out}");
    let out = ok(run(bundle, &base));
    assert!(out.contains("10.1.0.12 (web-2): class"), "{out}");

    // --dry-run: the plan in endpoint names, nothing written. Every
    // endpoint of SRC is declared in the source, so an inventory of only
    // web-2 removes nothing.
    let only = inventory_text(&[ep("web-2", "web", "10.1.0.12")]);
    let mut a = vec!["endpoints", s(bundle), s(&inv), "--dry-run"];
    a.extend_from_slice(args);
    std::fs::write(&inv, &only).unwrap();
    let out = ok(weir(&a));
    assert!(out.contains("dry run (nothing written)"), "{out}");
    assert!(out.contains("1 endpoint(s) added, 0 removed"), "{out}");
    assert!(out.contains("add web-2 (10.1.0.12)"), "{out}");
    assert!(!out.contains("class"), "{out}");
    let out = ok(run(bundle, &base));
    assert!(out.contains("0 address(es) changed"), "{out}");

    // Changing a declared endpoint: refused (1), nothing changed.
    let moved = inventory_text(&[ep("db", "db", "10.2.0.21")]);
    let o = run(bundle, &moved);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("declared in the source"));

    // A new service backend: both back ends update the service in place
    // (iptables: its frontend's nat chain, rewritten and read back).
    let api2 = inventory_text(&[ep("api-2", "api", "10.3.0.2")]);
    let o = run(bundle, &api2);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("service api (IPv4): backends 10.3.0.1:8080, 10.3.0.2:8080"),
        "{out}"
    );
    let out = ok(run(bundle, &base));
    assert!(out.contains("1 address(es) changed"), "{out}");

    // An inventory with errors: exit 1, located, nothing changed.
    let bad = base.replacen("10.2.0.20", "10.2.0.300", 1);
    let o = run(bundle, &bad);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("{}:1:", inv.display())), "{err}");

    // A bundle that was never applied.
    let other = work.join("other");
    compile(work, &other, args[1], &SRC.replace("tcp 5432", "tcp 5433"));
    let o = run(&other, &with);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not the bundle in force"),
        "{}",
        show(&o)
    );

    // The applied bundle changed in place: refused; restored: accepted.
    let manifest = bundle.join("manifest.json");
    let original = std::fs::read(&manifest).unwrap();
    // Same size, one digit of the source hash different: only the
    // file's times and the content tell.
    let mut edited = original.clone();
    let key = b"source_hash";
    let at = edited.windows(key.len()).position(|w| w == key).unwrap();
    let digit = at
        + key.len()
        + edited[at + key.len()..]
            .iter()
            .position(u8::is_ascii_hexdigit)
            .unwrap();
    edited[digit] = if edited[digit] == b'0' { b'1' } else { b'0' };
    std::fs::write(&manifest, &edited).unwrap();
    let o = run(bundle, &with);
    assert_ne!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not the bundle in force"),
        "{}",
        show(&o)
    );
    std::fs::write(&manifest, &original).unwrap();
    let out = ok(run(bundle, &with));
    assert!(out.contains("1 address(es) changed"), "{out}");
    let out = ok(run(bundle, &base));
    assert!(out.contains("1 address(es) changed"), "{out}");
}

#[test]
fn weir_endpoints_iptables() {
    if !weir_runtime::kernel_test::may_run(
        "weir_endpoints_iptables",
        &["ip", "iptables-restore", "ip6tables-restore", "ipset"],
    ) {
        return;
    }
    let work = scratch("ipt");
    let bundle = work.join("bundle");
    compile(&work, &bundle, "iptables", SRC);
    let topo = Topology::new().expect("netns topology");
    let state = work.join("state");
    let args = [
        "--backend",
        "iptables",
        "--netns",
        topo.node.name(),
        "--state-dir",
        s(&state),
    ];
    let mut a = vec!["apply", s(&bundle)];
    a.extend_from_slice(&args);
    ok(weir(&a));
    // The apply recorded the endpoints in force and the bundle's files.
    let rec = std::fs::read(state.join("endpoints.state")).unwrap();
    let rec = String::from_utf8_lossy(&rec);
    assert!(rec.contains("\"files\":[[\"manifest.json\""), "{rec:.400}");
    churn(&work, &bundle, &args);
    let mut a = vec!["detach"];
    a.extend_from_slice(&args);
    ok(weir(&a));
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn weir_endpoints_ebpf() {
    if !weir_runtime::kernel_test::may_run("weir_endpoints_ebpf", &["ip"]) {
        return;
    }
    let work = scratch("ebpf");
    let bundle = work.join("bundle");
    compile(&work, &bundle, "ebpf", SRC);
    let topo = Topology::new().expect("netns topology");
    let args = [
        "--backend",
        "ebpf",
        "--netns",
        topo.node.name(),
        "--iface",
        NODE_CLIENT_IF,
    ];
    let mut a = vec!["apply", s(&bundle)];
    a.extend_from_slice(&args);
    ok(weir(&a));
    churn(&work, &bundle, &args);
    let mut a = vec!["detach"];
    a.extend_from_slice(&args);
    ok(weir(&a));
    let _ = std::fs::remove_dir_all(&work);
}
