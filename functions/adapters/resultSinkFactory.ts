// Chooses the result sink from the configuration: DuckDB (the local default, one file under the
// local data folder) or BigQuery (the deployed stack's results table).
import type { TallyConfig } from "../config";
import type { ResultSink } from "../core/ports";
import { DuckDBResultSink } from "./duckdbResultSink";

export async function createResultSink(config: TallyConfig): Promise<ResultSink> {
  const { env } = config;
  switch (env.TALLY_SINK) {
    case "duckdb":
      return new DuckDBResultSink(env.TALLY_DUCKDB_PATH);
    case "bigquery":
      // Replaced by the BigQuery adapter in the next commit of the sinks work (issue #5).
      throw new Error("TALLY_SINK=bigquery: the BigQuery result sink is not available in this build yet");
  }
}
