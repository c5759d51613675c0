// Event-driven start of dependent batches (F7, issue #15 item 6): the finalizer of a batch starts
// the batches waiting on it at once, instead of leaving them to the next reconcile tick (up to a
// minute per link of a chain on Cloud Scheduler). The same decisions as the blocked-batch sweep
// (decideDependencies, unblockBatch, publish from the cursor), with the publish unbounded by the
// tick's budget: a started dependent's doorbells go out at the submission path's rate. Whatever
// this misses (the process dies midway, a publish fails) the reconciler's sweeps still finish:
// a started batch is `submitting` with a cursor that says what is left.
import type { Batch } from "../../core/model";
import type { HandlerDeps } from "../../runtime";
import { mapLimited } from "./mapLimited";
import { createReconcileContext } from "./reconcileContext";
import { type DependencySummary, lookUpDependencies, settleBlocked } from "./sweepBlockedBatches";

/** Dependents looked at per finalization; wider fan-outs are finished by the sweep. */
const maxDependents = 500;

export async function startDependents(deps: HandlerDeps, parent: Batch): Promise<DependencySummary> {
  const summary: DependencySummary = { blocked: 0, started: 0, failed: 0, waiting: 0, published: 0 };
  const dependents = await deps.ledger.findDependents(parent.batchId, maxDependents);
  if (dependents.length === 0) return summary;
  const ctx = createReconcileContext(deps, {
    // Each child is a few small transactions on its own documents: nothing to contend on.
    concurrency: 32,
    publishBudget: Number.MAX_SAFE_INTEGER,
    maxPagesPerSweep: Number.MAX_SAFE_INTEGER,
    timeBudgetMs: Number.MAX_SAFE_INTEGER,
  });
  summary.blocked = dependents.length;
  const found = await lookUpDependencies(ctx, dependents);
  found.set(parent.batchId, parent); // as just finalized, whatever a replica read says
  // Concurrently, as the blocked-batch sweep does: one after another, each child's six round trips
  // put the 50th of a fan-out ~50 s after its parent's finalization.
  await mapLimited(dependents, ctx.concurrency, (batch) =>
    ctx.guard({ sweep: "dependents", batchId: batch.batchId }, () =>
      settleBlocked(ctx, batch, found, summary),
    ),
  );
  if (summary.started + summary.failed > 0)
    deps.log.info(
      "batch.dependents_started",
      `batch ${parent.batchId}: ${summary.started} dependents started`,
      {
        batchId: parent.batchId,
        started: summary.started,
        failed: summary.failed,
        waiting: summary.waiting,
        published: summary.published,
        errors: ctx.errors.length,
      },
    );
  return summary;
}
