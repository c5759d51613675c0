// The factory picks the sink from the configuration (TALLY_SINK), with the configured names.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { BigQueryResultSink } from "../../functions/adapters/bigqueryResultSink";
import { DuckDBResultSink } from "../../functions/adapters/duckdbResultSink";
import { createResultSink } from "../../functions/adapters/resultSinkFactory";
import { loadConfig } from "../../functions/config";

const dir = mkdtempSync(join(tmpdir(), "tally-sink-factory-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("createResultSink", () => {
  it("builds the DuckDB sink on TALLY_DUCKDB_PATH by default", async () => {
    const sink = await createResultSink(loadConfig({ TALLY_DUCKDB_PATH: join(dir, "r.duckdb") }));
    expect(sink).toBeInstanceOf(DuckDBResultSink);
    expect((sink as DuckDBResultSink).path).toBe(join(dir, "r.duckdb"));
  });

  it("builds the BigQuery sink on the project, dataset, results table and location", async () => {
    const sink = await createResultSink(
      loadConfig({
        TALLY_SINK: "bigquery",
        GOOGLE_CLOUD_PROJECT: "my-project",
        TALLY_BIGQUERY_DATASET: "my_results",
        TALLY_BIGQUERY_LOCATION: "europe-west1",
      }),
    );
    expect(sink).toBeInstanceOf(BigQueryResultSink);
    const bq = sink as BigQueryResultSink;
    expect(bq.tableRef).toBe("my-project.my_results.item_results");
    expect(bq.loadJobRequest("j").jobReference).toEqual({
      projectId: "my-project",
      jobId: "j",
      location: "europe-west1",
    });
  });
});
