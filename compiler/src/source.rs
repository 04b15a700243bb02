//! Source loading and the source map.
//!
//! The compiler never touches the file system itself: every file it reads
//! comes through a [`SourceLoader`] (the CLI's reads the disk, tests and the
//! language server use [`MemoryLoader`] or an overlay of open buffers).
//! Every loaded file gets a [`FileId`] in the [`SourceMap`], which turns
//! byte offsets back into lines and columns for diagnostics and the LSP.

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use weir_grammar::{FileId, Span};

/// The most an endpoint inventory file may hold: 256 MiB (a million
/// endpoints in the documented format is about 120 MB).
pub const MAX_INVENTORY_BYTES: u64 = 256 << 20;

/// Why a loader did not give the text of an inventory file.
#[derive(Debug)]
pub enum InventoryRefusal {
    /// It could not be read (missing, no permission, not UTF-8).
    Io(io::Error),
    /// It is not a regular file; `what` says what it is ("a directory",
    /// "a character device", ...).
    NotRegular { what: &'static str },
    /// It is larger than [`MAX_INVENTORY_BYTES`].
    TooLarge { size: u64 },
    /// It is outside every project directory (`project`).
    OutsideProject { project: Vec<PathBuf> },
}

/// Where source text comes from.
pub trait SourceLoader {
    /// The text of the file at `path`. A missing file must be reported as
    /// [`io::ErrorKind::NotFound`] (it becomes E0101 for an import).
    fn load(&self, path: &Path) -> io::Result<String>;

    /// The directory `import std.NAME` loads `NAME.weir` from, if any.
    fn stdlib_dir(&self) -> Option<PathBuf>;

    /// The identity of a file: two paths with the same key are one file,
    /// loaded once. The default is lexical normalization; a file-system
    /// loader should resolve symlinks and relative paths.
    fn canonical(&self, path: &Path) -> PathBuf {
        normalize(path)
    }

    /// The text of an endpoint inventory. `project` is `Some(dirs)` for an
    /// `inventory "PATH"` item of the program: a loader that reads a file
    /// system must then refuse a file not below one of `dirs` (after
    /// resolving symlinks); `None` is the file named on the command line
    /// (`--endpoints`), allowed anywhere. Either way only a regular file
    /// of at most [`MAX_INVENTORY_BYTES`] is read — a device or a FIFO
    /// would never end. The default (in-memory loaders, which hold only
    /// texts) applies the size limit.
    fn load_inventory(
        &self,
        path: &Path,
        project: Option<&[PathBuf]>,
    ) -> Result<String, InventoryRefusal> {
        let _ = project;
        let text = self.load(path).map_err(InventoryRefusal::Io)?;
        if text.len() as u64 > MAX_INVENTORY_BYTES {
            return Err(InventoryRefusal::TooLarge {
                size: text.len() as u64,
            });
        }
        Ok(text)
    }
}

/// A loader over a fixed map of paths to texts (tests, editors).
#[derive(Debug, Clone, Default)]
pub struct MemoryLoader {
    pub files: BTreeMap<PathBuf, String>,
    pub stdlib: Option<PathBuf>,
}

impl MemoryLoader {
    pub fn new() -> MemoryLoader {
        MemoryLoader::default()
    }

    /// Adds (or replaces) a file; the path is normalized lexically.
    pub fn with(mut self, path: impl AsRef<Path>, text: impl Into<String>) -> MemoryLoader {
        self.files.insert(normalize(path.as_ref()), text.into());
        self
    }

    pub fn with_stdlib(mut self, dir: impl AsRef<Path>) -> MemoryLoader {
        self.stdlib = Some(normalize(dir.as_ref()));
        self
    }
}

impl SourceLoader for MemoryLoader {
    fn load(&self, path: &Path) -> io::Result<String> {
        self.files
            .get(&normalize(path))
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    fn stdlib_dir(&self) -> Option<PathBuf> {
        self.stdlib.clone()
    }
}

/// Lexical path normalization (`a/./b/../c` → `a/c`), no file system access.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let can_pop = matches!(out.components().next_back(), Some(Component::Normal(_)));
                if can_pop {
                    out.pop();
                } else if !out.has_root() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// One loaded file.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(path: PathBuf, text: String) -> SourceFile {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceFile {
            path,
            text,
            line_starts,
        }
    }

    /// The file name as shown in diagnostics.
    pub fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// 0-based line index of a byte offset (offsets past the end clamp).
    pub fn line_index(&self, offset: usize) -> usize {
        match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        }
    }

    /// Byte range of a 0-based line, without its line break.
    pub fn line_range(&self, line: usize) -> Range<usize> {
        let start = self
            .line_starts
            .get(line)
            .copied()
            .unwrap_or(self.text.len());
        let end = self
            .line_starts
            .get(line + 1)
            .map(|e| e - 1)
            .unwrap_or(self.text.len());
        let end = if end > start && self.text.as_bytes().get(end - 1) == Some(&b'\r') {
            end - 1
        } else {
            end
        };
        start..end.max(start)
    }

    pub fn line_count(&self) -> usize {
        self.line_starts.len()
    }

    fn clamp(&self, offset: usize) -> usize {
        let mut o = offset.min(self.text.len());
        while !self.text.is_char_boundary(o) {
            o -= 1;
        }
        o
    }

    /// 1-based (line, column); the column counts Unicode scalar values.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = self.clamp(offset);
        let line = self.line_index(offset);
        let start = self.line_starts[line];
        (line + 1, self.text[start..offset].chars().count() + 1)
    }

    /// 0-based (line, column) with the column in UTF-16 code units, as the
    /// Language Server Protocol counts by default.
    pub fn line_col_utf16(&self, offset: usize) -> (u32, u32) {
        let offset = self.clamp(offset);
        let line = self.line_index(offset);
        let start = self.line_starts[line];
        let col: usize = self.text[start..offset].chars().map(char::len_utf16).sum();
        (line as u32, col as u32)
    }

    /// Byte offset of a 0-based (line, UTF-16 column); clamps to the line.
    pub fn offset_utf16(&self, line: u32, col: u32) -> usize {
        let range = self.line_range(line as usize);
        let mut units = 0u32;
        for (i, ch) in self.text[range.clone()].char_indices() {
            if units >= col {
                return range.start + i;
            }
            units += ch.len_utf16() as u32;
        }
        range.end
    }
}

/// Every file of one compilation, by [`FileId`].
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
    by_path: BTreeMap<PathBuf, FileId>,
}

impl SourceMap {
    pub fn new() -> SourceMap {
        SourceMap::default()
    }

    /// Adds a file (or returns the id it already has: files are keyed by
    /// normalized path).
    pub fn add(&mut self, path: &Path, text: String) -> FileId {
        let path = normalize(path);
        if let Some(id) = self.by_path.get(&path) {
            return *id;
        }
        let id = FileId(self.files.len() as u32);
        self.by_path.insert(path.clone(), id);
        self.files.push(SourceFile::new(path, text));
        id
    }

    pub fn get(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id.0 as usize)
    }

    /// The file; panics on an id from another source map.
    pub fn file(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    pub fn id_of(&self, path: &Path) -> Option<FileId> {
        self.by_path.get(&normalize(path)).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| (FileId(i as u32), f))
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The source text a span covers.
    pub fn snippet(&self, span: Span) -> &str {
        let f = self.file(span.file);
        let s = f.clamp(span.start as usize);
        let e = f.clamp(span.end as usize).max(s);
        &f.text[s..e]
    }

    /// 1-based (line, column) of the start of a span.
    pub fn start(&self, span: Span) -> (usize, usize) {
        self.file(span.file).line_col(span.start as usize)
    }

    /// 1-based (line, column) of the end of a span.
    pub fn end(&self, span: Span) -> (usize, usize) {
        self.file(span.file).line_col(span.end as usize)
    }
}

impl<'a> codespan_reporting::files::Files<'a> for SourceMap {
    type FileId = FileId;
    type Name = String;
    type Source = &'a str;

    fn name(&'a self, id: FileId) -> Result<String, codespan_reporting::files::Error> {
        self.get(id)
            .map(SourceFile::name)
            .ok_or(codespan_reporting::files::Error::FileMissing)
    }

    fn source(&'a self, id: FileId) -> Result<&'a str, codespan_reporting::files::Error> {
        self.get(id)
            .map(|f| f.text.as_str())
            .ok_or(codespan_reporting::files::Error::FileMissing)
    }

    fn line_index(
        &'a self,
        id: FileId,
        byte_index: usize,
    ) -> Result<usize, codespan_reporting::files::Error> {
        self.get(id)
            .map(|f| f.line_index(byte_index))
            .ok_or(codespan_reporting::files::Error::FileMissing)
    }

    fn line_range(
        &'a self,
        id: FileId,
        line_index: usize,
    ) -> Result<Range<usize>, codespan_reporting::files::Error> {
        let f = self
            .get(id)
            .ok_or(codespan_reporting::files::Error::FileMissing)?;
        if line_index >= f.line_count() {
            return Err(codespan_reporting::files::Error::LineTooLarge {
                given: line_index,
                max: f.line_count() - 1,
            });
        }
        // codespan wants the range including the line break.
        let start = f.line_starts[line_index];
        let end = f
            .line_starts
            .get(line_index + 1)
            .copied()
            .unwrap_or(f.text.len());
        Ok(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns() {
        let f = SourceFile::new("a.weir".into(), "ab\né𝄞x\r\nz".into());
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(3), (2, 1));
        // 'x' after é (2 bytes) and 𝄞 (4 bytes)
        assert_eq!(f.line_col(9), (2, 3));
        assert_eq!(f.line_col_utf16(9), (1, 3));
        assert_eq!(f.offset_utf16(1, 3), 9);
        assert_eq!(f.line_range(1), 3..10);
        assert_eq!(f.line_col(12), (3, 1));
        assert_eq!(f.line_col(100), (3, 2));
    }

    #[test]
    fn normalizes() {
        assert_eq!(
            normalize(Path::new("a/./b/../c.weir")),
            PathBuf::from("a/c.weir")
        );
        assert_eq!(normalize(Path::new("../x")), PathBuf::from("../x"));
        assert_eq!(normalize(Path::new("/a/../../b")), PathBuf::from("/b"));
    }
}
