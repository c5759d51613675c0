// Batches waiting on other batches (F7). Every blocked batch is looked at each tick — paged, oldest
// first, with the dependencies of a whole page fetched once (1 → 50 fan-out is one read of the
// parent) — and started when its dependencies all finished with an allowed outcome, or failed
// (items too) when one did not. Starting is `unblockBatch` (conditional: one tick wins), then
// publishing from the cursor exactly like a resumed submission.
import type { Batch } from "../../core/model";
import { decideDependencies } from "./dependencyDecision";
import { mapLimited } from "./mapLimited";
import { pagedSweep } from "./pagedSweep";
import type { ReconcileContext } from "./reconcileContext";
import { isSubmissionComplete, resumeSubmission } from "./resumeSubmission";
import { sweepTerminatedBatch, terminateBatch } from "./terminateBatch";

export interface DependencySummary {
  blocked: number;
  started: number;
  failed: number;
  waiting: number;
  /** Doorbells published for started batches. */
  published: number;
}

const sweep = "dependencies";
export const blockedSweepCursor = "dependencies.blocked";
/** Firestore's getAll takes many references; chunks keep one request modest. */
const lookupChunk = 100;

export async function sweepBlockedBatches(ctx: ReconcileContext): Promise<DependencySummary> {
  const { ledger } = ctx.deps;
  const summary: DependencySummary = { blocked: 0, started: 0, failed: 0, waiting: 0, published: 0 };
  // Oldest first, continuing where the previous tick stopped (persisted cursor), so every blocked
  // batch is reached however many wait. Dependents normally start within seconds of their parent's
  // finalization (startDependents.ts); this sweep is the safety net.
  await pagedSweep(
    ctx,
    blockedSweepCursor,
    (pageToken) =>
      ledger.listBatches({ status: "blocked", limit: ctx.pageSize, pageToken, oldestFirst: true }),
    async (entries) => {
      summary.blocked += entries.length;
      const dependencies = await lookUpDependencies(ctx, entries);
      await mapLimited(entries, ctx.concurrency, (batch) =>
        ctx.guard({ sweep, batchId: batch.batchId }, () => settleBlocked(ctx, batch, dependencies, summary)),
      );
    },
  );
  return summary;
}

export async function lookUpDependencies(
  ctx: ReconcileContext,
  batches: Batch[],
): Promise<Map<string, Batch | null>> {
  const ids = [...new Set(batches.flatMap((b) => b.dependsOn))];
  const found = new Map<string, Batch | null>();
  for (let i = 0; i < ids.length; i += lookupChunk) {
    const chunk = ids.slice(i, i + lookupChunk);
    const got = await ctx.deps.ledger.getBatches(chunk);
    for (const [j, id] of chunk.entries()) found.set(id, got[j] ?? null);
  }
  return found;
}

export async function settleBlocked(
  ctx: ReconcileContext,
  batch: Batch,
  dependencies: ReadonlyMap<string, Batch | null>,
  summary: DependencySummary,
): Promise<void> {
  const { ledger } = ctx.deps;
  if (batch.terminateAs) {
    // Cancelled by an operator while blocked: sweep its items and finalize it.
    await sweepTerminatedBatch(ctx, batch);
    return;
  }
  const decision = decideDependencies(batch, dependencies);
  if (decision.kind === "wait") {
    summary.waiting++;
    return;
  }
  if (decision.kind === "fail") {
    const r = await terminateBatch(ctx, batch.batchId, "failed", decision.reason);
    if (r.flagged) summary.failed++;
    return;
  }
  if (!(await ledger.unblockBatch(batch.batchId, ctx.now()))) return; // another tick started it
  summary.started++;
  ctx.log.info("batch.unblocked", `batch ${batch.batchId}: dependencies finished, starting`, {
    batchId: batch.batchId,
    dependsOn: batch.dependsOn,
  });
  // A complete submission cannot change; otherwise re-read, as the coordinator may have stored
  // more items (or the total) since the listing.
  const current = isSubmissionComplete(batch)
    ? { ...batch, status: "submitting" as const }
    : await ledger.getBatch(batch.batchId);
  if (!current || current.status !== "submitting") return;
  const r = await resumeSubmission(ctx, current);
  summary.published += r.published;
}
