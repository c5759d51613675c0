// Publishing a batch's stored items from its submission cursor — the step a coordinator that died
// mid-submission did not finish, and the start of a batch whose dependencies just finished. Page by
// page: read refs, mark them publishable, publish, then move the cursor, so memory is one page and
// a reconciler that dies here leaves a cursor that says what is left.
import type { Batch } from "../../core/model";
import type { ReconcileContext } from "./reconcileContext";

export interface CursorPublish {
  published: number;
  cursor: number;
  /** Every stored item (up to `received`) has had its doorbell published. */
  reachedEnd: boolean;
}

export async function publishFromCursor(ctx: ReconcileContext, batch: Batch): Promise<CursorPublish> {
  const { ledger, queue } = ctx.deps;
  let cursor = batch.cursor;
  let published = 0;
  while (cursor < batch.received) {
    const count = Math.min(ctx.pageSize, batch.received - cursor, ctx.publishBudget.remaining);
    if (count <= 0 || (published > 0 && ctx.outOfTime())) {
      ctx.moreWork = true; // this tick's publish or time budget is spent; the cursor says where to go on
      break;
    }
    const refs = await ledger.readItemRefs(batch.batchId, cursor, count);
    if (refs.length === 0) break;
    // Items of a blocked batch were stored unpublishable (no pendingSince); marking them before the
    // publish means a lost publish is still found by the stale-pending sweep.
    await ledger.touchPending(refs, ctx.now());
    await queue.publish(batch.pipeline, refs);
    cursor += refs.length;
    published += refs.length;
    ctx.publishBudget.remaining -= refs.length;
    await ledger.advanceCursor(batch.batchId, cursor, ctx.now());
  }
  return { published, cursor, reachedEnd: cursor >= batch.received };
}
