//! The file-system side of the compiler's `SourceLoader`, and locating the
//! standard library.

use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use weir_compiler::source::{InventoryRefusal, SourceLoader, MAX_INVENTORY_BYTES};

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

    fn load_inventory(
        &self,
        path: &Path,
        project: Option<&[PathBuf]>,
    ) -> Result<String, InventoryRefusal> {
        read_inventory(path, project)
    }
}

/// Reads an inventory file under the rules of
/// [`SourceLoader::load_inventory`]: below a project directory when
/// `project` is given (symlinks resolved first), a regular file (checked
/// before opening, so a FIFO cannot block, and again on the open file),
/// at most [`MAX_INVENTORY_BYTES`] (also while reading: a file may grow).
pub fn read_inventory(
    path: &Path,
    project: Option<&[PathBuf]>,
) -> Result<String, InventoryRefusal> {
    let real = std::fs::canonicalize(path).map_err(InventoryRefusal::Io)?;
    if let Some(dirs) = project {
        let inside = dirs
            .iter()
            .filter_map(|d| std::fs::canonicalize(d).ok())
            .any(|d| real.starts_with(d));
        if !inside {
            return Err(InventoryRefusal::OutsideProject {
                project: dirs.to_vec(),
            });
        }
    }
    regular(&std::fs::metadata(&real).map_err(InventoryRefusal::Io)?)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&real)
        .map_err(InventoryRefusal::Io)?;
    let meta = file.metadata().map_err(InventoryRefusal::Io)?;
    regular(&meta)?;
    // Sized from the metadata: a large inventory is read into one buffer
    // of its size, not grown by doubling (which briefly holds both).
    let mut bytes = Vec::with_capacity(meta.len().min(MAX_INVENTORY_BYTES) as usize + 1);
    file.take(MAX_INVENTORY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(InventoryRefusal::Io)?;
    if bytes.len() as u64 > MAX_INVENTORY_BYTES {
        return Err(InventoryRefusal::TooLarge {
            size: meta.len().max(bytes.len() as u64),
        });
    }
    String::from_utf8(bytes).map_err(|_| {
        InventoryRefusal::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })
}

/// Refuses what is not a regular file, or is too large by its metadata.
fn regular(meta: &std::fs::Metadata) -> Result<(), InventoryRefusal> {
    let t = meta.file_type();
    let what = if t.is_file() {
        if meta.len() > MAX_INVENTORY_BYTES {
            return Err(InventoryRefusal::TooLarge { size: meta.len() });
        }
        return Ok(());
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(InventoryRefusal::NotRegular { what })
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
