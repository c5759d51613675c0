// Phase 1 — submission (DESIGN.md §9): items/s through the deployed path — the coordinator under
// the Functions Framework (which buffers every body), fed by the typed client with open / append /
// seal in requests under Cloud Run's 32 MiB cap — into the ledger and onto the work topic, at each
// size, beside the raw limit measured in the same run (bench/baselines/rawSubmission.ts); and the
// coordinator's peak RSS at each size, read from /proc/PID/status (VmHWM) of the coordinator's own
// process — it must not grow with the batch (F4).
//
// Conditions: each size runs on a fresh project of the shared emulators; the work topic has no
// subscription in either run (messages are accepted and dropped by the emulator, the cheapest
// publish it offers — the stricter comparison); the coordinator runs with the deployed code and
// settings (500-item chunks, cursor at most once a second).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../functions/config";
import { pipelineTopology } from "../functions/topology";
import { TallyClient } from "../local/client/tallyClient";
import { clearFirestore, startFirestoreEmulator } from "../local/emulators";
import { provisionTopics } from "../local/provisionTopology";
import { itemIdFor } from "./baselines/itemDocShape";
import {
  bulkWriterUpTo,
  measureRawSubmission,
  type RawSubmissionResult,
  rawPublishes,
  writeBatchWrites,
} from "./baselines/rawSubmission";
import {
  benchProjectId,
  type EmulatorHosts,
  emulatorEnv,
  firestoreClient,
  pubsubClient,
} from "./support/clients";
import { compileBenchChild } from "./support/compiledChild";
import { cpuSeconds, currentRss, trackPeakRss } from "./support/procStats";
import type { Progress } from "./support/progress";
import { perSecond, ratio } from "./support/stats";
import { spawnTs } from "./support/tsChild";

export interface SubmissionSize {
  items: number;
  tally: {
    ms: number;
    itemsPerSecond: number;
    /** VmHWM of the coordinator process after the submission. */
    peakRssMiB: number | null;
    /** VmRSS of the idle coordinator before the submission. */
    idleRssMiB: number | null;
    /** CPU seconds the coordinator process used per item. */
    cpuSecondsPerItem: number | null;
    /** The coordinator's own account of where the time went (its `batch.appended` log lines, summed). */
    coordinatorTimings: Record<string, unknown> | null;
    status: number;
    batchStatus: string | null;
  };
  raw: RawSubmissionResult;
  /** Tally items/s ÷ raw limit items/s (target ≥ 0.8). */
  ratio: number;
}

export interface SubmissionResult {
  sizes: SubmissionSize[];
  /** Sizes that failed, with their errors (the phase fails only when every size did). */
  failures: string[];
  /** The largest size once more, with V8's old space capped (the memory experiment). */
  heapCapped: { items: number; nodeOptions: string; tally: SubmissionSize["tally"] } | null;
  notes: string[];
}

/** The coordinator's `batch.appended` lines of one batch, summed. */
function sumAppends(lines: Record<string, unknown>[]): Record<string, unknown> | null {
  if (lines.length === 0) return null;
  const sum = (k: string) => lines.reduce((n, l) => n + (typeof l[k] === "number" ? (l[k] as number) : 0), 0);
  return {
    appends: lines.length,
    appendMs: sum("durationMs"),
    slowestAppendMs: Math.max(...lines.map((l) => (typeof l.durationMs === "number" ? l.durationMs : 0))),
    stored: sum("stored"),
    published: sum("published"),
  };
}

/** Submits `n` items (ids and payloads as the raw baseline writes them) with open/append/seal. */
async function submitThroughFramework(coordinatorUrl: string, batchId: string, n: number) {
  const t0 = performance.now();
  const client = new TallyClient({ baseUrl: coordinatorUrl });
  const items = function* () {
    for (let i = 0; i < n; i++) yield { id: itemIdFor(i), payload: {} };
  };
  const r = await client.submit({ id: batchId, pipeline: "demo" }, items());
  return { ms: performance.now() - t0, batch: r.batch, requests: r.requests };
}

const mib = (b: number | null) => (b === null ? null : Math.round((b / 2 ** 20) * 10) / 10);

/** Runs the raw writes and publishes once, unmeasured, so neither run pays the emulators' JVM warm-up. */
async function warmEmulators(hosts: EmulatorHosts, items: number, progress: Progress): Promise<number> {
  const projectId = benchProjectId("warmup");
  const db = firestoreClient(hosts, projectId);
  const pubsub = pubsubClient(hosts, projectId);
  try {
    const topicName = "tally-warmup";
    await pubsub.createTopic(topicName);
    const t0 = performance.now();
    await Promise.all([
      writeBatchWrites(db, "warmup", items),
      rawPublishes(pubsub, topicName, "warmup", items),
    ]);
    progress(
      `emulators warmed up: ${items} raw writes and publishes in ${Math.round(performance.now() - t0)} ms`,
    );
  } finally {
    await clearFirestore(hosts.firestoreHost, projectId).catch(() => undefined);
    await db.terminate();
    await pubsub.close();
  }
  return items;
}

type TallyRun = SubmissionSize["tally"];

/**
 * One Tally submission of `n` items: a fresh project, the coordinator in its own process (compiled
 * bundle, plain node, extra node flags if given), warmed up by a 10-item submission, then one
 * NDJSON stream of `n` items timed until its 201.
 */
async function measureTally(opts: {
  hosts: EmulatorHosts;
  items: number;
  coordinatorScript: string;
  nodeOptions: string;
  progress: Progress;
  /** False when the emulator is thrown away afterwards (clearing a million documents takes a minute). */
  clearAfter?: boolean;
}): Promise<TallyRun> {
  const n = opts.items;
  const projectId = benchProjectId("submit");
  const dataDir = mkdtempSync(join(tmpdir(), "tally-bench-coordinator-"));
  const env = {
    ...emulatorEnv(opts.hosts, projectId),
    TALLY_PREFIX: "tally",
    TALLY_DUCKDB_PATH: join(dataDir, "results.duckdb"),
    // INFO: the coordinator's `batch.submitted` line carries its own store/publish timings.
    TALLY_LOG_LEVEL: "INFO",
    NODE_OPTIONS: opts.nodeOptions,
  };
  const config = loadConfig(env);
  const pubsub = pubsubClient(opts.hosts, projectId);
  try {
    await provisionTopics(pubsub, config.topology);
    let port = 0;
    let appended: Record<string, unknown>[] = [];
    const coordinator = await spawnTs(opts.coordinatorScript, {
      env,
      readyLine: (l) => {
        const m = /^bench-coordinator-listening (\d+)$/.exec(l.trim());
        if (m) port = Number(m[1]);
        return m !== null;
      },
      onStdoutLine: (l) => {
        if (!l.includes('"batch.appended"')) return;
        try {
          appended.push(JSON.parse(l));
        } catch {
          /* not a log line */
        }
      },
    });
    try {
      // A warm instance, as one that has served a request: its modules are loaded and its
      // Firestore and Pub/Sub channels open (the first request pays ~0.7 s of module loading).
      const warm = await submitThroughFramework(
        `http://127.0.0.1:${port}`,
        `warmup-${n}-${Date.now().toString(36)}`,
        10,
      );
      if (warm.batch.status !== "running") throw new Error(`the warm-up batch is ${warm.batch.status}`);
      appended = [];
      const idle = currentRss(coordinator.pid);
      const cpuBefore = cpuSeconds(coordinator.pid);
      const peak = trackPeakRss(coordinator.pid);
      opts.progress(
        `Tally: ${n} items to the coordinator under the Functions Framework, open/append/seal (pid ${coordinator.pid}${opts.nodeOptions ? `, ${opts.nodeOptions}` : ""})`,
      );
      const batchId = `submit-${n}-${Date.now().toString(36)}`;
      const res = await submitThroughFramework(`http://127.0.0.1:${port}`, batchId, n);
      const peakBytes = peak.stop();
      const cpuAfter = cpuSeconds(coordinator.pid);
      if (res.batch.status !== "running" || res.batch.total !== n)
        throw new Error(`submission of ${n} items ended ${JSON.stringify(res.batch).slice(0, 500)}`);
      const ownStored = appended.reduce((k, l) => k + (typeof l.stored === "number" ? l.stored : 0), 0);
      if (ownStored !== n) throw new Error(`the coordinator logged ${ownStored} items stored, not ${n}`);
      const tally: TallyRun = {
        ms: res.ms,
        itemsPerSecond: perSecond(n, res.ms),
        peakRssMiB: mib(peakBytes),
        idleRssMiB: mib(idle),
        cpuSecondsPerItem: cpuBefore === null || cpuAfter === null ? null : (cpuAfter - cpuBefore) / n,
        coordinatorTimings: sumAppends(appended),
        status: 200,
        batchStatus: res.batch.status,
      };
      opts.progress(
        `Tally: ${n} items in ${Math.round(res.ms)} ms (${Math.round(tally.itemsPerSecond)}/s), batch ${tally.batchStatus}, coordinator peak RSS ${tally.peakRssMiB} MiB (idle ${tally.idleRssMiB} MiB)`,
      );
      return tally;
    } finally {
      await coordinator.stop();
    }
  } finally {
    if (opts.clearAfter !== false)
      await clearFirestore(opts.hosts.firestoreHost, projectId).catch(() => undefined);
    await pubsub.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/**
 * Sizes above this run each pass (Tally's, and each raw write pass) on a freshly started Firestore
 * emulator: the emulator does not give back the memory of cleared documents — after three
 * million-document passes it held 12 GB and stalled commits past their 60 s deadline — so later
 * passes would run on a slower emulator than earlier ones.
 */
const freshEmulatorAbove = 200_000;

/** A Firestore emulator of its own, warmed up like the shared one (see warmEmulators). */
async function startWarmFirestore(
  shared: EmulatorHosts,
  warmupItems: number,
  progress: Progress,
): Promise<{ hosts: EmulatorHosts; stop: () => Promise<void> }> {
  const dataDir = mkdtempSync(join(tmpdir(), "tally-bench-firestore-"));
  const emulator = await startFirestoreEmulator({ dataDir });
  const hosts = { pubsubHost: shared.pubsubHost, firestoreHost: emulator.host };
  const stop = async () => {
    await emulator.stop();
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    const projectId = benchProjectId("warmup");
    const db = firestoreClient(hosts, projectId);
    const t0 = performance.now();
    await writeBatchWrites(db, "warmup", warmupItems);
    await db.terminate();
    await clearFirestore(hosts.firestoreHost, projectId);
    progress(
      `fresh Firestore emulator on ${emulator.host}, warmed up with ${warmupItems} writes in ${Math.round(performance.now() - t0)} ms`,
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { hosts, stop };
}

async function withFreshFirestore<T>(
  shared: EmulatorHosts,
  warmupItems: number,
  progress: Progress,
  fn: (hosts: EmulatorHosts) => Promise<T>,
): Promise<T> {
  const emulator = await startWarmFirestore(shared, warmupItems, progress);
  try {
    return await fn(emulator.hosts);
  } finally {
    await emulator.stop();
  }
}

/** The old-space cap of the memory experiment (MiB). */
const cappedOldSpaceMiB = 128;

export async function runSubmission(opts: {
  hosts: EmulatorHosts;
  sizes: number[];
  warmupItems: number;
  memoryExperiment: boolean;
  progress: Progress;
}): Promise<SubmissionResult> {
  const out: SubmissionSize[] = [];
  const failures: string[] = [];
  // The coordinator runs compiled, as deployed (its memory is one of the figures).
  const coordinatorScript = compileBenchChild(join(__dirname, "children/coordinatorProcess.ts"));
  const warmupItems = await warmEmulators(opts.hosts, opts.warmupItems, opts.progress);
  // Unset in the reported runs; for memory experiments (e.g. --max-old-space-size=96).
  const nodeOptions = process.env.TALLY_BENCH_COORDINATOR_NODE_OPTIONS ?? "";
  for (const n of opts.sizes) {
    // A size that fails is reported with its error; the sizes measured before it are kept.
    try {
      out.push(await measureSize(n));
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      opts.progress(`${n} items FAILED: ${message}`);
      failures.push(`${n} items: ${message}`);
    }
  }
  async function measureSize(n: number): Promise<SubmissionSize> {
    const fresh = n > freshEmulatorAbove;
    if (fresh)
      opts.progress(
        `${n} items: every pass on a freshly started Firestore emulator (warmed up with ${opts.warmupItems} writes)`,
      );
    const tally = fresh
      ? await withFreshFirestore(opts.hosts, opts.warmupItems, opts.progress, (hosts) =>
          measureTally({
            hosts,
            items: n,
            coordinatorScript,
            nodeOptions,
            progress: opts.progress,
            clearAfter: false,
          }),
        )
      : await measureTally({
          hosts: opts.hosts,
          items: n,
          coordinatorScript,
          nodeOptions,
          progress: opts.progress,
        });
    const projectId = benchProjectId("raw");
    const pubsub = pubsubClient(opts.hosts, projectId);
    const shared = fresh ? null : firestoreClient(opts.hosts, projectId);
    try {
      const config = loadConfig({ ...emulatorEnv(opts.hosts, projectId), TALLY_PREFIX: "tally" });
      await provisionTopics(pubsub, config.topology);
      const raw = await measureRawSubmission({
        pubsub,
        topicName: pipelineTopology(config.topology, "demo").workTopic,
        items: n,
        writeTarget: async () => {
          if (shared)
            return { db: shared, release: () => clearFirestore(opts.hosts.firestoreHost, projectId) };
          const emulator = await startWarmFirestore(opts.hosts, opts.warmupItems, opts.progress);
          const db = firestoreClient(emulator.hosts, projectId);
          return {
            db,
            release: async () => {
              await db.terminate();
              await emulator.stop();
            },
          };
        },
        progress: opts.progress,
      });
      const r = ratio(tally.itemsPerSecond, raw.itemsPerSecond);
      opts.progress(`${n} items: ratio ${r.toFixed(2)} (target ≥ 0.8)`);
      return { items: n, tally, raw, ratio: r };
    } finally {
      if (shared) {
        await clearFirestore(opts.hosts.firestoreHost, projectId).catch(() => undefined);
        await shared.terminate();
      }
      await pubsub.close();
    }
  }
  // The memory experiment: the same stream with V8's old space capped. The uncapped coordinator's
  // RSS is flat in batch size but V8 grows its heap lazily while memory is plentiful; with a cap it
  // collects instead — what remains is what the coordinator actually holds.
  const cappedItems = Math.max(...opts.sizes);
  const cappedFlags = `--max-old-space-size=${cappedOldSpaceMiB}`;
  const cappedRun = (hosts: EmulatorHosts) =>
    measureTally({
      hosts,
      items: cappedItems,
      coordinatorScript,
      nodeOptions: `${nodeOptions} ${cappedFlags}`.trim(),
      progress: opts.progress,
      clearAfter: hosts !== opts.hosts ? false : undefined,
    });
  let capped: TallyRun | null = null;
  if (opts.memoryExperiment)
    try {
      capped =
        cappedItems > freshEmulatorAbove
          ? await withFreshFirestore(opts.hosts, opts.warmupItems, opts.progress, cappedRun)
          : await cappedRun(opts.hosts);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      opts.progress(`memory experiment FAILED: ${message}`);
      failures.push(`memory experiment (${cappedItems} items, ${cappedFlags}): ${message}`);
    }
  if (out.length === 0) throw new Error(failures.join("; "));
  return {
    sizes: out,
    failures,
    heapCapped: capped && { items: cappedItems, nodeOptions: cappedFlags, tally: capped },
    notes: [
      `Both emulators are warmed up first with ${warmupItems.toLocaleString("en-US")} raw item writes and publishes (not counted, then cleared): measured here, a freshly started Firestore emulator spends about twice the CPU per write until its JVM has compiled the commit path, and the first measured run — Tally's — would otherwise pay for that alone.`,
      `Above ${freshEmulatorAbove.toLocaleString("en-US")} items every pass — Tally's and each raw write pass — runs on a freshly started Firestore emulator, warmed up the same way: the emulator does not give back the memory of cleared documents (12 GB after three million-document passes, then commits stalled past their 60 s deadline).`,
      "Tally: the deployed path — the coordinator in its own process running the compiled bundle under plain node, registered with the Functions Framework and served by the framework's Express server (every body buffered, as on Cloud Run), warmed up by a 10-item submission; the typed client (local/client/tallyClient.ts) submits with open, appends of ≤ 10,000 items / 8 MiB (one in flight while the next is built) and seal, over real HTTP; timed from the open to the seal's answer (every item stored, published, batch running).",
      `Raw limit: the same count of item documents (same fields) created with WriteBatch commits of 500 (8 in flight) and, up to ${bulkWriterUpTo.toLocaleString("en-US")} items, with BulkWriter (throttling off), the faster one counted; and the same count of doorbells published with the work queue's batching settings; sequential and overlapped, the faster schedule counted.`,
      "The work topic has no subscription in either run.",
      ...(capped === null
        ? []
        : [
            `Memory experiment: the ${cappedItems.toLocaleString("en-US")}-item stream once more with ${cappedFlags} (no raw baseline): V8 grows an uncapped heap lazily while memory is plentiful, so the uncapped peak says little about what the coordinator holds.`,
          ]),
    ],
  };
}
