//! Where a bundle's files go as they are produced: into memory (the tests,
//! the language server, `weir test --snapshot`, `weir compile --emit`
//! without `-o`) or into a directory (`weir compile -o DIR`). The
//! producers write every file through one [`FileOut`], an [`io::Write`]
//! that hashes and counts the bytes as they pass, so the manifest's
//! `artifacts` never needs the files in memory: the back ends, the graph
//! dump and the manifest write the same bytes into either place (one
//! writer code path, two sinks).
//!
//! Why: `weir compile` of 100,000 one-peer-per-pod rules made a 380 MB
//! bundle (the eBPF listing alone is 195 MB) and held all of it until the
//! end, which put the compile's peak RSS on the 1 GB line (issue 21).
//!
//! **Atomic output.** A directory sink writes into a staging directory
//! inside the target (`DIR/.weir-staging-PID`, so it is on the same file
//! system), and only [`Sink::commit`] moves the files into `DIR`, each by
//! one `rename` (the manifest last), then removes the artifacts of an
//! earlier compile that this bundle does not have. A compile that fails
//! (a back end refuses the program, a write fails) never commits: the
//! staging directory is removed when the sink is dropped, and a bundle
//! already in `DIR` is left as it was (a killed compile's staging
//! directory, whose process no longer runs, is removed by the next
//! sink on `DIR`). A reader that opens `DIR` during
//! the commit sees each file whole, old or new, and the runtime refuses a
//! mix of both, because the manifest binds every file by its SHA-256.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::MANIFEST;

/// Every file name a bundle may have (a commit removes those of an
/// earlier compile that this bundle lacks).
pub const FILES: [&str; 7] = [
    super::MANIFEST,
    super::WEIR_ASM,
    super::GRAPH_TXT,
    super::WEIR_O,
    super::IPTABLES_RULES,
    super::IP6TABLES_RULES,
    super::IPSET_RULES,
];

/// What was written to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub len: u64,
    /// SHA-256, lowercase hex (what the manifest's `artifacts` lists);
    /// empty for what `artifacts` never lists, so is not hashed: the
    /// manifest and a part ([`Sink::part`]).
    pub sha256: String,
}

/// Where the files go (module docs).
pub struct Sink {
    place: Place,
    done: Mutex<BTreeMap<String, Done>>,
}

enum Place {
    Memory,
    Dir {
        dir: PathBuf,
        staging: PathBuf,
        committed: bool,
        /// The directories this sink created for `dir`, deepest first
        /// (removed again, when empty, if it never commits).
        created: Vec<PathBuf>,
    },
}

struct Done {
    written: Written,
    /// The bytes, in a memory sink.
    bytes: Option<Vec<u8>>,
    /// A part of another file ([`Sink::part`]), not a file of the bundle.
    part: bool,
}

/// The name of a staging directory, before the compiling process's id.
const STAGING_PREFIX: &str = ".weir-staging-";

/// Removes the staging directories in `dir` that compiles killed before
/// their commit or drop left behind: those whose process no longer runs
/// (a live process's, another compile's under way, is left alone). Best
/// effort: what cannot be read or removed stays.
fn remove_dead_staging(dir: &Path) {
    // Without /proc every process would look dead.
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    if !Path::new("/proc/self").exists() {
        return;
    }
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(STAGING_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Sink {
    /// A sink that keeps the files in memory ([`Sink::into_files`]).
    pub fn memory() -> Sink {
        Sink {
            place: Place::Memory,
            done: Mutex::new(BTreeMap::new()),
        }
    }

    /// A sink that writes the bundle into `dir` when committed: creates
    /// `dir` if needed and a fresh staging directory inside it.
    pub fn dir(dir: &Path) -> io::Result<Sink> {
        let created: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .map(Path::to_path_buf)
            .collect();
        std::fs::create_dir_all(dir)?;
        remove_dead_staging(dir);
        let staging = dir.join(format!("{STAGING_PREFIX}{}", std::process::id()));
        if staging.exists() {
            // Left by a killed process that had this process id.
            std::fs::remove_dir_all(&staging)?;
        }
        std::fs::create_dir(&staging)?;
        Ok(Sink {
            place: Place::Dir {
                dir: dir.to_path_buf(),
                staging,
                committed: false,
                created,
            },
            done: Mutex::new(BTreeMap::new()),
        })
    }

    /// Starts file `name` (a plain file name). Writing a name again
    /// replaces the file.
    pub fn file(&self, name: &str) -> io::Result<FileOut<'_>> {
        self.open(name, false)
    }

    /// Starts a part of a later file (written into it by
    /// [`Sink::append_part`]): the manifest's head, made while the back
    /// ends run and written after their files' hashes. Not a file of the
    /// bundle: it is never listed, hashed into `artifacts` or committed.
    pub fn part(&self, name: &str) -> io::Result<FileOut<'_>> {
        self.open(name, true)
    }

    /// Writes part `name` from byte `skip` on into `out`, and removes the
    /// part.
    pub fn append_part(&self, name: &str, skip: usize, out: &mut FileOut) -> io::Result<()> {
        let done = self.lock().remove(name);
        let Some(done) = done.filter(|d| d.part) else {
            return Err(io::Error::other(format!("no part `{name}` was written")));
        };
        match (&self.place, done.bytes) {
            (_, Some(bytes)) => out.write_all(bytes.get(skip..).unwrap_or_default()),
            (Place::Dir { staging, .. }, None) => {
                let path = staging.join(name);
                let mut f = File::open(&path)?;
                io::Seek::seek(&mut f, io::SeekFrom::Start(skip as u64))?;
                out.append_file(&mut f)?;
                std::fs::remove_file(path)
            }
            (Place::Memory, None) => Err(io::Error::other("a memory part without bytes")),
        }
    }

    fn open(&self, name: &str, part: bool) -> io::Result<FileOut<'_>> {
        debug_assert!(!name.contains('/') && !name.starts_with('.'), "{name}");
        let out = match &self.place {
            Place::Memory => Out::Memory(Vec::new()),
            Place::Dir { staging, .. } => Out::Disk(File::create(staging.join(name))?),
        };
        Ok(FileOut {
            sink: self,
            name: name.to_string(),
            part,
            out,
            pending: Vec::with_capacity(BUFFER),
            // What `artifacts` never lists is not hashed: a part, and the
            // manifest itself (for BENCHMARKS.md's headline model its 30
            // MB head was hashed twice, once on the critical path).
            hash: (!part && name != MANIFEST).then(Sha256::new),
            len: 0,
        })
    }

    /// Writes `bytes` as file `name`.
    pub fn write(&self, name: &str, bytes: &[u8]) -> io::Result<Written> {
        let mut f = self.file(name)?;
        f.write_all(bytes)?;
        f.finish()
    }

    /// The finished files: name → what was written, in name order.
    pub fn written(&self) -> BTreeMap<String, Written> {
        self.lock()
            .iter()
            .filter(|(_, d)| !d.part)
            .map(|(n, d)| (n.clone(), d.written.clone()))
            .collect()
    }

    /// The manifest's `artifacts`: the SHA-256 of every finished file but
    /// the manifest.
    pub fn artifacts(&self) -> BTreeMap<String, String> {
        self.lock()
            .iter()
            .filter(|(n, d)| n.as_str() != MANIFEST && !d.part)
            .map(|(n, d)| (n.clone(), d.written.sha256.clone()))
            .collect()
    }

    /// The bytes of finished file `name` (read back from the directory
    /// for a directory sink); `None` when there is no such file.
    pub fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let done = self.lock();
        let Some(d) = done.get(name) else {
            return Ok(None);
        };
        match (&self.place, &d.bytes) {
            (_, Some(b)) => Ok(Some(b.clone())),
            (Place::Dir { dir, committed, .. }, None) if *committed => {
                std::fs::read(dir.join(name)).map(Some)
            }
            (Place::Dir { staging, .. }, None) => std::fs::read(staging.join(name)).map(Some),
            (Place::Memory, None) => Ok(None),
        }
    }

    /// The files of a memory sink (a directory sink's are in its
    /// directory: empty).
    pub fn into_files(self) -> BTreeMap<String, Vec<u8>> {
        std::mem::take(&mut *self.lock())
            .into_iter()
            .filter(|(_, d)| !d.part)
            .filter_map(|(n, d)| d.bytes.map(|b| (n, b)))
            .collect()
    }

    /// Moves a directory sink's files into its directory (module docs):
    /// each file by one rename, the manifest last; then removes the
    /// artifacts of an earlier compile that this bundle lacks, and the
    /// staging directory. A memory sink has nothing to do.
    pub fn commit(&mut self) -> io::Result<()> {
        let names: Vec<String> = self.written().into_keys().collect();
        let Place::Dir {
            dir,
            staging,
            committed,
            ..
        } = &mut self.place
        else {
            return Ok(());
        };
        let (manifest, others): (Vec<&String>, Vec<&String>) =
            names.iter().partition(|n| n.as_str() == MANIFEST);
        for name in others.into_iter().chain(manifest) {
            std::fs::rename(staging.join(name), dir.join(name))?;
        }
        *committed = true;
        for name in FILES {
            let p = dir.join(name);
            if !names.iter().any(|n| n == name) && p.exists() {
                std::fs::remove_file(p)?;
            }
        }
        std::fs::remove_dir_all(&*staging)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Done>> {
        // A producer that panicked while holding the lock left the map
        // whole (inserts are the only writes).
        self.done.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Sink {
    /// An uncommitted directory sink leaves nothing behind: not its
    /// staging directory, nor the directories it created for the bundle.
    fn drop(&mut self) {
        if let Place::Dir {
            staging,
            committed: false,
            created,
            ..
        } = &self.place
        {
            let _ = std::fs::remove_dir_all(staging);
            for d in created {
                // Only when empty: never anything someone else put there.
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

/// One file being written: the bytes go to the sink, hashed and counted
/// on the way (through a buffer, so that many small writes, such as a
/// text's lines, cost one hash update and one write call per
/// [`BUFFER`] bytes). [`FileOut::finish`] records it; a file never
/// finished is not part of the bundle.
pub struct FileOut<'s> {
    sink: &'s Sink,
    name: String,
    part: bool,
    out: Out,
    pending: Vec<u8>,
    /// `None` for the manifest and a part ([`Sink::part`]).
    hash: Option<Sha256>,
    len: u64,
}

/// Bytes a [`FileOut`] gathers before it hashes and writes them.
const BUFFER: usize = 256 << 10;

enum Out {
    Memory(Vec<u8>),
    Disk(File),
}

impl FileOut<'_> {
    fn pass(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(h) = &mut self.hash {
            h.update(bytes);
        }
        self.len += bytes.len() as u64;
        match &mut self.out {
            Out::Memory(v) => v.extend_from_slice(bytes),
            Out::Disk(f) => f.write_all(bytes)?,
        }
        Ok(())
    }

    fn drain(&mut self) -> io::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let r = self.pass(&pending);
        self.pending = pending;
        self.pending.clear();
        r
    }

    /// Writes the rest of `src` (from its position on). Into a file that
    /// is not hashed (the manifest) the bytes go from file to file in the
    /// kernel (`io::copy` between two files is `copy_file_range`): the
    /// manifest's head part, 30 MB for BENCHMARKS.md's headline model,
    /// never passes through this process (~20 ms of `weir compile`'s
    /// last step, issue 21).
    fn append_file(&mut self, src: &mut File) -> io::Result<()> {
        self.drain()?;
        match (&self.hash, &mut self.out) {
            (None, Out::Disk(f)) => {
                self.len += io::copy(src, f)?;
                Ok(())
            }
            _ => io::copy(src, self).map(drop),
        }
    }

    /// Drops everything written so far: the file starts again, empty
    /// (the eBPF back end's listing when a stage split is rejected and
    /// redone, `ebpf/codegen/stage_listing.rs`).
    pub fn restart(&mut self) -> io::Result<()> {
        self.pending.clear();
        if let Some(h) = &mut self.hash {
            *h = Sha256::new();
        }
        self.len = 0;
        match &mut self.out {
            Out::Memory(v) => v.clear(),
            Out::Disk(f) => {
                f.set_len(0)?;
                f.seek(io::SeekFrom::Start(0))?;
            }
        }
        Ok(())
    }

    /// Ends the file (its bytes are in its directory, or in memory) and
    /// records it in the sink.
    pub fn finish(mut self) -> io::Result<Written> {
        self.drain()?;
        let bytes = match std::mem::replace(&mut self.out, Out::Memory(Vec::new())) {
            Out::Memory(v) => Some(v),
            Out::Disk(_) => None,
        };
        let written = Written {
            len: self.len,
            sha256: self
                .hash
                .take()
                .map(|h| h.finalize().iter().map(|b| format!("{b:02x}")).collect())
                .unwrap_or_default(),
        };
        self.sink.lock().insert(
            std::mem::take(&mut self.name),
            Done {
                written: written.clone(),
                bytes,
                part: self.part,
            },
        );
        Ok(written)
    }
}

impl Write for FileOut<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pending.len() + buf.len() > BUFFER {
            self.drain()?;
        }
        if buf.len() >= BUFFER {
            self.pass(buf)?;
        } else {
            self.pending.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain()
    }
}

/// `fmt::Write` onto an `io::Write`, keeping the first IO error (for
/// text producers written against `fmt::Write`, such as the graph dump).
pub struct FmtIo<W: Write> {
    pub out: W,
    pub error: Option<io::Error>,
}

impl<W: Write> FmtIo<W> {
    pub fn new(out: W) -> Self {
        FmtIo { out, error: None }
    }

    /// The writer, or the first error.
    pub fn into_result(self) -> io::Result<W> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.out),
        }
    }
}

impl<W: Write> std::fmt::Write for FmtIo<W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.error.is_some() {
            return Err(std::fmt::Error);
        }
        self.out.write_all(s.as_bytes()).map_err(|e| {
            self.error = Some(e);
            std::fmt::Error
        })
    }
}

#[cfg(test)]
mod tests;
