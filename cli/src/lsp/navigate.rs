//! Go to definition and find references.

use super::analysis::{Analysis, Def, Target};
use super::convert::{location, path_to_uri};
use lsp_types::{Location, Position, Range};
use weir_grammar::FileId;

pub fn definition(a: &Analysis, file: FileId, offset: usize) -> Option<Location> {
    let t = a.index.at(file, offset)?;
    if let Target::Import(i) = &t {
        return Some(Location {
            uri: path_to_uri(&i.target),
            range: Range::new(Position::new(0, 0), Position::new(0, 0)),
        });
    }
    let def = a.index.def_of(&t)?;
    location(&a.checked.sources, def.name_span)
}

/// The definition named at the cursor (itself when on a definition).
pub fn def_at(a: &Analysis, file: FileId, offset: usize) -> Option<&Def> {
    let t = a.index.at(file, offset)?;
    a.index.def_of(&t)
}

/// Every use of `def` (a definition of `here`'s program), in every
/// program given: a definition in an imported file is used by the files
/// that import it, each checked as its own program.
pub fn references<'a>(
    here: &'a Analysis,
    all: impl Iterator<Item = &'a Analysis>,
    def: &Def,
    include_declaration: bool,
) -> Vec<Location> {
    let def_path = here.checked.sources.file(def.name_span.file).path.clone();
    let mut out: Vec<Location> = Vec::new();
    if include_declaration {
        out.extend(location(&here.checked.sources, def.name_span));
    }
    for a in std::iter::once(here).chain(all) {
        let Some(id) = a.file_id(&def_path) else {
            continue;
        };
        let Some(d) = a.index.defs.iter().find(|d| {
            d.name_span.file == id && d.name_span.start == def.name_span.start && d.kind == def.kind
        }) else {
            continue;
        };
        for r in a.index.references(d) {
            if let Some(l) = location(&a.checked.sources, r.span) {
                if !out.contains(&l) {
                    out.push(l);
                }
            }
        }
    }
    out
}
