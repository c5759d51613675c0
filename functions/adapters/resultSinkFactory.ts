// Chooses the result sink from the configuration: DuckDB (the local default, one file under the
// local data folder) or BigQuery (the deployed stack's partitioned, clustered results table).
//
// The DuckDB adapter is imported only when it is the configured sink: `@duckdb/node-api` loads a
// native library of about 70 MB when its module is first required, and the deployed functions
// (TALLY_SINK=bigquery) never use it. A static import here would load it in every function at start
// (functions/index.ts → runtime.ts → this file), which test/sinks/lazyDuckdb.test.ts refuses.
import { BigQuery } from "@google-cloud/bigquery";
import type { TallyConfig } from "../config";
import type { ResultSink } from "../core/ports";
import { BigQueryResultSink, GoogleBigQueryJobsClient } from "./bigqueryResultSink";

export async function createResultSink(config: TallyConfig): Promise<ResultSink> {
  const { env } = config;
  switch (env.TALLY_SINK) {
    case "duckdb": {
      // `.js`: the path as Node resolves it at run time (tsx, vitest and the bundle map it to the source).
      const { DuckDBResultSink } = await import("./duckdbResultSink.js");
      return new DuckDBResultSink(env.TALLY_DUCKDB_PATH);
    }
    case "bigquery": {
      const location = env.TALLY_BIGQUERY_LOCATION;
      const bigquery = new BigQuery({ projectId: config.projectId, location });
      return new BigQueryResultSink(new GoogleBigQueryJobsClient(bigquery), {
        projectId: config.projectId,
        datasetId: env.TALLY_BIGQUERY_DATASET,
        tableId: config.topology.resultsTable,
        location,
      });
    }
  }
}
