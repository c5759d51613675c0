// Per-pipeline admission (issue #17 §2) for HTTP pipelines: a pipeline limited to 5 starts per
// second over 200 items, pushed by the Pub/Sub emulator through a round-robin front door
// (local/frontDoor.ts, Cloud Run's load balancer locally) to TWO worker instances that share
// nothing but the ledger and the queue, each configured with TALLY_WORKER_MAX_INSTANCES=2 and so
// taking 2.5/s — against a real local HTTP server recording arrival times: every item succeeds, the
// invariant holds, and no 1-s window holds more than the documented bound, rate + max(burst, N)
// (rateLimiter.ts). 200 items at 5/s take 40 s at the least; the test stays under a minute.
// And the refusal path: a delivery that finds the pipeline's concurrency taken and gets no slot in
// its admission wait is answered 429 before the lease — the item stays pending with no attempt.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FirestoreLedger } from "../../functions/adapters/firestoreLedger";
import { startsBound } from "../../functions/pipelines/rateLimiter";
import { type FrontDoor, startFrontDoor } from "../../local/frontDoor";
import { testFirestore, testPubSub, uniqueProjectId, waitFor } from "../support/cloud";
import { finalizedWithInvariant, serveCoordinator, submit, TargetServer } from "./support/httpTarget";
import {
  buildDeps,
  envelope,
  type PushTopology,
  post,
  provisionPush,
  type ServedWorker,
  serveWorker,
  setProcessEnv,
  submitBatch,
  tearDown,
  tempDataDir,
  testConfig,
} from "./support/workerHarness";

const projectId = uniqueProjectId("httprate");
const db = testFirestore(projectId);
const pubsub = testPubSub(projectId);
const data = tempDataDir();
const target = new TargetServer();
const probe = new FirestoreLedger(db);
const rate = 5;
const burst = 1;
const itemCount = 200;
const instances = 2;

let deps: Awaited<ReturnType<typeof buildDeps>>;
let worker: ServedWorker;
let worker2: ServedWorker;
let frontDoor: FrontDoor;
let refusingWorker: ServedWorker;
let coordinator: Awaited<ReturnType<typeof serveCoordinator>>;
let topology: PushTopology;
let restoreEnv = () => {};

beforeAll(async () => {
  await target.start();
  const json = JSON.stringify([
    { name: "http-rated", url: target.url("/rated"), timeoutSeconds: 10, ratePerSecond: rate },
    { name: "http-single", url: target.url("/hold"), timeoutSeconds: 30, concurrency: 1 },
  ]);
  restoreEnv = setProcessEnv({ TALLY_HTTP_PIPELINES: json });
  const config = testConfig(projectId, data.dir, {
    TALLY_HTTP_PIPELINES: json,
    TALLY_WORKER_MAX_INSTANCES: String(instances),
  });
  deps = await buildDeps(config, db, pubsub);
  // Two instances: each its own handler, so its own gates (nothing shared but ledger and queue).
  worker = await serveWorker(deps, { instanceId: "instance-1" });
  worker2 = await serveWorker(deps, { instanceId: "instance-2" });
  frontDoor = await startFrontDoor({
    backends: () => [
      { name: "instance-1", url: worker.url },
      { name: "instance-2", url: worker2.url },
    ],
  });
  // A second instance with a short admission wait, driven by the test's own deliveries.
  refusingWorker = await serveWorker(deps, { admissionWaitMs: 300, instanceId: "refusing" });
  coordinator = await serveCoordinator(deps);
  topology = await provisionPush(pubsub, config, `${frontDoor.url}/`);
});

afterAll(async () => {
  await tearDown(
    [
      topology?.deadLetters,
      topology,
      frontDoor,
      worker,
      worker2,
      refusingWorker,
      coordinator,
      { close: () => target.stop() },
      deps,
    ],
    { pubsub, db, data },
  );
  restoreEnv();
});

describe("rate limit", () => {
  const bound = startsBound({ ratePerSecond: rate, burst }, instances, 1);
  it(`${itemCount} items at ${rate}/s over ${instances} instances: never more than ${bound} calls in any 1-s window, every item succeeded`, async () => {
    target.behaviours.set("/rated", (req) => ({ status: 200, body: { ok: req.itemId } }));
    const batchId = `rated-${Date.now().toString(36)}`;
    const items = Array.from({ length: itemCount }, (_, i) => ({ id: `r${i}`, payload: { value: i } }));
    const started = Date.now();
    expect((await submit(coordinator.url, { id: batchId, pipeline: "http-rated", items })).status).toBe(201);
    const { batch, report } = await finalizedWithInvariant({
      ledger: probe,
      coordinatorUrl: coordinator.url,
      resultsPath: deps.config.env.TALLY_DUCKDB_PATH,
      batchId,
      itemIds: items.map((i) => i.id),
      timeoutMs: 90_000,
    });
    const elapsed = Date.now() - started;
    expect(batch.status).toBe("succeeded");
    const arrivals = target.requests
      .filter((r) => r.batchId === batchId)
      .map((r) => r.at)
      .sort((a, b) => a - b);
    expect(arrivals).toHaveLength(itemCount);
    const windows = arrivals.map((t) => arrivals.filter((s) => s >= t && s < t + 1000).length);
    const busiest = Math.max(...windows);
    const started1 = worker.handler.stats.succeeded;
    const started2 = worker2.handler.stats.succeeded;
    console.log(
      `rate test: ${itemCount} items in ${elapsed} ms; busiest 1-s window ${busiest} calls (bound ${rate} + max(${burst}, ${instances}) = ${bound}); succeeded per instance ${started1}/${started2}; refused ${worker.handler.stats.refused}/${worker2.handler.stats.refused}`,
    );
    expect(busiest).toBeLessThanOrEqual(bound);
    // Both instances worked: the bound held across instances, not inside one.
    expect(started1).toBeGreaterThan(itemCount / 4);
    expect(started2).toBeGreaterThan(itemCount / 4);
    expect(started1 + started2).toBe(itemCount);
    // Not trivially slow either: the limiter let the pipeline run near its rate.
    expect(arrivals.at(-1)! - arrivals[0]!).toBeLessThan((itemCount / rate) * 1000 * 1.5);
    expect(report.apiCounts.succeeded).toBe(itemCount);
  }, 120_000);
});

describe("concurrency cap", () => {
  it("a delivery that gets no slot within the admission wait is answered 429 before the lease: no attempt used", async () => {
    let letGo!: () => void;
    const held = new Promise<void>((resolve) => (letGo = resolve));
    target.behaviours.set("/hold", async (req) => {
      if (req.itemId === "a") await held;
      return { status: 200, body: { done: req.itemId } };
    });
    const { batchId } = await submitBatch(
      deps,
      "http-single",
      [
        { itemId: "a", payload: {} },
        { itemId: "b", payload: {} },
      ],
      { publish: false },
    );
    const attrs = (itemId: string) => ({ batchId, itemId, generation: "1" });
    const first = post(refusingWorker.url, envelope(attrs("a")));
    await waitFor("item a at the target", () => target.callsTo("/hold", "a").length === 1);
    const refused = await post(refusingWorker.url, envelope(attrs("b")));
    expect(refused.status).toBe(429);
    expect(refused.body).toMatchObject({
      error: { code: "rate_limited", details: { pipeline: "http-single" } },
    });
    expect((refused.body as { error: { message: string } }).error.message).toContain("no attempt was used");
    // Nothing was written: b is pending with no attempt, and the target never saw it.
    expect(await probe.getItem(batchId, "b")).toMatchObject({ status: "pending", attempt: 0 });
    expect(target.callsTo("/hold", "b")).toHaveLength(0);
    expect(refusingWorker.handler.stats.refused).toBe(1);
    letGo();
    expect((await first).status).toBe(200);
    expect((await post(refusingWorker.url, envelope(attrs("b")))).status).toBe(200);
    expect(await probe.getItem(batchId, "b")).toMatchObject({ status: "succeeded", attempt: 1 });
  });
});
