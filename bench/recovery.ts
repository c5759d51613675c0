// Phase 4 — recovery latency (DESIGN.md §9, F5, F9):
//
// Killed worker → item redriven and completed. Per trial: a one-item batch whose item sleeps for
// `itemSleepMs`; once the ledger shows it running, the worker process holding its lease (the pid is
// part of the lease owner) is SIGKILLed through the stack's supervisor, which starts it again. The
// ledger is then read every 10 ms: "back in play" is the first read that shows the item pending or
// leased again (attempt 2), "completed" is the item's finishedAt. Expected bound: lease + one tick
// (+ the push of the republished doorbell + the item's own sleep for completion).
//
// Last item terminal → batch finalized. Many small no-op batches, each submitted and waited for;
// then, through the API, the batch's finishedAt minus the latest finishedAt of its items.
import { waitFor } from "../local/waitFor";
import { getJson, submitNdjson } from "./support/ndjsonSubmit";
import type { Progress } from "./support/progress";
import { type Distribution, distribution, fmtDist } from "./support/stats";
import type { BenchStack } from "./support/tallyStack";

export interface KillTrial {
  killedPid: number;
  worker: number;
  /** Kill → the ledger shows the item pending or leased again. */
  backInPlayMs: number;
  /** Kill → the item's finishedAt. */
  completedMs: number;
  attempts: number;
}

export interface RecoveryResult {
  leaseSeconds: number;
  tickSeconds: number;
  itemSleepMs: number;
  kills: KillTrial[];
  backInPlay: Distribution;
  completed: Distribution;
  /** lease + tick, the design bound for "back in play". */
  boundMs: number;
  withinBound: number;
  finalization: { batches: number; itemsPerBatch: number; latency: Distribution };
  /** How long the reconciler's calls took during the kills (the bound is lease + tick + this). */
  reconcileCall: Distribution;
  notes: string[];
}

interface ApiItem {
  id: string;
  finishedAt: string | null;
}

export async function runRecovery(opts: {
  bench: BenchStack;
  kills: number;
  finalizeBatches: number;
  itemSleepMs: number;
  tickSeconds: number;
  progress: Progress;
}): Promise<RecoveryResult> {
  const { bench, progress } = opts;
  const { stack, probe } = bench;
  const leaseSeconds = stack.config.topology.delivery.leaseSeconds;
  const kills: KillTrial[] = [];
  bench.reconcileCallDurations();
  for (let k = 0; k < opts.kills; k++) {
    const batchId = `kill-${k}-${Date.now().toString(36)}`;
    const res = await submitNdjson({
      coordinatorUrl: bench.coordinatorUrl,
      batchId,
      items: 1,
      payload: () => ({ sleepMs: opts.itemSleepMs }),
    });
    if (res.status !== 201)
      throw new Error(`kill trial submission answered ${res.status}: ${JSON.stringify(res.body)}`);
    const itemId = (await probe.listItems(batchId, { limit: 1 })).entries[0]!.itemId;
    const running = await waitFor(
      `item of ${batchId} running`,
      async () => {
        const it = await probe.getItem(batchId, itemId);
        return it?.status === "running" && it.lease ? it : null;
      },
      60_000,
      10,
    );
    // Lease owners are "<host>/<pid>/<delivery>".
    const ownerPid = Number(running.lease!.owner.split("/").at(-2));
    const worker = stack.pids.workers.indexOf(ownerPid) + 1;
    if (worker === 0)
      throw new Error(
        `lease owner ${running.lease!.owner} is none of the workers ${stack.pids.workers.join(", ")}`,
      );
    const killedAt = Date.now();
    const killedPid = stack.killWorker(worker, "SIGKILL");
    const back = await waitFor(
      `item of ${batchId} back in play`,
      async () => {
        const it = await probe.getItem(batchId, itemId);
        return it && (it.status === "pending" || it.attempt >= 2) ? Date.now() : null;
      },
      120_000,
      10,
    ).catch(async (err: Error) => {
      const it = await probe.getItem(batchId, itemId);
      throw new Error(
        `${err.message}; item ${JSON.stringify({ status: it?.status, attempt: it?.attempt, lease: it?.lease })}, now ${Date.now()}, reconciler calls (ms) ${bench.reconcileCallDurations().map(Math.round).join(", ")}, tick ${bench.tickSeconds}`,
      );
    });
    const done = await waitFor(
      `item of ${batchId} succeeded`,
      async () => {
        const it = await probe.getItem(batchId, itemId);
        return it?.status === "succeeded" ? it : null;
      },
      120_000,
      20,
    );
    await stack.waitForWorkerRestart(worker, killedPid, 60_000);
    kills.push({
      killedPid,
      worker,
      backInPlayMs: back - killedAt,
      completedMs: (done.finishedAt ?? Date.now()) - killedAt,
      attempts: done.attempt,
    });
    progress(
      `kill ${k + 1}/${opts.kills}: worker ${worker} (pid ${killedPid}) → back in play ${back - killedAt} ms, completed ${(done.finishedAt ?? 0) - killedAt} ms (attempt ${done.attempt})`,
    );
    await bench.waitForFinal(batchId, 60_000);
  }

  const reconcileCall = distribution(bench.reconcileCallDurations());
  progress(`reconcile calls during the kills: ${fmtDist(reconcileCall)}`);
  const latencies: number[] = [];
  const itemsPerBatch = 3;
  for (let b = 0; b < opts.finalizeBatches; b++) {
    const batchId = `fin-${b}-${Date.now().toString(36)}`;
    const res = await submitNdjson({ coordinatorUrl: bench.coordinatorUrl, batchId, items: itemsPerBatch });
    if (res.status !== 201) throw new Error(`finalization batch answered ${res.status}`);
    await bench.waitForFinal(batchId, 60_000);
    const batch = await getJson<{ finishedAt: string; status: string }>(
      bench.coordinatorUrl,
      `/v1/batches/${encodeURIComponent(batchId)}`,
    );
    const items = await getJson<{ items: ApiItem[] }>(
      bench.coordinatorUrl,
      `/v1/batches/${encodeURIComponent(batchId)}/items?limit=${itemsPerBatch}`,
    );
    const lastItem = Math.max(...items.items.map((i) => Date.parse(i.finishedAt ?? "")));
    latencies.push(Date.parse(batch.finishedAt) - lastItem);
  }
  const finalization = { batches: opts.finalizeBatches, itemsPerBatch, latency: distribution(latencies) };
  progress(
    `finalization: last item terminal → batch finalized p50 ${finalization.latency.p50} ms, max ${finalization.latency.max} ms over ${latencies.length} batches`,
  );
  const boundMs = (leaseSeconds + opts.tickSeconds) * 1000;
  return {
    leaseSeconds,
    tickSeconds: opts.tickSeconds,
    itemSleepMs: opts.itemSleepMs,
    kills,
    backInPlay: distribution(kills.map((k) => k.backInPlayMs)),
    completed: distribution(kills.map((k) => k.completedMs)),
    boundMs,
    withinBound: kills.filter((k) => k.backInPlayMs <= boundMs).length,
    finalization,
    reconcileCall,
    notes: [
      `Each kill: a one-item batch whose item sleeps ${opts.itemSleepMs} ms; the worker holding its lease is SIGKILLed while it runs (the supervisor restarts it, as Cloud Run would start an instance).`,
      "Back in play: the first ledger read (every 10 ms) showing the item pending or leased again. Completed: the item's finishedAt (includes the item's own sleep on the second attempt).",
      "The design bound is lease + one tick after the lease lapsed; the reconciler's call itself takes time too (its sweeps run one after the other), reported beside it: the scheduler never starts a call while one runs, so a slow call also delays the next tick.",
      "Finalization: batch finishedAt − the latest item finishedAt, read through the API after each batch.",
    ],
  };
}
