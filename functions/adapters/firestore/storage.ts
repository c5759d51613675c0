// The Firestore ledger's storage layer, shared by its three parts (batch lifecycle, item
// transitions, queries and counts — see ../firestoreLedger.ts): references to the documents, the
// stored shapes, the operation counters, transactions, and the batch fence every item-creating or
// item-resetting commit carries (core/batchFence.ts).
import {
  type CollectionReference,
  type DocumentReference,
  type DocumentSnapshot,
  type Firestore,
  Timestamp,
  type Transaction,
  type WriteBatch,
} from "@google-cloud/firestore";
import type { FenceDecision } from "../../core/batchFence";
import { BatchFencedError } from "../../core/errors";
import type { Batch, Item, ItemError, ItemStatus } from "../../core/model";
import type { LedgerOpCounts, Page } from "../../core/ports";
import { batchesCollection, defaultRetentionDays, itemsCollection } from "../firestoreIndexes";
import { itemKey } from "./layout";

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

export interface ItemDoc {
  batchId: string;
  itemId: string;
  /** The spread prefix of every index over a time or position (firestore/layout.ts itemKey). */
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
  /** When the current attempt's run began; kept across continuations (absent on older documents). */
  runStartedAt?: number | null;
  /** No lease before this time (a Retry-After); absent on older documents. */
  notBefore?: number | null;
  /** When the item last became pending and publishable; null while its batch is blocked. */
  pendingSince: number | null;
  expireAt: Timestamp;
}

export type BatchDoc = Omit<Batch, never> & { expireAt: Timestamp };

export const encodeToken = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
export function decodeToken<T>(token: string | undefined): T | undefined {
  if (!token) return undefined;
  try {
    return JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as T;
  } catch {
    return undefined;
  }
}

export class InvalidPageTokenError extends Error {}

/**
 * A page token of a listing: the last entry's ordering number (creation, progress or position) and
 * id. Undefined without a token; a malformed one is refused (400 at the API).
 */
export function decodePageToken(token: string | undefined): [number, string] | undefined {
  if (!token) return undefined;
  const after = decodeToken<[number, string]>(token);
  if (!(Array.isArray(after) && typeof after[0] === "number" && typeof after[1] === "string"))
    throw new InvalidPageTokenError("pageToken is not valid");
  return after;
}

/**
 * A page of batches from a query that read `limit + 1` in order: the first `limit`, and when more
 * follow, the token after the last (its ordering number and id).
 */
export function batchPageOf(read: Batch[], limit: number, orderedBy: (b: Batch) => number): Page<Batch> {
  const entries = read.slice(0, limit);
  const last = entries[entries.length - 1];
  return {
    entries,
    nextPageToken: read.length > limit && last ? encodeToken([orderedBy(last), last.batchId]) : undefined,
  };
}

export class RetryRefusedError extends Error {}

export function toBatch(snap: DocumentSnapshot): Batch | null {
  if (!snap.exists) return null;
  const { expireAt: _expireAt, ...rest } = snap.data() as BatchDoc;
  return rest as Batch;
}

export function toItem(snap: DocumentSnapshot): Item | null {
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
    runStartedAt: d.runStartedAt ?? null,
    notBefore: d.notBefore ?? null,
  };
}

/** The database, the options, the counters and the primitives every part of the ledger shares. */
export class LedgerStorage {
  readonly ops: LedgerOpCounts = { reads: 0, writes: 0, transactions: 0, queries: 0, aggregations: 0 };
  readonly retentionMs: number;
  readonly maxAttempts: number;
  readonly failCompletionRate: number;
  readonly failAfterCompletionRate: number;
  readonly skipFinalizeRate: number;

  constructor(
    readonly db: Firestore,
    opts: FirestoreLedgerOptions = {},
  ) {
    this.retentionMs = (opts.retentionDays ?? defaultRetentionDays) * 86_400_000;
    this.maxAttempts = opts.maxTransactionAttempts ?? 25;
    this.failCompletionRate = opts.failCompletionRate ?? 0;
    this.failAfterCompletionRate = opts.failAfterCompletionRate ?? 0;
    this.skipFinalizeRate = opts.skipFinalizeRate ?? 0;
  }

  // --- references ------------------------------------------------------------------------------
  batchRef(batchId: string): DocumentReference {
    return this.db.collection(batchesCollection).doc(batchId);
  }
  items(batchId: string): CollectionReference {
    return this.batchRef(batchId).collection(itemsCollection);
  }
  /** An item's document: its id spreads across the key space (firestore/layout.ts itemKey). */
  itemRef(batchId: string, itemId: string): DocumentReference {
    return this.items(batchId).doc(itemKey(batchId, itemId).docId);
  }
  expireAt(now: number): Timestamp {
    return Timestamp.fromMillis(now + this.retentionMs);
  }
  tx<T>(fn: (tx: Transaction) => Promise<T>): Promise<T> {
    this.ops.transactions++;
    return this.db.runTransaction(fn, { maxAttempts: this.maxAttempts });
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
    const batch = toBatch(snap);
    if (!batch) throw new BatchFencedError(batchId, `batch ${batchId} does not exist`);
    const decision = decide(batch);
    if (!decision.ok) {
      this.fences.delete(batchId);
      throw new BatchFencedError(batchId, decision.reason);
    }
    const fence = { batch, updateTime: snap.updateTime! };
    this.fences.delete(batchId);
    this.fences.set(batchId, fence);
    if (this.fences.size > LedgerStorage.maxFencesRemembered) {
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
  async commitFenced(
    batchId: string,
    decide: (b: Batch) => FenceDecision,
    build: (wb: WriteBatch) => void,
  ): Promise<Batch> {
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
        return fence.batch;
      } catch (err) {
        if (!isFailedPrecondition(err)) throw err;
        const fresh = await this.readFence(batchId, decide);
        if (fresh.updateTime.isEqual(fence.updateTime) || round >= this.maxAttempts) throw err;
        fence = fresh;
      }
    }
  }
}

/** A part of the ledger: the shared storage under the names the ledger's code uses. */
export abstract class LedgerPart {
  constructor(protected readonly storage: LedgerStorage) {}
  protected get db(): Firestore {
    return this.storage.db;
  }
  protected get ops(): LedgerOpCounts {
    return this.storage.ops;
  }
  protected get maxAttempts(): number {
    return this.storage.maxAttempts;
  }
  protected get failCompletionRate(): number {
    return this.storage.failCompletionRate;
  }
  protected get failAfterCompletionRate(): number {
    return this.storage.failAfterCompletionRate;
  }
  protected get skipFinalizeRate(): number {
    return this.storage.skipFinalizeRate;
  }
  protected batchRef(batchId: string): DocumentReference {
    return this.storage.batchRef(batchId);
  }
  protected items(batchId: string): CollectionReference {
    return this.storage.items(batchId);
  }
  protected itemRef(batchId: string, itemId: string): DocumentReference {
    return this.storage.itemRef(batchId, itemId);
  }
  protected expireAt(now: number): Timestamp {
    return this.storage.expireAt(now);
  }
  protected tx<T>(fn: (tx: Transaction) => Promise<T>): Promise<T> {
    return this.storage.tx(fn);
  }
  protected commitFenced(
    batchId: string,
    decide: (b: Batch) => FenceDecision,
    build: (wb: WriteBatch) => void,
  ): Promise<Batch> {
    return this.storage.commitFenced(batchId, decide, build);
  }
}

export function isFailedPrecondition(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === 9; // gRPC FAILED_PRECONDITION
}

export function isAlreadyExists(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === 6; // gRPC ALREADY_EXISTS
}

/** Firestore's caps per request: 500 writes, 10 MiB. Groups stay below both (payloads are the bulk). */
const maxWritesPerCommit = 500;
const maxBytesPerCommit = 8 * 1024 * 1024;

export function commitGroups<T extends { doc: { payload: unknown } }>(docs: T[]): T[][] {
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
