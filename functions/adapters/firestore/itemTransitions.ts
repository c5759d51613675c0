// Item writes (DESIGN.md §2.2): creation in fenced commits, lease, heartbeat, step checkpoints,
// completion, failure, release, redrive, the stale-pending touch, and the operator's bulk cancel and
// retry resets. Each decision is a pure function of core/itemTransitions.ts or core/batchFence.ts;
// every transition is conditioned on a read of the item (a transaction, or a write preconditioned on
// the read's update time), and every write that creates or resets items carries the batch fence.
import { type DocumentReference, FieldPath, type Timestamp, type Transaction } from "@google-cloud/firestore";
import { mayCreateItems, mayResetItems } from "../../core/batchFence";
import {
  completion,
  decideComplete,
  decideFail,
  decideLease,
  decideRedrive,
  decideRelease,
  heartbeatWrite,
  holdsLease,
  type ItemWrite,
} from "../../core/itemTransitions";
import type { Batch, Item, ItemError, NewItem } from "../../core/model";
import type { ItemRef, LeaseResult, RedriveResult, ReleaseOptions, TransitionResult } from "../../core/ports";
import { itemKey } from "./layout";
import {
  commitGroups,
  type ItemDoc,
  isAlreadyExists,
  isFailedPrecondition,
  LedgerPart,
  toBatch,
  toItem,
} from "./storage";

export class FirestoreItemTransitions extends LedgerPart {
  async appendItems(
    batchId: string,
    fromSeq: number,
    items: NewItem[],
    now: number,
    opts: { publishable: boolean; deferReceived?: boolean },
  ): Promise<{ alreadyExisting: string[]; joinedWriters: number }> {
    const alreadyExisting: string[] = [];
    // The highest `joinedWriters` any of this call's commits was fenced on: a request that joined
    // after the caller started is seen here (its join moved the batch document).
    let joinedWriters = 0;
    const saw = (b: Batch) => {
      joinedWriters = Math.max(joinedWriters, b.joinedWriters ?? 0);
    };
    if (items.length > 0) {
      const expireAt = this.expireAt(now);
      const docs = items.map((it, i) => {
        const doc: ItemDoc = {
          batchId,
          itemId: it.itemId,
          shard: itemKey(batchId, it.itemId).shard,
          seq: fromSeq + i,
          generation: 1,
          status: "pending",
          payload: it.payload ?? null,
          attempt: 0,
          leaseOwner: null,
          leaseUntil: null,
          heartbeatAt: null,
          steps: {},
          result: null,
          error: null,
          lastError: null,
          createdAt: now,
          updatedAt: now,
          startedAt: null,
          finishedAt: null,
          pendingSince: opts.publishable ? now : null,
          expireAt,
        };
        return { ref: this.itemRef(batchId, it.itemId), doc };
      });
      // No transaction: a chunk of new documents needs no read of the items. `create` makes each
      // write conditional on absence, so a re-submission racing the first one can never reset an
      // item that a worker has already leased or finished. Each commit carries the batch fence
      // (core/batchFence.ts): it lands only while the batch still admits new items, so no item is
      // ever added to a batch whose submission was sealed, terminated or finalized. Fast path: one
      // Commit per group of ≤ 500 writes / ~8 MiB (Firestore's per-request caps) — one round trip.
      // A commit of creates fails as a whole when any document already exists (a racing or
      // repeated submission): that group is then created item by item, each with the fence,
      // reporting what existed.
      await Promise.all(
        commitGroups(docs).map(async (group) => {
          try {
            saw(
              await this.commitFenced(batchId, mayCreateItems, (wb) => {
                for (const d of group) wb.create(d.ref, d.doc);
              }),
            );
          } catch (err) {
            if (!isAlreadyExists(err)) throw err;
            alreadyExisting.push(...(await this.createEach(batchId, group, saw)));
          }
        }),
      );
      this.ops.writes += items.length;
    }
    if (opts.deferReceived) return { alreadyExisting, joinedWriters };
    const to = fromSeq + items.length;
    await this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = toBatch(await tx.get(ref));
      this.ops.reads++;
      if (!b) throw new Error(`batch ${batchId} not found`);
      if (to > b.received) {
        tx.update(ref, { received: to, progressAt: now, updatedAt: now });
        this.ops.writes++;
      }
    });
    return { alreadyExisting, joinedWriters };
  }

  async withdrawItems(
    batchId: string,
    items: Array<{ itemId: string; seq: number }>,
    now: number,
  ): Promise<string[]> {
    if (items.length === 0) return [];
    // One transaction: each item is removed only while nobody has touched it (the caller stored it
    // and never published it, so only a stale-pending sweep could have), and `received` — a lower
    // bound of the stored prefix — drops below the first position left empty.
    return this.tx(async (tx) => {
      const batchDoc = this.batchRef(batchId);
      const refs = items.map((it) => this.itemRef(batchId, it.itemId));
      const [batchSnap, ...snaps] = await tx.getAll(batchDoc, ...refs);
      this.ops.reads += 1 + refs.length;
      const removed: Array<{ itemId: string; seq: number }> = [];
      snaps.forEach((snap, i) => {
        const item = toItem(snap);
        const want = items[i]!;
        if (!item || item.seq !== want.seq || item.status !== "pending" || item.attempt !== 0) return;
        if (item.generation !== 1) return;
        tx.delete(refs[i]!);
        removed.push(want);
      });
      const b = toBatch(batchSnap!);
      const lowest = Math.min(...removed.map((r) => r.seq));
      // A sealed batch's prefix was verified up to its total (the winner's items fill it): leave it.
      if (b && !b.submissionComplete && removed.length > 0 && b.received > lowest) {
        tx.update(batchDoc, { received: lowest, updatedAt: now });
        this.ops.writes++;
      }
      this.ops.writes += removed.length;
      return removed.map((r) => r.itemId);
    });
  }

  /**
   * Creates each document in its own fenced commit: the slow path of appendItems, taken only when a
   * group met documents that already exist (a repeated or racing submission). Returns those ids.
   */
  private async createEach(
    batchId: string,
    group: Array<{ ref: DocumentReference; doc: ItemDoc }>,
    saw: (b: Batch) => void,
  ): Promise<string[]> {
    const existing: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < group.length) {
        const d = group[next++]!;
        try {
          saw(
            await this.commitFenced(batchId, mayCreateItems, (wb) => {
              wb.create(d.ref, d.doc);
            }),
          );
        } catch (err) {
          if (!isAlreadyExists(err)) throw err;
          existing.push(d.doc.itemId);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(16, group.length) }, worker));
    return existing;
  }

  /** Reads an item inside a transaction; the shared first step of every item transition. */
  private async readItem(
    tx: Transaction,
    ref: ItemRef,
  ): Promise<{ doc: DocumentReference; item: Item | null }> {
    const doc = this.itemRef(ref.batchId, ref.itemId);
    const item = toItem(await tx.get(doc));
    this.ops.reads++;
    return { doc, item };
  }

  private write(tx: Transaction, doc: DocumentReference, patch: Partial<ItemDoc> | ItemWrite): void {
    tx.update(doc, patch);
    this.ops.writes++;
  }

  async leaseItem(
    ref: ItemRef,
    owner: string,
    leaseMs: number,
    maxAttempts: number,
    now: number,
  ): Promise<LeaseResult> {
    // Optimistic concurrency instead of a transaction: read, decide, then write with the read's
    // update time as a precondition (a concurrent change fails the write and we decide again).
    // Same guarantee as a transaction, no lock held across the round trip (the emulator's
    // pessimistic locks time out under 50 concurrent leases), and the write time it returns lets
    // `completeItem` commit without reading the item again (≤ 3 reads per item, DESIGN.md §9).
    const doc = this.itemRef(ref.batchId, ref.itemId);
    for (let round = 1; ; round++) {
      const snap = await doc.get();
      this.ops.reads++;
      const item = toItem(snap);
      const decision = decideLease(item, ref, owner, leaseMs, maxAttempts, now);
      if (!decision.write) return decision.result;
      try {
        const written = await doc.update(decision.write, { lastUpdateTime: snap.updateTime! });
        this.ops.writes++;
        if (decision.result.kind === "leased")
          this.rememberLease(ref, owner, written.writeTime, decision.result.item);
        return decision.result;
      } catch (err) {
        if (isFailedPrecondition(err) && round < this.maxAttempts) continue;
        throw err;
      }
    }
  }

  private readonly leasesHeld = new Map<
    string,
    { owner: string; generation: number; writeTime: Timestamp; item: Item }
  >();

  private static readonly maxLeasesRemembered = 10_000;

  private static leaseKey(ref: ItemRef): string {
    return `${ref.batchId}\u0000${ref.itemId}`;
  }

  private rememberLease(ref: ItemRef, owner: string, writeTime: Timestamp, item: Item): void {
    const key = FirestoreItemTransitions.leaseKey(ref);
    this.leasesHeld.delete(key);
    this.leasesHeld.set(key, { owner, generation: ref.generation, writeTime, item });
    // Leases of deliveries that never completed (lost lease, crash of the run) must not pile up.
    if (this.leasesHeld.size > FirestoreItemTransitions.maxLeasesRemembered) {
      const oldest = this.leasesHeld.keys().next().value;
      if (oldest !== undefined) this.leasesHeld.delete(oldest);
    }
  }

  /** Any other write to the item changes its update time: the remembered one is no longer current. */
  private forgetLease(ref: ItemRef): void {
    this.leasesHeld.delete(FirestoreItemTransitions.leaseKey(ref));
  }

  async heartbeat(ref: ItemRef, owner: string, leaseMs: number, now: number): Promise<boolean> {
    return this.holderUpdate(ref, owner, (doc, lastUpdateTime) =>
      doc.update(heartbeatWrite(leaseMs, now), { lastUpdateTime }),
    );
  }

  async checkpointStep(
    ref: ItemRef,
    owner: string,
    step: string,
    output: unknown,
    now: number,
  ): Promise<boolean> {
    return this.holderUpdate(ref, owner, (doc, lastUpdateTime) =>
      doc.update(
        new FieldPath("steps", step),
        { status: "succeeded", output: output ?? null, finishedAt: now },
        "updatedAt",
        now,
        { lastUpdateTime },
      ),
    );
  }

  /**
   * A write only the lease holder may make (heartbeat, checkpoint), without a transaction: the
   * holder's last write time (remembered from its lease) is the precondition, so no read is
   * needed while nothing else touched the item; otherwise read, check, and write conditioned on
   * that read. No transaction locks are held, so a worker SIGKILLed mid-write leaves none behind
   * (the emulator keeps a dead client's locks for about a minute).
   */
  private async holderUpdate(
    ref: ItemRef,
    owner: string,
    write: (doc: DocumentReference, lastUpdateTime: Timestamp) => Promise<{ writeTime: Timestamp }>,
  ): Promise<boolean> {
    const doc = this.itemRef(ref.batchId, ref.itemId);
    const key = FirestoreItemTransitions.leaseKey(ref);
    for (let round = 1; ; round++) {
      const known = this.leasesHeld.get(key);
      let since: Timestamp;
      let item: Item;
      if (known && known.owner === owner && known.generation === ref.generation) {
        since = known.writeTime;
        item = known.item;
      } else {
        const snap = await doc.get();
        this.ops.reads++;
        const current = toItem(snap);
        if (!holdsLease(current, ref, owner)) return false;
        since = snap.updateTime!;
        item = current;
      }
      try {
        const written = await write(doc, since);
        this.ops.writes++;
        this.rememberLease(ref, owner, written.writeTime, item);
        return true;
      } catch (err) {
        if (!isFailedPrecondition(err) || round >= this.maxAttempts) throw err;
        this.forgetLease(ref); // someone else wrote: decide again on a fresh read
      }
    }
  }

  async completeItem(ref: ItemRef, owner: string, result: unknown, now: number): Promise<TransitionResult> {
    if (this.failCompletionRate > 0 && Math.random() < this.failCompletionRate)
      throw new Error("injected fault: completion write failed (TALLY_FAULT_COMPLETE_FAIL_RATE)");
    // --- fault injection (F1 after the commit; functions/faults.ts): the completion commits, then
    // the caller gets an error instead of the answer. Off unless the chaos suite sets the rate.
    const completed = await this.commitCompletion(ref, owner, result, now);
    if (
      completed.kind === "done" &&
      this.failAfterCompletionRate > 0 &&
      Math.random() < this.failAfterCompletionRate
    )
      throw new Error(
        "injected fault: the completion committed, then its answer was lost (TALLY_FAULT_COMPLETE_FAIL_AFTER_COMMIT_RATE)",
      );
    return completed;
  }

  private async commitCompletion(
    ref: ItemRef,
    owner: string,
    result: unknown,
    now: number,
  ): Promise<TransitionResult> {
    const known = this.leasesHeld.get(FirestoreItemTransitions.leaseKey(ref));
    this.forgetLease(ref);
    if (known && known.owner === owner && known.generation === ref.generation) {
      // Nothing has touched the item since our own lease write (the precondition proves it), so
      // it is still ours and not terminal: commit without reading it again.
      const done = completion(known.item, result, now);
      try {
        await this.itemRef(ref.batchId, ref.itemId).update(done.write, { lastUpdateTime: known.writeTime });
        this.ops.writes++;
        return { kind: "done", item: done.item };
      } catch (err) {
        if (!isFailedPrecondition(err)) throw err;
        // Changed since (redriven, taken over, cancelled): decide on what is stored now.
      }
    }
    return this.tx(async (tx) => {
      const { doc, item } = await this.readItem(tx, ref);
      // A late duplicate never overwrites a finished item (core/itemTransitions.ts).
      const decision = decideComplete(item, ref, result, now);
      if (decision.write) this.write(tx, doc, decision.write);
      return decision.result;
    });
  }

  async failItem(
    ref: ItemRef,
    error: ItemError,
    now: number,
    opts: { owner?: string } = {},
  ): Promise<TransitionResult> {
    this.forgetLease(ref);
    return this.tx(async (tx) => {
      const { doc, item } = await this.readItem(tx, ref);
      const decision = decideFail(item, ref, error, now, opts.owner);
      if (decision.write) this.write(tx, doc, decision.write);
      return decision.result;
    });
  }

  async releaseItem(
    ref: ItemRef,
    owner: string,
    lastError: ItemError | null,
    now: number,
    opts: ReleaseOptions = {},
  ): Promise<TransitionResult> {
    this.forgetLease(ref);
    return this.tx(async (tx) => {
      const { doc, item } = await this.readItem(tx, ref);
      const decision = decideRelease(item, ref, owner, lastError, now, opts);
      if (decision.write) this.write(tx, doc, decision.write);
      return decision.result;
    });
  }

  async redriveItem(ref: ItemRef, maxAttempts: number, now: number): Promise<RedriveResult> {
    return this.tx(async (tx) => {
      const { doc, item } = await this.readItem(tx, ref);
      const decision = decideRedrive(item, ref, maxAttempts, now);
      if (decision.write) this.write(tx, doc, decision.write);
      return decision.result;
    });
  }

  async touchPending(refs: ItemRef[], now: number): Promise<void> {
    if (refs.length === 0) return;
    const writer = this.db.bulkWriter({ throttling: false });
    writer.onWriteError(() => false);
    for (const r of refs) {
      // Only still-pending items: a conditional update would need a read per item, and touching
      // a just-leased item's pendingSince is harmless (a lease clears it).
      writer.update(this.itemRef(r.batchId, r.itemId), { pendingSince: now }).catch(() => {});
    }
    await writer.close();
    this.ops.writes += refs.length;
  }

  async cancelPendingItems(batchId: string, reason: string, limit: number, now: number): Promise<number> {
    const snap = await this.items(batchId).where("status", "==", "pending").limit(limit).get();
    this.ops.queries++;
    this.ops.reads += snap.size;
    if (snap.empty) return 0;
    // Conditional bulk update: each write carries the read's update time as a precondition, so an
    // item leased in between is left to finish (FAILED_PRECONDITION is ignored).
    const writer = this.db.bulkWriter({ throttling: false });
    writer.onWriteError(() => false);
    let done = 0;
    const error: ItemError = { kind: "cancelled", message: reason };
    for (const d of snap.docs) {
      writer
        .update(
          d.ref,
          { status: "failed", error, finishedAt: now, updatedAt: now, pendingSince: null },
          { lastUpdateTime: d.updateTime },
        )
        .then(() => {
          done++;
        })
        .catch(() => {});
    }
    await writer.close();
    this.ops.writes += snap.size;
    return done;
  }

  async resetFailedItems(
    batchId: string,
    generation: number,
    limit: number,
    now: number,
  ): Promise<ItemRef[]> {
    // Only items failed in an earlier generation: an item of this retry that fails again (a
    // permanent error) must not be reset over and over by the same sweep.
    const snap = await this.items(batchId)
      .where("status", "==", "failed")
      .where("generation", "<", generation)
      .limit(limit)
      .get();
    this.ops.queries++;
    this.ops.reads += snap.size;
    if (snap.empty) return [];
    // Fenced (core/batchFence.ts): the resets land only while this retry is still submitting, so a
    // retry taken for dead, cancelled or finalized between two pages resets nothing more. Each reset
    // is also conditioned on the item's own read. One commit per page; when an item changed since
    // the read (the fence unchanged), the page is reset item by item and the changed ones skipped.
    const decide = (b: Batch) => mayResetItems(b, generation);
    const resetOf = (d: (typeof snap.docs)[number]) => ({
      status: "pending" as const,
      generation,
      attempt: 0,
      error: null,
      lastError: d.get("error") ?? null,
      leaseOwner: null,
      leaseUntil: null,
      runStartedAt: null,
      notBefore: null,
      finishedAt: null,
      updatedAt: now,
      pendingSince: now,
    });
    const refOf = (d: (typeof snap.docs)[number]): ItemRef => ({
      batchId,
      itemId: d.get("itemId") as string,
      generation,
    });
    try {
      await this.commitFenced(batchId, decide, (wb) => {
        for (const d of snap.docs) wb.update(d.ref, resetOf(d), { lastUpdateTime: d.updateTime });
      });
      this.ops.writes += snap.size;
      return snap.docs.map(refOf);
    } catch (err) {
      if (!isFailedPrecondition(err)) throw err;
    }
    const refs: ItemRef[] = [];
    for (const d of snap.docs) {
      try {
        await this.commitFenced(batchId, decide, (wb) => {
          wb.update(d.ref, resetOf(d), { lastUpdateTime: d.updateTime });
        });
        this.ops.writes++;
        refs.push(refOf(d));
      } catch (err) {
        if (!isFailedPrecondition(err)) throw err;
      }
    }
    return refs;
  }
}
