//! Open documents, edits to them (full and incremental, UTF-16 ranges),
//! and the loader that reads open documents before the disk.

use lsp_types::TextDocumentContentChangeEvent;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use weir_compiler::source::{normalize, SourceFile, SourceLoader};

/// One open document.
#[derive(Debug, Clone)]
pub struct Document {
    pub text: String,
    pub version: i32,
}

/// The documents the editor has open, by normalized path.
#[derive(Debug, Default)]
pub struct Documents {
    pub open: BTreeMap<PathBuf, Document>,
}

impl Documents {
    pub fn open(&mut self, path: PathBuf, text: String, version: i32) {
        self.open
            .insert(normalize(&path), Document { text, version });
    }

    pub fn close(&mut self, path: &Path) {
        self.open.remove(&normalize(path));
    }

    pub fn get(&self, path: &Path) -> Option<&Document> {
        self.open.get(&normalize(path))
    }

    /// Applies edits in order; a change without a range replaces the text.
    pub fn change(
        &mut self,
        path: &Path,
        version: i32,
        changes: Vec<TextDocumentContentChangeEvent>,
    ) {
        let Some(doc) = self.open.get_mut(&normalize(path)) else {
            return;
        };
        for c in changes {
            apply_change(&mut doc.text, c);
        }
        doc.version = version;
    }
}

/// Applies one content change (its range in UTF-16 positions).
pub fn apply_change(text: &mut String, change: TextDocumentContentChangeEvent) {
    match change.range {
        None => *text = change.text,
        Some(r) => {
            let file = SourceFile::new(PathBuf::new(), std::mem::take(text));
            let start = super::convert::offset(&file, r.start);
            let end = super::convert::offset(&file, r.end).max(start);
            let mut t = file.text;
            t.replace_range(start..end, &change.text);
            *text = t;
        }
    }
}

/// Open documents first, then the file system.
pub struct OverlayLoader<'a> {
    pub docs: &'a Documents,
    pub stdlib: Option<PathBuf>,
}

impl SourceLoader for OverlayLoader<'_> {
    fn load(&self, path: &Path) -> io::Result<String> {
        match self.docs.get(path) {
            Some(d) => Ok(d.text.clone()),
            None => std::fs::read_to_string(path),
        }
    }

    fn stdlib_dir(&self) -> Option<PathBuf> {
        self.stdlib.clone()
    }

    fn canonical(&self, path: &Path) -> PathBuf {
        std::fs::canonicalize(path).unwrap_or_else(|_| normalize(path))
    }

    /// An open buffer, else the disk under the CLI's rules.
    fn load_inventory(
        &self,
        path: &Path,
        project: Option<&[PathBuf]>,
    ) -> Result<String, weir_compiler::source::InventoryRefusal> {
        match self.docs.get(path) {
            Some(d) => Ok(d.text.clone()),
            None => crate::loader::read_inventory(path, project),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lsp_types::{Position, Range};

    fn edit(l0: u32, c0: u32, l1: u32, c1: u32, text: &str) -> TextDocumentContentChangeEvent {
        TextDocumentContentChangeEvent {
            range: Some(Range {
                start: Position::new(l0, c0),
                end: Position::new(l1, c1),
            }),
            range_length: None,
            text: text.to_string(),
        }
    }

    #[test]
    fn incremental_edits_count_utf16() {
        // `𝄞` is two UTF-16 units and four bytes.
        let mut t = "a𝄞b\nxyz\n".to_string();
        apply_change(&mut t, edit(0, 3, 0, 4, "B"));
        assert_eq!(t, "a𝄞B\nxyz\n");
        apply_change(&mut t, edit(0, 4, 1, 1, ""));
        assert_eq!(t, "a𝄞Byz\n");
        apply_change(&mut t, edit(1, 0, 1, 0, "end"));
        assert_eq!(t, "a𝄞Byz\nend");
    }
}
