// The Ledger port's observable behaviour (functions/core/ports.ts), as one suite run against every
// implementation: FirestoreLedger on the emulator (firestoreLedgerContract.test.ts) and the
// simulator's MemoryLedger over its in-memory store (memoryLedgerContract.test.ts). The simulator's
// findings are only as good as its model of the store; running the same assertions on both is what
// keeps the model from drifting away from Firestore.
//
// Only the port is used. Tests that need "another process" (a reconciler terminating a batch while a
// coordinator holds a cached fence, two finalizers racing) take a second ledger instance on the same
// store. The store may be shared with other tests of the file (the emulator's project is per file):
// queries across batches are checked for what this test wrote, never for equality.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RetryRefusedError } from "../../functions/adapters/firestoreLedger";
import { BatchFencedError } from "../../functions/core/errors";
import type { Batch, BatchSummary, ItemError, NewBatch, NewItem } from "../../functions/core/model";
import type { ItemRef, Ledger } from "../../functions/core/ports";

export interface LedgerUnderTest {
  /** A new ledger instance (another process) on the shared store. */
  newLedger(): Ledger;
  close?(): Promise<void>;
}

const T0 = 1_700_000_000_000;
const LEASE = 60_000;
const STALE = 120_000;

const summaryOf = (over: Partial<BatchSummary> = {}): BatchSummary => ({
  outcome: "succeeded",
  counts: { total: 0, pending: 0, running: 0, succeeded: 0, failed: 0 },
  failedByKind: {},
  exportId: null,
  exportedRows: 0,
  durationMs: 0,
  ...over,
});
const permanent: ItemError = { kind: "permanent", message: "bad input" };
const transient: ItemError = { kind: "transient", message: "try again" };

export function runLedgerContract(name: string, make: () => Promise<LedgerUnderTest>): void {
  describe(`Ledger contract: ${name}`, () => {
    let sut: LedgerUnderTest;
    let ledger: Ledger;
    const run = randomUUID().slice(0, 6);
    let n = 0;
    const newId = (label: string) => `${label}-${run}-${++n}`;
    const newBatch = (batchId: string, over: Partial<NewBatch> = {}): NewBatch => ({
      batchId,
      pipeline: "demo",
      failureThreshold: 0.05,
      dependsOn: [],
      contentHash: "h1",
      total: null,
      ...over,
    });
    const items = (from: number, count: number): NewItem[] =>
      Array.from({ length: count }, (_, i) => ({ itemId: `i${from + i}`, payload: { n: from + i } }));
    const ref = (batchId: string, itemId: string, generation = 1): ItemRef => ({
      batchId,
      itemId,
      generation,
    });

    /** A submitting batch holding `count` published items. */
    async function batchWith(count: number, label = "b", over: Partial<NewBatch> = {}): Promise<string> {
      const id = newId(label);
      await ledger.createBatch(newBatch(id, over), T0);
      if (count > 0) await ledger.appendItems(id, 0, items(0, count), T0, { publishable: true });
      return id;
    }
    /** A running (sealed) batch of `count` items. */
    async function runningBatch(count: number, label = "r"): Promise<string> {
      const id = await batchWith(count, label);
      expect(await ledger.markSubmitted(id, count, T0 + 1)).toBe(true);
      return id;
    }
    async function succeed(r: ItemRef, at = T0 + 10, l: Ledger = ledger) {
      expect((await l.leaseItem(r, "w-ok", LEASE, 5, at)).kind).toBe("leased");
      expect((await l.completeItem(r, "w-ok", { done: r.itemId }, at)).kind).toBe("done");
    }
    async function fail(r: ItemRef, at = T0 + 10) {
      expect((await ledger.leaseItem(r, "w-bad", LEASE, 5, at)).kind).toBe("leased");
      expect((await ledger.failItem(r, permanent, at, { owner: "w-bad" })).kind).toBe("done");
    }
    /** Claims, and finishes with the counts as they are. */
    async function finalize(id: string, at: number) {
      const claimed = await ledger.beginFinalizing(id, at, STALE);
      expect(claimed?.status).toBe("finalizing");
      const counts = await ledger.countItems(id);
      const outcome = counts.failed === 0 ? "succeeded" : "failed";
      return ledger.finishBatch(id, claimed!, summaryOf({ outcome, counts }), at + 1);
    }

    beforeAll(async () => {
      sut = await make();
      ledger = sut.newLedger();
    });
    afterAll(async () => {
      await sut?.close?.();
    });

    describe("batches", () => {
      it("creates a batch, recognises an identical re-submission and reports a conflicting one", async () => {
        const id = newId("create");
        const a = await ledger.createBatch(newBatch(id, { total: 3 }), T0);
        expect(a.kind).toBe("created");
        expect(a.batch).toMatchObject({
          batchId: id,
          status: "submitting",
          total: 3,
          received: 0,
          cursor: 0,
          generation: 1,
          submissionComplete: false,
          terminateAs: null,
          createdAt: T0,
          progressAt: T0,
        });
        const b = await ledger.createBatch(newBatch(id, { total: 3 }), T0 + 5);
        expect(b.kind).toBe("exists");
        expect(b.batch.createdAt).toBe(T0);
        const c = await ledger.createBatch(newBatch(id, { contentHash: "other" }), T0 + 6);
        expect(c.kind).toBe("conflict");
        expect((await ledger.getBatch(id))?.contentHash).toBe("h1");
        expect(await ledger.getBatch(newId("missing"))).toBeNull();
        const [x, missing] = await ledger.getBatches([id, newId("missing")]);
        expect(x?.batchId).toBe(id);
        expect(missing).toBeNull();
      });

      it("starts a batch with dependencies blocked; unblocking moves it to submitting once", async () => {
        const id = newId("blocked");
        expect((await ledger.createBatch(newBatch(id, { dependsOn: ["p"] }), T0)).batch.status).toBe(
          "blocked",
        );
        expect(await ledger.unblockBatch(id, T0 + 1)).toBe(true);
        expect(await ledger.getBatch(id)).toMatchObject({ status: "submitting", progressAt: T0 + 1 });
        expect(await ledger.unblockBatch(id, T0 + 2)).toBe(false);
      });

      it("lists batches newest first, page by page, and finds them by status oldest progress first", async () => {
        const base = 4_000_000_000_000 + n * 1000; // newer than anything else in the store
        const ids = [newId("list"), newId("list"), newId("list")];
        for (const [i, id] of ids.entries()) await ledger.createBatch(newBatch(id), base + i);
        const first = await ledger.listBatches({ status: "submitting", limit: 2 });
        expect(first.entries.map((b) => b.batchId)).toEqual([ids[2], ids[1]]);
        expect(first.nextPageToken).toBeDefined();
        const second = await ledger.listBatches({
          status: "submitting",
          limit: 2,
          pageToken: first.nextPageToken,
        });
        expect(second.entries[0]?.batchId).toBe(ids[0]);
        const all = await ledger.listBatches({ limit: 3 });
        expect(all.entries.map((b) => b.batchId)).toEqual([ids[2], ids[1], ids[0]]);
        await expect(ledger.listBatches({ limit: 2, pageToken: "not-a-token" })).rejects.toThrow();
        // Progress: the middle one moved last; the oldest progress comes first.
        await ledger.advanceCursor(ids[1]!, 1, base + 10);
        const found = (
          await ledger.findBatches({ status: "submitting", progressBefore: base + 20, limit: 10_000 })
        ).entries
          .map((b) => b.batchId)
          .filter((id) => ids.includes(id));
        expect(found).toEqual([ids[0], ids[2], ids[1]]);
        const older = (
          await ledger.findBatches({ status: "submitting", progressBefore: base + 5, limit: 10_000 })
        ).entries
          .map((b) => b.batchId)
          .filter((id) => ids.includes(id));
        expect(older).toEqual([ids[0], ids[2]]);
      });

      it("lists a status oldest first, and pages findBatches without skipping batches that progressed together", async () => {
        const base = 4_100_000_000_000 + n * 1000;
        const status = "blocked" as const;
        const ids = [newId("old"), newId("old"), newId("old"), newId("old")];
        for (const [i, id] of ids.entries())
          await ledger.createBatch(newBatch(id, { dependsOn: ["never"] }), base + i);
        const mine = (bs: Batch[]) => bs.map((b) => b.batchId).filter((id) => ids.includes(id));
        // Oldest first, page after page: no batch twice, none left out.
        const oldest: string[] = [];
        let pageToken: string | undefined;
        do {
          const page = await ledger.listBatches({ status, limit: 3, pageToken, oldestFirst: true });
          oldest.push(...mine(page.entries));
          pageToken = page.nextPageToken;
        } while (pageToken);
        expect(oldest).toEqual(ids);
        // Three of them progress in the same millisecond: pages of one still reach each once.
        for (const id of ids.slice(1)) await ledger.unblockBatch(id, base + 50);
        const found: string[] = [];
        pageToken = undefined;
        do {
          const page = await ledger.findBatches({
            status: "submitting",
            progressBefore: base + 51,
            limit: 1,
            pageToken,
          });
          found.push(...mine(page.entries));
          pageToken = page.nextPageToken;
        } while (pageToken);
        expect(found.sort()).toEqual(ids.slice(1).sort());
        await expect(ledger.findBatches({ status, limit: 1, pageToken: "not-a-token" })).rejects.toThrow();
      });
    });

    describe("submission", () => {
      it("appends create-only, moves received unless deferred, and reads items by position", async () => {
        const id = newId("append");
        await ledger.createBatch(newBatch(id), T0);
        expect(await ledger.appendItems(id, 0, items(0, 5), T0, { publishable: true })).toEqual({
          alreadyExisting: [],
          joinedWriters: 0,
        });
        expect((await ledger.getBatch(id))?.received).toBe(5);
        await ledger.appendItems(id, 5, items(5, 3), T0, { publishable: true, deferReceived: true });
        expect((await ledger.getBatch(id))?.received).toBe(5);
        const i6 = await ledger.getItem(id, "i6");
        expect(i6).toMatchObject({
          batchId: id,
          itemId: "i6",
          seq: 6,
          generation: 1,
          status: "pending",
          payload: { n: 6 },
          attempt: 0,
          lease: null,
          result: null,
          error: null,
          createdAt: T0,
        });
        expect((await ledger.getItemsBySeq(id, 3, 4)).map((it) => it.seq)).toEqual([3, 4, 5, 6]);
        expect(await ledger.getItemsBySeq(id, 3, 0)).toEqual([]);
        expect((await ledger.readItemRefs(id, 6, 10)).map((r) => r.itemId)).toEqual(["i6", "i7"]);
        // A worker takes i0; a re-sent chunk never resets it and reports what existed.
        expect((await ledger.leaseItem(ref(id, "i0"), "w", LEASE, 5, T0 + 1)).kind).toBe("leased");
        const again = await ledger.appendItems(
          id,
          0,
          [{ itemId: "i0", payload: { n: "changed" } }, ...items(8, 1)],
          T0 + 2,
          { publishable: true },
        );
        expect(again.alreadyExisting).toEqual(["i0"]);
        expect(await ledger.getItem(id, "i0")).toMatchObject({ status: "running", payload: { n: 0 } });
        expect(await ledger.getItem(id, "i8")).toMatchObject({ seq: 1, status: "pending" });
      });

      it("counts the items at a range of positions, and withdraws only untouched items, lowering received", async () => {
        const id = newId("withdraw");
        await ledger.createBatch(newBatch(id), T0);
        await ledger.appendItems(id, 0, items(0, 4), T0, { publishable: true });
        expect(await ledger.countItemsAt(id, 0, 4)).toBe(4);
        expect(await ledger.countItemsAt(id, 2, 10)).toBe(2);
        expect(await ledger.countItemsAt(id, 0, 0)).toBe(0);
        // Another request's items at positions 1 and 2 (different ids): two items share each.
        await ledger.appendItems(
          id,
          1,
          [
            { itemId: "x1", payload: null },
            { itemId: "x2", payload: null },
          ],
          T0 + 1,
          { publishable: true },
        );
        expect(await ledger.countItemsAt(id, 0, 4)).toBe(6);
        expect((await ledger.getBatch(id))?.received).toBe(4);
        // x2 was taken by a worker meanwhile: only x1 is withdrawn; received drops below position 1.
        expect((await ledger.leaseItem(ref(id, "x2"), "w", LEASE, 5, T0 + 2)).kind).toBe("leased");
        expect(
          await ledger.withdrawItems(
            id,
            [
              { itemId: "x1", seq: 1 },
              { itemId: "x2", seq: 2 },
              { itemId: "i3", seq: 9 },
            ],
            T0 + 3,
          ),
        ).toEqual(["x1"]);
        expect(await ledger.getItem(id, "x1")).toBeNull();
        expect(await ledger.getItem(id, "x2")).toMatchObject({ status: "running" });
        expect(await ledger.getItem(id, "i3")).toMatchObject({ seq: 3, status: "pending" });
        expect(await ledger.countItemsAt(id, 0, 4)).toBe(5);
        expect((await ledger.getBatch(id))?.received).toBe(1);
        expect(await ledger.withdrawItems(id, [], T0 + 4)).toEqual([]);
      });

      it("counts appends in flight: a second append begun beside the first is told so; a dead one's count lapses", async () => {
        const id = newId("appending");
        await ledger.createBatch(newBatch(id), T0);
        const until = T0 + 60_000;
        expect(await ledger.beginAppend(id, T0, until)).toEqual({ joinedWriters: 1, othersInFlight: false });
        expect(await ledger.beginAppend(id, T0 + 1, until + 1)).toEqual({
          joinedWriters: 2,
          othersInFlight: true,
        });
        expect(await ledger.getBatch(id)).toMatchObject({
          appendsInFlight: 2,
          appendsInFlightUntil: until + 1,
        });
        await ledger.endAppend(id, T0 + 2);
        await ledger.endAppend(id, T0 + 3);
        await ledger.endAppend(id, T0 + 4); // more ends than begins never go below zero
        expect((await ledger.getBatch(id))?.appendsInFlight).toBe(0);
        expect((await ledger.beginAppend(id, T0 + 5, until)).othersInFlight).toBe(false);
        // That one dies (never ends): until its bound passes, the next is told another is in flight.
        expect((await ledger.beginAppend(id, until - 1, until + 100)).othersInFlight).toBe(true);
        await ledger.endAppend(id, until);
        expect((await ledger.beginAppend(id, until + 101, until + 200)).othersInFlight).toBe(false);
        expect(await ledger.getBatch(id)).toMatchObject({ joinedWriters: 5, appendsInFlight: 1 });
      });

      it("moves the cursor and received forward only, and seals the batch once", async () => {
        const id = await batchWith(4, "cursor");
        const moved = await ledger.advanceCursor(id, 2, T0 + 10, 3);
        expect(moved).toMatchObject({ cursor: 2, received: 4, progressAt: T0 + 10 });
        expect(await ledger.advanceCursor(id, 1, T0 + 20)).toMatchObject({ cursor: 2, progressAt: T0 + 10 });
        await ledger.recordProgress(id, T0 + 30);
        await ledger.recordProgress(id, T0 + 25);
        expect((await ledger.getBatch(id))?.progressAt).toBe(T0 + 30);
        expect(await ledger.markSubmitted(id, 4, T0 + 40)).toBe(true);
        expect(await ledger.getBatch(id)).toMatchObject({
          status: "running",
          total: 4,
          submissionComplete: true,
          cursor: 4,
          received: 4,
          startedAt: T0 + 40,
        });
        expect(await ledger.markSubmitted(id, 4, T0 + 41)).toBe(false);
        await ledger.recordProgress(id, T0 + 50); // not submitting: no effect
        expect((await ledger.getBatch(id))?.progressAt).toBe(T0 + 40);
        const blocked = newId("total");
        await ledger.createBatch(newBatch(blocked, { dependsOn: ["x"] }), T0);
        await ledger.recordTotal(blocked, 7, T0 + 1);
        expect(await ledger.getBatch(blocked)).toMatchObject({
          status: "blocked",
          total: 7,
          submissionComplete: true,
        });
      });

      it("the fence refuses items for a terminated, sealed or claimed batch, storing nothing", async () => {
        const terminated = await batchWith(2, "fence-term");
        await ledger.requestTermination(terminated, "failed", "incomplete_submission: test", T0 + 1);
        await expect(
          ledger.appendItems(terminated, 2, items(2, 2), T0 + 2, { publishable: true, deferReceived: true }),
        ).rejects.toBeInstanceOf(BatchFencedError);
        expect(await ledger.getItem(terminated, "i2")).toBeNull();

        const sealed = await runningBatch(2, "fence-seal");
        await expect(
          ledger.appendItems(sealed, 2, items(2, 1), T0 + 2, { publishable: true }),
        ).rejects.toBeInstanceOf(BatchFencedError);
        expect((await ledger.countItems(sealed)).total).toBe(2);

        const claimed = await batchWith(1, "fence-claim");
        await fail(ref(claimed, "i0"));
        await ledger.requestTermination(claimed, "cancelled", "cancelled by operator", T0 + 20);
        expect(await ledger.beginFinalizing(claimed, T0 + 21, STALE)).not.toBeNull();
        await expect(
          ledger.appendItems(claimed, 1, items(1, 1), T0 + 22, { publishable: true, deferReceived: true }),
        ).rejects.toBeInstanceOf(BatchFencedError);
        expect(await ledger.hasLiveItems(claimed)).toBe(false);

        await expect(
          ledger.appendItems(newId("nobatch"), 0, items(0, 1), T0, { publishable: true }),
        ).rejects.toBeInstanceOf(BatchFencedError);
      });

      it("a writer whose cached batch read predates a termination by another process is refused", async () => {
        const coordinator = sut.newLedger();
        const reconciler = sut.newLedger();
        const id = newId("fence-cache");
        await coordinator.createBatch(newBatch(id), T0);
        await coordinator.appendItems(id, 0, items(0, 2), T0, { publishable: true, deferReceived: true });
        await reconciler.requestTermination(id, "failed", "incomplete_submission: paused", T0 + 1);
        await expect(
          coordinator.appendItems(id, 2, items(2, 2), T0 + 2, { publishable: true, deferReceived: true }),
        ).rejects.toBeInstanceOf(BatchFencedError);
        expect(await ledger.getItem(id, "i2")).toBeNull();
        expect((await ledger.countItems(id)).total).toBe(2);
      });

      it("concurrent chunks of one submission do not refuse each other, cursor writes in between", async () => {
        const coordinator = sut.newLedger();
        const id = newId("fence-concurrent");
        await coordinator.createBatch(newBatch(id), T0);
        await Promise.all([
          coordinator.appendItems(id, 0, items(0, 3), T0, { publishable: true, deferReceived: true }),
          coordinator.appendItems(id, 3, items(3, 3), T0, { publishable: true, deferReceived: true }),
          coordinator.advanceCursor(id, 0, T0 + 1, 0).then(() => coordinator.advanceCursor(id, 3, T0 + 2, 3)),
          coordinator.appendItems(id, 6, items(6, 3), T0, { publishable: true, deferReceived: true }),
        ]);
        await coordinator.appendItems(id, 9, items(9, 1), T0 + 3, { publishable: true, deferReceived: true });
        expect((await ledger.countItems(id)).pending).toBe(10);
      });
    });

    describe("item transitions", () => {
      it("leases: one holder at a time, skips, expiry, exhaustion", async () => {
        const id = await batchWith(2, "lease");
        const r = ref(id, "i0");
        const leased = await ledger.leaseItem(r, "w1", LEASE, 2, T0 + 10);
        expect(leased.kind).toBe("leased");
        if (leased.kind !== "leased") return;
        expect(leased.item).toMatchObject({
          status: "running",
          attempt: 1,
          lease: { owner: "w1", until: T0 + 10 + LEASE },
          startedAt: T0 + 10,
        });
        expect(await ledger.getItem(id, "i0")).toMatchObject({
          status: "running",
          attempt: 1,
          lease: { owner: "w1", until: T0 + 10 + LEASE },
          heartbeatAt: T0 + 10,
        });
        const other = sut.newLedger();
        expect(await other.leaseItem(r, "w2", LEASE, 2, T0 + 20)).toMatchObject({
          kind: "skip",
          reason: "leased_by_other",
        });
        expect(await other.leaseItem(ref(id, "i0", 2), "w2", LEASE, 2, T0 + 20)).toMatchObject({
          kind: "skip",
          reason: "stale_generation",
        });
        expect(await other.leaseItem(ref(id, "nope"), "w2", LEASE, 2, T0 + 20)).toMatchObject({
          kind: "skip",
          reason: "not_found",
          item: null,
        });
        // The lease lapsed: another delivery takes it (attempt 2), keeping the first start.
        const taken = await other.leaseItem(r, "w2", LEASE, 2, T0 + 10 + LEASE + 1);
        expect(taken).toMatchObject({ kind: "leased", item: { attempt: 2, startedAt: T0 + 10 } });
        // Attempts used up: the next lease fails the item.
        const exhausted = await other.leaseItem(r, "w3", LEASE, 2, T0 + 10 + 3 * LEASE);
        expect(exhausted).toMatchObject({
          kind: "exhausted",
          item: { status: "failed", error: { kind: "attempts_exhausted" } },
        });
        expect(await ledger.getItem(id, "i0")).toMatchObject({
          status: "failed",
          lease: null,
          error: { kind: "attempts_exhausted" },
        });
        expect(await ledger.leaseItem(r, "w4", LEASE, 5, T0 + 10 + 4 * LEASE)).toMatchObject({
          kind: "skip",
          reason: "terminal",
        });
      });

      it("completes once: the result and succeeded in one write; late duplicates are skipped", async () => {
        const id = await batchWith(3, "complete");
        const r = ref(id, "i0");
        await ledger.leaseItem(r, "w1", LEASE, 5, T0 + 10);
        const done = await ledger.completeItem(r, "w1", { v: 1 }, T0 + 11);
        expect(done).toMatchObject({
          kind: "done",
          item: { status: "succeeded", result: { v: 1 }, lease: null },
        });
        expect(await ledger.getItem(id, "i0")).toMatchObject({
          status: "succeeded",
          result: { v: 1 },
          finishedAt: T0 + 11,
          lease: null,
        });
        expect(await ledger.completeItem(r, "w1", { v: 2 }, T0 + 12)).toMatchObject({
          kind: "skip",
          reason: "terminal",
        });
        expect(await sut.newLedger().completeItem(r, "w9", { v: 3 }, T0 + 12)).toMatchObject({
          kind: "skip",
          reason: "terminal",
        });
        expect((await ledger.getItem(id, "i0"))?.result).toEqual({ v: 1 });
        expect(await ledger.completeItem(ref(id, "i1", 2), "w1", 1, T0)).toMatchObject({
          kind: "skip",
          reason: "stale_generation",
        });
        expect(await ledger.completeItem(ref(id, "nope"), "w1", 1, T0)).toMatchObject({
          kind: "skip",
          reason: "not_found",
        });
        // A holder whose lapsed lease was taken over may still complete the (non-terminal) item;
        // the new holder's completion then finds it terminal.
        const slow = sut.newLedger();
        const fast = sut.newLedger();
        const r1 = ref(id, "i1");
        await slow.leaseItem(r1, "slow", LEASE, 5, T0 + 10);
        await fast.leaseItem(r1, "fast", LEASE, 5, T0 + 10 + LEASE + 1);
        expect((await slow.completeItem(r1, "slow", "late", T0 + LEASE + 20)).kind).toBe("done");
        expect(await fast.completeItem(r1, "fast", "fresh", T0 + LEASE + 21)).toMatchObject({
          kind: "skip",
          reason: "terminal",
        });
        expect((await ledger.getItem(id, "i1"))?.result).toBe("late");
        // Completing a pending item (its lease was redriven away) is allowed: it is not terminal.
        expect((await ledger.completeItem(ref(id, "i2"), "anyone", null, T0 + 30)).kind).toBe("done");
        expect(await ledger.getItem(id, "i2")).toMatchObject({ status: "succeeded", result: null });
      });

      it("fails unless terminal; a live lease of someone else refuses the caller", async () => {
        const id = await batchWith(3, "fail");
        const r = ref(id, "i0");
        await ledger.leaseItem(r, "w1", LEASE, 5, T0 + 10);
        expect(await ledger.failItem(r, permanent, T0 + 11, { owner: "w2" })).toMatchObject({
          kind: "skip",
          reason: "not_leased_by_caller",
        });
        expect(await ledger.failItem(r, permanent, T0 + 11)).toMatchObject({
          kind: "skip",
          reason: "live_lease",
        });
        expect(await ledger.failItem(r, permanent, T0 + 12, { owner: "w1" })).toMatchObject({
          kind: "done",
          item: { status: "failed", error: permanent, lease: null },
        });
        expect(await ledger.getItem(id, "i0")).toMatchObject({
          status: "failed",
          error: permanent,
          finishedAt: T0 + 12,
        });
        expect(await ledger.failItem(r, transient, T0 + 13)).toMatchObject({
          kind: "skip",
          reason: "terminal",
        });
        // A lapsed lease no longer protects the item (the dead-letter receiver may fail it).
        const r1 = ref(id, "i1");
        await ledger.leaseItem(r1, "w1", LEASE, 5, T0 + 10);
        const dl: ItemError = { kind: "dead_lettered", message: "gave up", details: { deliveryCount: 5 } };
        expect((await ledger.failItem(r1, dl, T0 + 10 + LEASE + 1)).kind).toBe("done");
        expect((await ledger.getItem(id, "i1"))?.error).toEqual(dl);
        // A pending item fails without an owner.
        expect((await ledger.failItem(ref(id, "i2"), permanent, T0 + 20)).kind).toBe("done");
        expect(await ledger.failItem(ref(id, "i2", 3), permanent, T0 + 20)).toMatchObject({
          kind: "skip",
          reason: "stale_generation",
        });
      });

      it("releases only for the holder, keeping the last error", async () => {
        const id = await batchWith(1, "release");
        const r = ref(id, "i0");
        await ledger.leaseItem(r, "w1", LEASE, 5, T0 + 10);
        expect(await ledger.releaseItem(r, "w2", transient, T0 + 11)).toMatchObject({
          kind: "skip",
          reason: "not_leased_by_caller",
        });
        expect(await ledger.releaseItem(r, "w1", transient, T0 + 12)).toMatchObject({
          kind: "done",
          item: { status: "pending", lease: null, lastError: transient },
        });
        expect(await ledger.getItem(id, "i0")).toMatchObject({
          status: "pending",
          lease: null,
          lastError: transient,
          attempt: 1,
        });
        await ledger.leaseItem(r, "w3", LEASE, 5, T0 + 13);
        expect(await ledger.releaseItem(r, "w3", null, T0 + 14)).toMatchObject({
          kind: "done",
          item: { lastError: transient },
        });
        await ledger.leaseItem(r, "w4", LEASE, 5, T0 + 15);
        await ledger.completeItem(r, "w4", 1, T0 + 16);
        expect(await ledger.releaseItem(r, "w4", transient, T0 + 17)).toMatchObject({
          kind: "skip",
          reason: "terminal",
        });
      });

      it("heartbeats and checkpoints only for the holder, in this process or another", async () => {
        const id = await batchWith(1, "heartbeat");
        const r = ref(id, "i0");
        const worker = sut.newLedger();
        await worker.leaseItem(r, "w1", LEASE, 5, T0 + 10);
        expect(await worker.heartbeat(r, "w1", LEASE, T0 + 20)).toBe(true);
        expect(await worker.checkpointStep(r, "w1", "fetch", { bytes: 3 }, T0 + 21)).toBe(true);
        expect(await sut.newLedger().heartbeat(r, "w1", LEASE, T0 + 22)).toBe(true);
        expect(await ledger.getItem(id, "i0")).toMatchObject({
          lease: { owner: "w1", until: T0 + 22 + LEASE },
          heartbeatAt: T0 + 22,
          steps: { fetch: { status: "succeeded", output: { bytes: 3 }, finishedAt: T0 + 21 } },
        });
        expect(await worker.heartbeat(r, "w2", LEASE, T0 + 23)).toBe(false);
        expect(await worker.checkpointStep(r, "w2", "x", 1, T0 + 23)).toBe(false);
        // Taken over after a lapse: the old holder's heartbeat (with its remembered write) fails.
        await sut.newLedger().leaseItem(r, "w2", LEASE, 5, T0 + 22 + LEASE + 1);
        expect(await worker.heartbeat(r, "w1", LEASE, T0 + 22 + LEASE + 2)).toBe(false);
        expect(await worker.completeItem(r, "w1", "from-old-holder", T0 + 22 + LEASE + 3)).toMatchObject({
          kind: "done",
        });
      });

      it("a continuation keeps checkpoints, the attempt and the run's start; notBefore defers leases without a write", async () => {
        const id = await batchWith(1, "continuation");
        const r = ref(id, "i0");
        await ledger.leaseItem(r, "w1", LEASE, 2, T0 + 10);
        expect(await ledger.getItem(id, "i0")).toMatchObject({ attempt: 1, runStartedAt: T0 + 10 });
        await ledger.checkpointStep(r, "w1", "a", { n: 1 }, T0 + 20);
        // Handed over: the attempt is given back, the run's start kept.
        expect((await ledger.releaseItem(r, "w1", null, T0 + 30, { continuation: true })).kind).toBe("done");
        expect(await ledger.getItem(id, "i0")).toMatchObject({
          status: "pending",
          attempt: 0,
          runStartedAt: T0 + 10,
          steps: { a: { status: "succeeded", output: { n: 1 } } },
        });
        // The next delivery resumes the same run as attempt 1 again.
        expect(await ledger.leaseItem(r, "w2", LEASE, 2, T0 + 40)).toMatchObject({
          kind: "leased",
          item: { attempt: 1, runStartedAt: T0 + 10 },
        });
        // A transient failure with a Retry-After: not before T0 + 1000; the run's start is dropped.
        await ledger.releaseItem(r, "w2", { kind: "transient", message: "429" }, T0 + 50, {
          notBefore: T0 + 1000,
        });
        const released = await ledger.getItem(id, "i0");
        expect(released).toMatchObject({
          status: "pending",
          attempt: 1,
          notBefore: T0 + 1000,
          runStartedAt: null,
        });
        // Early: deferred, nothing written (not even on the last attempt: exhaustion waits too).
        expect(await ledger.leaseItem(r, "w3", LEASE, 1, T0 + 999)).toMatchObject({
          kind: "deferred",
          notBefore: T0 + 1000,
        });
        expect((await ledger.getItem(id, "i0"))!.updatedAt).toBe(released!.updatedAt);
        // Due: leased as attempt 2, a new run, notBefore cleared.
        expect(await ledger.leaseItem(r, "w3", LEASE, 2, T0 + 1000)).toMatchObject({
          kind: "leased",
          item: { attempt: 2, runStartedAt: T0 + 1000, notBefore: null },
        });
      });

      it("finds lapsed leases and redrives them, or fails them at the last attempt", async () => {
        const id = await batchWith(3, "redrive");
        const t = T0 + 5_000_000;
        await ledger.leaseItem(ref(id, "i0"), "dead", 1000, 2, t);
        await ledger.leaseItem(ref(id, "i1"), "alive", 1000, 2, t);
        const expired = (await ledger.findExpiredLeases(t + 2000, 10_000)).filter((x) => x.batchId === id);
        expect(expired.map((x) => x.itemId).sort()).toEqual(["i0", "i1"]);
        expect(await ledger.findExpiredLeases(t + 500, 10_000)).not.toContainEqual(ref(id, "i0"));
        // i1's worker heartbeats before the redrive lands: skipped.
        await ledger.heartbeat(ref(id, "i1"), "alive", 10_000, t + 1500);
        expect(await ledger.redriveItem(ref(id, "i1"), 2, t + 2000)).toBe("skip");
        expect(await ledger.redriveItem(ref(id, "i0"), 2, t + 2000)).toBe("redriven");
        expect(await ledger.getItem(id, "i0")).toMatchObject({
          status: "pending",
          lease: null,
          attempt: 1,
          lastError: { kind: "timeout" },
        });
        expect(await ledger.redriveItem(ref(id, "i0"), 2, t + 2001)).toBe("skip");
        expect(await ledger.redriveItem(ref(id, "i0", 2), 2, t + 2001)).toBe("skip");
        await ledger.leaseItem(ref(id, "i0"), "dead-again", 1000, 2, t + 3000);
        expect(await ledger.redriveItem(ref(id, "i0"), 2, t + 5000)).toBe("exhausted");
        expect(await ledger.getItem(id, "i0")).toMatchObject({
          status: "failed",
          error: { kind: "attempts_exhausted" },
          finishedAt: t + 5000,
        });
        expect(await ledger.redriveItem(ref(id, "nope"), 2, t)).toBe("skip");
      });

      it("finds stale pending items of published batches, and touching them makes them fresh", async () => {
        const t = T0 + 9_000_000;
        const id = newId("stale");
        await ledger.createBatch(newBatch(id), t);
        await ledger.appendItems(id, 0, items(0, 2), t, { publishable: true });
        await ledger.appendItems(id, 2, items(2, 1), t, { publishable: false });
        const mine = async (before: number) =>
          (await ledger.findStalePending(before, 10_000))
            .filter((x) => x.batchId === id)
            .map((x) => x.itemId)
            .sort();
        expect(await mine(t + 1)).toEqual(["i0", "i1"]);
        expect(await mine(t)).toEqual([]);
        await ledger.touchPending([ref(id, "i0"), ref(id, "i2")], t + 100);
        expect(await mine(t + 50)).toEqual(["i1"]);
        expect(await mine(t + 101)).toEqual(["i0", "i1", "i2"]);
        await ledger.leaseItem(ref(id, "i1"), "w", LEASE, 5, t + 200);
        expect(await mine(t + 1000)).toEqual(["i0", "i2"]);
      });

      it("lists items in submission order, by status, page by page", async () => {
        const id = await batchWith(5, "list-items");
        await fail(ref(id, "i1"));
        await fail(ref(id, "i3"));
        const p1 = await ledger.listItems(id, { limit: 2 });
        expect(p1.entries.map((i) => i.itemId)).toEqual(["i0", "i1"]);
        const p2 = await ledger.listItems(id, { limit: 2, pageToken: p1.nextPageToken });
        expect(p2.entries.map((i) => i.itemId)).toEqual(["i2", "i3"]);
        const p3 = await ledger.listItems(id, { limit: 2, pageToken: p2.nextPageToken });
        expect(p3.entries.map((i) => i.itemId)).toEqual(["i4"]);
        expect(p3.nextPageToken).toBeUndefined();
        const failed = await ledger.listItems(id, { status: "failed", limit: 10 });
        expect(failed.entries.map((i) => i.itemId)).toEqual(["i1", "i3"]);
      });
    });

    describe("counts", () => {
      it("derives counts by state, by failure kind, by generation and by finishing time", async () => {
        const id = await batchWith(6, "counts");
        await succeed(ref(id, "i0"), T0 + 100);
        await succeed(ref(id, "i1"), T0 + 200);
        await fail(ref(id, "i2"), T0 + 300);
        await ledger.failItem(ref(id, "i3"), { kind: "cancelled", message: "c" }, T0 + 300);
        await ledger.leaseItem(ref(id, "i4"), "w", LEASE, 5, T0 + 50);
        expect(await ledger.countItems(id)).toEqual({
          total: 6,
          pending: 1,
          running: 1,
          succeeded: 2,
          failed: 2,
        });
        expect(await ledger.countFailedByKind(id)).toEqual({ permanent: 1, cancelled: 1 });
        expect(await ledger.countSucceeded(id, 1)).toBe(2);
        expect(await ledger.countSucceeded(id, 2)).toBe(0);
        expect(await ledger.countFinishedBetween(id, [T0, T0 + 150, T0 + 250, T0 + 400])).toEqual([1, 1, 2]);
        expect(await ledger.hasLiveItems(id)).toBe(true);
        await ledger.completeItem(ref(id, "i4"), "w", 1, T0 + 60);
        await ledger.failItem(ref(id, "i5"), permanent, T0 + 60);
        expect(await ledger.hasLiveItems(id)).toBe(false);
        const empty = await batchWith(0, "counts-empty");
        expect(await ledger.countItems(empty)).toEqual({
          total: 0,
          pending: 0,
          running: 0,
          succeeded: 0,
          failed: 0,
        });
        expect(await ledger.hasLiveItems(empty)).toBe(false);
      });

      it("streams the succeeded items of one generation, in submission order, in pages", async () => {
        const id = await batchWith(5, "stream");
        for (const i of [0, 1, 3, 4]) await succeed(ref(id, `i${i}`), T0 + 10 + i);
        await fail(ref(id, "i2"));
        const pages: string[][] = [];
        for await (const page of ledger.streamResults(id, 1, 3)) pages.push(page.map((r) => r.itemId));
        expect(pages).toEqual([["i0", "i1", "i3"], ["i4"]]);
        const rows: unknown[] = [];
        for await (const page of ledger.streamResults(id, 1, 10)) rows.push(...page);
        expect(rows[0]).toEqual({
          batchId: id,
          itemId: "i0",
          generation: 1,
          result: { done: "i0" },
          finishedAt: T0 + 10,
          attempts: 1,
        });
        const none: unknown[] = [];
        for await (const page of ledger.streamResults(id, 2, 10)) none.push(...page);
        expect(none).toEqual([]);
      });

      it("two items sharing a position are both streamed and listed, page after page (issue #15 item 10)", async () => {
        // Two racing submissions with the same header and different items store two items at one
        // position; a cursor on the position alone skipped the second one.
        const id = newId("same-seq");
        await ledger.createBatch(newBatch(id), T0);
        await ledger.appendItems(id, 0, [{ itemId: "a", payload: 1 }], T0, { publishable: true });
        await ledger.appendItems(id, 0, [{ itemId: "b", payload: 2 }], T0, { publishable: true });
        await ledger.appendItems(id, 1, [{ itemId: "c", payload: 3 }], T0, { publishable: true });
        for (const itemId of ["a", "b", "c"]) await succeed(ref(id, itemId));
        const pages: string[][] = [];
        for await (const page of ledger.streamResults(id, 1, 1)) pages.push(page.map((r) => r.itemId));
        expect(pages).toHaveLength(3);
        expect(pages.flat().sort()).toEqual(["a", "b", "c"]);
        expect(pages[2]).toEqual(["c"]);
        const listed: string[] = [];
        let pageToken: string | undefined;
        do {
          const page = await ledger.listItems(id, { limit: 1, pageToken });
          listed.push(...page.entries.map((i) => i.itemId));
          pageToken = page.nextPageToken;
        } while (pageToken);
        expect(listed.sort()).toEqual(["a", "b", "c"]);
      });
    });

    describe("finalization", () => {
      it("claims only a started or terminated batch with nothing live; exactly one of two racing claimers wins", async () => {
        const submitting = await batchWith(1, "claim-sub");
        await succeed(ref(submitting, "i0"));
        expect(await ledger.beginFinalizing(submitting, T0 + 100, STALE)).toBeNull();

        const live = await runningBatch(2, "claim-live");
        await succeed(ref(live, "i0"));
        expect(await ledger.beginFinalizing(live, T0 + 100, STALE)).toBeNull();
        await succeed(ref(live, "i1"));
        const [a, b] = await Promise.all([
          sut.newLedger().beginFinalizing(live, T0 + 200, STALE),
          sut.newLedger().beginFinalizing(live, T0 + 200, STALE),
        ]);
        expect([a, b].filter((x) => x !== null)).toHaveLength(1);
        expect(await ledger.getBatch(live)).toMatchObject({ status: "finalizing", finalizingAt: T0 + 200 });
        expect(await ledger.beginFinalizing(live, T0 + 201, STALE)).toBeNull();

        const terminated = await batchWith(1, "claim-term");
        await ledger.requestTermination(terminated, "cancelled", "cancelled by operator", T0 + 50);
        expect(await ledger.cancelPendingItems(terminated, "cancelled by operator", 10, T0 + 51)).toBe(1);
        expect(await ledger.beginFinalizing(terminated, T0 + 52, STALE)).toMatchObject({
          status: "finalizing",
        });
        expect(await ledger.beginFinalizing(newId("nobatch"), T0, STALE)).toBeNull();
      });

      it("a stale claim is taken over; the old claim can then neither renew, release nor record a failure", async () => {
        const id = await runningBatch(1, "stale-claim");
        await succeed(ref(id, "i0"));
        const first = await ledger.beginFinalizing(id, T0 + 1000, STALE);
        expect(first?.finalizingAt).toBe(T0 + 1000);
        expect(await ledger.renewFinalizing(id, T0 + 1000, T0 + 2000)).toBe(T0 + 2000);
        expect(await ledger.beginFinalizing(id, T0 + 2000 + STALE - 1, STALE)).toBeNull();
        const second = await sut.newLedger().beginFinalizing(id, T0 + 2000 + STALE + 1, STALE);
        expect(second?.finalizingAt).toBe(T0 + 2000 + STALE + 1);
        expect(await ledger.renewFinalizing(id, T0 + 2000, T0 + 2000 + STALE + 5)).toBeNull();
        await ledger.releaseFinalizing(id, T0 + 2000);
        expect(await ledger.recordExportFailure(id, T0 + 2000, "lost", T0 + 2000 + STALE + 6, 5)).toBeNull();
        expect((await ledger.getBatch(id))?.finalizingAt).toBe(T0 + 2000 + STALE + 1);
        // A renewal never moves the claim back in time.
        expect(await ledger.renewFinalizing(id, T0 + 2000 + STALE + 1, T0)).toBe(T0 + 2000 + STALE + 2);
        // Released by its holder: claimable again at once.
        await ledger.releaseFinalizing(id, T0 + 2000 + STALE + 2);
        expect((await ledger.getBatch(id))?.finalizingAt).toBe(0);
        expect(await ledger.beginFinalizing(id, T0 + 2000 + STALE + 10, STALE)).not.toBeNull();
      });

      it("records failed exports with backoff, stops at the cap, and re-exports on the operator's word", async () => {
        const id = await runningBatch(1, "export-fail");
        await succeed(ref(id, "i0"));
        let t = T0 + 10_000;
        let claim = (await ledger.beginFinalizing(id, t, STALE))!.finalizingAt!;
        const after1 = await ledger.recordExportFailure(id, claim, "load failed", t + 1, 3);
        expect(after1).toMatchObject({
          status: "finalizing",
          exportAttempts: 1,
          exportError: "load failed",
          exportFailedAt: null,
          nextExportAt: t + 1 + 30_000,
          finalizingAt: 0,
        });
        expect(await ledger.getBatch(id)).toMatchObject({ exportAttempts: 1, nextExportAt: t + 1 + 30_000 });
        expect(await ledger.beginFinalizing(id, t + 30_000, STALE)).toBeNull();
        t = t + 30_001;
        claim = (await ledger.beginFinalizing(id, t, STALE))!.finalizingAt!;
        expect(await ledger.recordExportFailure(id, claim, "again", t, 3)).toMatchObject({
          exportAttempts: 2,
          nextExportAt: t + 60_000,
        });
        t += 60_000;
        claim = (await ledger.beginFinalizing(id, t, STALE))!.finalizingAt!;
        expect(await ledger.recordExportFailure(id, claim, "third", t, 3)).toMatchObject({
          exportAttempts: 3,
          exportFailedAt: t,
          nextExportAt: null,
        });
        expect(await ledger.beginFinalizing(id, t + 86_400_000, STALE)).toBeNull();
        // Only an export-failed batch can be re-exported.
        const other = await runningBatch(1, "export-ok");
        await expect(ledger.reExport(other, t)).rejects.toBeInstanceOf(BatchFencedError);
        await expect(ledger.reExport(newId("nobatch"), t)).rejects.toBeInstanceOf(BatchFencedError);
        expect(await ledger.reExport(id, t + 1)).toMatchObject({
          exportAttempts: 0,
          exportFailedAt: null,
          nextExportAt: null,
          finalizingAt: 0,
        });
        expect(await ledger.beginFinalizing(id, t + 2, STALE)).not.toBeNull();
        await expect(ledger.reExport(id, t + 3)).rejects.toBeInstanceOf(BatchFencedError);
      });

      it("finishes a claimed batch with its outcome (or the termination's status) and summary, once", async () => {
        const id = await runningBatch(2, "finish");
        await succeed(ref(id, "i0"));
        await fail(ref(id, "i1"));
        expect(
          await ledger.finishBatch(id, { finalizingAt: T0 + 500, generation: 1 }, summaryOf(), T0 + 500),
        ).toBeNull();
        const claim = (await ledger.beginFinalizing(id, T0 + 500, STALE))!;
        // Only under the caller's own claim and generation (a frozen finalizer's old claim, or an
        // export of another generation, finishes nothing).
        expect(
          await ledger.finishBatch(id, { finalizingAt: T0 + 499, generation: 1 }, summaryOf(), T0 + 550),
        ).toBeNull();
        expect(
          await ledger.finishBatch(id, { finalizingAt: T0 + 500, generation: 2 }, summaryOf(), T0 + 550),
        ).toBeNull();
        const counts = { total: 2, pending: 0, running: 0, succeeded: 1, failed: 1 };
        const summary = summaryOf({ outcome: "failed", counts, exportId: "x", exportedRows: 1 });
        const done = await ledger.finishBatch(id, claim, summary, T0 + 600);
        expect(done).toMatchObject({ status: "failed", total: 2, finishedAt: T0 + 600 });
        expect(await ledger.getBatch(id)).toMatchObject({ status: "failed", summary, finishedAt: T0 + 600 });
        expect(await ledger.finishBatch(id, claim, summaryOf(), T0 + 700)).toBeNull();

        const cancelled = await batchWith(1, "finish-cancel");
        await succeed(ref(cancelled, "i0"));
        await ledger.requestTermination(cancelled, "cancelled", "cancelled by operator", T0 + 20);
        const final = await finalize(cancelled, T0 + 30);
        expect(final).toMatchObject({ status: "cancelled", reason: "cancelled by operator" });
      });
    });

    describe("termination and retry", () => {
      it("flags termination once, never while finalizing or final; cancelling sweeps pending items only", async () => {
        const id = await batchWith(3, "terminate");
        await ledger.leaseItem(ref(id, "i0"), "w", LEASE, 5, T0 + 10);
        const flagged = await ledger.requestTermination(id, "cancelled", "cancelled by operator", T0 + 20);
        expect(flagged).toMatchObject({ terminateAs: "cancelled", reason: "cancelled by operator" });
        const again = await ledger.requestTermination(id, "failed", "other reason", T0 + 21);
        expect(again).toMatchObject({ terminateAs: "cancelled", reason: "cancelled by operator" });
        expect(await ledger.cancelPendingItems(id, "cancelled by operator", 1, T0 + 22)).toBe(1);
        expect(await ledger.cancelPendingItems(id, "cancelled by operator", 10, T0 + 23)).toBe(1);
        expect(await ledger.cancelPendingItems(id, "cancelled by operator", 10, T0 + 24)).toBe(0);
        expect(await ledger.countItems(id)).toMatchObject({ running: 1, failed: 2 });
        expect(await ledger.countFailedByKind(id)).toEqual({ cancelled: 2 });
        expect(await ledger.getItem(id, "i1")).toMatchObject({
          status: "failed",
          error: { kind: "cancelled", message: "cancelled by operator" },
        });

        const finalizing = await runningBatch(1, "terminate-finalizing");
        await succeed(ref(finalizing, "i0"));
        const claim = (await ledger.beginFinalizing(finalizing, T0 + 100, STALE))!;
        expect(await ledger.requestTermination(finalizing, "cancelled", "too late", T0 + 101)).toBeNull();
        await ledger.finishBatch(
          finalizing,
          claim,
          summaryOf({ counts: await ledger.countItems(finalizing) }),
          T0 + 102,
        );
        expect(await ledger.requestTermination(finalizing, "cancelled", "too late", T0 + 103)).toBeNull();
        expect((await ledger.getBatch(finalizing))?.status).toBe("succeeded");
        expect(await ledger.requestTermination(newId("nobatch"), "cancelled", "x", T0)).toBeNull();
      });

      it("retries the failed items of a final batch as a new generation, page by page, fenced", async () => {
        const id = await runningBatch(5, "retry");
        await succeed(ref(id, "i0"));
        for (const i of [1, 2, 3, 4]) await fail(ref(id, `i${i}`));
        await expect(ledger.beginRetry(id, T0 + 50)).rejects.toBeInstanceOf(RetryRefusedError);
        await finalize(id, T0 + 100);
        const started = await ledger.beginRetry(id, T0 + 200);
        expect(started).toMatchObject({
          status: "submitting",
          generation: 2,
          terminateAs: null,
          progressAt: T0 + 200,
        });
        await expect(ledger.beginRetry(id, T0 + 201)).rejects.toBeInstanceOf(RetryRefusedError);
        await expect(ledger.resetFailedItems(id, 3, 10, T0 + 202)).rejects.toBeInstanceOf(BatchFencedError);
        const page1 = await ledger.resetFailedItems(id, 2, 2, T0 + 210);
        expect(page1).toHaveLength(2);
        expect(page1.every((r) => r.generation === 2 && r.batchId === id)).toBe(true);
        const reset = await ledger.getItem(id, page1[0]!.itemId);
        expect(reset).toMatchObject({
          status: "pending",
          generation: 2,
          attempt: 0,
          error: null,
          lastError: permanent,
          lease: null,
          finishedAt: null,
        });
        // The succeeded item keeps its generation and result.
        expect(await ledger.getItem(id, "i0")).toMatchObject({ status: "succeeded", generation: 1 });
        // A reset item that fails again in this generation is not reset again by the same retry.
        await fail(ref(id, page1[0]!.itemId, 2), T0 + 220);
        const rest = ["i1", "i2", "i3", "i4"].filter((x) => !page1.some((r) => r.itemId === x)).sort();
        // A page comes in document-id order (ids are hashed: no submission order to rely on).
        const page2 = await ledger.resetFailedItems(id, 2, 1, T0 + 230);
        expect(page2).toHaveLength(1);
        expect(rest).toContain(page2[0]!.itemId);
        const untouched = rest.filter((x) => x !== page2[0]!.itemId);
        // The retry's submission ends (the reconciler took it for dead): its next page is refused.
        expect(await ledger.markRetrySubmitted(id, T0 + 250)).toBe(true);
        expect(await ledger.getBatch(id)).toMatchObject({ status: "running", generation: 2, summary: null });
        expect(await ledger.markRetrySubmitted(id, T0 + 251)).toBe(false);
        await expect(ledger.resetFailedItems(id, 2, 10, T0 + 260)).rejects.toBeInstanceOf(BatchFencedError);
        expect(await ledger.getItem(id, untouched[0]!)).toMatchObject({ status: "failed", generation: 1 });
        expect(await ledger.countItems(id)).toMatchObject({ pending: 2, failed: 2, succeeded: 1 });
      });

      it("a retry page is refused once another process ended the retry or cancelled it", async () => {
        for (const end of ["marked running", "cancelled"] as const) {
          const id = await runningBatch(4, "retry-fence");
          for (const i of [0, 1, 2, 3]) await fail(ref(id, `i${i}`));
          await finalize(id, T0 + 100);
          const operator = sut.newLedger();
          const reconciler = sut.newLedger();
          await operator.beginRetry(id, T0 + 200);
          expect(await operator.resetFailedItems(id, 2, 2, T0 + 210)).toHaveLength(2);
          if (end === "marked running") expect(await reconciler.markRetrySubmitted(id, T0 + 300)).toBe(true);
          else
            expect(
              await reconciler.requestTermination(id, "cancelled", "mid-retry", T0 + 300),
            ).not.toBeNull();
          await expect(operator.resetFailedItems(id, 2, 2, T0 + 310)).rejects.toBeInstanceOf(
            BatchFencedError,
          );
          expect(await ledger.countItems(id)).toMatchObject({ pending: 2, failed: 2 });
          expect(await ledger.countSucceeded(id, 2)).toBe(0);
        }
      });

      it("refuses a retry of a cancelled batch, of one that ended early, and of one without failures", async () => {
        const cancelled = await batchWith(1, "retry-cancelled");
        await ledger.requestTermination(cancelled, "cancelled", "cancelled by operator", T0 + 1);
        await ledger.cancelPendingItems(cancelled, "cancelled by operator", 10, T0 + 2);
        await finalize(cancelled, T0 + 3);
        await expect(ledger.beginRetry(cancelled, T0 + 4)).rejects.toThrow(/cancelled/);

        const incomplete = await batchWith(1, "retry-incomplete");
        await ledger.requestTermination(incomplete, "failed", "incomplete_submission: x", T0 + 1);
        await ledger.cancelPendingItems(incomplete, "incomplete_submission: x", 10, T0 + 2);
        await finalize(incomplete, T0 + 3);
        await expect(ledger.beginRetry(incomplete, T0 + 4)).rejects.toBeInstanceOf(RetryRefusedError);

        const clean = await runningBatch(1, "retry-clean");
        await succeed(ref(clean, "i0"));
        await finalize(clean, T0 + 100);
        await expect(ledger.beginRetry(clean, T0 + 101)).rejects.toThrow(/no failed items/);
        await expect(ledger.beginRetry(newId("nobatch"), T0)).rejects.toThrow();
      });
    });
  });
}
