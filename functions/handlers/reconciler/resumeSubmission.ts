// Finishing a submission the coordinator did not finish (or starting an unblocked batch): publish
// from the cursor, then — once the client has sent every item — `submitting` → `running`, and
// settle at once (a batch whose items are all terminal, or an empty one, finalizes here).
import type { Batch } from "../../core/model";
import { publishFromCursor } from "./publishFromCursor";
import { type ReconcileContext, settleFromTick } from "./reconcileContext";

export interface ResumeResult {
  published: number;
  /** This call moved the batch to `running`. */
  started: boolean;
  finalized: boolean;
}

/** The client has sent every item: the total is known and that many were stored. */
export function isSubmissionComplete(batch: Batch): boolean {
  return batch.total !== null && batch.received >= batch.total;
}

export async function resumeSubmission(ctx: ReconcileContext, batch: Batch): Promise<ResumeResult> {
  const { ledger } = ctx.deps;
  const pub = await publishFromCursor(ctx, batch);
  let published = pub.published;
  if (!pub.reachedEnd || !isSubmissionComplete(batch)) return { published, started: false, finalized: false };
  let started: boolean;
  if (batch.generation > 1) {
    // An operator retry whose coordinator stopped mid-way: its items were reset to pending (and
    // may never have been published). Republish those, then end the retry's submission.
    published += await republishPendingItems(ctx, batch);
    started = await ledger.markRetrySubmitted(batch.batchId, ctx.now());
  } else {
    started = await ledger.markSubmitted(batch.batchId, batch.total!, ctx.now());
  }
  const finalized = started ? await settleFromTick(ctx, batch.batchId) : false;
  return { published, started, finalized };
}

async function republishPendingItems(ctx: ReconcileContext, batch: Batch): Promise<number> {
  const { ledger, queue } = ctx.deps;
  const { batchId } = batch;
  let pageToken: string | undefined;
  let published = 0;
  for (let page = 0; page < ctx.maxPagesPerSweep; page++) {
    const { entries, nextPageToken } = await ledger.listItems(batchId, {
      status: "pending",
      limit: ctx.pageSize,
      pageToken,
    });
    const refs = entries.map((it) => ({ batchId, itemId: it.itemId, generation: it.generation }));
    if (refs.length > 0) {
      await queue.publish(batch.pipeline, refs);
      await ledger.touchPending(refs, ctx.now());
      published += refs.length;
    }
    if (!nextPageToken) return published;
    pageToken = nextPageToken;
  }
  ctx.moreWork = true; // the rest keep their pendingSince and are republished by the stale-pending sweep
  return published;
}
