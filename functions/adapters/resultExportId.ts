// The export id of one generation of one batch incarnation, shared by the result sinks.
// Deterministic in (batchId, batchCreatedAt, generation), so a re-run of the same export is
// recognised (DuckDB's `exports` marker, BigQuery's job id), while a batch that reuses the id of a
// TTL-deleted predecessor gets ids of its own (issue #15 item 5). A valid BigQuery job id: letters,
// digits, `_` and `-`, at most 1,024 characters. Batch ids may hold other characters, so the
// readable part is sanitized and a hash of the exact triple keeps two ids that sanitize alike apart.
import { createHash } from "node:crypto";
import type { ExportTarget } from "../core/ports";

const maxReadableBatchChars = 80;

export function exportIdFor(target: ExportTarget): string {
  const { batchId, generation, batchCreatedAt } = target;
  if (!Number.isInteger(generation) || generation < 0)
    throw new Error(`generation must be a non-negative integer (got ${generation})`);
  if (!Number.isFinite(batchCreatedAt) || batchCreatedAt < 0)
    throw new Error(`batchCreatedAt must be a non-negative number of milliseconds (got ${batchCreatedAt})`);
  const readable = batchId.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, maxReadableBatchChars);
  const incarnation = Math.floor(batchCreatedAt).toString(36);
  const hash = createHash("sha256")
    .update(`${batchId}\u0000${batchCreatedAt}\u0000${generation}`)
    .digest("hex")
    .slice(0, 12);
  return `tally-${readable}-${incarnation}-g${generation}-${hash}`;
}
