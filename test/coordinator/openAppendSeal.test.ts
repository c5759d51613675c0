// The open/append/seal submission protocol (issue #15 items 9 and 4; docs/api.md "Submissions of any
// size") through the Functions Framework, as deployed: open → appends keyed by offset → seal. A
// re-sent range is a no-op, a gap or a conflicting item a 409 naming the offset or the position,
// appends after the seal or after termination are refused and store nothing; and a coordinator that
// dies after storing every item but before its cursor write leaves a batch that a re-send completes
// (200, not 409) and that the reconciler alone resumes, with each run reaching its crash point.
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { http } from "@google-cloud/functions-framework";
import { getTestServer } from "@google-cloud/functions-framework/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CrashPoint } from "../../functions/faults";
import { reconcileTick } from "../../functions/handlers/reconciler/reconcileTick";
import { createWorkerHandler } from "../../functions/handlers/worker";
import { waitFor } from "../support/cloud";
import {
  type CoordinatorHarness,
  type Doorbell,
  startCoordinatorHarness,
} from "./support/coordinatorHarness";

/** Batches whose next cursor write is a crash (the test arms them); hits counted per batch. */
const armed = new Set<string>();
const hits: Array<{ point: CrashPoint; batchId: string }> = [];

let h: CoordinatorHarness;
let worker: { url: string; close(): Promise<void> };
beforeAll(async () => {
  h = await startCoordinatorHarness({
    crashAt: (point, batchId) => {
      if (!armed.has(batchId)) return false;
      armed.delete(batchId);
      hits.push({ point, batchId });
      return true;
    },
  });
  // The worker, served as deployed; the test hands it the doorbells it drains (a push, by hand).
  const handler = createWorkerHandler(h.deps, { instanceId: "oas-worker" });
  const name = `oas-worker-${process.pid}`;
  http(name, handler);
  const server: Server = getTestServer(name);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  worker = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    close: async () => {
      await handler.shutdown();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
});
afterAll(async () => {
  await worker?.close();
  await h?.close();
});

const items = (from: number, n: number, payload = (i: number) => ({ value: i })) =>
  Array.from({ length: n }, (_, k) => ({ payload: payload(from + k) }));
const ndjson = (rows: unknown[]) => `${rows.map((r) => JSON.stringify(r)).join("\n")}\n`;
const post = (path: string, json: unknown) => h.request("POST", path, { json });

/** Delivers each doorbell to the worker, as the push subscription would. */
async function deliver(doorbells: Doorbell[]): Promise<void> {
  for (const d of doorbells) {
    const res = await fetch(worker.url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        message: {
          attributes: { batchId: d.batchId, itemId: d.itemId, generation: String(d.generation) },
          data: "",
          messageId: `m-${d.batchId}-${d.itemId}-${Math.random().toString(36).slice(2)}`,
        },
        subscription: "projects/p/subscriptions/s",
      }),
    });
    expect(res.status).toBeLessThan(300);
  }
}

/** Every item of `batchId` got at least one doorbell; the worker runs each; the batch is final. */
async function runToCompletion(batchId: string, n: number) {
  const ids = new Set<string>();
  const doorbells = await h.drainUntil(`doorbells of every item of ${batchId}`, (all) => {
    for (const d of all) if (d.batchId === batchId) ids.add(d.itemId);
    return ids.size >= n;
  });
  await deliver(doorbells.filter((d) => d.batchId === batchId));
  await waitFor(
    `batch ${batchId} final`,
    async () => (await h.ledger.getBatch(batchId))?.status === "succeeded",
  );
  const batch = await h.ledger.getBatch(batchId);
  expect(batch).toMatchObject({ status: "succeeded", total: n });
  expect(batch?.summary?.counts).toMatchObject({ total: n, succeeded: n, failed: 0 });
  expect(await h.deps.sink.countRows(batchId)).toBe(n);
}

describe("open / append / seal", () => {
  it("opens (201, then 200; 409 with another header), appends JSON and NDJSON by offset, seals, runs", async () => {
    const header = { id: "oas-1", pipeline: "demo", failureThreshold: 0.1 };
    const opened = await post("/v1/batches", { ...header, open: true });
    expect(opened.status).toBe(201);
    expect(opened.body).toMatchObject({
      id: "oas-1",
      status: "submitting",
      total: null,
      progress: { received: 0, cursor: 0, submissionComplete: false },
    });
    expect((await post("/v1/batches", { ...header, open: true })).status).toBe(200);
    const other = await post("/v1/batches", { ...header, failureThreshold: 0.2, open: true });
    expect(other.status).toBe(409);
    expect(other.body.error.details).toEqual([
      { path: "failureThreshold", problem: "the stored batch has 0.1" },
    ]);

    const a1 = await post("/v1/batches/oas-1:append", { offset: 0, items: items(0, 30) });
    expect(a1.status).toBe(200);
    expect(a1.body).toMatchObject({
      status: "submitting",
      progress: { received: 30, cursor: 30 },
      append: { offset: 0, items: 30, stored: 30, matched: 0, published: 30, received: 30 },
    });
    const a2 = await h.request("POST", "/v1/batches/oas-1:append?offset=30", {
      body: ndjson(items(30, 20)),
      headers: { "content-type": "application/x-ndjson" },
    });
    expect(a2.status).toBe(200);
    expect(a2.body.append).toMatchObject({ offset: 30, stored: 20, received: 50 });

    // The same range again (an answer that was lost): a no-op, nothing published.
    const again = await post("/v1/batches/oas-1:append", { offset: 20, items: items(20, 30) });
    expect(again.status).toBe(200);
    expect(again.body.append).toMatchObject({ stored: 0, matched: 30, published: 0, received: 50 });

    // Sealing short: 409 naming the missing offset.
    const short = await post("/v1/batches/oas-1:seal", { total: 60 });
    expect(short.status).toBe(409);
    expect(short.body.error.batch).toMatchObject({ id: "oas-1", received: 50 });
    expect(short.body.error.details).toEqual([
      { path: "total", problem: "the item at offset 50 is missing" },
    ]);

    const sealed = await post("/v1/batches/oas-1:seal", { total: 50 });
    expect(sealed.status).toBe(200);
    expect(sealed.body).toMatchObject({
      status: "running",
      total: 50,
      progress: { received: 50, cursor: 50, submissionComplete: true },
    });
    // Idempotent; another total is a 409.
    expect((await post("/v1/batches/oas-1:seal", { total: 50 })).status).toBe(200);
    const otherTotal = await post("/v1/batches/oas-1:seal", { total: 51 });
    expect(otherTotal.status).toBe(409);

    // After the seal: new items are refused (JSON 409 naming the state), nothing stored; the
    // acknowledged range is still a no-op.
    const late = await post("/v1/batches/oas-1:append", { offset: 50, items: items(50, 3) });
    expect(late.status).toBe(409);
    expect(late.body.error).toMatchObject({
      code: "batch_closed",
      batch: { id: "oas-1", status: "running" },
    });
    expect(late.body.error.message).toMatch(/batch "oas-1" is running: it accepts no more items/);
    expect((await post("/v1/batches/oas-1:append", { offset: 0, items: items(0, 5) })).status).toBe(200);
    expect(await h.ledger.countItems("oas-1")).toMatchObject({ total: 50 });

    await runToCompletion("oas-1", 50);
  });

  it("an open batch with dependencies: appends are stored unpublished, the seal records the total, the reconciler starts it", async () => {
    const opened = await post("/v1/batches", {
      id: "oas-dep",
      pipeline: "demo",
      dependsOn: ["oas-1"],
      open: true,
    });
    expect(opened.status).toBe(201);
    expect(opened.body.status).toBe("blocked");
    const a = await post("/v1/batches/oas-dep:append", { offset: 0, items: items(0, 6) });
    expect(a.status).toBe(200);
    expect(a.body.append).toMatchObject({ stored: 6, published: 0, received: 6 });
    const sealed = await post("/v1/batches/oas-dep:seal", { total: 6 });
    expect(sealed.status).toBe(200);
    expect(sealed.body).toMatchObject({
      status: "blocked",
      total: 6,
      progress: { submissionComplete: true },
    });
    // oas-1 (the dependency) finished in the test above: the next tick starts this batch.
    const tick = await reconcileTick(h.deps);
    expect(tick.errors).toBe(0);
    expect((await h.ledger.getBatch("oas-dep"))?.status).toBe("running");
    await runToCompletion("oas-dep", 6);
  });

  it("a gap is a 409 naming the expected offset; a conflicting item a 409 naming its position; neither stores anything", async () => {
    expect((await post("/v1/batches", { id: "oas-2", pipeline: "demo", open: true })).status).toBe(201);
    expect((await post("/v1/batches/oas-2:append", { offset: 0, items: items(0, 10) })).status).toBe(200);

    const gap = await post("/v1/batches/oas-2:append", { offset: 12, items: items(12, 5) });
    expect(gap.status).toBe(409);
    expect(gap.body.error).toMatchObject({ code: "conflict", batch: { id: "oas-2", received: 10 } });
    expect(gap.body.error.details).toEqual([
      { path: "offset", problem: "12 is past the stored prefix: expected 10" },
    ]);

    const changed: Array<{ payload: { value: unknown } }> = items(5, 10);
    changed[3] = { payload: { value: "eight" } };
    const conflicting = await post("/v1/batches/oas-2:append", { offset: 5, items: changed });
    expect(conflicting.status).toBe(409);
    expect(conflicting.body.error.details).toEqual([
      { path: "items[3].payload", problem: 'position 8: differs from the stored payload of item "8"' },
    ]);
    const otherId = await post("/v1/batches/oas-2:append", {
      offset: 9,
      items: [{ id: "x", payload: { value: 9 } }],
    });
    expect(otherId.status).toBe(409);
    expect(otherId.body.error.details[0]).toEqual({
      path: "items[0].id",
      problem: 'position 9 is stored as item "9", not "x"',
    });
    // Bad items: a 400 listing them; and a request over the item cap: 413.
    const bad = await post("/v1/batches/oas-2:append", {
      offset: 10,
      items: [{ payload: { sleepMs: -1 } }, { payload: { bogus: 1 } }],
    });
    expect(bad.status).toBe(400);
    expect(bad.body.error.details.map((d: { path: string }) => d.path)).toEqual([
      "items[0].payload.sleepMs",
      "items[1].payload.bogus",
    ]);
    expect(await h.ledger.countItems("oas-2")).toMatchObject({ total: 10 });
    expect((await h.ledger.getItem("oas-2", "8"))?.payload).toEqual({ value: 8 });

    const unknown = await post("/v1/batches/no-such-batch:append", { offset: 0, items: items(0, 1) });
    expect(unknown.status).toBe(404);
    expect((await h.request("PUT", "/v1/batches/oas-2:append")).status).toBe(405);
  });

  it("appends after termination are refused with a JSON 409 naming the state, and store nothing", async () => {
    expect((await post("/v1/batches", { id: "oas-3", pipeline: "demo", open: true })).status).toBe(201);
    expect((await post("/v1/batches/oas-3:append", { offset: 0, items: items(0, 4) })).status).toBe(200);
    expect((await h.request("POST", "/v1/batches/oas-3:cancel")).status).toBe(200);

    const late = await post("/v1/batches/oas-3:append", { offset: 4, items: items(4, 4) });
    expect(late.status).toBe(409);
    expect(late.body.error.code).toBe("batch_closed");
    expect(late.body.error.message).toMatch(/cancelled/);
    expect(late.body.error.batch.id).toBe("oas-3");
    const seal = await post("/v1/batches/oas-3:seal", { total: 4 });
    expect(seal.status).toBe(409);
    expect(await h.ledger.countItems("oas-3")).toMatchObject({ total: 4, pending: 0, failed: 4 });
    expect((await h.ledger.getBatch("oas-3"))?.status).toBe("cancelled");
  });

  it("the stale-submission sweep ends an idle open batch incomplete_submission; a later append stores nothing", async () => {
    expect((await post("/v1/batches", { id: "oas-4", pipeline: "demo", open: true })).status).toBe(201);
    expect((await post("/v1/batches/oas-4:append", { offset: 0, items: items(0, 3) })).status).toBe(200);
    // The tick runs as if staleSubmissionSeconds had passed (a clock 10 minutes ahead).
    const later = { ...h.deps, clock: { now: () => Date.now() + 600_000 } };
    const tick = await reconcileTick(later);
    expect(tick.staleSubmissions.failed).toBeGreaterThanOrEqual(1);
    const b = await h.ledger.getBatch("oas-4");
    expect(b?.status).toBe("failed");
    expect(b?.reason).toMatch(/^incomplete_submission: received 3 of an unknown number of items/);
    const late = await post("/v1/batches/oas-4:append", { offset: 3, items: items(3, 2) });
    expect(late.status).toBe(409);
    expect(late.body.error).toMatchObject({ code: "batch_closed", batch: { status: "failed" } });
    expect(await h.ledger.countItems("oas-4")).toMatchObject({ total: 3, failed: 3 });
  });
});

describe("a coordinator killed after storing every item, before its cursor write (issue #15 item 4)", () => {
  it("JSON: the client re-sends (even after the stale threshold): 200, and the batch runs to completion", async () => {
    const body = { id: "crash-json", pipeline: "demo", items: items(0, 40) };
    armed.add("crash-json");
    const crashed = await post("/v1/batches", body);
    expect(crashed.status).toBe(500);
    expect(hits).toContainEqual({ point: "beforeCursorWrite", batchId: "crash-json" });
    const left = await h.ledger.getBatch("crash-json");
    expect(left).toMatchObject({ status: "submitting", total: 40, submissionComplete: true });
    expect(left!.received).toBeLessThan(40); // lags what is stored
    expect(await h.ledger.countItems("crash-json")).toMatchObject({ total: 40 });

    const again = await post("/v1/batches", body);
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ status: "running", progress: { received: 40, cursor: 40 } });
    await runToCompletion("crash-json", 40);
  });

  it("NDJSON: the reconciler alone resumes it (every item stored, none lost), and it runs to completion", async () => {
    armed.add("crash-ndjson");
    const lines = [
      JSON.stringify({ id: "crash-ndjson", pipeline: "demo" }),
      ...items(0, 30).map((i) => JSON.stringify(i)),
    ];
    const crashed = await h.request("POST", "/v1/batches", {
      body: `${lines.join("\n")}\n`,
      headers: { "content-type": "application/x-ndjson" },
    });
    expect(crashed.status).toBe(500);
    expect(hits).toContainEqual({ point: "beforeCursorWrite", batchId: "crash-ndjson" });
    const left = await h.ledger.getBatch("crash-ndjson");
    expect(left).toMatchObject({ status: "submitting", total: 30, received: 0, cursor: 0 });

    const later = { ...h.deps, clock: { now: () => Date.now() + 600_000 } };
    const tick = await reconcileTick(later);
    expect(tick.staleSubmissions.resumed).toBe(1);
    expect(await h.ledger.getBatch("crash-ndjson")).toMatchObject({
      status: "running",
      received: 30,
      cursor: 30,
    });
    await runToCompletion("crash-ndjson", 30);
  });

  it("open/append/seal: a re-sent append after the crash is a 200 that records the prefix; a seal killed the same way is finished by the reconciler", async () => {
    expect((await post("/v1/batches", { id: "crash-oas", pipeline: "demo", open: true })).status).toBe(201);
    armed.add("crash-oas");
    expect((await post("/v1/batches/crash-oas:append", { offset: 0, items: items(0, 25) })).status).toBe(500);
    expect((await h.ledger.getBatch("crash-oas"))?.received).toBe(0);
    // The client asks where to go on: GET says 0 (the lagging record), the append derives 25.
    const resent = await post("/v1/batches/crash-oas:append", { offset: 0, items: items(0, 25) });
    expect(resent.status).toBe(200);
    expect(resent.body.append).toMatchObject({ stored: 0, matched: 25, received: 25 });
    expect((await post("/v1/batches/crash-oas:append", { offset: 25, items: items(25, 5) })).status).toBe(
      200,
    );

    armed.add("crash-oas");
    expect((await post("/v1/batches/crash-oas:seal", { total: 30 })).status).toBe(500);
    expect(hits.filter((x) => x.batchId === "crash-oas")).toHaveLength(2);
    expect(await h.ledger.getBatch("crash-oas")).toMatchObject({
      status: "submitting",
      total: 30,
      submissionComplete: true,
    });
    const later = { ...h.deps, clock: { now: () => Date.now() + 600_000 } };
    expect((await reconcileTick(later)).staleSubmissions.resumed).toBe(1);
    await runToCompletion("crash-oas", 30);
  });
});
