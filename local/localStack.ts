// The local stack (DESIGN.md §5), programmatically: `npm start`, the demo, the chaos suite, the
// dashboard test and the benchmarks all start it through `startLocalStack`. It runs the real
// emulators, provisions the topology from the same `Topology` the Pulumi program uses, starts the
// coordinator, one group of N workers per pipeline (each group behind its own round-robin front
// door, as each pipeline's Cloud Run service; issue #17 §1) and the reconciler as separate
// supervised processes serving the Functions Framework targets, and a scheduler loop calling the
// reconciler. Each pipeline's subscription pushes to its own group only, and each of its workers
// runs with TALLY_WORKER_PIPELINE set, as deployed. `stop()` shuts the handlers down gracefully, then the emulators' process
// groups; nothing is left running.
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import { PubSub } from "@google-cloud/pubsub";
import { loadConfig, type TallyConfig } from "../functions/config";
import type { PipelineTopology } from "../functions/topology";
import { type Emulators, exportFirestore, freePort, startEmulators } from "./emulators";
import { type FrontDoor, startFrontDoor } from "./frontDoor";
import { formatLogLine } from "./logLines";
import { type Component, SupervisedProcess } from "./processSupervisor";
import { provisionSubscriptions, provisionTopics } from "./provisionTopology";
import { type PushRelay, startPushRelay } from "./pushRelay";
import { formatReadyLines } from "./readyLines";
import { type SchedulerLoop, startSchedulerLoop } from "./schedulerLoop";
import { type LocalStackOptions, resolveDelivery, UsageError, validateStackOptions } from "./stackOptions";
import { waitFor } from "./waitFor";

export type { LocalStackOptions } from "./stackOptions";

/** One pipeline's deployable unit, locally: its topic, subscription, front door and worker group. */
export interface LocalPipeline {
  pipeline: string;
  topology: PipelineTopology;
  /** The front door its subscription pushes (or its relay posts) to. */
  frontDoor: FrontDoor;
  /** Its worker processes (also in `LocalStack.workers`, numbered across every group). */
  workers: SupervisedProcess[];
  /** Null with `pushConcurrency: 0`. */
  pushRelay: PushRelay | null;
}

export interface LocalStackPids {
  coordinator: number | null;
  /** Index 0 is "worker 1"; every pipeline's group, in the topology's order. */
  workers: (number | null)[];
  reconciler: number | null;
  /** The emulators' process-group leaders. */
  emulators: number[];
}

export interface LocalStack {
  urls: {
    coordinator: string;
    dashboard: string;
    reconciler: string;
    /** Pipeline name → the front door its work subscription pushes to. */
    frontDoors: Record<string, string>;
    workers: string[];
  };
  /** Current process ids (a restarted process has a new one). */
  readonly pids: LocalStackPids;
  resultsPath: string;
  dataDir: string;
  projectId: string;
  emulators: { pubsubHost: string; firestoreHost: string };
  /** The configuration every handler process runs with (same env, same topology). */
  config: TallyConfig;
  /** The environment handed to the handler processes. */
  handlerEnv: Record<string, string>;
  /** The ready block as printed by `npm start`. */
  readyLines: string[];
  coordinator: SupervisedProcess;
  /** Every worker process, every pipeline's group in the topology's order ("worker 1" first). */
  workers: SupervisedProcess[];
  reconciler: SupervisedProcess;
  /** One per pipeline, in the topology's order. */
  pipelines: LocalPipeline[];
  /** The named pipeline's unit; throws for an unknown pipeline. */
  pipeline(name: string): LocalPipeline;
  scheduler: SchedulerLoop | null;
  /** Signals worker `n` (1-based, as printed) — SIGKILL by default. Returns the pid signalled. */
  killWorker(n: number, signal?: NodeJS.Signals): number;
  /** Resolves with the new pid once worker `n` runs again after `previousPid` died. */
  waitForWorkerRestart(n: number, previousPid: number, timeoutMs?: number): Promise<number>;
  /** Calls the reconciler now, outside the schedule; returns its JSON summary. */
  reconcileNow(): Promise<unknown>;
  /** Graceful stop of everything; idempotent. */
  stop(): Promise<void>;
}

/** Marks a folder as the stack's own (or a tool's, inside `.tally`): only such folders are wiped. */
export const dataMarker = ".tally-data";

export async function startLocalStack(options: LocalStackOptions = {}): Promise<LocalStack> {
  validateStackOptions(options);
  const output = options.output ?? ((line: string) => process.stdout.write(`${line}\n`));
  const say = (line: string) => output(`[stack] ${line}`);
  const projectId = options.projectId ?? "tally-local";
  /** Workers per pipeline. */
  const workerCount = options.workers ?? 2;
  const tickMs = Math.round((options.tickSeconds ?? 5) * 1000);
  const dataDir = prepareDataDir(resolve(options.dataDir ?? ".tally"), !!options.persist);
  const resultsPath = join(dataDir, "results.duckdb");
  const firestoreExportDir = join(dataDir, "firestore-export");
  const coordinatorPort = options.port ?? 8080;
  if (coordinatorPort !== 0) await assertPortFree(coordinatorPort);

  // Everything started so far, so a failure half-way stops exactly that.
  const cleanups: Array<() => Promise<void>> = [];
  const undo = async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  };

  try {
    const started = Date.now();
    const importFrom = options.persist ? latestFirestoreExport(firestoreExportDir) : null;
    const emulators: Emulators = await startEmulators({
      dataDir: join(dataDir, "emulators"),
      projectId,
      onOutput: options.verbose ? (name, line) => output(`[${name} emulator] ${line}`) : undefined,
      firestoreArgs: importFrom ? [`--import-data=${importFrom}`] : [],
    });
    cleanups.push(() => emulators.stop());
    // `cleanups` runs in reverse order, so this happens after every handler stopped.
    if (options.persist)
      cleanups.push(async () => {
        const path = await exportFirestore(emulators.firestoreHost, projectId, firestoreExportDir);
        // Only the newest export is ever imported; older ones would just pile up.
        const keep = latestFirestoreExport(firestoreExportDir);
        for (const d of readdirSync(firestoreExportDir))
          if (d.startsWith("firestore_export_") && keep && !keep.includes(`/${d}/`))
            rmSync(join(firestoreExportDir, d), { recursive: true, force: true });
        say(`Firestore data exported to ${path}`);
      });
    say(
      `emulators: pubsub ${emulators.pubsubHost} (pid ${emulators.pids.pubsub}), firestore ${emulators.firestoreHost} (pid ${emulators.pids.firestore})${importFrom ? `, Firestore data imported from ${importFrom}` : ""} in ${Date.now() - started} ms`,
    );

    const delivery = resolveDelivery(options);
    const handlerEnv: Record<string, string> = {
      ...inheritedEnv(),
      GOOGLE_CLOUD_PROJECT: projectId,
      FIRESTORE_EMULATOR_HOST: emulators.firestoreHost,
      PUBSUB_EMULATOR_HOST: emulators.pubsubHost,
      METADATA_SERVER_DETECTION: "none",
      TALLY_PREFIX: options.prefix ?? "tally",
      TALLY_SINK: "duckdb",
      TALLY_DUCKDB_PATH: resultsPath,
      TALLY_LEASE_SECONDS: String(delivery.leaseSeconds),
      TALLY_ACK_DEADLINE_SECONDS: String(delivery.ackDeadlineSeconds),
      TALLY_MAX_DELIVERY_ATTEMPTS: String(delivery.maxDeliveryAttempts),
      TALLY_MAX_ITEM_ATTEMPTS: String(delivery.maxItemAttempts),
      TALLY_WORKER_TIMEOUT_SECONDS: String(delivery.workerTimeoutSeconds),
      TALLY_MIN_BACKOFF_SECONDS: String(delivery.minimumBackoffSeconds),
      TALLY_MAX_BACKOFF_SECONDS: String(delivery.maximumBackoffSeconds),
      // Each worker process takes its share of a pipeline's ratePerSecond (issue #17 §2).
      TALLY_WORKER_MAX_INSTANCES: String(workerCount),
      ...(options.staleSubmissionSeconds !== undefined && {
        TALLY_STALE_SUBMISSION_SECONDS: String(options.staleSubmissionSeconds),
      }),
      ...(options.stalePendingSeconds !== undefined && {
        TALLY_STALE_PENDING_SECONDS: String(options.stalePendingSeconds),
      }),
      ...(options.staleFinalizingSeconds !== undefined && {
        TALLY_STALE_FINALIZING_SECONDS: String(options.staleFinalizingSeconds),
      }),
      ...(options.pipelineDelivery && {
        TALLY_PIPELINE_DELIVERY: JSON.stringify(options.pipelineDelivery),
      }),
      ...(options.verbose && { TALLY_LOG_LEVEL: "DEBUG" }),
      ...options.env,
    };
    // The handlers read this same environment, so this is the topology they run with.
    const config = loadConfig(handlerEnv);
    const topology = config.topology;

    // The client libraries would otherwise probe for a GCE metadata server (and warn) on loopback.
    process.env.METADATA_SERVER_DETECTION ??= "none";
    const pubsub = new PubSub({ projectId, apiEndpoint: emulators.pubsubHost, emulatorMode: true });
    cleanups.push(() => pubsub.close());
    await provisionTopics(pubsub, topology);

    const hooks = {
      onLine: (name: string, line: string) => {
        options.onLog?.(name, line);
        if (options.quiet) return;
        const shown = formatLogLine(name, line, { verbose: !!options.verbose });
        if (shown !== null) output(shown);
      },
      onEvent: (message: string) => output(`[supervisor] ${message}`),
    };
    const makeProcess = (
      name: string,
      component: Component,
      port: number,
      own: Record<string, string> = {},
    ) =>
      new SupervisedProcess(
        { name, component, port, env: { ...handlerEnv, ...own, ...options.componentEnv?.[component] } },
        hooks,
      );
    const coordinator = makeProcess("coordinator", "coordinator", coordinatorPort || (await freePort()));
    // One group per pipeline, numbered across groups ("worker 1" … "worker N·P"); each worker serves
    // only its pipeline, as its deployed function does.
    const workers: SupervisedProcess[] = [];
    const groups: { topology: PipelineTopology; workers: SupervisedProcess[] }[] = [];
    for (const x of topology.pipelines) {
      const group: SupervisedProcess[] = [];
      for (let i = 1; i <= workerCount; i++) {
        const w = makeProcess(`worker ${workers.length + 1}`, "worker", await freePort(), {
          TALLY_WORKER_PIPELINE: x.pipeline,
        });
        group.push(w);
        workers.push(w);
      }
      groups.push({ topology: x, workers: group });
    }
    // Coordinator port + 2 when it is free (8082 by default: what `tally reconcile` calls without
    // --reconciler-url); any free port otherwise.
    const reconcilerPort =
      coordinatorPort !== 0 && (await portIsFree(coordinatorPort + 2))
        ? coordinatorPort + 2
        : await freePort();
    const reconciler = makeProcess("reconciler", "reconciler", reconcilerPort);
    const all = [coordinator, ...workers, reconciler];

    const frontDoors = new Map<string, FrontDoor>();
    for (const g of groups) {
      const door = await startFrontDoor({
        backends: () => g.workers.filter((w) => w.live).map((w) => ({ name: w.name, url: w.url })),
        onError: options.verbose ? (m) => output(`[front door ${g.topology.pipeline}] ${m}`) : undefined,
      });
      frontDoors.set(g.topology.pipeline, door);
      cleanups.push(() => door.close());
    }
    const doorOf = (pipeline: string) => frontDoors.get(pipeline)!;
    // Handlers stop (gracefully) before the front door closes: a worker's answers to the deliveries
    // it releases on SIGTERM still reach Pub/Sub.
    const handlersStop = cleanups.length;
    cleanups.push(async () => {
      await Promise.all(all.map((p) => p.stop()));
    });

    const handlersStarted = Date.now();
    await Promise.all(all.map((p) => p.start()));
    await Promise.all(all.map((p) => answers(p)));
    say(`${all.length} handler processes answering in ${Date.now() - handlersStarted} ms`);

    // Subscriptions last: the emulator starts pushing as soon as one exists.
    const pushConcurrency = options.pushConcurrency ?? 0;
    await provisionSubscriptions(
      pubsub,
      topology,
      projectId,
      {
        workers: Object.fromEntries(
          groups.map((g) => [g.topology.pipeline, `${doorOf(g.topology.pipeline).url}/`]),
        ),
        deadLetter: `${reconciler.url}${topology.deadLetterPath}`,
      },
      { relayWork: pushConcurrency > 0 },
    );
    for (const g of groups) {
      const x = g.topology;
      const d = x.delivery;
      say(
        `pipeline ${x.pipeline}: ${x.workTopic} → ${x.workSubscription} (${pushConcurrency > 0 ? "relayed" : "push"} to ${doorOf(x.pipeline).url}/ → ${g.workers.map((w) => w.name).join(", ")}; ack ${d.ackDeadlineSeconds} s, backoff ${d.minimumBackoffSeconds}–${d.maximumBackoffSeconds} s, dead-letter after ${d.maxDeliveryAttempts})`,
      );
    }
    say(
      `dead letters: ${topology.deadLetterTopic} → ${topology.deadLetterSubscription} (push ${reconciler.url}${topology.deadLetterPath})`,
    );

    const pipelines: LocalPipeline[] = groups.map((g) => {
      const x = g.topology;
      const pushRelay =
        pushConcurrency > 0
          ? startPushRelay({
              emulatorHost: emulators.pubsubHost,
              projectId,
              subscription: x.workSubscription,
              endpoint: `${doorOf(x.pipeline).url}/`,
              concurrency: pushConcurrency,
              ackDeadlineSeconds: x.delivery.ackDeadlineSeconds,
              onError: options.verbose ? (m) => output(`[push relay ${x.pipeline}] ${m}`) : undefined,
            })
          : null;
      if (pushRelay) {
        // Runs after the handlers stopped (cleanups run in reverse): their last answers are still relayed.
        cleanups.splice(handlersStop, 0, () => pushRelay.stop());
        say(
          `push relay: ${x.workSubscription} is pulled and pushed to its front door, ${pushConcurrency} requests at a time`,
        );
      }
      return {
        pipeline: x.pipeline,
        topology: x,
        frontDoor: doorOf(x.pipeline),
        workers: g.workers,
        pushRelay,
      };
    });

    const reconcileUrl = `${reconciler.url}${topology.reconcilePath}`;
    const scheduler =
      options.scheduler === false
        ? null
        : startSchedulerLoop({
            reconcileUrl,
            tickMs,
            onFailure: (m) => output(`[scheduler] WARNING reconcile failed: ${m}`),
          });
    if (scheduler) cleanups.push(() => scheduler.stop());

    const urls = {
      coordinator: coordinator.url,
      dashboard: `${coordinator.url}/`,
      reconciler: reconciler.url,
      frontDoors: Object.fromEntries(pipelines.map((x) => [x.pipeline, x.frontDoor.url])),
      workers: workers.map((w) => w.url),
    };
    const pipelineOfWorker = new Map(
      pipelines.flatMap((x) => x.workers.map((w) => [w, x.pipeline] as const)),
    );
    const readyLines = formatReadyLines({
      coordinator: urls.coordinator,
      dashboard: urls.dashboard,
      workers: workers.map((w) => ({ url: w.url, pid: w.pid!, pipeline: pipelineOfWorker.get(w) })),
      reconciler: { url: reconciler.url, pid: reconciler.pid! },
      results: resultsPath,
    });

    const workerAt = (n: number) => {
      const w = workers[n - 1];
      if (!w) throw new RangeError(`there is no worker ${n} (workers are 1..${workers.length})`);
      return w;
    };
    let stopping: Promise<void> | null = null;
    return {
      urls,
      get pids(): LocalStackPids {
        return {
          coordinator: coordinator.pid,
          workers: workers.map((w) => w.pid),
          reconciler: reconciler.pid,
          emulators: [emulators.pids.pubsub, emulators.pids.firestore],
        };
      },
      resultsPath,
      dataDir,
      projectId,
      emulators: { pubsubHost: emulators.pubsubHost, firestoreHost: emulators.firestoreHost },
      config,
      handlerEnv,
      readyLines,
      coordinator,
      workers,
      reconciler,
      pipelines,
      pipeline: (name) => {
        const found = pipelines.find((x) => x.pipeline === name);
        if (!found)
          throw new RangeError(
            `no pipeline ${name} (pipelines: ${pipelines.map((x) => x.pipeline).join(", ")})`,
          );
        return found;
      },
      scheduler,
      killWorker: (n, signal = "SIGKILL") => workerAt(n).kill(signal),
      waitForWorkerRestart: (n, previousPid, timeoutMs) => workerAt(n).waitForRestart(previousPid, timeoutMs),
      reconcileNow: async () => {
        const res = await fetch(reconcileUrl, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: "{}",
        });
        const text = await res.text();
        if (!res.ok) throw new Error(`POST ${reconcileUrl} answered ${res.status}: ${text}`);
        return text ? JSON.parse(text) : null;
      },
      stop: () => {
        stopping ??= undo();
        return stopping;
      },
    };
  } catch (err) {
    await undo();
    throw err;
  }
}

/**
 * The data folder: wiped on start unless `persist`. Only a folder the stack created (it carries a
 * marker file) or an empty one is ever wiped, so a mistyped `--data` cannot delete someone's files.
 */
function prepareDataDir(dir: string, persist: boolean): string {
  if (existsSync(dir)) {
    if (!isStackDataDir(dir))
      throw new UsageError(
        `--data ${dir} is not empty and was not created by the Tally local stack; choose another folder`,
      );
    if (!persist) rmSync(dir, { recursive: true, force: true });
  }
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, dataMarker),
    "Created by the Tally local stack (npm start). Wiped on the next start unless --persist.\n",
  );
  return dir;
}

/** Empty, marked as ours, or holding only folders marked as ours (e.g. `.tally/demo`). */
function isStackDataDir(dir: string): boolean {
  const entries = readdirSync(dir, { withFileTypes: true });
  if (entries.some((e) => e.name === dataMarker)) return true;
  return entries.every((e) => e.isDirectory() && existsSync(join(dir, e.name, dataMarker)));
}

function latestFirestoreExport(dir: string): string | null {
  if (!existsSync(dir)) return null;
  const exports = readdirSync(dir)
    .filter((d) => d.startsWith("firestore_export_"))
    .sort();
  const last = exports.at(-1);
  return last ? join(dir, last, `${last}.overall_export_metadata`) : null;
}

/** The parent's environment minus anything that would point a handler elsewhere. */
function inheritedEnv(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined) continue;
    if (
      k.startsWith("TALLY_") ||
      k.endsWith("_EMULATOR_HOST") ||
      k === "GOOGLE_CLOUD_PROJECT" ||
      k === "PORT"
    )
      continue;
    out[k] = v;
  }
  return out;
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolvePort) => {
    const srv = createServer();
    srv.once("error", () => resolvePort(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolvePort(true)));
  });
}

async function assertPortFree(port: number): Promise<void> {
  await new Promise<void>((resolvePort, reject) => {
    const srv = createServer();
    srv.once("error", (err: NodeJS.ErrnoException) =>
      reject(
        new UsageError(
          err.code === "EADDRINUSE"
            ? `--port ${port}: the port is already in use (is another stack running? pass --port 0 for any free port)`
            : `--port ${port}: ${err.message}`,
        ),
      ),
    );
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolvePort()));
  });
}

/** Any HTTP answer proves a process serves requests; the coordinator must also pass its health check. */
async function answers(p: SupervisedProcess): Promise<void> {
  await waitFor(
    `${p.name} to answer on ${p.url}/healthz`,
    async () => {
      const res = await fetch(`${p.url}/healthz`, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      return p.component !== "coordinator" || res.ok;
    },
    30_000,
    100,
  );
}
