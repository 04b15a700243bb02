//! End to end: spawn `weir lsp`, speak JSON-RPC over its stdio like an
//! editor that knows nothing but the protocol, snapshot the answers.

use lsp_server::{Message, Notification, Request, RequestId};
use serde_json::{json, Value};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const LIB: &str = "# Shared definitions.
selector web = app == \"web\"

endpoint web-1 { labels { app: \"web\" } addr 10.1.0.5 }
endpoint api-1 { labels { app: \"api\", note: \"x\" } addr 10.1.1.5 }
";

const MAIN: &str = "# Main policy. ✓
import lib
import std.dns

selector local = app == \"api\" && note != \"é𝄞\" || wep
set corp = {10.0.0.0/8} except {192.168.0.0/16}

policy api-in priority 100 {
  applies to local
  ingress {
    allow tcp 8080 from web
    allow tcp {8080, 9090} from corp log
  }
}
";

struct Client {
    child: Child,
    stdin: ChildStdin,
    rx: mpsc::Receiver<Message>,
    next_id: i32,
    ws: PathBuf,
    stdlib: PathBuf,
}

impl Client {
    fn start(ws: &Path, stdlib: &Path) -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("lsp")
            .env("WEIR_STDLIB", stdlib)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn weir lsp");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            while let Ok(Some(m)) = Message::read(&mut r) {
                if tx.send(m).is_err() {
                    break;
                }
            }
        });
        Client {
            child,
            stdin,
            rx,
            next_id: 0,
            ws: ws.to_path_buf(),
            stdlib: stdlib.to_path_buf(),
        }
    }

    fn send(&mut self, m: Message) {
        m.write(&mut self.stdin).unwrap();
        self.stdin.flush().unwrap();
    }

    fn recv(&self) -> Message {
        self.rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server answers within 30 s")
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(Message::Notification(Notification::new(
            method.into(),
            params,
        )));
    }

    /// Sends a request whose result must be exactly an LSP `T` (checked on
    /// the raw answer) and returns it with stable paths.
    fn request_as<T>(&mut self, method: &str, params: Value) -> Value
    where
        T: serde::de::DeserializeOwned + serde::Serialize,
    {
        let v = self.request_raw(method, params);
        spec::<T>(&v);
        self.stable(v)
    }

    /// Sends a request and returns its result (or error), as JSON.
    fn request(&mut self, method: &str, params: Value) -> Value {
        let v = self.request_raw(method, params);
        self.stable(v)
    }

    fn request_raw(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = RequestId::from(self.next_id);
        self.send(Message::Request(Request::new(
            id.clone(),
            method.into(),
            params,
        )));
        loop {
            if let Message::Response(r) = self.recv() {
                if r.id == id {
                    let v = match r.response_result {
                        Err(e) => json!({ "error": e.message }),
                        Ok(v) => v,
                    };
                    return v;
                }
            }
        }
    }

    /// The next diagnostics published for `uri` (as sent).
    fn diagnostics(&mut self, uri: &str) -> Value {
        loop {
            if let Message::Notification(n) = self.recv() {
                if n.method == "textDocument/publishDiagnostics" && n.params["uri"] == uri {
                    return n.params;
                }
            }
        }
    }

    /// Replaces the temporary workspace and the stdlib paths.
    fn stable(&self, v: Value) -> Value {
        let s = v.to_string();
        let s = s.replace(&uri(&self.stdlib), "file://<stdlib>");
        let s = s.replace(&uri(&self.ws), "file://<ws>");
        let s = s.replace(self.stdlib.to_str().unwrap(), "<stdlib>");
        let s = s.replace(self.ws.to_str().unwrap(), "<ws>");
        serde_json::from_str(&s).unwrap()
    }
}

fn uri(p: &Path) -> String {
    format!("file://{}", p.display())
}

/// 0-based (line, UTF-16 column) of the first `needle` in `text`.
fn pos(text: &str, needle: &str) -> Value {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not in text"));
    let line = text[..at].matches('\n').count();
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let col: usize = text[start..at].chars().map(char::len_utf16).sum();
    json!({ "line": line, "character": col })
}

fn at(uri: &str, text: &str, needle: &str) -> Value {
    json!({ "textDocument": { "uri": uri }, "position": pos(text, needle) })
}

/// `v` has exactly the shape of the LSP 3.17 type `T` (lsp-types' serde
/// model of the specification): it reads as `T` and writes back unchanged,
/// so no field is misplaced or unknown (serde would ignore an unknown one).
fn spec<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) {
    let t: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("not a {}: {e}\n{v:#}", std::any::type_name::<T>()));
    let back = serde_json::to_value(t).unwrap();
    assert_eq!(&back, v, "not exactly a {}", std::any::type_name::<T>());
}

fn snap(name: &str, v: &Value) {
    insta::with_settings!({ snapshot_path => "../../snapshots/lsp", prepend_module_to_snapshot => false }, {
        insta::assert_json_snapshot!(name, v);
    });
}

#[test]
fn editor_session() {
    let ws = std::env::temp_dir().join(format!("weir-lsp-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ws);
    std::fs::create_dir_all(&ws).unwrap();
    let ws = std::fs::canonicalize(&ws).unwrap();
    let stdlib =
        std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../stdlib-policies"))
            .unwrap();
    std::fs::write(ws.join("lib.weir"), LIB).unwrap();
    // On disk main.weir is different: the open document must win.
    std::fs::write(ws.join("main.weir"), "selector stale = all\n").unwrap();
    let lib_uri = uri(&ws.join("lib.weir"));
    let main_uri = uri(&ws.join("main.weir"));

    let mut c = Client::start(&ws, &stdlib);
    let init = c.request_as::<lsp_types::InitializeResult>(
        "initialize",
        json!({ "capabilities": {}, "rootUri": uri(&ws) }),
    );
    snap("initialize", &init);
    // InitializeResult (LSP 3.17): `capabilities` is the ServerCapabilities
    // object itself, not a second wrapper.
    assert_eq!(init["capabilities"]["hoverProvider"], true, "{init:#}");
    assert_eq!(init["serverInfo"]["name"], "weir", "{init:#}");
    c.notify("initialized", json!({}));

    for (u, text) in [(&lib_uri, LIB), (&main_uri, MAIN)] {
        c.notify(
            "textDocument/didOpen",
            json!({ "textDocument": {
            "uri": u, "languageId": "weir", "version": 1, "text": text } }),
        );
    }
    // An error (unknown name, with a suggestion) and a warning (`except`
    // outside its base, with related information).
    let diags = c.diagnostics(&main_uri);
    spec::<lsp_types::PublishDiagnosticsParams>(&diags);
    snap("diagnostics_open", &c.stable(diags.clone()));
    let ds = diags["diagnostics"].as_array().unwrap();
    assert!(ds.iter().any(|d| d["code"] == "E0201"), "{diags:#}");
    assert!(ds.iter().any(|d| d["code"] == "W0303"), "{diags:#}");

    // The quick fix the "did you mean" suggests.
    let actions = c.request_as::<lsp_types::CodeActionResponse>(
        "textDocument/codeAction",
        json!({
            "textDocument": { "uri": main_uri },
            "range": ds[0]["range"],
            "context": { "diagnostics": ds },
        }),
    );
    snap("code_actions", &actions);

    // Incremental edits (UTF-16 columns: the line holds `é𝄞`) fix both.
    let w = pos(MAIN, "wep");
    let fixed1 = MAIN.replacen("wep", "web", 1);
    let x = pos(&fixed1, "192.168.0.0/16");
    let range = |p: &Value, len: u64| {
        json!({ "start": p, "end": {
        "line": p["line"], "character": p["character"].as_u64().unwrap() + len } })
    };
    c.notify(
        "textDocument/didChange",
        json!({
            "textDocument": { "uri": main_uri, "version": 2 },
            "contentChanges": [
                { "range": range(&w, 3), "text": "web" },
                { "range": range(&x, 14), "text": "10.99.0.0/16" },
            ],
        }),
    );
    let fixed = fixed1.replacen("192.168.0.0/16", "10.99.0.0/16", 1);
    let diags = c.diagnostics(&main_uri);
    assert_eq!(diags["version"], 2);
    assert_eq!(diags["diagnostics"], json!([]), "{diags:#}");

    let hover = c.request_as::<lsp_types::Hover>(
        "textDocument/hover",
        at(&main_uri, &fixed, "local\n  ingress").pipe(|mut v| {
            v["position"] = pos(&fixed, "local\n  ingress");
            v
        }),
    );
    snap("hover_selector", &hover);
    let hover_rule = c.request("textDocument/hover", at(&main_uri, &fixed, "{8080"));
    snap("hover_rule", &hover_rule);

    // Cross-file: `web` is defined in lib.weir; the import jumps to the stdlib.
    let def = c.request_as::<lsp_types::GotoDefinitionResponse>(
        "textDocument/definition",
        at(&main_uri, &fixed, "web\n"),
    );
    snap("definition_cross_file", &def);
    let def_import = c.request("textDocument/definition", at(&main_uri, &fixed, "std.dns"));
    snap("definition_import", &def_import);

    let mut refs_params = at(&lib_uri, LIB, "web =");
    refs_params["context"] = json!({ "includeDeclaration": true });
    let refs = c.request_as::<Vec<lsp_types::Location>>("textDocument/references", refs_params);
    snap("references", &refs);
    assert_eq!(refs.as_array().unwrap().len(), 3, "definition and two uses");

    // Label values after `app == `; everything else on a fresh line.
    let mut p = at(&main_uri, &fixed, "\"api\" &&");
    p["context"] = json!({ "triggerKind": 1 });
    let values = c.request_as::<lsp_types::CompletionResponse>("textDocument/completion", p);
    snap("completion_values", &values);
    let labels = |v: &Value| -> Vec<String> {
        let items = v.as_array().unwrap().iter();
        items
            .map(|i| i["label"].as_str().unwrap().to_string())
            .collect()
    };
    // A fresh line: keywords, names and label keys.
    let mut p = at(&main_uri, &fixed, "set corp");
    p["context"] = json!({ "triggerKind": 1 });
    let all = labels(&c.request_as::<lsp_types::CompletionResponse>("textDocument/completion", p));
    for want in [
        "web", "local", "corp", "web-1", "api-in", "app", "note", "policy", "allow",
    ] {
        assert!(all.iter().any(|l| l == want), "{want} missing from {all:?}");
    }
    // The same place reached by typing a space: nothing specific fits, so
    // nothing pops up.
    let mut p = at(&main_uri, &fixed, "set corp");
    p["context"] = json!({ "triggerKind": 2, "triggerCharacter": " " });
    let typed =
        labels(&c.request_as::<lsp_types::CompletionResponse>("textDocument/completion", p));
    assert!(typed.is_empty(), "{typed:?}");
    // After `applies to `: selectors, label keys and `all` only.
    let mut p = at(&main_uri, &fixed, "local\n  ingress");
    p["context"] = json!({ "triggerKind": 1 });
    let sel = labels(&c.request_as::<lsp_types::CompletionResponse>("textDocument/completion", p));
    assert_eq!(
        sel,
        [
            "local",
            "web",
            "std-kube-dns",
            "app",
            "k8s-app",
            "note",
            "all"
        ],
        "{sel:?}"
    );

    let symbols = c.request_as::<lsp_types::DocumentSymbolResponse>(
        "textDocument/documentSymbol",
        json!({ "textDocument": { "uri": main_uri } }),
    );
    snap("document_symbols", &symbols);

    let fmt = c.request_as::<Vec<lsp_types::TextEdit>>(
        "textDocument/formatting",
        json!({
            "textDocument": { "uri": main_uri },
            "options": { "tabSize": 2, "insertSpaces": true },
        }),
    );
    snap("formatting", &fmt);

    let shutdown = c.request("shutdown", Value::Null);
    assert_eq!(shutdown, Value::Null);
    c.notify("exit", Value::Null);
    let status = c.child.wait().unwrap();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(&ws);
}

trait Pipe: Sized {
    fn pipe<R>(self, f: impl FnOnce(Self) -> R) -> R {
        f(self)
    }
}
impl<T> Pipe for T {}
