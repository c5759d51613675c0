// Phase 5 — scaling (DESIGN.md §9, F8): per-delivery cost must not grow with the batch size or the
// backlog. For each backlog size B (ascending), deliveries are paused (the work subscription is
// switched to pull), one batch of B no-op items is submitted, deliveries are resumed, and the rate
// of answered deliveries (front door counters) is measured over the same kind of window for every
// B (support/deliveryWindow.ts: after the first `skip`, for `seconds`). Then the rest of the
// backlog is dropped (the subscription is re-created as provisioned and the ledger cleared).
//
// Beside each: the raw op mix (bench/baselines/rawOpMix.ts) at the same backlog and window, so a
// slope that belongs to the emulators shows as such; and, while deliveries are still paused, the
// latency of the worker's existence query ("anything left in this batch?") and of a document
// read on the B-item batch — the one per-delivery operation whose cost the emulator ties to the
// batch size (it has no indexes and scans), where Firestore serves it from an index.
import { clearFirestore } from "../local/emulators";
import { measureRawBacklogWindow, type OpMix } from "./baselines/rawOpMix";
import { benchProjectId, firestoreClient, pubsubClient } from "./support/clients";
import { type DeliveryWindow, measureDeliveryWindow, type WindowMeasure } from "./support/deliveryWindow";
import { submitNdjson } from "./support/ndjsonSubmit";
import type { Progress } from "./support/progress";
import { type Distribution, distribution, fmtDist, ratio } from "./support/stats";
import type { BenchStack } from "./support/tallyStack";

export interface ScalingPoint {
  backlog: number;
  submitMs: number;
  tally: WindowMeasure;
  /** The raw op mix at the same backlog and window (no Tally code). */
  raw: WindowMeasure | null;
  /** The worker's "anything left?" query on the B-item batch, on the emulator. */
  existenceQueryMs: Distribution;
  /** One item document read, for contrast. */
  documentReadMs: Distribution;
}

export interface ScalingResult {
  points: ScalingPoint[];
  window: DeliveryWindow;
  /** Rate at the largest backlog ÷ rate at the smallest (near 1 means flat). */
  ratio: number;
  /** The same for the raw op mix: how much of any slope is the emulators' own. */
  rawRatio: number | null;
  notes: string[];
}

async function timeIt(n: number, fn: () => Promise<unknown>): Promise<Distribution> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
  }
  return distribution(out);
}

export async function runScaling(opts: {
  bench: BenchStack;
  backlogs: number[];
  window: DeliveryWindow;
  mix: OpMix;
  progress: Progress;
}): Promise<ScalingResult> {
  const { bench, progress } = opts;
  const points: ScalingPoint[] = [];
  const startDeadline = 600_000;
  for (const backlog of [...opts.backlogs].sort((a, b) => a - b)) {
    await bench.pauseDeliveries();
    const batchId = `scale-${backlog}-${Date.now().toString(36)}`;
    progress(`backlog ${backlog}: submitting with deliveries paused`);
    const res = await submitNdjson({ coordinatorUrl: bench.coordinatorUrl, batchId, items: backlog });
    if (res.status !== 201) throw new Error(`submission of ${backlog} answered ${res.status}`);
    const items = bench.db.collection("batches").doc(batchId).collection("items");
    const existenceQueryMs = await timeIt(5, () =>
      items.where("status", "in", ["pending", "running"]).limit(1).select().get(),
    );
    const firstId = (await items.orderBy("seq").limit(1).select().get()).docs[0]!.id;
    const documentReadMs = await timeIt(5, () => items.doc(firstId).get());
    progress(
      `backlog ${backlog}: existence query ${fmtDist(existenceQueryMs)}; document read ${fmtDist(documentReadMs)}`,
    );
    const base = bench.answered2xx();
    await bench.resumeDeliveries();
    const tally = await measureDeliveryWindow(
      () => bench.answered2xx() - base,
      backlog,
      opts.window,
      startDeadline,
    );
    progress(
      `backlog ${backlog}: ${tally.deliveries} deliveries in ${Math.round(tally.windowMs)} ms (${tally.deliveriesPerSecond.toFixed(1)}/s)`,
    );
    // Drop the rest of the backlog so the next measurement starts from an empty subscription.
    await bench.pauseDeliveries();
    await bench.purgeDeliveries();
    await bench.resumeDeliveries();
    await bench.clearLedger();

    let raw: WindowMeasure | null = null;
    const projectId = benchProjectId("rawscale");
    const db = firestoreClient(bench.stack.emulators, projectId);
    const pubsub = pubsubClient(bench.stack.emulators, projectId);
    try {
      raw = await measureRawBacklogWindow({
        hosts: bench.stack.emulators,
        projectId,
        db,
        pubsub,
        workers: bench.liveWorkers,
        mix: opts.mix,
        delivery: bench.stack.config.topology.delivery,
        deadlineMs: startDeadline,
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
    points.push({ backlog, submitMs: res.ms, tally, raw, existenceQueryMs, documentReadMs });
  }
  const first = points[0]!;
  const last = points[points.length - 1]!;
  const r = ratio(last.tally.deliveriesPerSecond, first.tally.deliveriesPerSecond);
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
      `Deliveries paused (subscription switched to pull) while each batch is submitted, then resumed; the window starts after the first ${opts.window.skip} answered deliveries and lasts ${opts.window.seconds} s (or until the backlog is nearly drained).`,
      "The larger backlog is one batch: the batch size and the queue depth grow together.",
      "The raw op mix runs the same backlog and window through bare endpoints doing the same Firestore work per delivery: a slope it shows too belongs to the emulators, not to Tally.",
      "Tally's operations per delivery are a constant count (phase 3); the emulator's cost per operation is not: it has no indexes, so the per-delivery existence query scans the batch's items (its latency is reported per backlog). Firestore serves that query from the (status) index of the batch's items collection.",
      "The reconciler's schedule is off during this phase: on the emulator its collection-group queries scan every item too, a per-tick cost that would also grow with the backlog here.",
    ],
  };
}
