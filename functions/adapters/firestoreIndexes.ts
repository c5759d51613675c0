// Composite indexes and TTL fields the Firestore ledger's queries need. The Pulumi program declares
// exactly these (infra/storage.ts). The emulator needs no indexes, so test/infra/firestoreQueries.test.ts
// records every query shape the ledger sends and fails when one is served by neither an index here
// nor an automatic single-field index (minus the program's single-field exemptions): a query added
// without its index fails the tests, not production.

export const batchesCollection = "batches";
export const itemsCollection = "items";
/** One small document per paged reconciler sweep: where it stopped (Ledger.readSweepCursor). */
export const reconcilerStateCollection = "reconcilerState";

export interface IndexField {
  fieldPath: string;
  order: "ASCENDING" | "DESCENDING";
}

export interface CompositeIndex {
  /** Why the index exists: the query it serves. */
  purpose: string;
  collection: string;
  queryScope: "COLLECTION" | "COLLECTION_GROUP";
  fields: IndexField[];
}

const asc = (fieldPath: string): IndexField => ({ fieldPath, order: "ASCENDING" });
const desc = (fieldPath: string): IndexField => ({ fieldPath, order: "DESCENDING" });

export const firestoreIndexes: CompositeIndex[] = [
  // Every index over an item's time or position field starts with a spread prefix (`shard`, one of
  // firestore/layout.ts itemShards values) so its writes land at the tails of that many ranges, not
  // one (500 writes/s each); the queries carry `shard in [every shard]` (issue #16).
  {
    purpose: "reconciler: running items whose lease lapsed, across batches, every shard (findExpiredLeases)",
    collection: itemsCollection,
    queryScope: "COLLECTION_GROUP",
    fields: [asc("status"), asc("shard"), asc("leaseUntil")],
  },
  {
    purpose:
      "reconciler: pending items whose doorbell may be lost, across batches, every shard (findStalePending)",
    collection: itemsCollection,
    queryScope: "COLLECTION_GROUP",
    fields: [asc("status"), asc("shard"), asc("pendingSince")],
  },
  {
    purpose:
      "submission and API: a batch's items by position, every shard (getItemsBySeq, readItemRefs, listItems)",
    collection: itemsCollection,
    queryScope: "COLLECTION",
    fields: [asc("shard"), asc("seq")],
  },
  {
    purpose: "API: a batch's items filtered by status, in submission order, every shard (listItems)",
    collection: itemsCollection,
    queryScope: "COLLECTION",
    fields: [asc("status"), asc("shard"), asc("seq")],
  },
  {
    purpose: "finalization: succeeded items of one generation, in order, every shard (streamResults)",
    collection: itemsCollection,
    queryScope: "COLLECTION",
    fields: [asc("status"), asc("generation"), asc("shard"), asc("seq")],
  },
  {
    purpose: "progress: items finished in a time window, every shard (countFinishedBetween)",
    collection: itemsCollection,
    queryScope: "COLLECTION",
    fields: [asc("shard"), asc("finishedAt")],
  },
  {
    purpose: "operator retry: items failed in an earlier generation (resetFailedItems)",
    collection: itemsCollection,
    queryScope: "COLLECTION",
    fields: [asc("status"), asc("generation")],
  },
  {
    // Without it GET /v1/batches (no ?status=), the dashboard and the reconciler's batch sweeps fail
    // with FAILED_PRECONDITION in production: two orders need a composite, and batchId is a field
    // like any other to Firestore (only __name__, the document id, is in every index).
    purpose: "API, dashboard, reconciler sweeps: every batch, newest first (listBatches without status)",
    collection: batchesCollection,
    queryScope: "COLLECTION",
    fields: [desc("createdAt"), desc("batchId")],
  },
  {
    purpose: "API: batches filtered by status, newest first (listBatches)",
    collection: batchesCollection,
    queryScope: "COLLECTION",
    fields: [asc("status"), desc("createdAt"), desc("batchId")],
  },
  {
    purpose:
      "reconciler sweeps: batches in a status, oldest first, page after page (listBatches oldestFirst)",
    collection: batchesCollection,
    queryScope: "COLLECTION",
    fields: [asc("status"), asc("createdAt"), asc("batchId")],
  },
  {
    purpose: "reconciler: batches in a status, least recently progressed first (findBatches)",
    collection: batchesCollection,
    queryScope: "COLLECTION",
    fields: [asc("status"), asc("progressAt")],
  },
];

/**
 * Single-field index exemptions (gcp.firestore.Field with an empty indexConfig): every field no query
 * needs an automatic index of. Firestore indexes every field by default; an index over a field the
 * ledger writes in increasing order (a time, a position, a client id) caps the collection's writes
 * at 500/s, and every index entry is one more write per document write. Kept indexed: items.status,
 * items.generation, items.error.kind (count() aggregations merge them) and batches.dependsOn
 * (findDependents' array-contains), batches.status; everything a composite serves needs no
 * single-field index. The TTL fields (firestoreTtlFields) are exempted with their TTL policy.
 */
export const firestoreIndexExemptions: Array<{ collection: string; field: string }> = [
  ...[
    "shard",
    "batchId",
    "itemId",
    "seq",
    "payload",
    "attempt",
    "leaseOwner",
    "leaseUntil",
    "heartbeatAt",
    "steps",
    "result",
    "error.message",
    "lastError",
    "createdAt",
    "updatedAt",
    "startedAt",
    "finishedAt",
    "runStartedAt",
    "notBefore",
    "pendingSince",
  ].map((field) => ({ collection: itemsCollection, field })),
  ...[
    "batchId",
    "pipeline",
    "total",
    "received",
    "cursor",
    "submissionComplete",
    "failureThreshold",
    "contentHash",
    "generation",
    "reason",
    "terminateAs",
    "createdAt",
    "updatedAt",
    "progressAt",
    "startedAt",
    "finalizingAt",
    "finishedAt",
    "summary",
    "exportAttempts",
    "exportError",
    "exportFailedAt",
    "nextExportAt",
    "joinedWriters",
    "appendsInFlight",
    "appendsInFlightUntil",
  ].map((field) => ({ collection: batchesCollection, field })),
];

/** Firestore TTL policies: documents are deleted after `expireAt` (set at creation from the retention). */
export const firestoreTtlFields = [
  { collection: batchesCollection, field: "expireAt" },
  { collection: itemsCollection, field: "expireAt" },
];

export const defaultRetentionDays = 90;
