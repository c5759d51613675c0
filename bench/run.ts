// `npm run bench` (DESIGN.md §9, issue #9): measures Tally against baselines run in the same
// process on the same emulators, and writes bench/results/latest.md and latest.json. Benchmarks are
// not tests: nothing here runs under `npm test`.
//
// One local stack serves every phase, so the emulators and handler processes start once: it has as
// many workers as the largest worker count asked for, and each phase runs with the first n live
// (the front door routes only to live workers). Order:
//   stack up → warm-up → 1 submission (the stack's emulators, own projects, own coordinator
//   process) → 3 operations per item (in-process handlers, own project) → 2 end to end at each W,
//   most workers first → back to the peer's W → 4 recovery → 6 peer (BullMQ beside it) →
//   5 scaling (last: large backlogs) → stack down → cost → report.
// Each stack phase starts from an empty ledger with its own reconciler tick (support/tallyStack.ts).

import { loadavg, totalmem } from "node:os";
import type { OpMix } from "./baselines/rawOpMix";
import { rawPublishes, writeBatchWrites } from "./baselines/rawSubmission";
import { buildCapacityModel, renderCapacityModel } from "./capacityModel";
import { buildCostModel } from "./costModel";
import { type EndToEndRun, endToEndNotes, measureEndToEnd } from "./endToEnd";
import { type OpsPerItemResult, runOpsPerItem } from "./opsPerItem";
import { runPeer } from "./peerBullmq";
import { runRecovery } from "./recovery";
import {
  type BenchReport,
  markdownTable,
  type PhaseName,
  type PhaseOutcome,
  summaryRows,
  writeReport,
} from "./report";
import { runScaling } from "./scaling";
import { runSubmission } from "./submission";
import { BenchUsageError, benchUsage, parseBenchArgs } from "./support/args";
import { benchProjectId, firestoreClient, pubsubClient } from "./support/clients";
import { machineFacts } from "./support/machine";
import { submitNdjson } from "./support/ndjsonSubmit";
import { phaseProgress, progress } from "./support/progress";
import { type BenchStack, startBenchStack } from "./support/tallyStack";

const cleanups = new Set<() => Promise<void>>();
async function cleanUp() {
  for (const c of [...cleanups].reverse()) await c().catch(() => undefined);
  cleanups.clear();
}
for (const sig of ["SIGINT", "SIGTERM"] as const)
  process.once(sig, () => {
    progress("bench", `${sig}: stopping everything the bench started`);
    void cleanUp().finally(() => process.exit(130));
  });

/** The local stack's default tick (npm start) for the throughput phases. */
const e2eTickSeconds = 5;

const skipped = <T>(): PhaseOutcome<T> => ({ status: "skipped", durationMs: 0 });

async function phase<T>(
  name: PhaseName,
  wanted: PhaseName[],
  fn: () => Promise<T>,
): Promise<PhaseOutcome<T>> {
  if (!wanted.includes(name)) return skipped();
  const t0 = performance.now();
  progress(name, "start");
  try {
    const result = await fn();
    const durationMs = performance.now() - t0;
    progress(name, `done in ${(durationMs / 1000).toFixed(1)} s`);
    return { status: "ok", durationMs, result };
  } catch (err) {
    const durationMs = performance.now() - t0;
    const error = (err as Error).stack ?? String(err);
    progress(name, `FAILED after ${(durationMs / 1000).toFixed(1)} s: ${(err as Error).message}`);
    return { status: "failed", durationMs, error };
  }
}

async function withStack<T>(
  opts: Parameters<typeof startBenchStack>[0],
  fn: (b: BenchStack) => Promise<T>,
): Promise<T> {
  const b = await startBenchStack(opts);
  const stop = () => b.stop();
  cleanups.add(stop);
  try {
    return await fn(b);
  } finally {
    cleanups.delete(stop);
    await b.stop();
  }
}

/** Warms the emulators' JVMs and the stack's handlers so the first measured phase is not the cold one. */
async function warmUp(b: BenchStack): Promise<void> {
  const projectId = benchProjectId("warmup");
  const db = firestoreClient(b.stack.emulators, projectId);
  const pubsub = pubsubClient(b.stack.emulators, projectId);
  try {
    await pubsub.createTopic("warmup-topic");
    await writeBatchWrites(db, "warm", 1500);
    await rawPublishes(pubsub, "warmup-topic", "warm", 1500);
  } finally {
    await db.terminate();
    await pubsub.close();
  }
  const batchId = `warmup-${Date.now().toString(36)}`;
  const res = await submitNdjson({ coordinatorUrl: b.coordinatorUrl, batchId, items: 30 });
  if (res.status !== 201)
    throw new Error(`warm-up batch answered ${res.status}: ${JSON.stringify(res.body)}`);
  await b.waitForFinal(batchId, 120_000);
  // The reconciler's first call builds its clients: not part of any measured tick.
  await b.stack.reconcileNow();
}

/** Used when the operations phase did not run: the worker's counts as of this writing. */
const defaultMix: OpMix = { plainReads: 1, transactions: 0, plainWrites: 2, queries: 1 };

/**
 * The raw endpoint's work per delivery, from the worker's measured counts per item: a transaction
 * is one read and one write, a query bills one read, and one read per item is the export's paged
 * read (done once at the end of the raw run, not per delivery).
 */
function opMixFrom(ops: PhaseOutcome<OpsPerItemResult>): OpMix {
  if (ops.status !== "ok") return defaultMix;
  const w = ops.result!.perItemByComponent.worker;
  return {
    plainReads: Math.max(0, w.reads - w.transactions - w.queries - 1),
    transactions: w.transactions,
    plainWrites: Math.max(0, w.writes - w.transactions),
    queries: w.queries,
  };
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  let opts: ReturnType<typeof parseBenchArgs>;
  try {
    opts = parseBenchArgs(argv);
  } catch (err) {
    if (err instanceof BenchUsageError) {
      process.stderr.write(`${err.message}\n\n${benchUsage}\n`);
      return 2;
    }
    throw err;
  }
  if (!opts) {
    process.stdout.write(`${benchUsage}\n`);
    return 0;
  }
  const o = opts;
  // The Firestore emulator keeps every document on its JVM heap, whose default cap is a quarter of
  // the machine's memory: at a million items plus a raw pass it ran out of room and stalled commits
  // past their 60 s deadline. Half the memory for each emulator's JVM (only a cap; unset otherwise).
  if (!process.env.JAVA_TOOL_OPTIONS) {
    const halfGiB = Math.max(1, Math.floor(totalmem() / 2 / 2 ** 30));
    process.env.JAVA_TOOL_OPTIONS = `-Xmx${halfGiB}g`;
  }
  const started = performance.now();
  const command = `npm run bench${argv.length > 0 ? ` -- ${argv.join(" ")}` : ""}`;
  const machine = await machineFacts(command);
  progress(
    "bench",
    `${o.quick ? "quick" : "full"} run; ${machine.cores} cores, ${machine.memoryGiB} GiB, Node ${machine.node}; ${(machine.backgroundBusyBefore * 100).toFixed(0)}% CPU busy before start (load ${machine.loadAverageAtStart.join(" ")})`,
  );
  const wanted = o.phases;
  const report: BenchReport = {
    mode: o.quick ? "quick" : "full",
    machine,
    settings: { ...o },
    phases: {
      submission: skipped(),
      ops: skipped(),
      e2e: skipped(),
      recovery: skipped(),
      scaling: skipped(),
      peer: skipped(),
    },
    totalMs: 0,
  };
  const stackSettings = {
    tickSeconds: null,
    delivery: { leaseSeconds: o.leaseSeconds },
    // The scaling phase leaves a pending backlog behind: it must not be republished meanwhile.
    stalePendingSeconds: 86_400,
  };
  // One stack with as many workers as any phase needs; phases run with the first n live.
  const stackWorkers = Math.max(o.peerWorkers, ...(wanted.includes("e2e") ? o.workers : []));
  const e2eRuns: EndToEndRun[] = [];
  const e2eErrors: string[] = [];
  let e2eMs = 0;
  let mix: OpMix = defaultMix;

  const measureE2E = async (b: BenchStack, w: number) => {
    const t0 = performance.now();
    progress("e2e", `${w} worker(s), ${o.e2eItems} items`);
    try {
      await b.setLiveWorkers(w);
      await b.clearLedger();
      await b.setTick(e2eTickSeconds);
      e2eRuns.push(
        await measureEndToEnd({
          bench: b,
          workers: w,
          items: o.e2eItems,
          mix,
          progress: phaseProgress("e2e"),
        }),
      );
    } catch (err) {
      e2eErrors.push(`${w} worker(s): ${(err as Error).stack ?? err}`);
      progress("e2e", `FAILED at ${w} worker(s): ${(err as Error).message}`);
    }
    e2eMs += performance.now() - t0;
  };
  try {
    await withStack(
      { workers: stackWorkers, ...stackSettings, progress: phaseProgress("stack") },
      async (b) => {
        progress("warmup", "emulators and handlers");
        await warmUp(b);
        report.phases.submission = await phase("submission", wanted, () =>
          runSubmission({
            hosts: b.stack.emulators,
            sizes: o.sizes,
            warmupItems: o.warmupItems,
            memoryExperiment: o.memoryExperiment,
            progress: phaseProgress("submission"),
          }),
        );
        const sizeFailures = report.phases.submission.result?.failures ?? [];
        if (sizeFailures.length > 0) report.phases.submission.error = sizeFailures.join("\n");
        const ops = await phase("ops", wanted, () =>
          runOpsPerItem({ hosts: b.stack.emulators, progress: phaseProgress("ops") }),
        );
        report.phases.ops = ops as BenchReport["phases"]["ops"];
        mix = opMixFrom(ops);
        // Most workers first: stopping workers is quick, starting them again is not.
        if (wanted.includes("e2e"))
          for (const w of [...o.workers].sort((x, y) => y - x)) await measureE2E(b, w);
        await b.setLiveWorkers(o.peerWorkers);
        // Each phase starts from an empty ledger with its own reconciler tick (see tallyStack.ts).
        const fresh = async (tick: number | null) => {
          await b.clearLedger();
          await b.setTick(tick);
        };
        report.phases.recovery = await phase("recovery", wanted, async () => {
          await fresh(o.tickSeconds);
          return runRecovery({
            bench: b,
            kills: o.kills,
            finalizeBatches: o.finalizeBatches,
            itemSleepMs: o.itemSleepMs,
            tickSeconds: o.tickSeconds,
            progress: phaseProgress("recovery"),
          });
        });
        report.phases.peer = await phase("peer", wanted, async () => {
          await fresh(o.tickSeconds);
          return runPeer({
            bench: b,
            items: o.peerItems,
            workers: o.peerWorkers,
            tickSeconds: o.tickSeconds,
            bullmqConcurrency: o.bullmqConcurrency,
            deadlineMs: o.peerDeadlineMs,
            progress: phaseProgress("peer"),
          });
        });
        // Last on this stack; the reconciler's schedule is off during it (see scaling.ts).
        report.phases.scaling = await phase("scaling", wanted, async () => {
          await fresh(null);
          return runScaling({
            bench: b,
            backlogs: o.backlogs,
            window: o.window,
            mix,
            progress: phaseProgress("scaling"),
          });
        });
      },
    );
  } catch (err) {
    progress("stack", `FAILED: ${(err as Error).message}`);
    if (wanted.includes("e2e") && e2eRuns.length === 0)
      e2eErrors.push(`the local stack failed: ${(err as Error).message}`);
    for (const name of ["submission", "ops", "recovery", "peer", "scaling"] as const)
      if (wanted.includes(name) && report.phases[name].status === "skipped")
        report.phases[name] = {
          status: "failed",
          durationMs: 0,
          error: `the local stack failed: ${(err as Error).stack}`,
        };
  }
  if (wanted.includes("e2e")) {
    e2eRuns.sort((a, b) => a.workers - b.workers);
    report.phases.e2e = {
      status: e2eErrors.length === 0 ? "ok" : e2eRuns.length > 0 ? "ok" : "failed",
      durationMs: e2eMs,
      ...(e2eErrors.length > 0 && { error: e2eErrors.join("\n") }),
      result: { runs: e2eRuns, notes: endToEndNotes(mix) },
    };
  }
  if (report.phases.ops.status === "ok") {
    const ops = report.phases.ops.result!;
    const cpu = e2eRuns.map((r) => r.tally.workerCpuSecondsPerItem);
    const coord = report.phases.submission.result?.sizes
      .map((s) => s.tally.cpuSecondsPerItem)
      .filter((v): v is number => v !== null);
    ops.cost = buildCostModel({
      items: o.costItems,
      perItem: ops.perItem,
      perBatch: ops.perBatch,
      perChunk: ops.perChunk,
      chunkItems: ops.chunkItems,
      workerCpuSecondsPerItem: cpu.length > 0 ? cpu.reduce((a, b) => a + b, 0) / cpu.length : null,
      coordinatorCpuSecondsPerItem: coord && coord.length > 0 ? coord[coord.length - 1]! : null,
    });
  }
  // The production capacity model (issue #16): from the declared layout and Firestore's published
  // limits, with the operations per item this run counted (quick and full runs alike).
  const counted = report.phases.ops.result?.perItem;
  report.capacity = buildCapacityModel(counted ? { opsPerItem: counted.reads + counted.writes } : {});
  process.stdout.write(`\n${renderCapacityModel(report.capacity)}\n`);
  machine.loadAverageAtEnd = loadavg().map((v) => Math.round(v * 100) / 100);
  report.totalMs = performance.now() - started;
  const { md, json } = writeReport(report, o.outDir);
  process.stdout.write(`\n${markdownTable(summaryRows(report))}\n\n`);
  progress("bench", `report: ${md}, ${json} (${(report.totalMs / 1000).toFixed(0)} s in all)`);
  const failed = Object.entries(report.phases).filter(([, p]) => p.status === "failed" || p.error);
  if (failed.length > 0) progress("bench", `phases with failures: ${failed.map(([n]) => n).join(", ")}`);
  return failed.length > 0 ? 1 : 0;
}

main()
  .then(async (code) => {
    await cleanUp();
    process.exit(code);
  })
  .catch(async (err) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? err}\n`);
    await cleanUp();
    process.exit(1);
  });
