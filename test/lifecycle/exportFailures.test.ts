// Issue #15 item 3, end to end: a failed export ends in a visible state after a bounded, persisted
// number of attempts with backoff, raises its alert event, and can be re-run by an operator. The
// sink is the real DuckDB sink behind a wrapper that fails the exports the test says (before
// anything is written, or after the export committed with its answer lost). The reconciler is
// ticked by the test; its clock is moved past the ledger's nextExportAt to step over a backoff
// instead of waiting 30 s, and a tick before that time must not export.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../support/cloud";
import { items, type Lifecycle, startLifecycle } from "./support/lifecycleHarness";

let h: Lifecycle;
beforeAll(async () => {
  // A claim handed back after a failed export is re-claimed by the stale-finalizing sweep as soon
  // as its backoff allows: 1 s makes the backoff (nextExportAt) the only thing that holds it.
  h = await startLifecycle({ env: { TALLY_STALE_FINALIZING_SECONDS: "1" } });
});
afterAll(async () => {
  await h?.close();
});
afterEach(() => {
  h.reconcilerClock.offsetMs = 0;
  h.sink.failAlways = false;
  h.sink.failures = [];
});

const exportsOf = (id: string) => h.sink.calls.filter((c) => c.batchId === id);

/** Waits until the batch records `attempts` failed exports (the finalizer's write lands after its log). */
async function failedAttempts(id: string, attempts: number) {
  return waitFor(`batch ${id} to record ${attempts} failed export(s)`, async () => {
    const b = await h.batch(id);
    return b && b.exportAttempts === attempts ? b : null;
  });
}

/** A tick whose export attempt fails: 500 reconcile_incomplete naming the batch's export. */
async function failingTick(id: string) {
  const answer = await h.tickRaw();
  expect(answer.status).toBe(500);
  expect(answer.body.error).toMatchObject({ code: "reconcile_incomplete" });
  expect(answer.body.error.details).toEqual([
    { path: `finalizations/${id}`, problem: expect.stringMatching(/injected sink fault/) },
  ]);
}

/** Moves the reconciler's clock just past the batch's nextExportAt (the backoff's end). */
function stepPastBackoff(nextExportAt: number) {
  h.reconcilerClock.offsetMs = Math.max(h.reconcilerClock.offsetMs, nextExportAt - Date.now() + 1_000);
}

/** Waits until the batch's progress is past the 1 s stale-finalizing bound, by the reconciler's clock. */
async function claimStale(progressAt: number) {
  await waitFor(
    "the handed-back claim to be past the stale bound",
    () => h.reconcilerClock.now() > progressAt + 1_100,
  );
}

describe("export failures", () => {
  it("fails twice (once before writing, once after committing), backs off as persisted, then exports once", async () => {
    const id = "export-flaky";
    h.sink.failures = ["before", "after"];
    expect((await h.post("/v1/batches", { id, pipeline: "demo", items: items(0, 6) })).status).toBe(201);

    // Attempt 1: the worker that ended the last item finalizes; the export fails before writing.
    const first = await failedAttempts(id, 1);
    expect(first).toMatchObject({ status: "finalizing", exportFailedAt: null, finalizingAt: 0 });
    expect(first.exportError).toMatch(/injected sink fault/);
    expect(first.nextExportAt! - first.updatedAt).toBe(30_000);
    const view = await h.get(`/v1/batches/${id}`);
    expect(view.body.exportFailure).toMatchObject({ attempts: 1, failedAt: null });
    expect(Date.parse(view.body.exportFailure.nextAttemptAt)).toBe(first.nextExportAt);

    // A tick inside the backoff: no export.
    await claimStale(first.progressAt);
    expect((await h.tick()).body.finalizedBatchIds).toEqual([]);
    expect(exportsOf(id)).toHaveLength(1);

    // Attempt 2, after the backoff: the export commits, then fails to its caller.
    stepPastBackoff(first.nextExportAt!);
    await failingTick(id);
    const second = await failedAttempts(id, 2);
    expect(exportsOf(id).map((c) => c.outcome)).toEqual(["before", "after"]);
    expect(second.nextExportAt! - second.updatedAt).toBe(60_000);
    expect(await h.exportMarkers(id)).toBe(1);
    // Still inside the second (longer) backoff: nothing.
    h.reconcilerClock.offsetMs += 30_000;
    expect((await h.tick()).body.finalizedBatchIds).toEqual([]);
    expect(exportsOf(id)).toHaveLength(2);

    // Attempt 3 succeeds: the committed export is found, not redone; rows once.
    stepPastBackoff(second.nextExportAt!);
    expect((await h.tick()).body.finalizedBatchIds).toEqual([id]);
    expect(exportsOf(id).map((c) => c.outcome)).toEqual(["before", "after", "ok"]);
    const done = await h.batch(id);
    expect(done).toMatchObject({ status: "succeeded", summary: { exportedRows: 6 } });
    expect(h.events("batch.export_failed", id).map((l) => l.attempt)).toEqual([1, 2]);
    expect(h.events("batch.export_gave_up", id)).toEqual([]);
    expect(await h.exportMarkers(id)).toBe(1);
    expect((await h.get(`/v1/batches/${id}`)).body.exportFailure).toBeNull();
    const report = await h.assertInvariant(
      id,
      items(0, 6).map((i) => i.id),
    );
    expect(report.sinkRows).toBe(6);
  });

  it("a submission whose own settle meets a failing export still answers 201; the failure is recorded for the reconciler", async () => {
    // An empty batch is finalized by its submission itself: the export the submission runs fails.
    const id = "export-at-submission";
    h.sink.failures = ["before"];
    const answer = await h.post("/v1/batches", { id, pipeline: "demo", items: [] });
    expect(answer.status).toBe(201);
    const b = await failedAttempts(id, 1);
    expect(b).toMatchObject({ status: "finalizing", exportFailedAt: null });
    expect(h.events("batch.settle_failed", id)).toHaveLength(1);
    expect(h.events("batch.export_failed", id)).toHaveLength(1);
    // The reconciler's next attempt after the backoff finalizes it.
    stepPastBackoff(b.nextExportAt!);
    await claimStale(b.progressAt);
    expect((await h.tick()).body.finalizedBatchIds).toEqual([id]);
    expect((await h.batch(id))?.status).toBe("succeeded");
  });

  it("fails permanently: stays finalizing with exportFailedAt, shows it, logs export_gave_up; an operator re-export finalizes it once", async () => {
    const id = "export-broken";
    h.sink.failAlways = true;
    expect((await h.post("/v1/batches", { id, pipeline: "demo", items: items(0, 4) })).status).toBe(201);
    let b = await failedAttempts(id, 1);
    for (let attempt = 2; attempt <= 5; attempt++) {
      stepPastBackoff(b.nextExportAt!);
      await claimStale(b.progressAt);
      await failingTick(id);
      b = await failedAttempts(id, attempt);
    }
    expect(b).toMatchObject({ status: "finalizing", exportAttempts: 5, nextExportAt: null });
    expect(b.exportFailedAt).toEqual(expect.any(Number));
    expect(exportsOf(id)).toHaveLength(5);
    const gaveUp = h.events("batch.export_gave_up", id);
    expect(gaveUp).toHaveLength(1);
    expect(gaveUp[0]).toMatchObject({ severity: "ERROR", attempts: 5 });

    // The sweep leaves it alone now, however late: no claim, not even logged as a stale claim.
    const reclaimedBefore = h.events("batch.finalization_reclaimed", id).length;
    h.reconcilerClock.offsetMs += 86_400_000;
    expect((await h.tick()).body.finalizedBatchIds).toEqual([]);
    expect(exportsOf(id)).toHaveLength(5);
    expect(h.events("batch.finalization_reclaimed", id)).toHaveLength(reclaimedBefore);
    const view = await h.get(`/v1/batches/${id}`);
    expect(view.status).toBe(200);
    expect(view.body).toMatchObject({ status: "finalizing", outcome: null });
    expect(view.body.exportFailure).toMatchObject({ attempts: 5, nextAttemptAt: null });
    expect(view.body.exportFailure.error).toMatch(/injected sink fault/);
    expect(Date.parse(view.body.exportFailure.failedAt)).toBe(b.exportFailedAt);

    // The operator fixes the sink and re-exports.
    h.sink.failAlways = false;
    const again = await h.post(`/v1/batches/${id}:export`);
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ status: "succeeded", exportFailure: null, export: { rows: 4 } });
    expect(h.events("batch.reexport_requested", id)).toHaveLength(1);
    expect(exportsOf(id).map((c) => c.outcome)).toEqual([
      "before",
      "before",
      "before",
      "before",
      "before",
      "ok",
    ]);
    expect(await h.exportMarkers(id)).toBe(1);
    // A second re-export is refused: the batch is final.
    const twice = await h.post(`/v1/batches/${id}:export`);
    expect(twice.status).toBe(409);
    const report = await h.assertInvariant(
      id,
      items(0, 4).map((i) => i.id),
    );
    expect(report.sinkRows).toBe(4);
  });
});
