// The deployed functions use the BigQuery sink and must not load DuckDB (`@duckdb/node-api` and its
// ~70 MB native library) at all; the local stack, which uses the DuckDB sink, loads it when the sink
// is built. Checked in a fresh Node process (as a Cloud Run instance starts): the deployable entry
// (functions/index.ts) is loaded, then the adapters are built as on the first request, and the
// process reports which modules under `@duckdb/` are in require.cache and which native libraries
// went through process.dlopen (every `.node` addon is opened there).
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";

const repoRoot = resolve(__dirname, "..", "..");
const scratch = mkdtempSync(join(tmpdir(), "tally-lazy-duckdb-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const probe = `
const natives = [];
const dlopen = process.dlopen;
process.dlopen = function (module, filename, ...rest) {
  natives.push(String(filename));
  return dlopen.call(this, module, filename, ...rest);
};
const snapshot = () => ({
  modules: Object.keys(require.cache).filter((p) => p.includes("@duckdb")),
  natives: natives.filter((p) => /duckdb/i.test(p)),
});
(async () => {
  require("./functions/index.ts");
  const atStart = snapshot();
  const entry = Object.keys(require.cache).filter((p) => p.endsWith(require("node:path").join("functions", "index.ts")));
  const { sharedDeps } = require("./functions/runtime.ts");
  const deps = await sharedDeps("worker");
  const afterFirstRequest = snapshot();
  const sink = deps.sink.constructor.name;
  await deps.close();
  process.stdout.write("PROBE " + JSON.stringify({ entry, atStart, afterFirstRequest, sink }) + "\\n");
  process.exit(0);
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
`;

interface Probe {
  entry: string[];
  atStart: { modules: string[]; natives: string[] };
  afterFirstRequest: { modules: string[]; natives: string[] };
  sink: string;
}

async function runProbe(env: Record<string, string>): Promise<Probe> {
  const { stdout } = await promisify(execFile)(process.execPath, ["--import", "tsx", "-e", probe], {
    cwd: repoRoot,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      METADATA_SERVER_DETECTION: "none",
      // Clients are constructed, never used: nothing listens here and nothing connects.
      PUBSUB_EMULATOR_HOST: "127.0.0.1:9",
      FIRESTORE_EMULATOR_HOST: "127.0.0.1:9",
      GOOGLE_CLOUD_PROJECT: "lazy-duckdb",
      FUNCTION_TARGET: "coordinator",
      ...env,
    },
    timeout: 90_000,
  });
  const line = stdout.split("\n").find((l) => l.startsWith("PROBE "));
  if (!line) throw new Error(`the probe printed no result:\n${stdout}`);
  return JSON.parse(line.slice("PROBE ".length)) as Probe;
}

describe("DuckDB is loaded only when it is the configured sink", () => {
  it("with the BigQuery sink (as deployed): not at start, not when the adapters are built", async () => {
    const p = await runProbe({ TALLY_SINK: "bigquery", TALLY_BIGQUERY_DATASET: "results" });
    expect(p.entry).toHaveLength(1); // the entry really was loaded from source
    expect(p.sink).toBe("BigQueryResultSink");
    expect(p.atStart).toEqual({ modules: [], natives: [] });
    expect(p.afterFirstRequest).toEqual({ modules: [], natives: [] });
  });

  it("with the DuckDB sink (the local stack): not at start, loaded when the sink is built", async () => {
    const p = await runProbe({ TALLY_SINK: "duckdb", TALLY_DUCKDB_PATH: join(scratch, "results.duckdb") });
    expect(p.entry).toHaveLength(1);
    expect(p.sink).toBe("DuckDBResultSink");
    expect(p.atStart).toEqual({ modules: [], natives: [] });
    // The probe sees DuckDB when it is loaded (so the empty lists above are not blind spots).
    expect(p.afterFirstRequest.modules.some((m) => m.includes(join("@duckdb", "node-api")))).toBe(true);
    expect(p.afterFirstRequest.natives.some((n) => n.endsWith("duckdb.node"))).toBe(true);
  });
});
