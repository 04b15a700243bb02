// Drives extension.js against the real `weir lsp` ($WEIR_BIN, else `weir`
// on PATH) with a stand-in for VS Code's `vscode` module: the parts of the
// API the extension uses, recording what it registers and shows. Run by
// cli/tests/lsp_vscode.rs (`node editors/vscode/test/run.js`); exits
// non-zero on the first failed check. This checks the extension's protocol
// half; it is not VS Code itself.
"use strict";
const assert = require("assert");
const fs = require("fs");
const os = require("os");
const path = require("path");
const Module = require("module");

// ---- the stand-in `vscode` module --------------------------------------
class Position { constructor(line, character) { this.line = line; this.character = character; } }
class Range { constructor(start, end) { this.start = start; this.end = end; } }
class Location { constructor(uri, range) { this.uri = uri; this.range = range; } }
class MarkdownString { constructor(value) { this.value = value; } }
class Hover { constructor(contents, range) { this.contents = contents; this.range = range; } }
class CompletionItem { constructor(label, kind) { this.label = label; this.kind = kind; } }
class Diagnostic {
  constructor(range, message, severity) { this.range = range; this.message = message; this.severity = severity; }
}
class DiagnosticRelatedInformation { constructor(location, message) { this.location = location; this.message = message; } }
class DocumentSymbol {
  constructor(name, detail, kind, range, selectionRange) {
    Object.assign(this, { name, detail, kind, range, selectionRange, children: [] });
  }
}
class CodeAction { constructor(title, kind) { this.title = title; this.kind = kind; } }
class WorkspaceEdit {
  constructor() { this.edits = []; }
  replace(uri, range, newText) { this.edits.push({ uri, range, newText }); }
}
const TextEdit = { replace: (range, newText) => ({ range, newText }) };
function uri(s) {
  const m = /^([a-z]+):\/\/(.*)$/.exec(s);
  return { scheme: m[1], fsPath: decodeURIComponent(m[2]), toString: () => s };
}
const Uri = {
  parse: uri,
  file: (p) => uri("file://" + p.split("/").map(encodeURIComponent).join("/")),
};

const listeners = { open: [], change: [], save: [], close: [] };
const on = (k) => (f) => { listeners[k].push(f); return { dispose() {} }; };
const providers = {};
const reg = (k) => (selector, provider, ...triggers) => {
  providers[k] = { selector, provider, triggers };
  return { dispose() {} };
};
const shown = { diagnostics: new Map(), errors: [] };
const documents = [];
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weir-vscode-"));

const vscode = {
  Position, Range, Location, MarkdownString, Hover, CompletionItem, Diagnostic,
  DiagnosticRelatedInformation, DocumentSymbol, CodeAction, WorkspaceEdit, TextEdit, Uri,
  DiagnosticSeverity: { Error: 0, Warning: 1, Information: 2, Hint: 3 },
  CodeActionKind: { QuickFix: "quickfix" },
  workspace: {
    textDocuments: documents,
    workspaceFolders: [{ uri: Uri.file(dir), name: "ws" }],
    getConfiguration: () => ({ get: () => process.env.WEIR_BIN || "weir" }),
    onDidOpenTextDocument: on("open"),
    onDidChangeTextDocument: on("change"),
    onDidSaveTextDocument: on("save"),
    onDidCloseTextDocument: on("close"),
  },
  languages: {
    createDiagnosticCollection: () => ({
      set: (u, ds) => shown.diagnostics.set(u.toString(), ds),
      delete: (u) => shown.diagnostics.delete(u.toString()),
      dispose() {},
    }),
    registerHoverProvider: reg("hover"),
    registerDefinitionProvider: reg("definition"),
    registerReferenceProvider: reg("references"),
    registerCompletionItemProvider: reg("completion"),
    registerDocumentSymbolProvider: reg("symbols"),
    registerDocumentFormattingEditProvider: reg("formatting"),
    registerCodeActionsProvider: reg("codeActions"),
  },
  window: {
    createOutputChannel: () => ({ append() {}, appendLine() {}, dispose() {} }),
    showErrorMessage: (m) => shown.errors.push(m),
  },
};
const load = Module._load;
Module._load = function (request, ...rest) {
  return request === "vscode" ? vscode : load.call(this, request, ...rest);
};

// ---- a document the "editor" holds ---------------------------------------
function offset(text, p) {
  const lines = text.split("\n");
  let o = 0;
  for (let i = 0; i < p.line; i++) o += lines[i].length + 1;
  return o + p.character; // ASCII text: UTF-16 units are bytes
}
function position(text, o) {
  const before = text.slice(0, o).split("\n");
  return new Position(before.length - 1, before[before.length - 1].length);
}
function document(name, text) {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return { uri: Uri.file(file), languageId: "weir", version: 1, text, getText() { return this.text; } };
}
function edit(doc, range, text) {
  doc.text = doc.text.slice(0, offset(doc.text, range.start)) + text + doc.text.slice(offset(doc.text, range.end));
  doc.version += 1;
  listeners.change.forEach((f) => f({ document: doc, contentChanges: [{ range, text }] }));
}
const find = (doc, needle) => position(doc.text, doc.text.indexOf(needle));

async function until(what, f) {
  for (let i = 0; i < 500; i++) {
    const v = f();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error("timed out waiting for " + what);
}

// ---- the session -------------------------------------------------------
async function main() {
  document("lib.weir", 'selector web = app == "web"\n\n' +
    'endpoint web-1 { labels { app: "web" } addr 10.1.0.5 }\n' +
    'endpoint api-1 { labels { app: "api" } addr 10.1.1.5 }\n');
  document("other.weir", "import lib\n\npolicy web-out priority 10 {\n  applies to web\n  egress {\n    allow tcp 443 to web\n  }\n}\n");
  const main = document("main.weir", 'import lib\n\nselector api = app == "api"\n\n' +
    "policy api-in priority 100 {\n  applies to api\n  ingress {\n    allow tcp 8080 from web\n  }\n}\n");
  documents.push(main);
  const ext = require("../extension.js");
  const context = { subscriptions: [] };
  await ext.activate(context);
  for (const k of ["hover", "definition", "references", "completion", "symbols", "formatting", "codeActions"]) {
    assert.ok(providers[k], `no ${k} provider: the server did not announce it`);
  }
  const key = main.uri.toString();
  const diags = () => shown.diagnostics.get(key);
  await until("the first diagnostics", () => diags() && diags().length === 0);

  const w = find(main, "from web");
  const at = new Position(w.line, w.character + 5);
  edit(main, new Range(at, new Position(at.line, at.character + 3)), "webb");
  await until("an error on the edit", () => diags() && diags().length === 1);
  const d = diags()[0];
  assert.strictEqual(d.code, "E0201");
  assert.strictEqual(d.severity, vscode.DiagnosticSeverity.Error);
  assert.deepStrictEqual([d.range.start.line, d.range.start.character], [at.line, at.character]);

  const actions = await providers.codeActions.provider.provideCodeActions(main, d.range, { diagnostics: [d] });
  assert.deepStrictEqual(actions.map((a) => a.title), ["Replace with `web`"]);
  for (const e of actions[0].edit.edits) edit(main, e.range, e.newText);
  await until("the diagnostics to clear", () => diags() && diags().length === 0);

  const web = find(main, "web\n");
  const hover = await providers.hover.provider.provideHover(main, web);
  assert.match(hover.contents.value, /`web-1`/);
  const def = await providers.definition.provider.provideDefinition(main, web);
  assert.strictEqual(def.uri.fsPath, path.join(dir, "lib.weir"));
  const refs = await providers.references.provider.provideReferences(main, web, { includeDeclaration: true });
  assert.deepStrictEqual(refs.map((l) => path.basename(l.uri.fsPath)).sort(),
    ["lib.weir", "main.weir", "other.weir", "other.weir"]);

  const values = await providers.completion.provider.provideCompletionItems(
    main, find(main, '"api"'), null, { triggerKind: 0 });
  assert.deepStrictEqual(values.map((i) => i.label), ['"api"', '"web"']);
  assert.deepStrictEqual(providers.completion.triggers, ['"', " "]);

  const symbols = await providers.symbols.provider.provideDocumentSymbols(main);
  const names = symbols.map((s) => s.name);
  assert.ok(names.includes("api") && names.includes("api-in"), names.join(", "));

  const a = find(main, "  applies");
  edit(main, new Range(a, new Position(a.line, a.character + 2)), "      ");
  const edits = await providers.formatting.provider.provideDocumentFormattingEdits(main, { tabSize: 2, insertSpaces: true });
  for (const e of edits) edit(main, e.range, e.newText);
  assert.match(main.text, /\n  applies to api\n/);

  await ext.deactivate();
  assert.deepStrictEqual(shown.errors, []);
  console.log("vscode extension: ok (diagnostics, quick fix, hover, definition, references, completion, symbols, formatting)");
}

main()
  .then(() => { fs.rmSync(dir, { recursive: true, force: true }); process.exit(0); })
  .catch((e) => { console.error(e); fs.rmSync(dir, { recursive: true, force: true }); process.exit(1); });
