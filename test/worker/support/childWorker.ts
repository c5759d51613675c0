// Starts a worker in its own process under the Functions Framework CLI (as on Cloud Run), with
// tsx loading the TypeScript source, and stops it by signal.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { dirname, join } from "node:path";
import { freePort } from "../../../local/emulators";
import { waitFor } from "../../support/cloud";

export interface ChildWorker {
  url: string;
  process: ChildProcess;
  output: string[];
  /** Resolves with the exit code (or the signal's name) when the process ends. */
  exited: Promise<number | string>;
  kill(signal?: NodeJS.Signals): void;
}

export async function startChildWorker(env: Record<string, string>): Promise<ChildWorker> {
  const port = await freePort();
  // The framework's CLI entry point (what `functions-framework --target=worker` runs), next to its main module.
  const main = join(dirname(require.resolve("@google-cloud/functions-framework")), "main.js");
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      main,
      "--source",
      join(__dirname, "functionsFrameworkWorker.ts"),
      "--target",
      "worker",
      "--signature-type",
      "http",
      "--port",
      String(port),
    ],
    {
      env: { ...process.env, ...env, PORT: String(port), NODE_ENV: "test" },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const output: string[] = [];
  child.stdout!.on("data", (c: Buffer) => output.push(...c.toString("utf8").split("\n").filter(Boolean)));
  child.stderr!.on("data", (c: Buffer) => output.push(...c.toString("utf8").split("\n").filter(Boolean)));
  const exited = once(child, "exit").then(([code, signal]) => (code ?? signal) as number | string);
  const url = `http://127.0.0.1:${port}/`;
  // Ready when the handler answers (a GET is refused with 405 by the worker itself).
  await waitFor(
    `worker child on ${url}`,
    async () => {
      if (child.exitCode !== null) throw new Error(`worker child exited: ${output.join("\n")}`);
      return (await fetch(url).catch(() => null))?.status === 405;
    },
    60_000,
    200,
  );
  return { url, process: child, output, exited, kill: (signal = "SIGTERM") => child.kill(signal) };
}
