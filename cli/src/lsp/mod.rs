//! `weir lsp`: the language server, over stdio (lsp-server + lsp-types).
//!
//! This module tree is the only code that knows LSP types. The loop is
//! synchronous: notifications update the document store and mark the
//! affected documents dirty; dirty documents are re-checked (and their
//! diagnostics published) as soon as no more messages are queued, or
//! before a request is answered. Every handler runs under `catch_unwind`:
//! a panic answers that one request with an error and the server goes on.
//!
//! - [`docs`]: open documents, incremental edits, the overlay loader;
//! - [`analysis`]: one checked program per open document, symbol index;
//! - [`workspace`]: the client's workspace folders and their `.weir`
//!   files (find-references searches them, not only open documents);
//! - [`convert`]: URIs, positions, diagnostics;
//! - one file per feature: [`hover`], [`navigate`], [`completion`],
//!   [`symbols`], [`actions`]; formatting calls `weir_compiler::fmt`.

mod actions;
mod analysis;
mod completion;
mod convert;
mod docs;
mod hover;
mod navigate;
mod symbols;
mod workspace;

use analysis::Analysis;
use docs::Documents;
use lsp_server::{Connection, ErrorCode, Message, Notification, Request, RequestId, Response};
use lsp_types::notification::{self as notif, Notification as _};
use lsp_types::request::{self as req, Request as _};
use lsp_types::*;
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Talk over stdin/stdout (the default and only transport).
    #[arg(long)]
    pub stdio: bool,
}

pub fn run(_args: Args) -> i32 {
    let (conn, io) = Connection::stdio();
    let code = match serve(&conn) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("weir lsp: {e}");
            1
        }
    };
    drop(conn);
    let _ = io.join();
    code
}

pub fn capabilities() -> ServerCapabilities {
    ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Options(
            TextDocumentSyncOptions {
                open_close: Some(true),
                change: Some(TextDocumentSyncKind::INCREMENTAL),
                save: Some(TextDocumentSyncSaveOptions::Supported(true)),
                ..Default::default()
            },
        )),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        definition_provider: Some(OneOf::Left(true)),
        references_provider: Some(OneOf::Left(true)),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(vec!["\"".into(), " ".into()]),
            ..Default::default()
        }),
        document_symbol_provider: Some(OneOf::Left(true)),
        document_formatting_provider: Some(OneOf::Left(true)),
        code_action_provider: Some(CodeActionProviderCapability::Simple(true)),
        ..Default::default()
    }
}

fn serve(conn: &Connection) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // `Connection::initialize` wraps its argument in `{"capabilities": …}`
    // itself; the whole InitializeResult goes through `initialize_finish`.
    let (id, params) = conn.initialize_start()?;
    let result = InitializeResult {
        capabilities: capabilities(),
        server_info: Some(ServerInfo {
            name: "weir".to_string(),
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
        }),
    };
    conn.initialize_finish(id, serde_json::to_value(result)?)?;
    let mut server = Server::new();
    server.roots = workspace::roots(&params);
    loop {
        let msg = if server.dirty.is_empty() {
            match conn.receiver.recv() {
                Ok(m) => m,
                Err(_) => return Ok(()),
            }
        } else {
            match conn.receiver.try_recv() {
                Ok(m) => m,
                Err(e) if e.is_empty() => {
                    server.recheck(conn);
                    continue;
                }
                Err(_) => return Ok(()),
            }
        };
        match msg {
            Message::Request(r) => {
                if conn.handle_shutdown(&r)? {
                    return Ok(());
                }
                server.recheck(conn);
                let resp = server.request(r);
                conn.sender.send(Message::Response(resp))?;
            }
            // `exit` without `shutdown` first: the spec's exit code 1.
            Message::Notification(n) if n.method == notif::Exit::METHOD => {
                return Err("exit notification before shutdown".into());
            }
            Message::Notification(n) => {
                let method = n.method.clone();
                if catch_unwind(AssertUnwindSafe(|| server.notification(conn, n))).is_err() {
                    eprintln!("weir lsp: internal error while handling {method}");
                }
            }
            Message::Response(_) => {}
        }
    }
}

/// Runs a request handler, turning a panic into an error response.
fn guarded<P, R>(id: RequestId, req: Request, f: impl FnOnce(P) -> R) -> Response
where
    P: serde::de::DeserializeOwned,
    R: serde::Serialize,
{
    let params: P = match serde_json::from_value(req.params) {
        Ok(p) => p,
        Err(e) => {
            return Response::new_err(id, ErrorCode::InvalidParams as i32, e.to_string());
        }
    };
    match catch_unwind(AssertUnwindSafe(|| f(params))) {
        Ok(r) => Response::new_ok(id, r),
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Response::new_err(
                id,
                ErrorCode::InternalError as i32,
                format!("internal error in {}: {what}", req.method),
            )
        }
    }
}

pub struct Server {
    docs: Documents,
    analyses: BTreeMap<PathBuf, Analysis>,
    dirty: BTreeSet<PathBuf>,
    stdlib: Option<PathBuf>,
    /// The workspace folders named at `initialize`.
    roots: Vec<PathBuf>,
}

impl Server {
    fn new() -> Server {
        let stdlib = crate::loader::stdlib_dir()
            .map(|d| std::fs::canonicalize(&d).unwrap_or(d))
            .map(|d| weir_compiler::source::normalize(&d));
        Server {
            docs: Documents::default(),
            analyses: BTreeMap::new(),
            dirty: BTreeSet::new(),
            stdlib,
            roots: Vec::new(),
        }
    }

    /// Marks `path` and every open document that loaded it for re-checking.
    fn touch(&mut self, path: &Path) {
        let path = weir_compiler::source::normalize(path);
        if self.docs.get(&path).is_some() {
            self.dirty.insert(path.clone());
        }
        for (root, a) in &self.analyses {
            if a.loaded.contains(&path) {
                self.dirty.insert(root.clone());
            }
        }
    }

    fn notification(&mut self, conn: &Connection, n: Notification) {
        match n.method.as_str() {
            notif::DidOpenTextDocument::METHOD => {
                let Ok(p) = serde_json::from_value::<DidOpenTextDocumentParams>(n.params) else {
                    return;
                };
                if let Some(path) = convert::uri_to_path(&p.text_document.uri) {
                    self.docs
                        .open(path.clone(), p.text_document.text, p.text_document.version);
                    self.touch(&path);
                }
            }
            notif::DidChangeTextDocument::METHOD => {
                let Ok(p) = serde_json::from_value::<DidChangeTextDocumentParams>(n.params) else {
                    return;
                };
                if let Some(path) = convert::uri_to_path(&p.text_document.uri) {
                    self.docs
                        .change(&path, p.text_document.version, p.content_changes);
                    self.touch(&path);
                }
            }
            notif::DidSaveTextDocument::METHOD => {
                let Ok(p) = serde_json::from_value::<DidSaveTextDocumentParams>(n.params) else {
                    return;
                };
                if let Some(path) = convert::uri_to_path(&p.text_document.uri) {
                    if let Some(text) = p.text {
                        let version = self.docs.get(&path).map_or(0, |d| d.version);
                        self.docs.open(path.clone(), text, version);
                    }
                    self.touch(&path);
                }
            }
            notif::DidCloseTextDocument::METHOD => {
                let Ok(p) = serde_json::from_value::<DidCloseTextDocumentParams>(n.params) else {
                    return;
                };
                if let Some(path) = convert::uri_to_path(&p.text_document.uri) {
                    self.docs.close(&path);
                    self.analyses.remove(&path);
                    self.dirty.remove(&path);
                    publish(conn, p.text_document.uri, Vec::new(), None);
                    // Others may import it: they read the disk now.
                    self.touch(&path);
                }
            }
            _ => {}
        }
    }

    /// Re-checks every dirty open document and publishes its diagnostics.
    fn recheck(&mut self, conn: &Connection) {
        let dirty = std::mem::take(&mut self.dirty);
        for root in dirty {
            let Some(doc) = self.docs.get(&root) else {
                continue;
            };
            let version = doc.version;
            let (docs, stdlib) = (&self.docs, self.stdlib.clone());
            let result = catch_unwind(AssertUnwindSafe(|| Analysis::run(&root, docs, stdlib)));
            let Ok(a) = result else {
                eprintln!("weir lsp: internal error while checking {}", root.display());
                continue;
            };
            let diags = diagnostics(&a);
            publish(conn, convert::path_to_uri(&root), diags, Some(version));
            self.analyses.insert(root, a);
        }
    }

    /// The analysis that knows `uri`'s file: its own, or one that loaded it.
    fn analysis(&self, uri: &Uri) -> Option<(&Analysis, weir_grammar::FileId)> {
        let path = convert::uri_to_path(uri)?;
        if let Some(a) = self.analyses.get(&path) {
            return Some((a, a.root_id));
        }
        self.analyses
            .values()
            .find_map(|a| a.file_id(&path).map(|id| (a, id)))
    }

    fn position(
        &self,
        p: &TextDocumentPositionParams,
    ) -> Option<(&Analysis, weir_grammar::FileId, usize)> {
        let (a, id) = self.analysis(&p.text_document.uri)?;
        let f = a.checked.sources.get(id)?;
        Some((a, id, convert::offset(f, p.position)))
    }

    /// The programs of workspace files that are not open and mention
    /// `name` (without a workspace, those beside the defining file).
    fn workspace_programs(
        &self,
        a: &Analysis,
        name: &str,
        def_file: weir_grammar::FileId,
    ) -> Vec<Analysis> {
        let roots = if self.roots.is_empty() {
            let def_path = &a.checked.sources.file(def_file).path;
            def_path
                .parent()
                .map(Path::to_path_buf)
                .into_iter()
                .collect()
        } else {
            self.roots.clone()
        };
        workspace::programs_mentioning(
            &roots,
            name,
            &self.analyses,
            &self.docs,
            self.stdlib.clone(),
        )
    }

    fn request(&mut self, r: Request) -> Response {
        let id = r.id.clone();
        match r.method.as_str() {
            req::HoverRequest::METHOD => guarded(id, r, |p: HoverParams| {
                let (a, file, off) = self.position(&p.text_document_position_params)?;
                let text = hover::hover(a, file, off)?;
                Some(Hover {
                    contents: HoverContents::Markup(MarkupContent {
                        kind: MarkupKind::Markdown,
                        value: text,
                    }),
                    range: None,
                })
            }),
            req::GotoDefinition::METHOD => guarded(id, r, |p: GotoDefinitionParams| {
                let (a, file, off) = self.position(&p.text_document_position_params)?;
                navigate::definition(a, file, off).map(GotoDefinitionResponse::Scalar)
            }),
            req::References::METHOD => guarded(id, r, |p: ReferenceParams| {
                let (a, file, off) = self.position(&p.text_document_position)?;
                let def = navigate::def_at(a, file, off)?;
                let others = self.workspace_programs(a, &def.name, def.name_span.file);
                Some(navigate::references(
                    a,
                    self.analyses.values().chain(&others),
                    def,
                    p.context.include_declaration,
                ))
            }),
            req::Completion::METHOD => guarded(id, r, |p: CompletionParams| {
                let pos = &p.text_document_position;
                let (a, _) = self.analysis(&pos.text_document.uri)?;
                let path = convert::uri_to_path(&pos.text_document.uri)?;
                // The live text (the analysis may lag behind by nothing,
                // but the open document is the truth).
                let text = self.docs.get(&path).map(|d| d.text.clone())?;
                let f = weir_compiler::source::SourceFile::new(path, text);
                let off = convert::offset(&f, pos.position);
                let line_start = f.line_range(f.line_index(off)).start;
                // Space and `"` are trigger characters so that `from ` and
                // `app == "` offer names and values at once; where nothing
                // specific fits, typing one must not pop up every keyword.
                let typed = p
                    .context
                    .as_ref()
                    .is_some_and(|c| c.trigger_kind == CompletionTriggerKind::TRIGGER_CHARACTER);
                let items = completion::complete(a, &f.text[line_start..off], typed);
                Some(CompletionResponse::Array(items))
            }),
            req::DocumentSymbolRequest::METHOD => guarded(id, r, |p: DocumentSymbolParams| {
                let (a, id) = self.analysis(&p.text_document.uri)?;
                let f = a.checked.sources.get(id)?;
                let ast = a.ast(id)?;
                Some(DocumentSymbolResponse::Nested(symbols::outline(f, ast)))
            }),
            req::Formatting::METHOD => guarded(id, r, |p: DocumentFormattingParams| {
                let path = convert::uri_to_path(&p.text_document.uri)?;
                let text = &self.docs.get(&path)?.text;
                let formatted = weir_compiler::fmt::format(text).ok()?;
                if &formatted == text {
                    return Some(Vec::new());
                }
                let f = weir_compiler::source::SourceFile::new(path, text.clone());
                Some(vec![TextEdit {
                    range: convert::range(&f, 0, f.text.len()),
                    new_text: formatted,
                }])
            }),
            req::CodeActionRequest::METHOD => guarded(id, r, |p: CodeActionParams| {
                let (a, id) = self.analysis(&p.text_document.uri)?;
                let f = a.checked.sources.get(id)?;
                let ast = a.ast(id)?;
                Some(actions::actions(
                    &p.text_document.uri,
                    f,
                    ast,
                    &p.context.diagnostics,
                ))
            }),
            _ => Response::new_err(
                id,
                ErrorCode::MethodNotFound as i32,
                format!("unsupported request {}", r.method),
            ),
        }
    }
}

/// The diagnostics of an analysis's root file, as `weir check` reports
/// them (checker and decision graph).
fn diagnostics(a: &Analysis) -> Vec<lsp_types::Diagnostic> {
    let sources = &a.checked.sources;
    a.checked
        .diagnostics
        .iter()
        .filter(|d| d.primary.span.file == a.root_id)
        .map(|d| convert::diagnostic(d, sources))
        .collect()
}

fn publish(
    conn: &Connection,
    uri: Uri,
    diagnostics: Vec<lsp_types::Diagnostic>,
    version: Option<i32>,
) {
    let params = PublishDiagnosticsParams {
        uri,
        diagnostics,
        version,
    };
    let n = Notification::new(notif::PublishDiagnostics::METHOD.to_string(), params);
    let _ = conn.sender.send(Message::Notification(n));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn a_panicking_handler_answers_with_an_error() {
        let req = Request::new(RequestId::from(1), "x".to_string(), Value::Null);
        let resp = guarded(RequestId::from(1), req, |_: Value| -> Option<()> {
            panic!("boom")
        });
        let err = resp.response_result.expect_err("an error response");
        assert_eq!(err.code, ErrorCode::InternalError as i32);
        assert!(err.message.contains("boom"));
    }

    /// A generated policy of about 5,000 lines.
    fn big_policy() -> String {
        let mut s = String::from("import std.dns\n\n");
        for i in 0..600 {
            s.push_str(&format!(
                "selector s{i} = app == \"a{i}\" && tier in {{ \"x\", \"y\" }}\n"
            ));
        }
        for i in 0..600 {
            s.push_str(&format!(
                "endpoint e{i} {{ labels {{ app: \"a{i}\", tier: \"x\" }} addr 10.{}.{}.1 }}\n",
                i / 200,
                i % 200
            ));
        }
        for i in 0..600 {
            s.push_str(&format!(
                "policy p{i} priority {i} {{\n  applies to s{i}\n  ingress {{\n    allow tcp 80 from s{}\n    allow tcp {{ 443, 8000-8080 }} from 10.0.0.0/8\n    deny from any log\n  }}\n}}\n",
                (i + 1) % 600
            ));
        }
        s
    }

    /// `cargo test -p weir --release -- --ignored recheck_time --nocapture`
    #[test]
    #[ignore]
    fn recheck_time() {
        let text = big_policy();
        let lines = text.lines().count();
        let path = std::env::temp_dir().join("weir-bench/big.weir");
        let mut docs = Documents::default();
        docs.open(path.clone(), text.clone(), 1);
        let stdlib = crate::loader::stdlib_dir();
        let a = Analysis::run(&path, &docs, stdlib.clone());
        assert!(
            !a.checked.has_errors(),
            "{:?}",
            a.checked.diagnostics.first()
        );
        let mut times = Vec::new();
        for round in 0..5 {
            // An edit, as the editor would send it, then the full re-check.
            let t0 = std::time::Instant::now();
            docs.change(
                &path,
                round + 2,
                vec![TextDocumentContentChangeEvent {
                    range: Some(Range::new(Position::new(2, 0), Position::new(2, 0))),
                    range_length: None,
                    text: format!("# edit {round}\n"),
                }],
            );
            let a = Analysis::run(&path, &docs, stdlib.clone());
            let d = diagnostics(&a);
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            times.push(ms);
            eprintln!("round {round}: {ms:.1} ms ({} diagnostics)", d.len());
        }
        times.sort_by(f64::total_cmp);
        eprintln!(
            "{lines} lines: median re-check + diagnostics {:.1} ms",
            times[2]
        );
    }
}
