//! The test runner's promises (docs/language.md §3 "Tests"): `any` and
//! label maps stand for addresses no endpoint has; a packet to a service
//! is judged for every backend unless `via` names one, and fails when the
//! backends disagree; `port 0` is a packet like any other; `by KIND NAME`
//! tells a policy from a steer block or service of the same name.

use weir_compiler::check::{check_program, Checked};
use weir_compiler::interp::run_tests;
use weir_compiler::source::MemoryLoader;

fn check(src: &str) -> Checked {
    let loader = MemoryLoader::new().with("main.weir", src);
    check_program(&["main.weir".into()], &loader, None)
}

fn codes(c: &Checked) -> Vec<&str> {
    c.diagnostics.iter().map(|d| d.code.as_str()).collect()
}

/// (expect line number, failure) for every line.
fn run(src: &str) -> Vec<Option<String>> {
    let c = check(src);
    assert!(!c.has_errors(), "{:?}", codes(&c));
    run_tests(&c.model)
        .results
        .into_iter()
        .map(|r| r.failure)
        .collect()
}

const DB: &str = r#"
endpoint db { labels { app: "db" } addr 10.0.0.5 }
default deny ingress
"#;

#[test]
fn any_is_no_declared_endpoint() {
    let src = format!(
        r#"{DB}
endpoint squatter {{ labels {{ app: "friend" }} addr 198.51.100.1 }}
policy db-in {{
  applies to app == "db"
  ingress {{ allow tcp 5432 from app == "friend" }}
}}
test "strangers" {{
  expect deny tcp from any to db port 5432
  expect allow tcp from squatter to db port 5432
}}
"#
    );
    assert_eq!(run(&src), [None, None]);
}

#[test]
fn label_maps_are_no_declared_endpoint() {
    let src = format!(
        r#"{DB}
endpoint first {{ labels {{ app: "friend" }} addr 192.0.2.1 }}
endpoint second {{ labels {{ app: "friend" }} addr 192.0.2.3 }}
policy db-in {{
  applies to app == "db"
  ingress {{ allow tcp 5432 from app == "friend" }}
}}
test "maps" {{
  expect deny tcp from {{ app: "stranger" }} to db port 5432
  expect deny tcp from {{ app: "other" }} to db port 5432
  expect allow tcp from {{ app: "friend" }} to db port 5432
}}
"#
    );
    assert_eq!(run(&src), [None, None, None]);
}

const LB: &str = r#"
endpoint web-1 { labels { app: "web", open: "yes" } addr 10.1.0.5 }
endpoint web-2 { labels { app: "web" } addr 10.1.0.6 }
default deny ingress
service web {
  frontend 10.96.0.10:443/tcp
  backends select app == "web" port 8443
  balance random
}
policy open {
  applies to open == "yes"
  ingress { allow tcp 8443 from any }
}
"#;

#[test]
fn a_service_is_judged_for_every_backend() {
    let src = format!(
        r#"{LB}
test "lb" {{
  expect allow tcp from any to 10.96.0.10 port 443
  expect deny tcp from any to 10.96.0.10 port 443
  expect allow tcp from any to 10.96.0.10 port 443 via web-1 by policy open
  expect deny tcp from any to 10.96.0.10 port 443 via 10.1.0.6:8443 by default
  expect deny tcp from any to 10.96.0.10 port 443 via web-1
}}
"#
    );
    let r = run(&src);
    for i in [0, 1] {
        let f = r[i].as_deref().unwrap_or_else(|| panic!("line {i} passed"));
        assert!(
            f.contains("depends on the backend") && f.contains("web-1") && f.contains("web-2"),
            "{f}"
        );
    }
    assert_eq!(r[2], None);
    assert_eq!(r[3], None);
    assert!(
        r[4].as_deref().is_some_and(|f| f.starts_with("via web-1")),
        "{r:?}"
    );
}

#[test]
fn via_must_name_a_backend_of_the_service() {
    let src = format!(
        r#"{LB}
endpoint other {{ labels {{ app: "other" }} addr 10.1.0.9 }}
test "lb" {{
  expect allow tcp from any to 10.96.0.10 port 443 via other
  expect allow tcp from any to web-1 port 8443 via web-1
}}
"#
    );
    assert_eq!(codes(&check(&src)), ["E0238", "E0238"]);
}

#[test]
fn port_zero_is_a_packet() {
    let src = format!(
        r#"{DB}
policy db-in {{
  applies to app == "db"
  ingress {{ allow udp 53 from any }}
}}
test "zero" {{
  expect deny tcp from any to db port 0 by default
  expect deny udp from any to db port 0
}}
"#
    );
    assert_eq!(run(&src), [None, None]);
}

#[test]
fn by_names_a_kind_when_names_are_shared() {
    let src = format!(
        r#"{DB}
endpoint c {{ labels {{ app: "c" }} addr 10.0.0.9 }}
policy fast {{
  applies to app == "db"
  ingress {{ allow tcp 5432 from any }}
}}
steer fast {{
  bypass udp 9999 to 10.0.0.5
}}
test "kinds" {{
  expect allow tcp from c to db port 5432 by policy fast
  expect allow udp from c to db port 9999 by steer fast
  expect allow udp from c to db port 9999 by policy fast
}}
"#
    );
    let r = run(&src);
    assert_eq!(r[0], None);
    assert_eq!(r[1], None);
    assert!(r[2].is_some(), "a steer is not the policy");
    let ambiguous = src.replace(
        "by policy fast\n  expect allow udp",
        "by fast\n  expect allow udp",
    );
    assert_eq!(codes(&check(&ambiguous)), ["E0239"]);
    let wrong = src.replace("by steer fast", "by service fast");
    assert_eq!(codes(&check(&wrong)), ["E0253"]);
}

/// Steering and audit assertions fail with what was attached / would
/// decide instead.
#[test]
fn steering_and_audit_assertions_say_what_happened() {
    let src = r#"
endpoint web { labels { app: "web" } addr 10.0.0.1 }
endpoint db  { labels { app: "db" }  addr 10.0.0.2 }
policy db-in {
  applies to app == "db"
  ingress { allow tcp 5432 from any }
}
policy db-new priority 10 audit {
  applies to app == "db"
  ingress { deny tcp 5432 from any }
}
steer s { mark 0x10 tcp 5432 from any }
test "t" {
  expect allow tcp from web to db port 5432 mark 0x10 by db-in audit deny by db-new
  expect allow tcp from web to db port 5432 dscp 46
  expect allow tcp from web to db port 5432 audit allow
  expect allow tcp from web to db port 5432 audit deny by db-in
  expect deny tcp from web to db port 5433 mark 0x10
}
"#;
    let r = run(src);
    assert_eq!(r[0], None);
    assert_eq!(
        r[1].as_deref(),
        Some("expected steering `dscp 46`, got `mark 0x10`")
    );
    assert!(
        r[2].as_deref()
            .unwrap()
            .starts_with("expected audit allow, got audit deny"),
        "{:?}",
        r[2]
    );
    assert!(
        r[3].as_deref()
            .unwrap()
            .starts_with("expected the audit decision by db-in"),
        "{:?}",
        r[3]
    );
    assert_eq!(
        r[4].as_deref(),
        Some("expected steering `mark 0x10`, got no steering action")
    );
}
