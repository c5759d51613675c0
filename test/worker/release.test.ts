// Releases that must not strand an item (issue #15 item 8), through the worker handler served by the
// Functions Framework: a delivery that fails transiently after its ack deadline passed publishes a
// fresh doorbell (its 5xx can no longer cause a redelivery: Pub/Sub redelivered the message long
// ago, and that redelivery found the lease live and was acknowledged); one within its deadline
// leaves the redelivery to Pub/Sub; and a shutdown on the item's last attempt gives the attempt back.
import { setTimeout as sleep } from "node:timers/promises";
import type { Subscription } from "@google-cloud/pubsub";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Clock } from "../../functions/core/ports";
import { definePipeline } from "../../functions/pipelines/definePipeline";
import { testFirestore, testPubSub, uniqueProjectId, waitFor } from "../support/cloud";
import { harnessWorkTopic } from "../support/harnessTopics";
import {
  buildDeps,
  envelope,
  post,
  serveWorker,
  submitBatch,
  tempDataDir,
  testConfig,
} from "./support/workerHarness";

const projectId = uniqueProjectId("wrel");
const db = testFirestore(projectId);
const pubsub = testPubSub(projectId);
const data = tempDataDir();
// 60 s ack deadline, 3 ledger attempts (workerEnv).
const config = testConfig(projectId, data.dir);

/** The worker's clock; a step moves it on to stand for a long run, without waiting. */
let skewMs = 0;
const clock: Clock = { now: () => Date.now() + skewMs };

const slowThenTransient = definePipeline<{ runMs: number }>({
  name: "test-slow-transient",
  timeoutSeconds: 600,
  steps: [
    {
      name: "work",
      async run(p) {
        skewMs += p.runMs;
        throw new Error("upstream unavailable");
      },
    },
  ],
});
const blocking = definePipeline({
  name: "test-blocking",
  timeoutSeconds: 600,
  steps: [{ name: "work", run: (_p, _o, ctx) => sleep(60_000, undefined, { signal: ctx.signal }) }],
});
const pipelines = (name: string) =>
  name === slowThenTransient.name ? slowThenTransient : name === blocking.name ? blocking : undefined;

let deps: Awaited<ReturnType<typeof buildDeps>>;
let doorbells: Subscription;
const received: string[] = [];

beforeAll(async () => {
  deps = { ...(await buildDeps(config, db, pubsub)), clock };
  const [topic] = await pubsub.createTopic(harnessWorkTopic(config.topology));
  [doorbells] = await topic.createSubscription(`${harnessWorkTopic(config.topology)}-observer`);
  doorbells.on("message", (m) => {
    received.push(`${m.attributes.batchId}/${m.attributes.itemId}`);
    m.ack();
  });
});

afterAll(async () => {
  await doorbells?.close();
  await deps?.close();
  await pubsub.close();
  await db.terminate();
  data.remove();
});

/** Publishes a sentinel doorbell and waits for it: anything published before it has arrived too. */
async function settled(tag: string) {
  await deps.queue.publish("demo", [{ batchId: "sentinel", itemId: tag, generation: 1 }]);
  await waitFor(`sentinel ${tag}`, async () => received.includes(`sentinel/${tag}`), 20_000);
}

describe("releases that do not strand an item", () => {
  it("a transient failure after the ack deadline publishes a fresh doorbell; one within it does not", async () => {
    const worker = await serveWorker(deps, { pipelines });
    const { batchId } = await submitBatch(
      deps,
      slowThenTransient.name,
      [
        { itemId: "late", payload: { runMs: 61_000 } },
        { itemId: "early", payload: { runMs: 1_000 } },
      ],
      { publish: false },
    );
    const late = await post(worker.url, envelope({ batchId, itemId: "late", generation: "1" }));
    const early = await post(worker.url, envelope({ batchId, itemId: "early", generation: "1" }));
    expect(late.status).toBe(500);
    expect(early.status).toBe(500);
    await settled(batchId);
    expect(received.filter((r) => r === `${batchId}/late`)).toHaveLength(1);
    expect(received.filter((r) => r === `${batchId}/early`)).toHaveLength(0);
    expect(deps.logs.some((l) => l.event === "item.republished" && l.itemId === "late")).toBe(true);
    expect((await deps.ledger.getItem(batchId, "late"))?.status).toBe("pending");
    await worker.close();
  });

  it("a shutdown on the item's last attempt gives the attempt back: the item is not exhausted", async () => {
    const worker = await serveWorker(deps, { pipelines });
    const { batchId } = await submitBatch(deps, blocking.name, [{ itemId: "last", payload: {} }], {
      publish: false,
    });
    const ref = { batchId, itemId: "last", generation: 1 };
    // Two attempts already used (leased and released by earlier deliveries).
    for (let a = 0; a < 2; a++) {
      const leased = await deps.ledger.leaseItem(ref, "earlier", 30_000, 3, clock.now());
      expect(leased.kind).toBe("leased");
      await deps.ledger.releaseItem(ref, "earlier", { kind: "transient", message: "x" }, clock.now());
    }
    const answer = post(worker.url, envelope({ batchId, itemId: "last", generation: "1" }));
    await waitFor("running", async () => (await deps.ledger.getItem(batchId, "last"))?.status === "running");
    expect((await deps.ledger.getItem(batchId, "last"))?.attempt).toBe(3);
    await worker.handler.shutdown();
    expect((await answer).status).toBe(503);
    expect(await deps.ledger.getItem(batchId, "last")).toMatchObject({ status: "pending", attempt: 2 });
    // The redelivery gets the last attempt, not attempts_exhausted.
    const leased = await deps.ledger.leaseItem(ref, "next", 30_000, 3, clock.now());
    expect(leased.kind).toBe("leased");
    await worker.close();
  });
});
