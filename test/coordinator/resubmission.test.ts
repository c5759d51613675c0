// Idempotency (DESIGN.md §2.3, F4/F9): the same batch re-sent is a 200 with the same batch; a
// different one under the same id is a 409 that changes nothing; a stream the client cut half-way
// is completed by re-sending it (each item stored once, each doorbell published at least once);
// and a re-submission racing a submission still in flight corrupts nothing.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../support/cloud";
import { type CoordinatorHarness, ndjsonBatch, startCoordinatorHarness } from "./support/coordinatorHarness";

let h: CoordinatorHarness;
beforeAll(async () => {
  h = await startCoordinatorHarness();
});
afterAll(() => h?.close());

const items = (n: number, payload = (i: number) => ({ value: i })) =>
  Array.from({ length: n }, (_, i) => ({ payload: payload(i) }));

describe("re-submission", () => {
  it("the same batch again is a 200 with the same batch, as JSON or as NDJSON, and publishes nothing new", async () => {
    const body = { id: "same", pipeline: "demo", failureThreshold: 0.2, items: items(30) };
    const first = await h.request("POST", "/v1/batches", { json: body });
    expect(first.status).toBe(201);
    const again = await h.request("POST", "/v1/batches", { json: body });
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({
      id: "same",
      status: "running",
      createdAt: first.body.createdAt,
      counts: null,
      submission: { items: 30, stored: 0, published: 0 },
    });
    const asStream = await h.postNdjson(
      ndjsonBatch({ id: "same", pipeline: "demo", failureThreshold: 0.2 }, 30),
    );
    if (asStream === "aborted") throw new Error("unexpected abort");
    expect(asStream.status).toBe(200);
    expect(asStream.body).toMatchObject({ id: "same", createdAt: first.body.createdAt });
    expect(await h.ledger.countItems("same")).toMatchObject({ total: 30 });
    const doorbells = await h.drainDoorbells(30);
    expect(doorbells).toHaveLength(30);
    expect(h.events("batch.resubmitted", "same")).toHaveLength(2);
  });

  it("a different batch under the same id is a 409 naming what differs, and changes nothing", async () => {
    const body = { id: "conflict", pipeline: "demo", items: items(12) };
    expect((await h.request("POST", "/v1/batches", { json: body })).status).toBe(201);
    await h.drainDoorbells(12);
    const stored = await h.ledger.getBatch("conflict");

    const header = await h.request("POST", "/v1/batches", { json: { ...body, failureThreshold: 0.5 } });
    expect(header.status).toBe(409);
    expect(header.body.error.code).toBe("conflict");
    expect(header.body.error.details.map((d: { path: string }) => d.path)).toEqual(["failureThreshold"]);

    const changed: Array<{ payload: { value: unknown } }> = items(12);
    changed[5] = { payload: { value: "five" } };
    const payload = await h.request("POST", "/v1/batches", { json: { ...body, items: changed } });
    expect(payload.status).toBe(409);
    expect(payload.body.error.details).toEqual([
      { path: "items[5].payload", problem: 'differs from the stored payload of item "5"' },
    ]);

    const longer = await h.request("POST", "/v1/batches", { json: { ...body, items: items(13) } });
    expect(longer.status).toBe(409);
    expect(longer.body.error.details[0].path).toBe("items");

    const shorterStream = await h.postNdjson(ndjsonBatch({ id: "conflict", pipeline: "demo" }, 11));
    if (shorterStream === "aborted") throw new Error("unexpected abort");
    expect(shorterStream.status).toBe(409);

    expect(await h.ledger.getBatch("conflict")).toEqual(stored);
    expect(await h.ledger.countItems("conflict")).toMatchObject({ total: 12, pending: 12 });
    expect((await h.ledger.getItem("conflict", "5"))?.payload).toEqual({ value: 5 });
    // Nothing was published by the refused requests.
    expect(await h.drainDoorbells(0)).toEqual([]);
  });

  it("a stream cut half-way by the client, then re-sent: every item stored once, every doorbell at least once, running", async () => {
    const n = 3000;
    const header = { id: "cut", pipeline: "demo" };
    const cut = await h.postNdjson(ndjsonBatch(header, n), {
      abortAfter: 2001,
      // Cut only once the coordinator has stored some chunks (it reads as the client writes).
      beforeAbort: () =>
        waitFor("two chunks stored", async () => (await h.ledger.countItems("cut")).total >= 1000, 60_000),
    });
    expect(cut).toBe("aborted");
    await waitFor(
      "the coordinator to notice the cut",
      () => h.events("batch.submission_aborted", "cut").length > 0,
      60_000,
    );
    const half = await h.ledger.getBatch("cut");
    expect(half).toMatchObject({ status: "submitting", submissionComplete: false, total: null });
    expect(half!.received).toBeGreaterThanOrEqual(1000);
    expect(half!.received).toBeLessThan(n);

    const again = await h.postNdjson(ndjsonBatch(header, n));
    if (again === "aborted") throw new Error("unexpected abort");
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({
      id: "cut",
      status: "running",
      total: n,
      counts: null,
      progress: { received: n, cursor: n, submissionComplete: true },
    });
    expect(again.body.submission.stored).toBe(n - half!.received);
    expect(await h.ledger.countItems("cut")).toMatchObject({ total: n, pending: n });

    const doorbells = await h.drainUntil(
      `a doorbell for each of ${n} items`,
      (all) => new Set(all.map((d) => d.itemId)).size >= n,
    );
    const distinct = new Set(doorbells.map((d) => `${d.batchId}/${d.itemId}`));
    expect(distinct.size).toBe(n);
    expect(doorbells.every((d) => d.batchId === "cut")).toBe(true);
    // Duplicates only for items published before the cut but after the last cursor write.
    expect(doorbells.length - n).toBeLessThanOrEqual(half!.received - half!.cursor + 1000);
    const listed = await h.ledger.listItems("cut", { limit: 1000 });
    expect(listed.entries.map((it) => it.seq)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
  });

  it("a re-submission while the first stream is still in flight: both answer, nothing is corrupted", async () => {
    const n = 1500;
    const header = { id: "racing", pipeline: "demo" };
    let second: Awaited<ReturnType<typeof h.request>> | undefined;
    const first = await h.postNdjson(ndjsonBatch(header, n), {
      pauseAfter: 700,
      // Mid-stream: once the first chunk is stored, the whole batch is sent again as JSON.
      pause: async () => {
        await waitFor(
          "the first chunk stored",
          async () => (await h.ledger.countItems("racing")).total >= 500,
          60_000,
        );
        second = await h.request("POST", "/v1/batches", { json: { ...header, items: items(n) } });
      },
    });
    if (first === "aborted") throw new Error("unexpected abort");
    expect(second?.status).toBe(200);
    expect(second?.body).toMatchObject({ id: "racing", status: "running", counts: null });
    expect(first.status).toBe(201);
    expect(first.body).toMatchObject({
      id: "racing",
      status: "running",
      total: n,
      counts: null,
    });
    expect(await h.ledger.countItems("racing")).toMatchObject({ total: n });
    expect(await h.ledger.getBatch("racing")).toMatchObject({
      status: "running",
      total: n,
      received: n,
      cursor: n,
      submissionComplete: true,
    });
    const doorbells = await h.drainUntil(
      `doorbells for ${n} items`,
      (all) => new Set(all.map((d) => d.itemId)).size >= n,
    );
    expect(new Set(doorbells.map((d) => d.itemId)).size).toBe(n);
    expect(doorbells.every((d) => d.batchId === "racing")).toBe(true);
  });
});
