// The Firestore ledger against the real emulator: every transition, the refused ones, and the races.
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { FirestoreLedger } from "../functions/adapters/firestoreLedger";
import type { NewBatch } from "../functions/core/model";
import type { ItemRef } from "../functions/core/ports";
import { testFirestore, uniqueProjectId } from "./support/cloud";

const db = testFirestore(uniqueProjectId("ledger"));
const ledger = new FirestoreLedger(db);
afterAll(() => db.terminate());

let seq = 0;
let batchId = "";
const newBatch = (over: Partial<NewBatch> = {}): NewBatch => ({
  batchId,
  pipeline: "demo",
  failureThreshold: 0.05,
  dependsOn: [],
  contentHash: "h1",
  total: null,
  ...over,
});
const ref = (itemId: string, generation = 1): ItemRef => ({ batchId, itemId, generation });
const T0 = 1_700_000_000_000;

async function batchWithItems(n: number, opts: { publishable?: boolean } = {}) {
  await ledger.createBatch(newBatch(), T0);
  const items = Array.from({ length: n }, (_, i) => ({ itemId: `i${i}`, payload: { n: i } }));
  await ledger.appendItems(batchId, 0, items, T0, { publishable: opts.publishable ?? true });
}

beforeEach(() => {
  batchId = `b${++seq}-${Date.now()}`;
});

describe("batch creation", () => {
  it("creates, recognises an identical re-submission, and reports a conflict", async () => {
    const a = await ledger.createBatch(newBatch(), T0);
    expect(a.kind).toBe("created");
    expect(a.batch.status).toBe("submitting");
    const b = await ledger.createBatch(newBatch(), T0 + 1);
    expect(b.kind).toBe("exists");
    expect(b.batch.createdAt).toBe(T0);
    const c = await ledger.createBatch(newBatch({ contentHash: "other" }), T0 + 2);
    expect(c.kind).toBe("conflict");
    expect((await ledger.getBatch(batchId))?.contentHash).toBe("h1");
  });

  it("creates a batch with dependencies as blocked", async () => {
    const r = await ledger.createBatch(newBatch({ dependsOn: ["x"] }), T0);
    expect(r.batch.status).toBe("blocked");
    expect(await ledger.unblockBatch(batchId, T0 + 1)).toBe(true);
    expect((await ledger.getBatch(batchId))?.status).toBe("submitting");
    expect(await ledger.unblockBatch(batchId, T0 + 2)).toBe(false);
  });
});

describe("submission", () => {
  it("appends in chunks, never overwrites a stored item, and resumes from the cursor", async () => {
    await ledger.createBatch(newBatch(), T0);
    const items = Array.from({ length: 10 }, (_, i) => ({ itemId: `i${i}`, payload: { n: i } }));
    await ledger.appendItems(batchId, 0, items.slice(0, 5), T0, { publishable: true });
    await ledger.advanceCursor(batchId, 5, T0);
    // A worker takes item 0 before the interrupted submission is re-sent.
    expect((await ledger.leaseItem(ref("i0"), "w", 60_000, 5, T0)).kind).toBe("leased");
    // "Interrupted": the batch says 5 received, cursor 5. Re-sending appends from 0 again.
    await ledger.appendItems(batchId, 0, items, T0 + 10, { publishable: true });
    const b = await ledger.getBatch(batchId);
    expect(b?.received).toBe(10);
    expect(b?.cursor).toBe(5);
    expect((await ledger.getItem(batchId, "i0"))?.status).toBe("running"); // not reset
    const rest = await ledger.readItemRefs(batchId, b!.cursor, 100);
    expect(rest.map((r) => r.itemId)).toEqual(["i5", "i6", "i7", "i8", "i9"]);
    // The cursor never moves back.
    await ledger.advanceCursor(batchId, 10, T0 + 20);
    expect((await ledger.advanceCursor(batchId, 3, T0 + 30)).cursor).toBe(10);
    expect(await ledger.markSubmitted(batchId, 10, T0 + 40)).toBe(true);
    expect(await ledger.markSubmitted(batchId, 10, T0 + 41)).toBe(false);
    const final = await ledger.getBatch(batchId);
    expect(final).toMatchObject({ status: "running", total: 10, submissionComplete: true });
    expect((await ledger.getItemsBySeq(batchId, 8, 5)).map((i) => i.itemId)).toEqual(["i8", "i9"]);
  });
});

it("stores chunks out of order with `received` deferred, then moves received with the cursor", async () => {
  await ledger.createBatch(newBatch(), T0);
  const items = Array.from({ length: 9 }, (_, i) => ({ itemId: `i${i}`, payload: { n: i } }));
  // Three chunks stored concurrently (the coordinator's path for a new batch).
  await Promise.all(
    [6, 3, 0].map((from) =>
      ledger.appendItems(batchId, from, items.slice(from, from + 3), T0, {
        publishable: true,
        deferReceived: true,
      }),
    ),
  );
  expect((await ledger.getBatch(batchId))?.received).toBe(0); // deferred: the batch doc untouched
  expect((await ledger.readItemRefs(batchId, 0, 100)).map((r) => r.itemId)).toEqual(
    items.map((i) => i.itemId),
  );
  const moved = await ledger.advanceCursor(batchId, 6, T0 + 10, 6);
  expect(moved).toMatchObject({ cursor: 6, received: 6 });
  // Neither moves back.
  expect(await ledger.advanceCursor(batchId, 3, T0 + 20, 3)).toMatchObject({ cursor: 6, received: 6 });
  expect(await ledger.markSubmitted(batchId, 9, T0 + 30)).toBe(true);
  expect(await ledger.getBatch(batchId)).toMatchObject({
    status: "running",
    total: 9,
    received: 9,
    cursor: 9,
  });
});

describe("item transitions", () => {
  it("lease → checkpoint → complete, with the result in the same write", async () => {
    await batchWithItems(1);
    const l = await ledger.leaseItem(ref("i0"), "w1", 30_000, 5, T0 + 1);
    expect(l.kind).toBe("leased");
    if (l.kind !== "leased") return;
    expect(l.item).toMatchObject({
      status: "running",
      attempt: 1,
      lease: { owner: "w1", until: T0 + 30_001 },
    });
    expect(await ledger.checkpointStep(ref("i0"), "w1", "first", { a: 1 }, T0 + 2)).toBe(true);
    expect(await ledger.checkpointStep(ref("i0"), "intruder", "first", { a: 2 }, T0 + 2)).toBe(false);
    expect(await ledger.heartbeat(ref("i0"), "w1", 30_000, T0 + 3)).toBe(true);
    expect(await ledger.heartbeat(ref("i0"), "intruder", 30_000, T0 + 3)).toBe(false);
    const c = await ledger.completeItem(ref("i0"), "w1", { total: 42 }, T0 + 4);
    expect(c.kind).toBe("done");
    const item = await ledger.getItem(batchId, "i0");
    expect(item).toMatchObject({
      status: "succeeded",
      result: { total: 42 },
      lease: null,
      finishedAt: T0 + 4,
    });
    expect(item?.steps.first).toMatchObject({ status: "succeeded", output: { a: 1 } });
    expect(item?.lease).toBeNull();
  });

  it("refuses to lease a terminal item, a live lease, or another generation", async () => {
    await batchWithItems(2);
    await ledger.leaseItem(ref("i0"), "w1", 30_000, 5, T0);
    const live = await ledger.leaseItem(ref("i0"), "w2", 30_000, 5, T0 + 1);
    expect(live).toMatchObject({ kind: "skip", reason: "leased_by_other" });
    await ledger.completeItem(ref("i0"), "w1", 1, T0 + 2);
    expect(await ledger.leaseItem(ref("i0"), "w2", 30_000, 5, T0 + 3)).toMatchObject({
      kind: "skip",
      reason: "terminal",
    });
    expect(await ledger.leaseItem(ref("i1", 2), "w2", 30_000, 5, T0)).toMatchObject({
      kind: "skip",
      reason: "stale_generation",
    });
    expect(await ledger.leaseItem(ref("nope"), "w2", 30_000, 5, T0)).toMatchObject({
      kind: "skip",
      reason: "not_found",
    });
    // An expired lease can be taken over.
    await ledger.leaseItem(ref("i1"), "w1", 1_000, 5, T0);
    const over = await ledger.leaseItem(ref("i1"), "w2", 1_000, 5, T0 + 5_000);
    expect(over).toMatchObject({ kind: "leased", item: { attempt: 2, lease: { owner: "w2" } } });
  });

  it("fails permanently only when not terminal; release only by the holder", async () => {
    await batchWithItems(3);
    await ledger.leaseItem(ref("i0"), "w1", 30_000, 5, T0);
    expect(
      (await ledger.failItem(ref("i0"), { kind: "permanent", message: "bad" }, T0 + 1, { owner: "w2" })).kind,
    ).toBe("skip");
    expect((await ledger.failItem(ref("i0"), { kind: "dead_lettered", message: "dl" }, T0 + 1)).kind).toBe(
      "skip",
    );
    expect(
      (await ledger.failItem(ref("i0"), { kind: "permanent", message: "bad" }, T0 + 1, { owner: "w1" })).kind,
    ).toBe("done");
    expect(
      (await ledger.failItem(ref("i0"), { kind: "permanent", message: "again" }, T0 + 2, { owner: "w1" }))
        .kind,
    ).toBe("skip");
    expect((await ledger.completeItem(ref("i0"), "w1", 1, T0 + 3)).kind).toBe("skip");
    expect((await ledger.getItem(batchId, "i0"))?.error).toEqual({ kind: "permanent", message: "bad" });

    await ledger.leaseItem(ref("i1"), "w1", 30_000, 5, T0);
    expect((await ledger.releaseItem(ref("i1"), "w2", null, T0 + 1)).kind).toBe("skip");
    const rel = await ledger.releaseItem(ref("i1"), "w1", { kind: "transient", message: "flaky" }, T0 + 1);
    expect(rel).toMatchObject({
      kind: "done",
      item: { status: "pending", lastError: { kind: "transient" } },
    });
    // A pending item without a live lease can be dead-lettered.
    expect((await ledger.failItem(ref("i1"), { kind: "dead_lettered", message: "dl" }, T0 + 2)).kind).toBe(
      "done",
    );
  });

  it("fails attempts_exhausted when the ledger's attempts reach the maximum", async () => {
    await batchWithItems(1);
    for (let a = 1; a <= 2; a++) {
      expect((await ledger.leaseItem(ref("i0"), "w", 30_000, 2, T0 + a)).kind).toBe("leased");
      await ledger.releaseItem(ref("i0"), "w", { kind: "transient", message: `try ${a}` }, T0 + a);
    }
    const r = await ledger.leaseItem(ref("i0"), "w", 30_000, 2, T0 + 10);
    expect(r).toMatchObject({
      kind: "exhausted",
      item: { status: "failed", error: { kind: "attempts_exhausted" } },
    });
    expect((await ledger.getItem(batchId, "i0"))?.error?.message).toContain("try 2");
  });

  it("finds expired leases with the indexed query and redrives or exhausts them", async () => {
    await batchWithItems(3);
    await ledger.leaseItem(ref("i0"), "dead", 1_000, 5, T0);
    await ledger.leaseItem(ref("i1"), "alive", 60_000, 5, T0);
    await ledger.leaseItem(ref("i2"), "dead", 1_000, 1, T0);
    const expired = (await ledger.findExpiredLeases(T0 + 2_000, 100)).filter((r) => r.batchId === batchId);
    expect(expired.map((r) => r.itemId).sort()).toEqual(["i0", "i2"]);
    expect(await ledger.redriveItem(ref("i0"), 5, T0 + 2_000)).toBe("redriven");
    expect(await ledger.redriveItem(ref("i0"), 5, T0 + 2_000)).toBe("skip");
    expect(await ledger.redriveItem(ref("i1"), 5, T0 + 2_000)).toBe("skip");
    expect(await ledger.redriveItem(ref("i2"), 1, T0 + 2_000)).toBe("exhausted");
    expect((await ledger.getItem(batchId, "i0"))?.status).toBe("pending");
    expect((await ledger.getItem(batchId, "i2"))?.error?.kind).toBe("attempts_exhausted");
  });

  it("finds stale pending items of started batches only", async () => {
    await batchWithItems(2);
    const other = batchId;
    batchId = `${other}-blocked`;
    await ledger.createBatch(newBatch({ dependsOn: [other] }), T0);
    await ledger.appendItems(batchId, 0, [{ itemId: "x", payload: null }], T0, { publishable: false });
    const stale = await ledger.findStalePending(T0 + 1, 1000);
    const mine = stale.filter((r) => r.batchId === other || r.batchId === batchId);
    expect(mine.map((r) => `${r.batchId}/${r.itemId}`).sort()).toEqual([`${other}/i0`, `${other}/i1`]);
    await ledger.touchPending(mine, T0 + 5);
    expect((await ledger.findStalePending(T0 + 1, 1000)).filter((r) => r.batchId === other)).toHaveLength(0);
  });
});

describe("counts and finalization", () => {
  it("derives counts, answers 'anything left' and lets exactly one finalizer win", async () => {
    await batchWithItems(3);
    await ledger.markSubmitted(batchId, 3, T0);
    expect(await ledger.hasLiveItems(batchId)).toBe(true);
    for (const id of ["i0", "i1"]) {
      await ledger.leaseItem(ref(id), "w", 30_000, 5, T0);
      await ledger.completeItem(ref(id), "w", id, T0);
    }
    await ledger.leaseItem(ref("i2"), "w", 30_000, 5, T0);
    await ledger.failItem(ref("i2"), { kind: "permanent", message: "no" }, T0, { owner: "w" });
    expect(await ledger.hasLiveItems(batchId)).toBe(false);
    expect(await ledger.countItems(batchId)).toEqual({
      total: 3,
      pending: 0,
      running: 0,
      succeeded: 2,
      failed: 1,
    });
    expect(await ledger.countFailedByKind(batchId)).toEqual({ permanent: 1 });

    const attempts = await Promise.all(
      Array.from({ length: 20 }, () => ledger.beginFinalizing(batchId, T0 + 1, 60_000)),
    );
    const claims = attempts.filter((a) => a !== null);
    expect(claims).toHaveLength(1);
    const rows: unknown[] = [];
    for await (const page of ledger.streamResults(batchId, 1, 1)) rows.push(...page);
    expect(rows).toHaveLength(2);
    const fin = await ledger.finishBatch(
      batchId,
      claims[0]!,
      {
        outcome: "failed",
        counts: await ledger.countItems(batchId),
        failedByKind: {},
        exportId: "e",
        exportedRows: 2,
        durationMs: 1,
      },
      T0 + 2,
    );
    expect(fin?.status).toBe("failed");
    expect(await ledger.finishBatch(batchId, claims[0]!, fin!.summary!, T0 + 3)).toBeNull();
    // A stale finalizing claim is taken over, a fresh one is not.
  });

  it("a released claim (failed export) can be re-claimed at once, only by its own holder", async () => {
    await batchWithItems(0);
    await ledger.markSubmitted(batchId, 0, T0);
    const claim = await ledger.beginFinalizing(batchId, T0, 60_000);
    await ledger.releaseFinalizing(batchId, T0 + 5); // not our claim: ignored
    expect(await ledger.beginFinalizing(batchId, T0 + 1_000, 60_000)).toBeNull();
    await ledger.releaseFinalizing(batchId, claim!.finalizingAt!);
    expect(await ledger.beginFinalizing(batchId, T0 + 1_000, 60_000)).not.toBeNull();
  });

  it("re-claims a finalizing batch only after it went stale", async () => {
    await batchWithItems(0);
    await ledger.markSubmitted(batchId, 0, T0);
    expect(await ledger.beginFinalizing(batchId, T0, 60_000)).not.toBeNull();
    expect(await ledger.beginFinalizing(batchId, T0 + 1_000, 60_000)).toBeNull();
    expect(await ledger.beginFinalizing(batchId, T0 + 61_000, 60_000)).not.toBeNull();
  });
});

describe("operator actions", () => {
  it("cancels pending items, leaves running ones, and ends as cancelled", async () => {
    await batchWithItems(4);
    await ledger.markSubmitted(batchId, 4, T0);
    await ledger.leaseItem(ref("i0"), "w", 30_000, 5, T0);
    const b = await ledger.requestTermination(batchId, "cancelled", "operator cancel", T0 + 1);
    expect(b?.terminateAs).toBe("cancelled");
    expect(await ledger.cancelPendingItems(batchId, "cancelled by operator", 2, T0 + 2)).toBe(2);
    expect(await ledger.cancelPendingItems(batchId, "cancelled by operator", 10, T0 + 2)).toBe(1);
    expect(await ledger.cancelPendingItems(batchId, "cancelled by operator", 10, T0 + 2)).toBe(0);
    expect(await ledger.countItems(batchId)).toMatchObject({ running: 1, failed: 3 });
    await ledger.completeItem(ref("i0"), "w", "ok", T0 + 3);
    const claim = await ledger.beginFinalizing(batchId, T0 + 4, 60_000);
    const fin = await ledger.finishBatch(
      batchId,
      claim!,
      {
        outcome: "failed",
        counts: await ledger.countItems(batchId),
        failedByKind: {},
        exportId: null,
        exportedRows: 1,
        durationMs: 1,
      },
      T0 + 5,
    );
    expect(claim).not.toBeNull();
    expect(fin?.status).toBe("cancelled");
    expect(await ledger.requestTermination(batchId, "cancelled", "again", T0 + 6)).toBeNull();
  });

  it("retries failed items as a new generation", async () => {
    await batchWithItems(3);
    await ledger.markSubmitted(batchId, 3, T0);
    for (const [id, ok] of [
      ["i0", true],
      ["i1", false],
      ["i2", false],
    ] as const) {
      await ledger.leaseItem(ref(id), "w", 30_000, 5, T0);
      if (ok) await ledger.completeItem(ref(id), "w", id, T0);
      else await ledger.failItem(ref(id), { kind: "permanent", message: "x" }, T0, { owner: "w" });
    }
    await expect(ledger.beginRetry(batchId, T0)).rejects.toThrow(/only a final batch/);
    const claim = await ledger.beginFinalizing(batchId, T0, 60_000);
    const counts = await ledger.countItems(batchId);
    await ledger.finishBatch(
      batchId,
      claim!,
      { outcome: "failed", counts, failedByKind: {}, exportId: null, exportedRows: 1, durationMs: 1 },
      T0,
    );
    const b = await ledger.beginRetry(batchId, T0 + 1);
    expect(b).toMatchObject({ status: "submitting", generation: 2 });
    const refs = await ledger.resetFailedItems(batchId, 2, 100, T0 + 2);
    expect(refs.map((r) => r.itemId).sort()).toEqual(["i1", "i2"]);
    expect(refs.every((r) => r.generation === 2)).toBe(true);
    expect(await ledger.resetFailedItems(batchId, 2, 100, T0 + 2)).toEqual([]);
    // An item of generation 2 that fails again is not picked up by the same retry's sweep.
    await ledger.leaseItem(ref("i2", 2), "w", 30_000, 5, T0 + 2);
    await ledger.failItem(ref("i2", 2), { kind: "permanent", message: "again" }, T0 + 2, { owner: "w" });
    expect(await ledger.resetFailedItems(batchId, 2, 100, T0 + 2)).toEqual([]);
    expect(await ledger.markRetrySubmitted(batchId, T0 + 3)).toBe(true);
    expect(await ledger.getItem(batchId, "i1")).toMatchObject({
      status: "pending",
      generation: 2,
      attempt: 0,
    });
    expect((await ledger.leaseItem(ref("i1", 1), "w", 1, 5, T0 + 4)).kind).toBe("skip");
    expect((await ledger.leaseItem(ref("i1", 2), "w", 1, 5, T0 + 4)).kind).toBe("leased");
    expect(await ledger.getItem(batchId, "i0")).toMatchObject({ status: "succeeded", generation: 1 });
  });

  it("a settle that saw nothing left before a retry cannot claim the retried generation", async () => {
    await batchWithItems(2);
    await ledger.markSubmitted(batchId, 2, T0);
    await ledger.leaseItem(ref("i0"), "w", 30_000, 5, T0);
    await ledger.completeItem(ref("i0"), "w", 0, T0);
    await ledger.leaseItem(ref("i1"), "w", 30_000, 5, T0);
    await ledger.failItem(ref("i1"), { kind: "permanent", message: "x" }, T0, { owner: "w" });
    // A late finalizer: its "anything left?" said no while every item was terminal…
    expect(await ledger.hasLiveItems(batchId)).toBe(false);
    const claim = await ledger.beginFinalizing(batchId, T0 + 1, 60_000);
    expect(claim).not.toBeNull();
    await ledger.finishBatch(
      batchId,
      claim!,
      {
        outcome: "partial",
        counts: await ledger.countItems(batchId),
        failedByKind: {},
        exportId: null,
        exportedRows: 1,
        durationMs: 1,
      },
      T0 + 1,
    );
    // …then an operator retry makes i1 pending again and the batch running…
    await ledger.beginRetry(batchId, T0 + 2);
    await ledger.resetFailedItems(batchId, 2, 100, T0 + 2);
    expect(await ledger.markRetrySubmitted(batchId, T0 + 3)).toBe(true);
    // …and its claim arrives now: refused, the retried item is still pending.
    expect(await ledger.beginFinalizing(batchId, T0 + 4, 60_000)).toBeNull();
    expect(await ledger.getBatch(batchId)).toMatchObject({ status: "running", generation: 2 });
    // Once the retried item is terminal, the claim goes through.
    await ledger.leaseItem(ref("i1", 2), "w", 30_000, 5, T0 + 5);
    await ledger.completeItem(ref("i1", 2), "w", 1, T0 + 5);
    expect(await ledger.beginFinalizing(batchId, T0 + 6, 60_000)).toMatchObject({
      status: "finalizing",
      generation: 2,
    });
  });
});

describe("races", () => {
  it("50 concurrent leases of one item → exactly one holder", async () => {
    await batchWithItems(1);
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => ledger.leaseItem(ref("i0"), `w${i}`, 60_000, 5, T0)),
    );
    const winners = results.filter((r) => r.kind === "leased");
    expect(winners).toHaveLength(1);
    const item = await ledger.getItem(batchId, "i0");
    expect(item?.attempt).toBe(1);
    expect(item?.lease?.owner).toBe(winners[0]!.kind === "leased" ? winners[0]!.item.lease?.owner : "");
  });

  it("two concurrent completions → one result; a stale delivery completing late does not overwrite", async () => {
    await batchWithItems(2);
    await ledger.leaseItem(ref("i0"), "w1", 60_000, 5, T0);
    const [a, b] = await Promise.all([
      ledger.completeItem(ref("i0"), "w1", "first", T0 + 1),
      ledger.completeItem(ref("i0"), "w1", "second", T0 + 1),
    ]);
    expect([a.kind, b.kind].sort()).toEqual(["done", "skip"]);
    const stored = (await ledger.getItem(batchId, "i0"))?.result;
    expect(stored).toBe(a.kind === "done" ? "first" : "second");

    // Stale: w1's lease lapses, w2 takes over and finishes; w1 completes late.
    await ledger.leaseItem(ref("i1"), "w1", 1_000, 5, T0);
    await ledger.leaseItem(ref("i1"), "w2", 60_000, 5, T0 + 2_000);
    await ledger.completeItem(ref("i1"), "w2", "from w2", T0 + 3_000);
    const late = await ledger.completeItem(ref("i1"), "w1", "from w1", T0 + 4_000);
    expect(late).toMatchObject({ kind: "skip", reason: "terminal" });
    expect((await ledger.getItem(batchId, "i1"))?.result).toBe("from w2");
  });

  it("live counts come from one snapshot: while items move, every count adds up to the total", async () => {
    // Each item goes pending → running → succeeded while countItems runs over and over; four counts
    // read at different times would count a moving item twice or not at all (issue #15 item 10).
    const n = 200;
    await batchWithItems(n);
    await ledger.markSubmitted(batchId, n, T0);
    const queue = Array.from({ length: n }, (_, i) => `i${i}`);
    let moving = true;
    const totals: number[] = [];
    const counting = (async () => {
      while (moving) totals.push((await ledger.countItems(batchId)).total);
    })();
    await Promise.all(
      Array.from({ length: 10 }, async (_, w) => {
        for (let id = queue.pop(); id !== undefined; id = queue.pop()) {
          await ledger.leaseItem(ref(id), `w${w}`, 60_000, 5, T0);
          await ledger.completeItem(ref(id), `w${w}`, { id }, T0);
        }
      }),
    );
    moving = false;
    await counting;
    expect(totals.length).toBeGreaterThan(3);
    expect(totals.filter((t) => t !== n)).toEqual([]);
    expect(await ledger.countItems(batchId)).toMatchObject({ total: n, succeeded: n });
  });

  it("1,000 items completed by 20 concurrent callers → derived counts exact", async () => {
    const n = 1000;
    await batchWithItems(n);
    await ledger.markSubmitted(batchId, n, T0);
    const queue = Array.from({ length: n }, (_, i) => `i${i}`);
    let finalizers = 0;
    await Promise.all(
      Array.from({ length: 20 }, async (_, w) => {
        for (let id = queue.pop(); id !== undefined; id = queue.pop()) {
          const r = ref(id);
          const l = await ledger.leaseItem(r, `w${w}`, 60_000, 5, T0);
          expect(l.kind).toBe("leased");
          if (Number(id.slice(1)) % 10 === 0)
            await ledger.failItem(r, { kind: "permanent", message: "tenth" }, T0, { owner: `w${w}` });
          else await ledger.completeItem(r, `w${w}`, { id }, T0);
          if (!(await ledger.hasLiveItems(batchId)) && (await ledger.beginFinalizing(batchId, T0, 60_000)))
            finalizers++;
        }
      }),
    );
    expect(await ledger.countItems(batchId)).toEqual({
      total: n,
      pending: 0,
      running: 0,
      succeeded: 900,
      failed: 100,
    });
    expect(finalizers).toBe(1);
  });
});
