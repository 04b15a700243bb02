//! Reading `iptables-restore` text (the bundle's, checked so that it only
//! touches our chains) and `iptables-save` output (what the kernel has).

use std::collections::BTreeMap;

use super::names::{self, CHAIN_PREFIX};

/// The tables the back end may use.
pub const TABLES: &[&str] = &["raw", "mangle", "nat", "filter", "security"];

/// One `*table … COMMIT` block of the bundle, rewritten for a generation.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableBlock {
    pub table: String,
    /// Declared chains (`:NAME - [0:0]`).
    pub chains: Vec<String>,
    /// Rule lines (`-A NAME …`).
    pub rules: Vec<String>,
}

/// Parses a bundle's restore text, refusing anything that would touch a
/// chain that is not ours (built-in chains, policies, flushes of other
/// chains), and rewrites names for generation `g`. Tables are returned in
/// the order first seen; repeated blocks of one table are merged.
pub fn parse_bundle_rules(text: &str, g: u32) -> Result<Vec<TableBlock>, String> {
    let mut blocks: Vec<TableBlock> = Vec::new();
    let mut current: Option<usize> = None;
    for (n, raw) in text.lines().enumerate() {
        let n = n + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(table) = line.strip_prefix('*') {
            if current.is_some() {
                return Err(format!(
                    "line {n}: `*{table}` before COMMIT of the previous table"
                ));
            }
            let table = table.trim();
            if !TABLES.contains(&table) {
                return Err(format!("line {n}: unknown table `{table}`"));
            }
            current = Some(match blocks.iter().position(|b| b.table == table) {
                Some(i) => i,
                None => {
                    blocks.push(TableBlock {
                        table: table.to_string(),
                        ..TableBlock::default()
                    });
                    blocks.len() - 1
                }
            });
            continue;
        }
        let Some(idx) = current else {
            return Err(format!("line {n}: `{line}` outside a `*table` block"));
        };
        if line == "COMMIT" {
            current = None;
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            let mut parts = decl.split_whitespace();
            let chain = parts.next().unwrap_or("");
            let policy = parts.next().unwrap_or("-");
            check_ours(chain, n)?;
            if policy != "-" {
                return Err(format!("line {n}: chain `{chain}` declared with policy `{policy}` (only built-in chains have policies)"));
            }
            let chain = names::generation_chain(chain, g);
            check_len(&chain, n)?;
            blocks[idx].chains.push(chain);
            continue;
        }
        let mut parts = line.split_whitespace();
        let cmd = parts.next().unwrap_or("");
        let chain = parts.next().unwrap_or("");
        match cmd {
            "-A" | "--append" | "-I" | "--insert" => check_ours(chain, n)?,
            _ => {
                return Err(format!(
                    "line {n}: `{cmd}` is not allowed in a bundle (only `-A`/`-I` on WEIR- chains)"
                ))
            }
        }
        blocks[idx].rules.push(names::rewrite_line(line, g));
    }
    if let Some(idx) = current {
        return Err(format!("table `{}` lacks COMMIT", blocks[idx].table));
    }
    Ok(blocks)
}

fn check_ours(chain: &str, n: usize) -> Result<(), String> {
    if chain.starts_with(CHAIN_PREFIX) && !names::is_hook_chain(chain) {
        Ok(())
    } else {
        Err(format!(
            "line {n}: chain `{chain}` is not a bundle chain (bundle chains start with `{CHAIN_PREFIX}`, and `{}` is the runtime's)",
            names::HOOK_PREFIX
        ))
    }
}

fn check_len(chain: &str, n: usize) -> Result<(), String> {
    if chain.len() > names::MAX_CHAIN_LEN {
        Err(format!(
            "line {n}: chain name `{chain}` is longer than {} characters",
            names::MAX_CHAIN_LEN
        ))
    } else {
        Ok(())
    }
}

/// One table of `iptables-save` output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedTable {
    /// Every chain, built-in or not, in order.
    pub chains: Vec<String>,
    /// Rule lines, without counters.
    pub rules: Vec<String>,
}

impl SavedTable {
    /// How many rules of `builtin` are exactly `-j target`.
    pub fn jumps(&self, builtin: &str, target: &str) -> usize {
        let want = format!("-A {builtin} -j {target}");
        self.rules.iter().filter(|r| **r == want).count()
    }

    /// Chains the runtime made (hook and generation chains).
    pub fn our_chains(&self) -> Vec<String> {
        self.chains
            .iter()
            .filter(|c| names::is_our_chain(c))
            .cloned()
            .collect()
    }

    /// `(builtin, hook chain)` for every jump from a chain we did not make
    /// into one of our hook chains.
    pub fn hook_jumps(&self) -> Vec<(String, String)> {
        self.rules
            .iter()
            .filter_map(|r| {
                let t: Vec<&str> = r.split_whitespace().collect();
                match t.as_slice() {
                    ["-A", from, "-j", to]
                        if names::is_hook_chain(to) && !names::is_our_chain(from) =>
                    {
                        Some((from.to_string(), to.to_string()))
                    }
                    _ => None,
                }
            })
            .collect()
    }
}

/// Parses `iptables-save` output into tables. Counters are dropped.
pub fn parse_save(text: &str) -> BTreeMap<String, SavedTable> {
    let mut tables = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(t) = line.strip_prefix('*') {
            current = Some(t.to_string());
            tables
                .entry(t.to_string())
                .or_insert_with(SavedTable::default);
        } else if line == "COMMIT" {
            current = None;
        } else if let Some(table) = current.as_ref().and_then(|t| tables.get_mut(t)) {
            let table: &mut SavedTable = table;
            if let Some(decl) = line.strip_prefix(':') {
                if let Some(c) = decl.split_whitespace().next() {
                    table.chains.push(c.to_string());
                }
            } else {
                // `iptables-save -c` puts "[p:b]" first; we never ask for it,
                // but strip it anyway.
                let rule = if line.starts_with('[') {
                    line.split_once(' ').map(|x| x.1).unwrap_or(line)
                } else {
                    line
                };
                table.rules.push(rule.to_string());
            }
        }
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_rules_are_checked_and_rewritten() {
        let text = "*filter\n:WEIR-FORWARD - [0:0]\n-A WEIR-FORWARD -m set --match-set weir-a src -j ACCEPT\nCOMMIT\n";
        let b = parse_bundle_rules(text, 4).unwrap();
        assert_eq!(b[0].chains, vec!["WEIR4-FORWARD"]);
        assert_eq!(
            b[0].rules,
            vec!["-A WEIR4-FORWARD -m set --match-set weir4-a src -j ACCEPT"]
        );
        for bad in [
            "*filter\n:FORWARD DROP [0:0]\nCOMMIT\n",
            "*filter\n-A FORWARD -j ACCEPT\nCOMMIT\n",
            "*filter\n-F\nCOMMIT\n",
            "*filter\n:WEIR-HOOK-FORWARD - [0:0]\nCOMMIT\n",
            "*filter\n:WEIR-X - [0:0]\n",
            "*bogus\nCOMMIT\n",
        ] {
            assert!(parse_bundle_rules(bad, 1).is_err(), "{bad}");
        }
    }

    #[test]
    fn save_output() {
        let text = "# x\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [3:4]\n:WEIR-HOOK-FORWARD - [0:0]\n:WEIR2-F - [0:0]\n-A FORWARD -j WEIR-HOOK-FORWARD\n-A WEIR-HOOK-FORWARD -j WEIR2-F\nCOMMIT\n";
        let t = parse_save(text);
        let f = &t["filter"];
        assert_eq!(f.jumps("FORWARD", "WEIR-HOOK-FORWARD"), 1);
        assert_eq!(f.our_chains(), vec!["WEIR-HOOK-FORWARD", "WEIR2-F"]);
        assert_eq!(
            f.hook_jumps(),
            vec![("FORWARD".to_string(), "WEIR-HOOK-FORWARD".to_string())]
        );
    }
}
