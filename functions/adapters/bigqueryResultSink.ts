// The cloud result sink (DESIGN.md §2.4, F2, F3): the succeeded results of one batch generation go
// to BigQuery in ONE load job. No per-worker tables, no per-item table operations.
//
// Idempotency — a deterministic job id per export. BigQuery rejects a job whose id already exists
// (409 "Already Exists"), and a load job is atomic (all rows land or none), so a re-run of the same
// export cannot append the rows twice. A run first looks the job up:
//   - found and DONE without error → the rows are already in; report its row count, read nothing;
//   - found and PENDING/RUNNING → wait for it, then as above;
//   - not found → stream the rows (page by page) into a gzip NDJSON file and insert the load job
//     under that id; a 409 means another finalizer won the race → wait for its job instead;
//   - found and DONE with an error → it wrote nothing. The next attempt uses the next id of a fixed
//     ladder (`<exportId>`, `<exportId>-r1`, `<exportId>-r2`, …). Attempt k is only ever inserted
//     after every earlier id was seen DONE-and-failed (a failed job never succeeds later), and its id
//     is fixed, so two racing finalizers converge on the same job: at most one job of the ladder can
//     succeed, hence exactly one copy of the rows — without querying the table.
//
// Quota arithmetic (BigQuery quotas, 2025):
//   - a standard table allows 1,500 table modifications per day (load, copy and query jobs writing
//     to it, failed ones included); a column-partitioned table is governed instead by 30,000
//     partition modifications per table per day; load jobs per project per day: 100,000.
//   - The results table (resultsTableSpec below, declared by infra/) is partitioned by DAY on
//     `exported_at`, and all rows of one export share one `exported_at`, so an export modifies
//     exactly one partition: 1 load job = 1 partition modification.
//   - Hence ≈30,000 exports (batch generations) per day per table — ~20 a minute sustained — versus
//     1,500/day (~1 a minute) had the table not been partitioned. Retries of failed jobs count too:
//     at most `maxAttempts` per export. Items cost 0 table operations, whatever the batch size; one
//     load job takes up to 4 GB of gzip NDJSON, far above any batch Tally accepts.
//   - Lookups (jobs.get) and the row-count query are not table modifications.
import { randomUUID } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { finished } from "node:stream/promises";
import { createGzip } from "node:zlib";
import type { BigQuery, TableField } from "@google-cloud/bigquery";
import type { ResultRow } from "../core/model";
import type { ExportResult, ExportTarget, ResultSink } from "../core/ports";
import { exportIdFor } from "./resultExportId";

// --- the results table: declared once, here; infra/ declares the table from these --------------

/** Columns users query; the DuckDB sink has the same names. */
export const resultsTableSchema: TableField[] = [
  { name: "batch_id", type: "STRING", mode: "REQUIRED", description: "Batch id" },
  { name: "item_id", type: "STRING", mode: "REQUIRED", description: "Item id within the batch" },
  {
    name: "generation",
    type: "INTEGER",
    mode: "REQUIRED",
    description: "Batch generation (an operator retry of failed items starts a new one)",
  },
  { name: "result", type: "JSON", mode: "NULLABLE", description: "The pipeline's result, as JSON" },
  { name: "finished_at", type: "TIMESTAMP", mode: "REQUIRED", description: "When the item succeeded" },
  { name: "attempts", type: "INTEGER", mode: "REQUIRED", description: "Delivery attempts the item took" },
  {
    name: "export_id",
    type: "STRING",
    mode: "REQUIRED",
    description: "Export (load job) that wrote the row",
  },
  { name: "exported_at", type: "TIMESTAMP", mode: "REQUIRED", description: "When the export ran" },
  {
    // NULLABLE: BigQuery adds only nullable columns to an existing table (rows exported before the
    // column existed have none). Every export writes it.
    name: "batch_created_at",
    type: "TIMESTAMP",
    mode: "NULLABLE",
    description:
      "When the batch was created: tells apart two batches that used the same id (the first deleted by retention)",
  },
];

/** One partition per export day: an export touches one partition (see the quota arithmetic). */
export const resultsTablePartitioning = { type: "DAY", field: "exported_at" } as const;
/** Queries filter by batch: clustering keeps them to the batch's blocks. */
export const resultsTableClustering = { fields: ["batch_id"] } as const;

export const resultsTableSpec = {
  schema: resultsTableSchema,
  timePartitioning: resultsTablePartitioning,
  clustering: resultsTableClustering,
};

// --- what the identity running the export needs ---------------------------------------------------

/**
 * Permissions the export ladder needs on the project, whoever runs it: jobs.insert needs
 * bigquery.jobs.create; jobs.get on a job *another* identity created (taking over a dead finalizer's
 * export, or losing the insert race) "requires the bigquery.jobs.get permission on the job resource"
 * — only a job's creator gets it with bigquery.jobs.create alone
 * (https://cloud.google.com/bigquery/docs/reference/rest/v2/jobs/get). roles/bigquery.jobUser lacks
 * jobs.get; infra/ grants these two through a custom role.
 */
export const bigqueryExportPermissions = ["bigquery.jobs.create", "bigquery.jobs.get"] as const;

// --- the BigQuery surface this sink calls ----------------------------------------------------------

export interface LoadJobRequest {
  jobReference: { projectId: string; jobId: string; location: string };
  configuration: {
    load: {
      destinationTable: { projectId: string; datasetId: string; tableId: string };
      sourceFormat: "NEWLINE_DELIMITED_JSON";
      writeDisposition: "WRITE_APPEND";
      createDisposition: "CREATE_NEVER";
      maxBadRecords: 0;
      ignoreUnknownValues: false;
    };
  };
}

export interface JobSnapshot {
  jobId: string;
  state: "PENDING" | "RUNNING" | "DONE";
  errorResult: { reason?: string; message?: string } | null;
  /** Rows the load job wrote (DONE without error). */
  outputRows: number;
}

/** The calls the sink makes. Implemented over @google-cloud/bigquery below (and by the tests' FakeBigQueryClient). */
export interface BigQueryJobsClient {
  /** jobs.insert with the gzip NDJSON file as media. Resolves once the job exists; rejects with code 409 when the id is taken. */
  insertLoadJob(request: LoadJobRequest, ndjsonGzipFile: string): Promise<void>;
  /** jobs.get; null when no job has this id. */
  getJob(jobId: string, location: string): Promise<JobSnapshot | null>;
  query(
    sql: string,
    params: Record<string, string | number>,
    location: string,
  ): Promise<Record<string, unknown>[]>;
}

export class GoogleBigQueryJobsClient implements BigQueryJobsClient {
  constructor(private readonly bigquery: BigQuery) {}

  async insertLoadJob(request: LoadJobRequest, ndjsonGzipFile: string): Promise<void> {
    const { projectId, jobId, location } = request.jobReference;
    const { destinationTable, ...load } = request.configuration.load;
    if (projectId !== destinationTable.projectId)
      throw new Error(`load job project ${projectId} differs from the table's ${destinationTable.projectId}`);
    const table = this.bigquery
      .dataset(destinationTable.datasetId, { projectId: destinationTable.projectId })
      .table(destinationTable.tableId, { location });
    // A multipart upload of job metadata + file; the library builds jobReference from these.
    const upload = table.createWriteStream_({ ...load, jobId });
    const created = new Promise<void>((resolve, reject) => {
      upload.once("job", () => resolve());
      upload.once("error", reject);
    });
    createReadStream(ndjsonGzipFile)
      .on("error", (err) => upload.destroy(err))
      .pipe(upload);
    await created;
  }

  async getJob(jobId: string, location: string): Promise<JobSnapshot | null> {
    try {
      const [meta] = await this.bigquery.job(jobId, { location }).getMetadata();
      return {
        jobId,
        state: meta.status?.state ?? "PENDING",
        errorResult: meta.status?.errorResult ?? null,
        outputRows: Number(meta.statistics?.load?.outputRows ?? 0),
      };
    } catch (err) {
      if (errorCode(err) === 404) return null;
      throw err;
    }
  }

  async query(sql: string, params: Record<string, string | number>, location: string) {
    const [rows] = await this.bigquery.query({ query: sql, params, location });
    return rows as Record<string, unknown>[];
  }
}

// --- the sink -------------------------------------------------------------------------------------

export interface BigQueryResultSinkOptions {
  projectId: string;
  datasetId: string;
  tableId: string;
  location: string;
  /** New load jobs one run may insert before giving up (each failed one counts against the table quota). */
  maxAttempts?: number;
  /** How often a running load job is polled. */
  pollIntervalMs?: number;
  /** How long one call waits for a load job to finish (a later call picks the same job up). */
  jobTimeoutMs?: number;
  /** Where the NDJSON file is staged (Cloud Run: an in-memory filesystem, hence gzip). */
  stagingDir?: string;
  now?: () => number;
}

/** Job failures worth another attempt right away; anything else (schema, missing table) needs a person. */
const retryableReasons = new Set(["backendError", "internalError", "rateLimitExceeded", "jobInternalError"]);

export class BigQueryResultSink implements ResultSink {
  private jobs = 0;
  private readonly opts: Required<Omit<BigQueryResultSinkOptions, "now">> & { now: () => number };

  constructor(
    private readonly client: BigQueryJobsClient,
    opts: BigQueryResultSinkOptions,
  ) {
    this.opts = {
      maxAttempts: 3,
      pollIntervalMs: 1_000,
      jobTimeoutMs: 5 * 60_000,
      stagingDir: tmpdir(),
      now: Date.now,
      ...opts,
    };
  }

  /** BigQuery jobs this sink ran (load jobs + queries): one per export, 0 per item. */
  get operations(): number {
    return this.jobs;
  }

  get tableRef(): string {
    return `${this.opts.projectId}.${this.opts.datasetId}.${this.opts.tableId}`;
  }

  /** The job id of attempt `k` of an export: a fixed ladder, so racing finalizers pick the same ids. */
  static jobIdFor(exportId: string, attempt: number): string {
    return attempt === 0 ? exportId : `${exportId}-r${attempt}`;
  }

  /** The load job request for one attempt. */
  loadJobRequest(jobId: string): LoadJobRequest {
    const { projectId, datasetId, tableId, location } = this.opts;
    return {
      jobReference: { projectId, jobId, location },
      configuration: {
        load: {
          destinationTable: { projectId, datasetId, tableId },
          sourceFormat: "NEWLINE_DELIMITED_JSON",
          writeDisposition: "WRITE_APPEND",
          // The table (partitioning, clustering, schema) is declared by infra/ from resultsTableSpec;
          // a load never creates or alters it, and uses its schema for the NDJSON fields.
          createDisposition: "CREATE_NEVER",
          // All or nothing: a bad row fails the job rather than silently dropping a result.
          maxBadRecords: 0,
          ignoreUnknownValues: false,
        },
      },
    };
  }

  async exportBatch(target: ExportTarget, rows: AsyncIterable<ResultRow[]>): Promise<ExportResult> {
    const { batchId, generation } = target;
    const exportId = exportIdFor(target);
    const { maxAttempts } = this.opts;
    let staged: { file: string; rows: number } | null = null;
    const failures: string[] = [];
    try {
      // Walks the ladder past jobs that failed (in this run or an earlier one); inserts at most
      // `maxAttempts` new jobs per run, so a run is bounded and a later run can still go on.
      for (let attempt = 0, inserted = 0; ; attempt++) {
        const jobId = BigQueryResultSink.jobIdFor(exportId, attempt);
        let job = await this.lookup(jobId);
        let mine = false;
        if (!job) {
          if (inserted >= maxAttempts)
            throw new Error(
              `export ${exportId} of batch ${batchId} generation ${generation} to ${this.tableRef} failed after ${maxAttempts} load jobs: ${failures.join("; ")}`,
            );
          staged ??= await this.stage(exportId, target, rows);
          // Nothing to load: no job, no table operation. (Same batch + generation → same rows, so
          // no earlier attempt can have loaded any.)
          if (staged.rows === 0) return { exportId, rows: 0 };
          inserted++;
          this.jobs++;
          try {
            await this.client.insertLoadJob(this.loadJobRequest(jobId), staged.file);
            mine = true;
          } catch (err) {
            if (!isAlreadyExists(err)) throw err;
            // Another finalizer inserted this job id first: its job is the export.
          }
          job = await this.lookup(jobId);
          if (!job) throw new Error(`BigQuery load job ${jobId} was accepted but cannot be found`);
        }
        job = await this.untilDone(job);
        if (!job.errorResult) return { exportId, rows: job.outputRows };
        if (!mine) continue; // an earlier run's (or a racer's) failed attempt: it wrote nothing
        const why = `${job.errorResult.reason ?? "error"}: ${job.errorResult.message ?? "(no message)"}`;
        failures.push(`${jobId} failed (${why})`);
        if (!retryableReasons.has(job.errorResult.reason ?? ""))
          throw new Error(
            `export ${exportId} of batch ${batchId} generation ${generation} to ${this.tableRef} failed: load job ${jobId} ${why}. A later run retries as ${BigQueryResultSink.jobIdFor(exportId, attempt + 1)}.`,
          );
      }
    } finally {
      if (staged) await unlink(staged.file).catch(() => undefined);
    }
  }

  async countRows(batchId: string): Promise<number> {
    const rows = await this.queryTable(
      `SELECT COUNT(*) AS n FROM \`${this.tableRef}\` WHERE batch_id = @batchId`,
      { batchId },
    );
    return Number(rows[0]?.n ?? 0);
  }

  /** Rows of one batch, ordered by item id (for the contract tests and the invariant checker). */
  async readRows(batchId: string): Promise<ResultRow[]> {
    const rows = await this.queryTable(
      `SELECT batch_id, item_id, generation, TO_JSON_STRING(result) AS result,
              UNIX_MILLIS(finished_at) AS finished_at_ms, attempts
       FROM \`${this.tableRef}\` WHERE batch_id = @batchId ORDER BY item_id`,
      { batchId },
    );
    return rows.map((r) => ({
      batchId: String(r.batch_id),
      itemId: String(r.item_id),
      generation: Number(r.generation),
      result: r.result === null || r.result === undefined ? null : JSON.parse(String(r.result)),
      finishedAt: Number(r.finished_at_ms),
      attempts: Number(r.attempts),
    }));
  }

  async close(): Promise<void> {
    // The client holds no connection that needs closing.
  }

  private async queryTable(sql: string, params: Record<string, string | number>) {
    this.jobs++;
    try {
      return await this.client.query(sql, params, this.opts.location);
    } catch (err) {
      // No export has created a row yet and infra has not declared the table: nothing to count.
      if (errorCode(err) === 404 && /not found: table/i.test(errorMessage(err))) return [];
      throw err;
    }
  }

  /**
   * jobs.get, with a refusal explained: a 403 here almost always means the job was created by another
   * identity (another finalizer) and this one lacks bigquery.jobs.get — the export cannot go on until
   * the grant is fixed, and the error (recorded on the batch's failed export) says so.
   */
  private async lookup(jobId: string): Promise<JobSnapshot | null> {
    try {
      return await this.client.getJob(jobId, this.opts.location);
    } catch (err) {
      if (errorCode(err) !== 403) throw err;
      throw new Error(
        `BigQuery refused to read load job ${jobId} in project ${this.opts.projectId} (403: ${errorMessage(err)}). A job created by another identity (another finalizer taking part in this export) can only be read with the bigquery.jobs.get permission on the project; grant the exporting identities ${bigqueryExportPermissions.join(" and ")} (infra/storage.ts does, through the exporter custom role).`,
        { cause: err },
      );
    }
  }

  private async untilDone(job: JobSnapshot): Promise<JobSnapshot> {
    const deadline = this.opts.now() + this.opts.jobTimeoutMs;
    let current = job;
    while (current.state !== "DONE") {
      if (this.opts.now() > deadline)
        throw new Error(
          `BigQuery load job ${current.jobId} still ${current.state} after ${this.opts.jobTimeoutMs} ms; a later run waits for the same job`,
        );
      await new Promise((r) => setTimeout(r, this.opts.pollIntervalMs));
      const next = await this.lookup(current.jobId);
      if (!next) throw new Error(`BigQuery load job ${current.jobId} disappeared while running`);
      current = next;
    }
    return current;
  }

  /** Streams the pages into a gzip NDJSON file (bounded memory whatever the batch size). */
  private async stage(
    exportId: string,
    target: ExportTarget,
    pages: AsyncIterable<ResultRow[]>,
  ): Promise<{ file: string; rows: number }> {
    const file = join(this.opts.stagingDir, `tally-${exportId}-${randomUUID().slice(0, 8)}.ndjson.gz`);
    const exportedAt = new Date(this.opts.now()).toISOString();
    const gzip = createGzip();
    const out = createWriteStream(file);
    const done = finished(gzip.pipe(out));
    let rows = 0;
    try {
      for await (const page of pages) {
        let chunk = "";
        for (const row of page) {
          chunk += `${JSON.stringify(toTableRow(row, target, exportId, exportedAt))}\n`;
          rows++;
        }
        if (!gzip.write(chunk)) await new Promise((r) => gzip.once("drain", r));
      }
      gzip.end();
      await done;
      return { file, rows };
    } catch (err) {
      done.catch(() => undefined); // the stream closing early is expected here
      gzip.destroy();
      out.destroy();
      await unlink(file).catch(() => undefined);
      throw err;
    }
  }
}

/** One NDJSON line: the table's columns. `result` is written as a JSON value into the JSON column. */
export function toTableRow(
  row: ResultRow,
  target: ExportTarget,
  exportId: string,
  exportedAtIso: string,
): Record<string, unknown> {
  const { batchId, generation } = target;
  if (row.batchId !== batchId || row.generation !== generation)
    throw new Error(
      `export of ${batchId} generation ${generation} was given a row of ${row.batchId} generation ${row.generation} (item ${row.itemId})`,
    );
  return {
    batch_id: row.batchId,
    item_id: row.itemId,
    generation: row.generation,
    result: row.result ?? null,
    finished_at: new Date(row.finishedAt).toISOString(),
    attempts: row.attempts,
    export_id: exportId,
    exported_at: exportedAtIso,
    batch_created_at: new Date(target.batchCreatedAt).toISOString(),
  };
}

/** Creates the results table as declared (for tests and manual setups; the stack declares it in infra/). */
export async function ensureResultsTable(
  bigquery: BigQuery,
  target: { datasetId: string; tableId: string; location: string },
): Promise<void> {
  const dataset = bigquery.dataset(target.datasetId, { location: target.location });
  const [datasetExists] = await dataset.exists();
  if (!datasetExists) await dataset.create({ location: target.location }).catch(ignoreAlreadyExists);
  const table = dataset.table(target.tableId);
  const [tableExists] = await table.exists();
  if (!tableExists)
    await table
      .create({
        schema: { fields: resultsTableSchema },
        timePartitioning: { ...resultsTablePartitioning },
        clustering: { fields: [...resultsTableClustering.fields] },
      })
      .catch(ignoreAlreadyExists);
}

function ignoreAlreadyExists(err: unknown): void {
  if (!isAlreadyExists(err)) throw err;
}

function errorCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "number" ? code : undefined;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function isAlreadyExists(err: unknown): boolean {
  return errorCode(err) === 409 || /already exists/i.test(errorMessage(err));
}
