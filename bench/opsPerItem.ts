// Phase 3 — cloud operations per item and per batch (DESIGN.md §9), counted by the instrumented
// adapters themselves: FirestoreLedger.ops (reads, writes, transactions, queries, aggregations),
// WorkQueue.published, ResultSink.operations, and deliveries counted here, where they are made.
//
// The coordinator and the worker run in this process, constructed directly on the emulators (each
// with its own ledger instance, so the counts split by component), the worker served by the
// Functions Framework's test server exactly as deployed. Deliveries are made by this module: it
// pulls the doorbells from a subscription one at a time and POSTs each as a Pub/Sub push envelope,
// so there is exactly one delivery per message and no concurrency — the counts are deterministic.
//
// Two experiments:
//   submission only: batches of 1, 2, 500 and 501 items (no subscription yet, nothing delivered):
//     per item = ops(2) − ops(1); per chunk (500 items) = ops(501) − ops(500) − per item; checked:
//     ops(500) − ops(1) = 499 × per item;
//   delivery: batches of 1, 3 and 12 items submitted and fully processed to finalization:
//     per item = (ops(12) − ops(1)) / 11, checked against ops(3) − ops(1) = 2 × per item.
// The cursor is written at most once a second during a submission; here the interval is set long
// enough that it is written once at the end, and the report adds "≤ 1 write per second of
// submission" to the per-batch figure.
import { mkdtempSync, rmSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { http as registerHttp } from "@google-cloud/functions-framework";
import { getTestServer } from "@google-cloud/functions-framework/testing";
import type { Message } from "@google-cloud/pubsub";
import { DuckDBResultSink } from "../functions/adapters/duckdbResultSink";
import { FirestoreLedger } from "../functions/adapters/firestoreLedger";
import { PubSubWorkQueue } from "../functions/adapters/pubsubWorkQueue";
import { loadConfig } from "../functions/config";
import { createLogger } from "../functions/core/logger";
import { isFinalBatchStatus } from "../functions/core/model";
import { type LedgerOpCounts, systemClock } from "../functions/core/ports";
import { createCoordinatorHandler } from "../functions/handlers/coordinator";
import { createWorkerHandler } from "../functions/handlers/worker";
import { startStreamingServer } from "../functions/http/streamingServer";
import { provisionTopics } from "../local/provisionTopology";
import { waitFor } from "../local/waitFor";
import {
  benchProjectId,
  type EmulatorHosts,
  emulatorEnv,
  firestoreClient,
  pubsubClient,
} from "./support/clients";
import { submitNdjson } from "./support/ndjsonSubmit";
import type { Progress } from "./support/progress";

export interface OpCounts extends LedgerOpCounts {
  published: number;
  deliveries: number;
  sinkOperations: number;
}

const zero = (): OpCounts => ({
  reads: 0,
  writes: 0,
  transactions: 0,
  queries: 0,
  aggregations: 0,
  published: 0,
  deliveries: 0,
  sinkOperations: 0,
});
const keys = Object.keys(zero()) as (keyof OpCounts)[];
const sub = (a: OpCounts, b: OpCounts): OpCounts =>
  Object.fromEntries(keys.map((k) => [k, a[k] - b[k]])) as unknown as OpCounts;
const scale = (a: OpCounts, f: number): OpCounts =>
  Object.fromEntries(keys.map((k) => [k, a[k] * f])) as unknown as OpCounts;
const add = (a: OpCounts, b: OpCounts): OpCounts =>
  Object.fromEntries(keys.map((k) => [k, a[k] + b[k]])) as unknown as OpCounts;
const same = (a: OpCounts, b: OpCounts) => keys.every((k) => Math.abs(a[k] - b[k]) < 1e-9);

export interface OpsPerItemResult {
  /** Steady-state cost of one more item (coordinator + worker + sink). */
  perItem: OpCounts;
  perItemByComponent: { coordinator: OpCounts; worker: OpCounts };
  /** Constant cost of a batch (creation, finalization, export), whatever its size. */
  perBatch: OpCounts;
  /** Extra cost of each further 500-item submission chunk. */
  perChunk: OpCounts;
  chunkItems: number;
  /** Every linearity check held (the counts are exact and deterministic). */
  deterministic: boolean;
  checks: string[];
  /** The raw measurements the figures were derived from. */
  samples: { experiment: "submission" | "delivery"; items: number; ops: OpCounts }[];
  /** Targets of DESIGN.md §9 and whether they hold. */
  targets: { name: string; value: number; target: string; met: boolean }[];
}

const quietLog = () => createLogger({ component: "bench", sink: () => undefined, minSeverity: "ERROR" });

export async function runOpsPerItem(opts: {
  hosts: EmulatorHosts;
  progress: Progress;
}): Promise<OpsPerItemResult> {
  const projectId = benchProjectId("ops");
  const dataDir = mkdtempSync(join(tmpdir(), "tally-bench-ops-"));
  const env = {
    ...emulatorEnv(opts.hosts, projectId),
    TALLY_PREFIX: "opsbench",
    TALLY_DUCKDB_PATH: join(dataDir, "results.duckdb"),
    TALLY_MIN_BACKOFF_SECONDS: "1",
    TALLY_MAX_BACKOFF_SECONDS: "2",
  };
  const config = loadConfig(env);
  // Every pipeline's doorbells on one topic the bench pulls from (the routing is not measured here).
  const benchTopic = `${config.topology.prefix}-work-bench`;
  const db = firestoreClient(opts.hosts, projectId);
  const pubsub = pubsubClient(opts.hosts, projectId);
  const coordinatorLedger = new FirestoreLedger(db);
  const workerLedger = new FirestoreLedger(db);
  const probe = new FirestoreLedger(db);
  const coordinatorQueue = new PubSubWorkQueue(pubsub, () => benchTopic);
  const workerQueue = new PubSubWorkQueue(pubsub, () => benchTopic);
  const coordinatorSink = new DuckDBResultSink(join(dataDir, "results.duckdb"));
  const workerSink = new DuckDBResultSink(join(dataDir, "results.duckdb"));
  const common = { config, clock: systemClock, log: quietLog() };
  const coordinator = await startStreamingServer(
    createCoordinatorHandler(
      { ...common, ledger: coordinatorLedger, queue: coordinatorQueue, sink: coordinatorSink },
      { cursorIntervalMs: 3_600_000 },
    ),
  );
  const targetName = `bench-worker-${projectId}`;
  const workerHandler = createWorkerHandler(
    { ...common, ledger: workerLedger, queue: workerQueue, sink: workerSink },
    { instanceId: "bench-ops" },
  );
  registerHttp(targetName, workerHandler);
  const workerServer: Server = getTestServer(targetName);
  await new Promise<void>((r) => workerServer.listen(0, "127.0.0.1", () => r()));
  const workerUrl = `http://127.0.0.1:${(workerServer.address() as AddressInfo).port}/`;
  let deliveries = 0;
  /** Deliveries POSTed and not yet answered (and acknowledged). */
  let answering = 0;

  const snapshot = (component: "coordinator" | "worker" | "all"): OpCounts => {
    const c = {
      ...zero(),
      ...coordinatorLedger.ops,
      published: coordinatorQueue.published,
      sinkOperations: coordinatorSink.operations,
    };
    const w = {
      ...zero(),
      ...workerLedger.ops,
      published: workerQueue.published,
      sinkOperations: workerSink.operations,
      deliveries,
    };
    return component === "coordinator" ? c : component === "worker" ? w : add(c, w);
  };

  const samples: OpsPerItemResult["samples"] = [];
  const byComponent: Record<string, { coordinator: OpCounts; worker: OpCounts }> = {};
  let seq = 0;
  const submit = async (n: number) => {
    const batchId = `ops-${n}-${++seq}`;
    const res = await submitNdjson({ coordinatorUrl: coordinator.url, batchId, items: n });
    if (res.status !== 201)
      throw new Error(`submitting ${n} items answered ${res.status}: ${JSON.stringify(res.body)}`);
    return batchId;
  };

  try {
    await provisionTopics(pubsub, config.topology);
    await pubsub.createTopic(benchTopic);

    // --- submission only ----------------------------------------------------------------------
    for (const n of [1, 2, 500, 501]) {
      const before = snapshot("all");
      await submit(n);
      samples.push({ experiment: "submission", items: n, ops: sub(snapshot("all"), before) });
    }
    opts.progress("submission-only counts taken (1, 2, 500, 501 items)");

    // --- delivery: one doorbell at a time, as a push envelope ----------------------------------
    const [subscription] = await pubsub
      .topic(benchTopic)
      .createSubscription(`${benchTopic}-bench-pull`, { ackDeadlineSeconds: 60 });
    subscription.setOptions({ flowControl: { maxMessages: 1, allowExcessMessages: false } });
    subscription.on("message", (m: Message) => {
      deliveries++;
      const envelope = {
        message: {
          attributes: m.attributes,
          data: m.data.toString("base64"),
          messageId: m.id,
          publishTime: m.publishTime.toISOString(),
        },
        subscription: subscription.name,
      };
      answering++;
      fetch(workerUrl, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(envelope),
      })
        .then(async (res) => {
          await res.arrayBuffer();
          if (res.ok) m.ack();
          else m.nack();
        })
        .catch(() => m.nack())
        .finally(() => answering--);
    });
    subscription.on("error", (err) => opts.progress(`pull subscription error: ${err.message}`));
    // Deliveries start only once the submission has answered: otherwise whether the coordinator
    // (at the end of its submission) or the worker (after the last item) finalizes a small batch
    // would be a race, and so would the counts.
    await subscription.close();
    for (const n of [1, 3, 12]) {
      const beforeC = snapshot("coordinator");
      const beforeW = snapshot("worker");
      const batchId = await submit(n);
      subscription.open();
      await waitFor(
        `batch ${batchId} finalized`,
        async () => {
          const b = await probe.getBatch(batchId);
          return b && isFinalBatchStatus(b.status) ? b : null;
        },
        120_000,
        50,
      );
      // The last delivery is answered after the batch is final: wait until it is answered and
      // acknowledged, or closing the stream would leave it to be redelivered in the next batch.
      await waitFor(
        `deliveries of ${batchId} answered`,
        () => snapshot("worker").deliveries - beforeW.deliveries >= n && answering === 0,
        30_000,
        20,
      );
      await subscription.close();
      const c = sub(snapshot("coordinator"), beforeC);
      const w = sub(snapshot("worker"), beforeW);
      byComponent[n] = { coordinator: c, worker: w };
      samples.push({ experiment: "delivery", items: n, ops: add(c, w) });
    }
    await subscription.delete();
    opts.progress("delivery counts taken (1, 3, 12 items, each processed to finalization)");
  } finally {
    await coordinator.close();
    await new Promise<void>((r) => workerServer.close(() => r()));
    await Promise.allSettled([coordinatorSink.close(), workerSink.close()]);
    await db.terminate();
    await pubsub.close();
    rmSync(dataDir, { recursive: true, force: true });
  }

  const s = (e: "submission" | "delivery", n: number) =>
    samples.find((x) => x.experiment === e && x.items === n)!.ops;
  const checks: string[] = [];
  let deterministic = true;
  const check = (what: string, ok: boolean) => {
    checks.push(`${ok ? "ok" : "MISMATCH"}: ${what}`);
    if (!ok) deterministic = false;
  };
  const submissionPerItem = sub(s("submission", 2), s("submission", 1));
  check(
    "submission ops(500) − ops(1) = 499 × (ops(2) − ops(1))",
    same(sub(s("submission", 500), s("submission", 1)), scale(submissionPerItem, 499)),
  );
  const perChunk = sub(sub(s("submission", 501), s("submission", 500)), submissionPerItem);
  const deliveryPerItem = scale(sub(s("delivery", 12), s("delivery", 1)), 1 / 11);
  check(
    "delivery ops(3) − ops(1) = 2 × (ops(12) − ops(1)) / 11",
    same(sub(s("delivery", 3), s("delivery", 1)), scale(deliveryPerItem, 2)),
  );
  check(
    "per item figures are whole numbers",
    keys.every((k) => Number.isInteger(Math.round(deliveryPerItem[k] * 1e9) / 1e9)),
  );
  const perItem = deliveryPerItem;
  const perBatch = sub(s("delivery", 1), perItem);
  const cPer = scale(sub(byComponent[12]!.coordinator, byComponent[1]!.coordinator), 1 / 11);
  const wPer = scale(sub(byComponent[12]!.worker, byComponent[1]!.worker), 1 / 11);
  const targets = [
    { name: "Firestore writes per item", value: perItem.writes, target: "≤ 3", met: perItem.writes <= 3 },
    { name: "Firestore reads per item", value: perItem.reads, target: "≤ 3", met: perItem.reads <= 3 },
    { name: "publishes per item", value: perItem.published, target: "= 1", met: perItem.published === 1 },
    { name: "deliveries per item", value: perItem.deliveries, target: "= 1", met: perItem.deliveries === 1 },
    {
      name: "BigQuery (sink) operations per item",
      value: perItem.sinkOperations,
      target: "= 0",
      met: perItem.sinkOperations === 0,
    },
    {
      name: "sink operations per batch",
      value: perBatch.sinkOperations,
      target: "constant",
      met: deterministic,
    },
  ];
  return {
    perItem,
    perItemByComponent: { coordinator: cPer, worker: wPer },
    perBatch,
    perChunk,
    chunkItems: 500,
    deterministic,
    checks,
    samples,
    targets,
  };
}
