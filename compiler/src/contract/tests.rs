//! The writer's form and the reader's form are one format: everything
//! `weir compile` writes parses into [`Manifest`] and says the same, and
//! every manifest that is not exactly this format — another version, an
//! unknown key, a value out of range — is refused.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::*;
use crate::backends;
use crate::bundle::{bundle, BundleInput};
use crate::check::model_of;
use crate::model::Model;

/// Every file of the bundle of `model`, compiled for every back end
/// that accepts it.
fn files_of(model: &Model) -> BTreeMap<String, Vec<u8>> {
    let g = crate::graph::build(model);
    let mut targets = Vec::new();
    let mut arts = BTreeMap::new();
    for (t, r) in backends::generate_all(&backends::ALL, model, &g) {
        if let Ok(a) = r {
            targets.push(t);
            arts.insert(t, a);
        }
    }
    let sources = vec![("p.weir".to_string(), "x".to_string())];
    bundle(&BundleInput {
        model,
        graph: &g,
        sources: &sources,
        targets: &targets,
        locate: &|s| {
            Some(Location {
                at: format!("p.weir:{}", s.start),
            })
        },
        backends: arts,
    })
}

const SRC: &str = r#"
endpoint web   { labels { app: "web" }   addr 10.1.0.10 }
endpoint db    { labels { app: "db" }    addr 10.2.0.20 }
endpoint db6   { labels { app: "db" }    addr fd00::20 }
policy db-in {
  applies to app == "db"
  ingress { allow tcp 5432 from app == "web" }
}
policy outside {
  applies to app == "web"
  egress { allow to { 192.168.0.0/16 } except { 192.168.7.7/32 } }
}
service api {
  frontend 10.96.0.1:80/tcp
  backends select app == "web" port 8080
}
"#;

#[test]
fn what_the_writer_writes_the_reader_reads() {
    let models = (0..30).map(crate::gen::model).chain([model_of(SRC)]);
    for (i, model) in models.enumerate() {
        let files = files_of(&model);
        let text = &files[MANIFEST];
        let m = parse(text).unwrap_or_else(|e| panic!("model {i}: {e}"));
        // The reader holds every key and value the writer wrote.
        let written: Value = serde_json::from_slice(text).unwrap();
        assert_eq!(serde_json::to_value(&m).unwrap(), written, "model {i}");
        // Every other file is bound by its hash.
        let others: Vec<&String> = files.keys().filter(|n| *n != MANIFEST).collect();
        assert_eq!(m.artifacts.keys().collect::<Vec<_>>(), others, "model {i}");
        for (name, hash) in &m.artifacts {
            assert_eq!(hash, &sha256_hex(&files[name]), "model {i} {name}");
        }
    }
}

#[test]
fn refuses_another_version_or_none() {
    assert_eq!(parse(b"{}"), Err(ContractError::Version(None)));
    let mut v: Value = serde_json::from_slice(&files_of(&model_of(SRC))[MANIFEST]).unwrap();
    v["format_version"] = json!(1);
    let e = parse(v.to_string().as_bytes()).unwrap_err();
    assert_eq!(e, ContractError::Version(Some(1)));
    assert!(e.to_string().contains("recompile"), "{e}");
    v["format_version"] = json!(FORMAT_VERSION + 1);
    assert!(matches!(
        parse(v.to_string().as_bytes()),
        Err(ContractError::Version(Some(_)))
    ));
    assert!(matches!(parse(b"manifest"), Err(ContractError::NotJson(_))));
}

/// A valid manifest with both back ends, as a value to tamper with.
fn valid() -> Value {
    let v: Value = serde_json::from_slice(&files_of(&model_of(SRC))[MANIFEST]).unwrap();
    assert!(parse(v.to_string().as_bytes()).is_ok());
    assert!(v["backends"]["iptables"].is_object() && v["backends"]["ebpf"].is_object());
    v
}

/// `edit` applied to a valid manifest makes [`parse`] refuse it with an
/// error whose text contains `says`.
fn refused(edit: impl FnOnce(&mut Value), says: &str) {
    let mut v = valid();
    edit(&mut v);
    match parse(v.to_string().as_bytes()) {
        Ok(_) => panic!("accepted a manifest that should say {says:?}"),
        Err(e) => assert!(e.to_string().contains(says), "{e}"),
    }
}

#[test]
fn refuses_values_out_of_range() {
    refused(
        |v| v["backends"]["ebpf"]["fill"]["cls4"][0]["class"] = json!(99_999),
        "class 99999",
    );
    refused(
        |v| v["backends"]["ebpf"]["fill"]["cls4"][0]["addr"] = json!([10, 1, 0, 10, 1]),
        "5-byte address",
    );
    refused(
        |v| v["backends"]["ebpf"]["fill"]["cls6"][0]["addr"] = json!([10, 1, 0, 10]),
        "4-byte address",
    );
    refused(
        |v| v["endpoints"][0]["addrs"][0]["class"] = json!(7),
        "class 7",
    );
    refused(|v| v["classes"]["map"][0][1] = json!(70_000), "class 70000");
    refused(
        |v| v["backends"]["iptables"]["sets"][0]["classes"] = json!([0, 99_999]),
        "class 99999",
    );
    refused(
        |v| v["classes"]["map"][0][0] = json!("10.0.0.0/33"),
        "prefix length 33",
    );
    refused(
        |v| v["backends"]["ebpf"]["lb"]["services"][0]["sets"]["4"]["slots"][0] = json!(999),
        "slot 999 is beyond",
    );
}

#[test]
fn refuses_hooks_weir_does_not_write() {
    let moved = |v: &mut Value| {
        let hooks = v["backends"]["iptables"]["hooks"].as_array_mut().unwrap();
        let fwd = hooks.iter_mut().find(|h| h["chain"] == "FORWARD").unwrap();
        fwd["chain"] = json!("INPUT");
    };
    refused(moved, "filter INPUT → WEIR-FWD is not a hook weir writes");
    refused(
        |v| v["backends"]["iptables"]["hooks"][0]["family"] = json!("inet4"),
        "unknown variant `inet4`",
    );
}

#[test]
fn refuses_paths_out_of_the_bundle() {
    refused(
        |v| v["backends"]["ebpf"]["object"] = json!("../../../../../etc/hostname"),
        "is not a file the manifest lists",
    );
    refused(
        |v| {
            let a = v["artifacts"].as_object_mut().unwrap();
            let h = a["weir.o"].clone();
            a.insert("../weir.o".into(), h);
        },
        "not a plain file name",
    );
    for bad in ["/etc/hostname", "..", ".", "", "a/b", "a\0b"] {
        assert!(!plain_name(bad), "{bad:?}");
    }
    assert!(plain_name("weir.o"));
}

#[test]
fn refuses_unknown_keys_and_guessed_names() {
    refused(
        |v| v["sourceHash"] = json!("x"),
        "unknown field `sourceHash`",
    );
    refused(
        |v| {
            let h = v["source_hash"].take();
            v.as_object_mut().unwrap().remove("source_hash");
            v["hash"] = h;
        },
        "unknown field `hash`",
    );
    refused(|v| v["backends"]["nft"] = json!({}), "unknown field `nft`");
    refused(|v| v["targets"] = json!(["ebpf"]), "do not match");
}

/// The manifest writes a service's backend selector with its own serde
/// form instead of through a `Value` (whose objects sort their keys): the
/// two texts are the same for every shape of selector.
#[test]
fn selector_serializes_as_its_value() {
    use crate::model::Sel;
    let s = |x: &str| x.to_string();
    let eq = Sel::Eq(s("app"), s("a\"b"));
    let sels = [
        Sel::All,
        eq.clone(),
        Sel::Ne(s("k"), s("v")),
        Sel::In(s("k"), [s("x"), s("a")].into()),
        Sel::NotIn(s("k"), [s("b")].into()),
        Sel::Has(s("tier")),
        Sel::Not(Box::new(eq.clone())),
        Sel::And(
            Box::new(eq.clone()),
            Box::new(Sel::Or(Box::new(Sel::Has(s("z"))), Box::new(Sel::All))),
        ),
    ];
    for sel in &sels {
        let direct = serde_json::to_string(sel).unwrap();
        let via_value = serde_json::to_value(sel).unwrap().to_string();
        assert_eq!(direct, via_value, "{sel:?}");
    }
}

/// Bundle format 4's sparse class rows (issue 21): 1,000 one-peer-per-pod
/// rules give rows of 33 words of which a class sets two or three; the
/// manifest carries only those, reads back into the same full rows the
/// code generator computed, and the whole bundle is byte-identical when
/// compiled again from scratch (model, graph and all).
#[test]
fn class_rows_are_sparse_and_the_bundle_is_byte_identical_again() {
    let pods = 1_000;
    let model = crate::synth::per_pod::model(pods);
    let files = files_of(&model);
    let again = files_of(&crate::synth::per_pod::model(pods));
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        again.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &files {
        assert!(bytes == &again[name], "{name} differs between two compiles");
    }
    let m = parse(&files[MANIFEST]).unwrap();
    let ebpf = m.backends.ebpf.as_ref().expect("an eBPF section");
    let rows = &ebpf.program.fill.atom_rows;
    let width = rows.width() as usize;
    assert!(width > 30, "{width} words");
    assert_eq!(rows.len(), m.classes.rows.len());
    // At most a few words a row, where dense rows held `width`.
    assert!(
        rows.nonzero_words() <= 4 * rows.len(),
        "{}",
        rows.nonzero_words()
    );
    // The rows read back are what the generator computed: each atom of
    // the class (`classes.rows`) is its bit, no other atom bit is set.
    for (row, atoms) in rows.iter().zip(&m.classes.rows) {
        assert_eq!(row.len(), width);
        let atom_bits: Vec<u32> = (0..m.classes.atoms.len() as u32)
            .filter(|&a| row[a as usize / 32] & (1 << (a % 32)) != 0)
            .collect();
        assert_eq!(&atom_bits, atoms);
    }
}

/// A redirect to the node's own address is listed in `local_proxies`
/// (with its rule and location), loopback and unspecified ones are not;
/// the reader holds what the writer wrote and refuses a host-local one.
#[test]
fn node_address_proxies_are_listed_for_the_runtime() {
    let src = r#"
node n1 { addr 10.99.0.1 addr fd99::1 }
endpoint web { labels { app: "web" } addr 10.1.0.10 }
steer mesh {
  redirect tcp 80 from app == "web" to proxy 127.0.0.1:15001
  redirect tcp 81 from app == "web" to proxy 10.99.0.1:15002
  redirect udp 53 from app == "web" to proxy [fd99::1]:15003
  redirect udp 54 from app == "web" to proxy 0.0.0.0:15004
}
"#;
    let files = files_of(&model_of(src));
    let m = parse(&files[MANIFEST]).unwrap();
    let got: Vec<String> = m.local_proxies.iter().map(|p| p.to_string()).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].starts_with("redirect rule 2 of steer `mesh` (p.weir:"),
        "{got:?}"
    );
    assert!(got[0].ends_with(" to proxy 10.99.0.1:15002"), "{got:?}");
    assert!(got[1].ends_with(" to proxy [fd99::1]:15003"), "{got:?}");
    assert!(m.local_proxies.iter().all(|p| p.node == "n1"));
    // No such proxy: no key at all.
    let plain: Value = serde_json::from_slice(&files_of(&model_of(SRC))[MANIFEST]).unwrap();
    assert!(plain.get("local_proxies").is_none());
    // A loopback address listed is refused.
    let mut v: Value = serde_json::from_slice(&files[MANIFEST]).unwrap();
    v["local_proxies"][0]["addr"] = json!("127.0.0.1");
    let e = parse(v.to_string().as_bytes()).unwrap_err();
    assert!(e.to_string().contains("on every host"), "{e}");
}
