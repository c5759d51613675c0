// The batch fence (DESIGN.md §2.3 "Fencing"): the pure decisions that order every write which adds
// an item to a batch generation, or makes a finished item live again, against the batch's
// finalization claim. The Firestore ledger applies them; the simulator (test/simulation/) runs the
// same functions against an in-memory store.
//
// The argument, in three facts a reviewer can check against the code:
//
// 1. Item-creating writes (a submission's chunk) and item-resetting writes (an operator retry's page)
//    commit atomically with a *fence check*: a write of the batch document that sets a field to the
//    value just read, preconditioned on the update time of that read. When the batch document has
//    not changed since, the write changes nothing and Firestore keeps the previous update time
//    (google/firestore/v1/write.proto, WriteResult.update_time: "If the write did not actually
//    change the document, this will be the previous update_time"), so concurrent chunks of one
//    submission never conflict with each other. When anything changed the batch document, the whole
//    commit fails (FAILED_PRECONDITION) and the writer decides again on a fresh read.
// 2. The states that admit those writes (`mayCreateItems`, `mayResetItems`) and the states from which
//    finalization may be claimed (`mayClaimFinalization`) are disjoint: no single batch snapshot
//    admits both (test/core/batchFence.test.ts checks every combination). So between a fenced write's
//    read and any claim, some write moved the batch document (seal, termination, end of a retry).
// 3. The claim reads the batch, then asks "is any item live?" (a strongly consistent query), then
//    writes preconditioned on its read. A fenced commit that landed before the state change that made
//    the batch claimable is therefore visible to that query: the claim is refused while its items
//    are live. A fenced commit after that change fails its fence. No other write makes an item live:
//    leases, releases and redrives move items that are already live.
//
// The finalizer then verifies before it commits the outcome (finalizeBatch.ts): nothing is live
// and the sink holds exactly the succeeded items of the generation.
import type { Batch } from "./model";
import { isFinalBatchStatus } from "./model";

export type FenceDecision = { ok: true } | { ok: false; reason: string };

const refuse = (reason: string): FenceDecision => ({ ok: false, reason });

function describe(b: Batch): string {
  if (b.terminateAs) return `${b.status}, ending ${b.terminateAs}${b.reason ? ` (${b.reason})` : ""}`;
  return b.status;
}

/**
 * May a submission add items to this batch? Only the first generation of a batch that is still
 * being submitted (or waits on dependencies), was not sealed with its total, and was not told to end.
 */
export function mayCreateItems(b: Batch): FenceDecision {
  if (b.status !== "submitting" && b.status !== "blocked")
    return refuse(`batch "${b.batchId}" is ${describe(b)}: it accepts no more items`);
  if (b.terminateAs !== null)
    return refuse(`batch "${b.batchId}" is ${describe(b)}: it accepts no more items`);
  if (b.submissionComplete)
    return refuse(`batch "${b.batchId}" was sealed with ${b.total ?? "its"} items: it accepts no more`);
  if (b.generation !== 1)
    return refuse(`batch "${b.batchId}" is retrying generation ${b.generation}: it accepts no new items`);
  return { ok: true };
}

/** May an operator retry reset failed items into `generation`? Only while that retry is submitting. */
export function mayResetItems(b: Batch, generation: number): FenceDecision {
  if (b.generation !== generation)
    return refuse(`batch "${b.batchId}" is at generation ${b.generation}, not ${generation}`);
  if (generation < 2) return refuse(`generation ${generation} is not a retry`);
  if (b.status !== "submitting" || b.terminateAs !== null)
    return refuse(`batch "${b.batchId}" is ${describe(b)}: its retry accepts no more items`);
  return { ok: true };
}

/**
 * May a finalizer claim the batch now? A started (sealed) batch, a batch told to end early, or a
 * claim that went stale (its finalizer died). The caller must still find no live item before it
 * writes the claim, preconditioned on the snapshot it decided on.
 */
export function mayClaimFinalization(b: Batch, now: number, staleFinalizingMs: number): FenceDecision {
  if (b.status === "running") return { ok: true };
  if (b.terminateAs !== null && (b.status === "blocked" || b.status === "submitting")) return { ok: true };
  if (b.status === "finalizing") {
    if (b.exportFailedAt != null)
      return refuse(
        `batch "${b.batchId}"'s export failed ${b.exportAttempts ?? 0} times: an operator must re-export it`,
      );
    if (b.nextExportAt != null && now < b.nextExportAt)
      return refuse(
        `batch "${b.batchId}"'s export is backing off until ${new Date(b.nextExportAt).toISOString()}`,
      );
    if ((b.finalizingAt ?? 0) < now - staleFinalizingMs) return { ok: true };
    return refuse(`batch "${b.batchId}" is being finalized`);
  }
  return refuse(`batch "${b.batchId}" is ${describe(b)}`);
}

/** The finalization claim a finalizer holds: the `finalizingAt` it wrote (or renewed) and the generation it exported. */
export type FinalizationClaim = Pick<Batch, "finalizingAt" | "generation">;

/**
 * May this finalizer record the outcome? Only while its own claim stands (not taken over by another
 * finalizer after it went stale, not released) and on the generation it exported: a finalizer that
 * froze after its export must not finish a later generation with an earlier one's summary.
 */
export function mayFinishBatch(b: Batch, claim: FinalizationClaim): FenceDecision {
  if (b.status !== "finalizing") return refuse(`batch "${b.batchId}" is ${describe(b)}, not finalizing`);
  if (claim.finalizingAt === null || b.finalizingAt !== claim.finalizingAt)
    return refuse(`batch "${b.batchId}"'s finalization claim is no longer the caller's`);
  if (b.generation !== claim.generation)
    return refuse(
      `batch "${b.batchId}" is at generation ${b.generation}; the caller exported generation ${claim.generation}`,
    );
  return { ok: true };
}

/**
 * May the batch be told to end early (cancel, failed dependency, incomplete submission)? Not once
 * finalization was claimed: the claim found nothing live, and its outcome is being written.
 */
export function mayRequestTermination(b: Batch): FenceDecision {
  if (isFinalBatchStatus(b.status)) return refuse(`batch "${b.batchId}" is already ${b.status}`);
  if (b.status === "finalizing")
    return refuse(`batch "${b.batchId}" is finalizing: every item has ended, its outcome is being recorded`);
  return { ok: true };
}

/**
 * May an operator retry the failed items of this batch (a new generation)? Only a batch that ran to
 * its outcome with failures: not one that was cancelled or ended early (a failed dependency, an
 * incomplete submission), whose items never ran and whose dependencies may not hold.
 */
export function mayBeginRetry(b: Batch): FenceDecision {
  if (!isFinalBatchStatus(b.status))
    return refuse(`batch "${b.batchId}" is ${b.status}; only a final batch can be retried`);
  if (b.terminateAs !== null || b.status === "cancelled")
    return refuse(
      `batch "${b.batchId}" ended ${b.status}${b.reason ? ` (${b.reason})` : ""}; only a batch that ran to its outcome can be retried: submit it again under a new id`,
    );
  if (!b.summary || b.summary.counts.failed === 0)
    return refuse(`batch "${b.batchId}" has no failed items to retry`);
  return { ok: true };
}

/** May an operator re-export a batch whose export failed its last allowed attempt? */
export function mayReExport(b: Batch): FenceDecision {
  if (b.status !== "finalizing" || b.exportFailedAt == null)
    return refuse(`batch "${b.batchId}" is ${b.status}; only a batch whose export failed can be re-exported`);
  return { ok: true };
}

/** Backoff before export attempt `attempt + 1` after `attempt` failures: 30 s doubling, at most 30 min. */
export function exportBackoffMs(attempt: number): number {
  return Math.min(30_000 * 2 ** Math.max(0, attempt - 1), 30 * 60_000);
}
