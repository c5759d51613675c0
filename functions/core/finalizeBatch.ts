// Finalization (DESIGN.md §2.3, F3, F5): whoever makes a batch's last item terminal — a worker, the
// dead-letter receiver, the coordinator at the end of a submission, or the reconciler's safety net
// — calls `settleBatch`. The ledger (strongly consistent) decides: one read says whether anything
// is left, and a conditional transition lets exactly one caller finalize (core/batchFence.ts says
// why no item can become live after that claim). The export is keyed by (batch, generation) and
// idempotent, so a finalizer that dies mid-export is simply re-run; one that is merely slow keeps
// its claim alive, so a long export is never taken over. Before the outcome is committed the
// finalizer verifies: nothing is live, and the sink holds exactly the generation's succeeded items.
import type { Logger } from "./logger";
import type { Batch, BatchSummary } from "./model";
import { decideOutcome } from "./outcome";
import type { Clock, ExportResult, Ledger, ResultSink } from "./ports";

export interface FinalizeDeps {
  ledger: Ledger;
  sink: ResultSink;
  clock: Clock;
  log: Logger;
  /** A `finalizing` claim not renewed for this long is taken over (its finalizer died). */
  staleFinalizingMs: number;
  exportPageSize?: number;
  /** Failed export attempts (persisted on the batch) before the batch waits for an operator. Default 5. */
  maxExportAttempts?: number;
  /** Runs after this call finalized a batch (starts its dependents); a failure is logged, not thrown. */
  onFinalized?: (batch: Batch) => Promise<unknown>;
  /**
   * Test harness only (functions/faults.ts): "dies" at a named point by throwing, leaving what a
   * killed process leaves. Refused in a deployment where handlers are built.
   */
  crashAt?: (point: "afterExportBeforeFinish", batchId: string) => boolean;
}

export const defaultMaxExportAttempts = 5;

/** Finalizes the batch if no item is pending or running. Returns the final batch when this call finalized it. */
export async function settleBatch(deps: FinalizeDeps, batchId: string): Promise<Batch | null> {
  if (await deps.ledger.hasLiveItems(batchId)) return null;
  return finalizeBatch(deps, batchId);
}

/** Claims the batch (exactly one caller wins), exports its results, verifies, and records the outcome. */
export async function finalizeBatch(deps: FinalizeDeps, batchId: string): Promise<Batch | null> {
  const { ledger, clock, log } = deps;
  const claimed = await ledger.beginFinalizing(batchId, clock.now(), deps.staleFinalizingMs);
  if (!claimed) return null;
  const claim = new ClaimKeeper(deps, batchId, claimed.finalizingAt!);
  let exported: ExportResult;
  try {
    exported = await claim.during(() =>
      deps.sink.exportBatch(
        { batchId, generation: claimed.generation, batchCreatedAt: claimed.createdAt },
        ledger.streamResults(batchId, claimed.generation, deps.exportPageSize ?? 1000),
      ),
    );
  } catch (err) {
    await recordExportFailure(deps, claimed, claim.current, err);
    throw err;
  }
  if (deps.crashAt?.("afterExportBeforeFinish", batchId))
    throw new Error(`crash point afterExportBeforeFinish reached (batch ${batchId}): fault injection`);
  if (claim.lost) {
    // Taken over while exporting (our renewals failed): the other finalizer records the outcome.
    log.warn("batch.claim_lost", `batch ${batchId}: finalization claim taken over during the export`, {
      batchId,
      generation: claimed.generation,
    });
    return null;
  }

  // Verify before committing: the counts the outcome is computed from, nothing live, and the sink
  // holding exactly the succeeded items of this generation.
  const counts = await ledger.countItems(batchId);
  const succeededOfGeneration = await ledger.countSucceeded(batchId, claimed.generation);
  const problems: string[] = [];
  if (counts.pending + counts.running > 0)
    problems.push(`${counts.pending} pending and ${counts.running} running items`);
  if (exported.rows !== succeededOfGeneration)
    problems.push(
      `the export holds ${exported.rows} rows for generation ${claimed.generation}, the ledger ${succeededOfGeneration} succeeded items`,
    );
  const sealed = claimed.submissionComplete && claimed.terminateAs === null && claimed.total !== null;
  if (sealed && counts.total !== claimed.total)
    problems.push(`the batch was sealed with ${claimed.total} items, the ledger holds ${counts.total}`);
  if (problems.length > 0) {
    log.error("batch.finalize_refused", `batch ${batchId}: finalization refused: ${problems.join("; ")}`, {
      batchId,
      generation: claimed.generation,
      problems,
    });
    // Counted as a failed export attempt (persisted, with backoff, then given up with an alert and
    // an operator's re-export): a mismatch that persists must not be re-exported every tick forever.
    await recordExportFailure(
      deps,
      claimed,
      claim.current,
      new Error(`finalization refused: ${problems.join("; ")}`),
    );
    return null;
  }

  const failedByKind = counts.failed > 0 ? await ledger.countFailedByKind(batchId) : {};
  const now = clock.now();
  const summary: BatchSummary = {
    outcome: decideOutcome(counts, claimed.failureThreshold),
    counts,
    failedByKind,
    exportId: exported.exportId,
    exportedRows: exported.rows,
    durationMs: now - (claimed.startedAt ?? claimed.createdAt),
  };
  const finished = await ledger.finishBatch(
    batchId,
    { finalizingAt: claim.current, generation: claimed.generation },
    summary,
    now,
  );
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
    if (deps.onFinalized)
      await deps.onFinalized(finished).catch((err: unknown) =>
        log.error(
          "batch.after_finalize_failed",
          `batch ${batchId}: ${err instanceof Error ? err.message : String(err)}`,
          {
            batchId,
          },
        ),
      );
  }
  return finished;
}

async function recordExportFailure(
  deps: FinalizeDeps,
  claimed: Batch,
  claim: number,
  err: unknown,
): Promise<void> {
  const { ledger, clock, log } = deps;
  const message = err instanceof Error ? err.message : String(err);
  const max = deps.maxExportAttempts ?? defaultMaxExportAttempts;
  const after = await ledger
    .recordExportFailure(claimed.batchId, claim, message, clock.now(), max)
    .catch(() => null);
  log.error("batch.export_failed", `batch ${claimed.batchId}: export failed: ${message}`, {
    batchId: claimed.batchId,
    generation: claimed.generation,
    error: message,
    attempt: after?.exportAttempts ?? null,
    maxAttempts: max,
    nextExportAt: after?.nextExportAt ? new Date(after.nextExportAt).toISOString() : null,
  });
  if (after?.exportFailedAt != null)
    log.error(
      "batch.export_gave_up",
      `batch ${claimed.batchId}: export failed ${after.exportAttempts} times; the batch waits for an operator's re-export (POST /v1/batches/${claimed.batchId}:export)`,
      {
        batchId: claimed.batchId,
        generation: claimed.generation,
        attempts: after.exportAttempts,
        error: message,
      },
    );
}

/** Renews a finalization claim while a long export runs, so it is never taken for a dead one. */
class ClaimKeeper {
  current: number;
  lost = false;
  constructor(
    private readonly deps: FinalizeDeps,
    private readonly batchId: string,
    claim: number,
  ) {
    this.current = claim;
  }

  async during<T>(work: () => Promise<T>): Promise<T> {
    const every = Math.max(1_000, Math.floor(this.deps.staleFinalizingMs / 3));
    let renewing: Promise<void> = Promise.resolve();
    const timer = setInterval(() => {
      renewing = renewing.then(async () => {
        if (this.lost) return;
        const renewed = await this.deps.ledger
          .renewFinalizing(this.batchId, this.current, this.deps.clock.now())
          .catch(() => this.current); // a failed renewal is retried at the next interval
        if (renewed === null) this.lost = true;
        else this.current = renewed;
      });
    }, every);
    timer.unref?.();
    try {
      return await work();
    } finally {
      clearInterval(timer);
      await renewing;
    }
  }
}
