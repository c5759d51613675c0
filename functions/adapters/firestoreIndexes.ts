// Composite indexes and TTL fields the Firestore ledger's queries need. The Pulumi program declares
// exactly these (infra/), so a query added here without its index fails the infra tests, not
// production. The emulator needs no indexes.

export const batchesCollection = "batches";
export const itemsCollection = "items";

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
