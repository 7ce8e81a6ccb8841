// The VS Code side of `kubectl gitops-run lsp`: starts the language server
// over stdio for the workspace. Everything else (diagnostics, hover, code
// lenses, the commands) is the server's; its commands are registered by
// the language client from what the server advertises.
import * as vscode from "vscode";
import {
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  TransportKind,
} from "vscode-languageclient/node";

let client: LanguageClient | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const config = vscode.workspace.getConfiguration("gitopsRun");
  const command = config.get<string>("path", "kubectl-gitops_run");
  const kubeArgs = config.get<string[]>("kubeArgs", []);
  const server: ServerOptions = {
    command,
    args: ["lsp", ...kubeArgs],
    transport: TransportKind.stdio,
  };
  const options: LanguageClientOptions = {
    documentSelector: [
      { scheme: "file", language: "yaml" },
      { scheme: "file", pattern: "**/*.{yaml,yml}" },
    ],
    initializationOptions: { runArgs: config.get<string[]>("runArgs", []) },
    outputChannelName: "GitOps Run",
  };
  client = new LanguageClient("gitopsRun", "GitOps Run", server, options);
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (e.affectsConfiguration("gitopsRun") && client) {
        await client.restart();
      }
    }),
  );
  await client.start();
}

export async function deactivate(): Promise<void> {
  if (client) {
    await client.stop();
  }
}
