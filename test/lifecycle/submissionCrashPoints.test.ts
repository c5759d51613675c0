// Issue #15 "faults in the dangerous gaps", end to end: a coordinator that "dies" at the crash points
// afterChunkStore (a chunk's items stored, nothing published for it) and afterPublish (its doorbells
// published, the cursor not written) — armed by this test only (functions/faults.ts), each hit
// counted — and a publish that is dropped. The client never comes back: the reconciler's sweeps
// alone, with short staleness settings, must end or resume each batch per DESIGN §2.3, republish
// what was never delivered, and leave the invariant holding with one row and one run per item.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CrashPoint, crashSwitch } from "../../functions/faults";
import { waitFor } from "../support/cloud";
import { items, type Lifecycle, startLifecycle, waitUntilStale } from "./support/lifecycleHarness";

const staleSeconds = 1;
/** Per batch: the point to die at and on which ask (1 = the first chunk). */
const armed = new Map<string, { point: CrashPoint; onAsk: number; asks: number }>();
const hits: Array<{ point: CrashPoint; batchId: string; ask: number }> = [];

let h: Lifecycle;
beforeAll(async () => {
  h = await startLifecycle({
    env: {
      TALLY_STALE_SUBMISSION_SECONDS: String(staleSeconds),
      TALLY_STALE_PENDING_SECONDS: String(staleSeconds),
    },
    coordinator: { chunkItems: 10, chunksInFlight: 1, cursorIntervalMs: 0 },
    crashAt: crashSwitch(["afterChunkStore", "afterPublish"], (point, batchId) => {
      const a = armed.get(batchId);
      if (!a || a.point !== point) return false;
      a.asks++;
      if (a.asks !== a.onAsk) return false;
      hits.push({ point, batchId, ask: a.asks });
      return true;
    }),
  });
});
afterAll(async () => {
  await h?.close();
});

const runsPerItem = (batchId: string) => {
  const out = new Map<string, number>();
  for (const e of h.executions) if (e.batchId === batchId) out.set(e.itemId, (out.get(e.itemId) ?? 0) + 1);
  return out;
};

/** Every item ran exactly once, the batch succeeded with one row per item, the invariant holds. */
async function expectSucceededOnce(batchId: string, n: number) {
  const b = await h.waitForStatus(batchId, ["succeeded", "partial", "failed", "cancelled"]);
  expect(b).toMatchObject({ status: "succeeded", summary: { exportedRows: n, counts: { total: n } } });
  const runs = runsPerItem(batchId);
  expect(runs.size).toBe(n);
  expect([...runs.values()].every((k) => k === 1)).toBe(true);
  const report = await h.assertInvariant(
    batchId,
    items(0, n).map((i) => i.id),
  );
  expect(report.sinkRows).toBe(n);
  expect(await h.exportMarkers(batchId)).toBe(1);
}

describe("a coordinator killed at afterChunkStore / afterPublish, the client gone; a dropped publish", () => {
  it("afterChunkStore, NDJSON (total unknown): the abandoned batch ends incomplete_submission; the unpublished chunk never runs", async () => {
    const id = "crash-store-ndjson";
    armed.set(id, { point: "afterChunkStore", onAsk: 2, asks: 0 });
    const body = [{ id, pipeline: "demo" }, ...items(0, 30)].map((l) => JSON.stringify(l)).join("\n");
    const res = await fetch(`${h.urls.coordinator}/v1/batches`, {
      method: "POST",
      headers: { "content-type": "application/x-ndjson" },
      body: `${body}\n`,
    });
    expect(res.status).toBe(500);
    expect(hits.filter((x) => x.batchId === id)).toEqual([{ point: "afterChunkStore", batchId: id, ask: 2 }]);
    const stored = (await h.ledger.countItems(id)).total;
    expect(stored).toBeGreaterThanOrEqual(20);
    expect((await h.batch(id))?.status).toBe("submitting");

    await waitUntilStale(h, id, staleSeconds);
    const tick = await h.tick();
    expect(tick.body.staleSubmissions).toMatchObject({ failed: 1 });
    const ended = await h.waitForStatus(id, ["failed"]);
    expect(ended.reason).toMatch(/^incomplete_submission/);
    await h.doorbellsSettled();
    // The chunk that died before its publish was never published, so never run.
    const unpublished = new Set(items(10, stored - 10).map((i) => i.id));
    expect(h.doorbellsFor(id).filter((d) => unpublished.has(d.itemId))).toEqual([]);
    expect(h.executions.filter((e) => e.batchId === id && unpublished.has(e.itemId))).toEqual([]);
    expect(h.executions.filter((e) => e.batchId === id && e.at > ended.finalizingAt!)).toEqual([]);
    const counts = await h.ledger.countItems(id);
    expect(counts).toMatchObject({ pending: 0, running: 0 });
    expect(await h.ledger.countFailedByKind(id)).toEqual({ cancelled: stored - counts.succeeded });
    const report = await h.assertInvariant(
      id,
      items(0, stored).map((i) => i.id),
    );
    expect(report.sinkRows).toBe(counts.succeeded);
  });

  it("afterChunkStore on the last chunk, JSON (every item stored): the reconciler resumes from the cursor; each item runs once", async () => {
    const id = "crash-store-json";
    armed.set(id, { point: "afterChunkStore", onAsk: 3, asks: 0 });
    const res = await h.post("/v1/batches", { id, pipeline: "demo", items: items(0, 30) });
    expect(res.status).toBe(500);
    expect(hits.filter((x) => x.batchId === id)).toEqual([{ point: "afterChunkStore", batchId: id, ask: 3 }]);
    expect(await h.ledger.countItems(id)).toMatchObject({ total: 30 });
    await h.doorbellsSettled();
    const lastChunk = new Set(items(20, 10).map((i) => i.id));
    expect(h.doorbellsFor(id).filter((d) => lastChunk.has(d.itemId))).toEqual([]);

    await waitUntilStale(h, id, staleSeconds);
    const tick = await h.tick();
    expect(tick.body.staleSubmissions).toMatchObject({ resumed: 1 });
    await expectSucceededOnce(id, 30);
  });

  it("afterPublish on the last chunk, JSON: the items run while the batch still says submitting; the reconciler resumes and finalizes it", async () => {
    const id = "crash-publish-json";
    armed.set(id, { point: "afterPublish", onAsk: 3, asks: 0 });
    const res = await h.post("/v1/batches", { id, pipeline: "demo", items: items(0, 30) });
    expect(res.status).toBe(500);
    expect(hits.filter((x) => x.batchId === id)).toEqual([{ point: "afterPublish", batchId: id, ask: 3 }]);
    // Every doorbell went out: the items run, but nobody can finalize a batch still submitting.
    await waitFor("every item ran", async () => (await h.ledger.countItems(id)).succeeded === 30);
    const left = await h.batch(id);
    expect(left).toMatchObject({ status: "submitting" });
    expect(left!.cursor).toBeLessThan(30);

    await waitUntilStale(h, id, staleSeconds);
    const tick = await h.tick();
    expect(tick.body.staleSubmissions).toMatchObject({ resumed: 1 });
    // Republished from the lagging cursor: the duplicate doorbells find the items finished.
    await expectSucceededOnce(id, 30);
    expect(h.doorbellsFor(id).length).toBeGreaterThan(30);
  });

  it("a dropped publish: the batch runs without those doorbells; the stale-pending sweep republishes them", async () => {
    const id = "dropped-publish";
    let chunk = 0;
    h.coordinatorQueue.hook = (refs) => (refs[0]?.batchId === id && ++chunk === 2 ? "drop" : "publish");
    try {
      const res = await h.post("/v1/batches", { id, pipeline: "demo", items: items(0, 30) });
      expect(res.status).toBe(201);
      expect(res.body.status).toBe("running");
    } finally {
      h.coordinatorQueue.hook = null;
    }
    const dropped = h.coordinatorQueue.dropped.filter((r) => r.batchId === id);
    expect(dropped).toHaveLength(10);
    await waitFor("the delivered items ran", async () => (await h.ledger.countItems(id)).succeeded === 20);
    await h.doorbellsSettled();
    expect(await h.ledger.countItems(id)).toMatchObject({ pending: 10, succeeded: 20 });
    expect((await h.batch(id))?.status).toBe("running");

    const submittedAt = Date.now();
    await waitFor(
      "the pending items to be stale",
      () => Date.now() > submittedAt + staleSeconds * 1000 + 100,
    );
    const tick = await h.tick();
    expect(tick.body.stalePending.republished).toBeGreaterThanOrEqual(10);
    expect(h.events("item.republished", id).length).toBeGreaterThanOrEqual(1);
    await expectSucceededOnce(id, 30);
  });
});
