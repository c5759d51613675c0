// Runs one DuckDB export in its own process, as a worker or the reconciler of the local stack would.
// argv: <duckdb path> <batch id> <row count> [lock timeout ms]. Prints one JSON line per event on
// stdout: {"event":"lock_wait"} the first time the file is found locked, then {"event":"exported",…}.
import { DuckDBResultSink } from "../../../functions/adapters/duckdbResultSink";
import { exportTarget } from "../../support/exportTarget";
import { pages, resultRows } from "./resultRows";

async function main() {
  const [path, batchId, count, timeout] = process.argv.slice(2);
  if (!path || !batchId || !count)
    throw new Error("usage: exportInChildProcess <path> <batchId> <rows> [lockTimeoutMs]");
  let announced = false;
  const sink = new DuckDBResultSink(path, {
    lockTimeoutMs: timeout ? Number(timeout) : 60_000,
    onLockWait: () => {
      if (!announced) console.log(JSON.stringify({ event: "lock_wait" }));
      announced = true;
    },
  });
  const result = await sink.exportBatch(
    exportTarget(batchId, 1),
    pages(resultRows(batchId, 1, Number(count)), 1_000),
  );
  console.log(JSON.stringify({ event: "exported", ...result }));
}

main().catch((err) => {
  console.log(JSON.stringify({ event: "error", message: err instanceof Error ? err.message : String(err) }));
  process.exit(1);
});
