// Phase 5 — scaling (DESIGN.md §9, F8): per-delivery cost must not grow with the batch size or the
// backlog. For each backlog size B (ascending), deliveries are paused (the work subscription is
// switched to pull), one batch of B no-op items is submitted, deliveries are resumed, and the rate
// of answered deliveries is timed over the same window for every B: from the `skip`-th answered
// delivery to the (`skip` + `count`)-th, read from the front door's counters. Then the rest of the
// backlog is dropped (the subscription is re-created as provisioned) so the next size starts clean.
//
// Conditions: the rest of a large batch stays pending in the ledger afterwards, so this phase runs
// last on its stack.
import { waitFor } from "../local/waitFor";
import { submitNdjson } from "./support/ndjsonSubmit";
import type { Progress } from "./support/progress";
import { perSecond, ratio } from "./support/stats";
import type { BenchStack } from "./support/tallyStack";

export interface ScalingPoint {
  backlog: number;
  submitMs: number;
  windowMs: number;
  deliveriesPerSecond: number;
}

export interface ScalingResult {
  points: ScalingPoint[];
  window: { skip: number; count: number };
  /** Rate at the largest backlog ÷ rate at the smallest (near 1 means flat). */
  ratio: number;
  notes: string[];
}

export async function runScaling(opts: {
  bench: BenchStack;
  backlogs: number[];
  window: { skip: number; count: number };
  progress: Progress;
}): Promise<ScalingResult> {
  const { bench, progress } = opts;
  const { skip, count } = opts.window;
  const points: ScalingPoint[] = [];
  for (const backlog of [...opts.backlogs].sort((a, b) => a - b)) {
    if (backlog < skip + count)
      throw new Error(`backlog ${backlog} is smaller than the window (${skip} + ${count})`);
    await bench.pauseDeliveries();
    const batchId = `scale-${backlog}-${Date.now().toString(36)}`;
    progress(`backlog ${backlog}: submitting with deliveries paused`);
    const res = await submitNdjson({ coordinatorUrl: bench.coordinatorUrl, batchId, items: backlog });
    if (res.status !== 201) throw new Error(`submission of ${backlog} answered ${res.status}`);
    const base = bench.answered2xx();
    await bench.resumeDeliveries();
    const deadline = Math.max(300_000, (skip + count) * 500);
    const tStart = await waitFor(
      `${skip} deliveries answered`,
      () => (bench.answered2xx() - base >= skip ? performance.now() : null),
      deadline,
      5,
    );
    const tEnd = await waitFor(
      `${skip + count} deliveries answered`,
      () => (bench.answered2xx() - base >= skip + count ? performance.now() : null),
      deadline,
      5,
    );
    const windowMs = tEnd - tStart;
    const point = { backlog, submitMs: res.ms, windowMs, deliveriesPerSecond: perSecond(count, windowMs) };
    points.push(point);
    progress(
      `backlog ${backlog}: ${count} deliveries in ${Math.round(windowMs)} ms (${point.deliveriesPerSecond.toFixed(1)}/s)`,
    );
    // Drop the rest of the backlog so the next size starts from an empty subscription.
    await bench.pauseDeliveries();
    await bench.purgeDeliveries();
    await bench.resumeDeliveries();
  }
  const first = points[0]!;
  const last = points[points.length - 1]!;
  const r = ratio(last.deliveriesPerSecond, first.deliveriesPerSecond);
  progress(`deliveries/s at backlog ${last.backlog} ÷ at ${first.backlog}: ${r.toFixed(2)} (near 1 = flat)`);
  return {
    points,
    window: opts.window,
    ratio: r,
    notes: [
      `Deliveries paused (subscription switched to pull) while each batch is submitted, then resumed; the window is the ${skip + 1}th to the ${skip + count}th answered delivery, the same for every backlog.`,
      "The larger backlog is one batch: the batch size and the queue depth grow together.",
    ],
  };
}
