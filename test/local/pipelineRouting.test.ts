// Each pipeline a deployable unit, locally (issue #17 §1): the local stack runs one worker group per
// pipeline, each behind its own front door and fed by its own pipeline's subscription, with that
// pipeline's delivery settings. An item of pipeline X is delivered to X's workers only: every
// worker's log lines for an item are checked against the group that ran it. A doorbell that reaches
// the wrong pipeline's worker is acknowledged untouched.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PubSub } from "@google-cloud/pubsub";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fetchAllItems } from "../../local/invariant";
import { type LocalStack, startLocalStack } from "../../local/localStack";
import { waitFor } from "../../local/waitFor";

interface WorkerEvent {
  source: string;
  event: string;
  batchId?: string;
  itemId?: string;
}

describe("one worker group per pipeline", () => {
  let stack: LocalStack;
  let pubsub: PubSub;
  let dataDir: string;
  const events: WorkerEvent[] = [];

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "tally-routing-"));
    stack = await startLocalStack({
      port: 0,
      workers: 2,
      tickSeconds: 1,
      dataDir: join(dataDir, "data"),
      delivery: {
        leaseSeconds: 10,
        minimumBackoffSeconds: 1,
        maximumBackoffSeconds: 5,
        ackDeadlineSeconds: 60,
      },
      // text-stats runs with its own ack deadline and request timeout, as tally:pipelines would set them.
      pipelineDelivery: { "text-stats": { ackDeadlineSeconds: 30, workerTimeoutSeconds: 25 } },
      quiet: true,
      output: () => {},
      onLog: (source, line) => {
        if (!source.startsWith("worker ") || !line.startsWith("{")) return;
        try {
          const e = JSON.parse(line) as Omit<WorkerEvent, "source">;
          if (e.event) events.push({ source, event: e.event, batchId: e.batchId, itemId: e.itemId });
        } catch {
          // not a structured line
        }
      },
    });
    pubsub = new PubSub({
      projectId: stack.projectId,
      apiEndpoint: stack.emulators.pubsubHost,
      emulatorMode: true,
    });
  });

  afterAll(async () => {
    await pubsub?.close();
    await stack?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  const submit = async (body: unknown) => {
    const res = await fetch(`${stack.urls.coordinator}/v1/batches`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    expect(res.status, await res.clone().text()).toBe(201);
  };
  const finalStatus = (batchId: string) =>
    waitFor(
      `batch ${batchId} final`,
      async () => {
        const res = await fetch(`${stack.urls.coordinator}/v1/batches/${batchId}`);
        const { status } = (await res.json()) as { status: string };
        return ["succeeded", "partial", "failed", "cancelled"].includes(status) ? status : null;
      },
      60_000,
      100,
    );
  const groupOf = (pipeline: string) => stack.pipeline(pipeline).workers.map((w) => w.name);

  it("provisions each pipeline's own topic and subscription, with its own delivery settings", async () => {
    expect(stack.pipelines.map((x) => x.pipeline)).toEqual(["demo", "text-stats"]);
    expect(groupOf("demo")).toEqual(["worker 1", "worker 2"]);
    expect(groupOf("text-stats")).toEqual(["worker 3", "worker 4"]);
    const [demoSub] = await pubsub
      .subscription(stack.pipeline("demo").topology.workSubscription)
      .getMetadata();
    const [textSub] = await pubsub
      .subscription(stack.pipeline("text-stats").topology.workSubscription)
      .getMetadata();
    expect(demoSub.topic).toBe(`projects/${stack.projectId}/topics/tally-work-demo`);
    expect(demoSub.pushConfig?.pushEndpoint).toBe(`${stack.pipeline("demo").frontDoor.url}/`);
    expect(demoSub.ackDeadlineSeconds).toBe(60);
    expect(textSub.topic).toBe(`projects/${stack.projectId}/topics/tally-work-text-stats`);
    expect(textSub.pushConfig?.pushEndpoint).toBe(`${stack.pipeline("text-stats").frontDoor.url}/`);
    expect(textSub.ackDeadlineSeconds).toBe(30);
  });

  it("an item of each pipeline is delivered to that pipeline's workers only", async () => {
    const n = 12;
    await submit({
      id: "route-demo",
      pipeline: "demo",
      items: Array.from({ length: n }, (_, i) => ({ id: `d${i}`, payload: { value: i, sleepMs: 50 } })),
    });
    await submit({
      id: "route-text",
      pipeline: "text-stats",
      items: Array.from({ length: n }, (_, i) => ({
        id: `t${i}`,
        payload: { text: `words number ${i} here` },
      })),
    });
    expect(await finalStatus("route-demo")).toBe("succeeded");
    expect(await finalStatus("route-text")).toBe("succeeded");

    const leasedBy = (batchId: string) =>
      new Map(
        events
          .filter((e) => e.batchId === batchId && e.event === "item.leased")
          .map((e) => [e.itemId, e.source]),
      );
    const demoLeases = leasedBy("route-demo");
    const textLeases = leasedBy("route-text");
    // Every item was leased (and only by its own group); each group's workers saw no other pipeline's item.
    expect(demoLeases.size).toBe(n);
    expect(textLeases.size).toBe(n);
    for (const source of demoLeases.values()) expect(groupOf("demo")).toContain(source);
    for (const source of textLeases.values()) expect(groupOf("text-stats")).toContain(source);
    const touched = (batchId: string) =>
      new Set(events.filter((e) => e.batchId === batchId).map((e) => e.source));
    for (const source of touched("route-demo")) expect(groupOf("demo"), source).toContain(source);
    for (const source of touched("route-text")) expect(groupOf("text-stats"), source).toContain(source);
    // The demo front door forwarded to demo's workers only, and the text-stats one to its own.
    for (const name of Object.keys(stack.pipeline("demo").frontDoor.stats().forwarded))
      expect(groupOf("demo")).toContain(name);
    for (const name of Object.keys(stack.pipeline("text-stats").frontDoor.stats().forwarded))
      expect(groupOf("text-stats")).toContain(name);
  });

  it("a doorbell on the wrong pipeline's topic is acknowledged untouched by that pipeline's worker", async () => {
    const [before] = await fetchAllItems(stack.urls.coordinator, "route-text");
    expect(before?.status).toBe("succeeded");
    await pubsub.topic(stack.pipeline("demo").topology.workTopic).publishMessage({
      data: Buffer.alloc(0),
      attributes: { batchId: "route-text", itemId: before!.itemId, generation: "1" },
    });
    const misrouted = await waitFor(
      "the demo worker to refuse the text-stats item",
      () => events.find((e) => e.event === "item.misrouted" && e.batchId === "route-text") ?? null,
      30_000,
      50,
    );
    expect(groupOf("demo")).toContain(misrouted.source);
    const [after] = await fetchAllItems(stack.urls.coordinator, "route-text");
    expect(after).toMatchObject({ status: "succeeded", attempt: before!.attempt });
  });
});
