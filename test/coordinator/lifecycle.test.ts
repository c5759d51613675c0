// Batch lifecycle through the API: dependencies (stored blocked, nothing published), an empty batch
// (finalized at once), cancel and retry transitions, both listings paged, health and the dashboard
// hook. Workers are simulated through the ledger (lease + complete / fail), as the reconciler tests do.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { settleBatch } from "../../functions/core/finalizeBatch";
import type { ItemRef } from "../../functions/core/ports";
import { waitFor } from "../support/cloud";
import { type CoordinatorHarness, ndjsonBatch, startCoordinatorHarness } from "./support/coordinatorHarness";

let h: CoordinatorHarness;
const dashboardHits: string[] = [];
beforeAll(async () => {
  h = await startCoordinatorHarness({
    operatorPageSize: 4, // cancel and retry page through more than one page
    chunkItems: 100, // a stream of a few hundred items spans several chunks
    dashboard: async (req, res) => {
      dashboardHits.push(req.url ?? "");
      res.statusCode = 200;
      res.setHeader("Content-Type", "text/html; charset=utf-8");
      res.end("<!doctype html><title>dashboard</title>");
    },
  });
});
afterAll(() => h?.close());

const items = (n: number) => Array.from({ length: n }, (_, i) => ({ payload: { value: i } }));

/** Simulated worker: lease each item and complete it, or fail it permanently. */
async function work(batchId: string, fail: (itemId: string) => boolean, generation = 1) {
  const { entries } = await h.ledger.listItems(batchId, { status: "pending", limit: 1000 });
  for (const it of entries) {
    const ref: ItemRef = { batchId, itemId: it.itemId, generation };
    const now = Date.now();
    expect((await h.ledger.leaseItem(ref, "w", 60_000, 5, now)).kind).toBe("leased");
    if (fail(it.itemId))
      await h.ledger.failItem(ref, { kind: "permanent", message: "no" }, now, { owner: "w" });
    else await h.ledger.completeItem(ref, "w", { ok: it.itemId }, now);
  }
  await settleBatch(
    { ledger: h.ledger, sink: h.deps.sink, clock: h.deps.clock, log: h.deps.log, staleFinalizingMs: 60_000 },
    batchId,
  );
}

describe("lifecycle", () => {
  it("GET /healthz answers, and the dashboard hook serves / and /batches/*", async () => {
    const health = await h.request("GET", "/healthz");
    expect(health).toMatchObject({ status: 200, body: { status: "ok" } });
    expect((await h.request("GET", "/")).status).toBe(200);
    expect((await h.request("GET", "/batches/x?y=1")).status).toBe(200);
    expect(dashboardHits).toEqual(["/", "/batches/x?y=1"]);
    expect((await h.request("POST", "/")).status).toBe(405);
  });

  it("an empty batch is finalized at once as succeeded", async () => {
    const res = await h.request("POST", "/v1/batches", {
      json: { id: "empty", pipeline: "demo", items: [] },
    });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({
      status: "succeeded",
      outcome: "succeeded",
      total: 0,
      export: { rows: 0 },
    });
    expect(h.events("batch.finalized", "empty")).toHaveLength(1);
  });

  it("a batch with dependencies is stored blocked: items stored, no doorbell published", async () => {
    const parent = await h.request("POST", "/v1/batches", {
      json: { id: "parent", pipeline: "demo", items: items(3) },
    });
    expect(parent.status).toBe(201);
    const child = await h.request("POST", "/v1/batches", {
      json: { id: "child", pipeline: "demo", dependsOn: ["parent"], items: items(5) },
    });
    expect(child.status).toBe(201);
    expect(child.body).toMatchObject({
      status: "blocked",
      dependsOn: ["parent"],
      total: 5,
      counts: null,
      progress: { received: 5, cursor: 0, submissionComplete: true },
      submission: { stored: 5, published: 0 },
    });
    // Streamed too: blocked, stored, unpublished.
    const streamed = await h.postNdjson(
      ndjsonBatch({ id: "child-2", pipeline: "demo", dependsOn: ["parent", "child"] }, 7),
    );
    if (streamed === "aborted") throw new Error("unexpected abort");
    expect(streamed.status).toBe(201);
    expect(streamed.body).toMatchObject({
      status: "blocked",
      total: 7,
      counts: null,
      progress: { cursor: 0 },
    });
    expect(await h.ledger.countItems("child")).toMatchObject({ total: 5, pending: 5 });
    expect(await h.ledger.countItems("child-2")).toMatchObject({ total: 7, pending: 7 });
    // Only the parent's three doorbells are on the topic.
    const doorbells = await h.drainDoorbells(3);
    expect(doorbells.map((d) => d.batchId)).toEqual(["parent", "parent", "parent"]);
    // Re-sending a blocked batch is idempotent and still publishes nothing.
    const again = await h.request("POST", "/v1/batches", {
      json: { id: "child", pipeline: "demo", dependsOn: ["parent"], items: items(5) },
    });
    expect(again.status).toBe(200);
    expect(again.body.status).toBe("blocked");
    expect(await h.drainDoorbells(0)).toEqual([]);
  });

  it("cancel: pending items fail as cancelled, page by page; the batch ends cancelled; a second cancel is a 409", async () => {
    const res = await h.request("POST", "/v1/batches", {
      json: { id: "to-cancel", pipeline: "demo", items: items(10) },
    });
    expect(res.status).toBe(201);
    await h.drainDoorbells(10);
    // One item is running (leased by a worker) when the operator cancels.
    await h.ledger.leaseItem(
      { batchId: "to-cancel", itemId: "0", generation: 1 },
      "w",
      60_000,
      5,
      Date.now(),
    );
    const cancelled = await h.request("POST", "/v1/batches/to-cancel:cancel");
    expect(cancelled.status).toBe(200);
    expect(cancelled.body).toMatchObject({
      status: "running",
      terminateAs: "cancelled",
      reason: "cancelled by operator",
      counts: { total: 10, running: 1, failed: 9, pending: 0 },
    });
    const failed = await h.ledger.listItems("to-cancel", { status: "failed", limit: 100 });
    expect(failed.entries.every((it) => it.error?.kind === "cancelled")).toBe(true);
    // The running item finishes; the batch then finalizes as cancelled.
    await h.ledger.completeItem(
      { batchId: "to-cancel", itemId: "0", generation: 1 },
      "w",
      { ok: 1 },
      Date.now(),
    );
    await settleBatch(
      {
        ledger: h.ledger,
        sink: h.deps.sink,
        clock: h.deps.clock,
        log: h.deps.log,
        staleFinalizingMs: 60_000,
      },
      "to-cancel",
    );
    const after = await h.request("GET", "/v1/batches/to-cancel");
    expect(after.body).toMatchObject({
      status: "cancelled",
      counts: { succeeded: 1, failed: 9 },
      summary: { failedByKind: { cancelled: 9 } },
      export: { rows: 1 },
    });
    const again = await h.request("POST", "/v1/batches/to-cancel:cancel");
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe("failed_precondition");
    expect((await h.request("POST", "/v1/batches/nope:cancel")).status).toBe(404);
    expect(h.events("batch.cancel_requested", "to-cancel")).toHaveLength(1);
  });

  it("cancel while the batch is still being streamed: the stream is refused with a 409, every stored item ends cancelled", async () => {
    const n = 300;
    let cancel: Awaited<ReturnType<typeof h.request>> | undefined;
    const res = await h.postNdjson(ndjsonBatch({ id: "cancel-mid", pipeline: "demo" }, n), {
      pauseAfter: 250,
      pause: async () => {
        await waitFor(
          "two chunks stored",
          async () => (await h.ledger.countItems("cancel-mid")).total >= 200,
          60_000,
        );
        cancel = await h.request("POST", "/v1/batches/cancel-mid:cancel");
      },
    });
    if (res === "aborted") throw new Error("unexpected abort");
    expect(cancel?.status).toBe(200);
    expect(res.status).toBe(409);
    expect(res.body.error).toMatchObject({ code: "failed_precondition" });
    expect(res.body.error.message).toMatch(/cancelled while it was being submitted/);
    const b = await h.request("GET", "/v1/batches/cancel-mid");
    expect(b.body).toMatchObject({ status: "cancelled", counts: { pending: 0, running: 0, succeeded: 0 } });
    expect(b.body.counts.failed).toBe(b.body.counts.total);
    expect(b.body.counts.total).toBeGreaterThanOrEqual(200);
    await h.drainDoorbells(b.body.progress.cursor);
  });

  it("cancel of a blocked batch finalizes it at once", async () => {
    const res = await h.request("POST", "/v1/batches/child-2:cancel");
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      status: "cancelled",
      counts: { failed: 7 },
      reason: "cancelled by operator",
    });
    expect(await h.drainDoorbells(0)).toEqual([]);
  });

  it("retry: failed items go back to pending in a new generation with their doorbells; refused when not final or nothing failed", async () => {
    const res = await h.request("POST", "/v1/batches", {
      json: { id: "to-retry", pipeline: "demo", failureThreshold: 0.5, items: items(10) },
    });
    expect(res.status).toBe(201);
    await h.drainDoorbells(10);
    const notFinal = await h.request("POST", "/v1/batches/to-retry:retry");
    expect(notFinal.status).toBe(409);
    await work("to-retry", (id) => ["1", "4", "5", "8", "9"].includes(id));
    const final = await h.request("GET", "/v1/batches/to-retry");
    expect(final.body).toMatchObject({ status: "partial", counts: { succeeded: 5, failed: 5 } });

    const retried = await h.request("POST", "/v1/batches/to-retry:retry");
    expect(retried.status).toBe(200);
    expect(retried.body).toMatchObject({
      status: "running",
      generation: 2,
      counts: { succeeded: 5, pending: 5, failed: 0 },
      summary: null,
    });
    const doorbells = await h.drainDoorbells(5);
    expect(doorbells.map((d) => `${d.itemId}@${d.generation}`).sort()).toEqual(
      ["1@2", "4@2", "5@2", "8@2", "9@2"].sort(),
    );
    expect(h.events("batch.retry", "to-retry")[0]).toMatchObject({ generation: 2, items: 5 });

    await work("to-retry", () => false, 2);
    const done = await h.request("GET", "/v1/batches/to-retry");
    expect(done.body).toMatchObject({
      status: "succeeded",
      generation: 2,
      counts: { succeeded: 10, failed: 0 },
    });
    const nothingFailed = await h.request("POST", "/v1/batches/to-retry:retry");
    expect(nothingFailed.status).toBe(409);
    expect(nothingFailed.body.error.message).toMatch(/no failed items/);
    expect((await h.request("POST", "/v1/batches/nope:retry")).status).toBe(404);
  });

  it("lists batches newest first, page by page, filtered by status", async () => {
    const all: string[] = [];
    let token: string | null = null;
    do {
      const q: string = token ? `?limit=3&pageToken=${encodeURIComponent(token)}` : "?limit=3";
      const page = await h.request("GET", `/v1/batches${q}`);
      expect(page.status).toBe(200);
      expect(page.body.batches.length).toBeLessThanOrEqual(3);
      all.push(...page.body.batches.map((b: { id: string }) => b.id));
      token = page.body.nextPageToken;
    } while (token);
    expect(all).toEqual(["to-retry", "cancel-mid", "to-cancel", "child-2", "child", "parent", "empty"]);
    const blocked = await h.request("GET", "/v1/batches?status=blocked");
    expect(blocked.body.batches.map((b: { id: string }) => b.id)).toEqual(["child"]);
    expect(blocked.body.nextPageToken).toBeNull();
    const final = await h.request("GET", "/v1/batches?status=cancelled&limit=2");
    expect(final.body.batches.map((b: { id: string }) => b.id)).toEqual(["cancel-mid", "to-cancel"]);
    expect(final.body.batches[1]).toMatchObject({ counts: { succeeded: 1, failed: 9 } });
    const rest = await h.request(
      "GET",
      `/v1/batches?status=cancelled&limit=2&pageToken=${encodeURIComponent(final.body.nextPageToken)}`,
    );
    expect(rest.body.batches.map((b: { id: string }) => b.id)).toEqual(["child-2"]);
    expect(rest.body.nextPageToken).toBeNull();
  });

  it("lists a batch's items in submission order, page by page, filtered by status, payload and result on request", async () => {
    const seen: string[] = [];
    let token: string | null = null;
    let pages = 0;
    do {
      const q: string = `?limit=4&include=payload,result${token ? `&pageToken=${encodeURIComponent(token)}` : ""}`;
      const page = await h.request("GET", `/v1/batches/to-retry/items${q}`);
      expect(page.status).toBe(200);
      pages++;
      seen.push(...page.body.items.map((it: { id: string }) => it.id));
      token = page.body.nextPageToken;
      if (pages === 1)
        expect(page.body.items[0]).toMatchObject({
          id: "0",
          seq: 0,
          status: "succeeded",
          attempt: 1,
          generation: 1,
          payload: { value: 0 },
          result: { ok: "0" },
        });
    } while (token);
    expect(pages).toBe(3);
    expect(seen).toEqual(Array.from({ length: 10 }, (_, i) => String(i)));
    const lean = await h.request("GET", "/v1/batches/to-retry/items?limit=1");
    expect(lean.body.items[0]).not.toHaveProperty("payload");
    const failed = await h.request("GET", "/v1/batches/to-cancel/items?status=failed&limit=100");
    expect(failed.body.items).toHaveLength(9);
    expect(failed.body.items[0].error).toMatchObject({ kind: "cancelled", message: "cancelled by operator" });
    expect((await h.request("GET", "/v1/batches/nope/items")).status).toBe(404);
  });
  it("items that all finished while the batch was still submitting: the submission itself finalizes it", async () => {
    // Workers that finish every item before the batch starts cannot finalize it (it is still
    // `submitting`); the coordinator must settle after starting it — its probe of the last item
    // finds it terminal and runs the existence check. Left to the workers, the batch would stay
    // `running` with nothing left to deliver.
    const markSubmitted = h.ledger.markSubmitted.bind(h.ledger);
    h.ledger.markSubmitted = async (batchId, total, now) => {
      await work(batchId, () => false);
      expect((await h.ledger.getBatch(batchId))?.status).toBe("submitting");
      return markSubmitted(batchId, total, now);
    };
    try {
      const res = await h.request("POST", "/v1/batches", {
        json: { id: "all-done-early", pipeline: "demo", items: items(4) },
      });
      expect(res.status).toBe(201);
      expect(res.body).toMatchObject({ status: "succeeded", counts: { succeeded: 4, failed: 0 } });
      expect(await h.ledger.getBatch("all-done-early")).toMatchObject({ status: "succeeded" });
    } finally {
      h.ledger.markSubmitted = markSubmitted;
    }
  });

  it("retry of a dependent: refused while a dependency is not final (being retried itself), accepted once it is", async () => {
    const parent = await h.request("POST", "/v1/batches", {
      json: { id: "retry-parent", pipeline: "demo", failureThreshold: 0.5, items: items(4) },
    });
    expect(parent.status).toBe(201);
    await h.drainDoorbells(4);
    await work("retry-parent", (id) => id === "1");
    const child = await h.request("POST", "/v1/batches", {
      json: {
        id: "retry-child",
        pipeline: "demo",
        failureThreshold: 0.5,
        dependsOn: ["retry-parent"],
        items: items(4),
      },
    });
    expect(child.status).toBe(201);
    // Started as the reconciler would once its parent ended partial, then run to partial.
    expect(await h.ledger.unblockBatch("retry-child", Date.now())).toBe(true);
    expect(await h.ledger.markSubmitted("retry-child", 4, Date.now())).toBe(true);
    await work("retry-child", (id) => id === "2");
    expect((await h.request("GET", "/v1/batches/retry-child")).body).toMatchObject({ status: "partial" });

    expect((await h.request("POST", "/v1/batches/retry-parent:retry")).status).toBe(200);
    const refused = await h.request("POST", "/v1/batches/retry-child:retry");
    expect(refused.status).toBe(409);
    expect(refused.body.error.message).toBe(
      'batch "retry-child" depends on "retry-parent", not final now (being retried?): retry it once they are final',
    );
    expect((await h.request("GET", "/v1/batches/retry-child")).body).toMatchObject({
      status: "partial",
      generation: 1,
    });

    await work("retry-parent", () => false, 2);
    expect((await h.request("GET", "/v1/batches/retry-parent")).body).toMatchObject({ status: "succeeded" });
    const accepted = await h.request("POST", "/v1/batches/retry-child:retry");
    expect(accepted.status).toBe(200);
    expect(accepted.body).toMatchObject({ status: "running", generation: 2 });
    const doorbells = await h.drainDoorbells(2);
    expect(doorbells.map((d) => `${d.batchId}/${d.itemId}@${d.generation}`).sort()).toEqual([
      "retry-child/2@2",
      "retry-parent/1@2",
    ]);
  });
});
