// Phase 2 — end to end with a no-op pipeline (DESIGN.md §9): items/s from the first byte of the
// submission to the batch's finalization (its finishedAt in the ledger), on the local stack with W
// worker processes, beside the raw op-mix limit measured on the same emulators in the same run
// (bench/baselines/rawOpMix.ts: the same writes, publishes, deliveries through the same front door
// to W bare endpoints doing the same transactions and query per delivery, and the export's read).
//
// The no-op pipeline is the demo pipeline with an empty payload: one step that returns at once.
// Each stack gets a warm-up batch first (JIT, connections, the worker's batch cache) that is not
// timed. The batch is watched through the ledger (one document read per 100 ms), not the API,
// so no count() aggregations run while it is measured.
import { measureRawOpMix, type OpMix, type RawOpMixResult } from "./baselines/rawOpMix";
import { benchProjectId, firestoreClient, pubsubClient } from "./support/clients";
import { submitNdjson } from "./support/ndjsonSubmit";
import type { Progress } from "./support/progress";
import { perSecond, ratio } from "./support/stats";
import type { BenchStack } from "./support/tallyStack";

export interface EndToEndRun {
  workers: number;
  items: number;
  tally: {
    ms: number;
    itemsPerSecond: number;
    outcome: string;
    succeeded: number;
    deliveries: number;
    workerCpuSecondsPerItem: number;
  };
  raw: RawOpMixResult;
  /** Tally ÷ raw (target ≥ 0.7). */
  ratio: number;
}

export interface EndToEndResult {
  runs: EndToEndRun[];
  mix: OpMix;
  notes: string[];
}

/** One end-to-end measurement (Tally, then the raw op mix) on a running stack. */
export async function measureEndToEnd(opts: {
  bench: BenchStack;
  workers: number;
  items: number;
  mix: OpMix;
  progress: Progress;
}): Promise<EndToEndRun> {
  const { bench, items, progress } = opts;
  const w = opts.workers;
  const warm = `warmup-${w}-${Date.now().toString(36)}`;
  const warmRes = await submitNdjson({ coordinatorUrl: bench.coordinatorUrl, batchId: warm, items: 20 });
  if (warmRes.status !== 201) throw new Error(`warm-up submission answered ${warmRes.status}`);
  await bench.waitForFinal(warm, 120_000);

  const batchId = `e2e-${w}-${Date.now().toString(36)}`;
  const forwardedBefore = bench.forwarded();
  const cpuBefore = bench.workerCpuSeconds();
  const t0 = Date.now();
  const res = await submitNdjson({ coordinatorUrl: bench.coordinatorUrl, batchId, items });
  if (res.status !== 201) throw new Error(`submission answered ${res.status}: ${JSON.stringify(res.body)}`);
  const final = await bench.waitForFinal(batchId, Math.max(300_000, items * 200));
  const ms = (final.finishedAt ?? Date.now()) - t0;
  const succeeded = final.summary?.counts.succeeded ?? 0;
  if (final.status !== "succeeded" || succeeded !== items)
    throw new Error(`batch ${batchId} ended ${final.status} with ${succeeded}/${items} succeeded`);
  const tally = {
    ms,
    itemsPerSecond: perSecond(items, ms),
    outcome: final.status,
    succeeded,
    deliveries: bench.forwarded() - forwardedBefore,
    workerCpuSecondsPerItem: (bench.workerCpuSeconds() - cpuBefore) / items,
  };
  progress(
    `Tally, ${w} worker(s): ${items} items submitted → finalized in ${ms} ms (${Math.round(tally.itemsPerSecond)}/s), ${tally.deliveries} deliveries, worker CPU ${(tally.workerCpuSecondsPerItem * 1000).toFixed(1)} ms/item`,
  );

  const projectId = benchProjectId("rawmix");
  const db = firestoreClient(bench.stack.emulators, projectId);
  const pubsub = pubsubClient(bench.stack.emulators, projectId);
  let raw: RawOpMixResult;
  try {
    raw = await measureRawOpMix({
      hosts: bench.stack.emulators,
      projectId,
      db,
      pubsub,
      items,
      workers: w,
      mix: opts.mix,
      delivery: bench.stack.config.topology.delivery,
      deadlineMs: Math.max(300_000, items * 200),
      progress,
    });
  } finally {
    await db.terminate();
    await pubsub.close();
  }
  const r = ratio(tally.itemsPerSecond, raw.itemsPerSecond);
  progress(`${w} worker(s): ratio ${r.toFixed(2)} (target ≥ 0.7)`);
  return { workers: w, items, tally, raw, ratio: r };
}

export function endToEndNotes(mix: OpMix): string[] {
  return [
    "Tally: the demo pipeline with an empty payload (one step, returns at once), streamed in one NDJSON request; timed from the request's start to the batch's finishedAt.",
    `Raw op mix per delivery: ${mix.plainReads} read(s) of the item, ${mix.transactions} read+write transaction(s), ${mix.plainWrites} conditional write(s), ${mix.queries} existence query (derived from the worker's counts in the operations phase); items written with WriteBatch×500 and doorbells published in windows of 5,000; a paged read of all items at the end.`,
    "The Pub/Sub emulator pushes at most two messages at a time per subscription (measured: its push loop pulls one message and waits for the endpoint's answer), so locally the end-to-end rate is bounded by one delivery's latency, for Tally and for the baseline alike, and more workers cannot raise it much.",
  ];
}
