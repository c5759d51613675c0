// The core's ports. Adapters (functions/adapters/) implement them for Firestore, Pub/Sub, BigQuery
// and DuckDB; the core and the handlers depend only on these interfaces.
import type { FinalizationClaim } from "./batchFence";
import type {
  Batch,
  BatchCounts,
  BatchStatus,
  BatchSummary,
  ErrorKind,
  Item,
  ItemError,
  ItemStatus,
  NewBatch,
  NewItem,
  ResultRow,
} from "./model";

export interface ItemRef {
  batchId: string;
  itemId: string;
  generation: number;
}

export interface Page<T> {
  entries: T[];
  /** Opaque; absent on the last page. */
  nextPageToken?: string;
}

export type CreateBatchResult =
  | { kind: "created"; batch: Batch }
  /** Same id, same header: an idempotent re-submission (it may still need items or publishing). */
  | { kind: "exists"; batch: Batch }
  /** Same id, different header. */
  | { kind: "conflict"; batch: Batch };

export type SkipReason =
  | "not_found"
  | "terminal"
  | "leased_by_other"
  | "stale_generation"
  | "not_leased_by_caller"
  | "live_lease";

export type LeaseResult =
  | { kind: "leased"; item: Item }
  /** The ledger's attempt count had reached the maximum: the item is now failed `attempts_exhausted`. */
  | { kind: "exhausted"; item: Item }
  /** The item may not run before `notBefore` (its last failure asked so): nothing was written. */
  | { kind: "deferred"; notBefore: number; item: Item }
  | { kind: "skip"; reason: SkipReason; item: Item | null };

export interface ReleaseOptions {
  refundAttempt?: boolean;
  continuation?: boolean;
  notBefore?: number;
}

export type TransitionResult =
  | { kind: "done"; item: Item }
  | { kind: "skip"; reason: SkipReason; item: Item | null };

export type RedriveResult = "redriven" | "exhausted" | "skip";

export interface LedgerOpCounts {
  reads: number;
  writes: number;
  transactions: number;
  queries: number;
  aggregations: number;
}

export interface ListBatchesOptions {
  status?: BatchStatus;
  limit: number;
  pageToken?: string;
  /**
   * Oldest created first. The reconciler's sweeps page this way so that, when a tick runs out of
   * pages, the batches left for the next tick are the younger ones, not the longest-waiting.
   */
  oldestFirst?: boolean;
}

export interface FindBatchesOptions {
  status: BatchStatus;
  progressBefore?: number;
  limit: number;
  pageToken?: string;
}

export interface Ledger {
  // --- batches -------------------------------------------------------------------------------
  /** Creates the batch (`blocked` when it has dependencies, else `submitting`), or reports the existing one. */
  createBatch(batch: NewBatch, now: number): Promise<CreateBatchResult>;
  getBatch(batchId: string): Promise<Batch | null>;
  getBatches(batchIds: string[]): Promise<(Batch | null)[]>;
  /** Newest first (the API, the dashboard); oldest first with `oldestFirst` (the reconciler's sweeps). */
  listBatches(opts: ListBatchesOptions): Promise<Page<Batch>>;
  /** Oldest progress first, page after page, for the reconciler's paged sweeps. */
  findBatches(opts: FindBatchesOptions): Promise<Page<Batch>>;

  // --- submission ----------------------------------------------------------------------------
  /** Items at positions `fromSeq…`; those already stored are returned (for comparison), never overwritten. */
  getItemsBySeq(batchId: string, fromSeq: number, count: number): Promise<Item[]>;
  /**
   * Stores new items (create-only: an existing item is left as it is) and moves `received` forward.
   * Returns the ids whose document already existed (a concurrent identical submission, or an id
   * used twice in one stream: the coordinator tells them apart).
   */
  appendItems(
    batchId: string,
    fromSeq: number,
    items: NewItem[],
    now: number,
    opts: {
      publishable: boolean;
      /**
       * Leave `received` alone: the caller stores several chunks at once and records the stored
       * prefix with the cursor (advanceCursor's `received`), keeping the batch document cold.
       */
      deferReceived?: boolean;
    },
  ): Promise<{
    alreadyExisting: string[];
    /** The batch's `joinedWriters` as the fenced commits that stored the items saw it (their fence read). */
    joinedWriters: number;
  }>;
  /**
   * A request joins the submission of an existing batch: `joinedWriters` + 1, returned. A writer
   * already storing sees the change in its next fenced commit (the batch document moved).
   */
  joinSubmission(batchId: string, now: number): Promise<number>;
  /**
   * An `:append` request is about to store: it joins the batch (`joinedWriters` + 1, so an append
   * already storing sees it in its next fenced commit) and counts itself in flight until `until`.
   * `othersInFlight`: another append was in flight at that moment (this one must check positions).
   */
  beginAppend(
    batchId: string,
    now: number,
    until: number,
  ): Promise<{ joinedWriters: number; othersInFlight: boolean }>;
  /** The append that began ends (stored, refused or failed): one fewer in flight. */
  endAppend(batchId: string, now: number): Promise<void>;
  /**
   * How many items are stored at positions `fromSeq…fromSeq+count-1` (one count aggregation). More
   * than `count` means two items share a position: two requests of one batch stored different items
   * there at the same time (the coordinator's position check, submissionWriter.ts).
   */
  countItemsAt(batchId: string, fromSeq: number, count: number): Promise<number>;
  /**
   * Removes items this caller stored and never published, each only while it is still untouched
   * (pending, attempt 0, generation 1), and lowers `received` below the first one removed (it is a
   * lower bound of the stored prefix). The loser of a position collision withdraws its items with
   * it. Returns the ids removed.
   */
  withdrawItems(
    batchId: string,
    items: Array<{ itemId: string; seq: number }>,
    now: number,
  ): Promise<string[]>;
  /** Items in submission order from `fromSeq` (to publish from the cursor). */
  readItemRefs(batchId: string, fromSeq: number, count: number): Promise<ItemRef[]>;
  /**
   * Moves the submission cursor — and, when given, `received` — forward (never back), in one
   * write. Returns the batch after the write.
   */
  advanceCursor(batchId: string, cursor: number, now: number, received?: number): Promise<Batch>;
  /**
   * A long-running writer of a `submitting` batch (an operator retry paging) says it is alive: only
   * `progressAt` moves, so the stale-submission sweep does not take it for dead.
   */
  recordProgress(batchId: string, now: number): Promise<void>;
  /**
   * All items received and published: `submitting` → `running` (total fixed). Returns false when
   * the batch was not `submitting` (already running, blocked, final).
   */
  markSubmitted(batchId: string, total: number, now: number): Promise<boolean>;
  /** Records that the client has sent every item (total known) without publishing yet (blocked batches). */
  recordTotal(batchId: string, total: number, now: number): Promise<void>;

  // --- items ---------------------------------------------------------------------------------
  getItem(batchId: string, itemId: string): Promise<Item | null>;
  listItems(
    batchId: string,
    opts: { status?: ItemStatus; limit: number; pageToken?: string },
  ): Promise<Page<Item>>;
  /** Takes the lease in one conditional transaction: attempt+1, owner, until = now + leaseMs (F6). */
  leaseItem(
    ref: ItemRef,
    owner: string,
    leaseMs: number,
    maxAttempts: number,
    now: number,
  ): Promise<LeaseResult>;
  /** Extends the lease, only for its holder. */
  heartbeat(ref: ItemRef, owner: string, leaseMs: number, now: number): Promise<boolean>;
  /** Checkpoints a finished step's output, only for the lease holder. */
  checkpointStep(ref: ItemRef, owner: string, step: string, output: unknown, now: number): Promise<boolean>;
  /** Result + `succeeded` in one transaction (F1); refused when the item is terminal or of another generation. */
  completeItem(ref: ItemRef, owner: string, result: unknown, now: number): Promise<TransitionResult>;
  /**
   * Fails the item unless it is terminal. With `owner`, the caller must hold the lease (or it has
   * lapsed); without, the item must not be under a live lease (dead-letter, reconciler).
   */
  failItem(ref: ItemRef, error: ItemError, now: number, opts?: { owner?: string }): Promise<TransitionResult>;
  /**
   * Back to `pending` (transient error, shutdown, continuation), only for the lease holder; step
   * checkpoints are kept. `refundAttempt`: the release is not the item's fault (shutdown), so the
   * attempt it took is given back. `continuation`: the run goes on in a fresh request (issue #17
   * §3): the attempt is given back and the run's start (`runStartedAt`) kept. `notBefore`: no lease
   * before this time (a Retry-After), recorded on the item.
   */
  releaseItem(
    ref: ItemRef,
    owner: string,
    lastError: ItemError | null,
    now: number,
    opts?: ReleaseOptions,
  ): Promise<TransitionResult>;
  /** Running items whose lease lapsed before `now` (collection-group query on status + leaseUntil). */
  findExpiredLeases(now: number, limit: number): Promise<ItemRef[]>;
  /** Expired lease → `pending` (attempts remain) or `failed(attempts_exhausted)`. */
  redriveItem(ref: ItemRef, maxAttempts: number, now: number): Promise<RedriveResult>;
  /** Pending items (of started batches) untouched since `before`: their doorbell may never have been published. */
  findStalePending(before: number, limit: number): Promise<ItemRef[]>;
  /** Marks pending items as just (re)published so the next sweep does not pick them again. */
  touchPending(refs: ItemRef[], now: number): Promise<void>;

  // --- progress and finalization ---------------------------------------------------------------
  /** Derived counts by state (count() aggregations; no hot counter document). */
  countItems(batchId: string): Promise<BatchCounts>;
  countFailedByKind(batchId: string): Promise<Partial<Record<ErrorKind, number>>>;
  /**
   * Items that became terminal in each interval [edges[i], edges[i+1]) (by `finishedAt`): one
   * count() aggregation per interval, so the dashboard's completion chart stays bounded at any
   * batch size. Returns edges.length - 1 counts.
   */
  countFinishedBetween(batchId: string, edges: number[]): Promise<number[]>;
  /** "Anything left?" — one read: is any item pending or running? */
  hasLiveItems(batchId: string): Promise<boolean>;
  /** `running` → `finalizing` (or a stale `finalizing` re-claimed); exactly one caller wins. */
  beginFinalizing(batchId: string, now: number, staleFinalizingMs: number): Promise<Batch | null>;
  /** Hands back our claim (`claim` = its `finalizingAt`) without counting an export attempt. */
  releaseFinalizing(batchId: string, claim: number): Promise<void>;
  /**
   * Records a failed export of our claim (`claim` = the claim's `finalizingAt`) and hands the claim
   * back: the next finalizer may claim it after a backoff, or — once `maxExportAttempts` failures
   * are persisted — the batch stays `finalizing` with `exportFailedAt` set until an operator
   * re-exports it. Null when the claim is no longer ours.
   */
  recordExportFailure(
    batchId: string,
    claim: number,
    error: string,
    now: number,
    maxExportAttempts: number,
  ): Promise<Batch | null>;
  /**
   * Keeps a claim alive during a long export (a stale claim is taken over): returns the claim's new
   * value, or null when it is no longer ours.
   */
  renewFinalizing(batchId: string, claim: number, now: number): Promise<number | null>;
  /** Operator: a batch whose export failed for good may be claimed again at once. */
  reExport(batchId: string, now: number): Promise<Batch>;
  /** Succeeded items of one generation (one count() aggregation): the finalizer's check of the export. */
  countSucceeded(batchId: string, generation: number): Promise<number>;
  /**
   * `finalizing` → the outcome (or the termination's status), with the summary: only under the
   * caller's own claim and generation (batchFence.mayFinishBatch), else null. A sealed `total` is
   * kept; the derived count fills it only for a batch that never recorded one.
   */
  finishBatch(
    batchId: string,
    claim: FinalizationClaim,
    summary: BatchSummary,
    now: number,
  ): Promise<Batch | null>;
  /** Succeeded items of one generation, paged, for the sink export. */
  streamResults(batchId: string, generation: number, pageSize: number): AsyncIterable<ResultRow[]>;

  // --- dependencies and operator actions --------------------------------------------------------
  /** `blocked` → `submitting` (the cursor then publishes the stored items). */
  unblockBatch(batchId: string, now: number): Promise<boolean>;
  /** Batches that name `batchId` in their `dependsOn` and are still `blocked` (event-driven start of dependents). */
  findDependents(batchId: string, limit: number): Promise<Batch[]>;
  /**
   * Where a paged reconciler sweep stopped (an opaque page token), persisted across ticks so every
   * batch is reached however many there are; undefined: start from the beginning.
   */
  readSweepCursor(sweep: string): Promise<string | undefined>;
  writeSweepCursor(sweep: string, pageToken: string | undefined, now: number): Promise<void>;
  /**
   * Flags a non-final batch to end early: `cancelled` (operator) or `failed` (a failed dependency,
   * an incomplete submission). Pending items are then swept; returns null when already final.
   */
  requestTermination(
    batchId: string,
    as: "cancelled" | "failed",
    reason: string,
    now: number,
  ): Promise<Batch | null>;
  /** Fails up to `limit` pending items of a cancelled batch as `failed(cancelled)`; returns how many. */
  cancelPendingItems(batchId: string, reason: string, limit: number, now: number): Promise<number>;
  /** Starts a new generation for a final batch with failed items: → `submitting`, generation+1. */
  beginRetry(batchId: string, now: number): Promise<Batch>;
  /** Moves up to `limit` failed items to `pending` in the batch's generation; returns their refs to publish. */
  resetFailedItems(batchId: string, generation: number, limit: number, now: number): Promise<ItemRef[]>;
  /** Ends a retry sweep: `submitting` → `running`. */
  markRetrySubmitted(batchId: string, now: number): Promise<boolean>;

  /** Operation counters for the benchmarks (DESIGN.md §9). */
  readonly ops: LedgerOpCounts;
}

export interface WorkQueue {
  /**
   * Publishes one doorbell per item (batched) where `pipeline`'s workers receive them: every item is
   * of a batch of that pipeline (issue #17 §1, one work topic per pipeline). Resolves when every
   * message is accepted; rejects for a pipeline the queue does not route.
   */
  publish(pipeline: string, refs: ItemRef[]): Promise<void>;
  readonly published: number;
}

export interface ExportResult {
  exportId: string;
  rows: number;
}

/**
 * What one export writes: a generation of one incarnation of a batch id. A batch id can be used
 * again once TTL deleted its predecessor; `batchCreatedAt` (the batch document's creation time) tells
 * the two apart, so the new batch's export is never mistaken for the old one's (issue #15 item 5).
 */
export interface ExportTarget {
  batchId: string;
  generation: number;
  batchCreatedAt: number;
}

export interface ResultSink {
  /**
   * Exports the succeeded results of one generation of one batch incarnation. Idempotent: running
   * the same export again leaves exactly one row per item.
   */
  exportBatch(target: ExportTarget, rows: AsyncIterable<ResultRow[]>): Promise<ExportResult>;
  /** Rows currently in the sink for the batch (for the invariant checker). */
  countRows(batchId: string): Promise<number>;
  readonly operations: number;
  close(): Promise<void>;
}

export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };
