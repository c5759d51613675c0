// The safety net under event-driven finalization (F3, F5): a worker that made a batch's last item
// terminal normally finalizes it within seconds; this catches what slipped through — a finalizer
// that died before claiming (batch still `running` with nothing live), one that died mid-export
// (`finalizing` for longer than staleFinalizingSeconds: re-claimed and re-run, the export being
// idempotent), and batches flagged to end early whose pending items must still be swept.
import { finalizeBatch } from "../../core/finalizeBatch";
import { mapLimited } from "./mapLimited";
import { pagedSweep } from "./pagedSweep";
import { type ReconcileContext, settleFromTick } from "./reconcileContext";
import { sweepTerminatedBatch } from "./terminateBatch";

export interface FinalizationSummary {
  /** `running` batches checked for "anything left?". */
  running: number;
  /** Stale `finalizing` claims re-run. */
  staleFinalizing: number;
  /** Pending items failed in batches flagged to end early. */
  itemsSwept: number;
}

const sweep = "finalizations";
export const runningSweepCursor = "finalizations.running";
export const staleFinalizingSweepCursor = "finalizations.staleFinalizing";

export async function sweepMissedFinalizations(ctx: ReconcileContext): Promise<FinalizationSummary> {
  const { ledger, config } = ctx.deps;
  const summary: FinalizationSummary = { running: 0, staleFinalizing: 0, itemsSwept: 0 };

  // Every running batch, oldest first, continuing where the previous tick stopped: a batch's
  // progressAt does not move while it runs, so a listing restarted every tick would never get past
  // its first pages.
  await pagedSweep(
    ctx,
    runningSweepCursor,
    (pageToken) =>
      ledger.listBatches({ status: "running", limit: ctx.pageSize, pageToken, oldestFirst: true }),
    async (entries) => {
      summary.running += entries.length;
      await mapLimited(entries, ctx.concurrency, (batch) =>
        ctx.guard({ sweep, batchId: batch.batchId }, async () => {
          if (batch.terminateAs) summary.itemsSwept += (await sweepTerminatedBatch(ctx, batch)).swept;
          else await settleFromTick(ctx, batch.batchId);
        }),
      );
    },
  );

  // Stale finalizing claims, least recently progressed first, paged with their own cursor: a batch
  // whose export gave up waits for an operator and one backing off is not due yet — neither is a
  // dead finalizer's claim, so neither is claimed (nor logged as reclaimed); both stay in the
  // listing, and without the cursor a page full of them would hide every due claim behind it.
  const staleMs = config.topology.reconcile.staleFinalizingSeconds * 1000;
  await pagedSweep(
    ctx,
    staleFinalizingSweepCursor,
    (pageToken) =>
      ledger.findBatches({
        status: "finalizing",
        progressBefore: ctx.startedAt - staleMs,
        limit: ctx.pageSize,
        pageToken,
      }),
    async (entries) => {
      const due = entries.filter(
        (b) => b.exportFailedAt == null && (b.nextExportAt == null || b.nextExportAt <= ctx.startedAt),
      );
      await mapLimited(due, ctx.concurrency, (batch) =>
        ctx.guard({ sweep, batchId: batch.batchId }, async () => {
          ctx.log.warn(
            "batch.finalization_reclaimed",
            `batch ${batch.batchId}: stale finalizing claim re-run`,
            { batchId: batch.batchId, finalizingAt: batch.finalizingAt },
          );
          summary.staleFinalizing++;
          const finished = await finalizeBatch(ctx.finalizeDeps, batch.batchId);
          if (finished) ctx.finalized.push(batch.batchId);
        }),
      );
    },
  );
  return summary;
}
