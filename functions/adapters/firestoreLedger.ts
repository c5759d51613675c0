// The Firestore ledger: the single source of truth (DESIGN.md §2.1).
//
// Shape, and the Firestore limits it follows from:
// - `batches/{batchId}/items/{itemId}`: one document per item, so every item transition is a
//   transaction on its own document. Nothing per item ever writes the batch document: a single
//   document sustains ~1 write/s, and the emulator aborts concurrent transactions on one document
//   ("lock timeout") well before 50. Progress counts are therefore derived with count()
//   aggregations, never kept in a hot counter.
// - The batch document is written per chunk of submission (cursor, at most about once a second)
//   and per lifecycle step, never per item.
// - An item holds its payload, step outputs and result; each is size-capped (core/limits.ts) so
//   the document stays far below 1 MiB.
// - Lease fields are flat (`leaseOwner`, `leaseUntil`) so the reconciler's collection-group query
//   on (status, leaseUntil) is served by one composite index (firestoreIndexes.ts).
import {
  type CollectionReference,
  type DocumentReference,
  type DocumentSnapshot,
  FieldPath,
  type Firestore,
  type Query,
  Timestamp,
  type Transaction,
  type WriteBatch,
} from "@google-cloud/firestore";
import {
  exportBackoffMs,
  type FenceDecision,
  type FinalizationClaim,
  mayBeginRetry,
  mayClaimFinalization,
  mayCreateItems,
  mayFinishBatch,
  mayReExport,
  mayRequestTermination,
  mayResetItems,
} from "../core/batchFence";
import { BatchFencedError } from "../core/errors";
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
} from "../core/itemTransitions";
import type {
  Batch,
  BatchCounts,
  BatchStatus,
  BatchSummary,
  ErrorKind,
  Item,
  ItemError,
  ItemStatus,
  NewBatch,
  NewItem,
  ResultRow,
} from "../core/model";
import { errorKinds } from "../core/model";
import type {
  CreateBatchResult,
  ItemRef,
  LeaseResult,
  Ledger,
  LedgerOpCounts,
  Page,
  RedriveResult,
  TransitionResult,
} from "../core/ports";
import {
  batchesCollection,
  defaultRetentionDays,
  itemsCollection,
  reconcilerStateCollection,
} from "./firestoreIndexes";

export interface FirestoreLedgerOptions {
  /** Documents expire (TTL policy) this many days after creation. */
  retentionDays?: number;
  /** Transaction attempts under contention (the client's default of 5 is too few for hot items). */
  maxTransactionAttempts?: number;
  /**
   * Fault injection for the chaos suite (F1): fail this fraction of completion writes. Refused in
   * production; see functions/faults.ts.
   */
  failCompletionRate?: number;
  /**
   * Fault injection for the chaos suite (F1 after the commit): this fraction of completion writes
   * commit, then throw to the caller, as when the commit's answer is lost. Refused in production;
   * see functions/faults.ts.
   */
  failAfterCompletionRate?: number;
  /**
   * Fault injection for the chaos suite (F3, F5): this fraction of `hasLiveItems` checks answers
   * "yes" without reading, so the caller never starts the event-driven finalization. Refused in
   * production; see functions/faults.ts.
   */
  skipFinalizeRate?: number;
}

interface ItemDoc {
  batchId: string;
  itemId: string;
  seq: number;
  generation: number;
  status: ItemStatus;
  payload: unknown;
  attempt: number;
  leaseOwner: string | null;
  leaseUntil: number | null;
  heartbeatAt: number | null;
  steps: Item["steps"];
  result: unknown;
  error: ItemError | null;
  lastError: ItemError | null;
  createdAt: number;
  updatedAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  /** When the item last became pending and publishable; null while its batch is blocked. */
  pendingSince: number | null;
  expireAt: Timestamp;
}

type BatchDoc = Omit<Batch, never> & { expireAt: Timestamp };

const encodeToken = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
function decodeToken<T>(token: string | undefined): T | undefined {
  if (!token) return undefined;
  try {
    return JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as T;
  } catch {
    return undefined;
  }
}

export class InvalidPageTokenError extends Error {}

export class FirestoreLedger implements Ledger {
  readonly ops: LedgerOpCounts = { reads: 0, writes: 0, transactions: 0, queries: 0, aggregations: 0 };
  private readonly retentionMs: number;
  private readonly maxAttempts: number;
  private readonly failCompletionRate: number;
  private readonly failAfterCompletionRate: number;
  private readonly skipFinalizeRate: number;

  constructor(
    private readonly db: Firestore,
    opts: FirestoreLedgerOptions = {},
  ) {
    this.retentionMs = (opts.retentionDays ?? defaultRetentionDays) * 86_400_000;
    this.maxAttempts = opts.maxTransactionAttempts ?? 25;
    this.failCompletionRate = opts.failCompletionRate ?? 0;
    this.failAfterCompletionRate = opts.failAfterCompletionRate ?? 0;
    this.skipFinalizeRate = opts.skipFinalizeRate ?? 0;
  }

  // --- references ------------------------------------------------------------------------------
  private batchRef(batchId: string): DocumentReference {
    return this.db.collection(batchesCollection).doc(batchId);
  }
  private items(batchId: string): CollectionReference {
    return this.batchRef(batchId).collection(itemsCollection);
  }
  private itemRef(batchId: string, itemId: string): DocumentReference {
    return this.items(batchId).doc(itemId);
  }
  private expireAt(now: number): Timestamp {
    return Timestamp.fromMillis(now + this.retentionMs);
  }
  private tx<T>(fn: (tx: Transaction) => Promise<T>): Promise<T> {
    this.ops.transactions++;
    return this.db.runTransaction(fn, { maxAttempts: this.maxAttempts });
  }

  private static toBatch(snap: DocumentSnapshot): Batch | null {
    if (!snap.exists) return null;
    const { expireAt: _expireAt, ...rest } = snap.data() as BatchDoc;
    return rest as Batch;
  }
  private static toItem(snap: DocumentSnapshot): Item | null {
    if (!snap.exists) return null;
    const d = snap.data() as ItemDoc;
    return {
      batchId: d.batchId,
      itemId: d.itemId,
      seq: d.seq,
      generation: d.generation,
      status: d.status,
      payload: d.payload ?? null,
      attempt: d.attempt,
      lease: d.leaseOwner && d.leaseUntil !== null ? { owner: d.leaseOwner, until: d.leaseUntil } : null,
      heartbeatAt: d.heartbeatAt,
      steps: d.steps ?? {},
      result: d.result ?? null,
      error: d.error ?? null,
      lastError: d.lastError ?? null,
      createdAt: d.createdAt,
      updatedAt: d.updatedAt,
      startedAt: d.startedAt,
      finishedAt: d.finishedAt,
    };
  }

  // --- batches ---------------------------------------------------------------------------------
  async createBatch(nb: NewBatch, now: number): Promise<CreateBatchResult> {
    const ref = this.batchRef(nb.batchId);
    return this.tx(async (tx) => {
      const snap = await tx.get(ref);
      this.ops.reads++;
      const existing = FirestoreLedger.toBatch(snap);
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
    return FirestoreLedger.toBatch(await this.batchRef(batchId).get());
  }

  async getBatches(batchIds: string[]): Promise<(Batch | null)[]> {
    if (batchIds.length === 0) return [];
    this.ops.reads += batchIds.length;
    const snaps = await this.db.getAll(...batchIds.map((id) => this.batchRef(id)));
    return snaps.map((s) => FirestoreLedger.toBatch(s));
  }

  async listBatches(opts: { status?: BatchStatus; limit: number; pageToken?: string }): Promise<Page<Batch>> {
    let q: Query = this.db.collection(batchesCollection);
    if (opts.status) q = q.where("status", "==", opts.status);
    q = q.orderBy("createdAt", "desc").orderBy("batchId", "desc");
    const after = decodeToken<[number, string]>(opts.pageToken);
    if (opts.pageToken && !after) throw new InvalidPageTokenError("pageToken is not valid");
    if (after) q = q.startAfter(after[0], after[1]);
    const snap = await q.limit(opts.limit + 1).get();
    this.ops.queries++;
    this.ops.reads += snap.size;
    const all = snap.docs.map((d) => FirestoreLedger.toBatch(d)!);
    const entries = all.slice(0, opts.limit);
    const last = entries[entries.length - 1];
    return {
      entries,
      nextPageToken:
        all.length > opts.limit && last ? encodeToken([last.createdAt, last.batchId]) : undefined,
    };
  }

  async findBatches(opts: { status: BatchStatus; progressBefore?: number; limit: number }): Promise<Batch[]> {
    let q: Query = this.db.collection(batchesCollection).where("status", "==", opts.status);
    if (opts.progressBefore !== undefined) q = q.where("progressAt", "<", opts.progressBefore);
    const snap = await q.orderBy("progressAt").limit(opts.limit).get();
    this.ops.queries++;
    this.ops.reads += snap.size;
    return snap.docs.map((d) => FirestoreLedger.toBatch(d)!);
  }

  // --- submission ------------------------------------------------------------------------------
  async getItemsBySeq(batchId: string, fromSeq: number, count: number): Promise<Item[]> {
    if (count <= 0) return [];
    const snap = await this.items(batchId)
      .where("seq", ">=", fromSeq)
      .where("seq", "<", fromSeq + count)
      .orderBy("seq")
      .get();
    this.ops.queries++;
    this.ops.reads += snap.size;
    return snap.docs.map((d) => FirestoreLedger.toItem(d)!);
  }

  async appendItems(
    batchId: string,
    fromSeq: number,
    items: NewItem[],
    now: number,
    opts: { publishable: boolean; deferReceived?: boolean },
  ): Promise<{ alreadyExisting: string[] }> {
    const alreadyExisting: string[] = [];
    if (items.length > 0) {
      const expireAt = this.expireAt(now);
      const docs = items.map((it, i) => {
        const doc: ItemDoc = {
          batchId,
          itemId: it.itemId,
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
            await this.commitFenced(batchId, mayCreateItems, (wb) => {
              for (const d of group) wb.create(d.ref, d.doc);
            });
          } catch (err) {
            if (!isAlreadyExists(err)) throw err;
            alreadyExisting.push(...(await this.createEach(batchId, group)));
          }
        }),
      );
      this.ops.writes += items.length;
    }
    if (opts.deferReceived) return { alreadyExisting };
    const to = fromSeq + items.length;
    await this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = FirestoreLedger.toBatch(await tx.get(ref));
      this.ops.reads++;
      if (!b) throw new Error(`batch ${batchId} not found`);
      if (to > b.received) {
        tx.update(ref, { received: to, progressAt: now, updatedAt: now });
        this.ops.writes++;
      }
    });
    return { alreadyExisting };
  }

  /**
   * Creates each document in its own fenced commit: the slow path of appendItems, taken only when a
   * group met documents that already exist (a repeated or racing submission). Returns those ids.
   */
  private async createEach(
    batchId: string,
    group: Array<{ ref: DocumentReference; doc: ItemDoc }>,
  ): Promise<string[]> {
    const existing: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < group.length) {
        const d = group[next++]!;
        try {
          await this.commitFenced(batchId, mayCreateItems, (wb) => {
            wb.create(d.ref, d.doc);
          });
        } catch (err) {
          if (!isAlreadyExists(err)) throw err;
          existing.push(d.ref.id);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(16, group.length) }, worker));
    return existing;
  }

  // --- the batch fence (core/batchFence.ts) ------------------------------------------------------
  /** The last batch snapshot each fenced writer decided on, by batch id (a fence check needs its update time). */
  private readonly fences = new Map<string, { batch: Batch; updateTime: Timestamp }>();
  private static readonly maxFencesRemembered = 1_000;

  private async readFence(
    batchId: string,
    decide: (b: Batch) => FenceDecision,
  ): Promise<{ batch: Batch; updateTime: Timestamp }> {
    const snap = await this.batchRef(batchId).get();
    this.ops.reads++;
    const batch = FirestoreLedger.toBatch(snap);
    if (!batch) throw new BatchFencedError(batchId, `batch ${batchId} does not exist`);
    const decision = decide(batch);
    if (!decision.ok) {
      this.fences.delete(batchId);
      throw new BatchFencedError(batchId, decision.reason);
    }
    const fence = { batch, updateTime: snap.updateTime! };
    this.fences.delete(batchId);
    this.fences.set(batchId, fence);
    if (this.fences.size > FirestoreLedger.maxFencesRemembered) {
      const oldest = this.fences.keys().next().value;
      if (oldest !== undefined) this.fences.delete(oldest);
    }
    return fence;
  }

  /**
   * Commits `build`'s writes atomically with the batch fence: a write of the batch document that
   * sets `generation` to the value read, preconditioned on the read's update time. Unchanged, it
   * changes nothing (Firestore keeps the update time, so concurrent fenced commits of one batch do
   * not conflict); changed, the commit fails and is decided again on a fresh read of the batch —
   * a refusal throws BatchFencedError with nothing written. A FAILED_PRECONDITION of one of
   * `build`'s own writes (the fence unchanged) is rethrown to the caller.
   */
  private async commitFenced(
    batchId: string,
    decide: (b: Batch) => FenceDecision,
    build: (wb: WriteBatch) => void,
  ): Promise<void> {
    let fence = this.fences.get(batchId);
    if (!fence || !decide(fence.batch).ok) fence = await this.readFence(batchId, decide);
    for (let round = 1; ; round++) {
      const wb = this.db.batch();
      wb.update(
        this.batchRef(batchId),
        { generation: fence.batch.generation },
        { lastUpdateTime: fence.updateTime },
      );
      build(wb);
      try {
        await wb.commit();
        this.ops.writes++; // the fence check (per commit, not per item)
        return;
      } catch (err) {
        if (!isFailedPrecondition(err)) throw err;
        const fresh = await this.readFence(batchId, decide);
        if (fresh.updateTime.isEqual(fence.updateTime) || round >= this.maxAttempts) throw err;
        fence = fresh;
      }
    }
  }

  async readItemRefs(batchId: string, fromSeq: number, count: number): Promise<ItemRef[]> {
    if (count <= 0) return [];
    const snap = await this.items(batchId)
      .where("seq", ">=", fromSeq)
      .orderBy("seq")
      .limit(count)
      .select("itemId", "generation")
      .get();
    this.ops.queries++;
    this.ops.reads += snap.size;
    return snap.docs.map((d) => ({ batchId, itemId: d.get("itemId"), generation: d.get("generation") }));
  }

  async advanceCursor(batchId: string, cursor: number, now: number, received?: number): Promise<Batch> {
    return this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = FirestoreLedger.toBatch(await tx.get(ref));
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

  async recordProgress(batchId: string, now: number): Promise<void> {
    await this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = FirestoreLedger.toBatch(await tx.get(ref));
      this.ops.reads++;
      if (!b || b.status !== "submitting" || b.progressAt >= now) return;
      tx.update(ref, { progressAt: now, updatedAt: now });
      this.ops.writes++;
    });
  }

  async markSubmitted(batchId: string, total: number, now: number): Promise<boolean> {
    return this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = FirestoreLedger.toBatch(await tx.get(ref));
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

  // --- items -----------------------------------------------------------------------------------
  async getItem(batchId: string, itemId: string): Promise<Item | null> {
    this.ops.reads++;
    return FirestoreLedger.toItem(await this.itemRef(batchId, itemId).get());
  }

  async listItems(
    batchId: string,
    opts: { status?: ItemStatus; limit: number; pageToken?: string },
  ): Promise<Page<Item>> {
    let q: Query = this.items(batchId);
    if (opts.status) q = q.where("status", "==", opts.status);
    q = q.orderBy("seq");
    const after = decodeToken<number>(opts.pageToken);
    if (opts.pageToken && typeof after !== "number")
      throw new InvalidPageTokenError("pageToken is not valid");
    if (after !== undefined) q = q.startAfter(after);
    const snap = await q.limit(opts.limit + 1).get();
    this.ops.queries++;
    this.ops.reads += snap.size;
    const all = snap.docs.map((d) => FirestoreLedger.toItem(d)!);
    const entries = all.slice(0, opts.limit);
    const last = entries[entries.length - 1];
    return { entries, nextPageToken: all.length > opts.limit && last ? encodeToken(last.seq) : undefined };
  }

  /** Reads an item inside a transaction; the shared first step of every item transition. */
  private async readItem(
    tx: Transaction,
    ref: ItemRef,
  ): Promise<{ doc: DocumentReference; item: Item | null }> {
    const doc = this.itemRef(ref.batchId, ref.itemId);
    const item = FirestoreLedger.toItem(await tx.get(doc));
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
      const item = FirestoreLedger.toItem(snap);
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

  // --- leases this process took, with the write time of its last write to the item -------------
  private readonly leasesHeld = new Map<
    string,
    { owner: string; generation: number; writeTime: Timestamp; item: Item }
  >();
  private static readonly maxLeasesRemembered = 10_000;
  private static leaseKey(ref: ItemRef): string {
    return `${ref.batchId}\u0000${ref.itemId}`;
  }
  private rememberLease(ref: ItemRef, owner: string, writeTime: Timestamp, item: Item): void {
    const key = FirestoreLedger.leaseKey(ref);
    this.leasesHeld.delete(key);
    this.leasesHeld.set(key, { owner, generation: ref.generation, writeTime, item });
    // Leases of deliveries that never completed (lost lease, crash of the run) must not pile up.
    if (this.leasesHeld.size > FirestoreLedger.maxLeasesRemembered) {
      const oldest = this.leasesHeld.keys().next().value;
      if (oldest !== undefined) this.leasesHeld.delete(oldest);
    }
  }
  /** Any other write to the item changes its update time: the remembered one is no longer current. */
  private forgetLease(ref: ItemRef): void {
    this.leasesHeld.delete(FirestoreLedger.leaseKey(ref));
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
    const key = FirestoreLedger.leaseKey(ref);
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
        const current = FirestoreLedger.toItem(snap);
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
    const known = this.leasesHeld.get(FirestoreLedger.leaseKey(ref));
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
    opts: { refundAttempt?: boolean } = {},
  ): Promise<TransitionResult> {
    this.forgetLease(ref);
    return this.tx(async (tx) => {
      const { doc, item } = await this.readItem(tx, ref);
      const decision = decideRelease(item, ref, owner, lastError, now, opts);
      if (decision.write) this.write(tx, doc, decision.write);
      return decision.result;
    });
  }

  async findExpiredLeases(now: number, limit: number): Promise<ItemRef[]> {
    const snap = await this.db
      .collectionGroup(itemsCollection)
      .where("status", "==", "running")
      .where("leaseUntil", "<", now)
      .orderBy("leaseUntil")
      .limit(limit)
      .select("batchId", "itemId", "generation")
      .get();
    this.ops.queries++;
    this.ops.reads += snap.size;
    return snap.docs.map((d) => ({
      batchId: d.get("batchId"),
      itemId: d.get("itemId"),
      generation: d.get("generation"),
    }));
  }

  async redriveItem(ref: ItemRef, maxAttempts: number, now: number): Promise<RedriveResult> {
    return this.tx(async (tx) => {
      const { doc, item } = await this.readItem(tx, ref);
      const decision = decideRedrive(item, ref, maxAttempts, now);
      if (decision.write) this.write(tx, doc, decision.write);
      return decision.result;
    });
  }

  async findStalePending(before: number, limit: number): Promise<ItemRef[]> {
    const snap = await this.db
      .collectionGroup(itemsCollection)
      .where("status", "==", "pending")
      .where("pendingSince", "<", before)
      .orderBy("pendingSince")
      .limit(limit)
      .select("batchId", "itemId", "generation")
      .get();
    this.ops.queries++;
    this.ops.reads += snap.size;
    return snap.docs.map((d) => ({
      batchId: d.get("batchId"),
      itemId: d.get("itemId"),
      generation: d.get("generation"),
    }));
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

  // --- progress and finalization ---------------------------------------------------------------
  async countItems(batchId: string): Promise<BatchCounts> {
    const count = async (status: ItemStatus) => {
      const snap = await this.items(batchId).where("status", "==", status).count().get();
      this.ops.aggregations++;
      return snap.data().count;
    };
    const [pending, running, succeeded, failed] = await Promise.all([
      count("pending"),
      count("running"),
      count("succeeded"),
      count("failed"),
    ]);
    return { total: pending + running + succeeded + failed, pending, running, succeeded, failed };
  }

  async countFailedByKind(batchId: string): Promise<Partial<Record<ErrorKind, number>>> {
    const out: Partial<Record<ErrorKind, number>> = {};
    await Promise.all(
      errorKinds.map(async (kind) => {
        const snap = await this.items(batchId)
          .where("status", "==", "failed")
          .where("error.kind", "==", kind)
          .count()
          .get();
        this.ops.aggregations++;
        const n = snap.data().count;
        if (n > 0) out[kind] = n;
      }),
    );
    return out;
  }

  async countFinishedBetween(batchId: string, edges: number[]): Promise<number[]> {
    // A range on one field is served by Firestore's automatic single-field index.
    return Promise.all(
      edges.slice(1).map(async (to, i) => {
        const snap = await this.items(batchId)
          .where("finishedAt", ">=", edges[i]!)
          .where("finishedAt", "<", to)
          .count()
          .get();
        this.ops.aggregations++;
        return snap.data().count;
      }),
    );
  }

  async countSucceeded(batchId: string, generation: number): Promise<number> {
    const snap = await this.items(batchId)
      .where("status", "==", "succeeded")
      .where("generation", "==", generation)
      .count()
      .get();
    this.ops.aggregations++;
    return snap.data().count;
  }

  async hasLiveItems(batchId: string): Promise<boolean> {
    if (this.skipFinalizeRate > 0 && Math.random() < this.skipFinalizeRate) return true;
    return this.liveItemExists(batchId);
  }

  /** Is any item of the batch pending or running? (hasLiveItems without the fault injection.) */
  private async liveItemExists(batchId: string): Promise<boolean> {
    const snap = await this.items(batchId)
      .where("status", "in", ["pending", "running"])
      .limit(1)
      .select()
      .get();
    this.ops.queries++;
    this.ops.reads += Math.max(1, snap.size);
    return !snap.empty;
  }

  async releaseFinalizing(batchId: string, claim: number): Promise<void> {
    await this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = FirestoreLedger.toBatch(await tx.get(ref));
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
      const b = FirestoreLedger.toBatch(await tx.get(ref));
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
      const b = FirestoreLedger.toBatch(await tx.get(ref));
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
      const b = FirestoreLedger.toBatch(await tx.get(ref));
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
      const b = FirestoreLedger.toBatch(snap);
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
      const b = FirestoreLedger.toBatch(await tx.get(ref));
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

  async *streamResults(batchId: string, generation: number, pageSize: number): AsyncIterable<ResultRow[]> {
    let after: number | undefined;
    for (;;) {
      let q = this.items(batchId)
        .where("status", "==", "succeeded")
        .where("generation", "==", generation)
        .orderBy("seq")
        .select("itemId", "seq", "result", "finishedAt", "attempt");
      if (after !== undefined) q = q.startAfter(after);
      const snap = await q.limit(pageSize).get();
      this.ops.queries++;
      this.ops.reads += snap.size;
      if (snap.empty) return;
      yield snap.docs.map((d) => ({
        batchId,
        itemId: d.get("itemId"),
        generation,
        result: d.get("result") ?? null,
        finishedAt: d.get("finishedAt"),
        attempts: d.get("attempt"),
      }));
      after = snap.docs[snap.docs.length - 1]!.get("seq");
      if (snap.size < pageSize) return;
    }
  }

  // --- dependencies and operator actions -----------------------------------------------------------
  async unblockBatch(batchId: string, now: number): Promise<boolean> {
    return this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = FirestoreLedger.toBatch(await tx.get(ref));
      this.ops.reads++;
      if (!b || b.status !== "blocked" || b.terminateAs) return false;
      tx.update(ref, { status: "submitting", progressAt: now, updatedAt: now });
      this.ops.writes++;
      return true;
    });
  }

  async findDependents(batchId: string, limit: number): Promise<Batch[]> {
    // array-contains is served by the automatic single-field (array) index on dependsOn; the
    // status is checked here rather than in the query, so no composite index is needed.
    const snap = await this.db
      .collection(batchesCollection)
      .where("dependsOn", "array-contains", batchId)
      .limit(limit)
      .get();
    this.ops.queries++;
    this.ops.reads += snap.size;
    return snap.docs.map((d) => FirestoreLedger.toBatch(d)!).filter((b) => b.status === "blocked");
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
      const b = FirestoreLedger.toBatch(await tx.get(ref));
      this.ops.reads++;
      if (!b || !mayRequestTermination(b).ok) return null;
      if (b.terminateAs) return b;
      tx.update(ref, { terminateAs: as, reason, updatedAt: now });
      this.ops.writes++;
      return { ...b, terminateAs: as, reason, updatedAt: now };
    });
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

  async beginRetry(batchId: string, now: number): Promise<Batch> {
    return this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = FirestoreLedger.toBatch(await tx.get(ref));
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

  async markRetrySubmitted(batchId: string, now: number): Promise<boolean> {
    return this.tx(async (tx) => {
      const ref = this.batchRef(batchId);
      const b = FirestoreLedger.toBatch(await tx.get(ref));
      this.ops.reads++;
      if (!b || b.status !== "submitting") return false;
      tx.update(ref, { status: "running", summary: null, progressAt: now, updatedAt: now });
      this.ops.writes++;
      return true;
    });
  }
}

export class RetryRefusedError extends Error {}

function isFailedPrecondition(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === 9; // gRPC FAILED_PRECONDITION
}

function isAlreadyExists(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === 6; // gRPC ALREADY_EXISTS
}

/** Firestore's caps per request: 500 writes, 10 MiB. Groups stay below both (payloads are the bulk). */
const maxWritesPerCommit = 500;
const maxBytesPerCommit = 8 * 1024 * 1024;

function commitGroups<T extends { doc: { payload: unknown } }>(docs: T[]): T[][] {
  const groups: T[][] = [];
  let group: T[] = [];
  let bytes = 0;
  for (const d of docs) {
    const size = 1024 + Buffer.byteLength(JSON.stringify(d.doc.payload) ?? "");
    if (group.length > 0 && (group.length >= maxWritesPerCommit || bytes + size > maxBytesPerCommit)) {
      groups.push(group);
      group = [];
      bytes = 0;
    }
    group.push(d);
    bytes += size;
  }
  if (group.length > 0) groups.push(group);
  return groups;
}
