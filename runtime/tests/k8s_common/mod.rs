//! The Kubernetes conformance cases (tests/k8s-conformance/): reading a
//! case, importing it with `weir import k8s`'s code, checking the program,
//! and the expected reachability matrix.
//!
//! A case is `cases/NAME.yaml` (the policy objects; the e2e model's
//! namespaces and pods, `model.yaml`, are added to every case) and
//! `cases/NAME.expect`, the expected matrix written as the upstream e2e
//! suite builds its truth tables: start from a default and set cells.
//!
//! ```text
//! # comment
//! probe tcp 80, udp 81     # the probes the following lines describe
//! all allow                # every cell
//! deny */* -> x/a          # FROM -> TO, NS/POD, `*` a wildcard
//! allow y/* -> x/a         # later lines win
//! ```
//!
//! A pod always reaches itself (Kubernetes' implicit allowance), so the
//! diagonal is `allow` whatever the lines say. Every probe line starts
//! over from `all allow`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use weir_compiler::check::{check_program, Checked};
use weir_compiler::k8s::{self, selector};
use weir_compiler::model::Proto;
use weir_compiler::source::MemoryLoader;
use weir_grammar::FileId;

pub const PODS: [&str; 9] = [
    "x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c",
];

pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/k8s-conformance")
}

/// Case names, sorted.
pub fn cases() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir().join("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Probe {
    pub proto: Proto,
    pub port: u16,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.proto.keyword(), self.port)
    }
}

/// Probe → (from, to) → allowed.
pub type Matrix = BTreeMap<Probe, BTreeMap<(usize, usize), bool>>;

fn pattern(p: &str) -> Vec<usize> {
    let (ns, pod) = p
        .split_once('/')
        .unwrap_or_else(|| panic!("bad peer `{p}`"));
    let v: Vec<usize> = PODS
        .iter()
        .enumerate()
        .filter(|(_, q)| {
            let (qn, qp) = q.split_once('/').unwrap();
            (ns == "*" || ns == qn) && (pod == "*" || pod == qp)
        })
        .map(|(i, _)| i)
        .collect();
    assert!(!v.is_empty(), "`{p}` names no pod");
    v
}

pub fn parse_expect(text: &str) -> Matrix {
    let mut m = Matrix::new();
    let mut current: Vec<Probe> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap().trim();
        if line.is_empty() {
            continue;
        }
        macro_rules! bad {
            () => {
                panic!("line {}: `{line}`", n + 1)
            };
        }
        if let Some(rest) = line.strip_prefix("probe ") {
            current = rest
                .split(',')
                .map(|p| {
                    let (proto, port) = p.trim().split_once(' ').unwrap_or_else(|| bad!());
                    let proto = match proto {
                        "tcp" => Proto::Tcp,
                        "udp" => Proto::Udp,
                        "sctp" => Proto::Sctp,
                        _ => bad!(),
                    };
                    Probe {
                        proto,
                        port: port.trim().parse().unwrap_or_else(|_| bad!()),
                    }
                })
                .collect();
            for p in &current {
                let cells = m.entry(*p).or_default();
                for i in 0..PODS.len() {
                    for j in 0..PODS.len() {
                        cells.insert((i, j), true);
                    }
                }
            }
            continue;
        }
        let (verb, rest) = line.split_once(' ').unwrap_or_else(|| bad!());
        let allow = match verb {
            "allow" => true,
            "deny" => false,
            "all" => {
                let a = rest.trim() == "allow";
                for p in &current {
                    for v in m.get_mut(p).unwrap().values_mut() {
                        *v = a;
                    }
                }
                continue;
            }
            _ => bad!(),
        };
        let (from, to) = rest.split_once("->").unwrap_or_else(|| bad!());
        for p in &current {
            let cells = m.get_mut(p).unwrap();
            for i in pattern(from.trim()) {
                for j in pattern(to.trim()) {
                    cells.insert((i, j), allow);
                }
            }
        }
    }
    assert!(!m.is_empty(), "no probe");
    for cells in m.values_mut() {
        for i in 0..PODS.len() {
            cells.insert((i, i), true);
        }
    }
    m
}

/// The matrix as the upstream suite prints it: `.` connected, `X` not.
pub fn show(
    m: &BTreeMap<(usize, usize), bool>,
    diff: Option<&BTreeMap<(usize, usize), bool>>,
) -> String {
    let mut s = format!("     {}\n", PODS.join(" "));
    for (i, from) in PODS.iter().enumerate() {
        s.push_str(from);
        for j in 0..PODS.len() {
            let c = if m[&(i, j)] { '.' } else { 'X' };
            let mark = match diff {
                Some(d) if d[&(i, j)] != m[&(i, j)] => '!',
                _ => ' ',
            };
            s.push_str(&format!("  {c}{mark}"));
        }
        s.push('\n');
    }
    s
}

pub struct Case {
    pub name: String,
    pub checked: Checked,
    pub expect: Matrix,
    /// "ns/pod" → its address.
    pub addrs: Vec<IpAddr>,
    pub import: k8s::Import,
}

/// Imports and checks one case; panics on import or check errors.
pub fn load(name: &str) -> Case {
    let d = dir();
    let model = std::fs::read_to_string(d.join("model.yaml")).unwrap();
    let objs = std::fs::read_to_string(d.join("cases").join(format!("{name}.yaml"))).unwrap();
    let expect = std::fs::read_to_string(d.join("cases").join(format!("{name}.expect")))
        .unwrap_or_else(|e| panic!("{name}.expect: {e}"));
    let import = k8s::import(
        &[(FileId(0), model.as_str()), (FileId(1), objs.as_str())],
        k8s::Endpoints::Inventory("inventory.json".into()),
    );
    let errors: Vec<_> = import.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "{name}: import errors {errors:#?}");
    let loader = MemoryLoader::new()
        .with("policy.weir", import.program.clone())
        .with(
            "inventory.json",
            serde_json::to_string(&import.inventory).unwrap(),
        );
    let checked = check_program(&[PathBuf::from("policy.weir")], &loader, None);
    assert!(
        checked.model_if_ok().is_some(),
        "{name}: the imported program has errors: {:#?}\n{}",
        checked.diagnostics,
        import.program
    );
    let mut addrs = vec![None; PODS.len()];
    for e in import.inventory["endpoints"].as_array().unwrap() {
        let l = &e["labels"];
        let key = format!(
            "{}/{}",
            l[selector::NS_KEY].as_str().unwrap(),
            l[selector::NAME_KEY].as_str().unwrap()
        );
        if let Some(i) = PODS.iter().position(|p| *p == key) {
            addrs[i] = Some(e["addrs"][0].as_str().unwrap().parse().unwrap());
        }
    }
    Case {
        name: name.to_string(),
        checked,
        expect: parse_expect(&expect),
        addrs: addrs.into_iter().map(|a| a.expect("model pod")).collect(),
        import,
    }
}
