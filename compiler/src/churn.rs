//! Endpoint churn at run time, computed purely: given a bundle's manifest,
//! the endpoints currently applied and a new inventory, which addresses
//! change class and which selector-backed services change backends. The
//! runtime (`weir endpoints`) only applies the result: LPM map entries or
//! ipset members, and service-map writes — never a recompile.
//!
//! Placement follows [`crate::graph::classes`] ("Endpoints that appear at
//! run time"): an address's signature is the set atoms that contain it,
//! the selector atoms its endpoint's labels match, and the endpoint atom
//! (`Sel::All`); its class is the compiled class with that signature.
//!
//! A signature no compiled class has is **refused** ("needs a
//! recompile"): adding a class at run time needs a row in every
//! class-keyed table of the program, and the bundle carries neither the
//! tables' atom decision lists nor a guarantee that inline class tables
//! send spare class ids to the right branch. The whole update is then
//! refused and the running state stays as it is.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ebpf::service::fill::Be;
use crate::graph::classes::{Atom, ClassId};
use crate::inventory::Inventory;
use crate::model::Sel;

/// An endpoint as the runtime records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default = "yes")]
    pub ready: bool,
    pub addrs: Vec<IpAddr>,
}

fn yes() -> bool {
    true
}

impl EndpointRec {
    pub fn from_inventory(inv: &Inventory) -> Vec<EndpointRec> {
        inv.endpoints
            .iter()
            .map(|e| EndpointRec {
                name: e.name.clone(),
                labels: e.labels.clone(),
                ready: e.ready,
                addrs: e.addrs.clone(),
            })
            .collect()
    }
}

/// The class data of a manifest (`classes`), with the atoms deserialized.
#[derive(Debug, Clone)]
pub struct ClassView {
    pub atoms: Vec<Atom>,
    pub endpoint_atom: u32,
    /// Class → sorted atom ids.
    pub rows: Vec<Vec<u32>>,
    index: HashMap<Vec<u32>, ClassId>,
}

/// Where an address goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// A compiled class: one map entry / ipset member.
    Existing(ClassId),
    /// A signature (sorted atom ids) no compiled class has.
    New(Vec<u32>),
}

fn field<'a>(v: &'a Value, path: &str) -> Result<&'a Value, String> {
    v.pointer(path)
        .ok_or_else(|| format!("manifest has no `{}`", &path[1..].replace('/', ".")))
}

impl ClassView {
    /// Reads `classes` of a manifest (format written by
    /// [`crate::bundle::manifest`]; atoms need their `value`).
    pub fn from_manifest(m: &Value) -> Result<ClassView, String> {
        let atoms = field(m, "/classes/atoms")?
            .as_array()
            .ok_or("manifest `classes.atoms` is not a list")?
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let v = a.get("value").ok_or_else(|| {
                    format!("manifest atom {i} has no `value`: the bundle was compiled by an older weir; recompile it")
                })?;
                serde_json::from_value::<Atom>(v.clone())
                    .map_err(|e| format!("manifest atom {i}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let endpoint_atom = field(m, "/classes/endpoint_atom")?
            .as_u64()
            .ok_or("manifest `classes.endpoint_atom` is not a number")?
            as u32;
        let rows: Vec<Vec<u32>> = serde_json::from_value(field(m, "/classes/rows")?.clone())
            .map_err(|e| format!("manifest `classes.rows`: {e}"))?;
        let index = rows
            .iter()
            .enumerate()
            .map(|(c, r)| {
                let mut r = r.clone();
                r.sort_unstable();
                (r, c as ClassId)
            })
            .collect();
        Ok(ClassView {
            atoms,
            endpoint_atom,
            rows,
            index,
        })
    }

    /// The signature (sorted atom ids) of `addr`, owned by an endpoint
    /// with `labels` (or by none).
    pub fn signature(&self, addr: IpAddr, labels: Option<&BTreeMap<String, String>>) -> Vec<u32> {
        self.atoms
            .iter()
            .enumerate()
            .filter(|(_, a)| match a {
                Atom::Sel(s) => labels.is_some_and(|l| s.matches(l)),
                Atom::Set(s) => s.contains(addr),
            })
            .map(|(i, _)| i as u32)
            .collect()
    }

    pub fn class_of(&self, sig: &[u32]) -> Option<ClassId> {
        self.index.get(sig).copied()
    }

    /// The class of an endpoint address with `labels`.
    pub fn place(&self, addr: IpAddr, labels: &BTreeMap<String, String>) -> Placement {
        let sig = self.signature(addr, Some(labels));
        match self.class_of(&sig) {
            Some(c) => Placement::Existing(c),
            None => Placement::New(sig),
        }
    }

    /// The class of `addr` when no endpoint owns it (its set atoms only):
    /// what the class map gives once its host entry is gone. Every set
    /// signature is a compiled class (class 0 when in no set).
    pub fn base_class(&self, addr: IpAddr) -> ClassId {
        self.class_of(&self.signature(addr, None)).unwrap_or(0)
    }

    /// `atom #i (selector app == "web")`, for messages.
    pub fn describe(&self, sig: &[u32]) -> String {
        let parts: Vec<String> = sig
            .iter()
            .filter(|&&a| a != self.endpoint_atom)
            .map(|&a| self.atoms[a as usize].to_string())
            .collect();
        if parts.is_empty() {
            "no selector or set besides `all`".into()
        } else {
            parts.join("; ")
        }
    }
}

/// The endpoints a manifest was compiled with (`endpoints`).
pub fn manifest_endpoints(m: &Value) -> Result<Vec<EndpointRec>, String> {
    let list = field(m, "/endpoints")?
        .as_array()
        .ok_or("manifest `endpoints` is not a list")?;
    list.iter()
        .map(|e| {
            let name = e["name"].as_str().ok_or("endpoint without a name")?;
            let labels = serde_json::from_value(e["labels"].clone()).unwrap_or_default();
            let addrs = e["addrs"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x["addr"].as_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            Ok(EndpointRec {
                name: name.to_string(),
                labels,
                ready: e["ready"].as_bool().unwrap_or(true),
                addrs,
            })
        })
        .collect()
}

/// A selector-backed service of the manifest.
#[derive(Debug, Clone)]
pub struct SelectorService {
    /// Index in the manifest's (and `LbState`'s) service list.
    pub index: usize,
    pub name: String,
    pub selector: Sel,
    pub port: u16,
    /// Address families (4 / 6) of its frontends.
    pub families: BTreeSet<u8>,
    /// Backends compiled into the bundle, per family.
    pub compiled: BTreeMap<u8, Vec<Be>>,
}

fn fam(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        4
    } else {
        6
    }
}

fn parse_socket(s: &str) -> Option<(IpAddr, u16)> {
    let sa: std::net::SocketAddr = s.parse().ok()?;
    Some((sa.ip(), sa.port()))
}

/// The manifest's selector-backed services (`services[].backend_selector`).
pub fn selector_services(m: &Value) -> Result<Vec<SelectorService>, String> {
    let Some(list) = m.get("services").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let name = s["name"].as_str().unwrap_or("?").to_string();
        let Some(bs) = s.get("backend_selector") else {
            return Err(format!(
                "manifest service `{name}` has no `backend_selector`: the bundle was compiled by an older weir; recompile it"
            ));
        };
        if bs.is_null() {
            continue;
        }
        let selector: Sel = serde_json::from_value(bs["selector"].clone())
            .map_err(|e| format!("manifest service `{name}`: {e}"))?;
        let port = bs["port"].as_u64().unwrap_or(0) as u16;
        let mut families = BTreeSet::new();
        let mut compiled: BTreeMap<u8, Vec<Be>> = BTreeMap::new();
        for f in s["frontends"].as_array().into_iter().flatten() {
            let fe = f["frontend"].as_str().unwrap_or("");
            let sock = fe.rsplit_once('/').map_or(fe, |(a, _)| a);
            let Some((addr, _)) = parse_socket(sock) else {
                continue;
            };
            let family = fam(addr);
            families.insert(family);
            let bes: Vec<Be> = f["backends"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| {
                    let (addr, port) = parse_socket(b["addr"].as_str()?)?;
                    Some(Be {
                        addr,
                        port,
                        weight: b["weight"].as_u64().unwrap_or(1) as u16,
                    })
                })
                .collect();
            compiled.entry(family).or_insert(bes);
        }
        out.push(SelectorService {
            index: s["index"].as_u64().map_or(i, |x| x as usize),
            name,
            selector,
            port,
            families,
            compiled,
        });
    }
    Ok(out)
}

/// The backends a selector service has over `endpoints` for one family,
/// exactly as the interpreter chooses candidates (ready, matching, sorted).
pub fn backends_for(s: &SelectorService, family: u8, endpoints: &[EndpointRec]) -> Vec<Be> {
    let mut v: Vec<Be> = endpoints
        .iter()
        .filter(|e| e.ready && s.selector.matches(&e.labels))
        .flat_map(|e| {
            e.addrs.iter().filter(|a| fam(**a) == family).map(|a| Be {
                addr: *a,
                port: s.port,
                weight: 1,
            })
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// [`backends_for`] through an [`EndpointIndex`](crate::endpoint_index::EndpointIndex)
/// of `endpoints` (built with `from_labels` over the same slice): the same
/// result without evaluating the selector on every endpoint.
pub fn backends_indexed(
    s: &SelectorService,
    family: u8,
    endpoints: &[EndpointRec],
    index: &crate::endpoint_index::EndpointIndex<'_>,
) -> Vec<Be> {
    let mut v: Vec<Be> = index
        .select(&s.selector)
        .into_iter()
        .map(|i| &endpoints[i as usize])
        .filter(|e| e.ready)
        .flat_map(|e| {
            e.addrs.iter().filter(|a| fam(**a) == family).map(|a| Be {
                addr: *a,
                port: s.port,
                weight: 1,
            })
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The endpoints that differ between `old` and `new` (by name: present in
/// one only, or with other labels, readiness or addresses), each side in
/// its inventory's order. `None` when a name or an address appears twice
/// in either inventory (then only the full comparison is exact).
pub fn changed_endpoints(
    old: &[EndpointRec],
    new: &[EndpointRec],
) -> Option<(Vec<EndpointRec>, Vec<EndpointRec>)> {
    fn unique(eps: &[EndpointRec]) -> bool {
        let mut names = std::collections::HashSet::new();
        let mut addrs = std::collections::HashSet::new();
        eps.iter()
            .all(|e| names.insert(e.name.as_str()) && e.addrs.iter().all(|a| addrs.insert(*a)))
    }
    if !unique(old) || !unique(new) {
        return None;
    }
    let by_name: HashMap<&str, &EndpointRec> = old.iter().map(|e| (e.name.as_str(), e)).collect();
    let same: std::collections::HashSet<&str> = new
        .iter()
        .filter(|e| by_name.get(e.name.as_str()).is_some_and(|o| *o == *e))
        .map(|e| e.name.as_str())
        .collect();
    let pick = |eps: &[EndpointRec]| -> Vec<EndpointRec> {
        eps.iter()
            .filter(|e| !same.contains(e.name.as_str()))
            .cloned()
            .collect()
    };
    Some((pick(old), pick(new)))
}

/// [`plan`] when `old` was accepted before against the same view (every
/// address placed in a compiled class, no name or address twice — the
/// inventory recorded after an update, or the bundle's compiled one):
/// endpoints identical in both inventories keep their addresses and
/// classes, so only the others are placed. Falls back to [`plan`] when a
/// name or address appears twice in either inventory.
pub fn plan_update(view: &ClassView, old: &[EndpointRec], new: &[EndpointRec]) -> Plan {
    match changed_endpoints(old, new) {
        Some((o, n)) => plan(view, &o, &n),
        None => plan(view, old, new),
    }
}

/// One address whose class changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddrChange {
    pub addr: IpAddr,
    /// The endpoint that owns it now (or owned it, for a removal).
    pub endpoint: String,
    /// Class before (`None`: not an endpoint address).
    pub old: Option<ClassId>,
    /// Class after (`None`: no longer an endpoint address).
    pub new: Option<ClassId>,
    /// Class of the address without an endpoint (its set atoms): what
    /// the class map must give after a removal.
    pub base: ClassId,
}

/// What an inventory update changes.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Addresses that appear, disappear or change class (sorted).
    pub changes: Vec<AddrChange>,
    /// Reasons the update cannot be applied without a recompile or is
    /// malformed; when non-empty nothing may be applied.
    pub refused: Vec<String>,
}

/// Compares the applied endpoints with the new inventory.
pub fn plan(view: &ClassView, old: &[EndpointRec], new: &[EndpointRec]) -> Plan {
    let mut refused = Vec::new();
    let index = |eps: &[EndpointRec], refused: &mut Vec<String>, check: bool| {
        let mut m: BTreeMap<IpAddr, (String, ClassId)> = BTreeMap::new();
        let mut names = BTreeSet::new();
        for e in eps {
            if check && !names.insert(e.name.clone()) {
                refused.push(format!("endpoint `{}` appears twice", e.name));
            }
            for &a in &e.addrs {
                let class = match view.place(a, &e.labels) {
                    Placement::Existing(c) => c,
                    Placement::New(sig) => {
                        if check {
                            refused.push(format!(
                                "endpoint `{}` needs a recompile: address {a} with labels {} satisfies a combination of selectors and sets that no compiled class has ({}); classes cannot be added at run time",
                                e.name,
                                serde_json::to_string(&e.labels).unwrap_or_default(),
                                view.describe(&sig)
                            ));
                        }
                        continue;
                    }
                };
                if let Some((other, _)) = m.get(&a) {
                    if check && other != &e.name {
                        refused.push(format!(
                            "address {a} belongs to both `{other}` and `{}`",
                            e.name
                        ));
                    }
                    continue;
                }
                m.insert(a, (e.name.clone(), class));
            }
        }
        m
    };
    let before = index(old, &mut refused, false);
    let after = index(new, &mut refused, true);
    let mut changes = Vec::new();
    let addrs: BTreeSet<IpAddr> = before.keys().chain(after.keys()).copied().collect();
    for a in addrs {
        let (b, n) = (before.get(&a), after.get(&a));
        let (old_c, new_c) = (b.map(|x| x.1), n.map(|x| x.1));
        if old_c == new_c {
            continue;
        }
        changes.push(AddrChange {
            addr: a,
            endpoint: n.or(b).map(|x| x.0.clone()).unwrap_or_default(),
            old: old_c,
            new: new_c,
            base: view.base_class(a),
        });
    }
    Plan { changes, refused }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{manifest, BundleInput};
    use crate::check::check_program;
    use crate::source::MemoryLoader;
    use std::path::PathBuf;

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

    fn manifest_of(src: &str) -> Value {
        let path = PathBuf::from("p.weir");
        let loader = MemoryLoader::new().with(&path, src);
        let c = check_program(std::slice::from_ref(&path), &loader, None);
        assert!(!c.has_errors(), "{:?}", c.diagnostics);
        let g = crate::graph::build(&c.model);
        manifest(&BundleInput {
            model: &c.model,
            graph: &g,
            sources: &[],
            targets: &[],
            locate: &|_| Value::Null,
            backends: BTreeMap::new(),
        })
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
    fn places_replicas_in_existing_classes_and_refuses_new_ones() {
        let m = manifest_of(SRC);
        let view = ClassView::from_manifest(&m).unwrap();
        let old = manifest_endpoints(&m).unwrap();
        assert_eq!(old.len(), 3);
        let web_class = m["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "web")
            .unwrap()["addrs"][0]["class"]
            .as_u64()
            .unwrap() as ClassId;
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
        let svcs = selector_services(&m).unwrap();
        assert_eq!(svcs.len(), 1);
        let s = &svcs[0];
        assert_eq!(s.compiled[&4].len(), 1);
        let old = manifest_endpoints(&m).unwrap();
        assert_eq!(backends_for(s, 4, &old), s.compiled[&4]);
        let mut new = old.clone();
        new.push(ep("web-2", "web", "10.1.0.12"));
        let mut notready = ep("web-3", "web", "10.1.0.13");
        notready.ready = false;
        new.push(notready);
        let b = backends_for(s, 4, &new);
        assert_eq!(b.len(), 2);
        assert!(b.iter().all(|b| b.port == 8080));
    }

    /// Placement by the view equals the compiler's classification for
    /// every endpoint of generated models.
    #[test]
    fn view_agrees_with_compiled_classes() {
        for seed in 0..100 {
            let model = crate::gen::model(seed);
            let g = crate::graph::build(&model);
            let m = manifest(&BundleInput {
                model: &model,
                graph: &g,
                sources: &[],
                targets: &[],
                locate: &|_| Value::Null,
                backends: BTreeMap::new(),
            });
            let view = ClassView::from_manifest(&m).unwrap();
            for (e, per) in model.endpoints.iter().zip(&g.classes.endpoint_classes) {
                for &(a, c) in per {
                    assert_eq!(
                        view.place(a, &e.labels),
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
}
