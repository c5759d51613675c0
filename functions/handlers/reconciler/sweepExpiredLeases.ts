// Items whose worker vanished (crash, OOM, SIGKILL, a lost instance): the lease lapsed with the item
// still `running`. Each is redriven — back to `pending` with a fresh doorbell — while attempts
// remain, else failed `attempts_exhausted` (F5: back in play within the lease plus one tick).
// `redriveItem` is conditional on the lease still being lapsed, so a worker that heartbeats in
// between, or an overlapping tick, makes it a no-op.
import type { ItemRef, RedriveResult } from "../../core/ports";
import { getPipeline } from "../../pipelines/registry";
import type { Topology } from "../../topology";
import { mapLimited } from "./mapLimited";
import { pipelinesOfBatches, publishByPipeline } from "./publishByPipeline";
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
  const { ledger, config } = ctx.deps;
  const maxAttempts = config.topology.delivery.maxItemAttempts;
  const summary: ExpiredLeaseSummary = { found: 0, redriven: 0, exhausted: 0, skipped: 0 };
  for (let page = 0; ; page++) {
    if (page >= ctx.maxPagesPerSweep || (page > 0 && ctx.outOfTime())) {
      ctx.moreWork = true;
      break;
    }
    const refs = await ledger.findExpiredLeases(ctx.startedAt, ctx.pageSize);
    summary.found += refs.length;
    const pipelineOf = await pipelinesOfBatches(ctx, refs);
    const attemptsOf = maxAttemptsByBatch(config.topology, pipelineOf);
    const outcomes = await mapLimited(refs, ctx.concurrency, (ref) =>
      ctx.guard({ sweep, batchId: ref.batchId, itemId: ref.itemId }, () =>
        ledger.redriveItem(ref, attemptsOf.get(ref.batchId) ?? maxAttempts, ctx.now()),
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
          maxAttempts: attemptsOf.get(ref.batchId) ?? maxAttempts,
        });
      } else if (outcome === "skip") summary.skipped++;
    });
    summary.redriven += redriven.length;
    summary.exhausted += outcomes.filter((o) => o === "exhausted").length;
    // A lost publish is not lost work: the redriven items are marked stale at once (pendingSince
    // 0), so the next tick's stale-pending sweep republishes them rather than one 15 minutes on.
    if (redriven.length > 0)
      await ctx.guard({ sweep }, async () => {
        try {
          // A redriven item's batch was read just above, so every one of them has a pipeline.
          await publishByPipeline(ctx, redriven, pipelineOf);
        } catch (err) {
          await ledger.touchPending(redriven, 0);
          throw err;
        }
      });
    // An exhausted item may have been its batch's last live one.
    await mapLimited([...exhaustedBatches], ctx.concurrency, (batchId) =>
      ctx.guard({ sweep, batchId }, () => settleFromTick(ctx, batchId)),
    );
    if (refs.length < ctx.pageSize) break;
  }
  return summary;
}

/**
 * Each batch's pipeline's attempt limit, as that pipeline's worker applies it when it leases: the
 * pipeline's own maxAttempts, else its deployment's maxItemAttempts (tally:pipelines), else the
 * topology's.
 */
function maxAttemptsByBatch(topology: Topology, pipelineOf: Map<string, string>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [batchId, name] of pipelineOf) {
    const deployed = topology.pipelines.find((x) => x.pipeline === name)?.delivery.maxItemAttempts;
    out.set(batchId, getPipeline(name)?.maxAttempts ?? deployed ?? topology.delivery.maxItemAttempts);
  }
  return out;
}
