// Phase 5 — scaling (DESIGN.md §9, F8): per-delivery cost must not grow with the batch size or the
// backlog. For each backlog size B (ascending), deliveries are paused (the work subscription is
// switched to pull), one batch of B no-op items is submitted, deliveries are resumed, and the rate
// of answered deliveries is timed over the same window for every B: from the `skip`-th answered
// delivery to the (`skip` + `count`)-th, read from the front door's counters. Then the rest of the
// backlog is dropped (the subscription is re-created as provisioned) so the next size starts clean.
//
// Beside each, the raw op mix (bench/baselines/rawOpMix.ts) at the same backlog and window, so a
// slope that belongs to the emulators shows as such.
//
// Conditions: the ledger is cleared after each backlog; this phase runs last on its stack.
import { clearFirestore } from "../local/emulators";
import { waitFor } from "../local/waitFor";
import { measureRawBacklogWindow, type OpMix } from "./baselines/rawOpMix";
import { benchProjectId, firestoreClient, pubsubClient } from "./support/clients";
import { submitNdjson } from "./support/ndjsonSubmit";
import type { Progress } from "./support/progress";
import { perSecond, ratio } from "./support/stats";
import type { BenchStack } from "./support/tallyStack";

export interface ScalingPoint {
  backlog: number;
  submitMs: number;
  windowMs: number;
  deliveriesPerSecond: number;
  /** The raw op mix at the same backlog and window (no Tally code). */
  raw: { windowMs: number; deliveriesPerSecond: number } | null;
}

export interface ScalingResult {
  points: ScalingPoint[];
  window: { skip: number; count: number };
  /** Rate at the largest backlog ÷ rate at the smallest (near 1 means flat). */
  ratio: number;
  /** The same for the raw op mix: how much of any slope is the emulators' own. */
  rawRatio: number | null;
  notes: string[];
}

export async function runScaling(opts: {
  bench: BenchStack;
  backlogs: number[];
  window: { skip: number; count: number };
  mix: OpMix;
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
    const deliveriesPerSecond = perSecond(count, windowMs);
    progress(
      `backlog ${backlog}: ${count} deliveries in ${Math.round(windowMs)} ms (${deliveriesPerSecond.toFixed(1)}/s)`,
    );
    // Drop the rest of the backlog so the next measurement starts from an empty subscription.
    await bench.pauseDeliveries();
    await bench.purgeDeliveries();
    await bench.resumeDeliveries();
    await bench.clearLedger();

    let raw: ScalingPoint["raw"] = null;
    const projectId = benchProjectId("rawscale");
    const db = firestoreClient(bench.stack.emulators, projectId);
    const pubsub = pubsubClient(bench.stack.emulators, projectId);
    try {
      raw = await measureRawBacklogWindow({
        hosts: bench.stack.emulators,
        projectId,
        db,
        pubsub,
        workers: bench.stack.workers.length,
        mix: opts.mix,
        delivery: bench.stack.config.topology.delivery,
        deadlineMs: deadline,
        progress,
        backlog,
        window: opts.window,
      });
      progress(`raw op mix at backlog ${backlog}: ${raw.deliveriesPerSecond.toFixed(1)}/s`);
    } catch (err) {
      progress(`raw op mix at backlog ${backlog} failed: ${(err as Error).message}`);
    } finally {
      await clearFirestore(bench.stack.emulators.firestoreHost, projectId).catch(() => undefined);
      await db.terminate();
      await pubsub.close();
    }
    points.push({ backlog, submitMs: res.ms, windowMs, deliveriesPerSecond, raw });
  }
  const first = points[0]!;
  const last = points[points.length - 1]!;
  const r = ratio(last.deliveriesPerSecond, first.deliveriesPerSecond);
  const rawRatio =
    first.raw && last.raw ? ratio(last.raw.deliveriesPerSecond, first.raw.deliveriesPerSecond) : null;
  progress(
    `deliveries/s at backlog ${last.backlog} ÷ at ${first.backlog}: Tally ${r.toFixed(2)}, raw op mix ${rawRatio?.toFixed(2) ?? "—"} (near 1 = flat)`,
  );
  return {
    points,
    window: opts.window,
    ratio: r,
    rawRatio,
    notes: [
      `Deliveries paused (subscription switched to pull) while each batch is submitted, then resumed; the window is the ${skip + 1}th to the ${skip + count}th answered delivery, the same for every backlog.`,
      "The larger backlog is one batch: the batch size and the queue depth grow together.",
      "The raw op mix runs the same backlog and window through bare endpoints doing the same Firestore work per delivery: a slope it shows too belongs to the emulators, not to Tally.",
      "The reconciler's schedule is off during this phase: on the emulator its collection-group queries scan every item (the emulator has no indexes), a per-tick cost that would grow with the backlog here but is served by composite indexes in the cloud.",
    ],
  };
}
