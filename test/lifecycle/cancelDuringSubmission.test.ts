// Issue #15 item 1 (second half), end to end: a cancel in the middle of a fast submission. The
// interleaving is forced: an NDJSON stream whose body the test holds open after two stored chunks,
// and an append whose first publishes are held at a gate in the coordinator's queue while chunks
// are still to be stored. The cancel must win: the batch ends cancelled, what was stored before is
// failed(cancelled), what comes after is refused by the fence (409, nothing stored), no item runs
// after (or because of) the cancel, and the ledger invariant holds.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../support/cloud";
import { gate, items, type Lifecycle, startLifecycle } from "./support/lifecycleHarness";

let h: Lifecycle;
beforeAll(async () => {
  h = await startLifecycle({
    // One chunk stored at a time (two in flight at most): what is stored when the cancel lands is
    // decided by the test, not by how fast the emulator is.
    coordinator: { chunkItems: 50, chunksInFlight: 1, cursorIntervalMs: 0 },
  });
});
afterAll(async () => {
  await h?.close();
});
afterEach(() => {
  h.coordinatorQueue.hook = null;
});

async function expectAllCancelled(batchId: string, stored: number) {
  const counts = await h.ledger.countItems(batchId);
  expect(counts).toMatchObject({ total: stored, pending: 0, running: 0, succeeded: 0, failed: stored });
  expect(await h.ledger.countFailedByKind(batchId)).toEqual({ cancelled: stored });
}

describe("cancel in the middle of a submission", () => {
  it("NDJSON: cancelled while the stream is open; the rest of the stream is refused and nothing runs", async () => {
    const id = "cancel-ndjson";
    h.hold(id); // the doorbells wait: the items are pending when the cancel lands
    const s = h.openStream();
    await s.write([{ id, pipeline: "demo" }, ...items(0, 110)]);
    await waitFor("two chunks stored", async () => (await h.ledger.countItems(id)).total === 100, 30_000);
    await waitFor("their doorbells published", () => h.heldCount(id) >= 100, 30_000);

    const cancel = await h.post(`/v1/batches/${id}:cancel`);
    expect(cancel.status).toBe(200);
    expect(cancel.body).toMatchObject({ id, status: "cancelled" });
    const ended = await h.batch(id);
    expect(ended).toMatchObject({ status: "cancelled", terminateAs: "cancelled" });
    expect(s.answered).toBe(false);

    // The doorbells arrive late: every delivery finds its item terminal and runs nothing.
    h.release(id);
    await waitFor(
      "the held doorbells delivered",
      () => h.deliveries.filter((d) => d.batchId === id).length >= 100,
    );
    expect(h.deliveries.filter((d) => d.batchId === id && d.status !== 200)).toEqual([]);

    // The stream goes on: the ten buffered lines and forty more, then its end.
    await s.write(items(110, 40));
    s.end();
    const answer = await s.answer;
    expect(answer.status).toBe(409);
    expect(answer.body.error.message).toMatch(
      /^batch "cancel-ndjson" was cancelled while it was being submitted/,
    );

    await h.doorbellsSettled();
    await expectAllCancelled(id, 100);
    expect(h.executions.filter((e) => e.batchId === id)).toEqual([]);
    expect((await h.batch(id))?.finishedAt).toBe(ended?.finishedAt);
    const report = await h.assertInvariant(
      id,
      items(0, 100).map((i) => i.id),
    );
    expect(report).toMatchObject({ status: "cancelled", sinkRows: 0 });
  });

  it("open/append: cancelled while an append's first chunks wait to publish; its later chunks are refused by the fence", async () => {
    const id = "cancel-append";
    expect((await h.post("/v1/batches", { id, pipeline: "demo", open: true })).status).toBe(201);
    const publishing = gate();
    h.coordinatorQueue.hook = async (refs) => {
      if (refs[0]?.batchId === id) await publishing.pass();
      return "publish" as const;
    };
    const append = h.post(`/v1/batches/${id}:append`, { offset: 0, items: items(0, 500) });
    await publishing.reached;
    // Two chunks are in flight (the first one's publish waits at the gate); the third is not stored.
    await waitFor("two chunks stored", async () => (await h.ledger.countItems(id)).total === 100);

    const cancel = await h.post(`/v1/batches/${id}:cancel`);
    expect(cancel.status).toBe(200);
    expect(cancel.body.status).toBe("cancelled");
    const ended = await h.batch(id);
    expect(ended?.status).toBe("cancelled");

    publishing.open();
    const answer = await append;
    expect(answer.status).toBe(409);
    expect(answer.body.error).toMatchObject({ code: "batch_closed", batch: { id, status: "cancelled" } });
    expect(answer.body.error.message).toMatch(/terminated during the append and accepts no more items/);

    // The gate's doorbells (items already cancelled) are delivered and skipped; nothing else came.
    await h.doorbellsSettled();
    await waitFor(
      "the published doorbells delivered",
      () =>
        h.deliveries.filter((d) => d.batchId === id).length >=
        h.doorbells.filter((d) => d.batchId === id).length,
    );
    expect(h.doorbells.filter((d) => d.batchId === id).length).toBeLessThanOrEqual(100);
    await expectAllCancelled(id, 100);
    expect(h.executions.filter((e) => e.batchId === id)).toEqual([]);
    // A later append is refused too, and stores nothing.
    const late = await h.post(`/v1/batches/${id}:append`, { offset: 100, items: items(100, 10) });
    expect(late.status).toBe(409);
    expect(late.body.error.code).toBe("batch_closed");
    await expectAllCancelled(id, 100);
    expect((await h.batch(id))?.finishedAt).toBe(ended?.finishedAt);
    await h.assertInvariant(
      id,
      items(0, 100).map((i) => i.id),
    );
  });
});
