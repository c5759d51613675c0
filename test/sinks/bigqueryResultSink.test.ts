// The BigQuery result sink. Request-level tests run against FakeBigQueryClient (the one allowed fake:
// BigQuery has no local emulator); the shared contract runs against the fake always, and against a
// real BigQuery project when TALLY_TEST_BIGQUERY_PROJECT is set (skipped otherwise, and the test
// output says so).
import { randomUUID } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BigQuery } from "@google-cloud/bigquery";
import { afterAll, describe, expect, it } from "vitest";
import {
  BigQueryResultSink,
  type BigQueryResultSinkOptions,
  bigqueryExportPermissions,
  ensureResultsTable,
  GoogleBigQueryJobsClient,
  resultsTableSpec,
} from "../../functions/adapters/bigqueryResultSink";
import { exportIdFor } from "../../functions/adapters/resultExportId";
import type { ResultRow } from "../../functions/core/model";
import { exportTarget, testBatchCreatedAt } from "../support/exportTarget";
import { runResultSinkContract } from "./resultSinkContract";
import { FakeBigQueryClient, otherFinalizerEmail } from "./support/fakeBigQueryClient";
import { pages, resultRows } from "./support/resultRows";

const stagingDir = mkdtempSync(join(tmpdir(), "tally-bq-sink-"));
afterAll(() => rmSync(stagingDir, { recursive: true, force: true }));

const target = {
  projectId: "tally-test",
  datasetId: "tally_results",
  tableId: "item_results",
  location: "EU",
};

function fakeSink(fake = new FakeBigQueryClient(), opts: Partial<BigQueryResultSinkOptions> = {}) {
  const sink = new BigQueryResultSink(fake, { ...target, pollIntervalMs: 1, stagingDir, ...opts });
  return { fake, sink };
}

/** Rows that throw if the sink reads them: proves an export was recognised as done without re-reading the ledger. */
async function* unreadable(): AsyncIterable<ResultRow[]> {
  yield* [];
  throw new Error("the rows were read again");
}

runResultSinkContract("BigQuery via FakeBigQueryClient", async () => {
  const { sink } = fakeSink();
  return { sink, readRows: (batchId) => sink.readRows(batchId) };
});

const realProject = process.env.TALLY_TEST_BIGQUERY_PROJECT;
const realSkipReason = realProject
  ? undefined
  : "set TALLY_TEST_BIGQUERY_PROJECT to run against real BigQuery";
// Said on stdout too: the default reporter lists skipped tests only as a count.
if (realSkipReason) console.info(`BigQuery contract against a real project skipped: ${realSkipReason}`);
runResultSinkContract(
  "BigQuery (real project)",
  async () => {
    const location = process.env.TALLY_TEST_BIGQUERY_LOCATION ?? "US";
    const datasetId = process.env.TALLY_TEST_BIGQUERY_DATASET ?? "tally_contract_test";
    const tableId = `item_results_${randomUUID().slice(0, 8)}`;
    const bigquery = new BigQuery({ projectId: realProject, location });
    await ensureResultsTable(bigquery, { datasetId, tableId, location });
    const sink = new BigQueryResultSink(new GoogleBigQueryJobsClient(bigquery), {
      projectId: realProject!,
      datasetId,
      tableId,
      location,
    });
    return {
      sink,
      readRows: (batchId) => sink.readRows(batchId),
      dispose: async () => {
        await bigquery.dataset(datasetId).table(tableId).delete({ ignoreNotFound: true });
      },
    };
  },
  { skip: realSkipReason },
);

describe("BigQueryResultSink requests (FakeBigQueryClient)", () => {
  it("one export is one load job: deterministic id, NDJSON append into the declared table", async () => {
    const { fake, sink } = fakeSink(undefined, { now: () => Date.parse("2025-03-04T05:06:07.890Z") });
    const rows = resultRows("batch-1", 2, 3);
    const result = await sink.exportBatch(exportTarget("batch-1", 2), pages(rows, 2));
    const exportId = exportIdFor(exportTarget("batch-1", 2));
    expect(result).toEqual({ exportId, rows: 3 });
    expect(fake.inserted).toHaveLength(1);
    expect(fake.inserted[0]!.request).toEqual({
      jobReference: { projectId: "tally-test", jobId: exportId, location: "EU" },
      configuration: {
        load: {
          destinationTable: { projectId: "tally-test", datasetId: "tally_results", tableId: "item_results" },
          sourceFormat: "NEWLINE_DELIMITED_JSON",
          writeDisposition: "WRITE_APPEND",
          createDisposition: "CREATE_NEVER",
          maxBadRecords: 0,
          ignoreUnknownValues: false,
        },
      },
    });
    expect(exportId).toMatch(/^[A-Za-z0-9_-]{1,1024}$/);
    // Every line carries exactly the table's columns; one exported_at per export → one partition.
    const columns = resultsTableSpec.schema.map((f) => f.name);
    for (const line of fake.inserted[0]!.lines) expect(Object.keys(line)).toEqual(columns);
    expect(fake.inserted[0]!.lines[1]).toEqual({
      batch_id: "batch-1",
      item_id: rows[1]!.itemId,
      generation: 2,
      result: rows[1]!.result,
      finished_at: new Date(rows[1]!.finishedAt).toISOString(),
      attempts: rows[1]!.attempts,
      export_id: exportId,
      exported_at: "2025-03-04T05:06:07.890Z",
      batch_created_at: new Date(testBatchCreatedAt).toISOString(),
    });
    expect(new Set(fake.inserted[0]!.lines.map((l) => l.exported_at)).size).toBe(1);
    expect(sink.operations).toBe(1);
    // The staged file is removed.
    expect(readdirSync(stagingDir).filter((f) => f.includes(exportId))).toEqual([]);
  });

  it("declares a DAY-partitioned (exported_at), batch-clustered table with the documented columns", () => {
    expect(resultsTableSpec.timePartitioning).toEqual({ type: "DAY", field: "exported_at" });
    expect(resultsTableSpec.clustering).toEqual({ fields: ["batch_id"] });
    expect(resultsTableSpec.schema.map((f) => [f.name, f.type])).toEqual([
      ["batch_id", "STRING"],
      ["item_id", "STRING"],
      ["generation", "INTEGER"],
      ["result", "JSON"],
      ["finished_at", "TIMESTAMP"],
      ["attempts", "INTEGER"],
      ["export_id", "STRING"],
      ["exported_at", "TIMESTAMP"],
      ["batch_created_at", "TIMESTAMP"],
    ]);
    // A column added to an existing table must be NULLABLE (BigQuery refuses a new REQUIRED one).
    expect(resultsTableSpec.schema.find((f) => f.name === "batch_created_at")?.mode).toBe("NULLABLE");
  });

  it("a re-run finds the finished job by its id and neither reads the rows nor inserts a job", async () => {
    const { fake, sink } = fakeSink();
    await sink.exportBatch(exportTarget("again", 1), pages(resultRows("again", 1, 4)));
    const again = await sink.exportBatch(exportTarget("again", 1), unreadable());
    expect(again).toEqual({ exportId: exportIdFor(exportTarget("again", 1)), rows: 4 });
    expect(fake.inserted).toHaveLength(1);
    expect(fake.tableRows).toHaveLength(4);
  });

  it("a duplicate job id (another finalizer won the race) is treated as the export, after waiting for its job", async () => {
    const { fake, sink } = fakeSink();
    const rows = resultRows("race", 1, 5);
    const exportId = exportIdFor(exportTarget("race", 1));
    // Between the sink's lookup and its insert, another finalizer inserts the same job id; it is still running.
    fake.afterMissingLookup = (jobId) => {
      fake.afterMissingLookup = null;
      fake.seedJob(
        jobId,
        rows.map((r) => ({ batch_id: r.batchId, item_id: r.itemId })),
        { kind: "run", polls: 3 },
      );
    };
    const result = await sink.exportBatch(exportTarget("race", 1), pages(rows));
    expect(result).toEqual({ exportId, rows: 5 });
    expect(fake.inserted).toHaveLength(0); // its own insert was rejected as a duplicate
    expect(fake.tableRows).toHaveLength(5); // the rows landed once, by the other job
    expect(fake.jobLookups.filter((id) => id === exportId).length).toBeGreaterThanOrEqual(5);
  });

  it("a job that exists but failed is followed by the next id of the ladder; rows land once", async () => {
    const { fake, sink } = fakeSink();
    const exportId = exportIdFor(exportTarget("flaky", 1));
    fake.willRun({ kind: "fail", reason: "backendError", message: "try again" }, { kind: "succeed" });
    const result = await sink.exportBatch(exportTarget("flaky", 1), pages(resultRows("flaky", 1, 6)));
    expect(result).toEqual({ exportId, rows: 6 });
    expect(fake.inserted.map((j) => j.request.jobReference.jobId)).toEqual([exportId, `${exportId}-r1`]);
    expect(fake.tableRows).toHaveLength(6);
    expect(sink.operations).toBe(2);
    // A later run walks the same ladder: attempt 0 failed, attempt 1 succeeded → nothing inserted.
    expect(await sink.exportBatch(exportTarget("flaky", 1), unreadable())).toEqual({ exportId, rows: 6 });
    expect(fake.inserted).toHaveLength(2);
    expect(fake.tableRows).toHaveLength(6);
  });

  it("a failure that needs a person (missing table) stops with a clear error; a later run takes the next attempt", async () => {
    const { fake, sink } = fakeSink();
    fake.tableExists = false;
    const exportId = exportIdFor(exportTarget("no-table", 1));
    await expect(
      sink.exportBatch(exportTarget("no-table", 1), pages(resultRows("no-table", 1, 2))),
    ).rejects.toThrow(
      `export ${exportId} of batch no-table generation 1 to tally-test.tally_results.item_results failed: load job ${exportId} notFound: Not found: Table item_results. A later run retries as ${exportId}-r1.`,
    );
    expect(fake.inserted).toHaveLength(1);
    fake.tableExists = true;
    expect(await sink.exportBatch(exportTarget("no-table", 1), pages(resultRows("no-table", 1, 2)))).toEqual({
      exportId,
      rows: 2,
    });
    expect(fake.inserted.map((j) => j.request.jobReference.jobId)).toEqual([exportId, `${exportId}-r1`]);
    expect(fake.tableRows).toHaveLength(2);
  });

  it("gives up after maxAttempts failed load jobs, naming each", async () => {
    const { fake, sink } = fakeSink(undefined, { maxAttempts: 2 });
    fake.willRun(
      { kind: "fail", reason: "backendError", message: "first" },
      { kind: "fail", reason: "internalError", message: "second" },
    );
    const exportId = exportIdFor(exportTarget("doomed", 1));
    await expect(
      sink.exportBatch(exportTarget("doomed", 1), pages(resultRows("doomed", 1, 1))),
    ).rejects.toThrow(
      `failed after 2 load jobs: ${exportId} failed (backendError: first); ${exportId}-r1 failed (internalError: second)`,
    );
    expect(fake.tableRows).toHaveLength(0);
  });

  it("an empty export inserts no job (no table operation)", async () => {
    const { fake, sink } = fakeSink();
    expect(await sink.exportBatch(exportTarget("nothing", 1), pages([]))).toEqual({
      exportId: exportIdFor(exportTarget("nothing", 1)),
      rows: 0,
    });
    expect(fake.inserted).toHaveLength(0);
    expect(sink.operations).toBe(0);
  });

  it("one load job whatever the batch size: 0 table operations per item", async () => {
    const { fake, sink } = fakeSink();
    await sink.exportBatch(exportTarget("big", 1), pages(resultRows("big", 1, 20_000), 1_000));
    expect(fake.inserted).toHaveLength(1);
    expect(fake.inserted[0]!.lines).toHaveLength(20_000);
    expect(sink.operations).toBe(1);
  });

  describe("taking over an export another identity started (a dead finalizer's load job)", () => {
    // Finalizer A (one identity) inserted the export's load job and died; finalizer B (another
    // identity: the worker vs the reconciler, say) runs the same export. B's insert is refused as a
    // duplicate and B must read A's job: jobs.get on a job one did not create needs
    // bigquery.jobs.get (https://cloud.google.com/bigquery/docs/reference/rest/v2/jobs/get).
    const a = {
      email: "tally-dev-worker@tally-test.iam.gserviceaccount.com",
      permissions: bigqueryExportPermissions,
    };
    const b = (permissions: readonly string[]) => ({
      email: "tally-dev-recon@tally-test.iam.gserviceaccount.com",
      permissions,
    });

    async function startedByA(
      batchId: string,
      rows: ResultRow[],
      outcome = { kind: "run" as const, polls: 2 },
    ) {
      const project = new FakeBigQueryClient(a);
      const exportId = exportIdFor(exportTarget(batchId, 1));
      project.seedJob(
        exportId,
        rows.map((r) => ({ batch_id: r.batchId, item_id: r.itemId })),
        outcome,
        a.email,
      );
      return { project, exportId };
    }

    it("with bigquery.jobs.get (what infra grants) B reads A's job, waits for it and reports its rows: no second job", async () => {
      const rows = resultRows("takeover", 1, 4);
      const { project, exportId } = await startedByA("takeover", rows);
      const asB = project.as(b(bigqueryExportPermissions));
      const { sink } = fakeSink(asB);
      expect(await sink.exportBatch(exportTarget("takeover", 1), unreadable())).toEqual({
        exportId,
        rows: 4,
      });
      expect(project.creatorOf(exportId)).toBe(a.email);
      expect(project.inserted).toHaveLength(0);
      expect(project.tableRows).toHaveLength(4);
    });

    it("with roles/bigquery.jobUser only (bigquery.jobs.create) B is refused with 403, and the sink says which permission is missing", async () => {
      const rows = resultRows("stuck", 1, 3);
      const { project, exportId } = await startedByA("stuck", rows);
      const asB = project.as(b(["bigquery.jobs.create"]));
      // The fake refuses the way BigQuery does.
      await expect(asB.getJob(exportId, "EU")).rejects.toMatchObject({ code: 403 });
      const { sink } = fakeSink(asB);
      const attempt = sink.exportBatch(exportTarget("stuck", 1), pages(rows));
      await expect(attempt).rejects.toThrow(
        `BigQuery refused to read load job ${exportId} in project tally-test (403: Access Denied: Job EU.${exportId}: User does not have bigquery.jobs.get permission for Job EU.${exportId}.)`,
      );
      await expect(sink.exportBatch(exportTarget("stuck", 1), pages(rows))).rejects.toThrow(
        "grant the exporting identities bigquery.jobs.create and bigquery.jobs.get",
      );
      // Nothing was loaded twice, and nothing was silently reported as exported.
      expect(project.inserted).toHaveLength(0);
    });

    it("losing the insert race to another identity is the same take-over: B needs bigquery.jobs.get to wait for A's job", async () => {
      const rows = resultRows("race-id", 1, 2);
      const exportId = exportIdFor(exportTarget("race-id", 1));
      const withGet = new FakeBigQueryClient(b(bigqueryExportPermissions));
      withGet.afterMissingLookup = (jobId) => {
        withGet.afterMissingLookup = null;
        withGet.seedJob(
          jobId,
          rows.map((r) => ({ batch_id: r.batchId, item_id: r.itemId })),
        );
      };
      expect(await fakeSink(withGet).sink.exportBatch(exportTarget("race-id", 1), pages(rows))).toEqual({
        exportId,
        rows: 2,
      });
      expect(withGet.creatorOf(exportId)).toBe(otherFinalizerEmail);

      const withoutGet = new FakeBigQueryClient(b(["bigquery.jobs.create"]));
      withoutGet.afterMissingLookup = (jobId) => {
        withoutGet.afterMissingLookup = null;
        withoutGet.seedJob(
          jobId,
          rows.map((r) => ({ batch_id: r.batchId, item_id: r.itemId })),
        );
      };
      await expect(
        fakeSink(withoutGet).sink.exportBatch(exportTarget("race-id", 1), pages(rows)),
      ).rejects.toThrow(/403.*bigquery\.jobs\.get/);
    });

    it("the creator reads its own job with bigquery.jobs.create alone", async () => {
      const own = new FakeBigQueryClient(b(["bigquery.jobs.create"]));
      const { sink } = fakeSink(own);
      expect(await sink.exportBatch(exportTarget("own", 1), pages(resultRows("own", 1, 2)))).toEqual({
        exportId: exportIdFor(exportTarget("own", 1)),
        rows: 2,
      });
    });
  });

  it("counts rows with one parameterized query on the table", async () => {
    const { fake, sink } = fakeSink();
    await sink.exportBatch(exportTarget("counted", 1), pages(resultRows("counted", 1, 7)));
    expect(await sink.countRows("counted")).toBe(7);
    expect(fake.queries.at(-1)).toEqual({
      sql: "SELECT COUNT(*) AS n FROM `tally-test.tally_results.item_results` WHERE batch_id = @batchId",
      params: { batchId: "counted" },
      location: "EU",
    });
    fake.tableExists = false;
    expect(await sink.countRows("counted")).toBe(0); // no table yet: nothing exported
  });
});
