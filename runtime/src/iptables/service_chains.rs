//! A service's backends changed by `weir endpoints` (or the agent): its
//! frontends' nat chains rewritten in place, without a new generation.
//!
//! The backends of a selector-backed service are computed by the churn
//! path that eBPF uses ([`weir_compiler::churn`]: the interpreter's rule
//! over the inventory); here they become the chains the compiler would
//! have emitted for them ([`weir_compiler::iptables::frontend_chain`],
//! the one statement of the layout), written in one `iptables-restore
//! --noflush` transaction per family, read back with `iptables-save`,
//! and recorded in `applied.json` so `weir status` and the next update
//! compare the kernel with what is now in force.
//!
//! **What is found where.** The frontends of a service group are the
//! nat dispatch rules of the generation in force that go to
//! `WEIR<g>-FE<k>` with the service's comment (`weir:svc<S>`) and, for a
//! named target port, the group's protocol. Each frontend's current
//! backends and their slots are read from its chains as applied, and the
//! chains are accepted for an in-place rewrite only when regenerating
//! them from those backends gives back exactly the rules in force: any
//! other layout (a redirect that can match the frontend puts a policy
//! check before each DNAT) is refused, never guessed.
//!
//! **Refused, with the reason** (the caller falls back to the full path,
//! `weir compile` + `weir apply`, and says so): a frontend compiled with
//! no backends (it rejects in filter, and has no nat chain), a change to
//! no backends (the reject is a filter rule the generation does not
//! have), Maglev over two or more backends (iptables cannot hash flows;
//! the compiler refuses it, E0501), a backend needing an affinity chain
//! the generation does not have (affinity: one chain per backend slot,
//! created at apply), chains not in the plain layout, no record of the
//! applied rules.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use weir_compiler::contract::BackendGroup;
use weir_compiler::ebpf::service::fill::Be;
use weir_compiler::iptables::frontend_chain::{self, FrontendSpec, Slot};
use weir_compiler::iptables::Family as GenFamily;
use weir_compiler::model::Proto;

use super::readback::{self, Expected};
use super::records::Applied;
use super::restore::TableBlock;
use super::{names, Iptables, State};
use crate::bundle::Family;
use crate::error::Error;

/// One service group's backends after an endpoint update.
#[derive(Debug, Clone)]
pub struct BackendChange {
    /// The service's index (manifest, `weir:svc<S>`).
    pub service: usize,
    pub name: String,
    pub group: BackendGroup,
    /// Maglev-balanced (`None`: unknown, refused).
    pub maglev: Option<bool>,
    /// The backends it has now (sorted, weight 1).
    pub want: Vec<Be>,
}

/// The chains of one frontend to write.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FrontendRewrite {
    /// Chains declared (flushed) by the transaction, kernel names: the
    /// frontend chain, the backend chains used, and those left empty.
    declare: Vec<String>,
    /// `-A` lines, kernel names.
    lines: Vec<String>,
}

/// What one change needs: nothing (the chains in force already hold
/// these backends) or the rewrites of its frontends' chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    family: Family,
    frontends: Vec<FrontendRewrite>,
}

impl Planned {
    /// Nothing to write.
    pub fn is_noop(&self) -> bool {
        self.frontends.is_empty()
    }
}

fn family_of(group: &BackendGroup) -> (Family, GenFamily) {
    if group.family == 4 {
        (Family::Ipv4, GenFamily::V4)
    } else {
        (Family::Ipv6, GenFamily::V6)
    }
}

fn proto_of(name: &str) -> Option<Proto> {
    match name {
        "tcp" => Some(Proto::Tcp),
        "udp" => Some(Proto::Udp),
        "sctp" => Some(Proto::Sctp),
        _ => None,
    }
}

/// The word after `flag` in a rule.
fn after<'a>(words: &'a [&'a str], flag: &str) -> Option<&'a str> {
    words
        .iter()
        .position(|w| *w == flag)
        .and_then(|i| words.get(i + 1).copied())
}

/// `ADDR:PORT` / `[ADDR]:PORT` of a DNAT target.
fn socket(s: &str) -> Option<(IpAddr, u16)> {
    s.parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| (a.ip(), a.port()))
}

/// Plans a change against the rules in force (`applied`, generation
/// `g`): pure, no kernel access. `Err` says why it cannot be made in
/// place.
pub fn plan(applied: &Applied, g: u32, c: &BackendChange) -> Result<Planned, String> {
    let (family, fam) = family_of(&c.group);
    match c.maglev {
        None => return Err("the endpoints record does not say how the service balances (written by an older weir): apply the bundle again".into()),
        Some(true) if c.want.len() >= 2 => {
            return Err("Maglev over two or more backends: iptables cannot hash flows (E0501 at compile)".into())
        }
        Some(_) => {}
    }
    if c.want.is_empty() {
        return Err("no backend left: its frontends must reject new connections, a filter rule this generation does not have".into());
    }
    let block = applied
        .blocks
        .get(&family)
        .and_then(|bs| bs.iter().find(|b| b.table == "nat"))
        .ok_or("the generation has no nat chains for it (compiled with no backends)")?;
    let chains = chain_rules(block);
    let svc_comment = format!("\"weir:svc{}\"", c.service);
    let fe_prefix = names::generation_chain("WEIR-FE", g);
    let fe_prefix = fe_prefix.as_str();
    // The frontends: dispatch rules to a frontend chain with the
    // service's comment (and the group's protocol).
    let mut frontends: BTreeMap<usize, Proto> = BTreeMap::new();
    for r in &block.rules {
        let w: Vec<&str> = r.split_whitespace().collect();
        let Some(k) = after(&w, "-g")
            .and_then(|t| t.strip_prefix(fe_prefix))
            .and_then(|k| k.parse::<usize>().ok())
        else {
            continue;
        };
        if after(&w, "--comment") != Some(svc_comment.as_str()) {
            continue;
        }
        let Some(proto) = after(&w, "-p").and_then(proto_of) else {
            return Err(format!(
                "frontend chain {fe_prefix}{k}: dispatch rule without a known protocol"
            ));
        };
        let number =
            weir_compiler::contract::backend_group::proto_number(after(&w, "-p").unwrap_or(""));
        if c.group.proto.is_some() && c.group.proto != number {
            continue;
        }
        frontends.insert(k, proto);
    }
    if frontends.is_empty() {
        return Err("its frontends have no nat chain in this generation (compiled with no backends: they reject in filter)".into());
    }
    let mut out = Vec::new();
    for (&k, &proto) in &frontends {
        if let Some(rw) = plan_frontend(&chains, g, c, fam, k, proto)? {
            out.push(rw);
        }
    }
    Ok(Planned {
        family,
        frontends: out,
    })
}

/// The rules of each chain of a block, in order.
fn chain_rules(block: &TableBlock) -> BTreeMap<&str, Vec<&str>> {
    let mut out: BTreeMap<&str, Vec<&str>> = block
        .chains
        .iter()
        .map(|c| (c.as_str(), Vec::new()))
        .collect();
    for r in &block.rules {
        if let Some(chain) = r.strip_prefix("-A ").and_then(|x| x.split(' ').next()) {
            out.entry(chain).or_default().push(r.as_str());
        }
    }
    out
}

/// `frontend_chain::rule_lines` with kernel names.
fn kernel_lines(spec: &FrontendSpec, slots: &[Slot], g: u32) -> Vec<(String, Vec<String>)> {
    frontend_chain::rule_lines(spec, slots)
        .into_iter()
        .map(|(chain, lines)| {
            (
                names::generation_chain(&chain, g),
                lines.iter().map(|l| names::rewrite_line(l, g)).collect(),
            )
        })
        .collect()
}

fn not_plain(fe: &str) -> String {
    format!("the chains of frontend {fe} are not the plain backend layout (a redirect steering rule that can match the frontend checks policy before each DNAT)")
}

fn plan_frontend(
    chains: &BTreeMap<&str, Vec<&str>>,
    g: u32,
    c: &BackendChange,
    fam: GenFamily,
    k: usize,
    proto: Proto,
) -> Result<Option<FrontendRewrite>, String> {
    let fe = names::generation_chain(&frontend_chain::frontend_chain(k), g);
    let rules = chains
        .get(fe.as_str())
        .ok_or_else(|| format!("chain {fe} is not in the applied record"))?;
    // Affinity: `--rcheck --seconds N` rules come first.
    let affinity = rules.iter().find_map(|r| {
        let w: Vec<&str> = r.split_whitespace().collect();
        w.contains(&"--rcheck")
            .then(|| after(&w, "--seconds").and_then(|s| s.parse::<u32>().ok()))
            .flatten()
    });
    let spec = FrontendSpec {
        k,
        service: c.service,
        fam,
        proto,
        affinity,
    };
    let be_prefix = names::generation_chain(&format!("WEIR-BE{k}-"), g);
    // The backends in force, in the frontend chain's order, with their
    // slots: a DNAT in the frontend chain (slot = position), or a goto
    // to a backend chain whose last rule DNATs.
    let mut have: Vec<Slot> = Vec::new();
    for r in rules {
        let w: Vec<&str> = r.split_whitespace().collect();
        if w.contains(&"--rcheck") {
            continue;
        }
        let (slot, target) = if let Some(t) = after(&w, "--to-destination") {
            (have.len(), t.to_string())
        } else if let Some(be) = after(&w, "-g").and_then(|t| t.strip_prefix(&be_prefix)) {
            let slot: usize = be
                .parse()
                .map_err(|_| format!("{fe}: unknown goto `{r}`"))?;
            let chain = format!("{be_prefix}{slot}");
            let last = chains
                .get(chain.as_str())
                .and_then(|v| v.last())
                .ok_or_else(|| format!("{fe}: backend chain {chain} is empty"))?;
            let lw: Vec<&str> = last.split_whitespace().collect();
            let t = after(&lw, "--to-destination").ok_or_else(|| format!("{chain}: no DNAT"))?;
            (slot, t.to_string())
        } else {
            return Err(format!("{}: `{r}`", not_plain(&fe)));
        };
        let (addr, port) = socket(&target).ok_or_else(|| format!("{fe}: DNAT target {target}"))?;
        have.push(Slot {
            slot,
            addr,
            port,
            weight: 1,
        });
    }
    // Exactly the plain layout for those backends, or refused.
    let current = kernel_lines(&spec, &have, g);
    for (chain, lines) in &current {
        let applied: Vec<&str> = chains.get(chain.as_str()).cloned().unwrap_or_default();
        if applied != lines.iter().map(String::as_str).collect::<Vec<_>>() {
            return Err(not_plain(&fe));
        }
    }
    let want: Vec<(IpAddr, u16)> = c.want.iter().map(|b| (b.addr, b.port)).collect();
    let have_set: Vec<(IpAddr, u16)> = have.iter().map(|s| (s.addr, s.port)).collect();
    let same: BTreeSet<_> = have_set.iter().collect();
    if want.len() == have_set.len() && want.iter().all(|w| same.contains(w)) {
        return Ok(None);
    }
    // Slots: a remaining backend keeps its own; a new one takes the
    // lowest free slot. Backend chains exist for the slots the
    // generation was applied with (affinity only).
    let existing: BTreeSet<usize> = chains
        .keys()
        .filter_map(|ch| ch.strip_prefix(&be_prefix))
        .filter_map(|s| s.parse().ok())
        .collect();
    let kept: BTreeMap<(IpAddr, u16), usize> =
        have.iter().map(|s| ((s.addr, s.port), s.slot)).collect();
    let mut used: BTreeSet<usize> = want.iter().filter_map(|w| kept.get(w).copied()).collect();
    let mut slots = Vec::new();
    for &(addr, port) in &want {
        let slot = match kept.get(&(addr, port)) {
            Some(&s) => s,
            None => {
                let s = (0..).find(|s| !used.contains(s)).expect("a free slot");
                used.insert(s);
                s
            }
        };
        if affinity.is_some() && !existing.contains(&slot) {
            return Err(format!(
                "{} backends need more affinity chains than the {} this generation has (one per backend slot, made at apply)",
                want.len(),
                existing.len()
            ));
        }
        slots.push(Slot {
            slot,
            addr,
            port,
            weight: 1,
        });
    }
    let new = kernel_lines(&spec, &slots, g);
    let mut declare = vec![fe.clone()];
    declare.extend(existing.iter().map(|s| format!("{be_prefix}{s}")));
    Ok(Some(FrontendRewrite {
        declare,
        lines: new.into_iter().flat_map(|(_, l)| l).collect(),
    }))
}

impl Iptables {
    /// Writes planned rewrites (one transaction per family), reads the
    /// chains back, and records them in `applied.json`. Caller holds the
    /// lock.
    pub(crate) fn rewrite_service_chains(
        &self,
        state: &State,
        planned: &[Planned],
    ) -> Result<usize, Error> {
        let mut applied = self
            .read_applied(state.generation)
            .ok_or_else(|| Error::State {
                path: self.opts.state_dir.join(super::records::APPLIED),
                message: "no record of the applied rules of the generation in force".into(),
            })?;
        let mut writes = 0;
        for family in [Family::Ipv4, Family::Ipv6] {
            let fes: Vec<&FrontendRewrite> = planned
                .iter()
                .filter(|p| p.family == family)
                .flat_map(|p| &p.frontends)
                .collect();
            if fes.is_empty() {
                continue;
            }
            let declare: Vec<String> = fes.iter().flat_map(|f| f.declare.clone()).collect();
            let lines: Vec<String> = fes.iter().flat_map(|f| f.lines.clone()).collect();
            let text = super::table_text("nat", &declare, &lines);
            self.restore("rewriting service backend chains", family, &text)?;
            writes += lines.len();
            let block = TableBlock {
                table: "nat".into(),
                chains: declare.clone(),
                rules: lines.clone(),
            };
            let saved = self.save_all()?;
            let want = Expected {
                blocks: vec![block],
                hooks: BTreeMap::new(),
            };
            if let Some(d) = readback::compare_family(family, &want, &saved) {
                return Err(Error::Step {
                    step: "reading back service chains rewritten in place".into(),
                    program: self.rules_reader(family),
                    stderr: d,
                });
            }
            record(&mut applied, family, &declare, lines);
            self.write_applied(&applied)?;
        }
        Ok(writes)
    }
}

/// The rewritten chains' rules replace theirs in the applied record.
fn record(applied: &mut Applied, family: Family, declare: &[String], lines: Vec<String>) {
    let touched: BTreeSet<&str> = declare.iter().map(String::as_str).collect();
    let Some(block) = applied
        .blocks
        .get_mut(&family)
        .and_then(|bs| bs.iter_mut().find(|b| b.table == "nat"))
    else {
        return;
    };
    block.rules.retain(|r| {
        r.strip_prefix("-A ")
            .and_then(|x| x.split(' ').next())
            .is_none_or(|c| !touched.contains(c))
    });
    block.rules.extend(lines);
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u32 = 3;

    fn be(a: &str) -> Be {
        Be {
            addr: a.parse().unwrap(),
            port: 8080,
            weight: 1,
        }
    }

    fn slot(s: usize, a: &str) -> Slot {
        Slot {
            slot: s,
            addr: a.parse().unwrap(),
            port: 8080,
            weight: 1,
        }
    }

    fn spec(affinity: Option<u32>) -> FrontendSpec {
        FrontendSpec {
            k: 0,
            service: 0,
            fam: GenFamily::V4,
            proto: Proto::Tcp,
            affinity,
        }
    }

    /// A generation with frontend 0 of service 0 over `slots`, as the
    /// generator and the runtime's rename make it.
    fn applied(affinity: Option<u32>, slots: &[Slot]) -> Applied {
        let chains = kernel_lines(&spec(affinity), slots, G);
        let mut block = TableBlock {
            table: "nat".into(),
            chains: vec!["WEIR3-NAT-PRE".into(), "WEIR3-SVC1".into()],
            rules: vec![
                "-A WEIR3-SVC1 -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -m comment --comment \"weir:svc0\" -g WEIR3-FE0".into(),
            ],
        };
        for (c, lines) in chains {
            block.chains.push(c);
            block.rules.extend(lines);
        }
        Applied {
            generation: G,
            blocks: [(Family::Ipv4, vec![block])].into(),
            ipset: String::new(),
        }
    }

    fn change(want: &[&str], maglev: bool) -> BackendChange {
        BackendChange {
            service: 0,
            name: "web".into(),
            group: BackendGroup {
                family: 4,
                proto: None,
            },
            maglev: Some(maglev),
            want: want.iter().map(|a| be(a)).collect(),
        }
    }

    #[test]
    fn a_removed_backend_rewrites_the_frontend_chain() {
        let a = applied(None, &[slot(0, "10.3.0.1"), slot(1, "10.3.0.2")]);
        let p = plan(&a, G, &change(&["10.3.0.1"], false)).unwrap();
        assert_eq!(p.frontends.len(), 1);
        assert_eq!(
            p.frontends[0].lines,
            vec!["-A WEIR3-FE0 -p tcp -m comment --comment \"weir:svc0\" -j DNAT --to-destination 10.3.0.1:8080"]
        );
        assert!(plan(&a, G, &change(&["10.3.0.1", "10.3.0.2"], false))
            .unwrap()
            .is_noop());
    }

    #[test]
    fn refusals_say_why() {
        let a = applied(None, &[slot(0, "10.3.0.1"), slot(1, "10.3.0.2")]);
        let e = plan(&a, G, &change(&[], false)).unwrap_err();
        assert!(e.contains("no backend left"), "{e}");
        let e = plan(&a, G, &change(&["10.3.0.1", "10.3.0.3"], true)).unwrap_err();
        assert!(e.contains("Maglev"), "{e}");
        // A check before a DNAT (redirect over the frontend): not the
        // plain layout.
        let mut odd = a.clone();
        let block = &mut odd.blocks.get_mut(&Family::Ipv4).unwrap()[0];
        block.rules.insert(1, "-A WEIR3-FE0 -j WEIR3-S0-1".into());
        let e = plan(&odd, G, &change(&["10.3.0.1"], false)).unwrap_err();
        assert!(e.contains("plain"), "{e}");
        // Another service's frontend: nothing of ours.
        let mut other = change(&["10.3.0.1"], false);
        other.service = 1;
        assert!(plan(&a, G, &other).unwrap_err().contains("no nat chain"));
    }

    #[test]
    fn affinity_backends_keep_their_slots() {
        let a = applied(Some(600), &[slot(0, "10.3.0.1"), slot(1, "10.3.0.2")]);
        // .1 goes, .3 comes: .2 keeps slot 1, .3 takes slot 0.
        let p = plan(&a, G, &change(&["10.3.0.2", "10.3.0.3"], false)).unwrap();
        let want: Vec<String> = kernel_lines(
            &spec(Some(600)),
            &[slot(1, "10.3.0.2"), slot(0, "10.3.0.3")],
            G,
        )
        .into_iter()
        .flat_map(|(_, l)| l)
        .collect();
        assert_eq!(p.frontends[0].lines, want);
        assert!(want
            .iter()
            .any(|l| l.contains("weir3-af0-1") && l.contains("WEIR3-BE0-1")));
        // A third backend needs a third chain.
        let e = plan(&a, G, &change(&["10.3.0.1", "10.3.0.2", "10.3.0.3"], false)).unwrap_err();
        assert!(e.contains("affinity chains"), "{e}");
    }
}
