//! Per-rule counters of the iptables generation in force, for `weir
//! stats --backend iptables`: `iptables-save -c` / `ip6tables-save -c`
//! read back, each rule's packet count summed under the provenance id its
//! comment names — `weir:<id>` for enforced decisions (and log rules),
//! `weir:audit:<id>` for audit decisions (the chains of
//! compiler/src/iptables/audit.rs), kept apart; rate-limited event rules
//! carry no comment and are not counters — and named from the
//! manifest of the applied bundle. Only chains the state record of the
//! generation in force lists count (its own `WEIR<g>-…` chains and those
//! kept from earlier generations, [`super::keep`]).

use std::collections::BTreeMap;

use super::{exec, Iptables, FAMILIES};
use crate::counters::RuleCount;
use crate::error::Error;

/// Enforced and audit counters, by provenance id (every id of the
/// manifest, zero included).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats {
    pub rules: Vec<RuleCount>,
    pub audit: Vec<RuleCount>,
}

/// Packet counts per id from `iptables-save -c` text: (enforced, audit),
/// for the chains `ours` accepts.
pub fn count_save(
    text: &str,
    ours: &dyn Fn(&str) -> bool,
) -> (BTreeMap<u32, u64>, BTreeMap<u32, u64>) {
    let mut enforced = BTreeMap::new();
    let mut audit = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let Some((counts, rule)) = rest.split_once("] ") else {
            continue;
        };
        let Some(packets) = counts.split(':').next().and_then(|p| p.parse::<u64>().ok()) else {
            continue;
        };
        let mut words = rule.split_whitespace();
        let chain = match (words.next(), words.next()) {
            (Some("-A"), Some(c)) => c,
            _ => continue,
        };
        if !ours(chain) {
            continue;
        }
        let Some(at) = rule.find("--comment \"weir:") else {
            continue;
        };
        let c = &rule[at + "--comment \"weir:".len()..];
        let c = c.split('"').next().unwrap_or_default();
        let (map, id) = match c.strip_prefix("audit:") {
            Some(id) => (&mut audit, id),
            None => (&mut enforced, c),
        };
        if let Ok(id) = id.parse::<u32>() {
            *map.entry(id).or_insert(0) += packets;
        }
    }
    (enforced, audit)
}

impl Iptables {
    /// The manifest of the generation in force (`weir monitor` resolves
    /// its events' provenance ids and addresses through it).
    pub fn applied_manifest(&self) -> Result<std::path::PathBuf, Error> {
        self.in_force().map(|(_, manifest)| manifest)
    }

    /// The state of the generation in force and its manifest's path.
    fn in_force(&self) -> Result<(super::State, std::path::PathBuf), Error> {
        let state = self.read_state()?.ok_or_else(|| Error::State {
            path: self.state_path(),
            message: "nothing is applied here".into(),
        })?;
        let manifest = std::path::Path::new(&state.bundle_dir).join(crate::bundle::MANIFEST);
        Ok((state, manifest))
    }

    /// The counters of the generation in force.
    pub fn stats(&self) -> Result<Stats, Error> {
        exec::require_root()?;
        let _lock = self.lock()?;
        let (state, manifest) = self.in_force()?;
        let text = std::fs::read(&manifest)
            .map_err(|e| Error::io(format!("reading {}", manifest.display()), e))?;
        let full = weir_compiler::contract::parse(&text)
            .map_err(|e| Error::bundle(&manifest, e.to_string()))?;
        let mut enforced = BTreeMap::new();
        let mut audit = BTreeMap::new();
        for family in FAMILIES {
            let chains: std::collections::HashSet<&str> = state
                .chains
                .iter()
                .filter(|c| c.family == family)
                .map(|c| c.chain.as_str())
                .collect();
            let program = self.opts.variant.save(family);
            let out = self.exec.run_ok(
                &format!("reading counters ({program} -c)"),
                &program,
                &["-c"],
                None,
            )?;
            let (e, a) = count_save(&out.stdout, &|c| chains.contains(c));
            for (m, from) in [(&mut enforced, e), (&mut audit, a)] {
                for (id, n) in from {
                    *m.entry(id).or_insert(0u64) += n;
                }
            }
        }
        let named = |counts: &BTreeMap<u32, u64>| -> Vec<RuleCount> {
            full.provenance
                .iter()
                .enumerate()
                .map(|(i, p)| RuleCount {
                    id: i as u32,
                    kind: p.kind.name().to_string(),
                    description: p.description.clone(),
                    packets: counts.get(&(i as u32)).copied().unwrap_or(0),
                })
                .collect()
        };
        Ok(Stats {
            rules: named(&enforced),
            audit: named(&audit),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_and_enforced_counters_are_kept_apart() {
        let save = "\
*filter
:WEIR3-FWD - [0:0]
[7:420] -A WEIR3-FWD -m conntrack --ctstate ESTABLISHED,RELATED -m comment --comment \"weir:0\" -j ACCEPT
[2:120] -A WEIR3-A4 -m comment --comment \"weir:audit:9\" -j RETURN
[3:180] -A WEIR3-A8 -m comment --comment \"weir:audit:9\" -j RETURN
[5:300] -A WEIR3-F4 -m comment --comment \"weir:9\" -j RETURN
[2:120] -A WEIR3-F5 -m comment --comment \"weir:ev:9\" -m limit --limit 100/sec --limit-burst 200 -j NFLOG --nflog-prefix \"weir:9:D \" --nflog-group 100
[1:60] -A WEIR3-F1 -m comment --comment \"weir:n1\" -g WEIR3-F2
[2:120] -A WEIR3-F6 -m limit --limit 100/sec --limit-burst 200 -j NFLOG --nflog-prefix \"weir:9:D \" --nflog-group 100
[1:60] -A WEIR3-F1 -m set --match-set weir3-s1 src -g WEIR3-F2
[4:240] -A WEIR2-F4 -m comment --comment \"weir:9\" -j RETURN
[0:0] -A FORWARD -j WEIR-HOOK-FORWARD
COMMIT
";
        let (e, a) = count_save(save, &|c| c.starts_with("WEIR3-"));
        assert_eq!(e, BTreeMap::from([(0, 7), (9, 5)]));
        assert_eq!(a, BTreeMap::from([(9, 5)]));
    }
}
