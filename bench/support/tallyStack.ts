// The local stack as the stack-level phases use it (end to end, scaling, recovery, peer): started
// through `startLocalStack` — emulators, topology, coordinator, W workers behind the front door,
// reconciler — in a private data folder, with the stack's own scheduler loop replaced by one each
// phase sets the tick of, with handler logs kept quiet and the
// stack's own lines recorded (shown only if something fails). Plus the probes the phases read the
// ledger with directly (one document read, no API aggregations while a measurement runs).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Firestore } from "@google-cloud/firestore";
import type { PubSub } from "@google-cloud/pubsub";
import { FirestoreLedger } from "../../functions/adapters/firestoreLedger";
import type { Batch } from "../../functions/core/model";
import { isFinalBatchStatus } from "../../functions/core/model";
import type { DeliverySettings } from "../../functions/topology";
import { clearFirestore } from "../../local/emulators";
import { type LocalStack, startLocalStack } from "../../local/localStack";
import { subscriptionSpecs } from "../../local/provisionTopology";
import { waitFor } from "../../local/waitFor";
import { firestoreClient, pubsubClient } from "./clients";
import { cpuSeconds } from "./procStats";
import type { Progress } from "./progress";

export interface BenchStack {
  stack: LocalStack;
  db: Firestore;
  pubsub: PubSub;
  /** A ledger on the stack's project for probes; its op counters are not reported. */
  probe: FirestoreLedger;
  coordinatorUrl: string;
  /** Deliveries the worker processes have answered with 2xx so far (from the front door). */
  answered2xx(): number;
  forwarded(): number;
  /** CPU seconds used so far by the current worker processes (a restarted one starts from 0). */
  workerCpuSeconds(): number;
  /** Converts the work subscription to pull (deliveries pause) or back to push. */
  pauseDeliveries(): Promise<void>;
  resumeDeliveries(): Promise<void>;
  /** Drops everything queued on the work subscription (delete and re-create it as provisioned). */
  purgeDeliveries(): Promise<void>;
  waitForFinal(batchId: string, timeoutMs: number): Promise<Batch>;
  /**
   * Runs the local scheduler loop (POST /reconcile) every `seconds`, or stops it (null). Phases set
   * their own tick: on the emulator the reconciler's collection-group queries scan every item
   * (the emulator has no indexes), so a fast tick over a large ledger is load the cloud would not see.
   */
  setTick(seconds: number | null): Promise<void>;
  readonly tickSeconds: number | null;
  /** How long each reconcile call took since the last time this was asked (ms). */
  reconcileCallDurations(): number[];
  /** Deletes every document of the stack's project, so a phase starts from an empty ledger. */
  clearLedger(): Promise<void>;
  /**
   * Keeps workers 1..n running and stops the others (gracefully, no restart): the front door only
   * routes to live workers, so one stack serves every worker count.
   */
  setLiveWorkers(n: number): Promise<void>;
  readonly liveWorkers: number;
  stop(): Promise<void>;
}

/** The pipeline the benchmarks submit (bench/submission.ts). */
export const benchPipeline = "demo";

export async function startBenchStack(opts: {
  workers: number;
  /** Initial scheduler tick (null: no scheduler until setTick). */
  tickSeconds: number | null;
  delivery?: Partial<DeliverySettings>;
  stalePendingSeconds?: number;
  progress: Progress;
}): Promise<BenchStack> {
  const dataDir = mkdtempSync(join(tmpdir(), "tally-bench-stack-"));
  const lines: string[] = [];
  let stack: LocalStack;
  try {
    stack = await startLocalStack({
      port: 0,
      workers: opts.workers,
      scheduler: false,
      delivery: { minimumBackoffSeconds: 1, maximumBackoffSeconds: 10, ...opts.delivery },
      stalePendingSeconds: opts.stalePendingSeconds,
      dataDir,
      quiet: true,
      projectId: "tally-bench",
      output: (l) => {
        lines.push(l);
        if (lines.length > 200) lines.shift();
        if (/WARNING|ERROR|exited|restart/i.test(l) && !l.includes("[stack]")) opts.progress(`  ${l}`);
      },
    });
  } catch (err) {
    rmSync(dataDir, { recursive: true, force: true });
    throw new Error(`the local stack did not start: ${(err as Error).message}\n${lines.join("\n")}`);
  }
  const hosts = stack.emulators;
  const db = firestoreClient(hosts, stack.projectId);
  const pubsub = pubsubClient(hosts, stack.projectId);
  const probe = new FirestoreLedger(db);
  const topology = stack.config.topology;
  // The benchmarks submit `demo` items (bench/submission.ts): they measure its unit — its
  // subscription, front door and worker group. The other pipelines' workers idle.
  const unit = stack.pipeline(benchPipeline);
  const workSpec = () =>
    subscriptionSpecs(topology, stack.projectId, {
      workers: stack.urls.frontDoors,
      deadLetter: `${stack.urls.reconciler}${topology.deadLetterPath}`,
    }).find((s) => s.name === unit.topology.workSubscription)!;
  const stats = () => unit.frontDoor.stats();
  const reconcileUrl = `${stack.urls.reconciler}${topology.reconcilePath}`;
  let loop: ReconcileLoop | null = null;
  let tickSeconds: number | null = null;
  const callDurations: number[] = [];
  const stopped = new Set<number>();
  let liveWorkers = opts.workers;
  const setTick = async (seconds: number | null) => {
    await loop?.stop();
    loop = null;
    tickSeconds = seconds;
    if (seconds !== null)
      loop = startReconcileLoop(reconcileUrl, seconds * 1000, callDurations, (m) =>
        opts.progress(`  [scheduler] reconcile failed: ${m}`),
      );
  };
  await setTick(opts.tickSeconds);
  opts.progress(
    `local stack up: ${opts.workers} worker(s), lease ${stack.config.topology.delivery.leaseSeconds} s, tick ${opts.tickSeconds ?? "off"}`,
  );
  return {
    stack,
    db,
    pubsub,
    probe,
    coordinatorUrl: stack.urls.coordinator,
    answered2xx: () => Object.values(stats().responses).reduce((a, r) => a + (r["2xx"] ?? 0), 0),
    forwarded: () => Object.values(stats().forwarded).reduce((a, b) => a + b, 0),
    workerCpuSeconds: () =>
      unit.workers.reduce<number>((a, w) => a + (w.pid === null ? 0 : (cpuSeconds(w.pid) ?? 0)), 0),
    pauseDeliveries: async () => {
      await pubsub.subscription(unit.topology.workSubscription).modifyPushConfig({});
    },
    resumeDeliveries: async () => {
      await pubsub
        .subscription(unit.topology.workSubscription)
        .modifyPushConfig({ pushEndpoint: `${unit.frontDoor.url}/` });
    },
    purgeDeliveries: async () => {
      const spec = workSpec();
      await pubsub.subscription(spec.name).delete();
      await pubsub.topic(spec.topic).createSubscription(spec.name, spec.metadata);
    },
    waitForFinal: (batchId, timeoutMs) =>
      waitFor(
        `batch ${batchId} final`,
        async () => {
          const b = await probe.getBatch(batchId);
          return b && isFinalBatchStatus(b.status) ? b : null;
        },
        timeoutMs,
        100,
      ),
    setTick,
    get tickSeconds() {
      return tickSeconds;
    },
    reconcileCallDurations: () => callDurations.splice(0),
    clearLedger: () => clearFirestore(hosts.firestoreHost, stack.projectId),
    setLiveWorkers: async (n) => {
      if (n < 1 || n > unit.workers.length)
        throw new RangeError(
          `the ${benchPipeline} pipeline has workers 1..${unit.workers.length}; asked for ${n}`,
        );
      await Promise.all(
        unit.workers.map(async (w, i) => {
          if (i < n && stopped.has(i)) {
            stopped.delete(i);
            await w.start();
          } else if (i >= n && !stopped.has(i)) {
            stopped.add(i);
            await w.stop();
          }
        }),
      );
      liveWorkers = n;
      opts.progress(`${n} of ${unit.workers.length} ${benchPipeline} worker(s) running`);
    },
    get liveWorkers() {
      return liveWorkers;
    },
    stop: async () => {
      await loop?.stop();
      await Promise.allSettled([db.terminate(), pubsub.close()]);
      await stack.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

interface ReconcileLoop {
  stop(): Promise<void>;
}

/**
 * The local Cloud Scheduler stand-in (as local/schedulerLoop.ts: a call every tick, never two at
 * once), recording how long each call took — the recovery bound is lease + tick + that time.
 */
function startReconcileLoop(
  url: string,
  tickMs: number,
  durations: number[],
  onFailure: (message: string) => void,
): ReconcileLoop {
  let stopped = false;
  const abort = new AbortController();
  const run = (async () => {
    while (!stopped) {
      const t0 = performance.now();
      try {
        const res = await fetch(url, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: "{}",
          signal: abort.signal,
        });
        const text = await res.text();
        if (!res.ok) onFailure(`POST ${url} answered ${res.status}: ${text.slice(0, 200)}`);
        else durations.push(performance.now() - t0);
      } catch (err) {
        if (!stopped) onFailure(`POST ${url} failed: ${(err as Error).message}`);
      }
      const wait = tickMs - (performance.now() - t0);
      if (wait > 0 && !stopped)
        await new Promise<void>((r) => {
          const t = setTimeout(r, wait);
          abort.signal.addEventListener("abort", () => {
            clearTimeout(t);
            r();
          });
        });
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      abort.abort();
      await run;
    },
  };
}
