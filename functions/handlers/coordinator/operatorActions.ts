// Operator actions (DESIGN.md §2.3): cancel (pending items → failed(cancelled); running ones finish
// or are released, then swept by the reconciler) and retry of failed items (a new generation;
// exports stay exactly-once per item and generation). Both work page by page, so a batch of a
// million items never loads more than one page.

import { RetryRefusedError } from "../../adapters/firestoreLedger";
import { mayRequestTermination } from "../../core/batchFence";
import { BatchFencedError, failedPrecondition, notFound } from "../../core/errors";
import { finalizeBatch } from "../../core/finalizeBatch";
import type { Logger } from "../../core/logger";
import { finalizeDepsFor, settleAfterRequest } from "../finalizeDeps";
import { decideDependencies } from "../reconciler/dependencyDecision";
import { batchView } from "./batchView";
import type { CoordinatorSettings } from "./coordinatorOptions";
import type { HandlerDeps } from "./handlerDeps";

export const operatorCancelReason = "cancelled by operator";

export async function cancelBatch(
  deps: HandlerDeps,
  settings: CoordinatorSettings,
  log: Logger,
  batchId: string,
) {
  const { ledger, clock } = deps;
  const before = await ledger.getBatch(batchId);
  if (!before) throw notFound(`no batch "${batchId}"`);
  const flagged = await ledger.requestTermination(batchId, "cancelled", operatorCancelReason, clock.now());
  if (!flagged) {
    const now = (await ledger.getBatch(batchId)) ?? before;
    const decision = mayRequestTermination(now);
    throw failedPrecondition(
      decision.ok
        ? `batch "${batchId}" could not be cancelled; try again`
        : `${decision.reason}; only a batch that is neither final nor finalizing can be cancelled`,
    );
  }
  const reason = flagged.reason ?? operatorCancelReason;
  log.info("batch.cancel_requested", `batch ${batchId}: cancel requested (was ${flagged.status})`, {
    batchId,
    status: flagged.status,
  });
  let swept = 0;
  for (;;) {
    const n = await ledger.cancelPendingItems(batchId, reason, settings.operatorPageSize, clock.now());
    if (n === 0) break;
    swept += n;
  }
  log.info("batch.cancel_swept", `batch ${batchId}: ${swept} pending items cancelled`, {
    batchId,
    items: swept,
  });
  await settleAfterRequest(finalizeDepsFor(deps, log), batchId);
  const after = (await ledger.getBatch(batchId)) ?? flagged;
  return batchView(after, await ledger.countItems(batchId));
}

export async function retryBatch(
  deps: HandlerDeps,
  settings: CoordinatorSettings,
  log: Logger,
  batchId: string,
) {
  const { ledger, queue, clock } = deps;
  const before = await ledger.getBatch(batchId);
  if (!before) throw notFound(`no batch "${batchId}"`);
  // A retry re-runs items that depend on their batch's dependencies: the same rule as the start
  // (every dependency final with an allowed outcome), checked now — a dependency being retried
  // itself, or one that ended failed, refuses it.
  if (before.dependsOn.length > 0) {
    const found = await ledger.getBatches(before.dependsOn);
    const decision = decideDependencies(
      before,
      new Map(before.dependsOn.map((id, i) => [id, found[i] ?? null])),
    );
    if (decision.kind === "wait")
      throw failedPrecondition(
        `batch "${batchId}" depends on ${decision.waitingOn.map((id) => `"${id}"`).join(", ")}, not final now (being retried?): retry it once they are final`,
      );
    if (decision.kind === "fail")
      throw failedPrecondition(`batch "${batchId}" cannot be retried: ${decision.reason}`);
  }
  let started: Awaited<ReturnType<typeof ledger.beginRetry>>;
  try {
    started = await ledger.beginRetry(batchId, clock.now());
  } catch (err) {
    if (err instanceof RetryRefusedError) throw failedPrecondition(err.message);
    throw err;
  }
  const generation = started.generation;
  let reset = 0;
  try {
    for (;;) {
      // Each page: failed → pending in the new generation (fenced: refused once this retry was
      // cancelled, ended by the reconciler or finalized), then its doorbells. Moving the batch's
      // progress each page tells the reconciler this retry is alive, not stale.
      const refs = await ledger.resetFailedItems(batchId, generation, settings.operatorPageSize, clock.now());
      if (refs.length === 0) break;
      await queue.publish(started.pipeline, refs);
      reset += refs.length;
      await ledger.recordProgress(batchId, clock.now());
    }
  } catch (err) {
    if (!(err instanceof BatchFencedError)) throw err;
    log.warn("batch.retry_fenced", `batch ${batchId}: retry stopped after ${reset} items: ${err.message}`, {
      batchId,
      generation,
      items: reset,
    });
    throw failedPrecondition(`the retry of batch "${batchId}" stopped after ${reset} items: ${err.message}`);
  }
  await ledger.markRetrySubmitted(batchId, clock.now());
  log.info("batch.retry", `batch ${batchId}: retrying ${reset} failed items (generation ${generation})`, {
    batchId,
    generation,
    items: reset,
    previousStatus: before.status,
  });
  await settleAfterRequest(finalizeDepsFor(deps, log), batchId);
  const after = (await ledger.getBatch(batchId)) ?? started;
  return batchView(after, await ledger.countItems(batchId));
}

/** Operator: a batch whose export failed its last allowed attempt is claimed and exported again now. */
export async function reExportBatch(deps: HandlerDeps, log: Logger, batchId: string) {
  const { ledger, clock } = deps;
  const before = await ledger.getBatch(batchId);
  if (!before) throw notFound(`no batch "${batchId}"`);
  try {
    await ledger.reExport(batchId, clock.now());
  } catch (err) {
    if (err instanceof BatchFencedError) throw failedPrecondition(err.message);
    throw err;
  }
  log.info(
    "batch.reexport_requested",
    `batch ${batchId}: re-export requested after ${before.exportAttempts ?? 0} failed attempts`,
    {
      batchId,
      attempts: before.exportAttempts ?? 0,
    },
  );
  // The export may fail again: the batch then records the failure and backs off as before.
  await finalizeBatch(finalizeDepsFor(deps, log), batchId).catch(() => null);
  const after = (await ledger.getBatch(batchId)) ?? before;
  return batchView(after, await ledger.countItems(batchId));
}
