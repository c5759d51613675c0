// Chooses the result sink from the configuration: DuckDB (the local default, one file under the
// local data folder) or BigQuery (the deployed stack's partitioned, clustered results table).
import { BigQuery } from "@google-cloud/bigquery";
import type { TallyConfig } from "../config";
import type { ResultSink } from "../core/ports";
import { BigQueryResultSink, GoogleBigQueryJobsClient } from "./bigqueryResultSink";
import { DuckDBResultSink } from "./duckdbResultSink";

export async function createResultSink(config: TallyConfig): Promise<ResultSink> {
  const { env } = config;
  switch (env.TALLY_SINK) {
    case "duckdb":
      return new DuckDBResultSink(env.TALLY_DUCKDB_PATH);
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
