// The local result sink (DESIGN.md §2.4): one DuckDB file under the local data folder, with the same
// columns as the BigQuery results table, queryable by the user.
//
// Idempotency: one export of (batch incarnation, generation) is one transaction on the file that
// upserts its rows (primary key batch_id + batch_created_at + item_id) and records an `exports`
// marker keyed by the export id. A re-run finds the marker and writes nothing; a crash mid-export
// leaves nothing half-written. `batch_created_at` keeps a batch that reuses a TTL-deleted
// predecessor's id apart from it: its export id, marker and rows are its own (issue #15 item 5).
//
// Concurrency: a DuckDB file can be opened read-write by only one process at a time, and the local
// stack runs several worker processes plus the reconciler, any of which may finalize a batch. So the
// file is opened per operation and closed right after; an open that fails on the file lock is
// retried with backoff up to a deadline. Rows are first streamed (page by page, through an appender)
// into a private in-memory staging database, so the file lock is held only for the final
// INSERT … SELECT, not while the ledger is being read.
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { type DuckDBConnection, DuckDBInstance } from "@duckdb/node-api";
import type { ResultRow } from "../core/model";
import type { ExportResult, ExportTarget, ResultSink } from "../core/ports";
import { exportIdFor } from "./resultExportId";

export interface DuckDBResultSinkOptions {
  /** How long an operation keeps retrying while another process holds the file lock. */
  lockTimeoutMs?: number;
  /** Called each time an open finds the file locked by another process (for logs and tests). */
  onLockWait?: (wait: { path: string; attempt: number; message: string }) => void;
}

const defaultLockTimeoutMs = 30_000;

/** Schema of the results file: the same column names as the BigQuery table (infra declares it). */
const schemaSql = [
  `CREATE TABLE IF NOT EXISTS results.item_results (
     batch_id VARCHAR NOT NULL,
     item_id VARCHAR NOT NULL,
     generation INTEGER NOT NULL,
     result JSON,
     finished_at TIMESTAMP,
     attempts INTEGER,
     export_id VARCHAR NOT NULL,
     exported_at TIMESTAMP NOT NULL,
     batch_created_at TIMESTAMP NOT NULL,
     PRIMARY KEY (batch_id, batch_created_at, item_id))`,
  `CREATE TABLE IF NOT EXISTS results.exports (
     export_id VARCHAR PRIMARY KEY,
     batch_id VARCHAR NOT NULL,
     generation INTEGER NOT NULL,
     rows BIGINT NOT NULL,
     exported_at TIMESTAMP NOT NULL,
     batch_created_at TIMESTAMP NOT NULL)`,
];

/** A results file written before exports were keyed by batch incarnation cannot take new rows. */
async function assertCurrentSchema(conn: DuckDBConnection, path: string): Promise<void> {
  const r = await conn.runAndReadAll(
    "SELECT 1 FROM duckdb_columns() WHERE database_name = 'results' AND table_name = 'item_results' AND column_name = 'batch_created_at'",
  );
  if (r.currentRowCount === 0)
    throw new Error(
      `the results file ${path} predates the batch_created_at column (exports keyed by batch incarnation): move it aside or delete it, and the next export creates a new one`,
    );
}

export class DuckDBResultSink implements ResultSink {
  readonly path: string;
  private readonly lock: LockWait;
  private ops = 0;

  constructor(path: string, opts: DuckDBResultSinkOptions = {}) {
    this.path = resolve(path);
    this.lock = { timeoutMs: opts.lockTimeoutMs ?? defaultLockTimeoutMs, onWait: opts.onLockWait };
  }

  /** Transactions on the results file (one per export, one per count): constant per batch. */
  get operations(): number {
    return this.ops;
  }

  async exportBatch(target: ExportTarget, rows: AsyncIterable<ResultRow[]>): Promise<ExportResult> {
    const { batchId, generation, batchCreatedAt } = target;
    const exportId = exportIdFor(target);
    const staging = await DuckDBInstance.create(":memory:");
    try {
      const conn = await staging.connect();
      try {
        await conn.run(
          `CREATE TABLE staging (batch_id VARCHAR, item_id VARCHAR, generation INTEGER,
             result VARCHAR, finished_at_ms BIGINT, attempts INTEGER)`,
        );
        await stageRows(conn, batchId, generation, rows);
        // Rows the export writes: one per item (the ledger yields each item once; this holds even if not).
        const distinct = await conn.runAndReadAll("SELECT count(DISTINCT item_id) FROM staging");
        const staged = Number(distinct.getRows()[0]![0]);
        const exportedAtMs = Date.now();
        return await withFileLock(this.path, async () => {
          await mkdir(dirname(this.path), { recursive: true });
          await attachWithRetry(conn, this.path, "READ_WRITE", this.lock);
          this.ops++;
          try {
            for (const sql of schemaSql) await conn.run(sql);
            await assertCurrentSchema(conn, this.path);
            await conn.run("BEGIN TRANSACTION");
            try {
              const marker = await conn.runAndReadAll(
                "SELECT rows FROM results.exports WHERE export_id = $1",
                [exportId],
              );
              if (marker.currentRowCount > 0) {
                await conn.run("ROLLBACK");
                return { exportId, rows: Number(marker.getRows()[0]![0]) };
              }
              // One row per item: the ledger yields each item once, but a row must never be
              // doubled even if it did. A newer generation wins over an older one.
              await conn.run(
                `INSERT INTO results.item_results
                   SELECT batch_id, item_id, generation, result::JSON, epoch_ms(finished_at_ms), attempts,
                          $1, epoch_ms($2::BIGINT), epoch_ms($3::BIGINT)
                   FROM staging
                   QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY finished_at_ms DESC) = 1
                 ON CONFLICT (batch_id, batch_created_at, item_id) DO UPDATE SET
                   generation = excluded.generation, result = excluded.result,
                   finished_at = excluded.finished_at, attempts = excluded.attempts,
                   export_id = excluded.export_id, exported_at = excluded.exported_at
                 WHERE excluded.generation >= item_results.generation`,
                [exportId, exportedAtMs, batchCreatedAt],
              );
              await conn.run(
                "INSERT INTO results.exports VALUES ($1, $2, $3, $4, epoch_ms($5::BIGINT), epoch_ms($6::BIGINT))",
                [exportId, batchId, generation, staged, exportedAtMs, batchCreatedAt],
              );
              await conn.run("COMMIT");
              return { exportId, rows: staged };
            } catch (err) {
              await conn.run("ROLLBACK").catch(() => undefined);
              throw err;
            }
          } finally {
            await conn.run("DETACH results").catch(() => undefined);
          }
        });
      } finally {
        conn.closeSync();
      }
    } finally {
      staging.closeSync();
    }
  }

  /** Rows of the batch id's latest incarnation (a reused id's predecessor keeps its own rows). */
  async countRows(batchId: string): Promise<number> {
    const rows = await this.read(
      `SELECT count(*) AS n FROM results.item_results WHERE batch_id = $1 AND batch_created_at =
         (SELECT max(batch_created_at) FROM results.item_results WHERE batch_id = $1)`,
      [batchId],
      (conn) => tableExists(conn, "item_results"),
    );
    return rows === null ? 0 : Number(rows[0]?.n ?? 0);
  }

  /** Rows of one batch (its id's latest incarnation), ordered by item id (tests, CLI, invariant checker). */
  async readRows(batchId: string): Promise<ResultRow[]> {
    const rows = await this.read(
      `SELECT batch_id, item_id, generation, CAST(result AS VARCHAR) AS result,
              epoch_ms(finished_at) AS finished_at_ms, attempts
       FROM results.item_results WHERE batch_id = $1 AND batch_created_at =
         (SELECT max(batch_created_at) FROM results.item_results WHERE batch_id = $1)
       ORDER BY item_id`,
      [batchId],
      (conn) => tableExists(conn, "item_results"),
    );
    return (rows ?? []).map((r) => ({
      batchId: String(r.batch_id),
      itemId: String(r.item_id),
      generation: Number(r.generation),
      result: r.result === null ? null : JSON.parse(String(r.result)),
      finishedAt: Number(r.finished_at_ms),
      attempts: Number(r.attempts),
    }));
  }

  async close(): Promise<void> {
    // Nothing is held open between operations.
  }

  private async read(
    sql: string,
    params: (string | number)[],
    ready: (conn: DuckDBConnection) => Promise<boolean>,
  ): Promise<Record<string, unknown>[] | null> {
    const result = await readResultsFile(this.path, sql, params, this.lock, ready);
    if (result.opened) this.ops++;
    return result.rows;
  }
}

/**
 * Runs a read-only query against a results file (tables are `results.item_results` and
 * `results.exports`, or unqualified). Waits while a writer holds the file. Returns [] when the
 * file does not exist yet. Used by the CLI and the demo to show rows per batch.
 */
export async function queryResults(
  path: string,
  sql: string,
  params: (string | number)[] = [],
  opts: DuckDBResultSinkOptions = {},
): Promise<Record<string, unknown>[]> {
  const result = await readResultsFile(
    resolve(path),
    sql,
    params,
    { timeoutMs: opts.lockTimeoutMs ?? defaultLockTimeoutMs, onWait: opts.onLockWait },
    async () => true,
  );
  return (result.rows ?? []).map(plainRow);
}

async function readResultsFile(
  path: string,
  sql: string,
  params: (string | number)[],
  lock: LockWait,
  ready: (conn: DuckDBConnection) => Promise<boolean>,
): Promise<{ opened: boolean; rows: Record<string, unknown>[] | null }> {
  if (!existsSync(path)) return { opened: false, rows: null };
  const instance = await DuckDBInstance.create(":memory:");
  try {
    const conn = await instance.connect();
    try {
      return await withFileLock(path, async () => {
        await attachWithRetry(conn, path, "READ_ONLY", lock);
        try {
          // Unqualified names in a user's query resolve to the results file.
          await conn.run("USE results");
          if (!(await ready(conn))) return { opened: true, rows: null };
          const reader = await conn.runAndReadAll(sql, params);
          return { opened: true, rows: reader.getRowObjectsJS() as Record<string, unknown>[] };
        } finally {
          await conn.run("USE memory").catch(() => undefined);
          await conn.run("DETACH results").catch(() => undefined);
        }
      });
    } finally {
      conn.closeSync();
    }
  } finally {
    instance.closeSync();
  }
}

/** BIGINTs come back as bigint; numbers are friendlier to callers that print JSON. */
function plainRow(row: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(row))
    out[k] =
      typeof v === "bigint" && v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER)
        ? Number(v)
        : v;
  return out;
}

async function tableExists(conn: DuckDBConnection, table: string): Promise<boolean> {
  const r = await conn.runAndReadAll(
    "SELECT 1 FROM duckdb_tables() WHERE database_name = 'results' AND table_name = $1",
    [table],
  );
  return r.currentRowCount > 0;
}

/** Streams the pages into the staging table through an appender; returns the row count. */
async function stageRows(
  conn: DuckDBConnection,
  batchId: string,
  generation: number,
  pages: AsyncIterable<ResultRow[]>,
): Promise<number> {
  const appender = await conn.createAppender("staging");
  let n = 0;
  try {
    for await (const page of pages) {
      for (const row of page) {
        if (row.batchId !== batchId || row.generation !== generation)
          throw new Error(
            `export of ${batchId} generation ${generation} was given a row of ${row.batchId} generation ${row.generation} (item ${row.itemId})`,
          );
        appender.appendVarchar(row.batchId);
        appender.appendVarchar(row.itemId);
        appender.appendInteger(row.generation);
        appender.appendVarchar(JSON.stringify(row.result ?? null));
        appender.appendBigInt(BigInt(Math.trunc(row.finishedAt)));
        appender.appendInteger(row.attempts);
        appender.endRow();
        n++;
      }
    }
    appender.flushSync();
  } finally {
    appender.closeSync();
  }
  return n;
}

interface LockWait {
  timeoutMs: number;
  onWait?: DuckDBResultSinkOptions["onLockWait"];
}

const lockErrorPattern = /could not set lock|conflicting lock|resource temporarily unavailable/i;

/** Attaches the results file as `results`, retrying while another process holds its lock. */
async function attachWithRetry(
  conn: DuckDBConnection,
  path: string,
  mode: "READ_WRITE" | "READ_ONLY",
  lock: LockWait,
): Promise<void> {
  const deadline = Date.now() + lock.timeoutMs;
  const attachSql = `ATTACH '${path.replaceAll("'", "''")}' AS results${mode === "READ_ONLY" ? " (READ_ONLY)" : ""}`;
  let delay = 10;
  for (let attempt = 1; ; attempt++) {
    try {
      await conn.run(attachSql);
      return;
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (!lockErrorPattern.test(message)) throw err;
      lock.onWait?.({ path, attempt, message });
      if (Date.now() + delay > deadline)
        throw new Error(
          `DuckDB results file ${path} stayed locked by another process for ${lock.timeoutMs} ms: ${message}`,
        );
      // Jitter keeps two waiting processes from retrying in lockstep.
      await new Promise((r) => setTimeout(r, delay * (0.5 + Math.random())));
      delay = Math.min(delay * 2, 250);
    }
  }
}

// File locks are per process (POSIX), so two opens of the same file inside one process would not
// exclude each other: operations on one file are serialized in-process here.
const fileQueues = new Map<string, Promise<unknown>>();
async function withFileLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
  const previous = fileQueues.get(path) ?? Promise.resolve();
  const run = previous.then(fn, fn);
  const tail = run.catch(() => undefined);
  fileQueues.set(path, tail);
  try {
    return await run;
  } finally {
    if (fileQueues.get(path) === tail) fileQueues.delete(path);
  }
}
