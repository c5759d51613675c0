// Doorbells of items from several batches go to each batch's pipeline's work topic (issue #17 §1).
// The sweeps that find items across batches (stale pending, expired leases) read the batches once
// per page — one getBatches call for the page's distinct batch ids — and publish one group per
// pipeline.
import type { ItemRef } from "../../core/ports";
import type { ReconcileContext } from "./reconcileContext";

/** Batch id → pipeline, for the batches of `refs` that exist. */
export async function pipelinesOfBatches(
  ctx: ReconcileContext,
  refs: ItemRef[],
): Promise<Map<string, string>> {
  const ids = [...new Set(refs.map((r) => r.batchId))];
  const batches = ids.length > 0 ? await ctx.deps.ledger.getBatches(ids) : [];
  const out = new Map<string, string>();
  batches.forEach((b, i) => {
    if (b) out.set(ids[i]!, b.pipeline);
  });
  return out;
}

/**
 * Publishes each ref on its batch's pipeline's topic. Refs whose batch is unknown (gone) are not
 * published — no worker could run them — and are returned.
 */
export async function publishByPipeline(
  ctx: ReconcileContext,
  refs: ItemRef[],
  pipelineOf: Map<string, string>,
): Promise<ItemRef[]> {
  const groups = new Map<string, ItemRef[]>();
  const unrouted: ItemRef[] = [];
  for (const ref of refs) {
    const pipeline = pipelineOf.get(ref.batchId);
    if (pipeline === undefined) unrouted.push(ref);
    else groups.set(pipeline, [...(groups.get(pipeline) ?? []), ref]);
  }
  await Promise.all([...groups].map(([pipeline, group]) => ctx.deps.queue.publish(pipeline, group)));
  return unrouted;
}
