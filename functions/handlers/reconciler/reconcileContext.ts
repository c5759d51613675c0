// What every sweep of one reconcile tick shares: the ports, the tick's bounds, the finalization
// settings, and the tally of errors. Each sweep handles one batch or item at a time and records a
// failure instead of throwing, so one bad batch never stops the rest of the tick.
import { type FinalizeDeps, settleBatch } from "../../core/finalizeBatch";
import type { Logger } from "../../core/logger";
import type { HandlerDeps } from "../../runtime";
import { finalizeDepsFor } from "../finalizeDeps";

export interface ReconcileOptions {
  /** Entities (items or batches) read per query; defaults to topology.reconcile.pageSize. */
  pageSize?: number;
  /** Pages each sweep may read in one tick (bounded work, F4). */
  maxPagesPerSweep?: number;
  /** Doorbells the tick may publish from submission cursors (resumed and unblocked batches). */
  publishBudget?: number;
  /** Parallel ledger transitions within a page. */
  concurrency?: number;
  /**
   * Wall time after which no sweep starts another page (the tick then answers; the next one goes
   * on). Well inside the reconciler's request timeout and Cloud Scheduler's attempt deadline.
   */
  timeBudgetMs?: number;
}

export interface SweepError {
  sweep: string;
  batchId?: string;
  itemId?: string;
  message: string;
}

export interface ReconcileContext {
  deps: HandlerDeps;
  log: Logger;
  /** When the tick started: the reference time of every "older than" query. */
  startedAt: number;
  pageSize: number;
  maxPagesPerSweep: number;
  concurrency: number;
  /** Doorbells still allowed from cursors in this tick; decremented by publishFromCursor. */
  publishBudget: { remaining: number };
  finalizeDeps: FinalizeDeps;
  /** Batches finalized by this tick (any sweep). */
  finalized: string[];
  errors: SweepError[];
  /** True when a sweep stopped at its bound with work left (the next tick continues). */
  moreWork: boolean;
  now(): number;
  /** True once the tick's time budget is spent: sweeps stop paging (and mark moreWork). */
  outOfTime(): boolean;
  /** Runs one entity's work; a failure is logged and tallied, not thrown. */
  guard<T>(where: Omit<SweepError, "message">, fn: () => Promise<T>): Promise<T | undefined>;
}

export const defaultMaxPagesPerSweep = 4;
export const defaultConcurrency = 16;
export const defaultTimeBudgetMs = 120_000;
/** Multiples of the page size a tick may publish from cursors (dependents, resumed submissions). */
export const publishBudgetPages = 40;

export function createReconcileContext(deps: HandlerDeps, opts: ReconcileOptions = {}): ReconcileContext {
  const pageSize = opts.pageSize ?? deps.config.topology.reconcile.pageSize;
  const log = deps.log;
  const timeBudgetMs = opts.timeBudgetMs ?? defaultTimeBudgetMs;
  const ctx: ReconcileContext = {
    deps,
    log,
    startedAt: deps.clock.now(),
    pageSize,
    maxPagesPerSweep: opts.maxPagesPerSweep ?? defaultMaxPagesPerSweep,
    concurrency: opts.concurrency ?? defaultConcurrency,
    publishBudget: { remaining: opts.publishBudget ?? pageSize * publishBudgetPages },
    finalizeDeps: finalizeDepsFor(deps, log),
    finalized: [],
    errors: [],
    moreWork: false,
    now: () => deps.clock.now(),
    outOfTime: () => {
      if (deps.clock.now() - ctx.startedAt < timeBudgetMs) return false;
      ctx.moreWork = true;
      return true;
    },
    async guard(where, fn) {
      try {
        return await fn();
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        ctx.errors.push({ ...where, message });
        log.error("reconcile.error", `reconcile ${where.sweep} failed: ${message}`, {
          ...where,
          error: message,
        });
        return undefined;
      }
    },
  };
  return ctx;
}

/** Finalizes the batch if nothing is pending or running; records it when this call finalized it. */
export async function settleFromTick(ctx: ReconcileContext, batchId: string): Promise<boolean> {
  const finished = await settleBatch(ctx.finalizeDeps, batchId);
  if (finished) ctx.finalized.push(batchId);
  return finished !== null;
}

export { finalizeDepsFor };
