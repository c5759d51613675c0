// The ledger over the in-memory store (memoryStore.ts): FirestoreLedger
// (functions/adapters/firestoreLedger.ts) method by method — the same documents, the same reads,
// preconditions, transactions and batched writes, in the same order — applying the same pure
// decisions (functions/core/batchFence.ts, functions/core/itemTransitions.ts). The simulator runs it
// under its scheduler; the ledger contract suite (test/ledgerContract/) runs it and FirestoreLedger
// through the same assertions, so the two cannot drift apart unnoticed.
//
// `{ fence: false }` drops the fence write (the no-op batch-document write preconditioned on the
// read that admitted an item-creating or item-resetting commit) and nothing else, so the simulator
// can show what the fence prevents (issue #15 items 1 and 2).
import { allItemShards, itemKey } from "../../functions/adapters/firestore/layout";
import { batchPageOf, decodePageToken, encodeToken } from "../../functions/adapters/firestore/storage";
import { RetryRefusedError } from "../../functions/adapters/firestoreLedger";
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
} from "../../functions/core/batchFence";
import { decideBeginAppend } from "../../functions/core/concurrentAppends";
import { BatchFencedError } from "../../functions/core/errors";
import {
  completion,
  decideComplete,
  decideFail,
  decideLease,
  decideRedrive,
  decideRelease,
  heartbeatWrite,
  holdsLease,
} from "../../functions/core/itemTransitions";
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
} from "../../functions/core/model";
import { errorKinds } from "../../functions/core/model";
import type {
  CreateBatchResult,
  FindBatchesOptions,
  ItemRef,
  LeaseResult,
  Ledger,
  LedgerOpCounts,
  ListBatchesOptions,
  Page,
  RedriveResult,
  ReleaseOptions,
  TransitionResult,
} from "../../functions/core/ports";
import {
  type DocData,
  fieldsOf,
  type MemoryStore,
  type QuerySpec,
  type Snapshot,
  StatusCode,
  StoreClient,
  type StoreTransaction,
  type Write,
} from "./memoryStore";

export interface MemoryLedgerOptions {
  /** Without the fence write (the simulator's control experiment). Default true. */
  fence?: boolean;
  /**
   * False: countItemsAt never reports more items than positions, so writers never see two items at
   * one position (the control experiment for issue #15 item 10). Default true.
   */
  countPositions?: boolean;
  /** Transaction and precondition retries (FirestoreLedger's default: 25). */
  maxTransactionAttempts?: number;
  retentionDays?: number;
}

export const batchesCollection = "batches";
export const itemsCollection = "items";
export const reconcilerStateCollection = "reconcilerState";
export const batchPath = (batchId: string) => `${batchesCollection}/${batchId}`;
/** FirestoreLedger's item document: its id spreads across the key space (firestore/layout.ts itemKey). */
export const itemPath = (batchId: string, itemId: string) =>
  `${batchesCollection}/${batchId}/${itemsCollection}/${itemKey(batchId, itemId).docId}`;
/** Every shard, as FirestoreLedger's `in` filter on the sharded indexes. */
const everyShard: ["shard", "in", readonly number[]] = ["shard", "in", allItemShards];

/** The stored item document (FirestoreLedger's ItemDoc; `expireAt` as epoch ms). */
export interface ItemDoc {
  batchId: string;
  itemId: string;
  shard: number;
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
  runStartedAt?: number | null;
  notBefore?: number | null;
  pendingSince: number | null;
  expireAt: number;
}

export function toBatch(data: DocData | undefined): Batch | null {
  if (!data) return null;
  const { expireAt: _expireAt, ...rest } = data as unknown as Batch & { expireAt: number };
  return rest as Batch;
}

export function toItem(data: DocData | undefined): Item | null {
  if (!data) return null;
  const d = data as unknown as ItemDoc;
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
    runStartedAt: d.runStartedAt ?? null,
    notBefore: d.notBefore ?? null,
  };
}

const isFailedPrecondition = (err: unknown) =>
  (err as { code?: unknown } | null)?.code === StatusCode.FAILED_PRECONDITION;
const isAlreadyExists = (err: unknown) =>
  (err as { code?: unknown } | null)?.code === StatusCode.ALREADY_EXISTS;

const update = (path: string, patch: object, lastUpdateTime?: number): Write => ({
  op: "update",
  path,
  fields: fieldsOf(patch as Record<string, unknown>),
  ...(lastUpdateTime === undefined ? {} : { lastUpdateTime }),
});

export class MemoryLedger implements Ledger {
  readonly ops: LedgerOpCounts = { reads: 0, writes: 0, transactions: 0, queries: 0, aggregations: 0 };
  readonly db: StoreClient;
  private readonly fence: boolean;
  private readonly countPositions: boolean;
  private readonly maxAttempts: number;
  private readonly retentionMs: number;

  constructor(store: MemoryStore | StoreClient, opts: MemoryLedgerOptions = {}) {
    this.db = store instanceof StoreClient ? store : new StoreClient(store);
    this.fence = opts.fence ?? true;
    this.countPositions = opts.countPositions ?? true;
    this.maxAttempts = opts.maxTransactionAttempts ?? 25;
    this.retentionMs = (opts.retentionDays ?? 90) * 86_400_000;
  }

  private items(batchId: string): Pick<QuerySpec, "collection" | "parent"> {
    return { parent: batchPath(batchId), collection: itemsCollection };
  }
  private tx<T>(fn: (tx: StoreTransaction) => Promise<T>): Promise<T> {
    this.ops.transactions++;
    return this.db.runTransaction(fn, { maxAttempts: this.maxAttempts });
  }

  // --- batches ---------------------------------------------------------------------------------
  async createBatch(nb: NewBatch, now: number): Promise<CreateBatchResult> {
    const path = batchPath(nb.batchId);
    return this.tx(async (tx) => {
      const snap = await tx.get(path);
      this.ops.reads++;
      const existing = toBatch(snap.data);
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
      tx.create(path, { ...batch, expireAt: now + this.retentionMs });
      this.ops.writes++;
      return { kind: "created", batch };
    });
  }

  async getBatch(batchId: string): Promise<Batch | null> {
    this.ops.reads++;
    return toBatch((await this.db.get(batchPath(batchId))).data);
  }

  async getBatches(batchIds: string[]): Promise<(Batch | null)[]> {
    if (batchIds.length === 0) return [];
    this.ops.reads += batchIds.length;
    const snaps = await this.db.getAll(batchIds.map(batchPath));
    return snaps.map((s) => toBatch(s.data));
  }

  async listBatches(opts: ListBatchesOptions): Promise<Page<Batch>> {
    const after = decodePageToken(opts.pageToken);
    const direction = opts.oldestFirst ? "asc" : "desc";
    const snap = await this.db.query({
      collection: batchesCollection,
      where: opts.status ? [["status", "==", opts.status]] : [],
      orderBy: [
        ["createdAt", direction],
        ["batchId", direction],
      ],
      startAfter: after ? [after[0], after[1]] : undefined,
      limit: opts.limit + 1,
    });
    this.ops.queries++;
    this.ops.reads += snap.length;
    return batchPageOf(
      snap.map((d) => toBatch(d.data)!),
      opts.limit,
      (b) => b.createdAt,
    );
  }

  async findBatches(opts: FindBatchesOptions): Promise<Page<Batch>> {
    const after = decodePageToken(opts.pageToken);
    const snap = await this.db.query({
      collection: batchesCollection,
      where: [
        ["status", "==", opts.status],
        ...(opts.progressBefore !== undefined ? [["progressAt", "<", opts.progressBefore] as const] : []),
      ],
      orderBy: [
        ["progressAt", "asc"],
        ["__name__", "asc"],
      ],
      startAfter: after ? [after[0], batchPath(after[1])] : undefined,
      limit: opts.limit + 1,
    });
    this.ops.queries++;
    this.ops.reads += snap.length;
    return batchPageOf(
      snap.map((d) => toBatch(d.data)!),
      opts.limit,
      (b) => b.progressAt,
    );
  }

  // --- submission ------------------------------------------------------------------------------
  async getItemsBySeq(batchId: string, fromSeq: number, count: number): Promise<Item[]> {
    if (count <= 0) return [];
    const snap = await this.db.query({
      ...this.items(batchId),
      where: [everyShard, ["seq", ">=", fromSeq], ["seq", "<", fromSeq + count]],
      orderBy: [["seq", "asc"]],
    });
    this.ops.queries++;
    this.ops.reads += snap.length;
    return snap.map((d) => toItem(d.data)!);
  }

  async joinSubmission(batchId: string, now: number): Promise<number> {
    return this.tx(async (tx) => {
      const path = batchPath(batchId);
      const b = toBatch((await tx.get(path)).data);
      this.ops.reads++;
      if (!b) throw new Error(`batch ${batchId} not found`);
      const joinedWriters = (b.joinedWriters ?? 0) + 1;
      tx.update(path, { joinedWriters, updatedAt: now });
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
      const path = batchPath(batchId);
      const b = toBatch((await tx.get(path)).data);
      this.ops.reads++;
      if (!b) throw new Error(`batch ${batchId} not found`);
      const decision = decideBeginAppend(b, now, until);
      tx.update(path, { ...decision.update, updatedAt: now });
      this.ops.writes++;
      return decision.answer;
    });
  }

  async endAppend(batchId: string, now: number): Promise<void> {
    await this.tx(async (tx) => {
      const path = batchPath(batchId);
      const b = toBatch((await tx.get(path)).data);
      this.ops.reads++;
      if (!b || !(b.appendsInFlight ?? 0)) return;
      tx.update(path, { appendsInFlight: (b.appendsInFlight ?? 0) - 1, updatedAt: now });
      this.ops.writes++;
    });
  }

  async countItemsAt(batchId: string, fromSeq: number, count: number): Promise<number> {
    if (count <= 0) return 0;
    const n = await this.db.count({
      ...this.items(batchId),
      where: [everyShard, ["seq", ">=", fromSeq], ["seq", "<", fromSeq + count]],
    });
    this.ops.aggregations++;
    return this.countPositions ? n : Math.min(n, count);
  }

  async withdrawItems(
    batchId: string,
    items: Array<{ itemId: string; seq: number }>,
    now: number,
  ): Promise<string[]> {
    if (items.length === 0) return [];
    // As FirestoreLedger: one transaction, each item removed only while untouched, `received`
    // lowered below the first position left empty unless the batch was sealed.
    return this.tx(async (tx) => {
      const path = batchPath(batchId);
      const b = toBatch((await tx.get(path)).data);
      this.ops.reads += 1 + items.length;
      const removed: Array<{ itemId: string; seq: number }> = [];
      for (const want of items) {
        const itemDoc = itemPath(batchId, want.itemId);
        const item = toItem((await tx.get(itemDoc)).data);
        if (!item || item.seq !== want.seq || item.status !== "pending" || item.attempt !== 0) continue;
        if (item.generation !== 1) continue;
        tx.delete(itemDoc);
        removed.push(want);
      }
      const lowest = Math.min(...removed.map((r) => r.seq));
      if (b && !b.submissionComplete && removed.length > 0 && b.received > lowest) {
        tx.update(path, { received: lowest, updatedAt: now });
        this.ops.writes++;
      }
      this.ops.writes += removed.length;
      return removed.map((r) => r.itemId);
    });
  }

  async appendItems(
    batchId: string,
    fromSeq: number,
    items: NewItem[],
    now: number,
    opts: { publishable: boolean; deferReceived?: boolean },
  ): Promise<{ alreadyExisting: string[]; joinedWriters: number }> {
    const alreadyExisting: string[] = [];
    let joinedWriters = 0;
    const saw = (b: Batch) => {
      joinedWriters = Math.max(joinedWriters, b.joinedWriters ?? 0);
    };
    if (items.length > 0) {
      const expireAt = now + this.retentionMs;
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
        return { path: itemPath(batchId, it.itemId), doc };
      });
      // As FirestoreLedger: one fenced create-only commit per group; a group that meets an existing
      // document is created item by item, each fenced, reporting what existed.
      await Promise.all(
        commitGroups(docs).map(async (group) => {
          try {
            saw(
              await this.commitFenced(batchId, mayCreateItems, (writes) => {
                for (const d of group) writes.push({ op: "create", path: d.path, data: { ...d.doc } });
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
      const path = batchPath(batchId);
      const b = toBatch((await tx.get(path)).data);
      this.ops.reads++;
      if (!b) throw new Error(`batch ${batchId} not found`);
      if (to > b.received) {
        tx.update(path, { received: to, progressAt: now, updatedAt: now });
        this.ops.writes++;
      }
    });
    return { alreadyExisting, joinedWriters };
  }

  private async createEach(
    batchId: string,
    group: Array<{ path: string; doc: ItemDoc }>,
    saw: (b: Batch) => void,
  ): Promise<string[]> {
    const existing: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < group.length) {
        const d = group[next++]!;
        try {
          saw(
            await this.commitFenced(batchId, mayCreateItems, (writes) => {
              writes.push({ op: "create", path: d.path, data: { ...d.doc } });
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

  // --- the batch fence (core/batchFence.ts) ------------------------------------------------------
  private readonly fences = new Map<string, { batch: Batch; updateTime: number }>();
  private static readonly maxFencesRemembered = 1_000;

  private async readFence(
    batchId: string,
    decide: (b: Batch) => FenceDecision,
  ): Promise<{ batch: Batch; updateTime: number }> {
    const snap = await this.db.get(batchPath(batchId));
    this.ops.reads++;
    const batch = toBatch(snap.data);
    if (!batch) throw new BatchFencedError(batchId, `batch ${batchId} does not exist`);
    const decision = decide(batch);
    if (!decision.ok) {
      this.fences.delete(batchId);
      throw new BatchFencedError(batchId, decision.reason);
    }
    const fence = { batch, updateTime: snap.updateTime! };
    this.fences.delete(batchId);
    this.fences.set(batchId, fence);
    if (this.fences.size > MemoryLedger.maxFencesRemembered) {
      const oldest = this.fences.keys().next().value;
      if (oldest !== undefined) this.fences.delete(oldest);
    }
    return fence;
  }

  /**
   * `build`'s writes, committed atomically with the fence check: a write of the batch document
   * setting `generation` to the value read, preconditioned on that read's update time (a no-op that
   * keeps the update time while the batch is unchanged). Without the fence (`fence: false`) the
   * writes are committed as they are, on the same decisions.
   */
  private async commitFenced(
    batchId: string,
    decide: (b: Batch) => FenceDecision,
    build: (writes: Write[]) => void,
  ): Promise<Batch> {
    let fence = this.fences.get(batchId);
    if (!fence || !decide(fence.batch).ok) fence = await this.readFence(batchId, decide);
    for (let round = 1; ; round++) {
      const writes: Write[] = [];
      if (this.fence)
        writes.push(update(batchPath(batchId), { generation: fence.batch.generation }, fence.updateTime));
      build(writes);
      try {
        await this.db.commit(writes);
        if (this.fence) this.ops.writes++;
        return fence.batch;
      } catch (err) {
        if (!isFailedPrecondition(err)) throw err;
        const fresh = await this.readFence(batchId, decide);
        if (fresh.updateTime === fence.updateTime || round >= this.maxAttempts) throw err;
        fence = fresh;
      }
    }
  }

  async readItemRefs(batchId: string, fromSeq: number, count: number): Promise<ItemRef[]> {
    if (count <= 0) return [];
    const snap = await this.db.query({
      ...this.items(batchId),
      where: [everyShard, ["seq", ">=", fromSeq]],
      orderBy: [["seq", "asc"]],
      limit: count,
    });
    this.ops.queries++;
    this.ops.reads += snap.length;
    return snap.map((d) => ({
      batchId,
      itemId: d.data!.itemId as string,
      generation: d.data!.generation as number,
    }));
  }

  async advanceCursor(batchId: string, cursor: number, now: number, received?: number): Promise<Batch> {
    return this.tx(async (tx) => {
      const path = batchPath(batchId);
      const b = toBatch((await tx.get(path)).data);
      this.ops.reads++;
      if (!b) throw new Error(`batch ${batchId} not found`);
      const moved: Partial<Pick<Batch, "cursor" | "received">> = {};
      if (cursor > b.cursor) moved.cursor = cursor;
      if (received !== undefined && received > b.received) moved.received = received;
      if (Object.keys(moved).length === 0) return b;
      tx.update(path, { ...moved, progressAt: now, updatedAt: now });
      this.ops.writes++;
      return { ...b, ...moved, progressAt: now, updatedAt: now };
    });
  }

  async recordProgress(batchId: string, now: number): Promise<void> {
    await this.tx(async (tx) => {
      const path = batchPath(batchId);
      const b = toBatch((await tx.get(path)).data);
      this.ops.reads++;
      if (!b || b.status !== "submitting" || b.progressAt >= now) return;
      tx.update(path, { progressAt: now, updatedAt: now });
      this.ops.writes++;
    });
  }

  async markSubmitted(batchId: string, total: number, now: number): Promise<boolean> {
    return this.tx(async (tx) => {
      const path = batchPath(batchId);
      const b = toBatch((await tx.get(path)).data);
      this.ops.reads++;
      if (!b || b.status !== "submitting") return false;
      tx.update(path, {
        status: "running",
        total,
        submissionComplete: true,
        cursor: Math.max(b.cursor, total),
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
    await this.db.commit([
      update(batchPath(batchId), { total, submissionComplete: true, progressAt: now, updatedAt: now }),
    ]);
    this.ops.writes++;
  }

  // --- items -----------------------------------------------------------------------------------
  async getItem(batchId: string, itemId: string): Promise<Item | null> {
    this.ops.reads++;
    return toItem((await this.db.get(itemPath(batchId, itemId))).data);
  }

  async listItems(
    batchId: string,
    opts: { status?: ItemStatus; limit: number; pageToken?: string },
  ): Promise<Page<Item>> {
    const after = decodePageToken(opts.pageToken);
    const items = this.items(batchId);
    const snap = await this.db.query({
      ...items,
      where: opts.status ? [everyShard, ["status", "==", opts.status]] : [everyShard],
      orderBy: [
        ["seq", "asc"],
        ["__name__", "asc"],
      ],
      startAfter: after ? [after[0], `${items.parent}/${items.collection}/${after[1]}`] : undefined,
      limit: opts.limit + 1,
    });
    this.ops.queries++;
    this.ops.reads += snap.length;
    const docs = snap.slice(0, opts.limit);
    const entries = docs.map((d) => toItem(d.data)!);
    const last = docs[docs.length - 1];
    return {
      entries,
      nextPageToken: snap.length > opts.limit && last ? encodeToken([last.data!.seq, last.id]) : undefined,
    };
  }

  /** Reads an item inside a transaction; the shared first step of every item transition. */
  private async readItem(tx: StoreTransaction, ref: ItemRef): Promise<{ path: string; item: Item | null }> {
    const path = itemPath(ref.batchId, ref.itemId);
    const item = toItem((await tx.get(path)).data);
    this.ops.reads++;
    return { path, item };
  }

  private write(tx: StoreTransaction, path: string, patch: object): void {
    tx.update(path, patch as Record<string, unknown>);
    this.ops.writes++;
  }

  async leaseItem(
    ref: ItemRef,
    owner: string,
    leaseMs: number,
    maxAttempts: number,
    now: number,
  ): Promise<LeaseResult> {
    // As FirestoreLedger: read, decide, write preconditioned on the read's update time.
    const path = itemPath(ref.batchId, ref.itemId);
    for (let round = 1; ; round++) {
      const snap = await this.db.get(path);
      this.ops.reads++;
      const item = toItem(snap.data);
      const decision = decideLease(item, ref, owner, leaseMs, maxAttempts, now);
      if (!decision.write) return decision.result;
      try {
        const written = await this.db.commit([update(path, decision.write, snap.updateTime!)]);
        this.ops.writes++;
        if (decision.result.kind === "leased")
          this.rememberLease(ref, owner, written.updateTimes[0]!, decision.result.item);
        return decision.result;
      } catch (err) {
        if (isFailedPrecondition(err) && round < this.maxAttempts) continue;
        throw err;
      }
    }
  }

  // --- leases this process took, with the update time of its last write to the item ------------
  private readonly leasesHeld = new Map<
    string,
    { owner: string; generation: number; writeTime: number; item: Item }
  >();
  private static readonly maxLeasesRemembered = 10_000;
  private static leaseKey(ref: ItemRef): string {
    return `${ref.batchId}\u0000${ref.itemId}`;
  }
  private rememberLease(ref: ItemRef, owner: string, writeTime: number, item: Item): void {
    const key = MemoryLedger.leaseKey(ref);
    this.leasesHeld.delete(key);
    this.leasesHeld.set(key, { owner, generation: ref.generation, writeTime, item });
    if (this.leasesHeld.size > MemoryLedger.maxLeasesRemembered) {
      const oldest = this.leasesHeld.keys().next().value;
      if (oldest !== undefined) this.leasesHeld.delete(oldest);
    }
  }
  private forgetLease(ref: ItemRef): void {
    this.leasesHeld.delete(MemoryLedger.leaseKey(ref));
  }

  async heartbeat(ref: ItemRef, owner: string, leaseMs: number, now: number): Promise<boolean> {
    return this.holderUpdate(ref, owner, (path, lastUpdateTime) =>
      update(path, heartbeatWrite(leaseMs, now), lastUpdateTime),
    );
  }

  async checkpointStep(
    ref: ItemRef,
    owner: string,
    step: string,
    output: unknown,
    now: number,
  ): Promise<boolean> {
    return this.holderUpdate(ref, owner, (path, lastUpdateTime) => ({
      op: "update",
      path,
      fields: [
        [["steps", step], { status: "succeeded", output: output ?? null, finishedAt: now }],
        [["updatedAt"], now],
      ],
      lastUpdateTime,
    }));
  }

  /** FirestoreLedger.holderUpdate: the remembered write time as precondition, else read and check. */
  private async holderUpdate(
    ref: ItemRef,
    owner: string,
    write: (path: string, lastUpdateTime: number) => Write,
  ): Promise<boolean> {
    const path = itemPath(ref.batchId, ref.itemId);
    const key = MemoryLedger.leaseKey(ref);
    for (let round = 1; ; round++) {
      const known = this.leasesHeld.get(key);
      let since: number;
      let item: Item;
      if (known && known.owner === owner && known.generation === ref.generation) {
        since = known.writeTime;
        item = known.item;
      } else {
        const snap = await this.db.get(path);
        this.ops.reads++;
        const current = toItem(snap.data);
        if (!holdsLease(current, ref, owner)) return false;
        since = snap.updateTime!;
        item = current;
      }
      try {
        const written = await this.db.commit([write(path, since)]);
        this.ops.writes++;
        this.rememberLease(ref, owner, written.updateTimes[0]!, item);
        return true;
      } catch (err) {
        if (!isFailedPrecondition(err) || round >= this.maxAttempts) throw err;
        this.forgetLease(ref);
      }
    }
  }

  async completeItem(ref: ItemRef, owner: string, result: unknown, now: number): Promise<TransitionResult> {
    const known = this.leasesHeld.get(MemoryLedger.leaseKey(ref));
    this.forgetLease(ref);
    if (known && known.owner === owner && known.generation === ref.generation) {
      const done = completion(known.item, result, now);
      try {
        await this.db.commit([update(itemPath(ref.batchId, ref.itemId), done.write, known.writeTime)]);
        this.ops.writes++;
        return { kind: "done", item: done.item };
      } catch (err) {
        if (!isFailedPrecondition(err)) throw err;
      }
    }
    return this.tx(async (tx) => {
      const { path, item } = await this.readItem(tx, ref);
      const decision = decideComplete(item, ref, result, now);
      if (decision.write) this.write(tx, path, decision.write);
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
      const { path, item } = await this.readItem(tx, ref);
      const decision = decideFail(item, ref, error, now, opts.owner);
      if (decision.write) this.write(tx, path, decision.write);
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
      const { path, item } = await this.readItem(tx, ref);
      const decision = decideRelease(item, ref, owner, lastError, now, opts);
      if (decision.write) this.write(tx, path, decision.write);
      return decision.result;
    });
  }

  async findExpiredLeases(now: number, limit: number): Promise<ItemRef[]> {
    const snap = await this.db.query({
      collection: itemsCollection,
      group: true,
      where: [["status", "==", "running"], everyShard, ["leaseUntil", "<", now]],
      orderBy: [["leaseUntil", "asc"]],
      limit,
    });
    this.ops.queries++;
    this.ops.reads += snap.length;
    return snap.map(refOf);
  }

  async redriveItem(ref: ItemRef, maxAttempts: number, now: number): Promise<RedriveResult> {
    return this.tx(async (tx) => {
      const { path, item } = await this.readItem(tx, ref);
      const decision = decideRedrive(item, ref, maxAttempts, now);
      if (decision.write) this.write(tx, path, decision.write);
      return decision.result;
    });
  }

  async findStalePending(before: number, limit: number): Promise<ItemRef[]> {
    const snap = await this.db.query({
      collection: itemsCollection,
      group: true,
      where: [["status", "==", "pending"], everyShard, ["pendingSince", "<", before]],
      orderBy: [["pendingSince", "asc"]],
      limit,
    });
    this.ops.queries++;
    this.ops.reads += snap.length;
    return snap.map(refOf);
  }

  async touchPending(refs: ItemRef[], now: number): Promise<void> {
    if (refs.length === 0) return;
    // BulkWriter, errors ignored: each update lands or fails on its own, unconditioned.
    await this.db.writeEach(refs.map((r) => update(itemPath(r.batchId, r.itemId), { pendingSince: now })));
    this.ops.writes += refs.length;
  }

  // --- progress and finalization ---------------------------------------------------------------
  async countItems(batchId: string): Promise<BatchCounts> {
    const count = async (status: ItemStatus) => {
      const n = await this.db.count({ ...this.items(batchId), where: [["status", "==", status]] });
      this.ops.aggregations++;
      return n;
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
        const n = await this.db.count({
          ...this.items(batchId),
          where: [
            ["status", "==", "failed"],
            ["error.kind", "==", kind],
          ],
        });
        this.ops.aggregations++;
        if (n > 0) out[kind] = n;
      }),
    );
    return out;
  }

  async countFinishedBetween(batchId: string, edges: number[]): Promise<number[]> {
    return Promise.all(
      edges.slice(1).map(async (to, i) => {
        const n = await this.db.count({
          ...this.items(batchId),
          where: [everyShard, ["finishedAt", ">=", edges[i]!], ["finishedAt", "<", to]],
        });
        this.ops.aggregations++;
        return n;
      }),
    );
  }

  async countSucceeded(batchId: string, generation: number): Promise<number> {
    const n = await this.db.count({
      ...this.items(batchId),
      where: [
        ["status", "==", "succeeded"],
        ["generation", "==", generation],
      ],
    });
    this.ops.aggregations++;
    return n;
  }

  async hasLiveItems(batchId: string): Promise<boolean> {
    return this.liveItemExists(batchId);
  }

  private async liveItemExists(batchId: string): Promise<boolean> {
    const snap = await this.db.query({
      ...this.items(batchId),
      where: [["status", "in", ["pending", "running"]]],
      limit: 1,
    });
    this.ops.queries++;
    this.ops.reads += Math.max(1, snap.length);
    return snap.length > 0;
  }

  async releaseFinalizing(batchId: string, claim: number): Promise<void> {
    await this.tx(async (tx) => {
      const path = batchPath(batchId);
      const b = toBatch((await tx.get(path)).data);
      this.ops.reads++;
      if (!b || b.status !== "finalizing" || b.finalizingAt !== claim) return;
      tx.update(path, { finalizingAt: 0 });
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
      const path = batchPath(batchId);
      const b = toBatch((await tx.get(path)).data);
      this.ops.reads++;
      if (!b || b.status !== "finalizing" || b.finalizingAt !== claim) return null;
      const attempts = (b.exportAttempts ?? 0) + 1;
      const exhausted = attempts >= maxExportAttempts;
      const patch = {
        finalizingAt: 0,
        exportAttempts: attempts,
        exportError: error,
        exportFailedAt: exhausted ? now : null,
        nextExportAt: exhausted ? null : now + exportBackoffMs(attempts),
        updatedAt: now,
      };
      tx.update(path, patch);
      this.ops.writes++;
      return { ...b, ...patch };
    });
  }

  async renewFinalizing(batchId: string, claim: number, now: number): Promise<number | null> {
    return this.tx(async (tx) => {
      const path = batchPath(batchId);
      const b = toBatch((await tx.get(path)).data);
      this.ops.reads++;
      if (!b || b.status !== "finalizing" || b.finalizingAt !== claim) return null;
      const renewed = Math.max(now, claim + 1);
      tx.update(path, { finalizingAt: renewed });
      this.ops.writes++;
      return renewed;
    });
  }

  async reExport(batchId: string, now: number): Promise<Batch> {
    return this.tx(async (tx) => {
      const path = batchPath(batchId);
      const b = toBatch((await tx.get(path)).data);
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
      tx.update(path, patch);
      this.ops.writes++;
      return { ...b, ...patch };
    });
  }

  async beginFinalizing(batchId: string, now: number, staleFinalizingMs: number): Promise<Batch | null> {
    // As FirestoreLedger: read, decide, "anything live?", then a write preconditioned on the read.
    const path = batchPath(batchId);
    for (let round = 1; ; round++) {
      const snap = await this.db.get(path);
      this.ops.reads++;
      const b = toBatch(snap.data);
      if (!b) return null;
      if (!mayClaimFinalization(b, now, staleFinalizingMs).ok) return null;
      if (await this.liveItemExists(batchId)) return null;
      const patch = { status: "finalizing" as const, finalizingAt: now, updatedAt: now, progressAt: now };
      try {
        await this.db.commit([update(path, patch, snap.updateTime!)]);
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
      const path = batchPath(batchId);
      const b = toBatch((await tx.get(path)).data);
      this.ops.reads++;
      if (!b || !mayFinishBatch(b, claim).ok) return null;
      // The sealed total stays (the finalizer verified the ledger holds it); a batch that ended
      // before it was sealed takes the count it holds.
      const total = b.total ?? summary.counts.total;
      const status: BatchStatus =
        b.terminateAs === "cancelled" ? "cancelled" : b.terminateAs === "failed" ? "failed" : summary.outcome;
      tx.update(path, {
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
    // FirestoreLedger pages on (position, document id): two items can share a position.
    let after: [number, string] | undefined;
    for (;;) {
      const snap = await this.db.query({
        ...this.items(batchId),
        where: [["status", "==", "succeeded"], ["generation", "==", generation], everyShard],
        orderBy: [
          ["seq", "asc"],
          ["__name__", "asc"],
        ],
        startAfter: after,
        limit: pageSize,
      });
      this.ops.queries++;
      this.ops.reads += snap.length;
      if (snap.length === 0) return;
      yield snap.map((d) => ({
        batchId,
        itemId: d.data!.itemId as string,
        generation,
        result: d.data!.result ?? null,
        finishedAt: d.data!.finishedAt as number,
        attempts: d.data!.attempt as number,
      }));
      const last = snap[snap.length - 1]!;
      after = [last.data!.seq as number, last.path];
      if (snap.length < pageSize) return;
    }
  }

  // --- dependencies and operator actions -----------------------------------------------------------
  async unblockBatch(batchId: string, now: number): Promise<boolean> {
    return this.tx(async (tx) => {
      const path = batchPath(batchId);
      const b = toBatch((await tx.get(path)).data);
      this.ops.reads++;
      if (!b || b.status !== "blocked" || b.terminateAs) return false;
      tx.update(path, { status: "submitting", progressAt: now, updatedAt: now });
      this.ops.writes++;
      return true;
    });
  }

  async findDependents(batchId: string, limit: number): Promise<Batch[]> {
    const snap = await this.db.query({
      collection: batchesCollection,
      where: [["dependsOn", "array-contains", batchId]],
      limit,
    });
    this.ops.queries++;
    this.ops.reads += snap.length;
    return snap.map((d) => toBatch(d.data)!).filter((b) => b.status === "blocked");
  }

  async readSweepCursor(sweep: string): Promise<string | undefined> {
    const snap = await this.db.get(`${reconcilerStateCollection}/${sweep}`);
    this.ops.reads++;
    const token = snap.exists ? ((snap.data!.pageToken as string | null) ?? null) : null;
    return token ?? undefined;
  }

  async writeSweepCursor(sweep: string, pageToken: string | undefined, now: number): Promise<void> {
    await this.db.commit([
      {
        op: "set",
        path: `${reconcilerStateCollection}/${sweep}`,
        data: { pageToken: pageToken ?? null, updatedAt: now },
      },
    ]);
    this.ops.writes++;
  }

  async requestTermination(
    batchId: string,
    as: "cancelled" | "failed",
    reason: string,
    now: number,
  ): Promise<Batch | null> {
    return this.tx(async (tx) => {
      const path = batchPath(batchId);
      const b = toBatch((await tx.get(path)).data);
      this.ops.reads++;
      if (!b || !mayRequestTermination(b).ok) return null;
      if (b.terminateAs) return b;
      tx.update(path, { terminateAs: as, reason, updatedAt: now });
      this.ops.writes++;
      return { ...b, terminateAs: as, reason, updatedAt: now };
    });
  }

  async cancelPendingItems(batchId: string, reason: string, limit: number, now: number): Promise<number> {
    const snap = await this.db.query({ ...this.items(batchId), where: [["status", "==", "pending"]], limit });
    this.ops.queries++;
    this.ops.reads += snap.length;
    if (snap.length === 0) return 0;
    // As FirestoreLedger: a bulk update, each write preconditioned on its read (an item leased in
    // between is left to finish).
    const error: ItemError = { kind: "cancelled", message: reason };
    const results = await this.db.writeEach(
      snap.map((d) =>
        update(
          d.path,
          { status: "failed", error, finishedAt: now, updatedAt: now, pendingSince: null },
          d.updateTime!,
        ),
      ),
    );
    this.ops.writes += snap.length;
    return results.filter((r) => r.ok).length;
  }

  async beginRetry(batchId: string, now: number): Promise<Batch> {
    return this.tx(async (tx) => {
      const path = batchPath(batchId);
      const b = toBatch((await tx.get(path)).data);
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
      tx.update(path, patch);
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
    const snap = await this.db.query({
      ...this.items(batchId),
      where: [
        ["status", "==", "failed"],
        ["generation", "<", generation],
      ],
      limit,
    });
    this.ops.queries++;
    this.ops.reads += snap.length;
    if (snap.length === 0) return [];
    // As FirestoreLedger: fenced (mayResetItems), each reset conditioned on the item's own read; one
    // commit per page, or item by item when an item changed since the read.
    const decide = (b: Batch) => mayResetItems(b, generation);
    const resetOf = (d: Snapshot): Write =>
      update(
        d.path,
        {
          status: "pending",
          generation,
          attempt: 0,
          error: null,
          lastError: d.data!.error ?? null,
          leaseOwner: null,
          leaseUntil: null,
          runStartedAt: null,
          notBefore: null,
          finishedAt: null,
          updatedAt: now,
          pendingSince: now,
        },
        d.updateTime!,
      );
    const refOf = (d: Snapshot): ItemRef => ({ batchId, itemId: d.data!.itemId as string, generation });
    try {
      await this.commitFenced(batchId, decide, (writes) => {
        for (const d of snap) writes.push(resetOf(d));
      });
      this.ops.writes += snap.length;
      return snap.map(refOf);
    } catch (err) {
      if (!isFailedPrecondition(err)) throw err;
    }
    const refs: ItemRef[] = [];
    for (const d of snap) {
      try {
        await this.commitFenced(batchId, decide, (writes) => {
          writes.push(resetOf(d));
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
      const path = batchPath(batchId);
      const b = toBatch((await tx.get(path)).data);
      this.ops.reads++;
      if (!b || b.status !== "submitting") return false;
      tx.update(path, { status: "running", summary: null, progressAt: now, updatedAt: now });
      this.ops.writes++;
      return true;
    });
  }
}

function refOf(d: Snapshot): ItemRef {
  return {
    batchId: d.data!.batchId as string,
    itemId: d.data!.itemId as string,
    generation: d.data!.generation as number,
  };
}

/** FirestoreLedger's commit groups: at most 500 writes and ~8 MiB per commit. */
function commitGroups<T extends { doc: { payload: unknown } }>(docs: T[]): T[][] {
  const groups: T[][] = [];
  let group: T[] = [];
  let bytes = 0;
  for (const d of docs) {
    const size = 1024 + Buffer.byteLength(JSON.stringify(d.doc.payload) ?? "");
    if (group.length > 0 && (group.length >= 500 || bytes + size > 8 * 1024 * 1024)) {
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
