// The push relay delivers a pull subscription to an HTTP endpoint the way Pub/Sub push does, with
// more than the emulator's two requests in flight: same envelope, 2xx acks, anything else is
// redelivered under the subscription's retry policy.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { buildTopology, pipelineTopology } from "../../functions/topology";
import { provisionSubscriptions } from "../../local/provisionTopology";
import { startPushRelay } from "../../local/pushRelay";
import { testPubSub, uniqueProjectId, waitFor } from "../support/cloud";

interface Received {
  body: {
    message: { attributes: Record<string, string>; messageId: string; data: string };
    subscription: string;
    deliveryAttempt?: number;
  };
}

describe("push relay", async () => {
  const projectId = uniqueProjectId("relay");
  const pubsub = testPubSub(projectId);
  const topology = buildTopology({
    prefix: "tally",
    delivery: {
      ackDeadlineSeconds: 20,
      workerTimeoutSeconds: 15,
      minimumBackoffSeconds: 0,
      maximumBackoffSeconds: 1,
    },
    pipelines: [{ name: "relayed" }],
  });
  const work = pipelineTopology(topology, "relayed");
  const received: Received[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  // Holds each request 200 ms; refuses the first delivery of message "fail-once" with a 503.
  const refused = new Set<string>();
  const server = http.createServer((req, res) => {
    let raw = "";
    req.on("data", (c) => {
      raw += c;
    });
    req.on("end", () => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      const body = JSON.parse(raw) as Received["body"];
      received.push({ body });
      setTimeout(() => {
        inFlight--;
        const key = body.message.attributes.itemId ?? "";
        if (key === "fail-once" && !refused.has(key)) {
          refused.add(key);
          res.writeHead(503).end();
        } else res.writeHead(204).end();
      }, 200);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  await provisionSubscriptions(
    pubsub,
    topology,
    projectId,
    { workers: { relayed: endpoint }, deadLetter: `${endpoint}dead-letter` },
    { relayWork: true },
  );
  const relay = startPushRelay({
    emulatorHost: process.env.PUBSUB_EMULATOR_HOST!,
    projectId,
    subscription: work.workSubscription,
    endpoint,
    concurrency: 8,
    ackDeadlineSeconds: topology.delivery.ackDeadlineSeconds,
  });
  afterAll(async () => {
    await relay.stop();
    server.close();
    await pubsub.close();
  });

  it("provisions the work subscription as pull with the declared delivery settings", async () => {
    const [meta] = await pubsub.subscription(work.workSubscription).getMetadata();
    expect(meta.pushConfig?.pushEndpoint ?? "").toBe("");
    expect(meta.ackDeadlineSeconds).toBe(20);
    expect(meta.deadLetterPolicy?.maxDeliveryAttempts).toBe(topology.delivery.maxDeliveryAttempts);
  });

  it("pushes the envelope with up to `concurrency` requests in flight, acks 2xx, redelivers a refusal", async () => {
    const topic = pubsub.topic(work.workTopic);
    const ids = ["fail-once", ...Array.from({ length: 39 }, (_, i) => `i${i}`)];
    await Promise.all(
      ids.map((itemId) =>
        topic.publishMessage({
          data: Buffer.alloc(0),
          attributes: { batchId: "b", itemId, generation: "1" },
        }),
      ),
    );
    await waitFor("every message acknowledged", () => relay.stats().acked === ids.length, 30_000);
    const stats = relay.stats();
    expect(stats).toMatchObject({ acked: 40, nacked: 1, pushed: 41, inFlight: 0 });
    expect(maxInFlight).toBeGreaterThan(2);
    expect(maxInFlight).toBeLessThanOrEqual(8);
    const first = received.find((r) => r.body.message.attributes.itemId === "i0")!;
    expect(first.body.subscription).toBe(`projects/${projectId}/subscriptions/${work.workSubscription}`);
    expect(first.body.message.attributes).toEqual({ batchId: "b", itemId: "i0", generation: "1" });
    expect(first.body.message.messageId).toMatch(/\S/);
    const retried = received.filter((r) => r.body.message.attributes.itemId === "fail-once");
    expect(retried).toHaveLength(2);
    // Like Cloud Pub/Sub for a subscription with a dead-letter policy (the emulator's push omits it).
    expect(retried.map((r) => r.body.deliveryAttempt)).toEqual([1, 2]);
    console.log(`max in flight ${maxInFlight}`);
  });
});
