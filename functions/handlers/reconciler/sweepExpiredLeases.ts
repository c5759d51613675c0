// Items whose worker vanished (crash, OOM, SIGKILL, a lost instance): the lease lapsed with the item
// still `running`. Each is redriven — back to `pending` with a fresh doorbell — while attempts
// remain, else failed `attempts_exhausted` (F5: back in play within the lease plus one tick).
// `redriveItem` is conditional on the lease still being lapsed, so a worker that heartbeats in
// between, or an overlapping tick, makes it a no-op.
import type { ItemRef, RedriveResult } from "../../core/ports";
import { mapLimited } from "./mapLimited";
import { type ReconcileContext, settleFromTick } from "./reconcileContext";

export interface ExpiredLeaseSummary {
  found: number;
  redriven: number;
  exhausted: number;
  /** Renewed, finished or redriven by someone else since the query. */
  skipped: number;
}

const sweep = "expiredLeases";

export async function sweepExpiredLeases(ctx: ReconcileContext): Promise<ExpiredLeaseSummary> {
  const { ledger, queue, config } = ctx.deps;
  const maxAttempts = config.topology.delivery.maxItemAttempts;
  const summary: ExpiredLeaseSummary = { found: 0, redriven: 0, exhausted: 0, skipped: 0 };
  for (let page = 0; ; page++) {
    if (page >= ctx.maxPagesPerSweep || (page > 0 && ctx.outOfTime())) {
      ctx.moreWork = true;
      break;
    }
    const refs = await ledger.findExpiredLeases(ctx.startedAt, ctx.pageSize);
    summary.found += refs.length;
    const outcomes = await mapLimited(refs, ctx.concurrency, (ref) =>
      ctx.guard({ sweep, batchId: ref.batchId, itemId: ref.itemId }, () =>
        ledger.redriveItem(ref, maxAttempts, ctx.now()),
      ),
    );
    const redriven: ItemRef[] = [];
    const exhaustedBatches = new Set<string>();
    refs.forEach((ref, i) => {
      const outcome: RedriveResult | undefined = outcomes[i];
      const fields = { batchId: ref.batchId, itemId: ref.itemId, generation: ref.generation };
      if (outcome === "redriven") {
        redriven.push(ref);
        ctx.log.warn("item.redriven", `lease expired on ${ref.batchId}/${ref.itemId}: redriven`, fields);
      } else if (outcome === "exhausted") {
        exhaustedBatches.add(ref.batchId);
        ctx.log.warn("item.failed", `lease expired on ${ref.batchId}/${ref.itemId} at its last attempt`, {
          ...fields,
          kind: "attempts_exhausted",
          maxAttempts,
        });
      } else if (outcome === "skip") summary.skipped++;
    });
    summary.redriven += redriven.length;
    summary.exhausted += outcomes.filter((o) => o === "exhausted").length;
    // A lost publish is not lost work: redriven items carry a fresh pendingSince, so the
    // stale-pending sweep republishes them.
    if (redriven.length > 0) await ctx.guard({ sweep }, () => queue.publish(redriven));
    // An exhausted item may have been its batch's last live one.
    await mapLimited([...exhaustedBatches], ctx.concurrency, (batchId) =>
      ctx.guard({ sweep, batchId }, () => settleFromTick(ctx, batchId)),
    );
    if (refs.length < ctx.pageSize) break;
  }
  return summary;
}
