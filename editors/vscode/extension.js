// The nnspec extension: starts `nnc lsp` (nnc's language server, on stdio) for .nnspec files.
// Plain JavaScript (CommonJS), so that the folder runs as it is: no build step.
"use strict";

const path = require("path");
const vscode = require("vscode");
const { LanguageClient, State } = require("vscode-languageclient/node");

/** @type {LanguageClient | undefined} */
let client;
/** @type {vscode.OutputChannel | undefined} */
let output;

/** The `nnc` executable: the setting `nnc.path` (a name on the PATH, or a path; `~` and
 * `${workspaceFolder}` are expanded, a relative path is taken from the first workspace folder). */
function nncPath() {
  let p = vscode.workspace.getConfiguration("nnc").get("path") || "nnc";
  const folder = vscode.workspace.workspaceFolders && vscode.workspace.workspaceFolders[0];
  if (folder) {
    p = p.replace(/\$\{workspaceFolder\}/g, folder.uri.fsPath);
  }
  if (p.startsWith("~")) {
    p = path.join(require("os").homedir(), p.slice(1));
  }
  if (folder && !path.isAbsolute(p) && p.includes(path.sep)) {
    p = path.join(folder.uri.fsPath, p);
  }
  return p;
}

function inlayHintsEnabled() {
  return vscode.workspace.getConfiguration("nnc").get("inlayHints", true);
}

async function start() {
  const command = nncPath();
  const serverOptions = { command, args: ["lsp"] }; // no transport: stdio, without a --stdio argument
  const clientOptions = {
    documentSelector: [
      { scheme: "file", language: "nnspec" },
      { scheme: "untitled", language: "nnspec" },
    ],
    outputChannel: output,
    // the server reads {"nnc": {"inlayHints": ...}} at start and on every change of the `nnc` settings
    initializationOptions: { nnc: { inlayHints: inlayHintsEnabled() } },
    synchronize: { configurationSection: "nnc" },
    middleware: {
      // the setting holds even with a server that ignores it
      provideInlayHints: (document, range, token, next) => (inlayHintsEnabled() ? next(document, range, token) : []),
    },
  };
  // the id "nnc" makes the client read its trace level from the setting nnc.trace.server
  client = new LanguageClient("nnc", "nnspec (nnc lsp)", serverOptions, clientOptions);
  try {
    await client.start();
  } catch (err) {
    const choice = await vscode.window.showErrorMessage(
      `nnspec: could not start \`${command} lsp\` (${err && err.message ? err.message : err}). ` +
        "Install nnc (pip install nnc) or set `nnc.path` to its executable, e.g. .venv/bin/nnc.",
      "Open Settings"
    );
    if (choice === "Open Settings") {
      vscode.commands.executeCommand("workbench.action.openSettings", "nnc.path");
    }
  }
}

async function stop() {
  if (client) {
    const c = client;
    client = undefined;
    if (c.state === State.Running || c.state === State.Starting) {
      await c.stop();
    }
  }
}

async function restart() {
  await stop();
  await start();
}

/** @param {vscode.ExtensionContext} context */
async function activate(context) {
  output = vscode.window.createOutputChannel("nnspec");
  context.subscriptions.push(
    output,
    vscode.commands.registerCommand("nnspec.restartServer", restart),
    vscode.workspace.onDidChangeConfiguration((e) => {
      // nnc.inlayHints reaches the server through didChangeConfiguration (it then asks VS Code to
      // redraw the hints); a new executable needs a new server
      if (e.affectsConfiguration("nnc.path")) {
        restart();
      }
    })
  );
  await start();
}

function deactivate() {
  return stop();
}

module.exports = { activate, deactivate };
