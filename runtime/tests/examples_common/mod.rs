//! The models the iptables kernel tests feed the back end and the direct
//! x_tables loader: every example of `examples/`, checked as `weir check`
//! would (its `inventory.json` beside it), and the generated model with
//! sets the x_tables oracles add. One place, so the differential test
//! and both oracles walk the same examples. Included by the tests that
//! use it.
#![allow(dead_code)]

use std::io;
use std::path::{Path, PathBuf};

use weir_compiler::check::check_program;
use weir_compiler::graph;
use weir_compiler::model::Model;
use weir_compiler::source::SourceLoader;
use weir_compiler::synth;

struct Fs(PathBuf);

impl SourceLoader for Fs {
    fn load(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn stdlib_dir(&self) -> Option<PathBuf> {
        Some(self.0.clone())
    }
}

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every example, checked (name, model as written), in file order; the
/// test fails if one does not check.
pub fn examples() -> Vec<(String, Model)> {
    let root = root();
    let loader = Fs(root.join("stdlib-policies"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "weir"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let inv = f.with_file_name("inventory.json");
            let inv = inv.exists().then_some(inv);
            let c = check_program(std::slice::from_ref(&f), &loader, inv.as_deref());
            assert!(!c.has_errors(), "{} does not check", f.display());
            (
                f.file_stem().unwrap().to_string_lossy().into_owned(),
                c.model,
            )
        })
        .collect()
}

/// The iptables bundle texts of a model `(ipset, iptables)` (Maglev
/// balanced at random, as the iptables back end can), `None` if the back
/// end refuses it.
pub fn texts(m: &Model) -> Option<(String, String)> {
    generate(m).map(|o| (o.ipset, o.iptables))
}

/// [`texts`] with the IPv6 text: `(ipset, ip6tables)`.
pub fn texts6(m: &Model) -> Option<(String, String)> {
    generate(m).map(|o| (o.ipset, o.ip6tables))
}

fn generate(m: &Model) -> Option<weir_compiler::iptables::Output> {
    let g = graph::compile(m);
    let opts = weir_compiler::iptables::Options {
        maglev_as_random: true,
        ..weir_compiler::iptables::Options::default()
    };
    weir_compiler::iptables::generate_text(&g.graph, m, &opts).ok()
}

/// The generated model with sets the oracles add to the examples
/// ("synth-300": 30 policies of 10 rules over 300 endpoints).
pub fn synth_300() -> Model {
    synth::model(&synth::Params {
        policies: 30,
        rules: 10,
        endpoints: 300,
        deployments: 60,
        ..synth::Params::default()
    })
}

/// [`synth_300`] dual-stack: every endpoint also has an IPv6 address
/// (`fd00:64::` and its IPv4 address's last 16 bits), so the IPv6 text
/// has the same policy chains over IPv6 sets.
pub fn synth_300_dual() -> Model {
    dual_stack(synth_300())
}

/// `m` with an IPv6 address beside each endpoint's IPv4 one.
pub fn dual_stack(mut m: Model) -> Model {
    for e in &mut m.endpoints {
        let v6: Vec<std::net::IpAddr> = e
            .addrs
            .iter()
            .filter_map(|a| match a {
                std::net::IpAddr::V4(a) => {
                    let o = a.octets();
                    Some(std::net::IpAddr::V6(std::net::Ipv6Addr::new(
                        0xfd00,
                        0x64,
                        0,
                        0,
                        0,
                        0,
                        u16::from(o[1]),
                        u16::from_be_bytes([o[2], o[3]]),
                    )))
                }
                std::net::IpAddr::V6(_) => None,
            })
            .collect();
        e.addrs.extend(v6);
    }
    m
}
