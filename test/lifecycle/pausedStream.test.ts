// Issue #15 item 1, end to end: an NDJSON stream that pauses past the stale-submission threshold and
// then continues. The pause is forced, not timed: the test holds the request body open (it writes
// the lines itself) until the reconciler's stale-submission sweep has ended the batch and a finalizer
// has recorded its outcome; only then does the stream go on. The fence must refuse the next chunk
// (a JSON 409, nothing stored), no item may become live in the finalized batch, and the sink must
// hold exactly the succeeded items.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../support/cloud";
import { items, type Lifecycle, startLifecycle, waitUntilStale } from "./support/lifecycleHarness";

const staleSeconds = 1;
let h: Lifecycle;
/** The coordinator's answer to the stream that went on after the sweep (asserted again below). */
let refused: { status: number; body: { error: { code: string; message: string } } } | null = null;
beforeAll(async () => {
  h = await startLifecycle({
    env: { TALLY_STALE_SUBMISSION_SECONDS: String(staleSeconds) },
    // One chunk stored at a time: after the pause, the second chunk's writeChunk waits for the
    // first one's (refused) store, so the refusal is always found there (see the last test).
    coordinator: { chunkItems: 5, cursorIntervalMs: 0, chunksInFlight: 1 },
  });
});
afterAll(async () => {
  await h?.close();
});

describe("an NDJSON stream paused past the stale-submission threshold", () => {
  it("is ended incomplete_submission and finalized; the next chunk is refused (409) and stores nothing", async () => {
    const id = "paused";
    const s = h.openStream();
    // Two full chunks (stored and published) and two lines of a third, buffered in the coordinator.
    await s.write([{ id, pipeline: "demo" }, ...items(0, 12)]);
    await waitFor(
      "the two stored chunks run",
      async () => (await h.ledger.countItems(id)).succeeded === 10,
      30_000,
    );
    expect((await h.batch(id))?.status).toBe("submitting");

    // The client stays silent past the threshold; then one reconciler tick.
    await waitUntilStale(h, id, staleSeconds);
    const tick = await h.tick();
    expect(tick.body.staleSubmissions).toMatchObject({ failed: 1 });
    expect(tick.body.finalizedBatchIds).toContain(id);
    const ended = await h.batch(id);
    expect(ended).toMatchObject({ status: "failed", terminateAs: "failed" });
    expect(ended?.reason).toMatch(/^incomplete_submission: received \d+ of an unknown number of items/);
    expect(ended?.summary).toMatchObject({ exportedRows: 10, counts: { total: 10, succeeded: 10 } });
    expect(h.events("batch.terminating", id)).toHaveLength(1);
    expect(s.answered).toBe(false); // the coordinator is still reading the stream

    // The stream goes on: the buffered lines and 8 more (two chunks), then its end.
    await s.write(items(12, 8));
    s.end();
    const answer = await s.answer;
    refused = answer;
    expect(answer.status).toBe(409);
    expect(answer.body.error).toMatchObject({ code: "failed_precondition" });
    expect(answer.body.error.message).toMatch(/^batch "paused" was \w+ while it was being submitted/);

    // Nothing of it was stored, published or run; nothing is live; the outcome stands.
    await h.doorbellsSettled();
    expect(await h.ledger.countItems(id)).toMatchObject({ total: 10, pending: 0, running: 0, succeeded: 10 });
    const late = new Set(items(10, 10).map((i) => i.id));
    expect(h.doorbellsFor(id).filter((d) => late.has(d.itemId))).toEqual([]);
    expect(h.executions.filter((e) => e.batchId === id && late.has(e.itemId))).toEqual([]);
    const after = await h.batch(id);
    expect(after).toMatchObject({ status: "failed", finishedAt: ended?.finishedAt });
    // No item ran after the batch was finalized.
    expect(h.executions.filter((e) => e.batchId === id && e.at > ended!.finalizingAt!)).toEqual([]);

    const report = await h.assertInvariant(
      id,
      items(0, 10).map((i) => i.id),
    );
    expect(report.sinkRows).toBe(10);
    expect(await h.exportMarkers(id)).toBe(1);
  });

  // The NDJSON path once said 'cancelled' here whatever ended the batch (the JSON path did not).
  it("the refusal names how the batch ended (failed, not cancelled)", () => {
    expect(refused?.status).toBe(409);
    expect(refused?.body.error.message).toMatch(/^batch "paused" was failed while it was being submitted/);
  });
});
