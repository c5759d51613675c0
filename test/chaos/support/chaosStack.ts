// The local stack as the chaos suite runs it: the real stack (local/localStack.ts: emulators,
// coordinator, workers behind the front door, reconciler, scheduler loop, DuckDB) with short leases
// and ticks, every log line indexed, and a chaos proxy on each push path, so scenarios can drop or
// refuse deliveries and see what each message was answered:
//   work subscription → push relay → work proxy → front door → workers
//   dead-letter subscription (emulator push) → dead-letter proxy → reconciler /dead-letter
// The emulator pushes only two messages at a time, so the work subscription is relayed, as the
// stack does with pushConcurrency (local/pushRelay.ts: same envelope; a non-2xx nacks, and the
// subscription's retry and dead-letter policies apply), but to the proxy instead of the front door.
// Optionally a second reconciler process, for overlapping ticks (F3).
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PubSub } from "@google-cloud/pubsub";
import { freePort } from "../../../local/emulators";
import { type LocalStack, startLocalStack } from "../../../local/localStack";
import { SupervisedProcess } from "../../../local/processSupervisor";
import { startPushRelay } from "../../../local/pushRelay";
import { waitFor } from "../../../local/waitFor";
import { check } from "../scenarios/scenario";
import { ChaosApi } from "./chaosApi";
import { type ChaosProxy, startChaosProxy } from "./chaosProxy";
import { LogIndex } from "./logEvents";

/** Concurrent pushes of the work subscription (Cloud Pub/Sub scales push with the endpoint's ack rate). */
export const pushConcurrency = 16;

/**
 * Short leases and ticks so every recovery path runs within seconds (DESIGN.md §7 ranges hold).
 * The staleness thresholds stay long: a client re-sending after a coordinator restart must not
 * find its batch failed as an incomplete submission, and a backlog that merely waits its turn on a
 * busy machine must not be republished wholesale by the stale-pending sweep.
 */
export const chaosSettings = {
  leaseSeconds: 6,
  tickSeconds: 1,
  minimumBackoffSeconds: 1,
  maximumBackoffSeconds: 2,
  ackDeadlineSeconds: 60,
  maxDeliveryAttempts: 6,
  maxItemAttempts: 5,
  staleFinalizingSeconds: 5,
  staleSubmissionSeconds: 300,
  stalePendingSeconds: 900,
} as const;
export type ChaosSettings = typeof chaosSettings;

export interface ChaosStackOptions {
  /** Names the stack in output and batch ids. */
  name: string;
  workers?: number;
  /** Extra environment for the worker processes only (fault injection). */
  workerEnv?: Record<string, string>;
  /** Start a second reconciler process (same configuration) beside the stack's own. */
  secondReconciler?: boolean;
  /** Print the stack's own lines and warnings (the soak runner shows them; tests keep them for failures). */
  echo?: (line: string) => void;
}

export interface ChaosStack {
  name: string;
  stack: LocalStack;
  api: ChaosApi;
  logs: LogIndex;
  /** Between the emulator and the workers' front door. */
  workProxy: ChaosProxy;
  /** Between the emulator and the reconciler's dead-letter endpoint. */
  deadLetterProxy: ChaosProxy;
  /** A client of the stack's Pub/Sub emulator (publishing duplicates and poison). */
  pubsub: PubSub;
  settings: ChaosSettings;
  /** Reconcile URLs: the stack's reconciler first, then the second one when started. */
  reconcileUrls: string[];
  /**
   * The coordinator's one-shot kill token (functions/faults.ts, TALLY_FAULT_COORDINATOR_KILL_TOKEN):
   * write a KillToken here and the coordinator SIGKILLs itself after storing that chunk of that batch.
   */
  coordinatorKillToken: string;
  /** A new batch id, unique to this stack and call (a scenario may run more than once). */
  batchId(name: string): string;
  /** The last lines of the stack's own output and of every warning/error, for failure messages. */
  recentOutput(): string[];
  stop(): Promise<void>;
}

export async function startChaosStack(opts: ChaosStackOptions): Promise<ChaosStack> {
  const logs = new LogIndex();
  const recent: string[] = [];
  const remember = (line: string) => {
    recent.push(line);
    if (recent.length > 300) recent.shift();
  };
  const dataDir = mkdtempSync(join(tmpdir(), `tally-chaos-${opts.name}-`));
  const runId = randomUUID().slice(0, 6);
  const coordinatorKillToken = join(dataDir, "coordinator-kill-token.json");
  let batches = 0;
  const s = chaosSettings;
  const stack = await startLocalStack({
    port: 0,
    workers: opts.workers ?? 2,
    tickSeconds: s.tickSeconds,
    dataDir: join(dataDir, "data"),
    projectId: `chaos-${opts.name}`.slice(0, 30),
    delivery: {
      leaseSeconds: s.leaseSeconds,
      ackDeadlineSeconds: s.ackDeadlineSeconds,
      minimumBackoffSeconds: s.minimumBackoffSeconds,
      maximumBackoffSeconds: s.maximumBackoffSeconds,
      maxDeliveryAttempts: s.maxDeliveryAttempts,
      maxItemAttempts: s.maxItemAttempts,
    },
    staleFinalizingSeconds: s.staleFinalizingSeconds,
    staleSubmissionSeconds: s.staleSubmissionSeconds,
    stalePendingSeconds: s.stalePendingSeconds,
    pushConcurrency,
    componentEnv: {
      coordinator: { TALLY_FAULT_COORDINATOR_KILL_TOKEN: coordinatorKillToken },
      ...(opts.workerEnv ? { worker: opts.workerEnv } : {}),
    },
    quiet: true,
    output: (line) => {
      remember(line);
      opts.echo?.(line);
    },
    onLog: (source, line) => {
      logs.add(source, line);
      if (/"severity":"(WARNING|ERROR|CRITICAL)"/.test(line)) remember(`[${source}] ${line}`);
    },
  });

  // Stopped in this order: the handlers (their last answers still pass the proxies), then what
  // the chaos stack added, then the data folder.
  const cleanups: Array<() => Promise<void>> = [];
  const stop = async () => {
    await stack.stop().catch(() => undefined);
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    const topology = stack.config.topology;
    const pubsub = new PubSub({
      projectId: stack.projectId,
      apiEndpoint: stack.emulators.pubsubHost,
      emulatorMode: true,
    });
    cleanups.push(() => pubsub.close());

    // The scenarios submit `demo` items: the proxy sits in front of that pipeline's unit.
    const demo = stack.pipeline("demo");
    const workProxy = await startChaosProxy({ target: demo.frontDoor.url });
    cleanups.push(() => workProxy.close());
    const deadLetterProxy = await startChaosProxy({ target: stack.urls.reconciler });
    cleanups.push(() => deadLetterProxy.close());
    // The stack relays demo's work subscription to its front door (pushConcurrency); relay it to the
    // proxy instead: same subscription, same envelope, same concurrency.
    check(demo.pushRelay, "the chaos stack needs the local stack's push relay (pushConcurrency > 0)");
    await demo.pushRelay.stop();
    const relay = startPushRelay({
      emulatorHost: stack.emulators.pubsubHost,
      projectId: stack.projectId,
      subscription: demo.topology.workSubscription,
      endpoint: `${workProxy.url}/`,
      concurrency: pushConcurrency,
      ackDeadlineSeconds: s.ackDeadlineSeconds,
      onError: (m) => remember(`[push relay] ${m}`),
    });
    cleanups.push(() => relay.stop());
    await pubsub
      .subscription(topology.deadLetterSubscription)
      .modifyPushConfig({ pushEndpoint: `${deadLetterProxy.url}${topology.deadLetterPath}` });

    const reconcileUrls = [`${stack.urls.reconciler}${topology.reconcilePath}`];
    if (opts.secondReconciler) {
      const second = new SupervisedProcess(
        { name: "reconciler 2", component: "reconciler", port: await freePort(), env: stack.handlerEnv },
        {
          onLine: (name, line) => logs.add(name, line),
          onEvent: (message) => remember(`[supervisor] ${message}`),
        },
      );
      cleanups.push(() => second.stop());
      await second.start();
      await waitFor(
        "reconciler 2 to answer",
        async () => (await fetch(`${second.url}/healthz`, { signal: AbortSignal.timeout(2_000) })).ok,
        30_000,
        100,
      );
      reconcileUrls.push(`${second.url}${topology.reconcilePath}`);
    }

    return {
      name: opts.name,
      stack,
      api: new ChaosApi(stack.urls.coordinator),
      logs,
      workProxy,
      deadLetterProxy,
      pubsub,
      settings: s,
      reconcileUrls,
      coordinatorKillToken,
      batchId: (name) => `chaos-${runId}-${++batches}-${name}`,
      recentOutput: () => [...recent],
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
