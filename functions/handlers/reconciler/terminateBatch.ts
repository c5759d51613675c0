// Ending a batch early (a failed dependency, an incomplete submission, an operator's cancel): flag
// it with the final status and reason, fail its pending items with that reason, and finalize it
// once nothing is running. Every step is conditional, so overlapping ticks repeat nothing: the
// first flag wins, a swept item is no longer pending, and exactly one finalizer claims the batch.
import type { Batch } from "../../core/model";
import { type ReconcileContext, settleFromTick } from "./reconcileContext";

export interface TerminationResult {
  /** False when the batch was already final. */
  flagged: boolean;
  swept: number;
  finalized: boolean;
}

export async function terminateBatch(
  ctx: ReconcileContext,
  batchId: string,
  as: "failed" | "cancelled",
  reason: string,
): Promise<TerminationResult> {
  const flagged = await ctx.deps.ledger.requestTermination(batchId, as, reason, ctx.now());
  if (!flagged) return { flagged: false, swept: 0, finalized: false };
  if (flagged.reason === reason)
    ctx.log.warn("batch.terminating", `batch ${batchId} will end ${as}: ${reason}`, {
      batchId,
      terminateAs: as,
      reason,
    });
  return { flagged: true, ...(await sweepTerminatedBatch(ctx, flagged)) };
}

/**
 * For a batch flagged to end early: pending items → `failed(cancelled)` with the batch's reason
 * (running ones finish or are released, then swept by a later tick), then settle.
 */
export async function sweepTerminatedBatch(
  ctx: ReconcileContext,
  batch: Batch,
): Promise<{ swept: number; finalized: boolean }> {
  const reason = batch.reason ?? `batch ${batch.terminateAs ?? "terminated"}`;
  let swept = 0;
  for (let page = 0; ; page++) {
    if (page >= ctx.maxPagesPerSweep || (page > 0 && ctx.outOfTime())) {
      ctx.moreWork = true;
      break;
    }
    const n = await ctx.deps.ledger.cancelPendingItems(batch.batchId, reason, ctx.pageSize, ctx.now());
    swept += n;
    if (n < ctx.pageSize) break;
  }
  return { swept, finalized: await settleFromTick(ctx, batch.batchId) };
}
