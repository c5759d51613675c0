// Finalization (DESIGN.md §2.3, F3, F5): whoever makes a batch's last item terminal — a worker, the
// dead-letter receiver, the coordinator at the end of a submission, or the reconciler's safety net
// — calls `settleBatch`. The ledger (strongly consistent) decides: one read says whether anything
// is left, and a conditional transition lets exactly one caller finalize. The export is keyed by
// (batch, generation) and idempotent, so a finalizer that dies mid-export is simply re-run.
import type { Logger } from "./logger";
import type { Batch, BatchSummary } from "./model";
import { decideOutcome } from "./outcome";
import type { Clock, Ledger, ResultSink } from "./ports";

export interface FinalizeDeps {
  ledger: Ledger;
  sink: ResultSink;
  clock: Clock;
  log: Logger;
  /** A `finalizing` claim older than this is taken over (its finalizer died). */
  staleFinalizingMs: number;
  exportPageSize?: number;
}

/** Finalizes the batch if no item is pending or running. Returns the final batch when this call finalized it. */
export async function settleBatch(deps: FinalizeDeps, batchId: string): Promise<Batch | null> {
  if (await deps.ledger.hasLiveItems(batchId)) return null;
  return finalizeBatch(deps, batchId);
}

/** Claims the batch (exactly one caller wins), exports its results, and records the outcome. */
export async function finalizeBatch(deps: FinalizeDeps, batchId: string): Promise<Batch | null> {
  const { ledger, sink, clock, log } = deps;
  const claimed = await ledger.beginFinalizing(batchId, clock.now(), deps.staleFinalizingMs);
  if (!claimed) return null;
  const counts = await ledger.countItems(batchId);
  const failedByKind = counts.failed > 0 ? await ledger.countFailedByKind(batchId) : {};
  let exported: Awaited<ReturnType<ResultSink["exportBatch"]>>;
  try {
    exported = await sink.exportBatch(
      batchId,
      claimed.generation,
      ledger.streamResults(batchId, claimed.generation, deps.exportPageSize ?? 1000),
    );
  } catch (err) {
    // The export is idempotent; hand the claim back so the next tick retries it at once.
    await ledger.releaseFinalizing(batchId, claimed.finalizingAt!).catch(() => {});
    log.error("batch.export_failed", `batch ${batchId}: export failed: ${String(err)}`, {
      batchId,
      generation: claimed.generation,
      error: err instanceof Error ? err.message : String(err),
    });
    throw err;
  }
  const now = clock.now();
  const summary: BatchSummary = {
    outcome: decideOutcome(counts, claimed.failureThreshold),
    counts,
    failedByKind,
    exportId: exported.exportId,
    exportedRows: exported.rows,
    durationMs: now - (claimed.startedAt ?? claimed.createdAt),
  };
  const finished = await ledger.finishBatch(batchId, summary, now);
  if (finished) {
    log.info("batch.finalized", `batch ${batchId} finalized as ${finished.status}`, {
      batchId,
      status: finished.status,
      outcome: summary.outcome,
      total: counts.total,
      succeeded: counts.succeeded,
      failed: counts.failed,
      failedByKind,
      exportId: exported.exportId,
      exportedRows: exported.rows,
      reason: finished.reason,
      latencyMs: now - claimed.finalizingAt!,
    });
  }
  return finished;
}
