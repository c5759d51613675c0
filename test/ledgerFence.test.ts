// The batch fence (functions/core/batchFence.ts) against the real Firestore emulator: every write
// that adds an item to a batch or resets one into a generation is refused once the batch moved to
// a state that admits no such write, whatever the interleaving — the two interleavings of issue
// #15 items 1 and 2 are replayed step by step, each write landing in the gap it was found in.
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { FirestoreLedger } from "../functions/adapters/firestoreLedger";
import { BatchFencedError } from "../functions/core/errors";
import { finalizeBatch } from "../functions/core/finalizeBatch";
import { createLogger } from "../functions/core/logger";
import type { BatchSummary, NewBatch, ResultRow } from "../functions/core/model";
import type { ExportResult, ExportTarget, ItemRef, ResultSink } from "../functions/core/ports";
import { testFirestore, uniqueProjectId } from "./support/cloud";

const db = testFirestore(uniqueProjectId("fence"));
const ledger = new FirestoreLedger(db);
afterAll(() => db.terminate());

let seq = 0;
let batchId = "";
const T0 = 1_700_000_000_000;
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
const items = (from: number, n: number) =>
  Array.from({ length: n }, (_, i) => ({ itemId: `i${from + i}`, payload: { n: from + i } }));
const summary = (over: Partial<BatchSummary> = {}): BatchSummary => ({
  outcome: "succeeded",
  counts: { total: 0, pending: 0, running: 0, succeeded: 0, failed: 0 },
  failedByKind: {},
  exportId: null,
  exportedRows: 0,
  durationMs: 0,
  ...over,
});

/** A result sink that records rows per (batch, generation), for the finalizer's verification. */
class RecordingSink implements ResultSink {
  rows = new Map<string, ResultRow>();
  operations = 0;
  failures = 0;
  async exportBatch(target: ExportTarget, pages: AsyncIterable<ResultRow[]>): Promise<ExportResult> {
    const { batchId: id, generation } = target;
    this.operations++;
    if (this.failures > 0) {
      this.failures--;
      throw new Error("injected export failure");
    }
    let n = 0;
    for await (const page of pages)
      for (const r of page) {
        this.rows.set(`${id}/${r.itemId}/${generation}`, r);
        n++;
      }
    return { exportId: `${id}-g${generation}`, rows: n };
  }
  async countRows(id: string) {
    return [...this.rows.keys()].filter((k) => k.startsWith(`${id}/`)).length;
  }
  async close() {}
}

const quietLog = createLogger({ component: "test", sink: () => {} });
const finalizeDeps = (sink: ResultSink, now = T0 + 10_000) => ({
  ledger,
  sink,
  clock: { now: () => now },
  log: quietLog,
  staleFinalizingMs: 60_000,
});

beforeEach(() => {
  batchId = `f${++seq}-${Date.now()}`;
});

async function completeAll(ids: string[], generation = 1, at = T0 + 1) {
  for (const id of ids) {
    await ledger.leaseItem(ref(id, generation), "w", 30_000, 5, at);
    await ledger.completeItem(ref(id, generation), "w", { id }, at);
  }
}

describe("the fence on item-creating writes (issue #15 item 1)", () => {
  it("a paused stream's next chunk is refused after its batch was terminated and finalized; nothing is stored", async () => {
    await ledger.createBatch(newBatch(), T0);
    // The stream's first chunk, stored concurrently (received deferred), then published and run.
    await ledger.appendItems(batchId, 0, items(0, 3), T0, { publishable: true, deferReceived: true });
    await completeAll(["i0", "i1", "i2"]);
    // The client pauses; the stale-submission sweep ends the batch as incomplete and it finalizes.
    await ledger.requestTermination(batchId, "failed", "incomplete_submission: test", T0 + 2);
    const sink = new RecordingSink();
    const final = await finalizeBatch(finalizeDeps(sink), batchId);
    expect(final?.status).toBe("failed");
    // The stream resumes: its chunk is refused by the fence, and no item of it exists.
    const late = ledger.appendItems(batchId, 3, items(3, 2), T0 + 3, {
      publishable: true,
      deferReceived: true,
    });
    await expect(late).rejects.toBeInstanceOf(BatchFencedError);
    await expect(late).rejects.toThrow(/accepts no more items/);
    expect(await ledger.getItem(batchId, "i3")).toBeNull();
    expect(await ledger.countItems(batchId)).toMatchObject({ total: 3, succeeded: 3 });
    expect(await sink.countRows(batchId)).toBe(3);
  });

  it("a chunk whose batch read came before a termination fails its fence, even with the snapshot cached", async () => {
    await ledger.createBatch(newBatch(), T0);
    // The first chunk caches the batch snapshot that admitted it.
    await ledger.appendItems(batchId, 0, items(0, 2), T0, { publishable: true, deferReceived: true });
    // Another process (the reconciler) terminates the batch: the cached snapshot is now stale.
    await new FirestoreLedger(db).requestTermination(batchId, "cancelled", "cancelled by operator", T0 + 1);
    await expect(
      ledger.appendItems(batchId, 2, items(2, 2), T0 + 2, { publishable: true, deferReceived: true }),
    ).rejects.toBeInstanceOf(BatchFencedError);
    expect(await ledger.getItem(batchId, "i2")).toBeNull();
  });

  it("a sealed batch takes no more items; the slow path (an id already stored) is fenced too", async () => {
    await ledger.createBatch(newBatch(), T0);
    await ledger.appendItems(batchId, 0, items(0, 2), T0, { publishable: true });
    expect(await ledger.markSubmitted(batchId, 2, T0 + 1)).toBe(true);
    await expect(ledger.appendItems(batchId, 2, items(2, 1), T0 + 2, { publishable: true })).rejects.toThrow(
      /accepts no more items|sealed/,
    );
    // A group that meets an existing document goes item by item: still fenced.
    await expect(
      ledger.appendItems(batchId, 1, [...items(1, 1), ...items(5, 1)], T0 + 2, { publishable: true }),
    ).rejects.toBeInstanceOf(BatchFencedError);
    expect(await ledger.getItem(batchId, "i5")).toBeNull();
  });

  it("concurrent chunks of one open batch do not conflict with each other (the fence check changes nothing)", async () => {
    await ledger.createBatch(newBatch(), T0);
    const before = ledger.ops.writes;
    await Promise.all(
      Array.from({ length: 8 }, (_, c) =>
        ledger.appendItems(batchId, c * 50, items(c * 50, 50), T0, {
          publishable: true,
          deferReceived: true,
        }),
      ),
    );
    expect((await ledger.countItems(batchId)).pending).toBe(400);
    // 400 item creates + one fence check per commit.
    expect(ledger.ops.writes - before).toBe(408);
  });

  it("a claim between a chunk's batch read and its commit: the chunk's items are live or the chunk is refused", async () => {
    // The states that admit a chunk and the claimable states are disjoint, so the only way to a
    // claim is a batch write after the chunk's read — which fails the chunk's fence.
    await ledger.createBatch(newBatch(), T0);
    await ledger.appendItems(batchId, 0, items(0, 1), T0, { publishable: true, deferReceived: true });
    await completeAll(["i0"]);
    const other = new FirestoreLedger(db);
    await other.requestTermination(batchId, "failed", "incomplete_submission: test", T0 + 2);
    expect(await other.beginFinalizing(batchId, T0 + 3, 60_000)).not.toBeNull();
    await expect(
      ledger.appendItems(batchId, 1, items(1, 1), T0 + 4, { publishable: true, deferReceived: true }),
    ).rejects.toBeInstanceOf(BatchFencedError);
    expect(await ledger.hasLiveItems(batchId)).toBe(false);
  });
});

describe("the fence on item-resetting writes (issue #15 item 2)", () => {
  async function finishedWithFailures() {
    await ledger.createBatch(newBatch(), T0);
    await ledger.appendItems(batchId, 0, items(0, 4), T0, { publishable: true });
    await ledger.markSubmitted(batchId, 4, T0);
    await completeAll(["i0"]);
    for (const id of ["i1", "i2", "i3"]) {
      await ledger.leaseItem(ref(id), "w", 30_000, 5, T0 + 1);
      await ledger.failItem(ref(id), { kind: "permanent", message: "bad" }, T0 + 1, { owner: "w" });
    }
    const sink = new RecordingSink();
    expect((await finalizeBatch(finalizeDeps(sink), batchId))?.status).toBe("failed");
    return sink;
  }

  it("a retry taken for dead and finalized between two pages resets nothing more", async () => {
    const sink = await finishedWithFailures();
    const started = await ledger.beginRetry(batchId, T0 + 20_000);
    // Page 1: one item reset and run.
    const page1 = await ledger.resetFailedItems(batchId, started.generation, 1, T0 + 20_001);
    expect(page1).toHaveLength(1);
    await completeAll(
      page1.map((r) => r.itemId),
      2,
      T0 + 20_002,
    );
    // The reconciler takes the slow retry for dead: it ends its submission and finalizes it.
    const reconciler = new FirestoreLedger(db);
    expect(await reconciler.markRetrySubmitted(batchId, T0 + 200_000)).toBe(true);
    expect(
      (await finalizeBatch({ ...finalizeDeps(sink, T0 + 200_001), ledger: reconciler }, batchId))?.status,
    ).toBe("failed");
    // Page 2 of the retry arrives: refused, the failed items stay failed, nothing is live.
    await expect(
      ledger.resetFailedItems(batchId, started.generation, 10, T0 + 200_002),
    ).rejects.toBeInstanceOf(BatchFencedError);
    expect(await ledger.countItems(batchId)).toMatchObject({
      pending: 0,
      running: 0,
      succeeded: 2,
      failed: 2,
    });
    expect(await ledger.getBatch(batchId)).toMatchObject({ generation: 2, status: "failed" });
  });

  it("a cancel in the middle of a retry stops its resets", async () => {
    await finishedWithFailures();
    const started = await ledger.beginRetry(batchId, T0 + 20_000);
    await ledger.resetFailedItems(batchId, started.generation, 1, T0 + 20_001);
    await new FirestoreLedger(db).requestTermination(
      batchId,
      "cancelled",
      "cancelled by operator",
      T0 + 20_002,
    );
    await expect(ledger.resetFailedItems(batchId, started.generation, 10, T0 + 20_003)).rejects.toThrow(
      /its retry accepts no more items/,
    );
    expect((await ledger.countItems(batchId)).failed).toBe(2);
  });

  it("a retry is refused for a cancelled batch or one that ended early", async () => {
    await ledger.createBatch(newBatch(), T0);
    await ledger.appendItems(batchId, 0, items(0, 2), T0, { publishable: true });
    await ledger.requestTermination(batchId, "failed", "incomplete_submission: test", T0 + 1);
    await ledger.cancelPendingItems(batchId, "incomplete_submission: test", 10, T0 + 1);
    await finalizeBatch(finalizeDeps(new RecordingSink()), batchId);
    await expect(ledger.beginRetry(batchId, T0 + 2)).rejects.toThrow(/only a batch that ran to its outcome/);
  });
});

describe("termination and finalization", () => {
  it("a cancel is refused while the batch is finalizing (an all-succeeded batch stays succeeded)", async () => {
    await ledger.createBatch(newBatch(), T0);
    await ledger.appendItems(batchId, 0, items(0, 1), T0, { publishable: true });
    await ledger.markSubmitted(batchId, 1, T0);
    await completeAll(["i0"]);
    const claim = await ledger.beginFinalizing(batchId, T0 + 2, 60_000);
    expect(claim?.status).toBe("finalizing");
    expect(await ledger.requestTermination(batchId, "cancelled", "cancelled by operator", T0 + 3)).toBeNull();
    await ledger.finishBatch(
      batchId,
      claim!,
      summary({ counts: await ledger.countItems(batchId), exportedRows: 1 }),
      T0 + 4,
    );
    expect((await ledger.getBatch(batchId))?.status).toBe("succeeded");
  });

  it("the finalizer refuses an export that does not hold exactly the generation's succeeded items", async () => {
    await ledger.createBatch(newBatch(), T0);
    await ledger.appendItems(batchId, 0, items(0, 3), T0, { publishable: true });
    await ledger.markSubmitted(batchId, 3, T0);
    await completeAll(["i0", "i1", "i2"]);
    const lossy: ResultSink = {
      operations: 0,
      async exportBatch({ batchId: id, generation }, pages) {
        let n = 0;
        for await (const page of pages) n += page.length;
        return { exportId: `${id}-g${generation}`, rows: n - 1 }; // one row lost
      },
      countRows: async () => 2,
      close: async () => {},
    };
    const now = T0 + 10_000;
    expect(await finalizeBatch(finalizeDeps(lossy, now), batchId)).toBeNull();
    // The claim was handed back as a failed attempt (persisted, backing off): not re-run at once,
    // and a correct export after the backoff finalizes it.
    const b = await ledger.getBatch(batchId);
    expect(b).toMatchObject({
      status: "finalizing",
      finalizingAt: 0,
      exportAttempts: 1,
      exportFailedAt: null,
    });
    expect(b!.exportError).toMatch(/^finalization refused: the export holds 2 rows for generation 1/);
    expect(b!.nextExportAt).toBeGreaterThan(now);
    expect(await finalizeBatch(finalizeDeps(new RecordingSink(), now + 1), batchId)).toBeNull();
    expect(
      (await finalizeBatch(finalizeDeps(new RecordingSink(), b!.nextExportAt! + 1), batchId))?.status,
    ).toBe("succeeded");
  });

  it("a refusal that persists is given up after the attempt cap, like a failed export, and waits for an operator", async () => {
    await ledger.createBatch(newBatch(), T0);
    await ledger.appendItems(batchId, 0, items(0, 2), T0, { publishable: true });
    await ledger.markSubmitted(batchId, 2, T0);
    await completeAll(["i0", "i1"]);
    const lossy: ResultSink = {
      operations: 0,
      async exportBatch({ batchId: id, generation }) {
        return { exportId: `${id}-g${generation}`, rows: 0 };
      },
      countRows: async () => 0,
      close: async () => {},
    };
    let now = T0 + 10_000;
    for (let attempt = 1; attempt <= 2; attempt++) {
      expect(await finalizeBatch({ ...finalizeDeps(lossy, now), maxExportAttempts: 2 }, batchId)).toBeNull();
      const b = await ledger.getBatch(batchId);
      expect(b).toMatchObject({ status: "finalizing", exportAttempts: attempt });
      now = (b!.nextExportAt ?? now) + 1;
    }
    const given = await ledger.getBatch(batchId);
    expect(given!.exportFailedAt).not.toBeNull();
    now += 86_400_000;
    expect(
      await finalizeBatch({ ...finalizeDeps(new RecordingSink(), now), maxExportAttempts: 2 }, batchId),
    ).toBeNull();
    await ledger.reExport(batchId, now);
    expect((await finalizeBatch(finalizeDeps(new RecordingSink(), now), batchId))?.status).toBe("succeeded");
  });

  it("a failed export backs off, stops after the persisted attempt cap, and an operator re-export finishes it", async () => {
    await ledger.createBatch(newBatch(), T0);
    await ledger.appendItems(batchId, 0, items(0, 2), T0, { publishable: true });
    await ledger.markSubmitted(batchId, 2, T0);
    await completeAll(["i0", "i1"]);
    const sink = new RecordingSink();
    sink.failures = 3;
    let now = T0 + 10_000;
    const deps = () => ({ ...finalizeDeps(sink, now), maxExportAttempts: 3 });
    await expect(finalizeBatch(deps(), batchId)).rejects.toThrow(/injected export failure/);
    let b = await ledger.getBatch(batchId);
    expect(b).toMatchObject({ status: "finalizing", exportAttempts: 1, exportFailedAt: null });
    // Within the backoff nobody may claim it.
    expect(await finalizeBatch(deps(), batchId)).toBeNull();
    now = b!.nextExportAt! + 1;
    await expect(finalizeBatch(deps(), batchId)).rejects.toThrow(/injected/);
    now = (await ledger.getBatch(batchId))!.nextExportAt! + 1;
    await expect(finalizeBatch(deps(), batchId)).rejects.toThrow(/injected/);
    b = await ledger.getBatch(batchId);
    expect(b).toMatchObject({ status: "finalizing", exportAttempts: 3 });
    expect(b!.exportFailedAt).not.toBeNull();
    // Given up: no further attempt, however long one waits (the attempts are persisted).
    now += 86_400_000;
    expect(await finalizeBatch(deps(), batchId)).toBeNull();
    expect(sink.operations).toBe(3);
    // The operator re-exports.
    await ledger.reExport(batchId, now);
    expect((await finalizeBatch(deps(), batchId))?.status).toBe("succeeded");
    expect(await sink.countRows(batchId)).toBe(2);
  });

  it("a long export renews its claim, so a takeover finds it alive", async () => {
    await ledger.createBatch(newBatch(), T0);
    await ledger.appendItems(batchId, 0, items(0, 1), T0, { publishable: true });
    await ledger.markSubmitted(batchId, 1, T0);
    await completeAll(["i0"]);
    const claim = await ledger.beginFinalizing(batchId, T0 + 1_000, 60_000);
    const renewed = await ledger.renewFinalizing(batchId, claim!.finalizingAt!, T0 + 50_000);
    expect(renewed).toBe(T0 + 50_000);
    // 61 s after the claim but 11 s after the renewal: not stale.
    expect(await new FirestoreLedger(db).beginFinalizing(batchId, T0 + 61_000, 60_000)).toBeNull();
    // The old claim value is no longer ours to renew.
    expect(await ledger.renewFinalizing(batchId, claim!.finalizingAt!, T0 + 62_000)).toBeNull();
  });
});
