// Phase 6 — a peer side by side (DESIGN.md §9): the same workload — N no-op items fanned out, wait
// for all — on Tally (local stack, W workers) and on BullMQ Flows (a parent waiting for N children,
// W worker processes) against a private redis-server; then the same fault on both: one worker
// process SIGKILLed once 30% of the items completed, a new one started (Tally's supervisor does it;
// for BullMQ the bench starts one), and after a deadline every item accounted for: completed,
// failed, lost (found nowhere), unaccounted (still pending/active), re-executed, duplicate results.
//
// The lease and the check interval are the same on both: Tally's lease = BullMQ's lockDuration,
// Tally's reconciler tick = BullMQ's stalledInterval. Reported whichever way it comes out.
import { DuckDBResultSink } from "../functions/adapters/duckdbResultSink";
import { waitFor } from "../local/waitFor";
import {
  type BullmqFaultRun,
  type BullmqSettings,
  bullmqFanOut,
  bullmqFault,
  type FanOutRun,
  type FaultAccounting,
} from "./peer/bullmqFanOut";
import { submitNdjson } from "./support/ndjsonSubmit";
import type { Progress } from "./support/progress";
import { startRedis } from "./support/redisServer";
import { perSecond, ratio } from "./support/stats";
import type { BenchStack } from "./support/tallyStack";

export interface PeerResult {
  items: number;
  workers: number;
  settings: BullmqSettings & { tallyLeaseSeconds: number; tallyTickSeconds: number };
  redisVersion: string;
  fanOut: { tally: FanOutRun; bullmq: FanOutRun; tallyOverBullmq: number };
  fault: {
    tally: FaultAccounting & { system: "tally"; ms: number | null };
    bullmq: BullmqFaultRun;
    deadlineMs: number;
  };
  notes: string[];
}

async function tallyFanOut(
  bench: BenchStack,
  items: number,
  workers: number,
  progress: Progress,
): Promise<FanOutRun> {
  const batchId = `peer-${Date.now().toString(36)}`;
  const t0 = Date.now();
  const res = await submitNdjson({ coordinatorUrl: bench.coordinatorUrl, batchId, items });
  if (res.status !== 201) throw new Error(`peer submission answered ${res.status}`);
  const final = await bench.waitForFinal(batchId, Math.max(300_000, items * 200));
  const ms = (final.finishedAt ?? Date.now()) - t0;
  progress(
    `Tally, ${workers} worker(s): ${items} items fanned out and finalized in ${ms} ms (${Math.round(perSecond(items, ms))}/s)`,
  );
  return { items, workers, ms, itemsPerSecond: perSecond(items, ms) };
}

async function tallyFault(
  bench: BenchStack,
  items: number,
  killAfterFraction: number,
  deadlineMs: number,
  progress: Progress,
): Promise<FaultAccounting & { system: "tally"; ms: number | null }> {
  const { stack, probe } = bench;
  const batchId = `peer-fault-${Date.now().toString(36)}`;
  const base = bench.answered2xx();
  const t0 = Date.now();
  const res = await submitNdjson({ coordinatorUrl: bench.coordinatorUrl, batchId, items });
  if (res.status !== 201) throw new Error(`peer fault submission answered ${res.status}`);
  const killAt = Math.max(1, Math.floor(items * killAfterFraction));
  const completedAtKill = await waitFor(
    `${killAt} Tally deliveries answered`,
    () => {
      const c = bench.answered2xx() - base;
      return c >= killAt ? c : null;
    },
    deadlineMs,
    5,
  );
  // The victim is a worker holding an item at that moment (as BullMQ's victim always holds active
  // jobs): the ledger names the holder's pid in the lease owner.
  const itemDocs = bench.db.collection("batches").doc(batchId).collection("items");
  const pidOf = (owner: unknown) =>
    Number(
      String(owner ?? "")
        .split("/")
        .at(-2),
    );
  const victim = await waitFor(
    "a worker holding an item",
    async () => {
      const running = await itemDocs.where("status", "==", "running").select("leaseOwner").get();
      for (const d of running.docs) {
        const n = stack.pids.workers.indexOf(pidOf(d.get("leaseOwner"))) + 1;
        if (n > 0 && stack.workers[n - 1]!.live)
          return {
            n,
            inFlight: running.docs.filter((x) => pidOf(x.get("leaseOwner")) === pidOf(d.get("leaseOwner")))
              .length,
          };
      }
      return null;
    },
    deadlineMs,
    5,
  );
  const inFlightAtKill = victim.inFlight;
  const killedAt = Date.now();
  const killedWorkerPid = stack.killWorker(victim.n, "SIGKILL");
  progress(
    `Tally: SIGKILLed worker ${victim.n} (pid ${killedWorkerPid}, ${inFlightAtKill} item(s) in flight) at ${completedAtKill}/${items} answered; the supervisor starts a new one`,
  );
  let finishedAt: number | null = null;
  try {
    const final = await bench.waitForFinal(batchId, deadlineMs);
    finishedAt = final.finishedAt;
  } catch {
    /* deadline passed: account for what is there */
  }
  const counts = await probe.countItems(batchId);
  const reExecuted = (await itemDocs.where("attempt", ">=", 2).count().get()).data().count;
  const sink = new DuckDBResultSink(stack.resultsPath);
  let rows = 0;
  try {
    rows = await sink.countRows(batchId);
  } finally {
    await sink.close();
  }
  const result = {
    system: "tally" as const,
    items,
    completed: counts.succeeded,
    failed: counts.failed,
    lost: Math.max(0, items - counts.total),
    unaccounted: counts.pending + counts.running,
    reExecuted,
    duplicateResults: Math.max(0, rows - counts.succeeded),
    batchFinished: finishedAt !== null,
    recoveryMs: finishedAt === null ? null : finishedAt - killedAt,
    killedWorkerPid,
    completedAtKill,
    inFlightAtKill,
    ms: finishedAt === null ? null : finishedAt - t0,
  };
  progress(
    `Tally after the kill: succeeded ${result.completed}, failed ${result.failed}, lost ${result.lost}, unaccounted ${result.unaccounted}, re-executed ${reExecuted}, sink rows ${rows}, batch ${finishedAt === null ? "not finalized by the deadline" : "finalized"}`,
  );
  return result;
}

export async function runPeer(opts: {
  bench: BenchStack;
  items: number;
  workers: number;
  tickSeconds: number;
  bullmqConcurrency: number;
  deadlineMs: number;
  progress: Progress;
}): Promise<PeerResult> {
  const { bench, progress } = opts;
  const lease = bench.stack.config.topology.delivery.leaseSeconds;
  const settings: BullmqSettings = {
    concurrency: opts.bullmqConcurrency,
    lockDurationMs: lease * 1000,
    stalledIntervalMs: opts.tickSeconds * 1000,
  };
  const redis = await startRedis(progress);
  progress(
    `${redis.version.split(" ").slice(0, 3).join(" ")} on 127.0.0.1:${redis.port} (pid ${redis.pid}), persistence off`,
  );
  try {
    const bullmq = await bullmqFanOut({
      redis,
      items: opts.items,
      workers: opts.workers,
      settings,
      deadlineMs: opts.deadlineMs,
      progress,
    });
    const tally = await tallyFanOut(bench, opts.items, opts.workers, progress);
    const bullFault = await bullmqFault({
      redis,
      items: opts.items,
      workers: opts.workers,
      settings,
      killAfterFraction: 0.3,
      deadlineMs: opts.deadlineMs,
      progress,
    });
    const tFault = await tallyFault(bench, opts.items, 0.3, opts.deadlineMs, progress);
    return {
      items: opts.items,
      workers: opts.workers,
      settings: { ...settings, tallyLeaseSeconds: lease, tallyTickSeconds: opts.tickSeconds },
      redisVersion: redis.version,
      fanOut: {
        tally,
        bullmq,
        tallyOverBullmq: ratio(tally.itemsPerSecond ?? 0, bullmq.itemsPerSecond ?? 0),
      },
      fault: { tally: tFault, bullmq: bullFault, deadlineMs: opts.deadlineMs },
      notes: [
        `Same machine, same W=${opts.workers} worker processes. BullMQ ${require("bullmq/package.json").version} against redis-server (no persistence); Tally on the Pub/Sub and Firestore emulators, which are not production services (and push at most two deliveries at a time).`,
        `BullMQ workers run ${opts.bullmqConcurrency} jobs at a time each; lockDuration ${settings.lockDurationMs} ms = Tally's lease, stalledInterval ${settings.stalledIntervalMs} ms = Tally's reconciler tick, maxStalledCount 1 (default).`,
        "Re-executed: items whose processing started more than once (expected after a kill for both: at-least-once execution). Duplicate results: more than one recorded result for an item (Tally: sink rows beyond the succeeded count; BullMQ: a job completes at most once).",
        "Tally's fault run counts answered deliveries (front door) to pick the kill moment; BullMQ's counts completed children. In flight at the kill: Tally, the items the ledger showed leased by the killed process just before the kill (a no-op item may finish in between, and the emulator pushes at most two at a time); BullMQ, the active jobs of all workers.",
      ],
    };
  } finally {
    await redis.stop();
  }
}
