// The Firestore ledger: the single source of truth (DESIGN.md §2.1).
//
// Shape, and the Firestore limits it follows from:
// - `batches/{batchId}/items/{itemId}`: one document per item, so every item transition is a
//   transaction on its own document. Nothing per item ever writes the batch document: a single
//   document sustains ~1 write/s, and the emulator aborts concurrent transactions on one document
//   ("lock timeout") well before 50. Progress counts are therefore derived with count()
//   aggregations, never kept in a hot counter.
// - The batch document is written per chunk of submission (cursor, at most about once a second)
//   and per lifecycle step, never per item.
// - An item holds its payload, step outputs and result; each is size-capped (core/limits.ts) so
//   the document stays far below 1 MiB.
// - Lease fields are flat (`leaseOwner`, `leaseUntil`) so the reconciler's collection-group query
//   on (status, leaseUntil) is served by one composite index (firestoreIndexes.ts).
//
// The ledger is split by concern so each file's invariants can be read whole:
// - firestore/batchLifecycle.ts: the batch document (creation, submission, claim, finish, retry);
// - firestore/itemTransitions.ts: every item write (create, lease, complete, fail, release, redrive);
// - firestore/queries.ts: queries and count() aggregations;
// - firestore/storage.ts: references, stored shapes, transactions and the batch fence they share.
// This class is the Ledger port over those parts.
import type { Firestore } from "@google-cloud/firestore";
import type { FinalizationClaim } from "../core/batchFence";
import type {
  Batch,
  BatchCounts,
  BatchSummary,
  ErrorKind,
  Item,
  ItemError,
  ItemStatus,
  NewBatch,
  NewItem,
  ResultRow,
} from "../core/model";
import type {
  CreateBatchResult,
  FindBatchesOptions,
  ItemRef,
  LeaseResult,
  Ledger,
  LedgerOpCounts,
  ListBatchesOptions,
  Page,
  RedriveResult,
  ReleaseOptions,
  TransitionResult,
} from "../core/ports";
import { FirestoreBatchLifecycle } from "./firestore/batchLifecycle";
import { FirestoreItemTransitions } from "./firestore/itemTransitions";
import { FirestoreLedgerQueries } from "./firestore/queries";
import { type FirestoreLedgerOptions, LedgerStorage } from "./firestore/storage";

export { type FirestoreLedgerOptions, InvalidPageTokenError, RetryRefusedError } from "./firestore/storage";

export class FirestoreLedger implements Ledger {
  readonly ops: LedgerOpCounts;
  private readonly batches: FirestoreBatchLifecycle;
  private readonly transitions: FirestoreItemTransitions;
  private readonly queries: FirestoreLedgerQueries;

  constructor(db: Firestore, opts: FirestoreLedgerOptions = {}) {
    const storage = new LedgerStorage(db, opts);
    this.ops = storage.ops;
    this.queries = new FirestoreLedgerQueries(storage);
    this.transitions = new FirestoreItemTransitions(storage);
    this.batches = new FirestoreBatchLifecycle(storage, this.queries);
  }

  createBatch(nb: NewBatch, now: number): Promise<CreateBatchResult> {
    return this.batches.createBatch(nb, now);
  }
  getBatch(batchId: string): Promise<Batch | null> {
    return this.batches.getBatch(batchId);
  }
  getBatches(batchIds: string[]): Promise<(Batch | null)[]> {
    return this.batches.getBatches(batchIds);
  }
  listBatches(opts: ListBatchesOptions): Promise<Page<Batch>> {
    return this.queries.listBatches(opts);
  }
  findBatches(opts: FindBatchesOptions): Promise<Page<Batch>> {
    return this.queries.findBatches(opts);
  }
  getItemsBySeq(batchId: string, fromSeq: number, count: number): Promise<Item[]> {
    return this.queries.getItemsBySeq(batchId, fromSeq, count);
  }
  appendItems(
    batchId: string,
    fromSeq: number,
    items: NewItem[],
    now: number,
    opts: { publishable: boolean; deferReceived?: boolean },
  ): Promise<{ alreadyExisting: string[]; joinedWriters: number }> {
    return this.transitions.appendItems(batchId, fromSeq, items, now, opts);
  }
  joinSubmission(batchId: string, now: number): Promise<number> {
    return this.batches.joinSubmission(batchId, now);
  }
  beginAppend(
    batchId: string,
    now: number,
    until: number,
  ): Promise<{ joinedWriters: number; othersInFlight: boolean }> {
    return this.batches.beginAppend(batchId, now, until);
  }
  endAppend(batchId: string, now: number): Promise<void> {
    return this.batches.endAppend(batchId, now);
  }

  countItemsAt(batchId: string, fromSeq: number, count: number): Promise<number> {
    return this.queries.countItemsAt(batchId, fromSeq, count);
  }
  withdrawItems(
    batchId: string,
    items: Array<{ itemId: string; seq: number }>,
    now: number,
  ): Promise<string[]> {
    return this.transitions.withdrawItems(batchId, items, now);
  }
  readItemRefs(batchId: string, fromSeq: number, count: number): Promise<ItemRef[]> {
    return this.queries.readItemRefs(batchId, fromSeq, count);
  }
  advanceCursor(batchId: string, cursor: number, now: number, received?: number): Promise<Batch> {
    return this.batches.advanceCursor(batchId, cursor, now, received);
  }
  recordProgress(batchId: string, now: number): Promise<void> {
    return this.batches.recordProgress(batchId, now);
  }
  markSubmitted(batchId: string, total: number, now: number): Promise<boolean> {
    return this.batches.markSubmitted(batchId, total, now);
  }
  recordTotal(batchId: string, total: number, now: number): Promise<void> {
    return this.batches.recordTotal(batchId, total, now);
  }
  getItem(batchId: string, itemId: string): Promise<Item | null> {
    return this.queries.getItem(batchId, itemId);
  }
  listItems(
    batchId: string,
    opts: { status?: ItemStatus; limit: number; pageToken?: string },
  ): Promise<Page<Item>> {
    return this.queries.listItems(batchId, opts);
  }
  leaseItem(
    ref: ItemRef,
    owner: string,
    leaseMs: number,
    maxAttempts: number,
    now: number,
  ): Promise<LeaseResult> {
    return this.transitions.leaseItem(ref, owner, leaseMs, maxAttempts, now);
  }
  heartbeat(ref: ItemRef, owner: string, leaseMs: number, now: number): Promise<boolean> {
    return this.transitions.heartbeat(ref, owner, leaseMs, now);
  }
  checkpointStep(ref: ItemRef, owner: string, step: string, output: unknown, now: number): Promise<boolean> {
    return this.transitions.checkpointStep(ref, owner, step, output, now);
  }
  completeItem(ref: ItemRef, owner: string, result: unknown, now: number): Promise<TransitionResult> {
    return this.transitions.completeItem(ref, owner, result, now);
  }
  failItem(
    ref: ItemRef,
    error: ItemError,
    now: number,
    opts: { owner?: string } = {},
  ): Promise<TransitionResult> {
    return this.transitions.failItem(ref, error, now, opts);
  }
  releaseItem(
    ref: ItemRef,
    owner: string,
    lastError: ItemError | null,
    now: number,
    opts: ReleaseOptions = {},
  ): Promise<TransitionResult> {
    return this.transitions.releaseItem(ref, owner, lastError, now, opts);
  }
  findExpiredLeases(now: number, limit: number): Promise<ItemRef[]> {
    return this.queries.findExpiredLeases(now, limit);
  }
  redriveItem(ref: ItemRef, maxAttempts: number, now: number): Promise<RedriveResult> {
    return this.transitions.redriveItem(ref, maxAttempts, now);
  }
  findStalePending(before: number, limit: number): Promise<ItemRef[]> {
    return this.queries.findStalePending(before, limit);
  }
  touchPending(refs: ItemRef[], now: number): Promise<void> {
    return this.transitions.touchPending(refs, now);
  }
  countItems(batchId: string): Promise<BatchCounts> {
    return this.queries.countItems(batchId);
  }
  countFailedByKind(batchId: string): Promise<Partial<Record<ErrorKind, number>>> {
    return this.queries.countFailedByKind(batchId);
  }
  countFinishedBetween(batchId: string, edges: number[]): Promise<number[]> {
    return this.queries.countFinishedBetween(batchId, edges);
  }
  countSucceeded(batchId: string, generation: number): Promise<number> {
    return this.queries.countSucceeded(batchId, generation);
  }
  hasLiveItems(batchId: string): Promise<boolean> {
    return this.queries.hasLiveItems(batchId);
  }
  releaseFinalizing(batchId: string, claim: number): Promise<void> {
    return this.batches.releaseFinalizing(batchId, claim);
  }
  recordExportFailure(
    batchId: string,
    claim: number,
    error: string,
    now: number,
    maxExportAttempts: number,
  ): Promise<Batch | null> {
    return this.batches.recordExportFailure(batchId, claim, error, now, maxExportAttempts);
  }
  renewFinalizing(batchId: string, claim: number, now: number): Promise<number | null> {
    return this.batches.renewFinalizing(batchId, claim, now);
  }
  reExport(batchId: string, now: number): Promise<Batch> {
    return this.batches.reExport(batchId, now);
  }
  beginFinalizing(batchId: string, now: number, staleFinalizingMs: number): Promise<Batch | null> {
    return this.batches.beginFinalizing(batchId, now, staleFinalizingMs);
  }
  finishBatch(
    batchId: string,
    claim: FinalizationClaim,
    summary: BatchSummary,
    now: number,
  ): Promise<Batch | null> {
    return this.batches.finishBatch(batchId, claim, summary, now);
  }
  streamResults(batchId: string, generation: number, pageSize: number): AsyncIterable<ResultRow[]> {
    return this.queries.streamResults(batchId, generation, pageSize);
  }
  unblockBatch(batchId: string, now: number): Promise<boolean> {
    return this.batches.unblockBatch(batchId, now);
  }
  findDependents(batchId: string, limit: number): Promise<Batch[]> {
    return this.queries.findDependents(batchId, limit);
  }
  readSweepCursor(sweep: string): Promise<string | undefined> {
    return this.batches.readSweepCursor(sweep);
  }
  writeSweepCursor(sweep: string, pageToken: string | undefined, now: number): Promise<void> {
    return this.batches.writeSweepCursor(sweep, pageToken, now);
  }
  requestTermination(
    batchId: string,
    as: "cancelled" | "failed",
    reason: string,
    now: number,
  ): Promise<Batch | null> {
    return this.batches.requestTermination(batchId, as, reason, now);
  }
  cancelPendingItems(batchId: string, reason: string, limit: number, now: number): Promise<number> {
    return this.transitions.cancelPendingItems(batchId, reason, limit, now);
  }
  beginRetry(batchId: string, now: number): Promise<Batch> {
    return this.batches.beginRetry(batchId, now);
  }
  resetFailedItems(batchId: string, generation: number, limit: number, now: number): Promise<ItemRef[]> {
    return this.transitions.resetFailedItems(batchId, generation, limit, now);
  }
  markRetrySubmitted(batchId: string, now: number): Promise<boolean> {
    return this.batches.markRetrySubmitted(batchId, now);
  }
}
