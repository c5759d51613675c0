// Where the ledger's documents and index entries land in Firestore's key space (issue #16), and how
// the ledger writes each field's values — the declaration test/infra/indexHotspots.test.ts checks the
// stack's indexes against and bench/capacityModel.ts derives production ceilings from.
//
// Firestore's limits this layout follows (read 2026-12-05; see docs/performance.md for the quotes):
// - An index over a field whose values increase (or decrease) sequentially between documents of a
//   collection — a timestamp, a position — takes every new entry at the tail of one key range: the
//   maximum write rate to that collection is 500 writes per second. Fields no query needs are exempt
//   from single-field indexing; a field a query does need gets a spread prefix (the "sharded
//   timestamps" pattern), so its entries are written at the tails of `itemShards` ranges instead of one.
// - Monotonically increasing document ids (positions "0", "1", …, client ids "k1", "k2", …) hotspot
//   the same way. An item's document id is a hash of (batch id, item id) followed by the item id:
//   spread across the key space, still readable, and the item id stays a field (`itemId`).

/** Spread prefix values on every index over an item's time or position field (≤ 30: one `in` filter). */
export const itemShards = 16;
/** Every shard, as the `in` filter a query over a sharded index carries. */
export const allItemShards: readonly number[] = Array.from({ length: itemShards }, (_, i) => i);

/** 32-bit FNV-1a: fast, stable across runtimes (not a security hash). */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * MurmurHash3's 32-bit finalizer. FNV-1a alone leaves its top bits poorly mixed for keys that differ
 * only in their last characters (positions "0", "1", …; ids k1, k2, …): measured on 10,000 such ids,
 * its first hex digit put 458 to 754 items in a shard where 625 ± 25 was due (1.6× between the
 * fullest and the emptiest), so one shard's index tail took 20 % more than its share. Finalized, the
 * spread is what a uniform hash gives (test/infra/itemKeySpread.test.ts). Changing this hash moves
 * every item's document: items stored under the old ids (a local `--persist` data folder from before
 * 2026-12-06; nothing was deployed) are not found after the change.
 */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The hash that places an item: spread over the key space in every digit. */
function placeHash(text: string): number {
  return fmix32(fnv1a(text));
}

/** Firestore's cap on a document id (1,500 bytes); longer item ids are stored under a hash of themselves. */
const maxDocIdBytes = 1500;

/**
 * Where an item lives: its document id (8 hex digits of a hash of batch and item id, "-", the item
 * id) and its shard (the first hex digit of that hash, so the shard is spread exactly as the ids are).
 */
export function itemKey(batchId: string, itemId: string): { docId: string; shard: number } {
  const hash = placeHash(`${batchId}\u0000${itemId}`).toString(16).padStart(8, "0");
  const shard = Number.parseInt(hash[0]!, 16) % itemShards;
  let docId = `${hash}-${itemId}`;
  if (Buffer.byteLength(docId) > maxDocIdBytes) {
    // Still unique: the long id's own hashes, both directions (the id stays in the `itemId` field).
    const rev = [...itemId].reverse().join("");
    docId = `${hash}-${fnv1a(itemId).toString(16)}${fnv1a(rev).toString(16)}-${Buffer.byteLength(itemId)}`;
  }
  return { docId, shard };
}

/**
 * How the ledger writes a field's values, as far as an index over it is concerned:
 * - `sequential`: increases with time or position across the documents of the collection (timestamps,
 *   positions, client ids assigned in order): an index whose key starts with it takes every write at
 *   one tail (500 writes/s per range);
 * - `spread`: spread uniformly over the key space or over `ranges` values (a hash, a shard);
 * - `few`: one of a handful of values (a status, a generation, a kind): it partitions an index into
 *   that many ranges, each ordered by what follows it.
 * `rate` says what drives the writes: every item (scales with items/s) or a batch's lifecycle (one
 * write per chunk of up to 500 items, or per lifecycle step).
 */
export interface FieldWrites {
  values: "sequential" | "spread" | "few";
  rate: "per-item" | "per-batch";
  /** Number of ranges a spread field divides an index into (undefined: splits with load, no bound). */
  ranges?: number;
  /** Which of the ledger's writes set it, and to what. */
  writes: string;
}

/** Every field of an item document (functions/adapters/firestore/storage.ts ItemDoc) and how it is written. */
export const itemFieldWrites: Record<string, FieldWrites> = {
  __name__: {
    values: "spread",
    rate: "per-item",
    writes: "appendItems: document id = itemKey(batchId, itemId).docId (hash prefix, then the item id)",
  },
  shard: {
    values: "spread",
    rate: "per-item",
    ranges: itemShards,
    writes: "appendItems: itemKey(batchId, itemId).shard (first hex digit of the id's hash)",
  },
  batchId: { values: "few", rate: "per-item", writes: "appendItems: the batch id (one value per batch)" },
  itemId: {
    values: "sequential",
    rate: "per-item",
    writes: "appendItems: the client's item id or the position (often k1, k2, … or 0, 1, …)",
  },
  seq: { values: "sequential", rate: "per-item", writes: "appendItems: the item's position in its batch" },
  generation: {
    values: "few",
    rate: "per-item",
    writes: "appendItems: 1; resetFailedItems: the retry's generation",
  },
  status: {
    values: "few",
    rate: "per-item",
    writes: "every transition: pending, running, succeeded, failed",
  },
  payload: {
    values: "sequential",
    rate: "per-item",
    writes: "appendItems: the client's payload (any map; often counters)",
  },
  attempt: { values: "few", rate: "per-item", writes: "leaseItem: attempt + 1; resets: 0" },
  leaseOwner: { values: "few", rate: "per-item", writes: "leaseItem: the worker's delivery id" },
  leaseUntil: {
    values: "sequential",
    rate: "per-item",
    writes: "leaseItem and heartbeat: now + leaseMs; release/complete: null",
  },
  heartbeatAt: { values: "sequential", rate: "per-item", writes: "heartbeat: now" },
  steps: { values: "sequential", rate: "per-item", writes: "checkpointStep: steps.<name>.finishedAt = now" },
  result: { values: "sequential", rate: "per-item", writes: "completeItem: the pipeline's result (any map)" },
  "error.kind": { values: "few", rate: "per-item", writes: "failItem and cancels: an ErrorKind" },
  "error.message": { values: "sequential", rate: "per-item", writes: "failItem: free text (may hold ids)" },
  lastError: { values: "sequential", rate: "per-item", writes: "releaseItem and resets: the last error" },
  createdAt: { values: "sequential", rate: "per-item", writes: "appendItems: now" },
  updatedAt: { values: "sequential", rate: "per-item", writes: "every item write: now" },
  startedAt: { values: "sequential", rate: "per-item", writes: "leaseItem (first lease): now" },
  finishedAt: { values: "sequential", rate: "per-item", writes: "completeItem, failItem: now" },
  runStartedAt: {
    values: "sequential",
    rate: "per-item",
    writes: "leaseItem: now unless a continuation kept it; releaseItem, redriveItem, resets: null",
  },
  notBefore: {
    values: "sequential",
    rate: "per-item",
    writes: "releaseItem after a Retry-After: now + the wait; leaseItem, redriveItem, resets: null",
  },
  pendingSince: {
    values: "sequential",
    rate: "per-item",
    writes: "appendItems (publishable), releaseItem, redriveItem, touchPending, resets: now",
  },
  expireAt: { values: "sequential", rate: "per-item", writes: "appendItems: now + retention (TTL)" },
};

/** Every field of a batch document (core/model.ts Batch) and how it is written: all per batch. */
export const batchFieldWrites: Record<string, FieldWrites> = {
  __name__: {
    values: "sequential",
    rate: "per-batch",
    writes: "createBatch: document id = the client's batch id",
  },
  batchId: { values: "sequential", rate: "per-batch", writes: "createBatch: the client's batch id" },
  pipeline: { values: "few", rate: "per-batch", writes: "createBatch" },
  status: { values: "few", rate: "per-batch", writes: "every lifecycle step" },
  dependsOn: { values: "spread", rate: "per-batch", writes: "createBatch: the batch ids it waits for" },
  total: {
    values: "sequential",
    rate: "per-batch",
    writes: "createBatch, recordTotal, markSubmitted, finishBatch",
  },
  received: {
    values: "sequential",
    rate: "per-batch",
    writes: "appendItems, advanceCursor, markSubmitted: per chunk",
  },
  cursor: { values: "sequential", rate: "per-batch", writes: "advanceCursor, markSubmitted: per chunk" },
  submissionComplete: { values: "few", rate: "per-batch", writes: "recordTotal, markSubmitted" },
  failureThreshold: { values: "few", rate: "per-batch", writes: "createBatch" },
  contentHash: { values: "spread", rate: "per-batch", writes: "createBatch" },
  generation: {
    values: "few",
    rate: "per-batch",
    writes: "createBatch, beginRetry, every fenced commit (unchanged)",
  },
  reason: { values: "few", rate: "per-batch", writes: "requestTermination, beginRetry" },
  terminateAs: { values: "few", rate: "per-batch", writes: "requestTermination, beginRetry" },
  createdAt: { values: "sequential", rate: "per-batch", writes: "createBatch: now" },
  updatedAt: { values: "sequential", rate: "per-batch", writes: "every batch write: now" },
  progressAt: { values: "sequential", rate: "per-batch", writes: "per chunk and lifecycle step: now" },
  startedAt: { values: "sequential", rate: "per-batch", writes: "markSubmitted: now" },
  finalizingAt: { values: "sequential", rate: "per-batch", writes: "beginFinalizing, renewFinalizing: now" },
  finishedAt: { values: "sequential", rate: "per-batch", writes: "finishBatch: now" },
  summary: { values: "sequential", rate: "per-batch", writes: "finishBatch: counts, durations, export id" },
  exportAttempts: { values: "few", rate: "per-batch", writes: "recordExportFailure, reExport" },
  exportError: { values: "few", rate: "per-batch", writes: "recordExportFailure" },
  exportFailedAt: { values: "sequential", rate: "per-batch", writes: "recordExportFailure: now" },
  nextExportAt: { values: "sequential", rate: "per-batch", writes: "recordExportFailure: now + backoff" },
  expireAt: { values: "sequential", rate: "per-batch", writes: "createBatch: now + retention (TTL)" },
  joinedWriters: {
    values: "few",
    rate: "per-batch",
    writes: "joinSubmission, beginAppend: +1 per re-submission or append request",
  },
  appendsInFlight: { values: "few", rate: "per-batch", writes: "beginAppend +1, endAppend -1" },
  appendsInFlightUntil: {
    values: "sequential",
    rate: "per-batch",
    writes: "beginAppend: now + the longest request",
  },
};
