// The handlers as they are deployed — functions/index.ts served by the Functions Framework's own CLI
// (what `functions-framework --target=…` runs on Cloud Run), one process per target, TypeScript
// loaded by tsx, NODE_ENV unset (Express then puts stack traces in its HTML error pages) — answer
// every refusal with the JSON error contract: bodies the framework refuses before a handler runs,
// undecodable paths, unknown routes, wrong methods, and a handler that cannot even be built (bad
// configuration: 500 `internal`, the reason in the logs only). Also the JSON final handler itself,
// on an Express app built from the framework's own express and body-parser: 413 for a body over a
// parser's limit (the framework's is 1024 MB) and 404 when nothing handles a request.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { answerFrameworkErrorsWithJson } from "../../functions/http/frameworkErrors";
import { freePort } from "../../local/emulators";
import { emulatorHosts, uniqueProjectId, waitFor } from "../support/cloud";
import { expectJsonError, fetchAnswer } from "../support/errorContract";

const repoRoot = resolve(__dirname, "..", "..");
const scratch = mkdtempSync(join(tmpdir(), "tally-framework-errors-"));
const frameworkMain = join(dirname(require.resolve("@google-cloud/functions-framework")), "main.js");

interface Served {
  base: string;
  output: string[];
  child: ChildProcess;
}
const children: ChildProcess[] = [];

async function serveTarget(target: string, env: Record<string, string> = {}): Promise<Served> {
  const port = await freePort();
  const { pubsubHost, firestoreHost } = emulatorHosts();
  const { NODE_ENV: _unset, ...inherited } = process.env;
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      frameworkMain,
      `--source=${join(repoRoot, "functions", "index.ts")}`,
      `--target=${target}`,
      "--signature-type=http",
      `--port=${port}`,
    ],
    {
      cwd: repoRoot,
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...inherited,
        FUNCTION_TARGET: target,
        GOOGLE_CLOUD_PROJECT: uniqueProjectId("fwerr"),
        PUBSUB_EMULATOR_HOST: pubsubHost,
        FIRESTORE_EMULATOR_HOST: firestoreHost,
        METADATA_SERVER_DETECTION: "none",
        TALLY_PREFIX: "fwerr",
        TALLY_SINK: "duckdb",
        TALLY_DUCKDB_PATH: join(scratch, `${target}-${port}.duckdb`),
        ...env,
      },
    },
  );
  children.push(child);
  const output: string[] = [];
  child.stdout!.on("data", (d: Buffer) => output.push(d.toString("utf8")));
  child.stderr!.on("data", (d: Buffer) => output.push(d.toString("utf8")));
  const base = `http://127.0.0.1:${port}`;
  await waitFor(
    `${target} serving functions/index.ts under the Functions Framework CLI`,
    async () => {
      if (child.exitCode !== null) throw new Error(`${target} exited ${child.exitCode}: ${output.join("")}`);
      // Any answer will do: the server listens (a malformed path is refused before any handler runs).
      return (await fetch(`${base}/%E0%A4%A`).catch(() => undefined)) !== undefined;
    },
    // tsx compiles the handlers' sources at start; four processes on a loaded 2-core runner take a while.
    150_000,
    200,
  ).catch((err: Error) => {
    throw new Error(`${err.message}\n${target} output:\n${output.join("")}`);
  });
  return { base, output, child };
}

afterAll(async () => {
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await once(child, "exit").catch(() => {});
    }
  rmSync(scratch, { recursive: true, force: true });
});

interface Case {
  name: string;
  method?: string;
  path: string;
  body?: string;
  headers?: Record<string, string>;
  status: number;
  code: string;
}
const json = { "content-type": "application/json" };
const malformed = '{"id": "x", "pipeline": '; // cut short: body-parser's JSON.parse throws a SyntaxError
const byTarget: Record<"coordinator" | "worker" | "reconciler", Case[]> = {
  coordinator: [
    {
      name: "malformed JSON",
      path: "/v1/batches",
      body: malformed,
      headers: json,
      status: 400,
      code: "invalid_argument",
    },
    {
      name: "an unsupported charset",
      path: "/v1/batches",
      body: "{}",
      headers: { "content-type": "application/json; charset=latin1" },
      status: 415,
      code: "unsupported_media_type",
    },
    {
      name: "an unknown Content-Encoding",
      path: "/v1/batches",
      body: "{}",
      headers: { ...json, "content-encoding": "x-tally-unknown" },
      status: 415,
      code: "unsupported_media_type",
    },
    {
      name: "an undecodable path",
      method: "GET",
      path: "/v1/batches/%E0%A4%A",
      status: 400,
      code: "invalid_argument",
    },
    { name: "an unknown route", method: "GET", path: "/v2/nothing", status: 404, code: "not_found" },
    {
      name: "a wrong method",
      method: "DELETE",
      path: "/v1/batches",
      status: 405,
      code: "method_not_allowed",
    },
  ],
  worker: [
    {
      name: "malformed JSON",
      path: "/",
      body: malformed,
      headers: json,
      status: 400,
      code: "invalid_argument",
    },
    {
      name: "an unsupported charset",
      path: "/",
      body: "{}",
      headers: { "content-type": "application/json; charset=latin1" },
      status: 415,
      code: "unsupported_media_type",
    },
    {
      name: "not a push delivery",
      path: "/",
      body: "{}",
      headers: json,
      status: 400,
      code: "invalid_argument",
    },
    {
      name: "an undecodable path",
      path: "/%E0%A4%A",
      body: "{}",
      headers: json,
      status: 400,
      code: "invalid_argument",
    },
    {
      name: "an unknown route",
      path: "/elsewhere",
      body: "{}",
      headers: json,
      status: 404,
      code: "not_found",
    },
    { name: "a wrong method", method: "GET", path: "/", status: 405, code: "method_not_allowed" },
  ],
  reconciler: [
    {
      name: "malformed JSON (/reconcile)",
      path: "/reconcile",
      body: malformed,
      headers: json,
      status: 400,
      code: "invalid_argument",
    },
    {
      name: "malformed JSON (/dead-letter)",
      path: "/dead-letter",
      body: malformed,
      headers: json,
      status: 400,
      code: "invalid_argument",
    },
    {
      name: "an unknown Content-Encoding",
      path: "/dead-letter",
      body: "{}",
      headers: { ...json, "content-encoding": "x-tally-unknown" },
      status: 415,
      code: "unsupported_media_type",
    },
    {
      name: "an undecodable path",
      path: "/reconcile%E0%A4%A",
      body: "{}",
      headers: json,
      status: 400,
      code: "invalid_argument",
    },
    {
      name: "an unknown route",
      path: "/elsewhere",
      body: "{}",
      headers: json,
      status: 404,
      code: "not_found",
    },
    { name: "a wrong method", method: "GET", path: "/reconcile", status: 405, code: "method_not_allowed" },
  ],
};

describe("functions/index.ts under the Functions Framework CLI (as deployed)", () => {
  const served: Partial<Record<keyof typeof byTarget, Served>> = {};
  let broken: Served;
  beforeAll(async () => {
    const targets = Object.keys(byTarget) as Array<keyof typeof byTarget>;
    const started = await Promise.all([
      ...targets.map((t) => serveTarget(t)),
      // A coordinator whose configuration is invalid: it cannot build its handler.
      serveTarget("coordinator", { TALLY_MIN_BACKOFF_SECONDS: "-1" }),
    ]);
    targets.forEach((t, i) => {
      served[t] = started[i];
    });
    broken = started[targets.length]!;
  }, 240_000);

  for (const [target, cases] of Object.entries(byTarget) as Array<[keyof typeof byTarget, Case[]]>) {
    it(`${target}: every refusal is JSON, without stack traces or HTML`, async () => {
      const s = served[target]!;
      for (const c of cases) {
        const res = await fetchAnswer(`${s.base}${c.path}`, {
          method: c.method ?? "POST",
          headers: c.headers,
          body: c.body,
        });
        expect(res.status, `${target} ${c.name}: ${JSON.stringify(res.body)}`).toBe(c.status);
        expectJsonError(res, c.status, c.code);
      }
      // The refusals were logged (one JSON line each on stdout), not echoed with their stacks.
      expect(s.output.join("")).toContain('"event":"http.request_refused"');
    });
  }

  it("a handler that cannot be built answers 500 internal in JSON; the reason is logged, not returned", async () => {
    for (const path of ["/healthz", "/v1/batches"]) {
      const res = await fetchAnswer(`${broken.base}${path}`);
      expectJsonError(res, 500, "internal");
      expect(res.body).toEqual({
        error: { code: "internal", message: "internal error; see the service logs" },
      });
      expect(JSON.stringify(res.body)).not.toContain("TALLY_MIN_BACKOFF_SECONDS");
    }
    const logs = broken.output.join("");
    expect(logs).toContain('"event":"http.internal_error"');
    expect(logs).toContain("invalid Tally configuration: TALLY_MIN_BACKOFF_SECONDS");
  });
});

describe("the JSON final handler on the framework's own express and body-parser", () => {
  let server: Server;
  let base: string;
  beforeAll(async () => {
    answerFrameworkErrorsWithJson();
    // Exactly the modules the framework's server.js loads.
    const frameworkRequire = createRequire(require.resolve("@google-cloud/functions-framework"));
    const express = frameworkRequire("express") as () => {
      use(...args: unknown[]): void;
      post(path: string, h: (req: unknown, res: { json(v: unknown): void }) => void): void;
    };
    const bodyParser = frameworkRequire("body-parser") as { json(o: { limit: number }): unknown };
    const app = express();
    app.use(bodyParser.json({ limit: 64 }));
    app.post("/only", (_req, res) => res.json({ ok: true }));
    server = createServer(app as never);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it("a body over the parser's limit is a 413 too_large in JSON", async () => {
    const res = await fetchAnswer(`${base}/only`, {
      method: "POST",
      headers: json,
      body: JSON.stringify({ padding: "x".repeat(500) }),
    });
    expectJsonError(res, 413, "too_large");
    expect(res.body.error.details).toEqual([{ path: "body", problem: expect.stringMatching(/exceeds 64/) }]);
  });

  it("a request nothing handles is a 404 not_found in JSON", async () => {
    const res = await fetchAnswer(`${base}/elsewhere`);
    expectJsonError(res, 404, "not_found");
    const ok = await fetchAnswer(`${base}/only`, { method: "POST", headers: json, body: "{}" });
    expect(ok).toMatchObject({ status: 200, body: { ok: true } });
  });
});
