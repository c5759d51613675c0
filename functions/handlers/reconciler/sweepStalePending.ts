// Pending items untouched for stalePendingSeconds: the ledger write happened but the doorbell may
// never have been published (the publish failed, or its publisher died right after the write).
// Republishing is safe — a duplicate doorbell finds the item leased or terminal and is skipped —
// and touching the items keeps the next tick from picking them again.
import { pipelinesOfBatches, publishByPipeline } from "./publishByPipeline";
import type { ReconcileContext } from "./reconcileContext";

export interface StalePendingSummary {
  found: number;
  republished: number;
}

const sweep = "stalePending";

export async function sweepStalePending(ctx: ReconcileContext): Promise<StalePendingSummary> {
  const { ledger, config } = ctx.deps;
  const before = ctx.startedAt - config.topology.reconcile.stalePendingSeconds * 1000;
  const summary: StalePendingSummary = { found: 0, republished: 0 };
  for (let page = 0; ; page++) {
    if (page >= ctx.maxPagesPerSweep || (page > 0 && ctx.outOfTime())) {
      ctx.moreWork = true;
      break;
    }
    const refs = await ledger.findStalePending(before, ctx.pageSize);
    summary.found += refs.length;
    if (refs.length === 0) break;
    // Publish first, then touch: a failure in between republishes again (harmless), never skips.
    // Each on its batch's pipeline's topic. Items of a batch that no longer exists are touched
    // without a doorbell: no worker could run them, and they must not come back every tick.
    const ok = await ctx.guard({ sweep }, async () => {
      await publishByPipeline(ctx, refs, await pipelinesOfBatches(ctx, refs));
      await ledger.touchPending(refs, ctx.now());
      return true;
    });
    if (!ok) break;
    summary.republished += refs.length;
    // One line per batch, not per item: a lost publish can strand thousands of items at once.
    const perBatch = new Map<string, string[]>();
    for (const ref of refs) perBatch.set(ref.batchId, [...(perBatch.get(ref.batchId) ?? []), ref.itemId]);
    for (const [batchId, itemIds] of perBatch)
      ctx.log.warn("item.republished", `${itemIds.length} stale pending item(s) of ${batchId} republished`, {
        batchId,
        count: itemIds.length,
        itemIds: itemIds.slice(0, 20),
      });
    if (refs.length < ctx.pageSize) break;
  }
  return summary;
}
