// The whole stack in one test process, on the real emulators, for the batch-lifecycle scenarios of
// issue #15: a fresh project; the Firestore ledger; the work topic; the DuckDB sink behind a wrapper
// that can fail exports on demand; the coordinator served twice (the Functions Framework, as
// deployed, for JSON and operator calls; the plain streaming server for NDJSON streams held open by
// the test); the worker and the reconciler served by the Functions Framework. Doorbells reach the
// worker through a pump the test controls (a streaming pull that POSTs each message to the worker
// as a push subscription would, acking on 2xx): it records every delivery and can hold a batch's
// doorbells. The reconciler never ticks by itself: `tick()` is one Cloud Scheduler call, and its
// clock can be moved forward (`reconcilerClock.offsetMs`) to step over a backoff.
//
// Staleness settings come from the environment (TALLY_STALE_SUBMISSION_SECONDS etc.), as deployed.
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { request as httpRequest, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { http } from "@google-cloud/functions-framework";
import { getTestServer } from "@google-cloud/functions-framework/testing";
import type { Message } from "@google-cloud/pubsub";
import { expect } from "vitest";
import { DuckDBResultSink, queryResults } from "../../../functions/adapters/duckdbResultSink";
import { FirestoreLedger } from "../../../functions/adapters/firestoreLedger";
import { PubSubWorkQueue } from "../../../functions/adapters/pubsubWorkQueue";
import { loadConfig } from "../../../functions/config";
import { PermanentError } from "../../../functions/core/errors";
import { createLogger } from "../../../functions/core/logger";
import type { ResultRow } from "../../../functions/core/model";
import type {
  ExportResult,
  ExportTarget,
  ItemRef,
  ResultSink,
  WorkQueue,
} from "../../../functions/core/ports";
import { systemClock } from "../../../functions/core/ports";
import type { CrashSwitch } from "../../../functions/faults";
import { type CoordinatorOptions, createCoordinatorHandler } from "../../../functions/handlers/coordinator";
import { createReconcilerHandler } from "../../../functions/handlers/reconciler/reconcilerHandler";
import { createWorkerHandler } from "../../../functions/handlers/worker";
import { startStreamingServer } from "../../../functions/http/streamingServer";
import { definePipeline } from "../../../functions/pipelines/definePipeline";
import { demoPayload } from "../../../functions/pipelines/demo";
import { getPipeline } from "../../../functions/pipelines/registry";
import type { HandlerDeps } from "../../../functions/runtime";
import { checkLedgerInvariant, formatInvariantReport, type InvariantReport } from "../../../local/invariant";
import { testFirestore, testPubSub, uniqueProjectId, waitFor } from "../../support/cloud";
import { harnessWorkTopic } from "../../support/harnessTopics";

export type LogLine = Record<string, unknown> & { event: string; severity: string; message: string };

export interface HttpAnswer {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are asserted field by field
  body: any;
}

/** The DuckDB sink, failing the next exports on demand: before anything is written, or after the commit. */
export class FaultySink implements ResultSink {
  /** One entry per coming export: "before" throws before the inner export, "after" throws after it committed. */
  failures: Array<"before" | "after"> = [];
  /** When true every export fails before writing (a permanent fault) until switched off. */
  failAlways = false;
  /** Every export asked for, with what became of it. */
  calls: Array<{ batchId: string; generation: number; at: number; outcome: "ok" | "before" | "after" }> = [];
  constructor(readonly inner: DuckDBResultSink) {}
  async exportBatch(target: ExportTarget, rows: AsyncIterable<ResultRow[]>): Promise<ExportResult> {
    const { batchId, generation } = target;
    const fault = this.failAlways ? "before" : this.failures.shift();
    const call = { batchId, generation, at: Date.now(), outcome: fault ?? ("ok" as const) };
    this.calls.push(call);
    if (fault === "before") throw new Error(`injected sink fault: export of ${batchId} refused`);
    const result = await this.inner.exportBatch(target, rows);
    if (fault === "after")
      throw new Error(`injected sink fault: export of ${batchId} committed, answer lost`);
    return result;
  }
  countRows(batchId: string) {
    return this.inner.countRows(batchId);
  }
  get operations() {
    return this.inner.operations;
  }
  close() {
    return this.inner.close();
  }
}

/** The coordinator's queue: publishes, unless the test's hook holds or drops a publish. */
export class HookedQueue implements WorkQueue {
  /** Runs before each publish; "drop" loses the doorbells (the publish "succeeds"), as a lost publish. */
  hook: ((refs: ItemRef[]) => Promise<"publish" | "drop"> | "publish" | "drop") | null = null;
  dropped: ItemRef[] = [];
  constructor(readonly inner: PubSubWorkQueue) {}
  async publish(pipeline: string, refs: ItemRef[]): Promise<void> {
    const decision = this.hook ? await this.hook(refs) : "publish";
    if (decision === "drop") {
      this.dropped.push(...refs);
      return;
    }
    await this.inner.publish(pipeline, refs);
  }
  get published() {
    return this.inner.published;
  }
}

/** A gate a hook waits on: `reached` resolves when something arrives at it, `open()` lets it go on. */
export function gate() {
  let arrive!: () => void;
  let release!: () => void;
  const reached = new Promise<void>((r) => (arrive = r));
  const opened = new Promise<void>((r) => (release = r));
  let hits = 0;
  return {
    reached,
    get hits() {
      return hits;
    },
    async pass(): Promise<void> {
      hits++;
      arrive();
      await opened;
    },
    open: () => release(),
  };
}

export interface Delivery extends ItemRef {
  at: number;
  status: number;
}

export interface Execution {
  batchId: string;
  itemId: string;
  attempt: number;
  at: number;
}

export interface LifecycleOptions {
  /** Environment of every handler (staleness settings …), on top of the project and prefix. */
  env?: Record<string, string>;
  coordinator?: Omit<CoordinatorOptions, "crashAt">;
  crashAt?: CrashSwitch;
  /** Doorbells the pump delivers at once. */
  pumpConcurrency?: number;
}

export async function startLifecycle(opts: LifecycleOptions = {}) {
  const projectId = uniqueProjectId("life");
  const prefix = `l${randomUUID().slice(0, 6)}`;
  const config = loadConfig({
    GOOGLE_CLOUD_PROJECT: projectId,
    TALLY_PREFIX: prefix,
    // Headroom between ledger attempts and Pub/Sub deliveries, as the topology requires.
    TALLY_MAX_ITEM_ATTEMPTS: "3",
    TALLY_MAX_DELIVERY_ATTEMPTS: "5",
    ...opts.env,
  });
  const db = testFirestore(projectId);
  const pubsub = testPubSub(projectId);
  const ledger = new FirestoreLedger(db);
  const dataDir = mkdtempSync(join(tmpdir(), "tally-lifecycle-"));
  const resultsPath = join(dataDir, "results.duckdb");
  const sink = new FaultySink(new DuckDBResultSink(resultsPath));
  const logs: LogLine[] = [];
  const log = createLogger({ component: "lifecycle", sink: (line) => logs.push(JSON.parse(line)) });

  const [topic] = await pubsub.createTopic(harnessWorkTopic(config.topology));
  const [subscription] = await topic.createSubscription(`${harnessWorkTopic(config.topology)}-pump`, {
    ackDeadlineSeconds: 60,
  });
  const baseQueue = new PubSubWorkQueue(pubsub, () => harnessWorkTopic(config.topology));
  const coordinatorQueue = new HookedQueue(baseQueue);
  const reconcilerClock = { offsetMs: 0, now: () => Date.now() + reconcilerClock.offsetMs };
  const common = { config, ledger, sink, log };
  const coordinatorDeps: HandlerDeps = { ...common, queue: coordinatorQueue, clock: systemClock };
  const workerDeps: HandlerDeps = { ...common, queue: baseQueue, clock: systemClock };
  const reconcilerDeps: HandlerDeps = { ...common, queue: baseQueue, clock: reconcilerClock };

  // The demo pipeline's payload, run by a step the test can make fail permanently per item.
  const executions: Execution[] = [];
  const failing = { items: new Set<string>() };
  const controlled = definePipeline({
    name: "demo",
    payload: demoPayload,
    timeoutSeconds: 60,
    steps: [
      {
        name: "step-1",
        async run(p, _outputs, ctx) {
          executions.push({ batchId: ctx.batchId, itemId: ctx.itemId, attempt: ctx.attempt, at: Date.now() });
          if (failing.items.has(`${ctx.batchId}/${ctx.itemId}`))
            throw new PermanentError(`lifecycle test: ${ctx.itemId} fails`);
          return { value: p.value ?? null, attempt: ctx.attempt, steps: 1 };
        },
      },
    ],
  });

  let served = 0;
  const serve = async (handler: Parameters<typeof http>[1]) => {
    const name = `${prefix}-${++served}`;
    http(name, handler);
    const server: Server = getTestServer(name);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
  };

  const coordinatorHandler = createCoordinatorHandler(coordinatorDeps, {
    ...opts.coordinator,
    crashAt: opts.crashAt,
  });
  const coordinator = await serve(coordinatorHandler);
  const streaming = await startStreamingServer(coordinatorHandler, { log });
  const workerHandler = createWorkerHandler(workerDeps, {
    instanceId: `${prefix}-worker`,
    pipelines: (name) => (name === "demo" ? controlled : getPipeline(name)),
  });
  const worker = await serve(workerHandler);
  const reconciler = await serve(createReconcilerHandler(reconcilerDeps));

  // --- the pump: doorbells → worker ---------------------------------------------------------------
  const deliveries: Delivery[] = [];
  const doorbells: Array<ItemRef & { at: number }> = [];
  const sentinels = new Set<string>();
  /**
   * Batches whose doorbells are held (not delivered) until released. A held doorbell is acked at
   * once (held messages would otherwise fill the pull's flow control) and pushed on release.
   */
  const held = new Map<string, ItemRef[]>();
  const holding = new Set<string>();
  const pumpFailures: Error[] = [];
  const push = async (ref: ItemRef, messageId: string): Promise<number> => {
    let status = 0;
    try {
      const res = await fetch(`${worker.url}/`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          message: {
            attributes: { batchId: ref.batchId, itemId: ref.itemId, generation: String(ref.generation) },
            data: "",
            messageId,
            publishTime: new Date().toISOString(),
          },
          subscription: `projects/${projectId}/subscriptions/pump`,
        }),
      });
      status = res.status;
      await res.arrayBuffer();
    } catch (err) {
      pumpFailures.push(err as Error);
    }
    deliveries.push({ ...ref, at: Date.now(), status });
    return status;
  };
  const refOf = (m: Message): ItemRef => ({
    batchId: m.attributes.batchId!,
    itemId: m.attributes.itemId!,
    generation: Number(m.attributes.generation),
  });
  const deliver = async (m: Message) => {
    const status = await push(refOf(m), m.id);
    if (status >= 200 && status < 300) m.ack();
    else m.nack();
  };
  const flow = opts.pumpConcurrency ?? 20;
  const pump = pubsub.subscription(subscription.name, {
    flowControl: { maxMessages: flow, allowExcessMessages: false },
  });
  pump.on("message", (m: Message) => {
    if (m.attributes.sentinel) {
      sentinels.add(m.attributes.sentinel);
      m.ack();
      return;
    }
    const batchId = m.attributes.batchId!;
    doorbells.push({
      batchId,
      itemId: m.attributes.itemId!,
      generation: Number(m.attributes.generation),
      at: Date.now(),
    });
    if (holding.has(batchId)) {
      held.set(batchId, [...(held.get(batchId) ?? []), refOf(m)]);
      m.ack();
      return;
    }
    void deliver(m);
  });
  pump.on("error", (err: Error) => pumpFailures.push(err));

  const postJson = async (base: string, path: string, body?: unknown): Promise<HttpAnswer> => {
    const res = await fetch(`${base}${path}`, {
      method: "POST",
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // not JSON: kept as text, and the test says so
    }
    return { status: res.status, body: parsed };
  };

  const h = {
    projectId,
    config,
    ledger,
    sink,
    logs,
    resultsPath,
    coordinatorQueue,
    reconcilerClock,
    executions,
    failing,
    deliveries,
    doorbells,
    coordinatorDeps,
    workerHandler,
    urls: { coordinator: coordinator.url, streaming: streaming.url, worker: worker.url },
    pumpFailures,

    events(event: string, batchId?: string): LogLine[] {
      return logs.filter((l) => l.event === event && (batchId === undefined || l.batchId === batchId));
    },
    /** A call to the coordinator through the Functions Framework. */
    post: (path: string, body?: unknown) => postJson(coordinator.url, path, body),
    async get(path: string): Promise<HttpAnswer> {
      const res = await fetch(`${coordinator.url}${path}`);
      return { status: res.status, body: await res.json() };
    },
    /** One POST /reconcile whose actions may fail (500 reconcile_incomplete naming them). */
    tickRaw: () => postJson(reconciler.url, config.topology.reconcilePath),
    /** One POST /reconcile, as Cloud Scheduler sends it; asserted to succeed with no failed action. */
    async tick(): Promise<HttpAnswer> {
      const answer = await postJson(reconciler.url, config.topology.reconcilePath);
      expect(answer.status, JSON.stringify(answer.body)).toBe(200);
      expect(answer.body.errors, JSON.stringify(answer.body.errorSamples)).toBe(0);
      return answer;
    },
    hold(batchId: string) {
      holding.add(batchId);
    },
    /** Delivers what was held for the batch and stops holding it. */
    release(batchId: string) {
      holding.delete(batchId);
      const waiting = held.get(batchId) ?? [];
      held.delete(batchId);
      for (const ref of waiting) void push(ref, `held-${randomUUID()}`);
    },
    heldCount: (batchId: string) => held.get(batchId)?.length ?? 0,
    doorbellsFor: (batchId: string) => doorbells.filter((d) => d.batchId === batchId),
    /**
     * Publishes a sentinel on the work topic and waits until the pump has received it: what was
     * published before has had its chance to arrive (for absence checks), and every doorbell that
     * arrived before it was handed to the worker.
     */
    async doorbellsSettled(timeoutMs = 20_000): Promise<void> {
      const sentinel = randomUUID();
      await topic.publishMessage({ data: Buffer.alloc(0), attributes: { sentinel } });
      await waitFor(`the sentinel ${sentinel} on the work topic`, () => sentinels.has(sentinel), timeoutMs);
    },
    async batch(batchId: string) {
      return ledger.getBatch(batchId);
    },
    async waitForStatus(batchId: string, statuses: string[], timeoutMs = 30_000) {
      return waitFor(
        `batch ${batchId} to be ${statuses.join(" or ")}`,
        async () => {
          const b = await ledger.getBatch(batchId);
          return b && statuses.includes(b.status) ? b : null;
        },
        timeoutMs,
      );
    },
    async exportMarkers(batchId: string): Promise<number> {
      const rows = await queryResults(
        resultsPath,
        "SELECT count(*) AS n FROM results.exports WHERE batch_id = $1",
        [batchId],
      );
      return Number(rows[0]?.n ?? 0);
    },
    async sinkRows(batchId: string) {
      return new DuckDBResultSink(resultsPath).readRows(batchId);
    },
    /** The ledger invariant (local/invariant.ts), read through the API and the results file; asserted to hold. */
    async assertInvariant(batchId: string, submittedItemIds?: string[]): Promise<InvariantReport> {
      const report = await checkLedgerInvariant({
        coordinatorUrl: coordinator.url,
        batchId,
        resultsPath,
        submittedItemIds,
      });
      expect(report.violations, formatInvariantReport(report)).toEqual([]);
      return report;
    },

    /**
     * Starts an NDJSON POST to the streaming server whose body the test writes line by line and
     * ends when it wants: the request stays open (the coordinator reading it) in between.
     */
    openStream() {
      const req = httpRequest(new URL("/v1/batches", streaming.url), {
        method: "POST",
        headers: { "content-type": "application/x-ndjson" },
      });
      const answer = new Promise<HttpAnswer>((resolve, reject) => {
        req.on("response", (res) => {
          const parts: Buffer[] = [];
          res.on("data", (c: Buffer) => parts.push(c));
          res.on("end", () => {
            const text = Buffer.concat(parts).toString("utf8");
            let body: unknown = text;
            try {
              body = JSON.parse(text);
            } catch {
              // kept as text
            }
            resolve({ status: res.statusCode ?? 0, body });
          });
          res.on("error", reject);
        });
        req.on("error", reject);
      });
      answer.catch(() => {});
      let settled = false;
      answer.then(
        () => (settled = true),
        () => (settled = true),
      );
      return {
        answer,
        /** The coordinator already answered (it stopped reading). */
        get answered() {
          return settled;
        },
        async write(lines: unknown[]): Promise<void> {
          const text = lines.map((l) => `${JSON.stringify(l)}\n`).join("");
          if (!req.write(text)) await new Promise<void>((resolve) => req.once("drain", resolve));
        },
        end: () => req.end(),
        destroy: () => req.destroy(),
      };
    },

    async close() {
      await pump.close().catch(() => {});
      await workerHandler.shutdown().catch(() => {});
      for (const s of [coordinator.server, worker.server, reconciler.server]) {
        s.closeAllConnections();
        await new Promise<void>((resolve) => s.close(() => resolve()));
      }
      await streaming.close();
      await Promise.allSettled([sink.close(), pubsub.close(), db.terminate()]);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return h;
}

export type Lifecycle = Awaited<ReturnType<typeof startLifecycle>>;

/** `n` demo items `{id: prefix+i, payload: {value: i}}` from `from`. */
export function items(from: number, n: number, prefix = "i") {
  return Array.from({ length: n }, (_, k) => ({ id: `${prefix}${from + k}`, payload: { value: from + k } }));
}

/** Waits until the batch's progress is older than the stale-submission threshold, by the ledger's own record. */
export async function waitUntilStale(h: Lifecycle, batchId: string, seconds: number, timeoutMs = 20_000) {
  return waitFor(
    `batch ${batchId} idle for more than ${seconds} s`,
    async () => {
      const b = await h.ledger.getBatch(batchId);
      return b && Date.now() > b.progressAt + seconds * 1000 + 100 ? b : null;
    },
    timeoutMs,
  );
}
