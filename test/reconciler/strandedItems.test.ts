// Two deliveries a worker acknowledges without running the item, leaving it to the reconciler's
// stale-pending sweep (issue #15; createWorkerHandler.ts says so at each): a doorbell that reached
// another pipeline's worker (`misrouted`), and a delivery of an item not due yet (`notBefore`) one
// delivery short of the dead-letter topic (`deferred`). End to end on the emulators: the worker
// answers 200 and writes nothing, the item stays pending with its `pendingSince`, and the next
// reconcile tick past the stale threshold finds it and publishes its doorbell again.
import { afterEach, describe, expect, it } from "vitest";
import { workerConfig } from "../../functions/config";
import { envelope, post, type ServedWorker, serveWorker } from "../worker/support/workerHarness";
import { type ReconcilerHarness, startReconcilerHarness } from "./support/reconcilerHarness";

let h: ReconcilerHarness | undefined;
let worker: ServedWorker | undefined;
afterEach(async () => {
  await worker?.close();
  await h?.close();
  worker = undefined;
  h = undefined;
});

/** Older than the stale-pending threshold (900 s). */
const longAgo = () => Date.now() - 60 * 60_000;

describe("items a worker acknowledged without running are republished by the stale-pending sweep", () => {
  it("a doorbell delivered to another pipeline's worker: acknowledged untouched, then republished", async () => {
    h = await startReconcilerHarness();
    const batch = await h.createBatch("misrouted", 1, { at: longAgo() }); // pipeline demo
    const before = await h.ledger.getItem(batch.batchId, "i0");
    // The text-stats pipeline's worker, as deployed (TALLY_WORKER_PIPELINE=text-stats).
    worker = await serveWorker({
      ...h.deps,
      config: workerConfig({ ...h.config, workerPipeline: "text-stats" }),
    });
    const answer = await post(worker.url, envelope({ batchId: "misrouted", itemId: "i0", generation: "1" }));
    expect(answer).toMatchObject({ status: 200, body: { outcome: "misrouted", pipeline: "demo" } });
    // Nothing written: still pending, no attempt, the same pendingSince the sweep looks for.
    expect(await h.ledger.getItem("misrouted", "i0")).toEqual(before);
    expect(h.logs.some((l) => l.event === "item.misrouted" && l.batchId === "misrouted")).toBe(true);

    const tick = await h.tick();
    expect(tick.status).toBe(200);
    expect(tick.body.stalePending).toMatchObject({ found: 1, republished: 1 });
    await h.waitForDoorbells("misrouted", ["i0"]);
  });

  it("a not-due item's delivery one short of the dead-letter topic: acknowledged as deferred, then republished", async () => {
    h = await startReconcilerHarness();
    const at = longAgo();
    await h.createBatch("deferred", 1, { at });
    // Taken and released an hour ago by a step that answered 429 with a Retry-After of two hours.
    const ref = { batchId: "deferred", itemId: "i0", generation: 1 };
    const taken = await h.ledger.leaseItem(ref, "earlier-worker", 30_000, 5, at);
    if (taken.kind !== "leased") throw new Error(`lease: ${taken.kind}`);
    const notBefore = at + 2 * 60 * 60_000;
    await h.ledger.releaseItem(ref, "earlier-worker", { kind: "transient", message: "429" }, at + 1_000, {
      notBefore,
    });
    const before = await h.ledger.getItem("deferred", "i0");
    expect(before).toMatchObject({ status: "pending", attempt: 1, notBefore });

    worker = await serveWorker(h.deps, { admissionWaitMs: 200 });
    const lastBeforeDeadLetter = h.config.topology.delivery.maxDeliveryAttempts - 1;
    const answer = await post(worker.url, {
      ...envelope({ batchId: "deferred", itemId: "i0", generation: "1" }),
      deliveryAttempt: lastBeforeDeadLetter,
    });
    expect(answer).toMatchObject({ status: 200, body: { outcome: "deferred" } });
    expect(await h.ledger.getItem("deferred", "i0")).toEqual(before);

    const tick = await h.tick();
    expect(tick.status).toBe(200);
    expect(tick.body.stalePending).toMatchObject({ found: 1, republished: 1 });
    await h.waitForDoorbells("deferred", ["i0"]);
    // Touched by the sweep: not picked again by the next tick (its next chance is a threshold later).
    expect((await h.tick()).body.stalePending).toMatchObject({ found: 0, republished: 0 });
  });
});
