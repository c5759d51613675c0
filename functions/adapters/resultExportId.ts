// The export id of one batch generation, shared by the result sinks. Deterministic in
// (batchId, generation), so a re-run of the same export is recognised (DuckDB's `exports` marker,
// BigQuery's job id), and a valid BigQuery job id: letters, digits, `_` and `-`, at most 1,024
// characters. Batch ids may hold other characters, so the readable part is sanitized and a hash of
// the exact (batchId, generation) keeps two ids that sanitize alike apart.
import { createHash } from "node:crypto";

const maxReadableBatchChars = 80;

export function exportIdFor(batchId: string, generation: number): string {
  if (!Number.isInteger(generation) || generation < 0)
    throw new Error(`generation must be a non-negative integer (got ${generation})`);
  const readable = batchId.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, maxReadableBatchChars);
  const hash = createHash("sha256").update(`${batchId}\u0000${generation}`).digest("hex").slice(0, 12);
  return `tally-${readable}-g${generation}-${hash}`;
}
