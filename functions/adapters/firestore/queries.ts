// The ledger's queries and counts: batch listings and sweeps, items by position, the reconciler's
// collection-group sweeps (expired leases, stale pending items), count() aggregations for progress,
// and the paged result stream the finalizer exports. Every query here is served by an index the
// stack declares (firestoreIndexes.ts; test/infra/firestoreQueries.test.ts checks each shape).
import { FieldPath, type Query } from "@google-cloud/firestore";
import type { Batch, BatchCounts, ErrorKind, Item, ItemStatus, ResultRow } from "../../core/model";
import { errorKinds } from "../../core/model";
import type { FindBatchesOptions, ItemRef, ListBatchesOptions, Page } from "../../core/ports";
import { batchesCollection, itemsCollection } from "../firestoreIndexes";
import { allItemShards } from "./layout";
import { batchPageOf, decodePageToken, encodeToken, LedgerPart, toBatch, toItem } from "./storage";

export class FirestoreLedgerQueries extends LedgerPart {
  async listBatches(opts: ListBatchesOptions): Promise<Page<Batch>> {
    let q: Query = this.db.collection(batchesCollection);
    if (opts.status) q = q.where("status", "==", opts.status);
    const direction = opts.oldestFirst ? "asc" : "desc";
    q = q.orderBy("createdAt", direction).orderBy("batchId", direction);
    return this.batchPage(q, opts, (b) => b.createdAt);
  }

  async findBatches(opts: FindBatchesOptions): Promise<Page<Batch>> {
    let q: Query = this.db.collection(batchesCollection).where("status", "==", opts.status);
    if (opts.progressBefore !== undefined) q = q.where("progressAt", "<", opts.progressBefore);
    // The document id breaks ties between batches that progressed in the same millisecond, so a page
    // boundary between them skips neither (every index ends with __name__ ascending).
    q = q.orderBy("progressAt").orderBy(FieldPath.documentId());
    return this.batchPage(q, opts, (b) => b.progressAt);
  }

  /** One page of `q`, ordered by (a number, the batch id): one query, `limit + 1` reads. */
  private async batchPage(
    q: Query,
    opts: { limit: number; pageToken?: string },
    orderedBy: (b: Batch) => number,
  ): Promise<Page<Batch>> {
    const after = decodePageToken(opts.pageToken);
    if (after) q = q.startAfter(after[0], after[1]);
    const snap = await q.limit(opts.limit + 1).get();
    this.ops.queries++;
    this.ops.reads += snap.size;
    return batchPageOf(
      snap.docs.map((d) => toBatch(d)!),
      opts.limit,
      orderedBy,
    );
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
    return snap.docs.map((d) => toBatch(d)!).filter((b) => b.status === "blocked");
  }

  async getItemsBySeq(batchId: string, fromSeq: number, count: number): Promise<Item[]> {
    if (count <= 0) return [];
    const snap = await this.items(batchId)
      .where("shard", "in", allItemShards)
      .where("seq", ">=", fromSeq)
      .where("seq", "<", fromSeq + count)
      .orderBy("seq")
      .get();
    this.ops.queries++;
    this.ops.reads += snap.size;
    return snap.docs.map((d) => toItem(d)!);
  }

  async countItemsAt(batchId: string, fromSeq: number, count: number): Promise<number> {
    if (count <= 0) return 0;
    // getItemsBySeq's filters (served by the same index) as one count aggregation: a read per
    // 1,000 index entries, not one per item, so every stored chunk can afford the check.
    const snap = await this.items(batchId)
      .where("shard", "in", allItemShards)
      .where("seq", ">=", fromSeq)
      .where("seq", "<", fromSeq + count)
      .count()
      .get();
    this.ops.aggregations++;
    return snap.data().count;
  }

  async readItemRefs(batchId: string, fromSeq: number, count: number): Promise<ItemRef[]> {
    if (count <= 0) return [];
    const snap = await this.items(batchId)
      .where("shard", "in", allItemShards)
      .where("seq", ">=", fromSeq)
      .orderBy("seq")
      .limit(count)
      .select("itemId", "generation")
      .get();
    this.ops.queries++;
    this.ops.reads += snap.size;
    return snap.docs.map((d) => ({ batchId, itemId: d.get("itemId"), generation: d.get("generation") }));
  }

  async getItem(batchId: string, itemId: string): Promise<Item | null> {
    this.ops.reads++;
    return toItem(await this.itemRef(batchId, itemId).get());
  }

  async listItems(
    batchId: string,
    opts: { status?: ItemStatus; limit: number; pageToken?: string },
  ): Promise<Page<Item>> {
    let q: Query = this.items(batchId).where("shard", "in", allItemShards);
    if (opts.status) q = q.where("status", "==", opts.status);
    // Position, then document id: two items can share a position (a race of two submissions), and a
    // cursor on the position alone would skip one of them.
    q = q.orderBy("seq").orderBy(FieldPath.documentId());
    const after = decodePageToken(opts.pageToken);
    if (after) q = q.startAfter(after[0], after[1]);
    const snap = await q.limit(opts.limit + 1).get();
    this.ops.queries++;
    this.ops.reads += snap.size;
    const docs = snap.docs.slice(0, opts.limit);
    const entries = docs.map((d) => toItem(d)!);
    const last = docs[docs.length - 1];
    return {
      entries,
      nextPageToken: snap.size > opts.limit && last ? encodeToken([last.get("seq"), last.id]) : undefined,
    };
  }

  async findExpiredLeases(now: number, limit: number): Promise<ItemRef[]> {
    const snap = await this.db
      .collectionGroup(itemsCollection)
      .where("status", "==", "running")
      .where("shard", "in", allItemShards)
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

  async findStalePending(before: number, limit: number): Promise<ItemRef[]> {
    const snap = await this.db
      .collectionGroup(itemsCollection)
      .where("status", "==", "pending")
      .where("shard", "in", allItemShards)
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

  async countItems(batchId: string): Promise<BatchCounts> {
    // The four counts are read in one read-only transaction, so they come from one snapshot: read
    // one after another (or in parallel, each at its own read time), an item that moves from
    // running to succeeded between two of them is counted twice or not at all, and the live total
    // wavers (issue #15 item 10). Read-only: no locks, nothing to contend with the workers' writes.
    // One after another: the transaction begins with its first read, and reads sent beside that one
    // run outside it (measured on the emulator: totals of 199..203 for 200 items in parallel).
    const statuses: ItemStatus[] = ["pending", "running", "succeeded", "failed"];
    // The first read (a point read of the batch document) begins the transaction; the four counts
    // then run in parallel at its read time. One after another they took four emulator scans in a
    // row (GET /v1/batches/{id} seconds slower at 10k items; the chaos scenarios' probes with it).
    const [pending, running, succeeded, failed] = await this.db.runTransaction(
      async (tx) => {
        await tx.get(this.storage.batchRef(batchId));
        return Promise.all(
          statuses.map(
            async (status) =>
              (await tx.get(this.items(batchId).where("status", "==", status).count())).data().count,
          ),
        );
      },
      { readOnly: true },
    );
    this.ops.reads++;
    this.ops.aggregations += statuses.length;
    return {
      total: pending! + running! + succeeded! + failed!,
      pending: pending!,
      running: running!,
      succeeded: succeeded!,
      failed: failed!,
    };
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
          .where("shard", "in", allItemShards)
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
  async liveItemExists(batchId: string): Promise<boolean> {
    const snap = await this.items(batchId)
      .where("status", "in", ["pending", "running"])
      .limit(1)
      .select()
      .get();
    this.ops.queries++;
    this.ops.reads += Math.max(1, snap.size);
    return !snap.empty;
  }

  async *streamResults(batchId: string, generation: number, pageSize: number): AsyncIterable<ResultRow[]> {
    // Pages on (position, document id): two items can share a position (two racing submissions
    // with the same header), and a cursor on the position alone skipped one of them (issue #15 item 10).
    let after: [number, string] | undefined;
    for (;;) {
      let q = this.items(batchId)
        .where("status", "==", "succeeded")
        .where("generation", "==", generation)
        .where("shard", "in", allItemShards)
        .orderBy("seq")
        .orderBy(FieldPath.documentId())
        .select("itemId", "seq", "result", "finishedAt", "attempt");
      if (after !== undefined) q = q.startAfter(after[0], after[1]);
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
      const last = snap.docs[snap.docs.length - 1]!;
      after = [last.get("seq"), last.id];
      if (snap.size < pageSize) return;
    }
  }
}
