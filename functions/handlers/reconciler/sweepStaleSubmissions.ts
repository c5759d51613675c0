// `submitting` batches whose cursor has not moved for staleSubmissionSeconds: their coordinator died
// (or the client stopped sending). When the client had sent every item, the submission is resumed
// from its cursor; otherwise the batch fails as `incomplete_submission` and its stored items fail
// with that reason — the client can re-send under a new id.

import { mapLimited } from "./mapLimited";
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
/** Resuming publishes many doorbells per batch; a few at a time keep a tick's memory flat. */
const resumeConcurrency = 4;

export async function sweepStaleSubmissions(ctx: ReconcileContext): Promise<StaleSubmissionSummary> {
  const { ledger, config } = ctx.deps;
  const staleMs = config.topology.reconcile.staleSubmissionSeconds * 1000;
  const summary: StaleSubmissionSummary = { found: 0, resumed: 0, failed: 0, published: 0 };
  const batches = await ledger.findBatches({
    status: "submitting",
    progressBefore: ctx.startedAt - staleMs,
    limit: ctx.pageSize,
  });
  summary.found = batches.length;
  if (batches.length === ctx.pageSize) ctx.moreWork = true;
  await mapLimited(batches, resumeConcurrency, (batch) =>
    ctx.guard({ sweep, batchId: batch.batchId }, async () => {
      if (batch.terminateAs) {
        // Cancelled (or failed) while submitting: nothing more to publish, sweep and finalize.
        await sweepTerminatedBatch(ctx, batch);
        return;
      }
      if (isSubmissionComplete(batch)) {
        const r = await resumeSubmission(ctx, batch);
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
        `incomplete_submission: received ${batch.received} of ${batch.total ?? "an unknown number of"} items ` +
        `and the client sent nothing for ${idleSeconds} s; re-submit the batch`;
      const r = await terminateBatch(ctx, batch.batchId, "failed", reason);
      if (r.flagged) summary.failed++;
    }),
  );
  return summary;
}
