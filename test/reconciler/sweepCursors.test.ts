// Paged sweeps continue where the previous tick stopped (issue #15 item 6): with one batch per page
// and one page per tick, consecutive ticks reach every running batch whose finalization was missed,
// instead of the same first page every tick.
import { afterEach, describe, expect, it } from "vitest";
import { runningSweepCursor } from "../../functions/handlers/reconciler/sweepMissedFinalizations";
import { type ReconcilerHarness, startReconcilerHarness } from "./support/reconcilerHarness";

let h: ReconcilerHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe("persisted sweep cursors", () => {
  it("one page per tick still reaches every running batch, oldest pages included", async () => {
    h = await startReconcilerHarness();
    const ids = ["m0", "m1", "m2"];
    const t = Date.now() - 60_000;
    // Three batches whose items all finished but whose finalization was missed.
    for (const [k, id] of ids.entries()) {
      await h.createBatch(id, 1, { at: t + k });
      expect(await h.finishItems(id)).toBe(1);
    }
    const finalized: string[] = [];
    for (let tick = 0; tick < ids.length; tick++) {
      const r = await h.tick({ pageSize: 1, maxPagesPerSweep: 1 });
      expect(r.status).toBe(200);
      finalized.push(...r.body.finalizedBatchIds);
    }
    expect(finalized.sort()).toEqual(ids);
    const statuses = (await h.ledger.getBatches(ids)).map((b) => b?.status);
    expect(statuses).toEqual(["succeeded", "succeeded", "succeeded"]);
  });

  it("the cursor is stored between ticks and cleared at the end of the listing", async () => {
    h = await startReconcilerHarness();
    const t = Date.now() - 60_000;
    // Two running batches with live items: each tick looks at one and leaves it running.
    await h.createBatch("live-a", 1, { at: t });
    await h.createBatch("live-b", 1, { at: t + 1 });
    const first = await h.tick({ pageSize: 1, maxPagesPerSweep: 1 });
    expect(first.body.finalizations.running).toBe(1);
    expect(first.body.moreWork).toBe(true);
    const stored = await h.ledger.readSweepCursor(runningSweepCursor);
    expect(stored).toBeDefined();
    // The next tick reads the second page, reaches the end and clears the cursor.
    const second = await h.tick({ pageSize: 1, maxPagesPerSweep: 1 });
    expect(second.body.finalizations.running).toBe(1);
    expect(await h.ledger.readSweepCursor(runningSweepCursor)).toBeUndefined();
  });
});
