// The DuckDB result sink: the shared contract, plus what only a file-backed sink has to get right —
// atomic exports, several processes exporting to one file, bounded lock waits, and speed.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DuckDBInstance } from "@duckdb/node-api";
import { afterAll, describe, expect, it } from "vitest";
import { DuckDBResultSink, queryResults } from "../../functions/adapters/duckdbResultSink";
import { exportIdFor } from "../../functions/adapters/resultExportId";
import type { ResultRow } from "../../functions/core/model";
import { waitFor } from "../../local/waitFor";
import { exportTarget } from "../support/exportTarget";
import { runResultSinkContract } from "./resultSinkContract";
import { pages, resultRows } from "./support/resultRows";

const root = mkdtempSync(join(tmpdir(), "tally-duckdb-sink-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

runResultSinkContract("DuckDB", async () => {
  const sink = new DuckDBResultSink(join(root, "contract", "results.duckdb"));
  return { sink, readRows: (batchId) => sink.readRows(batchId) };
});

describe("DuckDBResultSink", () => {
  it("creates the parent folder and writes the documented schema", async () => {
    const path = join(root, "nested", "deeper", "results.duckdb");
    const sink = new DuckDBResultSink(path);
    expect(await sink.countRows("b")).toBe(0);
    expect(existsSync(path)).toBe(false); // reading never creates the file
    await sink.exportBatch(exportTarget("b", 1), pages(resultRows("b", 1, 2)));
    expect(existsSync(path)).toBe(true);
    const columns = await queryResults(
      path,
      "SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE database_name = 'results' ORDER BY table_name, column_index",
    );
    expect(
      columns.filter((c) => c.table_name === "item_results").map((c) => [c.column_name, c.data_type]),
    ).toEqual([
      ["batch_id", "VARCHAR"],
      ["item_id", "VARCHAR"],
      ["generation", "INTEGER"],
      ["result", "JSON"],
      ["finished_at", "TIMESTAMP"],
      ["attempts", "INTEGER"],
      ["export_id", "VARCHAR"],
      ["exported_at", "TIMESTAMP"],
      ["batch_created_at", "TIMESTAMP"],
    ]);
    const exports = await queryResults(path, "SELECT export_id, batch_id, generation, rows FROM exports");
    expect(exports).toEqual([
      { export_id: exportIdFor(exportTarget("b", 1)), batch_id: "b", generation: 1, rows: 2 },
    ]);
    const perBatch = await queryResults(
      path,
      "SELECT batch_id, count(*) AS n, max(result->>'text') AS last FROM item_results GROUP BY batch_id",
    );
    expect(perBatch).toEqual([{ batch_id: "b", n: 2, last: "result 1" }]);
  });

  it("a results file from before exports were keyed by incarnation is refused with a clear message, and left as it was", async () => {
    const path = join(root, "old-schema", "results.duckdb");
    await new DuckDBResultSink(path).exportBatch(exportTarget("seed", 1), pages(resultRows("seed", 1, 1)));
    // Rebuild the file the way the previous schema had it (no batch_created_at).
    rmSync(path);
    const db = await DuckDBInstance.create(path);
    const conn = await db.connect();
    await conn.run(
      "CREATE TABLE item_results (batch_id VARCHAR NOT NULL, item_id VARCHAR NOT NULL, generation INTEGER NOT NULL, result JSON, finished_at TIMESTAMP, attempts INTEGER, export_id VARCHAR NOT NULL, exported_at TIMESTAMP NOT NULL, PRIMARY KEY (batch_id, item_id))",
    );
    conn.closeSync();
    db.closeSync();
    await expect(
      new DuckDBResultSink(path).exportBatch(exportTarget("new", 1), pages(resultRows("new", 1, 2))),
    ).rejects.toThrow(/predates the batch_created_at column .*move it aside or delete it/);
    expect(await queryResults(path, "SELECT count(*) AS n FROM item_results")).toEqual([{ n: 0 }]);
  });

  it("an export that fails midway leaves nothing half-written, and its re-run exports everything", async () => {
    const path = join(root, "crash", "results.duckdb");
    const sink = new DuckDBResultSink(path);
    const rows = resultRows("crash", 1, 500);
    async function* failingAfterTwoPages(): AsyncIterable<ResultRow[]> {
      yield rows.slice(0, 100);
      yield rows.slice(100, 200);
      throw new Error("ledger read failed");
    }
    await expect(sink.exportBatch(exportTarget("crash", 1), failingAfterTwoPages())).rejects.toThrow(
      "ledger read failed",
    );
    expect(await sink.countRows("crash")).toBe(0);
    expect(await sink.exportBatch(exportTarget("crash", 1), pages(rows))).toEqual({
      exportId: exportIdFor(exportTarget("crash", 1)),
      rows: 500,
    });
    expect(await sink.countRows("crash")).toBe(500);
  });

  it("serializes concurrent exports inside one process", async () => {
    const sink = new DuckDBResultSink(join(root, "inproc", "results.duckdb"));
    const batches = ["p0", "p1", "p2", "p3", "p4"];
    const results = await Promise.all(
      batches.map((b) => sink.exportBatch(exportTarget(b, 1), pages(resultRows(b, 1, 200)))),
    );
    expect(results.map((r) => r.rows)).toEqual([200, 200, 200, 200, 200]);
    for (const b of batches) expect(await sink.countRows(b)).toBe(200);
  });

  it("two processes exporting to the same file while it is locked both wait, then both succeed", async () => {
    const path = join(root, "multiproc", "results.duckdb");
    await new DuckDBResultSink(path).exportBatch(exportTarget("seed", 1), pages(resultRows("seed", 1, 1)));
    // This process holds the file read-write, as another worker mid-export would.
    const holder = await DuckDBInstance.create(path);
    const children = [runChild(path, "proc-a", 20_000), runChild(path, "proc-b", 15_000)];
    try {
      await waitFor(
        "both child processes to find the file locked",
        () => children.every((c) => c.events.some((e) => e.event === "lock_wait")),
        60_000,
      );
    } finally {
      holder.closeSync();
    }
    const [a, b] = await Promise.all(children.map((c) => c.done));
    expect(a).toMatchObject({ code: 0, last: { event: "exported", rows: 20_000 } });
    expect(b).toMatchObject({ code: 0, last: { event: "exported", rows: 15_000 } });
    const counts = await queryResults(
      path,
      "SELECT batch_id, count(*) AS n FROM item_results GROUP BY 1 ORDER BY 1",
    );
    expect(counts).toEqual([
      { batch_id: "proc-a", n: 20_000 },
      { batch_id: "proc-b", n: 15_000 },
      { batch_id: "seed", n: 1 },
    ]);
  });

  it("gives up with a clear error when the file stays locked past the deadline", async () => {
    const path = join(root, "timeout", "results.duckdb");
    await new DuckDBResultSink(path).exportBatch(exportTarget("seed", 1), pages(resultRows("seed", 1, 1)));
    const holder = await DuckDBInstance.create(path);
    try {
      const child = runChild(path, "never", 10, 400);
      const outcome = await child.done;
      expect(outcome.code).toBe(1);
      expect(outcome.last).toMatchObject({
        event: "error",
        message: expect.stringMatching(/results\.duckdb stayed locked by another process for 400 ms/),
      });
    } finally {
      holder.closeSync();
    }
    expect(await new DuckDBResultSink(path).countRows("never")).toBe(0);
  });

  it("exports 100,000 rows in seconds, in one transaction", async () => {
    const sink = new DuckDBResultSink(join(root, "bulk", "results.duckdb"));
    const rows = resultRows("bulk", 1, 100_000);
    const started = performance.now();
    const e = await sink.exportBatch(exportTarget("bulk", 1), pages(rows, 1_000));
    const ms = performance.now() - started;
    console.log(`DuckDB sink: exported 100,000 rows in ${Math.round(ms)} ms (${sink.operations} operation)`);
    expect(e.rows).toBe(100_000);
    expect(sink.operations).toBe(1);
    expect(await sink.countRows("bulk")).toBe(100_000);
    // The bound: seconds, not minutes (generous for a shared 2-core machine).
    expect(ms).toBeLessThan(30_000);
  });
});

interface ChildEvent {
  event: string;
  [k: string]: unknown;
}

function runChild(path: string, batchId: string, rows: number, lockTimeoutMs = 60_000) {
  const child: ChildProcess = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      join(__dirname, "support", "exportInChildProcess.ts"),
      path,
      batchId,
      String(rows),
      String(lockTimeoutMs),
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const events: ChildEvent[] = [];
  let buffer = "";
  let stderr = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    buffer += chunk.toString();
    for (let nl = buffer.indexOf("\n"); nl >= 0; nl = buffer.indexOf("\n")) {
      const line = buffer.slice(0, nl).trim();
      buffer = buffer.slice(nl + 1);
      if (line.startsWith("{")) events.push(JSON.parse(line) as ChildEvent);
    }
  });
  child.stderr!.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const done = new Promise<{ code: number | null; last: ChildEvent | undefined; stderr: string }>((resolve) =>
    child.on("exit", (code) => resolve({ code, last: events[events.length - 1], stderr })),
  );
  return { events, done };
}
