//! Loading: root files, imports (each file once; cycles harmless) and the
//! endpoint inventory.

use super::ParsedFile;
use crate::diagnostics::Kind;
use crate::inventory::{parse_inventory, Inventory};
use crate::source::{normalize, InventoryRefusal, SourceLoader, SourceMap, MAX_INVENTORY_BYTES};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use weir_grammar::ast::{Import, Item};
use weir_grammar::{FileId, Span};

pub(super) struct Loaded {
    pub sources: SourceMap,
    pub files: Vec<ParsedFile>,
    pub inventory: Option<Inventory>,
    pub diags: Vec<Kind>,
}

fn parse_into(
    sources: &mut SourceMap,
    path: &Path,
    text: String,
    root: bool,
    files: &mut Vec<ParsedFile>,
    diags: &mut Vec<Kind>,
) -> FileId {
    let id = sources.add(path, text);
    let (ast, errors) = weir_grammar::parse(id, &sources.file(id).text);
    diags.extend(errors.into_iter().map(Kind::Syntax));
    files.push(ParsedFile { id, ast, root });
    id
}

/// Where an import points: `(module as written, path, is_std)`.
fn import_target(
    imp: &Import,
    importer: &Path,
    loader: &dyn SourceLoader,
) -> Result<(String, PathBuf, bool), Kind> {
    let segs: Vec<&str> = imp.path.iter().map(|i| i.name.as_str()).collect();
    let module = segs.join(".");
    if segs.first() == Some(&"std") {
        if segs.len() == 1 {
            return Err(Kind::BadImportPath { span: imp.span });
        }
        let rel: PathBuf = segs[1..].iter().collect();
        let dir = loader
            .stdlib_dir()
            .unwrap_or_else(|| PathBuf::from("<stdlib>"));
        Ok((module, dir.join(rel).with_extension("weir"), true))
    } else {
        let rel: PathBuf = segs.iter().collect();
        let dir = importer.parent().unwrap_or(Path::new(""));
        Ok((module, dir.join(rel).with_extension("weir"), false))
    }
}

pub(super) fn load_program(
    roots: &[PathBuf],
    inventory: Option<&Path>,
    loader: &dyn SourceLoader,
) -> Loaded {
    // The `--endpoints` file is parsed on another thread while the sources
    // are (for 50,000 endpoints it takes as long as 2 MB of policy). Its
    // file id is known only once every import is loaded, so it is parsed
    // under a placeholder id and its spans moved after; a file with
    // problems is parsed again under its id, for the diagnostics.
    let early = inventory.and_then(|p| {
        let path = normalize(p);
        let text = loader.load_inventory(&path, None).ok()?;
        looks_like_inventory(&text).then(|| (loader.canonical(&path), path, text))
    });
    std::thread::scope(|s| {
        // The parsing thread owns the text and hands it back: the text
        // goes into the source map as it is, never copied (it may be
        // hundreds of megabytes).
        let parsing = early.map(|(key, path, text)| {
            let spec = crate::threads::named("weir-inventory");
            let h = crate::threads::scoped(s, spec, move || {
                let parsed = parse_inventory(FileId(u32::MAX), &text);
                (text, parsed)
            });
            (key, path, h)
        });
        let mut loaded = load_sources(roots, loader);
        let early = parsing.map(|(key, path, h)| {
            let (text, parsed) = h.join();
            (key, path, text, parsed)
        });
        let project = project_dirs(roots);
        load_inventories(&mut loaded, inventory, early, loader, &project);
        loaded
    })
}

/// Root files and, transitively, their imports.
fn load_sources(roots: &[PathBuf], loader: &dyn SourceLoader) -> Loaded {
    let mut sources = SourceMap::new();
    let mut files = Vec::new();
    let mut diags = Vec::new();
    let mut queue = VecDeque::new();
    // Canonical path -> loaded.
    let mut seen: BTreeMap<PathBuf, ()> = BTreeMap::new();

    for root in roots {
        let path = normalize(root);
        if seen.insert(loader.canonical(&path), ()).is_some() {
            continue;
        }
        match loader.load(&path) {
            Ok(text) => {
                let id = parse_into(&mut sources, &path, text, true, &mut files, &mut diags);
                queue.push_back(id);
            }
            Err(e) => {
                let id = sources.add(&path, String::new());
                diags.push(Kind::CannotRead {
                    span: Span::new(id, 0, 0),
                    path: path.display().to_string(),
                    error: e.to_string(),
                });
            }
        }
    }

    let mut failed: BTreeMap<PathBuf, io::Error> = BTreeMap::new();
    while let Some(id) = queue.pop_front() {
        let importer = sources.file(id).path.clone();
        let imports: Vec<Import> = files
            .iter()
            .find(|f| f.id == id)
            .map(|f| {
                f.ast
                    .items
                    .iter()
                    .filter_map(|i| match i {
                        Item::Import(imp) if !imp.path.is_empty() => Some(imp.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        for imp in imports {
            let (module, path, is_std) = match import_target(&imp, &importer, loader) {
                Ok(t) => t,
                Err(k) => {
                    diags.push(k);
                    continue;
                }
            };
            let path = normalize(&path);
            let key = loader.canonical(&path);
            if seen.contains_key(&key) {
                continue;
            }
            let result = match failed.get(&key) {
                Some(e) => Err(io::Error::new(e.kind(), e.to_string())),
                None => loader.load(&path),
            };
            match result {
                Ok(text) => {
                    seen.insert(key, ());
                    let nid = parse_into(&mut sources, &path, text, false, &mut files, &mut diags);
                    queue.push_back(nid);
                }
                Err(e) => {
                    if e.kind() == io::ErrorKind::NotFound {
                        diags.push(Kind::ImportNotFound {
                            span: imp.span,
                            module,
                            path: path.display().to_string(),
                            is_std,
                        });
                    } else {
                        diags.push(Kind::CannotRead {
                            span: imp.span,
                            path: path.display().to_string(),
                            error: e.to_string(),
                        });
                    }
                    failed.insert(key, e);
                }
            }
        }
    }

    Loaded {
        sources,
        files,
        inventory: None,
        diags,
    }
}

/// An inventory file read and parsed ahead: (canonical path, path, text,
/// what parsing under a placeholder file id gave).
type Early = (PathBuf, PathBuf, String, (Inventory, Vec<Kind>));

/// Inventories: the `--endpoints` file first, then every `inventory` item
/// of every loaded file (relative to that file), merged.
fn load_inventories(
    loaded: &mut Loaded,
    inventory: Option<&Path>,
    mut early: Option<Early>,
    loader: &dyn SourceLoader,
    project: &[PathBuf],
) {
    let Loaded {
        sources,
        files,
        diags,
        ..
    } = loaded;
    let mut wanted: Vec<(PathBuf, Option<Span>)> = inventory
        .map(|p| (normalize(p), None))
        .into_iter()
        .collect();
    for f in files.iter() {
        let dir = sources
            .file(f.id)
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        for item in &f.ast.items {
            if let Item::Inventory(d) = item {
                wanted.push((normalize(&dir.join(&d.path)), Some(d.path_span)));
            }
        }
    }
    let mut merged: Option<Inventory> = None;
    let mut loaded_inv: BTreeMap<PathBuf, ()> = BTreeMap::new();
    for (path, at) in wanted {
        let key = loader.canonical(&path);
        if loaded_inv.insert(key.clone(), ()).is_some() {
            continue;
        }
        let ahead = early.take_if(|(k, p, _, _)| *k == key && *p == path);
        let loaded_text = match ahead {
            Some((_, _, text, parsed)) => Ok((text, Some(parsed))),
            None => loader
                .load_inventory(&path, at.map(|_| project))
                .map(|t| (t, None)),
        };
        let inv = match loaded_text {
            Ok((text, _)) if !looks_like_inventory(&text) => {
                // Quote a few characters, never the file: it may be
                // anything (`/proc/self/environ`).
                let excerpt = excerpt(&text);
                let id = sources.add(&path, excerpt.clone());
                diags.push(Kind::NotAnInventory {
                    span: Span::new(id, 0, excerpt.len()),
                    path: path.display().to_string(),
                });
                Inventory::default()
            }
            Ok((text, parsed)) => {
                let id = sources.add(&path, text);
                let (inv, errs) = match parsed {
                    Some((mut inv, errs)) if errs.is_empty() => {
                        inv.set_file(id);
                        (inv, errs)
                    }
                    _ => parse_inventory(id, &sources.file(id).text),
                };
                diags.extend(errs);
                inv
            }
            Err(refusal) => {
                let span = at.unwrap_or_else(|| Span::new(sources.add(&path, String::new()), 0, 0));
                diags.push(refused(span, &path, refusal));
                Inventory::default()
            }
        };
        let m = merged.get_or_insert_with(Inventory::default);
        m.endpoints.extend(inv.endpoints);
        // Each file's endpoints name its own namespaces (derived as it
        // was read): a name in two files is a duplicate (E0203).
        for (name, ns) in inv.namespaces {
            if let Some((_, first)) = m.namespaces.get(&name) {
                diags.push(Kind::Duplicate {
                    kind: crate::diagnostics::NameKind::Namespace,
                    name,
                    span: ns.1,
                    first: *first,
                });
            } else {
                m.namespaces.insert(name, ns);
            }
        }
    }
    loaded.inventory = merged;
}

/// The directories inventories of the program must be in: those of the
/// root files (named on the command line).
fn project_dirs(roots: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = roots
        .iter()
        .map(|r| match normalize(r).parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// An inventory is a JSON object of text: its first non-blank character is
/// `{` and it holds no control characters but blanks.
fn looks_like_inventory(text: &str) -> bool {
    text.trim_start().starts_with('{')
        && !text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
}

/// At most 16 characters of the first line, control characters shown as
/// `?`.
fn excerpt(text: &str) -> String {
    text.chars()
        .take_while(|c| *c != '\n')
        .take(16)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn refused(span: Span, path: &Path, refusal: InventoryRefusal) -> Kind {
    let path = path.display().to_string();
    match refusal {
        InventoryRefusal::Io(e) => Kind::CannotRead {
            span,
            path,
            error: e.to_string(),
        },
        InventoryRefusal::NotRegular { what } => Kind::InventoryNotRegular { span, path, what },
        InventoryRefusal::TooLarge { size } => Kind::InventoryTooLarge {
            span,
            path,
            size,
            limit: MAX_INVENTORY_BYTES,
        },
        InventoryRefusal::OutsideProject { project } => Kind::InventoryOutsideProject {
            span,
            path,
            project: project.iter().map(|d| d.display().to_string()).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    //! The `--endpoints` inventory is parsed ahead under a placeholder
    //! file id: its spans must end up on its real file, after every
    //! import, whether the file is good or has problems.
    use crate::check::check_program;
    use crate::source::MemoryLoader;
    use std::path::{Path, PathBuf};

    const MAIN: &str = "import lib\n\npolicy p {\n  applies to app == \"a\"\n  ingress {\n    allow tcp 80 from lib.b\n  }\n}\n";
    const LIB: &str = "selector b = app == \"b\"\n";

    fn check(inventory: &str) -> Vec<(String, String, String)> {
        let loader = MemoryLoader::new()
            .with("main.weir", MAIN)
            .with("lib.weir", LIB)
            .with("inv.json", inventory);
        let checked = check_program(
            &[PathBuf::from("main.weir")],
            &loader,
            Some(Path::new("inv.json")),
        );
        checked
            .diagnostics
            .iter()
            .map(|d| {
                let f = checked.sources.file(d.primary.span.file);
                let text = &f.text[d.primary.span.start as usize..d.primary.span.end as usize];
                (d.code.as_str().to_string(), f.name(), text.to_string())
            })
            .collect()
    }

    #[test]
    fn good_inventory_spans_are_on_the_inventory_file() {
        let inv = r#"{"endpoints": [
            {"name": "a1", "labels": {"app": "a"}, "addrs": ["10.0.0.1"]},
            {"name": "a1", "labels": {"app": "b"}, "addrs": ["10.0.0.2"]}
        ]}"#;
        let d = check(inv);
        assert!(
            d.iter().any(|(code, file, text)| code == "E0203"
                && file.ends_with("inv.json")
                && text == "\"a1\""),
            "{d:?}"
        );
    }

    #[test]
    fn inventory_problems_are_reported_on_the_inventory_file() {
        let inv = r#"{"endpoints": [
            {"name": "a1", "labels": {"app": "a"}, "addrs": ["10.0.0.300"]}
        ]}"#;
        let d = check(inv);
        assert!(
            d.iter()
                .any(|(_, file, text)| file.ends_with("inv.json") && text == "\"10.0.0.300\""),
            "{d:?}"
        );
        let d = check("{\"endpoints\": [");
        assert!(
            d.iter().any(|(_, file, _)| file.ends_with("inv.json")),
            "{d:?}"
        );
    }
}
