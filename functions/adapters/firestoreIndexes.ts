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
  {
    purpose: "reconciler: running items whose lease lapsed, across batches (findExpiredLeases)",
    collection: itemsCollection,
    queryScope: "COLLECTION_GROUP",
    fields: [asc("status"), asc("leaseUntil")],
  },
  {
    purpose: "reconciler: pending items whose doorbell may be lost, across batches (findStalePending)",
    collection: itemsCollection,
    queryScope: "COLLECTION_GROUP",
    fields: [asc("status"), asc("pendingSince")],
  },
  {
    purpose: "API: a batch's items filtered by status, in submission order (listItems)",
    collection: itemsCollection,
    queryScope: "COLLECTION",
    fields: [asc("status"), asc("seq")],
  },
  {
    purpose: "finalization: succeeded items of one generation, in order (streamResults)",
    collection: itemsCollection,
    queryScope: "COLLECTION",
    fields: [asc("status"), asc("generation"), asc("seq")],
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
    purpose: "reconciler: batches in a status, least recently progressed first (findBatches)",
    collection: batchesCollection,
    queryScope: "COLLECTION",
    fields: [asc("status"), asc("progressAt")],
  },
];

/** Firestore TTL policies: documents are deleted after `expireAt` (set at creation from the retention). */
export const firestoreTtlFields = [
  { collection: batchesCollection, field: "expireAt" },
  { collection: itemsCollection, field: "expireAt" },
];

export const defaultRetentionDays = 90;
