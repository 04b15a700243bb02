//! `weir diff --git RANGE PATH...`: each revision's `.weir` files and
//! JSON inventories are written into a temporary directory (`git ls-tree`
//! lists them, one `git cat-file --batch` reads them), so a program's
//! imports and inventories are read as they were at that revision; the
//! working tree is never touched. Locations are shown as paths in the
//! repository. The standard library is the installed one for both.

use super::{load, Args, Program};
use crate::program;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

/// A temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn git(args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout)
        .map_err(|_| format!("git {}: output is not UTF-8", args.join(" ")))
}

/// Which revisions a RANGE names: (old, its label, new); `None` for the
/// working tree.
fn parse_range(range: &str) -> Result<(String, String, Option<String>), String> {
    if let Some((a, b)) = range.split_once("...") {
        let b = if b.is_empty() { "HEAD" } else { b };
        let base = git(&["merge-base", a, b])?.trim().to_string();
        let short: String = base.chars().take(12).collect();
        let label = format!("{a}...{b} (merge base {short})");
        return Ok((base, label, Some(b.to_string())));
    }
    if let Some((a, b)) = range.split_once("..") {
        let b = if b.is_empty() { "HEAD" } else { b };
        return Ok((a.to_string(), a.to_string(), Some(b.to_string())));
    }
    Ok((range.to_string(), range.to_string(), None))
}

/// Policy files and inventories; a name with a newline cannot be asked
/// of `git cat-file --batch` (one name per line) and is left out.
fn wanted(name: &str) -> bool {
    (name.ends_with(".weir") || name.ends_with(".json")) && !name.contains('\n')
}

/// Write REV's `.weir` and `.json` files under `into`.
fn materialize(top: &Path, rev: &str, into: &Path) -> Result<(), String> {
    let top_s = top.to_str().ok_or("the repository path is not UTF-8")?;
    let commit = git(&[
        "-C",
        top_s,
        "rev-parse",
        "--verify",
        "--quiet",
        &format!("{rev}^{{commit}}"),
    ])
    .map_err(|_| format!("{rev} is not a revision of this repository"))?;
    let commit = commit.trim();
    let list = git(&["-C", top_s, "ls-tree", "-r", "-z", "--name-only", commit])?;
    let names: Vec<&str> = list.split('\0').filter(|n| wanted(n)).collect();
    let mut child = Command::new("git")
        .args(["-C", top_s, "cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run git: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let request: String = names.iter().map(|n| format!("{commit}:{n}\n")).collect();
    // A writer thread: git answers while it reads, and a pipe holds little.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(request.as_bytes());
    });
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut result = Ok(());
    for n in &names {
        let mut header = String::new();
        if out.read_line(&mut header).map_err(|e| e.to_string())? == 0 {
            result = Err(format!("git cat-file ended early at {n}"));
            break;
        }
        let size: usize = match header
            .trim_end()
            .rsplit(' ')
            .next()
            .and_then(|s| s.parse().ok())
        {
            Some(s) if header.contains(" blob ") => s,
            _ => {
                result = Err(format!(
                    "git cat-file: unexpected answer for {n}: {}",
                    header.trim_end()
                ));
                break;
            }
        };
        let mut body = vec![0u8; size + 1];
        out.read_exact(&mut body).map_err(|e| e.to_string())?;
        body.pop();
        let rel = Path::new(n);
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            continue;
        }
        let path = into.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(&path, body).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let _ = writer.join();
    let _ = child.wait();
    result
}

/// A working-tree path as a path relative to the repository's top.
fn in_repo(prefix: &str, p: &Path) -> Result<PathBuf, String> {
    if p.is_absolute() {
        return Err(format!(
            "{}: with --git, give paths relative to the working directory",
            p.display()
        ));
    }
    let joined = weir_compiler::source::normalize(&Path::new(prefix).join(p));
    if joined.components().next() == Some(Component::ParentDir) {
        return Err(format!("{} is outside the repository", p.display()));
    }
    Ok(joined)
}

pub fn load_range(range: &str, args: &Args) -> Result<(Program, Program, Option<TempDir>), i32> {
    let setup = || -> Result<_, String> {
        let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?.trim());
        let prefix = git(&["rev-parse", "--show-prefix"])?.trim().to_string();
        let (old, old_label, new) = parse_range(range)?;
        let paths = args
            .paths
            .iter()
            .map(|p| in_repo(&prefix, p))
            .collect::<Result<Vec<_>, _>>()?;
        let inventory = args
            .endpoints
            .as_deref()
            .map(|p| in_repo(&prefix, p))
            .transpose()?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = std::env::temp_dir().join(format!("weir-diff-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let tmp = TempDir(tmp);
        let old_dir = tmp.0.join("old");
        materialize(&top, &old, &old_dir)?;
        let new_dir = match &new {
            Some(rev) => {
                let d = tmp.0.join("new");
                materialize(&top, rev, &d)?;
                Some(d)
            }
            None => None,
        };
        Ok((old_label, new, paths, inventory, tmp, old_dir, new_dir))
    };
    let (old_label, new_rev, paths, inventory, tmp, old_dir, new_dir) =
        setup().map_err(program::usage)?;
    let under = |d: &Path| -> Vec<PathBuf> { paths.iter().map(|p| d.join(p)).collect() };
    let old = load(
        &old_label,
        &under(&old_dir),
        inventory.as_ref().map(|i| old_dir.join(i)).as_deref(),
        Some(old_dir.clone()),
        args.color,
    )?;
    let new = match (&new_rev, &new_dir) {
        (Some(rev), Some(d)) => load(
            rev,
            &under(d),
            inventory.as_ref().map(|i| d.join(i)).as_deref(),
            Some(d.clone()),
            args.color,
        )?,
        _ => load(
            "working tree",
            &args.paths,
            args.endpoints.as_deref(),
            None,
            args.color,
        )?,
    };
    Ok((old, new, Some(tmp)))
}
