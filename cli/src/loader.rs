//! The file-system side of the compiler's `SourceLoader`, and locating the
//! standard library.

use std::io;
use std::path::{Path, PathBuf};
use weir_compiler::source::SourceLoader;

/// Reads sources from disk.
pub struct FsLoader {
    pub stdlib: Option<PathBuf>,
}

impl FsLoader {
    pub fn new() -> FsLoader {
        FsLoader {
            stdlib: stdlib_dir().map(relative_to_cwd),
        }
    }
}

impl SourceLoader for FsLoader {
    fn load(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn stdlib_dir(&self) -> Option<PathBuf> {
        self.stdlib.clone()
    }

    fn canonical(&self, path: &Path) -> PathBuf {
        std::fs::canonicalize(path).unwrap_or_else(|_| weir_compiler::source::normalize(path))
    }
}

/// `dir` relative to the working directory when it is inside it (shorter
/// paths in diagnostics).
fn relative_to_cwd(dir: PathBuf) -> PathBuf {
    let Ok(cwd) = std::env::current_dir() else {
        return dir;
    };
    let abs = std::fs::canonicalize(&dir).unwrap_or(dir.clone());
    let cwd = std::fs::canonicalize(&cwd).unwrap_or(cwd);
    match abs.strip_prefix(&cwd) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.to_path_buf(),
        _ => dir,
    }
}

/// `WEIR_STDLIB`, else `stdlib-policies` beside (or above) the executable,
/// else the source tree's `stdlib-policies` known at compile time.
pub fn stdlib_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("WEIR_STDLIB") {
        return Some(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe() {
        let mut dir = exe.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            for cand in [
                d.join("stdlib-policies"),
                d.join("share/weir/stdlib-policies"),
            ] {
                if cand.is_dir() {
                    return Some(cand);
                }
            }
            dir = d.parent().map(Path::to_path_buf);
        }
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../stdlib-policies");
    built
        .is_dir()
        .then(|| weir_compiler::source::normalize(&built))
}

/// Expands files and directories (walked recursively for `*.weir`, sorted).
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<io::Result<_>>()?;
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|e| e == "weir") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        if meta.is_dir() {
            walk(p, &mut out).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}
