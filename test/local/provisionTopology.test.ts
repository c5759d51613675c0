// The local topology is provisioned from the same Topology object the Pulumi program declares, and
// the emulator keeps every delivery setting: read back what was created and compare. Each pipeline
// has its own work topic and push subscription, to its own endpoint, with its own settings.
import { describe, expect, it } from "vitest";
import { buildTopology, pipelineTopology } from "../../functions/topology";
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
    pipelines: [
      { name: "alpha" },
      {
        name: "beta",
        delivery: { ackDeadlineSeconds: 12, workerTimeoutSeconds: 10, maxDeliveryAttempts: 9 },
      },
    ],
  });
  const alpha = pipelineTopology(topology, "alpha");
  const beta = pipelineTopology(topology, "beta");
  const endpoints = {
    workers: { alpha: "http://127.0.0.1:41001/", beta: "http://127.0.0.1:41004/" },
    deadLetter: "http://127.0.0.1:41002/dead-letter",
  };

  it("creates every pipeline's topic and push subscription, and the dead-letter pair, with their delivery settings", async () => {
    await provisionSubscriptions(pubsub, topology, projectId, endpoints);
    const [topics] = await pubsub.getTopics();
    expect(topics.map((t) => t.name.split("/").pop()).sort()).toEqual(
      [topology.deadLetterTopic, "tally-work-alpha", "tally-work-beta"].sort(),
    );

    const [work] = await pubsub.subscription(alpha.workSubscription).getMetadata();
    expect(work.topic).toBe(`projects/${projectId}/topics/tally-work-alpha`);
    expect(work.pushConfig?.pushEndpoint).toBe(endpoints.workers.alpha);
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

    // beta: its own topic, endpoint and settings.
    const [other] = await pubsub.subscription(beta.workSubscription).getMetadata();
    expect(other.topic).toBe(`projects/${projectId}/topics/tally-work-beta`);
    expect(other.pushConfig?.pushEndpoint).toBe(endpoints.workers.beta);
    expect(other.ackDeadlineSeconds).toBe(12);
    expect(other.deadLetterPolicy?.maxDeliveryAttempts).toBe(9);

    const [dead] = await pubsub.subscription(topology.deadLetterSubscription).getMetadata();
    expect(dead.topic).toBe(`projects/${projectId}/topics/${topology.deadLetterTopic}`);
    expect(dead.pushConfig?.pushEndpoint).toBe(endpoints.deadLetter);
    expect(dead.deadLetterPolicy ?? null).toBeNull();
  });

  it("is idempotent and updates an existing subscription's endpoint", async () => {
    const moved = { ...endpoints, workers: { ...endpoints.workers, alpha: "http://127.0.0.1:41003/" } };
    await provisionSubscriptions(pubsub, topology, projectId, moved);
    const [work] = await pubsub.subscription(alpha.workSubscription).getMetadata();
    expect(work.pushConfig?.pushEndpoint).toBe(moved.workers.alpha);
    expect(work.deadLetterPolicy?.maxDeliveryAttempts).toBe(7);
  });

  it("derives every setting from the topology, and refuses a pipeline without an endpoint", () => {
    const [work] = subscriptionSpecs(topology, "p", endpoints);
    expect(work!.name).toBe("tally-work-alpha-push");
    expect(work!.metadata.ackDeadlineSeconds).toBe(topology.delivery.ackDeadlineSeconds);
    expect(() =>
      subscriptionSpecs(topology, "p", { ...endpoints, workers: { alpha: endpoints.workers.alpha } }),
    ).toThrow("no local push endpoint for pipeline beta");
  });
});
