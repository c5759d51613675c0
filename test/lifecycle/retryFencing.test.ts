// Issue #15 item 2, end to end: an operator retry pages through failed items (new generation); a
// retry that outlives the stale-submission threshold is taken for dead by the reconciler between two
// pages, and a cancel can land between two pages. The pause between pages is forced: the retry's
// first page waits at a gate in the coordinator's queue (its publish) while the test ticks the
// reconciler or cancels. When the gate opens, the next page's resets must be refused by the fence
// (409, nothing reset into a generation that was finalized), and the ledger invariant must hold.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { gate, items, type Lifecycle, startLifecycle, waitUntilStale } from "./support/lifecycleHarness";

const staleSeconds = 1;
const n = 12;
const pageSize = 5;
let h: Lifecycle;
beforeAll(async () => {
  h = await startLifecycle({
    env: { TALLY_STALE_SUBMISSION_SECONDS: String(staleSeconds) },
    coordinator: { operatorPageSize: pageSize },
  });
});
afterAll(async () => {
  await h?.close();
});
afterEach(() => {
  h.coordinatorQueue.hook = null;
});

/** A batch of `n` items that all fail permanently in generation 1 and would all succeed if retried. */
async function failedBatch(id: string) {
  for (const it of items(0, n)) h.failing.items.add(`${id}/${it.id}`);
  const submitted = await h.post("/v1/batches", { id, pipeline: "demo", items: items(0, n) });
  expect(submitted.status).toBe(201);
  const b = await h.waitForStatus(id, ["failed"]);
  expect(b.summary?.counts).toMatchObject({ total: n, failed: n });
  for (const it of items(0, n)) h.failing.items.delete(`${id}/${it.id}`);
  return b;
}

/** Holds the retry's first publish (generation 2 of `id`) at a gate; later publishes pass. */
function gateFirstRetryPage(id: string) {
  const g = gate();
  h.coordinatorQueue.hook = async (refs) => {
    if (refs[0]?.batchId === id && refs[0].generation === 2 && g.hits === 0) await g.pass();
    return "publish" as const;
  };
  return g;
}

async function itemsByGeneration(id: string) {
  const { entries } = await h.ledger.listItems(id, { limit: 1000 });
  const out: Record<string, number> = {};
  for (const it of entries) {
    const key = `${it.status}@${it.generation}`;
    out[key] = (out[key] ?? 0) + 1;
  }
  return out;
}

describe("an operator retry, interrupted between two pages", () => {
  it("outlives the stale threshold: the reconciler resumes and finalizes it; the next page is refused by the fence", async () => {
    const id = "retry-stale";
    await failedBatch(id);
    const firstPage = gateFirstRetryPage(id);
    const retry = h.post(`/v1/batches/${id}:retry`);
    await firstPage.reached;
    expect(await itemsByGeneration(id)).toEqual({ "pending@2": pageSize, "failed@1": n - pageSize });

    // The retry says nothing for longer than the threshold: the reconciler takes it for dead,
    // publishes what it reset and starts the generation; the worker runs it and finalizes it.
    await waitUntilStale(h, id, staleSeconds);
    const tick = await h.tick();
    expect(tick.body.staleSubmissions).toMatchObject({ resumed: 1 });
    const finalized = await h.waitForStatus(id, ["succeeded", "partial", "failed"]);
    expect(finalized).toMatchObject({ status: "failed", generation: 2 });
    expect(finalized.summary).toMatchObject({
      exportedRows: pageSize,
      counts: { total: n, succeeded: pageSize, failed: n - pageSize },
    });

    // The retry wakes up: its next page is refused, nothing is reset into the finalized generation.
    firstPage.open();
    const answer = await retry;
    expect(answer.status).toBe(409);
    expect(answer.body.error.code).toBe("failed_precondition");
    expect(answer.body.error.message).toMatch(
      new RegExp(`^the retry of batch "${id}" stopped after ${pageSize} items: `),
    );
    expect(h.events("batch.retry_fenced", id)).toHaveLength(1);
    await h.doorbellsSettled();
    expect(await itemsByGeneration(id)).toEqual({ "succeeded@2": pageSize, "failed@1": n - pageSize });
    const after = await h.batch(id);
    expect(after).toMatchObject({ status: "failed", generation: 2, finishedAt: finalized.finishedAt });
    expect(h.executions.filter((e) => e.batchId === id && e.at > finalized.finalizingAt!)).toEqual([]);
    const report = await h.assertInvariant(
      id,
      items(0, n).map((i) => i.id),
    );
    expect(report.sinkRows).toBe(pageSize);
  });

  it("is cancelled between two pages: the batch ends cancelled; the next page is refused by the fence", async () => {
    const id = "retry-cancel";
    await failedBatch(id);
    const firstPage = gateFirstRetryPage(id);
    const retry = h.post(`/v1/batches/${id}:retry`);
    await firstPage.reached;

    const cancel = await h.post(`/v1/batches/${id}:cancel`);
    expect(cancel.status).toBe(200);
    expect(cancel.body).toMatchObject({ status: "cancelled", generation: 2 });
    const ended = await h.batch(id);

    firstPage.open();
    const answer = await retry;
    expect(answer.status).toBe(409);
    expect(answer.body.error.message).toMatch(
      new RegExp(`^the retry of batch "${id}" stopped after ${pageSize} items: `),
    );
    await h.doorbellsSettled();
    // The page reset before the cancel was swept (failed cancelled, generation 2); the rest stayed
    // as generation 1 left them; nothing ran.
    expect(await itemsByGeneration(id)).toEqual({ "failed@2": pageSize, "failed@1": n - pageSize });
    expect(await h.ledger.countFailedByKind(id)).toEqual({ cancelled: pageSize, permanent: n - pageSize });
    expect(h.executions.filter((e) => e.batchId === id && e.at > ended!.finalizingAt!)).toEqual([]);
    expect(await h.batch(id)).toMatchObject({ status: "cancelled", finishedAt: ended?.finishedAt });
    const report = await h.assertInvariant(
      id,
      items(0, n).map((i) => i.id),
    );
    expect(report.sinkRows).toBe(0);
  });
});
