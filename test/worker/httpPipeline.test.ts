// HTTP pipelines end to end (issue #17 §4): pipelines declared in TALLY_HTTP_PIPELINES (no code),
// submitted through the coordinator (which knows them from the registry), delivered by the Pub/Sub
// emulator's real push to the worker, calling a real HTTP service on 127.0.0.1. Covered: success
// with Tally's idempotency headers, declared and secret headers and an OIDC identity token from a
// fake metadata server; each error class (429 with a short Retry-After waited out in the step, 429
// with a long one, 503, 400 with its message, connection refused, timeout, an oversize answer); a
// two-step pipeline whose first step is not called again after a redelivery; and the target
// crashing mid-batch and coming back. Every batch is finalized and the ledger invariant
// (local/invariant.ts, through the API and the DuckDB file) holds.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FirestoreLedger } from "../../functions/adapters/firestoreLedger";
import { limits } from "../../functions/core/limits";
import type { Item } from "../../functions/core/model";
import { testFirestore, testPubSub, uniqueProjectId, waitFor } from "../support/cloud";
import {
  finalizedWithInvariant,
  serveWorkerStack,
  submit,
  TargetServer,
  type WorkerStack,
} from "./support/httpTarget";
import {
  type buildDeps,
  envelope,
  type PushTopology,
  post,
  type ServedWorker,
  serveWorker,
  setProcessEnv,
  submitBatch,
  tearDown,
  tempDataDir,
  testConfig,
} from "./support/workerHarness";

const projectId = uniqueProjectId("httpp");
const db = testFirestore(projectId);
const pubsub = testPubSub(projectId);
const data = tempDataDir();
const target = new TargetServer();
const probe = new FirestoreLedger(db);

// A fake metadata server: identity tokens for any audience, each call recorded.
const metadataCalls: Array<{ url: string; flavor: string | undefined }> = [];
let metadata: Server;
const fakeJwt = (audience: string) => {
  const part = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${part({ alg: "RS256" })}.${part({ aud: audience, exp: Math.floor(Date.now() / 1000) + 3600 })}.sig`;
};

let deps: Awaited<ReturnType<typeof buildDeps>>;
let worker: ServedWorker;
let coordinator: WorkerStack["coordinator"];
let topology: PushTopology;
let deadUrl: string;
let restoreEnv = () => {};

beforeAll(async () => {
  await target.start();
  metadata = createServer((req, res) => {
    metadataCalls.push({ url: req.url ?? "", flavor: req.headers["metadata-flavor"] as string | undefined });
    const audience = new URL(req.url ?? "/", "http://x").searchParams.get("audience") ?? "";
    res.writeHead(200, { "content-type": "text/plain" });
    res.end(fakeJwt(audience));
  });
  await new Promise<void>((resolve) => metadata.listen(0, "127.0.0.1", resolve));
  // A port nothing listens on.
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
  deadUrl = `http://127.0.0.1:${(closed.address() as AddressInfo).port}/nobody`;
  await new Promise<void>((resolve) => closed.close(() => resolve()));

  const declarations = [
    {
      name: "http-ok",
      url: target.url("/ok"),
      timeoutSeconds: 10,
      headers: { "x-team": "forecasting" },
      secretHeaders: { "x-api-key": "HTTP_TEST_API_KEY" },
    },
    { name: "http-oidc", url: target.url("/ok"), timeoutSeconds: 10, auth: "oidc" },
    { name: "http-429", url: target.url("/limited"), timeoutSeconds: 10 },
    { name: "http-429-long", url: target.url("/limited-long"), timeoutSeconds: 10 },
    { name: "http-503", url: target.url("/flaky"), timeoutSeconds: 10 },
    { name: "http-400", url: target.url("/bad"), timeoutSeconds: 10 },
    { name: "http-refused", url: deadUrl, timeoutSeconds: 10, maxAttempts: 2 },
    { name: "http-timeout", url: target.url("/slow"), timeoutSeconds: 1 },
    { name: "http-big", url: target.url("/big"), timeoutSeconds: 10 },
    {
      name: "http-steps",
      timeoutSeconds: 10,
      steps: [
        { name: "embed", url: target.url("/embed") },
        { name: "score", url: target.url("/score") },
      ],
    },
    { name: "http-crash", url: target.url("/crash"), timeoutSeconds: 10 },
  ];
  const json = JSON.stringify(declarations);
  restoreEnv = setProcessEnv({
    TALLY_HTTP_PIPELINES: json,
    GCE_METADATA_HOST: `127.0.0.1:${(metadata.address() as AddressInfo).port}`,
    HTTP_TEST_API_KEY: "s3cret",
  });
  const config = testConfig(projectId, data.dir, {
    TALLY_HTTP_PIPELINES: json,
    TALLY_MAX_ITEM_ATTEMPTS: "3",
    TALLY_MAX_DELIVERY_ATTEMPTS: "6",
  });
  // The worker finds the HTTP pipelines in the registry, as deployed (no `pipelines` option).
  ({ deps, worker, coordinator, topology } = await serveWorkerStack(config, db, pubsub));
});

afterAll(async () => {
  await tearDown(
    [
      topology?.deadLetters,
      topology,
      worker,
      coordinator,
      { close: () => target.stop() },
      {
        close: () => new Promise<void>((resolve) => (metadata ? metadata.close(() => resolve()) : resolve())),
      },
      deps,
    ],
    { pubsub, db, data },
  );
  restoreEnv();
});

const echo = (req: { body: unknown; itemId: string; step: string }) => ({
  status: 200,
  body: { echo: req.body, item: req.itemId, step: req.step },
});

let seq = 0;
/** Submits `n` items through the coordinator, waits for finalization, checks the invariant. */
async function runBatch(
  pipeline: string,
  n: number,
  payload: (i: number) => unknown = (i) => ({ value: i }),
) {
  const batchId = `${pipeline}-${++seq}-${Date.now().toString(36)}`;
  const items = Array.from({ length: n }, (_, i) => ({ id: `i${i}`, payload: payload(i) }));
  const answer = await submit(coordinator.url, { id: batchId, pipeline, items });
  expect(answer.status, JSON.stringify(answer.body)).toBe(201);
  const { batch } = await finalizedWithInvariant({
    ledger: probe,
    coordinatorUrl: coordinator.url,
    resultsPath: deps.config.env.TALLY_DUCKDB_PATH,
    batchId,
    itemIds: items.map((i) => i.id),
  });
  const stored = new Map<string, Item>();
  for (const i of items) stored.set(i.id, (await probe.getItem(batchId, i.id))!);
  return { batchId, batch, items: stored };
}

describe("HTTP pipelines: success", () => {
  it("POSTs the payload with Tally's idempotency headers, declared and secret headers; the JSON answer is the result", async () => {
    target.behaviours.set("/ok", echo);
    const { batchId, batch, items } = await runBatch("http-ok", 5);
    expect(batch.status).toBe("succeeded");
    for (const [id, item] of items) {
      expect(item).toMatchObject({ status: "succeeded", attempt: 1 });
      expect(item.result).toEqual({ echo: { value: Number(id.slice(1)) }, item: id, step: "call" });
      const calls = target.callsTo("/ok", id).filter((r) => r.batchId === batchId);
      expect(calls).toHaveLength(1);
      expect(calls[0]!.headers).toMatchObject({
        "content-type": "application/json",
        "x-tally-batch-id": batchId,
        "x-tally-item-id": id,
        "x-tally-step": "call",
        "x-tally-attempt": "1",
        "x-team": "forecasting",
        "x-api-key": "s3cret",
      });
      expect(calls[0]!.headers.authorization).toBeUndefined();
    }
    expect(metadataCalls).toHaveLength(0);
  });

  it('auth "oidc": each call carries an identity token for the target\'s origin, fetched once from the metadata server', async () => {
    target.behaviours.set("/ok", echo);
    const { batchId, batch } = await runBatch("http-oidc", 4);
    expect(batch.status).toBe("succeeded");
    const calls = target.requests.filter((r) => r.batchId === batchId);
    expect(calls).toHaveLength(4);
    const origin = `http://127.0.0.1:${target.port}`;
    for (const c of calls) {
      const token = /^Bearer ([^.]+)\.([^.]+)\.sig$/.exec(String(c.headers.authorization));
      expect(token, String(c.headers.authorization)).not.toBeNull();
      expect(JSON.parse(Buffer.from(token![2]!, "base64url").toString()).aud).toBe(origin);
    }
    // Cached until near its expiry: one metadata request for the batch (concurrent first calls share it).
    expect(metadataCalls).toHaveLength(1);
    expect(metadataCalls[0]).toEqual({
      url: `/computeMetadata/v1/instance/service-accounts/default/identity?audience=${encodeURIComponent(origin)}`,
      flavor: "Google",
    });
  });
});

describe("HTTP pipelines: each error class", () => {
  it("429 with a short Retry-After is transient and waited out inside the step: no attempt used", async () => {
    target.behaviours.set("/limited", (req, calls) =>
      calls === 1
        ? { status: 429, headers: { "retry-after": "1" }, body: { error: { message: "slow down" } } }
        : echo(req),
    );
    const { batchId, batch, items } = await runBatch("http-429", 2);
    expect(batch.status).toBe("succeeded");
    for (const [id, item] of items) {
      expect(item).toMatchObject({ status: "succeeded", attempt: 1 });
      const calls = target.callsTo("/limited", id).filter((r) => r.batchId === batchId);
      expect(calls).toHaveLength(2);
      // Retry-After: 1 honoured (the second call came at least a second after the first).
      expect(calls[1]!.at - calls[0]!.at).toBeGreaterThanOrEqual(990);
    }
  });

  it("429 with a Retry-After longer than the in-step bound is transient and honoured: no call before it", async () => {
    // 12 s: past the 10-s in-step wait, while Pub/Sub redelivers after 1–2 s here.
    target.behaviours.set("/limited-long", (req, calls) =>
      calls === 1 ? { status: 429, headers: { "retry-after": "12" }, body: "quota exceeded" } : echo(req),
    );
    const { batchId, items } = await runBatch("http-429-long", 1);
    expect(items.get("i0")).toMatchObject({ status: "succeeded", attempt: 2, notBefore: null });
    const released = deps.logs.filter((l) => l.event === "item.released" && l.batchId === batchId);
    expect(released).toHaveLength(1);
    expect(released[0]!.message).toContain("answered 429 (Retry-After 12 s): quota exceeded");
    expect(released[0]!.notBefore).toEqual(expect.any(String));
    const calls = target.callsTo("/limited-long").filter((r) => r.batchId === batchId);
    expect(calls).toHaveLength(2);
    expect(calls[1]!.at - calls[0]!.at).toBeGreaterThanOrEqual(12_000);
  });

  it("a delivery of an item not due yet uses no attempt: 429 not_due, or acknowledged one delivery short of dead-lettering", async () => {
    // A worker that waits at most 200 ms: the item below is due in a minute.
    const impatient = await serveWorker(deps, { admissionWaitMs: 200, instanceId: "impatient" });
    try {
      // Not published: only the test's own deliveries reach the item.
      const { batchId } = await submitBatch(deps, "http-429-long", [{ itemId: "d", payload: {} }], {
        publish: false,
      });
      // Take the item and release it as a Retry-After of 60 s would.
      const ref = { batchId, itemId: "d", generation: 1 };
      const taken = await probe.leaseItem(ref, "test-owner", 30_000, 3, Date.now());
      if (taken.kind !== "leased") throw new Error(`lease: ${taken.kind}`);
      const notBefore = Date.now() + 60_000;
      await probe.releaseItem(ref, "test-owner", { kind: "transient", message: "429" }, Date.now(), {
        notBefore,
      });
      const before = await probe.getItem(batchId, "d");
      expect(before).toMatchObject({ status: "pending", attempt: taken.item.attempt, notBefore });

      const message = (deliveryAttempt: number) => ({
        ...envelope({ batchId, itemId: "d", generation: "1" }),
        deliveryAttempt,
      });
      const early = await post(impatient.url, message(1));
      expect(early.status).toBe(429);
      expect(early.body).toMatchObject({
        error: { code: "not_due", details: { notBefore: new Date(notBefore).toISOString() } },
      });
      // maxDeliveryAttempts is 6 here: the 5th delivery is acknowledged rather than dead-lettered next.
      const last = await post(impatient.url, message(5));
      expect(last).toMatchObject({ status: 200, body: { outcome: "deferred" } });
      // Nothing was written: same attempt, still not due.
      expect(await probe.getItem(batchId, "d")).toMatchObject({
        status: "pending",
        attempt: taken.item.attempt,
        notBefore,
        updatedAt: before!.updatedAt,
      });
      expect(impatient.handler.stats.deferred).toBe(2);
    } finally {
      await impatient.close();
    }
  });

  it("503 is transient: released, retried, succeeded", async () => {
    target.behaviours.set("/flaky", (req, calls) =>
      calls === 1 ? { status: 503, body: { error: { message: "model warming up" } } } : echo(req),
    );
    const { batchId, items } = await runBatch("http-503", 3);
    for (const item of items.values()) expect(item).toMatchObject({ status: "succeeded", attempt: 2 });
    const released = deps.logs.filter((l) => l.event === "item.released" && l.batchId === batchId);
    expect(released).toHaveLength(3);
    expect(released[0]!.message).toContain("answered 503: model warming up");
  });

  it("400 is permanent: failed at once with the response's message", async () => {
    target.behaviours.set("/bad", () => ({
      status: 400,
      body: { error: { code: "invalid", message: "field 'text' is required" } },
    }));
    const { batchId, batch, items } = await runBatch("http-400", 2);
    expect(batch.status).toBe("failed");
    for (const [id, item] of items) {
      expect(item).toMatchObject({ status: "failed", attempt: 1, error: { kind: "permanent" } });
      expect(item.error!.message).toBe(
        `step call: POST ${target.url("/bad")} answered 400: field 'text' is required`,
      );
      expect(target.callsTo("/bad", id).filter((r) => r.batchId === batchId)).toHaveLength(1);
    }
  });

  it("connection refused is transient: retried until the pipeline's attempts are used", async () => {
    const { items } = await runBatch("http-refused", 1);
    const item = items.get("i0")!;
    expect(item).toMatchObject({ status: "failed", attempt: 2, error: { kind: "attempts_exhausted" } });
    expect(item.error!.message).toContain(`POST ${deadUrl} failed: ECONNREFUSED`);
  });

  it("a call that outlives the step's timeout is aborted and transient (kind timeout)", async () => {
    target.behaviours.set("/slow", (req, calls) => (calls === 1 ? { hang: true } : echo(req)));
    const { batchId, items } = await runBatch("http-timeout", 2);
    for (const item of items.values()) expect(item).toMatchObject({ status: "succeeded", attempt: 2 });
    const released = deps.logs.filter((l) => l.event === "item.released" && l.batchId === batchId);
    expect(released.map((l) => l.kind)).toEqual(["timeout", "timeout"]);
    // The item's timeout and the call's are both 1 s here; whichever fires first aborts the fetch.
    expect(released[0]!.message).toMatch(/timed out after (1 s|1000 ms)/);
  });

  it("an answer over the result cap is permanent, saying why", async () => {
    const big = { blob: "x".repeat(limits.maxResultBytes + 10) };
    target.behaviours.set("/big", () => ({ status: 200, body: big }));
    const { items } = await runBatch("http-big", 1);
    const item = items.get("i0")!;
    expect(item).toMatchObject({ status: "failed", attempt: 1, error: { kind: "permanent" } });
    expect(item.error!.message).toMatch(
      new RegExp(
        `answered 200 with a body of (more than )?\\d+ bytes; an item's result may hold at most ${limits.maxResultBytes} bytes`,
      ),
    );
  });
});

describe("HTTP pipelines: steps", () => {
  it("each step's output is checkpointed: after a redelivery the finished step is not called again", async () => {
    target.behaviours.set("/embed", (req) => ({
      status: 200,
      body: { vector: [1, 2, 3], item: req.itemId },
    }));
    target.behaviours.set("/score", (req, calls) =>
      calls === 1 ? { status: 500, body: "boom" } : { status: 200, body: { score: 0.9, saw: req.body } },
    );
    const { batchId, items } = await runBatch("http-steps", 3, (i) => ({ text: `t${i}` }));
    for (const [id, item] of items) {
      expect(item).toMatchObject({ status: "succeeded", attempt: 2 });
      expect(target.callsTo("/embed", id).filter((r) => r.batchId === batchId)).toHaveLength(1);
      const score = target.callsTo("/score", id).filter((r) => r.batchId === batchId);
      expect(score).toHaveLength(2);
      // A later step receives {payload, outputs}.
      expect(item.result).toEqual({
        score: 0.9,
        saw: { payload: { text: `t${id.slice(1)}` }, outputs: { embed: { vector: [1, 2, 3], item: id } } },
      });
      expect(score[1]!.step).toBe("score");
    }
  });
});

describe("HTTP pipelines: the target crashes mid-batch", () => {
  it("calls cut off or refused are retried; once the target is back every item succeeds, the invariant holds", async () => {
    let crashed = false;
    const port = target.port;
    target.behaviours.set("/crash", (req) => {
      // The 6th call cuts every connection and stops listening, as a crash would.
      if (!crashed && target.requests.filter((r) => r.path === "/crash").length === 6) {
        crashed = true;
        void target.stop();
        return { hang: true };
      }
      return { ...echo(req), delayMs: 20 };
    });
    const batchId = `http-crash-${Date.now().toString(36)}`;
    const items = Array.from({ length: 20 }, (_, i) => ({ id: `c${i}`, payload: { value: i } }));
    expect((await submit(coordinator.url, { id: batchId, pipeline: "http-crash", items })).status).toBe(201);
    // Wait until the crash has failed at least one attempt transiently, then bring the target back.
    await waitFor("a transient failure while the target is down", () =>
      deps.logs.some((l) => l.event === "item.released" && l.batchId === batchId),
    );
    await target.start(port);
    const { batch, report } = await finalizedWithInvariant({
      ledger: probe,
      coordinatorUrl: coordinator.url,
      resultsPath: deps.config.env.TALLY_DUCKDB_PATH,
      batchId,
      itemIds: items.map((i) => i.id),
    });
    expect(batch.status).toBe("succeeded");
    expect(report.sinkRows).toBe(20);
    const released = deps.logs.filter((l) => l.event === "item.released" && l.batchId === batchId);
    expect(released.length).toBeGreaterThan(0);
    expect(released.map((l) => String(l.message)).join("\n")).toMatch(
      /ECONNREFUSED|ECONNRESET|socket|terminated|other side closed/,
    );
  });
});
