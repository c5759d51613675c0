// Vanished workers (F5, F9): an item whose lease lapsed is back in play within the lease plus one
// reconciler tick, and fails `attempts_exhausted` once the ledger's attempts are used up.
import { afterEach, describe, expect, it } from "vitest";
import { waitFor } from "../support/cloud";
import { type ReconcilerHarness, startReconcilerHarness } from "./support/reconcilerHarness";

let h: ReconcilerHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe("expired leases", () => {
  it("redrives a vanished worker's item within lease + one tick, with a new doorbell", async () => {
    h = await startReconcilerHarness({ env: { TALLY_LEASE_SECONDS: "1" } });
    const harness = h;
    await h.createBatch("b1", 2);
    const leaseMs = h.config.topology.delivery.leaseSeconds * 1000;
    const tickMs = 500;
    const ref = { batchId: "b1", itemId: "i0", generation: 1 };
    const leasedAt = Date.now();
    expect((await h.ledger.leaseItem(ref, "vanished-worker", leaseMs, 5, leasedAt)).kind).toBe("leased");
    const expiresAt = leasedAt + leaseMs;

    // The local scheduler: a tick every tickMs, never overlapping (like local/schedulerLoop.ts).
    let stop = false;
    const ticks: Array<{ start: number; end: number; redriven: number }> = [];
    const scheduler = (async () => {
      while (!stop) {
        const start = Date.now();
        const r = await harness.tick();
        expect(r.status).toBe(200);
        ticks.push({ start, end: Date.now(), redriven: r.body.expiredLeases.redriven });
        await new Promise((res) => setTimeout(res, Math.max(0, tickMs - (Date.now() - start))));
      }
    })();
    try {
      await waitFor(
        "a tick after the lease lapsed",
        () => ticks.some((t) => t.start > expiresAt),
        30_000,
        20,
      );
      await waitFor(
        "the redriven item's doorbell",
        () => harness.doorbells.some((d) => d.itemId === "i0"),
        15_000,
      );
    } finally {
      stop = true;
      await scheduler;
    }
    // The bound: at the latest, the first tick that starts after the lease lapsed redrives the item
    // (one that started just before may already see it lapsed when it queries). With ticks every
    // `tickMs` — back to back when a tick runs longer — that tick starts within one period of the
    // expiry, so the item is back in play within lease + one tick (+ that tick's own run).
    const first = ticks.findIndex((t) => t.start > expiresAt);
    const redriving = ticks.findIndex((t) => t.redriven > 0);
    const tick = ticks[redriving]!;
    const period = Math.max(tickMs, ...ticks.slice(0, first + 1).map((t) => t.end - t.start));
    console.log(
      `lease ${leaseMs} ms, tick every ${tickMs} ms (longest run ${period} ms): redriven ${tick.end - leasedAt} ms after the lease was taken`,
    );
    expect(redriving).toBeGreaterThanOrEqual(0);
    expect(redriving).toBeLessThanOrEqual(first);
    expect(tick.end).toBeGreaterThan(expiresAt); // never before the lease lapsed
    expect(ticks[first]!.start - expiresAt).toBeLessThanOrEqual(period);
    expect(tick.end - leasedAt).toBeLessThanOrEqual(leaseMs + 2 * period);

    const item = await h.ledger.getItem("b1", "i0");
    expect(item).toMatchObject({ status: "pending", attempt: 1, lease: null });
    expect(item?.lastError?.kind).toBe("timeout");
    expect(ticks.reduce((n, t) => n + t.redriven, 0)).toBe(1);
    expect(h.doorbells.filter((d) => d.itemId === "i0")).toHaveLength(1);
    expect(h.logs.filter((l) => l.event === "item.redriven" && l.itemId === "i0")).toHaveLength(1);
    // The other item was never touched.
    expect((await h.ledger.getItem("b1", "i1"))?.status).toBe("pending");

    // A live worker takes the redelivery and completes it; the batch finalizes with both results.
    expect(await h.finishItems("b1")).toBe(2);
    const done = await h.tick();
    expect(done.body.finalizedBatchIds).toEqual(["b1"]);
    expect((await h.ledger.getItem("b1", "i0"))?.attempt).toBe(2);
    expect((await h.ledger.getBatch("b1"))?.status).toBe("succeeded");
    expect(await h.sink.countRows("b1")).toBe(2);
  });

  it("fails the item attempts_exhausted at the maximum, and the batch still finalizes", async () => {
    h = await startReconcilerHarness({ env: { TALLY_MAX_ITEM_ATTEMPTS: "2" } });
    await h.createBatch("b2", 1);
    const ref = { batchId: "b2", itemId: "i0", generation: 1 };
    // Two deliveries that each took the lease and vanished; leases already lapsed.
    expect((await h.ledger.leaseItem(ref, "w1", 1, 5, Date.now() - 10_000)).kind).toBe("leased");
    const first = await h.tick();
    expect(first.status).toBe(200);
    expect(first.body.expiredLeases).toMatchObject({ found: 1, redriven: 1, exhausted: 0 });
    await h.waitForDoorbells("b2", ["i0"]);

    expect((await h.ledger.leaseItem(ref, "w2", 1, 5, Date.now() - 10_000)).kind).toBe("leased");
    const second = await h.tick();
    expect(second.body.expiredLeases).toMatchObject({ found: 1, redriven: 0, exhausted: 1 });
    const item = await h.ledger.getItem("b2", "i0");
    expect(item?.status).toBe("failed");
    expect(item?.error?.kind).toBe("attempts_exhausted");
    expect(item?.error?.message).toMatch(/attempt 2 of 2/);
    // The exhausted item was the batch's last live one: finalized in the same tick.
    expect(second.body.finalized).toBe(1);
    const batch = await h.ledger.getBatch("b2");
    expect(batch?.status).toBe("failed");
    expect(batch?.summary?.failedByKind).toEqual({ attempts_exhausted: 1 });

    // A further tick finds nothing.
    const third = await h.tick();
    expect(third.body.expiredLeases).toMatchObject({ found: 0, redriven: 0, exhausted: 0 });
    expect(third.body.finalized).toBe(0);
  });

  it("applies the batch's pipeline's attempt limit, not the global one", async () => {
    // An HTTP pipeline declaring 2 attempts under the global 5 (as the worker's lease applies it).
    const saved = process.env.TALLY_HTTP_PIPELINES;
    process.env.TALLY_HTTP_PIPELINES = JSON.stringify([
      { name: "two-tries", url: "http://127.0.0.1:9/never-called", timeoutSeconds: 10, maxAttempts: 2 },
    ]);
    try {
      h = await startReconcilerHarness();
      expect(h.config.topology.delivery.maxItemAttempts).toBe(5);
      const at = Date.now();
      await h.ledger.createBatch(
        {
          batchId: "b3",
          pipeline: "two-tries",
          failureThreshold: 0.5,
          dependsOn: [],
          contentHash: "h",
          total: 1,
        },
        at,
      );
      await h.ledger.appendItems("b3", 0, [{ itemId: "i0", payload: null }], at, { publishable: true });
      await h.ledger.advanceCursor("b3", 1, at);
      expect(await h.ledger.markSubmitted("b3", 1, at)).toBe(true);
      const ref = { batchId: "b3", itemId: "i0", generation: 1 };
      expect((await h.ledger.leaseItem(ref, "w1", 1, 2, Date.now() - 10_000)).kind).toBe("leased");
      const firstTick = await h.tick();
      expect(firstTick.body, JSON.stringify(firstTick.body)).toHaveProperty("expiredLeases");
      expect(firstTick.body.expiredLeases).toMatchObject({ found: 1, redriven: 1, exhausted: 0 });
      expect((await h.ledger.leaseItem(ref, "w2", 1, 2, Date.now() - 10_000)).kind).toBe("leased");
      expect((await h.tick()).body.expiredLeases).toMatchObject({ found: 1, redriven: 0, exhausted: 1 });
      const item = await h.ledger.getItem("b3", "i0");
      expect(item).toMatchObject({ status: "failed", attempt: 2 });
      expect(item?.error?.message).toMatch(/attempt 2 of 2/);
      const failed = h.logs.filter((l) => l.event === "item.failed" && l.batchId === "b3");
      expect(failed).toHaveLength(1);
      expect(failed[0]).toMatchObject({ kind: "attempts_exhausted", maxAttempts: 2 });
    } finally {
      if (saved === undefined) delete process.env.TALLY_HTTP_PIPELINES;
      else process.env.TALLY_HTTP_PIPELINES = saved;
    }
  });
});
