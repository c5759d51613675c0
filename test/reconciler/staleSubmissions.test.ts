// Submissions the coordinator did not finish (F4, F9) and doorbells that were never published: the
// reconciler resumes from the cursor when the client had sent everything, fails the batch as
// `incomplete_submission` when it had not, and republishes stale pending items.
import { afterEach, describe, expect, it } from "vitest";
import { type ReconcilerHarness, startReconcilerHarness } from "./support/reconcilerHarness";

let h: ReconcilerHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

/** Long enough ago for every staleness threshold of the default topology. */
const longAgo = () => Date.now() - 60 * 60_000;

describe("stale submissions", () => {
  it("resumes a complete submission from its cursor: the rest of the doorbells, then running", async () => {
    h = await startReconcilerHarness();
    // Stale as a submission (> staleSubmissionSeconds), not yet as pending items (< stalePendingSeconds).
    const at = Date.now() - 5 * 60_000;
    // All 6 items stored, only the first 2 published before the coordinator died.
    await h.createBatch("resume", 6, { at, state: "stored" });
    await h.ledger.advanceCursor("resume", 2, at);
    // A fresh submission (progress just now) is left alone: its coordinator is still at work.
    await h.createBatch("busy", 3, { state: "stored" });

    const tick = await h.tick();
    expect(tick.status).toBe(200);
    expect(tick.body.staleSubmissions).toMatchObject({ found: 1, resumed: 1, failed: 0, published: 4 });
    await h.waitForDoorbells("resume", ["i2", "i3", "i4", "i5"]);
    await h.doorbellsSettled();
    expect(h.doorbellsFor("resume").sort()).toEqual(["i2", "i3", "i4", "i5"]);
    expect(h.doorbellsFor("busy")).toEqual([]);
    const batch = await h.ledger.getBatch("resume");
    expect(batch).toMatchObject({ status: "running", cursor: 6, total: 6, submissionComplete: true });
    expect((await h.ledger.getBatch("busy"))?.status).toBe("submitting");

    // Resumed once: the next tick finds nothing stale and publishes nothing more.
    const again = await h.tick();
    expect(again.status).toBe(200);
    expect(again.body.staleSubmissions.found).toBe(0);
    expect(again.body.stalePending.republished).toBe(0);
    await h.doorbellsSettled();
    expect(h.doorbellsFor("resume").sort()).toEqual(["i2", "i3", "i4", "i5"]);

    // Workers finish; the batch finalizes as usual.
    await h.finishItems("resume");
    expect((await h.tick()).body.finalizedBatchIds).toEqual(["resume"]);
    expect(await h.sink.countRows("resume")).toBe(6);
  });

  it("fails an incomplete submission as incomplete_submission, its stored items too", async () => {
    h = await startReconcilerHarness();
    const at = longAgo();
    // The client announced 6 items (JSON body) but only 3 were stored; and a stream that never ended.
    await h.createBatch("partial-body", 3, { at, total: 6, state: "stored" });
    await h.ledger.advanceCursor("partial-body", 3, at);
    await h.createBatch("open-stream", 2, { at, total: null, state: "stored" });

    const tick = await h.tick();
    expect(tick.status).toBe(200);
    expect(tick.body.staleSubmissions).toMatchObject({ found: 2, resumed: 0, failed: 2 });
    expect(tick.body.finalized).toBe(2);
    const b = await h.ledger.getBatch("partial-body");
    expect(b?.status).toBe("failed");
    expect(b?.reason).toMatch(/^incomplete_submission: received 3 of 6 items/);
    const s = await h.ledger.getBatch("open-stream");
    expect(s?.status).toBe("failed");
    expect(s?.reason).toMatch(/^incomplete_submission: received 2 of an unknown number of items/);
    const { entries } = await h.ledger.listItems("partial-body", { limit: 10 });
    expect(entries).toHaveLength(3);
    for (const it of entries)
      expect(it).toMatchObject({ status: "failed", error: { kind: "cancelled", message: b?.reason } });
    expect(b?.summary?.counts).toMatchObject({ total: 3, failed: 3 });
    // Failed, not resumed: not one doorbell.
    await h.doorbellsSettled();
    expect(h.doorbells.filter((d) => ["partial-body", "open-stream"].includes(d.batchId))).toEqual([]);
  });

  it("republishes pending items whose doorbells were never published, once", async () => {
    h = await startReconcilerHarness();
    const at = longAgo();
    // Stored, cursor moved and running — but the publish was lost (the ledger write happened first).
    await h.createBatch("lost", 4, { at });
    const fresh = await h.createBatch("fresh", 2); // pending since just now: not stale
    expect(fresh.status).toBe("running");

    const tick = await h.tick();
    expect(tick.status).toBe(200);
    expect(tick.body.stalePending).toMatchObject({ found: 4, republished: 4 });
    await h.waitForDoorbells("lost", ["i0", "i1", "i2", "i3"]);
    await h.doorbellsSettled();
    expect(h.doorbellsFor("fresh")).toEqual([]);
    expect(h.logs.some((l) => l.event === "item.republished" && l.batchId === "lost")).toBe(true);

    const again = await h.tick();
    expect(again.status).toBe(200);
    expect(again.body.stalePending).toMatchObject({ found: 0, republished: 0 });
    // Republished once: still one doorbell per lost item.
    await h.doorbellsSettled();
    expect(h.doorbellsFor("lost").sort()).toEqual(["i0", "i1", "i2", "i3"]);
  });
});
