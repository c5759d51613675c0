import {
  exportBackoffMs,
  type FinalizationClaim,
  mayBeginRetry,
  mayClaimFinalization,
  mayFinishBatch,
  mayReExport,
  mayRequestTermination,
} from "../../core/batchFence";
import { decideBeginAppend } from "../../core/concurrentAppends";
import { BatchFencedError } from "../../core/errors";
import type { Batch, BatchStatus, BatchSummary, NewBatch } from "../../core/model";
import type { CreateBatchResult } from "../../core/ports";
import { reconcilerStateCollection } from "../firestoreIndexes";
import { isFailedPrecondition, LedgerPart, type LedgerStorage, RetryRefusedError, toBatch } from "./storage";

export class FirestoreBatchLifecycle extends LedgerPart {
  constructor(
    storage: LedgerStorage,
    private readonly queries: { liveItemExists(batchId: string): Promise<boolean> },
  ) {
    super(storage);
  }

  private liveItemExists(batchId: string): Promise<boolean> {
    return this.queries.liveItemExists(batchId);
  }

  async createBatch(nb: NewBatch, now: number): Promise<CreateBatchResult> {
    const ref = this.batchRef(nb.batchId);
    return this.tx(async (tx) => {
      const snap = await tx.get(ref);
      this.ops.reads++;
      const existing = toBatch(snap);
      if (existing) {
        return existing.contentHash === nb.contentHash
          ? { kind: "exists", batch: existing }
          : { kind: "conflict", batch: existing };
      }
      const batch: Batch = {
        batchId: nb.batchId,
        pipeline: nb.pipeline,
        status: nb.dependsOn.length > 0 ? "blocked" : "submitting",
        total: nb.total,
        received: 0,
        cursor: 0,
        submissionComplete: false,
        failureThreshold: nb.failureThreshold,
        dependsOn: nb.dependsOn,
        contentHash: nb.contentHash,
        generation: 1,
        reason: null,
        terminateAs: null,
        createdAt: now,
        updatedAt: now,
        progressAt: now,
        startedAt: null,
        finalizingAt: null,
        finishedAt: null,
        summary: null,
      };
      tx.create(ref, { ...batch, expireAt: this.expireAt(now) });
      this.ops.writes++;
      return { kind: "created", batch };
    });
  }

  async getBatch(batchId: string): Promise<Batch | null> {
    this.ops.reads++;
    return toBatch(await this.batchRef(batchId).get());
  }

  async getBatches(batchIds: string[]): Promise<(Batch | null)[]> {
    if (batchIds.length === 0) return [];
    this.ops.reads += batchIds.length;
    const snaps = await this.db.getAll(...batchIds.map((id) => this.batchRef(id)));
    return snaps.map((s) => toBatch(s));
  }

  async advanceCursor(batchId: string, cursor: number, now: number, received?: number): Promise<Batch> {
    return this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = toBatch(await tx.get(ref));
      this.ops.reads++;
      if (!b) throw new Error(`batch ${batchId} not found`);
      const moved: Partial<Pick<Batch, "cursor" | "received">> = {};
      if (cursor > b.cursor) moved.cursor = cursor;
      if (received !== undefined && received > b.received) moved.received = received;
      if (Object.keys(moved).length === 0) return b;
      tx.update(ref, { ...moved, progressAt: now, updatedAt: now });
      this.ops.writes++;
      return { ...b, ...moved, progressAt: now, updatedAt: now };
    });
  }

  async joinSubmission(batchId: string, now: number): Promise<number> {
    return this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = toBatch(await tx.get(ref));
      this.ops.reads++;
      if (!b) throw new Error(`batch ${batchId} not found`);
      const joinedWriters = (b.joinedWriters ?? 0) + 1;
      tx.update(ref, { joinedWriters, updatedAt: now });
      this.ops.writes++;
      return joinedWriters;
    });
  }

  async beginAppend(
    batchId: string,
    now: number,
    until: number,
  ): Promise<{ joinedWriters: number; othersInFlight: boolean }> {
    return this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = toBatch(await tx.get(ref));
      this.ops.reads++;
      if (!b) throw new Error(`batch ${batchId} not found`);
      const decision = decideBeginAppend(b, now, until);
      tx.update(ref, { ...decision.update, updatedAt: now });
      this.ops.writes++;
      return decision.answer;
    });
  }

  async endAppend(batchId: string, now: number): Promise<void> {
    await this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = toBatch(await tx.get(ref));
      this.ops.reads++;
      if (!b || !(b.appendsInFlight ?? 0)) return;
      tx.update(ref, { appendsInFlight: (b.appendsInFlight ?? 0) - 1, updatedAt: now });
      this.ops.writes++;
    });
  }

  async recordProgress(batchId: string, now: number): Promise<void> {
    await this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = toBatch(await tx.get(ref));
      this.ops.reads++;
      if (!b || b.status !== "submitting" || b.progressAt >= now) return;
      tx.update(ref, { progressAt: now, updatedAt: now });
      this.ops.writes++;
    });
  }

  async markSubmitted(batchId: string, total: number, now: number): Promise<boolean> {
    return this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = toBatch(await tx.get(ref));
      this.ops.reads++;
      if (!b || b.status !== "submitting") return false;
      tx.update(ref, {
        status: "running",
        total,
        submissionComplete: true,
        cursor: Math.max(b.cursor, total),
        // Every item is stored by now; a submission that stored chunks concurrently defers `received`.
        received: Math.max(b.received, total),
        startedAt: b.startedAt ?? now,
        progressAt: now,
        updatedAt: now,
      });
      this.ops.writes++;
      return true;
    });
  }

  async recordTotal(batchId: string, total: number, now: number): Promise<void> {
    await this.batchRef(batchId).update({ total, submissionComplete: true, progressAt: now, updatedAt: now });
    this.ops.writes++;
  }

  async releaseFinalizing(batchId: string, claim: number): Promise<void> {
    await this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = toBatch(await tx.get(ref));
      this.ops.reads++;
      // Only our own claim: another finalizer may have taken over meanwhile.
      if (!b || b.status !== "finalizing" || b.finalizingAt !== claim) return;
      tx.update(ref, { finalizingAt: 0 });
      this.ops.writes++;
    });
  }

  async recordExportFailure(
    batchId: string,
    claim: number,
    error: string,
    now: number,
    maxExportAttempts: number,
  ): Promise<Batch | null> {
    return this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = toBatch(await tx.get(ref));
      this.ops.reads++;
      // Only our own claim: another finalizer may have taken over meanwhile.
      if (!b || b.status !== "finalizing" || b.finalizingAt !== claim) return null;
      const attempts = (b.exportAttempts ?? 0) + 1;
      const exhausted = attempts >= maxExportAttempts;
      const patch = {
        // 0 hands the claim back: the next finalizer may claim it once the backoff has passed.
        finalizingAt: 0,
        exportAttempts: attempts,
        exportError: error,
        exportFailedAt: exhausted ? now : null,
        nextExportAt: exhausted ? null : now + exportBackoffMs(attempts),
        updatedAt: now,
      };
      tx.update(ref, patch);
      this.ops.writes++;
      return { ...b, ...patch };
    });
  }

  async renewFinalizing(batchId: string, claim: number, now: number): Promise<number | null> {
    return this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = toBatch(await tx.get(ref));
      this.ops.reads++;
      if (!b || b.status !== "finalizing" || b.finalizingAt !== claim) return null;
      const renewed = Math.max(now, claim + 1);
      tx.update(ref, { finalizingAt: renewed });
      this.ops.writes++;
      return renewed;
    });
  }

  async reExport(batchId: string, now: number): Promise<Batch> {
    return this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = toBatch(await tx.get(ref));
      this.ops.reads++;
      if (!b) throw new BatchFencedError(batchId, `batch ${batchId} does not exist`);
      const decision = mayReExport(b);
      if (!decision.ok) throw new BatchFencedError(batchId, decision.reason);
      const patch = {
        exportAttempts: 0,
        exportFailedAt: null,
        nextExportAt: null,
        finalizingAt: 0,
        updatedAt: now,
      };
      tx.update(ref, patch);
      this.ops.writes++;
      return { ...b, ...patch };
    });
  }

  async beginFinalizing(batchId: string, now: number, staleFinalizingMs: number): Promise<Batch | null> {
    // Read, then a write preconditioned on the read's update time (as leaseItem): exactly one
    // claimer's write lands, the others fail at once and re-read a `finalizing` batch. A
    // transaction here made the last two workers of a batch — both seeing nothing left — wait on
    // each other's locks (seconds on the emulator) before one was aborted.
    //
    // The claim also re-checks for live items between that read and the write. A caller's own
    // "anything left?" may be old: a settle that saw every item terminal can reach this point after
    // an operator retry made items pending again and set the batch running (seen under load: the
    // retried generation finalized at once, its export empty). Items only become live again through
    // a retry, which writes the batch document first, so "no live items" checked after the read
    // holds at the write, or the precondition fails.
    const ref = this.batchRef(batchId);
    for (let round = 1; ; round++) {
      const snap = await ref.get();
      this.ops.reads++;
      const b = toBatch(snap);
      if (!b) return null;
      if (!mayClaimFinalization(b, now, staleFinalizingMs).ok) return null;
      if (await this.liveItemExists(batchId)) return null;
      const patch = { status: "finalizing" as const, finalizingAt: now, updatedAt: now, progressAt: now };
      try {
        await ref.update(patch, { lastUpdateTime: snap.updateTime! });
        this.ops.writes++;
        return { ...b, ...patch };
      } catch (err) {
        if (isFailedPrecondition(err) && round < this.maxAttempts) continue;
        throw err;
      }
    }
  }

  async finishBatch(
    batchId: string,
    claim: FinalizationClaim,
    summary: BatchSummary,
    now: number,
  ): Promise<Batch | null> {
    return this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = toBatch(await tx.get(ref));
      this.ops.reads++;
      if (!b || !mayFinishBatch(b, claim).ok) return null;
      // The sealed total stays (the finalizer verified the ledger holds it); a batch that ended
      // before it was sealed takes the count it holds.
      const total = b.total ?? summary.counts.total;
      const status: BatchStatus =
        b.terminateAs === "cancelled" ? "cancelled" : b.terminateAs === "failed" ? "failed" : summary.outcome;
      tx.update(ref, {
        status,
        summary,
        total,
        finishedAt: now,
        updatedAt: now,
        progressAt: now,
      });
      this.ops.writes++;
      return { ...b, status, summary, total, finishedAt: now, updatedAt: now };
    });
  }

  async unblockBatch(batchId: string, now: number): Promise<boolean> {
    return this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = toBatch(await tx.get(ref));
      this.ops.reads++;
      if (!b || b.status !== "blocked" || b.terminateAs) return false;
      tx.update(ref, { status: "submitting", progressAt: now, updatedAt: now });
      this.ops.writes++;
      return true;
    });
  }

  async readSweepCursor(sweep: string): Promise<string | undefined> {
    const snap = await this.db.collection(reconcilerStateCollection).doc(sweep).get();
    this.ops.reads++;
    const token = snap.exists ? (snap.get("pageToken") as string | null) : null;
    return token ?? undefined;
  }

  async writeSweepCursor(sweep: string, pageToken: string | undefined, now: number): Promise<void> {
    await this.db
      .collection(reconcilerStateCollection)
      .doc(sweep)
      .set({ pageToken: pageToken ?? null, updatedAt: now });
    this.ops.writes++;
  }

  async requestTermination(
    batchId: string,
    as: "cancelled" | "failed",
    reason: string,
    now: number,
  ): Promise<Batch | null> {
    return this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = toBatch(await tx.get(ref));
      this.ops.reads++;
      if (!b || !mayRequestTermination(b).ok) return null;
      if (b.terminateAs) return b;
      tx.update(ref, { terminateAs: as, reason, updatedAt: now });
      this.ops.writes++;
      return { ...b, terminateAs: as, reason, updatedAt: now };
    });
  }

  async beginRetry(batchId: string, now: number): Promise<Batch> {
    return this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = toBatch(await tx.get(ref));
      this.ops.reads++;
      if (!b) throw new Error(`batch ${batchId} not found`);
      const decision = mayBeginRetry(b);
      if (!decision.ok) throw new RetryRefusedError(decision.reason);
      const patch = {
        status: "submitting" as const,
        generation: b.generation + 1,
        terminateAs: null,
        reason: null,
        finalizingAt: null,
        finishedAt: null,
        progressAt: now,
        updatedAt: now,
      };
      tx.update(ref, patch);
      this.ops.writes++;
      return { ...b, ...patch };
    });
  }

  async markRetrySubmitted(batchId: string, now: number): Promise<boolean> {
    return this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = toBatch(await tx.get(ref));
      this.ops.reads++;
      if (!b || b.status !== "submitting") return false;
      tx.update(ref, { status: "running", summary: null, progressAt: now, updatedAt: now });
      this.ops.writes++;
      return true;
    });
  }
}
