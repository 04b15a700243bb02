// Starts `weir lsp` for .weir files. Everything else is the server's.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const command = vscode.workspace.getConfiguration("weir").get("path") || "weir";
  const server = { command, args: ["lsp"] };
  client = new LanguageClient(
    "weir",
    "weir",
    { run: server, debug: server },
    { documentSelector: [{ scheme: "file", language: "weir" }] }
  );
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
