// The dead-letter receiver (F10): deliveries Pub/Sub gave up on end as `failed(dead_lettered)` with
// the source subscription and delivery count, the batch still finalizes, and poison is
// acknowledged without changing anything.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { waitFor } from "../support/cloud";
import { harnessWorkSubscription, harnessWorkTopic } from "../support/harnessTopics";
import {
  deadLetterEnvelope,
  type ReconcilerHarness,
  startReconcilerHarness,
} from "./support/reconcilerHarness";

let h: ReconcilerHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

const dlAttributes = (itemId: string, deliveryCount = 5) => ({
  batchId: "dl",
  itemId,
  generation: "1",
  CloudPubSubDeadLetterSourceSubscription: "tally-work-push",
  CloudPubSubDeadLetterSourceSubscriptionProject: "p",
  CloudPubSubDeadLetterSourceDeliveryCount: String(deliveryCount),
  CloudPubSubDeadLetterSourceTopicPublishTime: new Date().toISOString(),
});

describe("dead-letter receiver", () => {
  it("records dead-lettered deliveries as failed(dead_lettered) with details, and the batch finalizes", async () => {
    h = await startReconcilerHarness();
    await h.createBatch("dl", 4, { failureThreshold: 0.5 });
    const now = Date.now();
    // i0 succeeded; i1 never reached the ledger (pending); i2's worker crashed after leasing (lease
    // lapsed); i3 is being worked on right now (live lease).
    await h.ledger.leaseItem({ batchId: "dl", itemId: "i0", generation: 1 }, "w", 60_000, 5, now);
    await h.ledger.completeItem({ batchId: "dl", itemId: "i0", generation: 1 }, "w", { value: 0 }, now);
    await h.ledger.leaseItem({ batchId: "dl", itemId: "i2", generation: 1 }, "gone", 1, 5, now - 10_000);
    await h.ledger.leaseItem({ batchId: "dl", itemId: "i3", generation: 1 }, "busy", 60_000, 5, now);

    const r1 = await h.deadLetter(deadLetterEnvelope(dlAttributes("i1", 5), { messageId: "m-1" }));
    expect(r1.status).toBe(200);
    expect(r1.body).toMatchObject({ messageId: "m-1", kind: "failed", finalized: false });
    const i1 = await h.ledger.getItem("dl", "i1");
    expect(i1?.status).toBe("failed");
    expect(i1?.error).toMatchObject({
      kind: "dead_lettered",
      details: { sourceSubscription: "tally-work-push", deliveryCount: 5, messageId: "m-1" },
    });
    expect(i1?.error?.message).toMatch(/after 5 attempt/);

    const r2 = await h.deadLetter(deadLetterEnvelope(dlAttributes("i2", 7)));
    expect(r2.body.kind).toBe("failed");
    expect((await h.ledger.getItem("dl", "i2"))?.error?.details?.deliveryCount).toBe(7);

    // A live lease: the worker holding it decides; acknowledged, nothing changes.
    const r3 = await h.deadLetter(deadLetterEnvelope(dlAttributes("i3")));
    expect(r3.status).toBe(200);
    expect(r3.body).toMatchObject({ kind: "skipped", reason: "live_lease" });
    expect((await h.ledger.getItem("dl", "i3"))?.status).toBe("running");

    // A terminal item: a duplicate dead-letter changes nothing.
    const again = await h.deadLetter(deadLetterEnvelope(dlAttributes("i1", 9)));
    expect(again.body).toMatchObject({ kind: "skipped", reason: "terminal" });
    expect((await h.ledger.getItem("dl", "i1"))?.error?.details?.deliveryCount).toBe(5);
    expect(h.logs.filter((l) => l.event === "item.dead_lettered")).toHaveLength(2);
    expect((await h.ledger.getBatch("dl"))?.status).toBe("running");

    // The busy worker finishes; its settle (here: the dead-letter of its last message) finalizes.
    await h.ledger.completeItem(
      { batchId: "dl", itemId: "i3", generation: 1 },
      "busy",
      { value: 3 },
      Date.now(),
    );
    const last = await h.deadLetter(deadLetterEnvelope(dlAttributes("i3")));
    expect(last.body).toMatchObject({ kind: "skipped", reason: "terminal", finalized: true });
    const batch = await h.ledger.getBatch("dl");
    expect(batch?.status).toBe("partial"); // 2 of 4 failed, threshold 0.5
    expect(batch?.summary?.failedByKind).toEqual({ dead_lettered: 2 });
    expect(await h.sink.countRows("dl")).toBe(2);
    expect(h.finalizedEvents("dl")).toHaveLength(1);
  });

  it("acknowledges poison and changes nothing", async () => {
    h = await startReconcilerHarness();
    await h.createBatch("dl", 1);
    const before = await h.ledger.getItem("dl", "i0");
    const poison: Array<{ attributes: Record<string, string>; problem: RegExp }> = [
      { attributes: {}, problem: /batchId is missing/ },
      { attributes: { batchId: "dl", itemId: "i0", generation: "one" }, problem: /generation must be/ },
      { attributes: { batchId: "dl", itemId: "a/b", generation: "1" }, problem: /itemId is not a valid id/ },
      { attributes: { batchId: "nope", itemId: "i0", generation: "1" }, problem: /does not exist/ },
    ];
    for (const [i, p] of poison.entries()) {
      const messageId = `poison-${i}`;
      const r = await h.deadLetter(deadLetterEnvelope(p.attributes, { messageId }));
      expect(r.status, messageId).toBe(200); // acknowledged: no redelivery can fix it
      expect(r.body.kind).toBe("poison");
      expect(r.body.problems.join("; ")).toMatch(p.problem);
      const logged = h.logs.find((l) => l.event === "message.poison" && l.messageId === messageId);
      expect(logged?.severity).toBe("ERROR");
    }
    expect(await h.ledger.getItem("dl", "i0")).toEqual(before);
    expect((await h.ledger.getBatch("dl"))?.status).toBe("running");

    // Not a push envelope at all: refused (400) with the problem named.
    const bad = await h.deadLetter({ hello: "world" });
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatchObject({ code: "invalid_argument" });
    expect(bad.body.error.details[0].path).toBe("body");
  });

  it("end to end on the emulator: a delivery that never succeeds is dead-lettered by Pub/Sub and recorded", async () => {
    h = await startReconcilerHarness();
    const harness = h;
    await h.createBatch("e2e", 1, { failureThreshold: 0 });
    // A worker that never answers 2xx (it crashes before reaching the ledger).
    let deliveries = 0;
    const failing: Server = createServer((_req, res) => {
      deliveries++;
      res.statusCode = 500;
      res.end();
    });
    await new Promise<void>((r) => failing.listen(0, "127.0.0.1", r));
    const failingUrl = `http://127.0.0.1:${(failing.address() as AddressInfo).port}/`;
    try {
      const t = h.config.topology;
      const [dlTopic] = await h.pubsub.createTopic(t.deadLetterTopic);
      await dlTopic.createSubscription(t.deadLetterSubscription, {
        pushConfig: { pushEndpoint: `${h.url}${t.deadLetterPath}` },
      });
      await h.pubsub.topic(harnessWorkTopic(t)).createSubscription(harnessWorkSubscription(t), {
        pushConfig: { pushEndpoint: failingUrl },
        ackDeadlineSeconds: 10,
        deadLetterPolicy: { deadLetterTopic: dlTopic.name, maxDeliveryAttempts: 5 },
        retryPolicy: { minimumBackoff: { seconds: 0 }, maximumBackoff: { seconds: 1 } },
      });
      await h.deps.queue.publish("demo", [{ batchId: "e2e", itemId: "i0", generation: 1 }]);
      const item = await waitFor(
        "the dead-lettered item",
        async () => {
          const it = await harness.ledger.getItem("e2e", "i0");
          return it?.status === "failed" ? it : null;
        },
        90_000,
        200,
      );
      console.log(
        `dead-lettered after ${deliveries} deliveries; details ${JSON.stringify(item.error?.details)}`,
      );
      expect(deliveries).toBeGreaterThanOrEqual(5);
      expect(item.error?.kind).toBe("dead_lettered");
      expect(item.error?.details?.sourceSubscription).toContain(harnessWorkSubscription(t));
      expect(item.error?.details?.deliveryCount).toBeGreaterThanOrEqual(5);
      await waitFor(
        "the batch finalized",
        async () => (await harness.ledger.getBatch("e2e"))?.status === "failed",
      );
    } finally {
      await new Promise<void>((r) => failing.close(() => r()));
    }
  });
});
