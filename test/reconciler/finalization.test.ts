// Finalization through the reconciler (F3, F10): racing finalizers produce one finalization and one
// export; the threshold rule decides the outcome and good results are exported in every outcome.
import { afterEach, describe, expect, it } from "vitest";
import { settleBatch } from "../../functions/core/finalizeBatch";
import { finalizeDepsFor } from "../../functions/handlers/reconciler/reconcileContext";
import { type ReconcilerHarness, startReconcilerHarness } from "./support/reconcilerHarness";

let h: ReconcilerHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe("finalization", () => {
  it("two ticks and two finalizers racing on one batch: one finalization, one export, one row per item", async () => {
    h = await startReconcilerHarness();
    const n = 25;
    await h.createBatch("race", n);
    expect(await h.finishItems("race")).toBe(n);
    // Nobody has settled the batch yet (as if the last worker died right after its completion).
    const fd = finalizeDepsFor(h.deps);
    const [tickA, tickB, settleA, settleB] = await Promise.all([
      h.tick(),
      h.tick(),
      settleBatch(fd, "race"),
      settleBatch(fd, "race"),
    ]);
    expect(tickA.status).toBe(200);
    expect(tickB.status).toBe(200);
    const finalizers = [tickA.body.finalized, tickB.body.finalized, settleA ? 1 : 0, settleB ? 1 : 0];
    expect(finalizers.reduce((a, b) => a + b, 0)).toBe(1);

    expect(h.finalizedEvents("race")).toHaveLength(1);
    expect(h.sink.exports.filter((e) => e.batchId === "race")).toHaveLength(1);
    expect(await h.exportsInSink("race")).toBe(1);
    expect(await h.sink.countRows("race")).toBe(n);
    const rows = await h.sink.inner.readRows("race");
    expect(new Set(rows.map((r) => r.itemId)).size).toBe(n);
    const item7 = await h.ledger.getItem("race", "i7");
    expect(rows.find((r) => r.itemId === "i7")?.result).toEqual(item7?.result);

    const batch = await h.ledger.getBatch("race");
    expect(batch?.status).toBe("succeeded");
    expect(batch?.summary).toMatchObject({ exportedRows: n, counts: { total: n, succeeded: n, failed: 0 } });

    // Scheduler retries after the fact change nothing.
    const again = await h.tick();
    expect(again.body.finalized).toBe(0);
    expect(h.sink.exports.filter((e) => e.batchId === "race")).toHaveLength(1);
    expect(await h.sink.countRows("race")).toBe(n);
  });

  it("threshold outcomes: none failed → succeeded; ≤ threshold → partial; above → failed; good results always exported", async () => {
    h = await startReconcilerHarness();
    const n = 20;
    const threshold = 0.1; // up to 2 of 20 may fail for `partial`
    const cases = [
      { batchId: "none-failed", failures: 0, status: "succeeded" },
      { batchId: "at-threshold", failures: 2, status: "partial" },
      { batchId: "above-threshold", failures: 5, status: "failed" },
    ];
    for (const c of cases) {
      await h.createBatch(c.batchId, n, { failureThreshold: threshold });
      await h.finishItems(c.batchId, (itemId) => Number(itemId.slice(1)) < c.failures);
    }
    const tick = await h.tick();
    expect(tick.status).toBe(200);
    expect(tick.body.finalized).toBe(3);
    for (const c of cases) {
      const batch = await h.ledger.getBatch(c.batchId);
      expect(batch?.status, c.batchId).toBe(c.status);
      expect(batch?.summary?.counts, c.batchId).toMatchObject({
        succeeded: n - c.failures,
        failed: c.failures,
      });
      if (c.failures > 0) expect(batch?.summary?.failedByKind).toEqual({ permanent: c.failures });
      // Every good result is in the sink, whatever the outcome — never revoked.
      expect(await h.sink.countRows(c.batchId), c.batchId).toBe(n - c.failures);
      expect(batch?.summary?.exportedRows).toBe(n - c.failures);
      const exported = new Set((await h.sink.inner.readRows(c.batchId)).map((r) => r.itemId));
      for (let i = 0; i < n; i++) expect(exported.has(`i${i}`)).toBe(i >= c.failures);
    }
  });

  it("re-runs a finalization whose finalizer died mid-export (stale `finalizing`)", async () => {
    h = await startReconcilerHarness();
    await h.createBatch("stuck", 3);
    await h.finishItems("stuck");
    const staleMs = h.config.topology.reconcile.staleFinalizingSeconds * 1000;
    // A finalizer claimed the batch long ago and vanished before exporting.
    expect(await h.ledger.beginFinalizing("stuck", Date.now() - staleMs - 60_000, staleMs)).not.toBeNull();
    const tick = await h.tick();
    expect(tick.body.finalizations.staleFinalizing).toBe(1);
    expect(tick.body.finalized).toBe(1);
    expect((await h.ledger.getBatch("stuck"))?.status).toBe("succeeded");
    expect(await h.sink.countRows("stuck")).toBe(3);
  });

  it("a page full of given-up exports does not hide a dead finalizer's claim behind it (sweep cursor)", async () => {
    h = await startReconcilerHarness();
    const staleMs = h.config.topology.reconcile.staleFinalizingSeconds * 1000;
    const longAgo = Date.now() - staleMs - 600_000;
    // Two batches whose exports gave up (waiting for an operator), least recently progressed: with
    // a page of one they fill the sweep's first two pages.
    for (const [k, id] of ["gave-up-a", "gave-up-b"].entries()) {
      await h.createBatch(id, 1);
      await h.finishItems(id);
      const claim = await h.ledger.beginFinalizing(id, longAgo + k, staleMs);
      expect(claim).not.toBeNull();
      const b = await h.ledger.recordExportFailure(id, claim!.finalizingAt!, "sink refused", longAgo + k, 1);
      expect(b?.exportFailedAt).toEqual(expect.any(Number));
    }
    // A batch whose finalizer claimed it later and vanished.
    await h.createBatch("dead-claim", 2);
    await h.finishItems("dead-claim");
    expect(await h.ledger.beginFinalizing("dead-claim", longAgo + 10_000, staleMs)).not.toBeNull();

    const tick = await h.tick({ pageSize: 1 });
    expect(tick.status).toBe(200);
    expect(tick.body.finalizedBatchIds).toEqual(["dead-claim"]);
    expect(tick.body.finalizations.staleFinalizing).toBe(1);
    expect((await h.ledger.getBatch("dead-claim"))?.status).toBe("succeeded");
    for (const id of ["gave-up-a", "gave-up-b"])
      expect(await h.ledger.getBatch(id)).toMatchObject({ status: "finalizing", exportAttempts: 1 });
    expect(h.sink.exports.filter((e) => e.batchId.startsWith("gave-up"))).toHaveLength(0);
  });

  it("sweeps the pending items of a batch flagged to end early, then finalizes it with the reason", async () => {
    h = await startReconcilerHarness();
    await h.createBatch("cancel-me", 4);
    const ref = { batchId: "cancel-me", itemId: "i0", generation: 1 };
    await h.ledger.leaseItem(ref, "w", 60_000, 5, Date.now());
    await h.ledger.completeItem(ref, "w", { value: 0 }, Date.now());
    await h.ledger.requestTermination("cancel-me", "cancelled", "cancelled by an operator", Date.now());
    const tick = await h.tick();
    expect(tick.body.finalizations.itemsSwept).toBe(3);
    expect(tick.body.finalized).toBe(1);
    const batch = await h.ledger.getBatch("cancel-me");
    expect(batch).toMatchObject({ status: "cancelled", reason: "cancelled by an operator" });
    const item = await h.ledger.getItem("cancel-me", "i3");
    expect(item?.error).toMatchObject({ kind: "cancelled", message: "cancelled by an operator" });
    expect(await h.sink.countRows("cancel-me")).toBe(1); // the finished item's result is kept
  });
});
