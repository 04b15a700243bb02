//! The workspace: the folders the client names at `initialize`, and the
//! `.weir` files under them. Find-references reads these files too, not
//! only the open documents (open buffers still win over the disk, through
//! the overlay loader).

use super::analysis::Analysis;
use super::docs::{Documents, OverlayLoader};
use lsp_types::Uri;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use weir_compiler::source::SourceLoader;

/// At most this many files are read per search (a home directory opened as
/// a workspace must not stall the editor).
const MAX_FILES: usize = 2_000;
/// Directories this deep below a root are not entered.
const MAX_DEPTH: usize = 12;

/// The workspace folders of `initialize`'s params: `workspaceFolders`,
/// else `rootUri`, else `rootPath` (read loosely: a client that sends an
/// odd shape gets no workspace search, not a failed start).
pub fn roots(params: &serde_json::Value) -> Vec<PathBuf> {
    let uri = |v: &serde_json::Value| {
        let u = Uri::from_str(v.as_str()?).ok()?;
        super::convert::uri_to_path(&u)
    };
    let folders: Vec<PathBuf> = params["workspaceFolders"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| uri(&f["uri"]))
        .collect();
    if !folders.is_empty() {
        return folders;
    }
    if let Some(p) = uri(&params["rootUri"]) {
        return vec![p];
    }
    params["rootPath"]
        .as_str()
        .map(|p| vec![weir_compiler::source::normalize(Path::new(p))])
        .unwrap_or_default()
}

/// Every `.weir` file under `roots` (hidden directories, `target` and
/// `node_modules` skipped; symbolic links not followed), sorted.
pub fn weir_files(roots: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for r in roots {
        walk(r, 0, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > MAX_DEPTH || out.len() >= MAX_FILES {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Ok(ft) = e.file_type() else { continue };
        let path = e.path();
        if ft.is_dir() {
            if !(name.starts_with('.') || name == "target" || name == "node_modules") {
                walk(&path, depth + 1, out);
            }
        } else if ft.is_file() && name.ends_with(".weir") && out.len() < MAX_FILES {
            out.push(weir_compiler::source::normalize(&path));
        }
    }
}

/// A checked program for every workspace file that mentions `name` and is
/// not already checked (in `known`): the programs a reference may be in.
pub fn programs_mentioning(
    roots: &[PathBuf],
    name: &str,
    known: &BTreeMap<PathBuf, Analysis>,
    docs: &Documents,
    stdlib: Option<PathBuf>,
) -> Vec<Analysis> {
    let loader = OverlayLoader {
        docs,
        stdlib: stdlib.clone(),
    };
    weir_files(roots)
        .into_iter()
        .filter(|p| !known.contains_key(p))
        .filter(|p| loader.load(p).is_ok_and(|t| t.contains(name)))
        .map(|p| Analysis::checked_only(&p, docs, stdlib.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roots_prefer_workspace_folders() {
        let p = json!({
            "rootUri": "file:///a",
            "workspaceFolders": [{ "uri": "file:///b", "name": "b" }],
        });
        assert_eq!(roots(&p), vec![PathBuf::from("/b")]);
        assert_eq!(
            roots(&json!({ "rootUri": "file:///a" })),
            vec![PathBuf::from("/a")]
        );
        assert_eq!(
            roots(&json!({ "rootPath": "/c" })),
            vec![PathBuf::from("/c")]
        );
        assert!(roots(&json!({ "rootUri": null })).is_empty());
    }

    #[test]
    fn finds_weir_files_and_skips_hidden_and_target() {
        let d = std::env::temp_dir().join(format!("weir-ws-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for sub in ["a/b", ".git", "target"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        for f in [
            "x.weir",
            "a/b/y.weir",
            "a/z.txt",
            ".git/h.weir",
            "target/t.weir",
        ] {
            std::fs::write(d.join(f), "").unwrap();
        }
        let found = weir_files(std::slice::from_ref(&d));
        let _ = std::fs::remove_dir_all(&d);
        assert_eq!(found, vec![d.join("a/b/y.weir"), d.join("x.weir")]);
    }
}
