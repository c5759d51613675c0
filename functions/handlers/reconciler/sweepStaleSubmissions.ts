// `submitting` batches whose cursor has not moved for staleSubmissionSeconds: their coordinator died
// (or the client stopped sending: an open batch nobody appends to or seals). When the client had
// sent every item, the submission is resumed from its cursor; otherwise the batch fails as
// `incomplete_submission` and its stored items fail with that reason — the client can re-send under
// a new id. The fence (core/batchFence.ts) makes the failure final: an append after it stores
// nothing (409), so no item escapes the finalized batch.
//
// "Every item" is decided on what is stored, not on `received` (issue #15 item 4): a coordinator
// that died after storing items but before its cursor write leaves `received` behind, so the items
// beyond it are probed (storedPrefix.ts) before a batch whose total is known is called incomplete.

import type { Batch } from "../../core/model";
import { storedPrefix } from "../storedPrefix";
import { mapLimited } from "./mapLimited";
import { pagedSweep } from "./pagedSweep";
import type { ReconcileContext } from "./reconcileContext";
import { isSubmissionComplete, resumeSubmission } from "./resumeSubmission";
import { sweepTerminatedBatch, terminateBatch } from "./terminateBatch";

export interface StaleSubmissionSummary {
  found: number;
  resumed: number;
  failed: number;
  /** Doorbells published from cursors. */
  published: number;
}

const sweep = "staleSubmissions";
export const staleSubmissionSweepCursor = "staleSubmissions";
/** Resuming publishes many doorbells per batch; a few at a time keep a tick's memory flat. */
const resumeConcurrency = 4;

export async function sweepStaleSubmissions(ctx: ReconcileContext): Promise<StaleSubmissionSummary> {
  const { ledger, config } = ctx.deps;
  const staleMs = config.topology.reconcile.staleSubmissionSeconds * 1000;
  const summary: StaleSubmissionSummary = { found: 0, resumed: 0, failed: 0, published: 0 };
  // Least recently progressed first. Most found batches leave the listing (resumed or failed), but
  // one whose handling fails stays: the persisted cursor keeps such batches from hiding the rest.
  await pagedSweep(
    ctx,
    staleSubmissionSweepCursor,
    (pageToken) =>
      ledger.findBatches({
        status: "submitting",
        progressBefore: ctx.startedAt - staleMs,
        limit: ctx.pageSize,
        pageToken,
      }),
    async (batches) => {
      summary.found += batches.length;
      await handleStalePage(ctx, batches, summary);
    },
  );
  return summary;
}

async function handleStalePage(
  ctx: ReconcileContext,
  batches: Batch[],
  summary: StaleSubmissionSummary,
): Promise<void> {
  const { ledger } = ctx.deps;
  await mapLimited(batches, resumeConcurrency, (batch) =>
    ctx.guard({ sweep, batchId: batch.batchId }, async () => {
      if (batch.terminateAs) {
        // Cancelled (or failed) while submitting: nothing more to publish, sweep and finalize.
        await sweepTerminatedBatch(ctx, batch);
        return;
      }
      // The stored prefix, when `received` says less than the known total (bounded per tick: a
      // longer probe records what it found and goes on next tick).
      let current = batch;
      if (batch.total !== null && batch.received < batch.total) {
        const probe = await storedPrefix(ledger, batch, {
          upTo: batch.total,
          maxItems: ctx.pageSize * 20,
        });
        if (probe.prefix > batch.received) current = { ...batch, received: probe.prefix };
        if (probe.bounded) {
          await ledger.advanceCursor(batch.batchId, batch.cursor, ctx.now(), probe.prefix);
          ctx.moreWork = true;
          return;
        }
      }
      if (isSubmissionComplete(current)) {
        const r = await resumeSubmission(ctx, current);
        summary.published += r.published;
        if (r.started) {
          summary.resumed++;
          ctx.log.warn("batch.submission_resumed", `batch ${batch.batchId}: stale submission resumed`, {
            batchId: batch.batchId,
            fromCursor: batch.cursor,
            total: batch.total,
            published: r.published,
          });
        }
        return;
      }
      const idleSeconds = Math.round((ctx.startedAt - batch.progressAt) / 1000);
      const reason =
        `incomplete_submission: received ${current.received} of ${batch.total ?? "an unknown number of"} items ` +
        `and the client sent nothing for ${idleSeconds} s; re-submit the batch`;
      const r = await terminateBatch(ctx, batch.batchId, "failed", reason);
      if (r.flagged) summary.failed++;
    }),
  );
}
