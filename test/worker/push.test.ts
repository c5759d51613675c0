// The worker end to end: real Pub/Sub push from the emulator (through a loopback switchboard that
// counts deliveries) to the worker served by the Functions Framework, the Firestore emulator as the
// ledger and DuckDB as the sink. Covers success, transient/permanent errors, exhaustion, timeouts,
// dead-lettering, duplicate deliveries, heartbeats, poison, the unwrapped push form and shutdown.
import type { Message } from "@google-cloud/pubsub";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { itemKey } from "../../functions/adapters/firestore/layout";
import { FirestoreLedger } from "../../functions/adapters/firestoreLedger";
import { PubSubWorkQueue } from "../../functions/adapters/pubsubWorkQueue";
import type { Item } from "../../functions/core/model";
import { testFirestore, testPubSub, uniqueProjectId, waitFor } from "../support/cloud";
import { harnessWorkTopic } from "../support/harnessTopics";
import { Switchboard } from "./support/switchboard";
import { executions, testPipelineLookup } from "./support/testPipelines";
import {
  buildDeps,
  envelope,
  type PushTopology,
  post,
  provisionPush,
  type ServedWorker,
  serveWorker,
  submitBatch,
  tempDataDir,
  testConfig,
} from "./support/workerHarness";

const projectId = uniqueProjectId("worker");
const db = testFirestore(projectId);
const pubsub = testPubSub(projectId);
const data = tempDataDir();
const config = testConfig(projectId, data.dir);

const pipelines = testPipelineLookup;

let deps: Awaited<ReturnType<typeof buildDeps>>;
let worker: ServedWorker;
let switchboard: Switchboard;
let topology: PushTopology;
const deadLettered: Message[] = [];

beforeAll(async () => {
  deps = await buildDeps(config, db, pubsub);
  worker = await serveWorker(deps, { pipelines });
  switchboard = new Switchboard();
  await switchboard.start();
  switchboard.target = worker.url;
  topology = await provisionPush(pubsub, config, switchboard.url);
  topology.deadLetters.on("message", (m: Message) => {
    deadLettered.push(m);
    m.ack();
  });
});

afterAll(async () => {
  await topology?.deadLetters.close();
  await topology?.close();
  await worker?.close();
  await switchboard?.close();
  await deps?.close();
  await pubsub.close();
  await db.terminate();
  data.remove();
});

// The tests read the ledger through their own adapter, so the worker's operation counts stay its own.
const probe = new FirestoreLedger(db);
const item = async (batchId: string, itemId: string): Promise<Item> => {
  const found = await probe.getItem(batchId, itemId);
  if (!found) throw new Error(`item ${batchId}/${itemId} not found`);
  return found;
};
const terminal = (batchId: string, itemId: string) =>
  waitFor(`${itemId} terminal`, async () => {
    const i = await item(batchId, itemId);
    return i.status === "succeeded" || i.status === "failed" ? i : null;
  });
const finalized = (batchId: string) =>
  waitFor(`batch ${batchId} finalized`, async () => {
    const b = await probe.getBatch(batchId);
    return b && ["succeeded", "partial", "failed"].includes(b.status) ? b : null;
  });
/** Waits until `n` deliveries of the item were answered (or dropped) and returns their statuses. */
const answered = (itemId: string, n: number) =>
  waitFor(`${n} answered deliveries of ${itemId}`, () => {
    const d = switchboard.deliveriesOf(itemId);
    return d.length >= n && d.every((x) => x.status !== 0) ? d : null;
  });
const events = (event: string, itemId?: string) =>
  deps.logs.filter((l) => l.event === event && (itemId === undefined || l.itemId === itemId));

describe("success path", () => {
  it("publish → succeeded with the result stored, batch finalized and exported, constant ledger ops per item", async () => {
    const items = Array.from({ length: 10 }, (_, i) => ({ itemId: `ok-${i}`, payload: { value: i } }));
    const { batchId, refs } = await submitBatch(deps, "demo", items, { publish: false });
    const before = { ...deps.ledger.ops };
    const ledgerCalls = Object.fromEntries(
      (
        [
          "getBatch",
          "leaseItem",
          "heartbeat",
          "checkpointStep",
          "completeItem",
          "releaseItem",
          "hasLiveItems",
        ] as const
      ).map((m) => [m, vi.spyOn(deps.ledger, m)]),
    );
    await deps.queue.publish("demo", refs);
    const batch = await finalized(batchId);
    expect(batch.status).toBe("succeeded");
    expect(batch.summary?.counts).toMatchObject({ total: 10, succeeded: 10, failed: 0 });
    for (const i of items) {
      const stored = await item(batchId, i.itemId);
      expect(stored).toMatchObject({
        status: "succeeded",
        attempt: 1,
        result: { value: i.payload.value, attempt: 1, steps: 1 },
      });
      // A one-step item checkpoints nothing: the completion carries the result.
      expect(stored.steps).toEqual({});
      expect((await answered(i.itemId, 1)).map((d) => d.status)).toEqual([200]);
    }
    expect(await deps.sink.countRows(batchId)).toBe(10);
    // Ops (DESIGN.md §9): per item one lease transaction (1 read, 1 write), one completion
    // transaction (1 read, 1 write) and one "anything left?" query (1 read); no heartbeat or
    // checkpoint for a short one-step item; the batch's pipeline is read once per worker instance.
    const calls = Object.fromEntries(
      Object.entries(ledgerCalls).map(([m, spy]) => [m, spy.mock.calls.length]),
    );
    for (const spy of Object.values(ledgerCalls)) spy.mockRestore();
    expect(calls).toEqual({
      getBatch: 1,
      leaseItem: 10,
      heartbeat: 0,
      checkpointStep: 0,
      completeItem: 10,
      releaseItem: 0,
      hasLiveItems: 10,
    });
    const writes = deps.ledger.ops.writes - before.writes;
    const reads = deps.ledger.ops.reads - before.reads;
    console.log(
      `ledger ops for a batch of 10 one-step items, worker path + finalization: ${writes} writes, ${reads} reads, ${deps.ledger.ops.aggregations - before.aggregations} count() aggregations`,
    );
  });

  it("runs the multi-step text-stats pipeline, checkpointing every step but the last", async () => {
    const text = "The cat sat. The cat ran! A dog barked at the cat?";
    const { batchId } = await submitBatch(deps, "text-stats", [
      { itemId: "text-1", payload: { text, language: "en" } },
    ]);
    const done = await terminal(batchId, "text-1");
    expect(done.status).toBe("succeeded");
    expect(done.result).toMatchObject({ words: 12, distinctWords: 8, sentences: 3, language: "en" });
    // English stop words (the, a, at) are left out of the top words.
    expect((done.result as { topWords: unknown[] }).topWords).toEqual([
      { word: "cat", count: 3 },
      { word: "barked", count: 1 },
      { word: "dog", count: 1 },
      { word: "ran", count: 1 },
      { word: "sat", count: 1 },
    ]);
    expect(Object.keys(done.steps).sort()).toEqual(["count", "normalize", "tokenize"]);
  });
});

describe("errors and retries", () => {
  it("retries transient failures with the subscription's backoff, recording each attempt", async () => {
    const { batchId } = await submitBatch(deps, "demo", [
      { itemId: "flaky", payload: { failTimes: 2, value: "v" } },
    ]);
    const done = await terminal(batchId, "flaky");
    expect(done).toMatchObject({ status: "succeeded", attempt: 3, result: { value: "v", attempt: 3 } });
    expect(done.lastError).toMatchObject({
      kind: "transient",
      message: expect.stringContaining("transient failure 2 of 2"),
    });
    const deliveries = await answered("flaky", 3);
    expect(deliveries.map((d) => d.status)).toEqual([500, 500, 200]);
    // Redelivered after the retry policy's backoff (1–2 s), not at once.
    for (let i = 1; i < deliveries.length; i++)
      expect(deliveries[i]!.at - deliveries[i - 1]!.at).toBeGreaterThanOrEqual(900);
    expect(events("item.released", "flaky")).toHaveLength(2);
  });

  it("fails a permanent error at once, acknowledged and never redelivered", async () => {
    // The second item outlives the maximum backoff, so a redelivery of the first would show up.
    const { batchId } = await submitBatch(deps, "demo", [
      { itemId: "doomed", payload: { permanent: true } },
      { itemId: "slow-ok", payload: { sleepMs: 3000 } },
    ]);
    const batch = await finalized(batchId);
    const doomed = await item(batchId, "doomed");
    expect(doomed).toMatchObject({ status: "failed", attempt: 1, error: { kind: "permanent" } });
    expect(doomed.error?.message).toContain("permanent failure requested");
    expect((await answered("doomed", 1)).map((d) => d.status)).toEqual([200]);
    expect(batch.status).toBe("failed"); // 1 of 2 failed: above the 5% threshold
    expect(batch.summary?.failedByKind).toEqual({ permanent: 1 });
    expect(await deps.sink.countRows(batchId)).toBe(1); // the good result is kept
  });

  it("fails the item as attempts_exhausted at the ledger's maximum and acknowledges", async () => {
    const { batchId } = await submitBatch(deps, "demo", [{ itemId: "hopeless", payload: { failTimes: 50 } }]);
    const done = await terminal(batchId, "hopeless");
    expect(done).toMatchObject({ status: "failed", attempt: 3, error: { kind: "attempts_exhausted" } });
    expect(done.error?.message).toMatch(
      /3 attempts used \(maximum 3\); last error: .*transient failure 3 of 50/,
    );
    expect((await answered("hopeless", 3)).map((d) => d.status)).toEqual([500, 500, 200]);
  });

  it("aborts a step past its timeout (even one ignoring its signal): transient, then failed as timeout", async () => {
    const { batchId } = await submitBatch(deps, "test-stuck", [{ itemId: "stuck", payload: {} }]);
    const done = await terminal(batchId, "stuck");
    expect(done).toMatchObject({ status: "failed", attempt: 2, error: { kind: "timeout" } });
    expect(done.error?.message).toContain("step stuck timed out after 1 s");
    expect(done.lastError?.kind).toBe("timeout");
    expect((await answered("stuck", 2)).map((d) => d.status)).toEqual([500, 200]);
  });

  it("classifies third-party errors through the pipeline's classifyError", async () => {
    const { batchId } = await submitBatch(
      deps,
      "test-classified",
      [
        { itemId: "violation", payload: { violation: true } },
        { itemId: "outage", payload: {} },
      ],
      { publish: false },
    );
    const permanent = await post(worker.url, envelope({ batchId, itemId: "violation", generation: "1" }));
    expect(permanent).toMatchObject({ status: 200, body: { outcome: "failed", kind: "permanent" } });
    expect(await item(batchId, "violation")).toMatchObject({
      status: "failed",
      attempt: 1,
      error: { kind: "permanent", message: "step call: policy violation: content refused" },
    });
    const transient = await post(worker.url, envelope({ batchId, itemId: "outage", generation: "1" }));
    expect(transient).toMatchObject({ status: 500, body: { error: { code: "transient_failure" } } });
    expect(await item(batchId, "outage")).toMatchObject({
      status: "pending",
      attempt: 1,
      lease: null,
      lastError: { kind: "transient", message: "step call: upstream answered 503" },
    });
  });

  it("dead-letters a message whose deliveries all crash, after maxDeliveryAttempts", async () => {
    switchboard.crashItems.add("crasher");
    const { batchId } = await submitBatch(deps, "demo", [{ itemId: "crasher", payload: {} }]);
    const dead = await waitFor(
      "the dead letter",
      () => deadLettered.find((m) => m.attributes.itemId === "crasher" && m.attributes.batchId === batchId),
      60_000,
    );
    expect(dead.attributes).toMatchObject({
      batchId,
      itemId: "crasher",
      generation: "1",
      CloudPubSubDeadLetterSourceDeliveryCount: "5",
    });
    // Each of the 5 delivery attempts reached the endpoint (the emulator's Java HTTP client also
    // re-sends a POST once on a dropped connection, so there may be up to twice as many requests).
    expect(switchboard.deliveriesOf("crasher").length).toBeGreaterThanOrEqual(
      config.topology.delivery.maxDeliveryAttempts,
    );
    // The worker never saw it; recording `dead_lettered` is the dead-letter receiver's job.
    expect(await item(batchId, "crasher")).toMatchObject({ status: "pending", attempt: 0 });
  });
});

describe("duplicates", () => {
  it("runs a doorbell published 5 times once, with one result", async () => {
    executions.clear();
    const { batchId, refs } = await submitBatch(
      deps,
      "test-counting",
      [{ itemId: "dup-pub", payload: { sleepMs: 1500 } }],
      {
        publish: false,
      },
    );
    await deps.queue.publish("test-counting", [refs[0]!, refs[0]!, refs[0]!, refs[0]!, refs[0]!]);
    await finalized(batchId);
    await answered("dup-pub", 5);
    expect(executions.get("dup-pub")).toBe(1);
    const done = await item(batchId, "dup-pub");
    expect(done).toMatchObject({ status: "succeeded", attempt: 1, result: { execution: 1 } });
    expect(switchboard.deliveriesOf("dup-pub").map((d) => d.status)).toEqual([200, 200, 200, 200, 200]);
    expect(events("item.idempotent_skip", "dup-pub")).toHaveLength(4);
    expect(await deps.sink.countRows(batchId)).toBe(1);
  });

  it("runs 5 concurrent deliveries of the same doorbell once", async () => {
    executions.clear();
    const { batchId } = await submitBatch(
      deps,
      "test-counting",
      [{ itemId: "dup-post", payload: { sleepMs: 500 } }],
      {
        publish: false,
      },
    );
    const attrs = { batchId, itemId: "dup-post", generation: "1" };
    const answers = await Promise.all(Array.from({ length: 5 }, () => post(worker.url, envelope(attrs))));
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200]);
    const outcomes = answers.map((a) => (a.body as { outcome: string }).outcome).sort();
    expect(outcomes).toEqual(["skipped", "skipped", "skipped", "skipped", "succeeded"]);
    expect(executions.get("dup-post")).toBe(1);
    expect(await item(batchId, "dup-post")).toMatchObject({ status: "succeeded", attempt: 1 });
  });
});

describe("leases", () => {
  it("keeps the lease of a step longer than the lease through heartbeats", async () => {
    // A worker with a 2 s lease; its 6 s step must keep the item from any other delivery.
    const shortConfig = testConfig(projectId, data.dir, { TALLY_LEASE_SECONDS: "2" });
    const shortDeps = { ...deps, config: shortConfig };
    const shortWorker = await serveWorker(shortDeps, { pipelines });
    switchboard.target = shortWorker.url;
    try {
      executions.clear();
      const { batchId, refs } = await submitBatch(deps, "test-counting", [
        { itemId: "long", payload: { sleepMs: 6000 } },
      ]);
      const leased = await waitFor("leased", async () => {
        const i = await item(batchId, "long");
        return i.status === "running" ? i : null;
      });
      // Once the lease has been extended past its first expiry, a second doorbell must be skipped.
      await waitFor(
        "the lease extended past its first expiry",
        async () =>
          Date.now() > leased.lease!.until + 500 &&
          ((await item(batchId, "long")).lease?.until ?? 0) > Date.now(),
        15_000,
      );
      await deps.queue.publish("test-counting", refs);
      const done = await terminal(batchId, "long");
      expect(done).toMatchObject({ status: "succeeded", attempt: 1, result: { execution: 1, attempt: 1 } });
      expect(executions.get("long")).toBe(1);
      expect(done.heartbeatAt!).toBeGreaterThan(leased.heartbeatAt! + 2000);
      await waitFor("the duplicate answered", () => switchboard.deliveriesOf("long").length === 2);
      expect(events("item.idempotent_skip", "long")[0]).toMatchObject({ reason: "leased_by_other" });
    } finally {
      switchboard.target = worker.url;
      await shortWorker.close();
    }
  });

  it("stops a run whose lease was taken over and answers non-2xx without writing", async () => {
    const shortConfig = testConfig(projectId, data.dir, { TALLY_LEASE_SECONDS: "1" });
    const shortWorker = await serveWorker({ ...deps, config: shortConfig }, { pipelines });
    try {
      const { batchId } = await submitBatch(
        deps,
        "test-counting",
        [{ itemId: "stolen", payload: { sleepMs: 10_000 } }],
        {
          publish: false,
        },
      );
      const answer = post(shortWorker.url, envelope({ batchId, itemId: "stolen", generation: "1" }));
      await waitFor("leased", async () => (await item(batchId, "stolen")).status === "running");
      // Another holder takes the item (as a redrive + redelivery would).
      await db
        .doc(`batches/${batchId}/items/${itemKey(batchId, "stolen").docId}`)
        .update({ leaseOwner: "someone-else", leaseUntil: Date.now() + 60_000 });
      const res = await answer;
      expect(res.status).toBe(503);
      expect(res.body).toMatchObject({ error: { code: "lease_lost" } });
      expect(await item(batchId, "stolen")).toMatchObject({
        status: "running",
        lease: { owner: "someone-else" },
      });
    } finally {
      await shortWorker.close();
    }
  });
});

describe("delivery forms and poison", () => {
  it("acknowledges poison (bad attributes, unknown batch, unknown item) and logs it at ERROR with the message id", async () => {
    const topic = pubsub.topic(harnessWorkTopic(config.topology));
    const { batchId } = await submitBatch(deps, "demo", [], { publish: false });
    const ids = await Promise.all([
      topic.publishMessage({ data: Buffer.from("junk"), attributes: { foo: "bar" } }),
      topic.publishMessage({
        data: Buffer.alloc(0),
        attributes: { batchId: "no-such-batch", itemId: "x", generation: "1" },
      }),
      topic.publishMessage({
        data: Buffer.alloc(0),
        attributes: { batchId, itemId: "no-such-item", generation: "1" },
      }),
      topic.publishMessage({
        data: Buffer.alloc(0),
        attributes: { batchId, itemId: "x", generation: "one" },
      }),
    ]);
    const poisonLogs = await waitFor("4 poison logs", () => {
      const found = ids.map((id) =>
        deps.logs.find((l) => l.event === "message.poison" && l.messageId === id),
      );
      return found.every(Boolean) ? found : null;
    });
    for (const l of poisonLogs) expect(l!.severity).toBe("ERROR");
    expect(poisonLogs.map((l) => l!.reason)).toEqual([
      expect.stringContaining("attribute batchId is missing"),
      "unknown batch no-such-batch",
      `unknown item no-such-item in batch ${batchId}`,
      expect.stringContaining("attribute generation must be a non-negative integer"),
    ]);
    expect(worker.handler.stats.poison).toBeGreaterThanOrEqual(4);
    for (const id of ids)
      await waitFor(`poison ${id} acknowledged`, () =>
        switchboard.deliveries.some((d) => d.messageId === id && d.status === 200),
      );
    // Never redelivered: an item that outlives the maximum backoff finishes, and still each poison
    // message was delivered once.
    const marker = await submitBatch(deps, "demo", [{ itemId: "after-poison", payload: { sleepMs: 2500 } }]);
    await terminal(marker.batchId, "after-poison");
    for (const id of ids) expect(switchboard.deliveries.filter((d) => d.messageId === id)).toHaveLength(1);
  });

  it("accepts the unwrapped push form (payload unwrapping with metadata headers)", async () => {
    // A topic of its own whose only subscription pushes unwrapped, through a recording front of its
    // own: the wrapped work subscription never sees this doorbell, so only the unwrapped delivery
    // can complete the item.
    const unwrappedTopic = `${harnessWorkTopic(config.topology)}-unwrapped`;
    const front = new Switchboard();
    await front.start();
    front.target = worker.url;
    const [topic] = await pubsub.createTopic(unwrappedTopic);
    const [sub] = await topic.createSubscription(`${unwrappedTopic}-push`, {
      pushConfig: { pushEndpoint: front.url, noWrapper: { writeMetadata: true } },
      ackDeadlineSeconds: 60,
    });
    try {
      const { batchId, refs } = await submitBatch(
        deps,
        "demo",
        [{ itemId: "unwrapped", payload: { value: 7 } }],
        { publish: false },
      );
      await new PubSubWorkQueue(pubsub, () => unwrappedTopic).publish("demo", refs);
      const done = await terminal(batchId, "unwrapped");
      expect(done).toMatchObject({ status: "succeeded", attempt: 1, result: { value: 7 } });
      const delivered = await waitFor("the unwrapped delivery answered", () => {
        const d = front.deliveriesOf("unwrapped");
        return d.length > 0 && d.every((x) => x.status !== 0) ? d : null;
      });
      expect(delivered.map((d) => ({ form: d.form, batchId: d.batchId, status: d.status }))).toEqual([
        { form: "unwrapped", batchId, status: 200 },
      ]);
      expect(events("item.succeeded", "unwrapped")).toHaveLength(1);
      expect(switchboard.deliveriesOf("unwrapped")).toEqual([]);
    } finally {
      await sub.delete().catch(() => {});
      await topic.delete().catch(() => {});
      await front.close();
    }
  });

  it("refuses requests that are not push deliveries with a specific error", async () => {
    const bad = await post(worker.url, { hello: "world" });
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ error: { code: "invalid_argument", details: [{ path: "body" }] } });
    const get = await fetch(worker.url);
    expect(get.status).toBe(405);
  });
});

describe("shutdown", () => {
  it("aborts running steps, releases their leases, answers 503 and refuses new deliveries", async () => {
    const leaving = await serveWorker(deps, { pipelines });
    const { batchId } = await submitBatch(
      deps,
      "demo",
      [{ itemId: "interrupted", payload: { sleepMs: 30_000 } }],
      {
        publish: false,
      },
    );
    const answer = post(leaving.url, envelope({ batchId, itemId: "interrupted", generation: "1" }));
    await waitFor("running", async () => (await item(batchId, "interrupted")).status === "running");
    const t0 = Date.now();
    await leaving.handler.shutdown();
    const res = await answer;
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(res.status).toBe(503);
    const released = await item(batchId, "interrupted");
    // The shutdown was not the item's fault: its attempt is given back.
    expect(released).toMatchObject({ status: "pending", lease: null, attempt: 0 });
    expect(released.lastError?.message).toContain("the worker shut down");
    const late = await post(leaving.url, envelope({ batchId, itemId: "interrupted", generation: "1" }));
    expect(late.status).toBe(503);
    await leaving.close();
  });
});
