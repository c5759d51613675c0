// Faults in the dangerous gaps (issue #15), each at a named crash point armed only by the test
// (functions/faults.ts), with the hit asserted: a finalizer that dies after its export committed and
// before it recorded the outcome, and a worker that dies right after its completion commit. The
// reconciler alone must finish the job, with one export and one row per item.
import { afterEach, describe, expect, it } from "vitest";
import { finalizeBatch } from "../../functions/core/finalizeBatch";
import { finalizeDepsFor } from "../../functions/handlers/finalizeDeps";
import { waitFor } from "../support/cloud";
import { envelope, post, serveWorker } from "../worker/support/workerHarness";
import { type ReconcilerHarness, startReconcilerHarness } from "./support/reconcilerHarness";

let h: ReconcilerHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe("crash points", () => {
  it("finalizer killed after the export committed, before finishBatch: one export, rows once, taken over after the stale bound", async () => {
    h = await startReconcilerHarness({ env: { TALLY_STALE_FINALIZING_SECONDS: "2" } });
    await h.createBatch("fx", 5);
    expect(await h.finishItems("fx")).toBe(5);
    const hits: string[] = [];
    const dying = {
      ...finalizeDepsFor(h.deps),
      crashAt: (point: string, batchId: string) => {
        hits.push(`${point}:${batchId}`);
        return true;
      },
    };
    await expect(finalizeBatch(dying, "fx")).rejects.toThrow(/crash point afterExportBeforeFinish/);
    expect(hits).toEqual(["afterExportBeforeFinish:fx"]);
    // What the dead finalizer left: the export is in the sink, the batch still finalizing.
    expect(await h.exportsInSink("fx")).toBe(1);
    expect(await h.sink.countRows("fx")).toBe(5);
    const left = await h.ledger.getBatch("fx");
    expect(left?.status).toBe("finalizing");
    // A tick within the stale bound leaves the claim alone.
    const early = await h.tick();
    expect(early.status).toBe(200);
    expect(early.body.finalizedBatchIds).toEqual([]);
    // After it, a tick takes over: the export is found (not redone) and the outcome recorded.
    const claimedAt = left!.finalizingAt!;
    await waitFor("the claim to go stale", async () => Date.now() > claimedAt + 2_000, 10_000);
    const takeover = await h.tick();
    expect(takeover.status).toBe(200);
    expect(takeover.body.finalizedBatchIds).toEqual(["fx"]);
    const done = await h.ledger.getBatch("fx");
    expect(done).toMatchObject({ status: "succeeded", summary: { exportedRows: 5 } });
    expect(done!.finishedAt! - claimedAt).toBeLessThan(2_000 + 10_000);
    expect(await h.exportsInSink("fx")).toBe(1);
    expect(await h.sink.countRows("fx")).toBe(5);
  });

  it("worker killed right after its completion commit: one execution, the committed result, finalized by the reconciler", async () => {
    h = await startReconcilerHarness();
    await h.createBatch("wx", 1);
    const hits: string[] = [];
    const worker = await serveWorker(h.deps, {
      crashAt: (point, batchId) => {
        hits.push(`${point}:${batchId}`);
        return true;
      },
    });
    const first = await post(worker.url, envelope({ batchId: "wx", itemId: "i0", generation: "1" }, "m1"));
    expect(first.status).toBe(500);
    expect(hits).toEqual(["afterCompletionCommit:wx"]);
    await worker.close();
    const item = await h.ledger.getItem("wx", "i0");
    expect(item).toMatchObject({ status: "succeeded", attempt: 1 });
    // The worker died before its settle: the batch is still running until the reconciler looks.
    expect((await h.ledger.getBatch("wx"))?.status).toBe("running");
    // Pub/Sub redelivers (no ack): the redelivery finds the item terminal and runs nothing.
    const healthy = await serveWorker(h.deps);
    const again = await post(healthy.url, envelope({ batchId: "wx", itemId: "i0", generation: "1" }, "m2"));
    await healthy.close();
    expect(again.status).toBe(200);
    expect((await h.ledger.getItem("wx", "i0"))?.attempt).toBe(1);
    const tick = await h.tick();
    expect(tick.body.finalizedBatchIds).toEqual(["wx"]);
    expect(await h.sink.countRows("wx")).toBe(1);
    const b = await h.ledger.getBatch("wx");
    expect(b?.summary?.counts).toMatchObject({ total: 1, succeeded: 1 });
    expect(item?.result).toEqual((await h.ledger.getItem("wx", "i0"))?.result);
  });
});
