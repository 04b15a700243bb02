//! `weir test --snapshot DIR [--update]`: keep the text artifacts of each
//! compiled program under `DIR/<program>/` and fail when they change
//! (docs/ci.md, "Snapshots of your compiled policy").

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use weir_compiler::bundle::{self, Target};

/// The artifacts kept as snapshots: text only, the manifest's source hash
/// left out (the listing and the report cover the binary object), and a
/// refusing back end's refusal ([`refused_file`]).
pub const SNAPSHOT_FILES: [&str; 8] = [
    bundle::GRAPH_TXT,
    bundle::IPTABLES_RULES,
    bundle::IP6TABLES_RULES,
    bundle::IPSET_RULES,
    bundle::WEIR_ASM,
    "capacity.json",
    "refused-ebpf.txt",
    "refused-iptables.txt",
];

/// The snapshot file that records what a back end refuses in a program.
pub fn refused_file(target: Target) -> String {
    format!("refused-{}.txt", target.name())
}

/// The snapshot directory of a program: `DIR/<path without .weir>`.
pub fn program_dir(dir: &Path, root: &Path) -> PathBuf {
    let rel: PathBuf = root
        .with_extension("")
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect();
    dir.join(rel)
}

/// A tiny line diff: the differing region with a few lines of context.
fn diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let pre = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let post = a[pre..]
        .iter()
        .rev()
        .zip(b[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let mut out = String::new();
    let from = pre.saturating_sub(2);
    out.push_str(&format!("@@ line {} @@\n", pre + 1));
    for l in &a[from..pre] {
        out.push_str(&format!("  {l}\n"));
    }
    for l in &a[pre..a.len() - post] {
        out.push_str(&format!("- {l}\n"));
    }
    for l in &b[pre..b.len() - post] {
        out.push_str(&format!("+ {l}\n"));
    }
    for l in b[b.len() - post..].iter().take(2) {
        out.push_str(&format!("  {l}\n"));
    }
    out
}

/// Compare (or with `update`, write) one program's artifacts. Returns the
/// number of problems (0 = matches).
pub fn check_program(
    out: &mut impl Write,
    dir: &Path,
    root: &Path,
    artifacts: &BTreeMap<String, Vec<u8>>,
    update: bool,
) -> std::io::Result<usize> {
    let pdir = program_dir(dir, root);
    let mut problems = 0;
    if update {
        std::fs::create_dir_all(&pdir)?;
    }
    for name in SNAPSHOT_FILES {
        let path = pdir.join(name);
        let want = artifacts.get(name);
        let have = std::fs::read(&path).ok();
        match (want, have) {
            (Some(w), Some(h)) if *w == h => {}
            (Some(w), h) if update => {
                std::fs::write(&path, w)?;
                let what = if h.is_some() { "updated" } else { "created" };
                writeln!(out, "{what} {}", path.display())?;
            }
            (None, Some(_)) if update => {
                std::fs::remove_file(&path)?;
                writeln!(out, "removed {}", path.display())?;
            }
            (Some(_), None) => {
                problems += 1;
                writeln!(
                    out,
                    "FAIL {}: no snapshot; run with --update",
                    path.display()
                )?;
            }
            (None, Some(_)) => {
                problems += 1;
                writeln!(
                    out,
                    "FAIL {}: the compiler no longer produces this artifact",
                    path.display()
                )?;
            }
            (Some(w), Some(h)) => {
                problems += 1;
                writeln!(out, "FAIL {}: compiled output changed", path.display())?;
                let d = diff(&String::from_utf8_lossy(&h), &String::from_utf8_lossy(w));
                for line in d.lines() {
                    writeln!(out, "     {line}")?;
                }
            }
            (None, None) => {}
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_the_changed_lines() {
        let d = diff("a\nb\nc\nd\n", "a\nb\nX\nd\n");
        assert!(d.contains("- c") && d.contains("+ X"), "{d}");
    }

    #[test]
    fn update_then_compare() {
        let dir = std::env::temp_dir().join(format!("weir-snap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut files = BTreeMap::new();
        files.insert(bundle::GRAPH_TXT.to_string(), b"one\n".to_vec());
        let root = Path::new("policies/app.weir");
        let mut sink = Vec::new();
        assert_eq!(
            check_program(&mut sink, &dir, root, &files, false).unwrap(),
            1
        );
        assert_eq!(
            check_program(&mut sink, &dir, root, &files, true).unwrap(),
            0
        );
        assert!(dir.join("policies/app/graph.txt").exists());
        assert_eq!(
            check_program(&mut sink, &dir, root, &files, false).unwrap(),
            0
        );
        files.insert(bundle::GRAPH_TXT.to_string(), b"two\n".to_vec());
        assert_eq!(
            check_program(&mut sink, &dir, root, &files, false).unwrap(),
            1
        );
        files.clear();
        assert_eq!(
            check_program(&mut sink, &dir, root, &files, false).unwrap(),
            1
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
