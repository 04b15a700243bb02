// weir for VS Code: starts `weir lsp` and connects it to the editor.
//
// A small Language Server Protocol client written against the `vscode` API
// alone (no vscode-languageclient), so the extension installs by copying or
// linking this folder: nothing to fetch, nothing to build. It speaks
// JSON-RPC over the server's stdio and maps what `weir lsp` offers:
// diagnostics, hover, definition, references, completion, document
// symbols, formatting and quick fixes. test/run.js drives it against the
// real server with a stand-in for the `vscode` module.
"use strict";
const vscode = require("vscode");
const { spawn } = require("child_process");

const SELECTOR = [{ scheme: "file", language: "weir" }];

/** JSON-RPC 2.0 over a child's stdio, with LSP's Content-Length framing. */
class Connection {
  constructor(child, onNotification, log) {
    this.child = child;
    this.next = 1;
    this.pending = new Map();
    this.buf = Buffer.alloc(0);
    this.onNotification = onNotification;
    this.log = log;
    child.stdout.on("data", (d) => this.data(d));
    child.stderr.on("data", (d) => log(d.toString()));
    const fail = (why) => {
      for (const [, p] of this.pending) p.reject(new Error(why));
      this.pending.clear();
    };
    child.on("exit", (code) => fail(`weir lsp exited (${code})`));
    child.on("error", (e) => fail(`weir lsp: ${e.message}`));
    child.stdin.on("error", () => {}); // a dead server: requests fail above
  }

  data(chunk) {
    this.buf = Buffer.concat([this.buf, chunk]);
    for (;;) {
      const end = this.buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      const m = /Content-Length: *(\d+)/i.exec(this.buf.slice(0, end).toString("ascii"));
      const len = m ? Number(m[1]) : 0;
      if (this.buf.length < end + 4 + len) return;
      const body = this.buf.slice(end + 4, end + 4 + len).toString("utf8");
      this.buf = this.buf.slice(end + 4 + len);
      this.message(JSON.parse(body));
    }
  }

  message(msg) {
    if (msg.id !== undefined && msg.method === undefined) {
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (!p) return;
      if (msg.error) p.reject(new Error(msg.error.message));
      else p.resolve(msg.result);
    } else if (msg.id !== undefined) {
      // A request from the server: weir sends none; answer per the spec.
      this.write({ jsonrpc: "2.0", id: msg.id, error: { code: -32601, message: "unsupported" } });
    } else {
      this.onNotification(msg.method, msg.params);
    }
  }

  write(msg) {
    const body = Buffer.from(JSON.stringify(msg), "utf8");
    this.child.stdin.write(`Content-Length: ${body.length}\r\n\r\n`);
    this.child.stdin.write(body);
  }

  request(method, params) {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.write({ jsonrpc: "2.0", id, method, params });
    });
  }

  notify(method, params) {
    this.write({ jsonrpc: "2.0", method, params });
  }
}

// Conversions between LSP (0-based, UTF-16, like VS Code) and vscode types.
const pos = (p) => new vscode.Position(p.line, p.character);
const range = (r) => new vscode.Range(pos(r.start), pos(r.end));
const lspPos = (p) => ({ line: p.line, character: p.character });
const lspRange = (r) => ({ start: lspPos(r.start), end: lspPos(r.end) });
const location = (l) => new vscode.Location(vscode.Uri.parse(l.uri), range(l.range));
const docId = (doc) => ({ uri: doc.uri.toString() });
const at = (doc, p) => ({ textDocument: docId(doc), position: lspPos(p) });
// LSP severities are 1..4 (Error first); vscode's are 0..3.
const severity = (s) => (s ? s - 1 : vscode.DiagnosticSeverity.Error);

function diagnostic(d) {
  const out = new vscode.Diagnostic(range(d.range), d.message, severity(d.severity));
  out.code = d.code;
  out.source = d.source;
  out.relatedInformation = (d.relatedInformation || []).map(
    (r) => new vscode.DiagnosticRelatedInformation(location(r.location), r.message)
  );
  return out;
}

function lspDiagnostic(d) {
  return {
    range: lspRange(d.range),
    severity: d.severity + 1,
    code: typeof d.code === "object" && d.code ? d.code.value : d.code,
    source: d.source,
    message: d.message,
  };
}

function symbol(s) {
  const out = new vscode.DocumentSymbol(
    s.name, s.detail || "", s.kind - 1, range(s.range), range(s.selectionRange)
  );
  out.children = (s.children || []).map(symbol);
  return out;
}

function completion(i) {
  const out = new vscode.CompletionItem(i.label, i.kind ? i.kind - 1 : undefined);
  out.detail = i.detail;
  if (i.insertText !== undefined) out.insertText = i.insertText;
  return out;
}

function codeAction(a) {
  const out = new vscode.CodeAction(a.title, vscode.CodeActionKind.QuickFix);
  out.isPreferred = a.isPreferred;
  if (a.edit && a.edit.changes) {
    out.edit = new vscode.WorkspaceEdit();
    for (const [uri, edits] of Object.entries(a.edit.changes)) {
      for (const e of edits) out.edit.replace(vscode.Uri.parse(uri), range(e.range), e.newText);
    }
  }
  if (a.diagnostics) out.diagnostics = a.diagnostics.map(diagnostic);
  return out;
}

const isWeir = (doc) => doc.languageId === "weir" && doc.uri.scheme === "file";

/** Registers document sync and the providers the server's capabilities
 * (InitializeResult.capabilities) announce, as vscode-languageclient does. */
function connect(context, conn, diagnostics, caps) {
  const sub = (d) => context.subscriptions.push(d);
  const open = (doc) =>
    isWeir(doc) &&
    conn.notify("textDocument/didOpen", {
      textDocument: { uri: doc.uri.toString(), languageId: "weir", version: doc.version, text: doc.getText() },
    });
  vscode.workspace.textDocuments.forEach(open);
  sub(vscode.workspace.onDidOpenTextDocument(open));
  sub(vscode.workspace.onDidChangeTextDocument((e) => {
    if (!isWeir(e.document) || e.contentChanges.length === 0) return;
    conn.notify("textDocument/didChange", {
      textDocument: { uri: e.document.uri.toString(), version: e.document.version },
      contentChanges: e.contentChanges.map((c) => ({ range: lspRange(c.range), text: c.text })),
    });
  }));
  sub(vscode.workspace.onDidSaveTextDocument((doc) =>
    isWeir(doc) && conn.notify("textDocument/didSave", { textDocument: docId(doc) })));
  sub(vscode.workspace.onDidCloseTextDocument((doc) => {
    if (!isWeir(doc)) return;
    conn.notify("textDocument/didClose", { textDocument: docId(doc) });
    diagnostics.delete(doc.uri);
  }));

  const L = vscode.languages;
  if (caps.hoverProvider) sub(L.registerHoverProvider(SELECTOR, {
    async provideHover(doc, p) {
      const h = await conn.request("textDocument/hover", at(doc, p));
      if (!h) return undefined;
      const value = typeof h.contents === "string" ? h.contents : h.contents.value;
      return new vscode.Hover(new vscode.MarkdownString(value), h.range && range(h.range));
    },
  }));
  if (caps.definitionProvider) sub(L.registerDefinitionProvider(SELECTOR, {
    async provideDefinition(doc, p) {
      const r = await conn.request("textDocument/definition", at(doc, p));
      if (!r) return undefined;
      return Array.isArray(r) ? r.map(location) : location(r);
    },
  }));
  if (caps.referencesProvider) sub(L.registerReferenceProvider(SELECTOR, {
    async provideReferences(doc, p, ctx) {
      const params = at(doc, p);
      params.context = { includeDeclaration: ctx.includeDeclaration };
      return ((await conn.request("textDocument/references", params)) || []).map(location);
    },
  }));
  if (caps.completionProvider) sub(L.registerCompletionItemProvider(SELECTOR, {
    async provideCompletionItems(doc, p, _token, ctx) {
      const params = at(doc, p);
      // vscode's trigger kinds are 0..2, LSP's 1..3.
      params.context = { triggerKind: ctx.triggerKind + 1, triggerCharacter: ctx.triggerCharacter };
      const r = await conn.request("textDocument/completion", params);
      const items = r ? (Array.isArray(r) ? r : r.items) : [];
      return items.map(completion);
    },
  }, ...(caps.completionProvider.triggerCharacters || [])));
  if (caps.documentSymbolProvider) sub(L.registerDocumentSymbolProvider(SELECTOR, {
    async provideDocumentSymbols(doc) {
      const r = await conn.request("textDocument/documentSymbol", { textDocument: docId(doc) });
      return (r || []).map(symbol);
    },
  }));
  if (caps.documentFormattingProvider) sub(L.registerDocumentFormattingEditProvider(SELECTOR, {
    async provideDocumentFormattingEdits(doc, options) {
      const r = await conn.request("textDocument/formatting", {
        textDocument: docId(doc),
        options: { tabSize: options.tabSize, insertSpaces: options.insertSpaces },
      });
      return (r || []).map((e) => vscode.TextEdit.replace(range(e.range), e.newText));
    },
  }));
  if (caps.codeActionProvider) sub(L.registerCodeActionsProvider(SELECTOR, {
    async provideCodeActions(doc, r, ctx) {
      const actions = await conn.request("textDocument/codeAction", {
        textDocument: docId(doc),
        range: lspRange(r),
        context: { diagnostics: ctx.diagnostics.map(lspDiagnostic) },
      });
      return (actions || []).map(codeAction);
    },
  }));
}

let conn;

async function activate(context) {
  const command = vscode.workspace.getConfiguration("weir").get("path") || "weir";
  const output = vscode.window.createOutputChannel("weir");
  const folders = vscode.workspace.workspaceFolders || [];
  const cwd = folders.length > 0 ? folders[0].uri.fsPath : undefined;
  const child = spawn(command, ["lsp"], { cwd, stdio: ["pipe", "pipe", "pipe"] });
  child.on("error", (e) => {
    output.appendLine(`weir: cannot start \`${command} lsp\`: ${e.message}`);
    vscode.window.showErrorMessage(
      `weir: cannot start \`${command} lsp\` (${e.message}); set "weir.path".`
    );
  });
  const diagnostics = vscode.languages.createDiagnosticCollection("weir");
  context.subscriptions.push(diagnostics, output);
  conn = new Connection(child, (method, params) => {
    if (method === "textDocument/publishDiagnostics") {
      diagnostics.set(vscode.Uri.parse(params.uri), params.diagnostics.map(diagnostic));
    }
  }, (text) => output.append(text));
  const init = await conn.request("initialize", {
    processId: process.pid,
    clientInfo: { name: "weir-vscode" },
    rootUri: folders.length > 0 ? folders[0].uri.toString() : null,
    workspaceFolders: folders.map((f) => ({ uri: f.uri.toString(), name: f.name })),
    capabilities: {
      textDocument: {
        synchronization: { didSave: true, dynamicRegistration: false },
        publishDiagnostics: { relatedInformation: true },
        hover: { contentFormat: ["markdown", "plaintext"] },
      },
    },
  });
  conn.notify("initialized", {});
  connect(context, conn, diagnostics, (init && init.capabilities) || {});
}

async function deactivate() {
  if (!conn) return;
  const c = conn;
  conn = undefined;
  try {
    await c.request("shutdown", null);
    c.notify("exit", null);
  } catch (_) {
    c.child.kill();
  }
}

module.exports = { activate, deactivate };
