// Per-pipeline names (functions/topology.ts): what the stack and the local stack both build from.
// Names fit the platform's limits — hashed, not cut, when too long — and collisions are refused,
// naming the pipelines, instead of two pipelines (or a pipeline and the dead-letter topic) sharing a
// resource.
import { describe, expect, it } from "vitest";
import { buildTopology, fitName, nameLimits, pipelineTopology } from "../../functions/topology";

const accountIdRule = /^[a-z]([-a-z0-9]*[a-z0-9])$/;

describe("per-pipeline topology", () => {
  it("names each pipeline's topic, subscription, worker service and account from the prefix", () => {
    const t = buildTopology({ prefix: "tally-dev", pipelines: [{ name: "demo" }, { name: "text-stats" }] });
    expect(pipelineTopology(t, "text-stats")).toMatchObject({
      workTopic: "tally-dev-work-text-stats",
      workSubscription: "tally-dev-work-text-stats-push",
      workerService: "tally-dev-worker-text-stats",
      workerAccountId: "tally-dev-w-text-stats",
    });
    expect(() => pipelineTopology(t, "nope")).toThrow(
      'pipeline "nope" has no work topic (known: demo, text-stats)',
    );
  });

  it("long names keep their beginning and get a hash, within the limits and still distinct", () => {
    const prefix = "abcdefghij-klmnopqrs"; // 20 characters, the stack's maximum
    const long = "inference-with-a-rather-long-pipeline-name-a";
    const sibling = "inference-with-a-rather-long-pipeline-name-b";
    const t = buildTopology({ prefix, pipelines: [{ name: long }, { name: sibling }] });
    const [a, b] = [pipelineTopology(t, long), pipelineTopology(t, sibling)];
    for (const x of [a, b]) {
      expect(x.workerAccountId.length).toBeLessThanOrEqual(nameLimits.accountId);
      expect(x.workerAccountId.length).toBeGreaterThanOrEqual(6);
      expect(x.workerAccountId).toMatch(accountIdRule);
      expect(x.workerService.length).toBeLessThanOrEqual(nameLimits.service);
      expect(x.workerService).toMatch(/^[a-z]([-a-z0-9]*[a-z0-9])$/);
      expect(x.workerService.startsWith(`${prefix}-worker-infer`)).toBe(true);
      // Topics and subscriptions allow 255 characters: never shortened.
      expect(x.workTopic).toBe(`${prefix}-work-${x.pipeline}`);
    }
    expect(a.workerAccountId).not.toBe(b.workerAccountId);
    expect(a.workerService).not.toBe(b.workerService);
    // Stable: the same name gives the same result.
    expect(fitName(`${prefix}-w-${long}`, 30)).toBe(a.workerAccountId);
    expect(fitName("short-enough", 30)).toBe("short-enough");
  });

  it("a pipeline whose names would collide with the dead-letter topic is refused, naming it", () => {
    expect(() => buildTopology({ prefix: "tally-dev", pipelines: [{ name: "dead-letter" }] })).toThrow(
      "pipeline dead-letter's work topic and the dead-letter topic would share the topic name tally-dev-work-dead-letter",
    );
    expect(() => buildTopology({ prefix: "tally-dev", pipelines: [{ name: "dead-letter-parked" }] })).toThrow(
      /the parking topic would share the topic name tally-dev-work-dead-letter-parked/,
    );
  });

  it("per-pipeline delivery settings are validated, naming the pipeline", () => {
    expect(() =>
      buildTopology({
        prefix: "tally-dev",
        pipelines: [{ name: "demo", delivery: { ackDeadlineSeconds: 30, workerTimeoutSeconds: 60 } }],
      }),
    ).toThrow("pipeline demo: workerTimeoutSeconds (60) must fit inside ackDeadlineSeconds (30)");
  });
});
