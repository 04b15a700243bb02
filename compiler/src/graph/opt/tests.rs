//! The pipeline pass by pass on generated models: every pass's output
//! verifies (`graph::verify`, which also requires a class table's
//! decision-list targets to be entry targets or the default), the input
//! of `tables` has no chain item that is first for no class (the premise
//! `tables.rs`'s module docs argue from: no path has an infeasible
//! branch), and every class table sends each compiled class where its
//! decision list does.

use super::*;
use crate::graph::ir::{Cond, Node, NodeId};
use crate::graph::verify::{report, verify_dag, Bounds};
use crate::graph::{dump, lower};
use crate::model::Model;

/// Each pass's output, named as in [`PIPELINE`] (the same order as
/// `after_first`; the last one is checked against [`optimize`]).
fn pass_by_pass(g: &Graph) -> Vec<(&'static str, Dag)> {
    let d1 = hashcons::run(&g.dag);
    let d2 = redundant::run(&d1);
    let d3 = order::run(&d2);
    let d4 = tables::run(&d3, &g.classes);
    let d5 = redundant::run(&d4);
    let d6 = hashcons::run(&d5);
    let out: Vec<(&'static str, Dag)> =
        PIPELINE.into_iter().zip([d1, d2, d3, d4, d5, d6]).collect();
    out
}

/// The atom and side of an atom test.
fn atom_test(n: &Node) -> Option<(bool, u32, NodeId)> {
    match *n {
        Node::Test {
            cond: Cond::SrcAtom(a),
            els,
            ..
        } => Some((true, a, els)),
        Node::Test {
            cond: Cond::DstAtom(a),
            els,
            ..
        } => Some((false, a, els)),
        _ => None,
    }
}

/// For every reachable atom test, along its `else` chain of same-side
/// atom tests: each item's atom holds for a class that none of the items
/// before it holds for. Returns how many items were checked.
fn every_chain_item_is_first_somewhere(dag: &Dag, g: &Graph, what: &str) -> usize {
    let mut checked = 0;
    for n in dag.reachable() {
        let Some((side, a0, mut cur)) = atom_test(dag.node(n)) else {
            continue;
        };
        let mut earlier = g.classes.classes_with(a0).clone();
        assert!(
            !earlier.is_empty(),
            "{what}: atom a{a0} of {n:?} holds for no class"
        );
        checked += 1;
        while let Some((s, a, els)) = atom_test(dag.node(cur)) {
            if s != side {
                break;
            }
            let w = g.classes.classes_with(a);
            assert!(
                !w.and_not(&earlier).is_empty(),
                "{what}: atom a{a} in the else chain of {n:?} holds for no class the earlier items miss"
            );
            earlier = earlier.or(w);
            checked += 1;
            cur = els;
        }
    }
    checked
}

/// Every class table's entry for each compiled class is its decision
/// list's first match (else the default). Returns how many tables.
fn class_tables_follow_their_lists(dag: &Dag, g: &Graph, what: &str) -> usize {
    let mut tables = 0;
    for n in dag.reachable() {
        let Node::Table {
            entries,
            default,
            rule: Some(rule),
            ..
        } = dag.node(n)
        else {
            continue;
        };
        tables += 1;
        for c in 0..g.classes.len() {
            let want = rule
                .iter()
                .find(|&&(a, _)| g.classes.classes_with(a).contains(c))
                .map_or(*default, |&(_, t)| t);
            let got = entries
                .iter()
                .find(|e| e.lo as usize <= c && c <= e.hi as usize)
                .map_or(*default, |e| e.next);
            assert_eq!(got, want, "{what}: class c{c} in table {n:?}");
        }
    }
    tables
}

/// Checks one model; returns (chain items checked, class tables seen).
fn check(model: &Model, what: &str) -> (usize, usize) {
    let g = lower::lower_graph(model);
    let bounds = Bounds::of(&g);
    let (mut items, mut tables) = (0, 0);
    let mut last = None;
    for (name, dag) in pass_by_pass(&g) {
        let at = format!("{what}, after {name}");
        if let Err(e) = verify_dag(&dag, &bounds) {
            panic!("{at}:\n{}", report(&e));
        }
        if name == "order" {
            items += every_chain_item_is_first_somewhere(&dag, &g, &at);
        }
        tables += class_tables_follow_their_lists(&dag, &g, &at);
        last = Some(dag);
    }
    let mine = g.with_dag(last.expect("six passes"));
    assert_eq!(
        dump::text(model, &mine),
        dump::text(model, &optimize(&g)),
        "{what}: pass_by_pass is the pipeline"
    );
    (items, tables)
}

#[test]
fn every_pass_keeps_class_table_lists_on_their_children() {
    let (mut items, mut tables) = (0, 0);
    for seed in 0..150 {
        let (i, t) = check(&crate::gen::model(seed), &format!("model seed {seed}"));
        items += i;
        tables += t;
    }
    for seed in 0..50 {
        let (i, t) = check(
            &crate::gen::dual_stack(seed),
            &format!("dual-stack seed {seed}"),
        );
        items += i;
        tables += t;
    }
    eprintln!("{items} chain items, {tables} class tables with a decision list");
    assert!(items >= 1_000, "only {items} chain items checked");
    assert!(
        tables >= 50,
        "only {tables} class tables with a decision list"
    );
}
