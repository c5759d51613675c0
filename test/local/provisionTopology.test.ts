// The local topology is provisioned from the same Topology object the Pulumi program declares, and
// the emulator keeps every delivery setting: read back what was created and compare.
import { describe, expect, it } from "vitest";
import { buildTopology } from "../../functions/topology";
import { provisionSubscriptions, subscriptionSpecs } from "../../local/provisionTopology";
import { testPubSub, uniqueProjectId } from "../support/cloud";

describe("provisionSubscriptions", () => {
  const projectId = uniqueProjectId("prov");
  const pubsub = testPubSub(projectId);
  const topology = buildTopology({
    prefix: "tally",
    delivery: {
      ackDeadlineSeconds: 30,
      workerTimeoutSeconds: 25,
      minimumBackoffSeconds: 1,
      maximumBackoffSeconds: 20,
      maxDeliveryAttempts: 7,
    },
  });
  const endpoints = { worker: "http://127.0.0.1:41001/", deadLetter: "http://127.0.0.1:41002/dead-letter" };

  it("creates both topics and push subscriptions with the topology's delivery settings", async () => {
    await provisionSubscriptions(pubsub, topology, projectId, endpoints);
    const [topics] = await pubsub.getTopics();
    expect(topics.map((t) => t.name.split("/").pop()).sort()).toEqual(
      [topology.deadLetterTopic, topology.workTopic].sort(),
    );

    const [work] = await pubsub.subscription(topology.workSubscription).getMetadata();
    expect(work.topic).toBe(`projects/${projectId}/topics/${topology.workTopic}`);
    expect(work.pushConfig?.pushEndpoint).toBe(endpoints.worker);
    expect(work.ackDeadlineSeconds).toBe(30);
    expect(Number(work.retryPolicy?.minimumBackoff?.seconds)).toBe(1);
    expect(Number(work.retryPolicy?.maximumBackoff?.seconds)).toBe(20);
    expect(work.deadLetterPolicy?.deadLetterTopic).toBe(
      `projects/${projectId}/topics/${topology.deadLetterTopic}`,
    );
    expect(work.deadLetterPolicy?.maxDeliveryAttempts).toBe(7);
    // Present but without a ttl: never expires (the 31-day default would apply without it).
    expect(work.expirationPolicy).toBeTruthy();
    expect(work.expirationPolicy?.ttl ?? null).toBeNull();

    const [dead] = await pubsub.subscription(topology.deadLetterSubscription).getMetadata();
    expect(dead.topic).toBe(`projects/${projectId}/topics/${topology.deadLetterTopic}`);
    expect(dead.pushConfig?.pushEndpoint).toBe(endpoints.deadLetter);
    expect(dead.deadLetterPolicy ?? null).toBeNull();
  });

  it("is idempotent and updates an existing subscription's endpoint", async () => {
    const moved = { ...endpoints, worker: "http://127.0.0.1:41003/" };
    await provisionSubscriptions(pubsub, topology, projectId, moved);
    const [work] = await pubsub.subscription(topology.workSubscription).getMetadata();
    expect(work.pushConfig?.pushEndpoint).toBe(moved.worker);
    expect(work.deadLetterPolicy?.maxDeliveryAttempts).toBe(7);
  });

  it("derives every setting from the topology", () => {
    const [work] = subscriptionSpecs(topology, "p", endpoints);
    expect(work!.name).toBe("tally-work-push");
    expect(work!.metadata.ackDeadlineSeconds).toBe(topology.delivery.ackDeadlineSeconds);
  });
});
