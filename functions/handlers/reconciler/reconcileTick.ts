// One reconcile tick (POST /reconcile, every minute from Cloud Scheduler): the safety net that finds
// what the event-driven paths missed and repairs it. Each sweep reads bounded pages and acts through
// conditional ledger transitions, so overlapping ticks and Scheduler retries never do anything
// twice. Order matters: finalizations run before the dependency sweep so a parent finalized by this
// tick starts its dependents in the same tick, and stale-pending runs last so the doorbells the
// tick itself just published are not republished.

import type { HandlerDeps } from "../../runtime";
import { createReconcileContext, type ReconcileOptions, type SweepError } from "./reconcileContext";
import { type DependencySummary, sweepBlockedBatches } from "./sweepBlockedBatches";
import { type ExpiredLeaseSummary, sweepExpiredLeases } from "./sweepExpiredLeases";
import { type FinalizationSummary, sweepMissedFinalizations } from "./sweepMissedFinalizations";
import { type StalePendingSummary, sweepStalePending } from "./sweepStalePending";
import { type StaleSubmissionSummary, sweepStaleSubmissions } from "./sweepStaleSubmissions";

export interface ReconcileSummary {
  expiredLeases: ExpiredLeaseSummary;
  staleSubmissions: StaleSubmissionSummary;
  stalePending: StalePendingSummary;
  dependencies: DependencySummary;
  finalizations: FinalizationSummary;
  /** Batches this tick finalized (any sweep). */
  finalized: number;
  finalizedBatchIds: string[];
  /** A sweep stopped at its bound with work left; the next tick continues. */
  moreWork: boolean;
  errors: number;
  /** The first few failures, for the log line and the response. */
  errorSamples: SweepError[];
  durationMs: number;
}

const maxErrorSamples = 10;

export async function reconcileTick(
  deps: HandlerDeps,
  opts: ReconcileOptions = {},
): Promise<ReconcileSummary> {
  const ctx = createReconcileContext(deps, opts);
  const run = async <T>(sweep: string, fn: () => Promise<T>, empty: T): Promise<T> =>
    (await ctx.guard({ sweep }, fn)) ?? empty;

  const expiredLeases = await run("expiredLeases", () => sweepExpiredLeases(ctx), {
    found: 0,
    redriven: 0,
    exhausted: 0,
    skipped: 0,
  });
  const staleSubmissions = await run("staleSubmissions", () => sweepStaleSubmissions(ctx), {
    found: 0,
    resumed: 0,
    failed: 0,
    published: 0,
  });
  const finalizations = await run("finalizations", () => sweepMissedFinalizations(ctx), {
    running: 0,
    staleFinalizing: 0,
    itemsSwept: 0,
  });
  const dependencies = await run("dependencies", () => sweepBlockedBatches(ctx), {
    blocked: 0,
    started: 0,
    failed: 0,
    waiting: 0,
    published: 0,
  });
  const stalePending = await run("stalePending", () => sweepStalePending(ctx), { found: 0, republished: 0 });

  const summary: ReconcileSummary = {
    expiredLeases,
    staleSubmissions,
    stalePending,
    dependencies,
    finalizations,
    finalized: ctx.finalized.length,
    finalizedBatchIds: ctx.finalized.slice(0, 50),
    moreWork: ctx.moreWork,
    errors: ctx.errors.length,
    errorSamples: ctx.errors.slice(0, maxErrorSamples),
    durationMs: deps.clock.now() - ctx.startedAt,
  };
  const message =
    `reconcile: ${expiredLeases.found} expired lease(s), ${staleSubmissions.found} stale submission(s), ` +
    `${stalePending.republished} republished, ${dependencies.started} started / ${dependencies.failed} failed ` +
    `dependent(s), ${summary.finalized} finalized, ${summary.errors} error(s) in ${summary.durationMs} ms`;
  if (summary.errors > 0) ctx.log.error("reconcile.summary", message, { ...summary });
  else ctx.log.info("reconcile.summary", message, { ...summary });
  return summary;
}
