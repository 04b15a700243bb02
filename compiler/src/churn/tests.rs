use super::*;
use crate::bundle::{bundle, BundleInput, MANIFEST};
use crate::contract::Manifest;
use crate::ebpf::service::Be;
use crate::model::Sel;
use std::collections::BTreeMap;

const SRC: &str = r#"
endpoint web   { labels { app: "web" }   addr 10.1.0.10 }
endpoint other { labels { app: "other" } addr 10.1.0.11 }
endpoint db    { labels { app: "db" }    addr 10.2.0.20 }
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

fn manifest_of(src: &str) -> Manifest {
    manifest_of_model(&crate::check::model_of(src))
}

/// The manifest of a bundle of `model` without back ends, as a reader
/// gets it.
pub(super) fn manifest_of_model(model: &crate::model::Model) -> Manifest {
    let g = crate::graph::build(model);
    read(&BundleInput {
        model,
        graph: &g,
        sources: &[],
        targets: &[],
        locate: &|_| None,
        backends: BTreeMap::new(),
    })
}

/// The manifest of a bundle, as a reader gets it.
fn read(input: &BundleInput) -> Manifest {
    crate::contract::parse(&bundle(input)[MANIFEST]).unwrap()
}

fn ep(name: &str, app: &str, addr: &str) -> EndpointRec {
    EndpointRec {
        name: name.into(),
        labels: [("app".to_string(), app.to_string())].into(),
        ready: true,
        addrs: vec![addr.parse().unwrap()],
    }
}

#[test]
fn declared_endpoints_are_kept_apart_and_not_replaced() {
    let src = "endpoint db-1 { labels { app: \"db\" } addr 10.2.0.5 }\n";
    let m = manifest_of(&format!("{SRC}{src}"));
    let (inv, declared) = split_declared(&m);
    assert!(declared.iter().any(|e| e.name == "db-1"), "{declared:?}");
    assert!(inv.iter().all(|e| e.name != "db-1"));
    let db1 = declared.iter().find(|e| e.name == "db-1").unwrap().clone();
    let web3 = ep("web-3", "web", "10.1.0.9");
    // A partial inventory: db-1 is not removed.
    let (o, n, r) = filter_declared(&declared, declared.clone(), vec![web3.clone()]);
    assert!(o.is_empty() && r.is_empty() && n == vec![web3.clone()]);
    // Listed unchanged: nothing to do; changed or shadowed: refused.
    let (_, n, r) = filter_declared(&declared, Vec::new(), vec![db1]);
    assert!(n.is_empty() && r.is_empty());
    let (_, _, r) = filter_declared(&declared, Vec::new(), vec![ep("db-1", "db", "10.2.0.6")]);
    assert_eq!(r.len(), 1);
    let (_, _, r) = filter_declared(&declared, Vec::new(), vec![ep("x", "db", "10.2.0.5")]);
    assert_eq!(r.len(), 1);
    let p = name_plan(&inv, &[web3]);
    assert_eq!(p.added.len(), 1);
    assert_eq!(p.removed.len(), inv.len());
}

#[test]
fn places_replicas_in_existing_classes_and_refuses_new_ones() {
    let m = manifest_of(SRC);
    let view = ClassView::from_manifest(&m);
    let old = manifest_endpoints(&m);
    assert_eq!(old.len(), 3);
    let web_class = m.endpoints.iter().find(|e| e.name == "web").unwrap().addrs[0].class;
    // A new web replica: the web class.
    let mut new = old.clone();
    new.push(ep("web-2", "web", "10.1.0.12"));
    let p = plan(&view, &old, &new);
    assert!(p.refused.is_empty(), "{:?}", p.refused);
    assert_eq!(p.changes.len(), 1);
    assert_eq!(p.changes[0].new, Some(web_class));
    assert_eq!(p.changes[0].old, None);
    // Unknown labels: the class of `other` (endpoint bit only).
    let mut new2 = old.clone();
    new2.push(ep("x", "unknown", "10.1.0.13"));
    let p = plan(&view, &old, &new2);
    assert!(p.refused.is_empty(), "{:?}", p.refused);
    // Removal and relabel.
    let new3 = vec![ep("web", "other", "10.1.0.10"), ep("db", "db", "10.2.0.20")];
    let p = plan(&view, &old, &new3);
    assert_eq!(p.changes.len(), 2, "{:?}", p.changes);
    assert!(p
        .changes
        .iter()
        .any(|c| c.addr.to_string() == "10.1.0.11" && c.new.is_none()));
    // An endpoint inside a set prefix: web labels + set atom is new.
    let mut new4 = old.clone();
    new4.push(ep("inside", "web", "192.168.1.1"));
    let p = plan(&view, &old, &new4);
    assert_eq!(p.refused.len(), 1, "{:?}", p.changes);
    assert!(
        p.refused[0].contains("needs a recompile"),
        "{}",
        p.refused[0]
    );
    // Base class of a set address is the set's class, not 0.
    assert_ne!(view.base_class("192.168.1.1".parse().unwrap()), 0);
    assert_eq!(view.base_class("192.168.7.7".parse().unwrap()), 0);
    // Duplicate address.
    let mut new5 = old.clone();
    new5.push(ep("dup", "web", "10.1.0.10"));
    assert!(!plan(&view, &old, &new5).refused.is_empty());
}

#[test]
fn selector_service_backends_follow_the_inventory() {
    let m = manifest_of(SRC);
    let svcs = selector_services(&m);
    assert_eq!(svcs.len(), 1);
    let s = &svcs[0];
    let g = &s.groups[0];
    assert_eq!((s.groups.len(), g.compiled.len()), (1, 1));
    let old = manifest_endpoints(&m);
    assert_eq!(backends_for(s, g, &old), g.compiled);
    let mut new = old.clone();
    new.push(ep("web-2", "web", "10.1.0.12"));
    let mut notready = ep("web-3", "web", "10.1.0.13");
    notready.ready = false;
    new.push(notready);
    let b = backends_for(s, g, &new);
    assert_eq!(b.len(), 2);
    assert!(b.iter().all(|b| b.port == 8080));
}

fn eps_text(eps: &[EndpointRec], pretty: bool) -> String {
    if pretty {
        serde_json::to_string_pretty(&serde_json::json!({ "endpoints": eps })).unwrap()
    } else {
        inventory_text(eps)
    }
}

/// The text diff finds exactly the endpoints [`changed_endpoints`]
/// finds, parsing only what changed; anything unusual takes the full
/// parse.
#[test]
fn text_diff_agrees_with_the_record_diff() {
    let m = manifest_of(SRC);
    let old = manifest_endpoints(&m);
    let rec = entries::encode_all(&old);
    let check = |new: &[EndpointRec], text: &str| {
        let d = diff_text(&rec, true, text).unwrap();
        let (o, n) = d.changed.clone().expect("unique inventories");
        let (eo, en) = changed_endpoints(&old, new).unwrap();
        assert_eq!((o, n), (eo, en), "{text}");
        let decoded: Vec<EndpointRec> = entries::decode_all(&d.entries).unwrap();
        assert_eq!(decoded, new);
        d
    };
    // Unchanged, in another layout, in another order.
    let d = check(&old, &eps_text(&old, false));
    assert_eq!(d.entries, rec, "unchanged entries are copied");
    check(&old, &eps_text(&old, true));
    let mut rev = old.clone();
    rev.reverse();
    check(&rev, &eps_text(&rev, false));
    // Added, removed, relabeled, not ready.
    let mut new = old.clone();
    new.insert(1, ep("web-2", "web", "10.1.0.12"));
    check(&new, &eps_text(&new, false));
    check(&old[1..], &eps_text(&old[1..], false));
    check(&old[..2], &eps_text(&old[..2], false));
    let mut last = old.clone();
    last[2].labels.insert("tier".into(), "y".into());
    last.push(ep("web-3", "web", "10.1.0.13"));
    check(&last, &eps_text(&last, false));
    let spaced = eps_text(&old, false).replacen("},{", "} ,\n {", 1);
    check(&old, &spaced);
    // After an update, the record is the new text's.
    let d = diff_text(&rec, true, &spaced).unwrap();
    let d2 = diff_text(&d.entries, true, &eps_text(&new, false)).unwrap();
    let (o, n) = d2.changed.unwrap();
    assert!(o.is_empty() && n.len() == 1 && n[0].name == "web-2");
    let mut relabeled = old.clone();
    relabeled[0].labels.insert("tier".into(), "x".into());
    relabeled[2].ready = false;
    let d = check(&relabeled, &eps_text(&relabeled, true));
    assert_eq!(d.changed.unwrap().1.len(), 2);
    // A name twice, or an address of an unchanged endpoint again:
    // the whole inventory, for plan's messages.
    for extra in [ep("web", "web", "10.1.0.99"), ep("x", "web", "10.1.0.10")] {
        let mut dup = old.clone();
        dup.push(extra);
        let d = diff_text(&rec, true, &eps_text(&dup, false)).unwrap();
        assert!(d.changed.is_none() && !d.unique);
        assert_eq!(d.full.unwrap(), dup);
    }
    // Problems parse_inventory reports.
    let bad_name = eps_text(&[ep("1bad", "web", "10.1.0.12")], false);
    for text in [
        "{ \"endpoints\": [ ",
        "{ \"endpoints\": [ { \"name\": \"a\", \"addrs\": [\"x\"] } ] }",
        "{ \"endpoints\": [ { \"name\": \"a\", \"extra\": 1 } ] }",
        "{ \"endpoints\": [], \"x\": 1 }",
        bad_name.as_str(),
    ] {
        assert_eq!(
            diff_text(&rec, true, text).unwrap_err(),
            DiffError::Inventory,
            "{text}"
        );
        let (_, problems) = crate::inventory::parse_inventory(weir_grammar::FileId(0), text);
        assert!(!problems.is_empty(), "{text}");
    }
    // The full parse gives what parse_inventory gives.
    let text = eps_text(&new, true);
    let (inv, problems) = crate::inventory::parse_inventory(weir_grammar::FileId(0), &text);
    assert!(problems.is_empty());
    assert_eq!(
        EndpointRec::parse_inventory(&text).unwrap(),
        EndpointRec::from_inventory(&inv)
    );
    assert_eq!(scan_inventory("{\"endpoints\":[]}"), Some(vec![]));
    assert_eq!(
        scan_inventory(r#" { "endpoints" : [ {"name":"a\"}"} , {"b":[{}]} ] } "#),
        Some(vec![r#"{"name":"a\"}"}"#, r#"{"b":[{}]}"#])
    );
}

#[test]
fn encoded_selectors_decode_to_themselves() {
    use crate::model::Sel::*;
    let b = |s: Sel| Box::new(s);
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    let sels = vec![
        All,
        Eq("app".into(), "web".into()),
        Ne("app".into(), "web".into()),
        In("app".into(), set(&["web", "db"])),
        NotIn("app".into(), set(&["web"])),
        Has("tier".into()),
        Not(b(Has("tier".into()))),
        And(b(Eq("app".into(), "web".into())), b(Has("tier".into()))),
        Or(b(Eq("app".into(), "db".into())), b(Not(b(All)))),
    ];
    for s in &sels {
        let mut buf = Vec::new();
        selcode::encode(&mut buf, s);
        assert_eq!(&selcode::decode(&buf).unwrap(), s);
        buf.push(0);
        assert!(selcode::decode(&buf).is_err(), "trailing bytes refused");
        assert!(selcode::decode(&buf[..buf.len() - 2]).is_err() || buf.len() <= 2);
    }
    let svcs = selector_services(&manifest_of(SRC));
    let table = service_table::encode(&svcs);
    assert_eq!(service_table::decode_all(&table).unwrap(), svcs);
    assert_eq!(
        service_table::affected(&table, &[ep("w", "web", "10.9.9.9")]).unwrap(),
        svcs
    );
    assert!(
        service_table::affected(&table, &[ep("d", "db", "10.9.9.9")])
            .unwrap()
            .is_empty()
    );
}

#[test]
fn backends_after_a_change_follow_the_inventory() {
    let m = manifest_of(SRC);
    let s = &selector_services(&m)[0];
    let g = &s.groups[0];
    let old = manifest_endpoints(&m);
    let have = backends_for(s, g, &old);
    let mut new = old.clone();
    new.push(ep("web-2", "web", "10.1.0.12"));
    new[0].ready = false;
    let (o, n) = changed_endpoints(&old, &new).unwrap();
    assert_eq!(
        backends_delta(s, g, &have, &o, &n),
        backends_for(s, g, &new)
    );
}

/// Placement by the view equals the compiler's classification for
/// every endpoint of generated models.
#[test]
fn view_agrees_with_compiled_classes() {
    for seed in 0..100 {
        let model = crate::gen::model(seed);
        let g = crate::graph::build(&model);
        let m = manifest_of_model(&model);
        let view = ClassView::from_manifest(&m);
        for (e, per) in model.endpoints.iter().zip(&g.classes.endpoint_classes) {
            for &(a, c) in per {
                assert_eq!(
                    view.place(a, &e.name, &e.labels),
                    Placement::Existing(c),
                    "seed {seed}"
                );
                assert_eq!(
                    view.base_class(a),
                    g.classes
                        .class_of_signature(&g.classes.signature(a, None))
                        .unwrap_or(0)
                );
            }
        }
    }
}

/// Churn's backends (run time, over inventory records, each frontend's
/// group as the manifest gives it) are the interpreter's (compile time,
/// over the model's endpoints, per frontend), indexed or not, and the
/// manifest's compiled ones, on generated models (some with a named
/// target port on frontends of two protocols).
#[test]
fn churn_backends_are_the_interpreters() {
    use crate::contract::BackendGroup;
    let mut per_protocol = 0;
    for seed in 0..300 {
        let m = crate::gen::model(seed);
        let manifest = manifest_of_model(&m);
        let svcs = selector_services(&manifest);
        let recs: Vec<EndpointRec> = m.endpoints.iter().map(EndpointRec::from).collect();
        let index =
            crate::endpoint_index::EndpointIndex::from_labels(recs.iter().map(|e| &e.labels));
        for (i, s) in m.services.iter().enumerate() {
            let Some(svc) = svcs.iter().find(|x| x.index == i) else {
                continue;
            };
            let named = manifest.services[i]
                .backend_selector
                .as_ref()
                .is_some_and(|b| b.per_protocol());
            let protos: std::collections::BTreeSet<_> =
                s.frontends.iter().map(|f| f.proto).collect();
            per_protocol += usize::from(named && protos.len() > 1);
            for fe in &s.frontends {
                let want: Vec<Be> = crate::interp::backends_of(s, fe, &m.endpoints)
                    .iter()
                    .map(Be::from)
                    .collect();
                let group =
                    BackendGroup::of(fe.addr, crate::flowhash::proto_number(fe.proto), named);
                let g = svc.groups.iter().find(|g| g.group == group).unwrap();
                assert_eq!(backends_for(svc, g, &recs), want, "seed {seed}");
                assert_eq!(backends_indexed(svc, g, &recs, &index), want, "seed {seed}");
                assert_eq!(g.compiled, want, "seed {seed}");
            }
        }
    }
    assert!(
        per_protocol >= 10,
        "{per_protocol} named services of two protocols"
    );
}

/// A pod whose named port changes (language.md §4, "Named ports"): to a
/// port value a compiled endpoint of the same labels has, it moves to that
/// class (an update); to a value no compiled endpoint has, or losing the
/// port's protocol, it is placed by signature like any relabel — a new
/// value is a signature no class has, so the update is refused, never
/// applied with a stale port.
#[test]
fn named_port_changes_update_or_refuse_never_stale() {
    let src = r#"
endpoint a { labels { app: "web" } addr 10.1.0.1 ports { http: 8080/tcp } }
endpoint b { labels { app: "web" } addr 10.1.0.2 ports { http: 9090/tcp } }
endpoint c { labels { app: "cli" } addr 10.1.0.3 }
endpoint e { labels { app: "web" } addr 10.1.0.5 }
policy web-in {
  applies to app == "web"
  ingress { allow tcp port "http" from any }
}
"#;
    let m = manifest_of(src);
    let view = ClassView::from_manifest(&m);
    let old = manifest_endpoints(&m);
    let class_of = |n: &str| m.endpoints.iter().find(|e| e.name == n).unwrap().addrs[0].class;
    assert_ne!(
        class_of("a"),
        class_of("b"),
        "ports 8080 and 9090 must differ"
    );
    let with_port = |name: &str, addr: &str, port: &str| {
        let mut e = ep(name, "web", addr);
        e.labels.insert("port:http/tcp".into(), port.into());
        e
    };
    // a's port becomes 9090: b's class.
    let mut new = old.clone();
    new.retain(|e| e.name != "a");
    new.push(with_port("a", "10.1.0.1", "9090"));
    let p = plan(&view, &old, &new);
    assert!(p.refused.is_empty(), "{:?}", p.refused);
    assert_eq!(p.changes.len(), 1);
    assert_eq!(p.changes[0].new, Some(class_of("b")));
    // a's port becomes 7070, which no compiled endpoint has: refused.
    let mut new = old.clone();
    new.retain(|e| e.name != "a");
    new.push(with_port("a", "10.1.0.1", "7070"));
    let p = plan(&view, &old, &new);
    assert_eq!(p.refused.len(), 1, "{:?}", p.changes);
    assert!(
        p.refused[0].contains("needs a recompile"),
        "{}",
        p.refused[0]
    );
    // (Without the `has(port:http/tcp)` atom, 7070 would pass for e's
    // class: a web endpoint without the port.)
    // A new replica with a new port: refused too.
    let mut new = old.clone();
    new.push(with_port("d", "10.1.0.4", "7070"));
    assert_eq!(plan(&view, &old, &new).refused.len(), 1);
}

/// A pod moving to another node (its `node` attribute, a label:
/// crate::nodes) next to a compiled endpoint with its labels there is an
/// incremental update; to a node where no compiled endpoint of its labels
/// runs, it is a signature no class has: "needs a recompile". Made to
/// fail by dropping the `node == N` atoms (the move then passes as the
/// old class, stale).
#[test]
fn moving_to_another_node_is_a_relabel() {
    let src = r#"
node n1 { addr 10.10.0.1 }
node n2 { addr 10.10.0.2 }
node n3 { addr 10.10.0.3 }
endpoint web-1 { labels { app: "web" } addr 10.1.0.1 node n1 }
endpoint web-2 { labels { app: "web" } addr 10.1.0.2 node n2 }
policy k8s-node {
  applies to app == "web"
  ingress { allow from node }
}
"#;
    let m = manifest_of(src);
    let view = ClassView::from_manifest(&m);
    let old = manifest_endpoints(&m);
    let class_of = |name: &str| m.endpoints.iter().find(|e| e.name == name).unwrap().addrs[0].class;
    assert_ne!(class_of("web-1"), class_of("web-2"));
    let on = |node: &str| {
        let mut new = old.clone();
        let e = new.iter_mut().find(|e| e.name == "web-1").unwrap();
        e.labels.insert(crate::nodes::KEY.into(), node.into());
        plan(&view, &old, &new)
    };
    let p = on("n2");
    assert!(p.refused.is_empty(), "{:?}", p.refused);
    assert_eq!(p.changes.len(), 1);
    assert_eq!(p.changes[0].new, Some(class_of("web-2")));
    let p = on("n3");
    assert_eq!(p.refused.len(), 1, "{:?}", p.changes);
    assert!(
        p.refused[0].contains("needs a recompile"),
        "{}",
        p.refused[0]
    );
}
