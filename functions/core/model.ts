// The ledger's data model (DESIGN.md §2.1–2.3). Plain data: no Google types, so the core and its
// tests never depend on an adapter. Times are epoch milliseconds.

export const itemStatuses = ["pending", "running", "succeeded", "failed"] as const;
export type ItemStatus = (typeof itemStatuses)[number];
export const terminalItemStatuses: readonly ItemStatus[] = ["succeeded", "failed"];
export const liveItemStatuses: readonly ItemStatus[] = ["pending", "running"];

export const errorKinds = [
  "permanent",
  "transient",
  "timeout",
  "dead_lettered",
  "cancelled",
  "attempts_exhausted",
] as const;
export type ErrorKind = (typeof errorKinds)[number];

export const batchStatuses = [
  "blocked",
  "submitting",
  "running",
  "finalizing",
  "succeeded",
  "partial",
  "failed",
  "cancelled",
] as const;
export type BatchStatus = (typeof batchStatuses)[number];
export const finalBatchStatuses: readonly BatchStatus[] = ["succeeded", "partial", "failed", "cancelled"];
export type BatchOutcome = "succeeded" | "partial" | "failed";

export function isFinalBatchStatus(s: BatchStatus): boolean {
  return finalBatchStatuses.includes(s);
}
export function isTerminalItemStatus(s: ItemStatus): boolean {
  return terminalItemStatuses.includes(s);
}

export interface ItemError {
  kind: ErrorKind;
  message: string;
  /** Extra facts, e.g. the dead-letter source subscription and delivery count. */
  details?: Record<string, string | number>;
}

export interface StepRecord {
  status: "succeeded";
  output?: unknown;
  finishedAt: number;
}

export interface Lease {
  owner: string;
  until: number;
}

export interface Item {
  batchId: string;
  itemId: string;
  /** Position in the submission: the cursor counts these. */
  seq: number;
  /** Bumped by an operator retry; an export row is keyed by (batch, item, generation). */
  generation: number;
  status: ItemStatus;
  payload: unknown;
  attempt: number;
  lease: Lease | null;
  heartbeatAt: number | null;
  steps: Record<string, StepRecord>;
  result: unknown;
  error: ItemError | null;
  /** Last error of a transient attempt, kept while the item is retried. */
  lastError: ItemError | null;
  createdAt: number;
  updatedAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  /**
   * When the current attempt's run began (issue #17 §3): a continuation keeps it, so the pipeline's
   * timeout bounds the whole run across the requests it takes. Null while no attempt runs.
   */
  runStartedAt?: number | null;
  /**
   * No delivery may lease the item before this time: a transient failure whose cause asked to be
   * retried no sooner (a 429 with a long Retry-After). Null when none.
   */
  notBefore?: number | null;
}

export interface BatchCounts {
  total: number;
  pending: number;
  running: number;
  succeeded: number;
  failed: number;
}

export interface BatchSummary {
  outcome: BatchOutcome;
  counts: BatchCounts;
  failedByKind: Partial<Record<ErrorKind, number>>;
  exportId: string | null;
  exportedRows: number;
  durationMs: number;
}

export interface Batch {
  batchId: string;
  pipeline: string;
  status: BatchStatus;
  /** Known once the submission is complete (JSON bodies know it up front). */
  total: number | null;
  /** Items received and stored so far. */
  received: number;
  /** Items whose doorbells were published (the submission cursor). */
  cursor: number;
  submissionComplete: boolean;
  failureThreshold: number;
  dependsOn: string[];
  /** Fingerprint of the submitted content: same id + same fingerprint is an idempotent re-submission. */
  contentHash: string;
  generation: number;
  /** Why the batch ended early (dependency failed, incomplete submission, cancelled by an operator). */
  reason: string | null;
  /** Set by cancel / dependency failure / incomplete submission: the final status it will take. */
  terminateAs: "cancelled" | "failed" | null;
  createdAt: number;
  updatedAt: number;
  /** When the cursor or received count last moved: stale submissions are found by it. */
  progressAt: number;
  startedAt: number | null;
  finalizingAt: number | null;
  finishedAt: number | null;
  summary: BatchSummary | null;
  /**
   * Failed export attempts since the last successful export or operator re-export. Persisted, so
   * the cap holds across finalizers, ticks and restarts.
   */
  exportAttempts?: number;
  /** The last export failure's message. */
  exportError?: string | null;
  /** Set when the export failed its last allowed attempt: the batch waits for an operator's re-export. */
  exportFailedAt?: number | null;
  /** Earliest time the next export attempt may claim the batch (backoff after a failed attempt). */
  nextExportAt?: number | null;
  /**
   * Requests that joined the submission of this existing batch (re-submissions), counted: a writer
   * that sees it move while it stores knows another request may be storing beside it and checks
   * that each position holds one item (submissionWriter.ts). Absent: 0.
   */
  joinedWriters?: number;
  /**
   * `:append` requests storing into this batch right now (beginAppend … endAppend), valid until
   * `appendsInFlightUntil` (a request that died never ends its count). An append that begins while
   * another is in flight checks every chunk's positions (submissionWriter.ts). Absent: 0.
   */
  appendsInFlight?: number;
  appendsInFlightUntil?: number | null;
}

export interface NewItem {
  itemId: string;
  payload: unknown;
}

export interface NewBatch {
  batchId: string;
  pipeline: string;
  failureThreshold: number;
  dependsOn: string[];
  contentHash: string;
  /** Known up front for JSON bodies; null for a stream until its end. */
  total: number | null;
}

/** Result row exported to the sink, one per succeeded item per generation. */
export interface ResultRow {
  batchId: string;
  itemId: string;
  generation: number;
  result: unknown;
  finishedAt: number;
  attempts: number;
}
