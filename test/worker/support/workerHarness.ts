// Shared set-up for the worker tests: configuration and ports on the emulators (a fresh project id
// per test file), an in-process worker served by the Functions Framework's test server, a
// push-subscription topology like the deployed one (ack deadline, retry policy, dead-letter policy)
// with a pull subscription on the dead-letter topic to observe dead letters, and batches created
// directly through the Ledger port.
import { mkdtempSync, rmSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Firestore } from "@google-cloud/firestore";
import { http } from "@google-cloud/functions-framework";
import { getTestServer } from "@google-cloud/functions-framework/testing";
import type { PubSub, Subscription } from "@google-cloud/pubsub";
import { FirestoreLedger } from "../../../functions/adapters/firestoreLedger";
import { PubSubWorkQueue } from "../../../functions/adapters/pubsubWorkQueue";
import { createResultSink } from "../../../functions/adapters/resultSinkFactory";
import { loadConfig, type TallyConfig } from "../../../functions/config";
import { createLogger } from "../../../functions/core/logger";
import type { NewItem } from "../../../functions/core/model";
import { type ItemRef, systemClock } from "../../../functions/core/ports";
import {
  createWorkerHandler,
  type WorkerDeps,
  type WorkerHandler,
  type WorkerHandlerOptions,
} from "../../../functions/handlers/worker";
import { answerFrameworkErrorsWithJson } from "../../../functions/http/frameworkErrors";
import { emulatorHosts } from "../../support/cloud";
import { harnessWorkSubscription, harnessWorkTopic } from "../../support/harnessTopics";

export type LogLine = Record<string, unknown> & { event: string; severity: string; message: string };

/** Settings small enough for tests: short lease, 1–2 s backoff, 5 delivery attempts. */
export function workerEnv(projectId: string, dataDir: string, over: Record<string, string> = {}) {
  const { pubsubHost, firestoreHost } = emulatorHosts();
  return {
    GOOGLE_CLOUD_PROJECT: projectId,
    TALLY_PREFIX: "wt",
    TALLY_SINK: "duckdb",
    TALLY_DUCKDB_PATH: join(dataDir, "results.duckdb"),
    TALLY_LEASE_SECONDS: "30",
    TALLY_ACK_DEADLINE_SECONDS: "60",
    TALLY_WORKER_TIMEOUT_SECONDS: "60",
    TALLY_MAX_DELIVERY_ATTEMPTS: "5",
    TALLY_MAX_ITEM_ATTEMPTS: "3",
    TALLY_MIN_BACKOFF_SECONDS: "1",
    TALLY_MAX_BACKOFF_SECONDS: "2",
    PUBSUB_EMULATOR_HOST: pubsubHost,
    FIRESTORE_EMULATOR_HOST: firestoreHost,
    METADATA_SERVER_DETECTION: "none",
    ...over,
  };
}

export function tempDataDir(): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), "tally-worker-"));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export async function buildDeps(
  config: TallyConfig,
  db: Firestore,
  pubsub: PubSub,
): Promise<WorkerDeps & { logs: LogLine[]; ledger: FirestoreLedger; close(): Promise<void> }> {
  const logs: LogLine[] = [];
  const ledger = new FirestoreLedger(db);
  const sink = await createResultSink(config);
  return {
    config,
    ledger,
    queue: new PubSubWorkQueue(pubsub, () => harnessWorkTopic(config.topology)),
    sink,
    clock: systemClock,
    log: createLogger({
      component: "test",
      sink: (line) => logs.push(JSON.parse(line)),
      minSeverity: "DEBUG",
    }),
    logs,
    close: () => sink.close(),
  };
}

let served = 0;
export interface ServedWorker {
  handler: WorkerHandler;
  url: string;
  close(): Promise<void>;
}

/**
 * Serves a worker handler through the Functions Framework (as deployed) on a loopback port, with
 * the framework's own refusals (malformed bodies, …) answered in JSON as functions/index.ts arranges.
 */
export async function serveWorker(deps: WorkerDeps, opts: WorkerHandlerOptions = {}): Promise<ServedWorker> {
  const handler = createWorkerHandler(deps, opts);
  const name = `worker-test-${process.pid}-${++served}`;
  http(name, handler);
  answerFrameworkErrorsWithJson(deps.log);
  const server: Server = getTestServer(name);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  return {
    handler,
    url,
    close: async () => {
      await handler.shutdown();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface PushTopology {
  deadLetters: Subscription;
  close(): Promise<void>;
}

/**
 * The work topic, its dead-letter topic, the push subscription to `endpoint` with the delivery
 * settings of the configuration's topology, and a pull subscription on the dead-letter topic.
 */
export async function provisionPush(
  pubsub: PubSub,
  config: TallyConfig,
  endpoint: string,
): Promise<PushTopology> {
  const t = config.topology;
  const d = t.delivery;
  const [work] = await pubsub.createTopic(harnessWorkTopic(t));
  const [dead] = await pubsub.createTopic(t.deadLetterTopic);
  const [deadLetters] = await dead.createSubscription(`${t.deadLetterTopic}-observer`);
  const [push] = await work.createSubscription(harnessWorkSubscription(t), {
    pushConfig: { pushEndpoint: endpoint },
    ackDeadlineSeconds: d.ackDeadlineSeconds,
    retryPolicy: {
      minimumBackoff: { seconds: d.minimumBackoffSeconds },
      maximumBackoff: { seconds: d.maximumBackoffSeconds },
    },
    deadLetterPolicy: { deadLetterTopic: dead.name, maxDeliveryAttempts: d.maxDeliveryAttempts },
  });
  return {
    deadLetters,
    close: async () => {
      await push.delete().catch(() => {});
      await deadLetters.delete().catch(() => {});
    },
  };
}

let batchSeq = 0;
/** Creates a running batch through the Ledger port and publishes its doorbells. */
export async function submitBatch(
  deps: WorkerDeps,
  pipeline: string,
  items: NewItem[],
  opts: { batchId?: string; publish?: boolean } = {},
): Promise<{ batchId: string; refs: ItemRef[] }> {
  const batchId = opts.batchId ?? `b${++batchSeq}-${Date.now().toString(36)}`;
  const now = Date.now();
  await deps.ledger.createBatch(
    { batchId, pipeline, failureThreshold: 0.05, dependsOn: [], contentHash: batchId, total: items.length },
    now,
  );
  await deps.ledger.appendItems(batchId, 0, items, now, { publishable: true });
  await deps.ledger.advanceCursor(batchId, items.length, now);
  await deps.ledger.markSubmitted(batchId, items.length, now);
  const refs = items.map((i) => ({ batchId, itemId: i.itemId, generation: 1 }));
  if (opts.publish ?? true) await deps.queue.publish(pipeline, refs);
  return { batchId, refs };
}

export function testConfig(
  projectId: string,
  dataDir: string,
  over: Record<string, string> = {},
): TallyConfig {
  return loadConfig(workerEnv(projectId, dataDir, over));
}

/** A wrapped push envelope, as Pub/Sub sends it. */
export function envelope(
  attributes: Record<string, string>,
  messageId = `m-${Math.random().toString(36).slice(2)}`,
) {
  return {
    message: { attributes, data: "", messageId, publishTime: new Date().toISOString() },
    subscription: "projects/p/subscriptions/s",
  };
}

export async function post(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: unknown }> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, body: parsed };
}

/**
 * Sets process environment variables for a test file (the worker reads some of them, e.g.
 * TALLY_HTTP_PIPELINES, from the process); the returned function puts the old values back.
 */
export function setProcessEnv(vars: Record<string, string>): () => void {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  return () => {
    for (const [key, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  };
}

/** Anything a test file starts and closes (servers, topologies, clients). */
type Closable = { close(): Promise<unknown> | unknown } | undefined | null;

/**
 * A test file's teardown: closes what it started, in order (an entry is undefined when the
 * beforeAll failed before starting it), then the emulator clients and the data folder.
 */
export async function tearDown(
  started: Closable[],
  clients: { pubsub: PubSub; db: Firestore; data: { remove(): void } },
): Promise<void> {
  for (const part of started) await part?.close();
  await clients.pubsub.close();
  await clients.db.terminate();
  clients.data.remove();
}
