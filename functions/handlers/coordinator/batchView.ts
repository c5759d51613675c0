// The API's JSON shapes of a batch and an item (DESIGN.md §3). Times are RFC 3339 strings; counts
// are derived from item states (countItems), never stored counters.
import type { Batch, BatchCounts, Item } from "../../core/model";
import type { ItemInclude } from "./validation";

const iso = (ms: number | null | undefined) =>
  ms === null || ms === undefined ? null : new Date(ms).toISOString();

export function batchView(b: Batch, counts: BatchCounts | null) {
  return {
    id: b.batchId,
    pipeline: b.pipeline,
    status: b.status,
    outcome: b.summary?.outcome ?? null,
    /** Known once every item was sent (JSON bodies: at once). */
    total: b.total,
    /** Derived from item states at the time of the request (null in listings: GET the batch). */
    counts,
    progress: {
      /** Items stored so far. */
      received: b.received,
      /** Submission cursor: items whose doorbells were published. */
      cursor: b.cursor,
      submissionComplete: b.submissionComplete,
    },
    failureThreshold: b.failureThreshold,
    dependsOn: b.dependsOn,
    generation: b.generation,
    /** Why the batch ended early (cancelled, dependency failed, incomplete submission). */
    reason: b.reason,
    terminateAs: b.terminateAs,
    summary: b.summary
      ? {
          outcome: b.summary.outcome,
          counts: b.summary.counts,
          failedByKind: b.summary.failedByKind,
          durationMs: b.summary.durationMs,
        }
      : null,
    export: b.summary ? { exportId: b.summary.exportId, rows: b.summary.exportedRows } : null,
    /**
     * Failed export attempts of the current finalization (null when none failed). `failedAt` set:
     * the attempts are used up and the batch waits for `POST /v1/batches/{id}:export`.
     */
    exportFailure:
      (b.exportAttempts ?? 0) > 0 && b.status === "finalizing"
        ? {
            attempts: b.exportAttempts ?? 0,
            error: b.exportError ?? null,
            failedAt: iso(b.exportFailedAt),
            nextAttemptAt: iso(b.nextExportAt),
          }
        : null,
    createdAt: iso(b.createdAt),
    updatedAt: iso(b.updatedAt),
    startedAt: iso(b.startedAt),
    finalizingAt: iso(b.finalizingAt),
    finishedAt: iso(b.finishedAt),
  };
}

export type BatchView = ReturnType<typeof batchView>;

export function itemView(it: Item, include: readonly ItemInclude[] = []) {
  return {
    id: it.itemId,
    seq: it.seq,
    status: it.status,
    generation: it.generation,
    attempt: it.attempt,
    error: it.error,
    lastError: it.lastError,
    lease: it.lease ? { owner: it.lease.owner, until: iso(it.lease.until) } : null,
    completedSteps: Object.keys(it.steps).sort(
      (a, b) => (it.steps[a]?.finishedAt ?? 0) - (it.steps[b]?.finishedAt ?? 0),
    ),
    createdAt: iso(it.createdAt),
    updatedAt: iso(it.updatedAt),
    startedAt: iso(it.startedAt),
    finishedAt: iso(it.finishedAt),
    durationMs: it.startedAt !== null && it.finishedAt !== null ? it.finishedAt - it.startedAt : null,
    heartbeatAt: iso(it.heartbeatAt),
    ...(include.includes("payload") ? { payload: it.payload } : {}),
    ...(include.includes("result") ? { result: it.result } : {}),
    ...(include.includes("steps") ? { steps: it.steps } : {}),
  };
}
