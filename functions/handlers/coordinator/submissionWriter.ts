// Writing one submission into the ledger and onto the work topic, chunk by chunk (DESIGN.md §2.3,
// F4). Memory is bounded by the chunk size whatever the batch size: a chunk is stored, its
// doorbells are published while the caller reads and checks the next chunk, and then it is
// forgotten.
//
// Per chunk:
//   1. a re-submission first reads the stored items at those positions (one query) and compares
//      them (id + canonical payload); a difference is a 409 and nothing more is written;
//   2. items not stored yet are appended (create-only BulkWriter writes: an item a worker already
//      leased or finished is never reset by a re-submission racing the first one);
//   3. unless the batch is blocked, their doorbells are published — after the items exist, so a
//      worker never gets a doorbell for an item it cannot read;
//   4. the cursor (how far doorbells are published) is written at most once per cursorIntervalMs
//      and once at the end: the batch document is hot-document territory (~1 write/s guidance),
//      so it is never written per item. A coordinator that dies between cursor writes leaves a
//      cursor that is behind: the items after it are published again, which is harmless (a
//      doorbell for a leased or finished item is an idempotent skip).
//
// Tuning (measured on the emulators, figures in docs/api.md):
// - Firestore: the ledger writes each chunk as one create-only commit (≤ 500 writes / 8 MiB, the
//   per-request caps) instead of the BulkWriter's 20-write requests (3.5–4.5× faster on the
//   emulator), with the BulkWriter — ramp-up throttle off, since each batch's items are a fresh
//   subcollection and Firestore pushes back with RESOURCE_EXHAUSTED — as the fallback when a
//   document already exists. A new batch's chunks are stored `chunksInFlight` at a time and its
//   `received` moves with the cursor (one batch-document write per second, not one per chunk: the
//   per-chunk transaction on that document is what made concurrent stores slower than sequential
//   ones). A re-submission or a blocked batch stores one chunk at a time, each moving `received`
//   (chunk k is compared before anything of chunk k+1 is written).
// - Pub/Sub: the publisher batches up to 1,000 messages or 10 ms (adapters/pubsubWorkQueue.ts), so
//   a 500-item chunk is one publish request. Each chunk's publish is awaited before the chunk
//   counts as done, so outstanding messages are bounded by the chunk window (no publisher flow
//   control needed), and the cursor never runs ahead of a publish that has not succeeded.

import { BatchFencedError } from "../../core/errors";
import type { Logger } from "../../core/logger";
import type { Batch, Item, NewItem } from "../../core/model";
import type { ItemRef } from "../../core/ports";
import { type CrashPoint, CrashPointReached, crashSwitchAsks } from "../../faults";
import { finalizeDepsFor, settleAfterRequest } from "../finalizeDeps";
import { sameContent } from "./contentHash";
import type { CoordinatorSettings } from "./coordinatorOptions";
import type { HandlerDeps } from "./handlerDeps";
import type { ItemOrigin } from "./itemChecks";
import type { ProblemList } from "./problems";

export interface ChunkItem extends NewItem {
  origin: ItemOrigin;
}

export interface SubmissionEnv {
  deps: HandlerDeps;
  log: Logger;
  settings: CoordinatorSettings;
}

export type FinishOutcome =
  /** Every item is stored (and published unless blocked); the batch is running, blocked or final. */
  | { kind: "submitted"; batch: Batch }
  /** The stored batch was already complete: this submission only confirmed its content. */
  | { kind: "unchanged"; batch: Batch }
  /** Cancelled (or failed) while this submission was under way. */
  | { kind: "terminated"; batch: Batch };

/** Items withdrawn per commit after a position conflict (Firestore: at most 500 writes per commit). */
const withdrawSlice = 250;

/** Bytes of item lines a submission holds in chunks being stored or published. */
const maxBytesInFlight = 32 * 1024 * 1024;

export class SubmissionWriter {
  readonly batchId: string;
  /** Nothing was stored before this request created the batch: no comparison needed. */
  private readonly fresh: boolean;
  /** New items may be stored: the batch is still being submitted (or blocked) and not terminated. */
  private readonly accepting: boolean;
  /** Doorbells are published as chunks are stored (a blocked batch's items wait for the reconciler). */
  private readonly publishing: boolean;
  /** Positions below this had their doorbells published by an earlier attempt (its cursor). */
  private readonly cursorAtStart: number;
  /**
   * A new batch being published: its chunks are stored concurrently and `received` is recorded with
   * the cursor. There is nothing to compare; an id repeated within a chunk is refused before it
   * reaches the writer, and one repeated across chunks is found by the create-only writes whichever
   * chunk lands first (explainExisting: a 400 naming the id and the other position).
   */
  private readonly concurrentStores: boolean;
  /**
   * One item per position (store, step 3). A re-submission (`exists`) joins the submission before
   * its first comparison and checks every chunk it stores into; a writer that started first checks
   * from the moment its commits see a later request's join (`joinedWriters` above this).
   */
  private readonly joinedAtStart: number;
  private join: Promise<void> | null = null;
  /** Checks every chunk's positions: a re-submission, or an append that began beside another. */
  private readonly checksEveryChunk: boolean;

  private nextSeq = 0;
  /** Items this request stored / found already stored / published. */
  stored = 0;
  matched = 0;
  published = 0;
  /**
   * Time spent waiting on the ledger (compare reads + appends) and on publishes, summed over chunks;
   * the cursor writes' time (beside the stores); and the time the intake waited for a free slot.
   */
  readonly timings = {
    compareMs: 0,
    storeMs: 0,
    publishMs: 0,
    cursorWrites: 0,
    cursorMs: 0,
    windowWaitMs: 0,
  };
  /** End of the contiguous prefix of chunks stored and published (what the cursor may say). */
  private publishedUpTo = 0;
  private cursorWritten: number;
  private lastCursorWriteAt: number;
  /** The cursor write under way beside the stores (at most one). */
  private cursorWrite: { done: boolean; promise: Promise<void> } | null = null;
  /** The id of the submission's last item (the settle probe in finish()). */
  private lastItemId: string | null = null;
  /** Chunks being stored or published, oldest first; each resolves to its end position, or null when skipped. */
  private inflight: Array<{ settled: boolean; promise: Promise<number | null> }> = [];
  /** Chunks whose store (compare + commit) is under way or queued. */
  private storing = 0;
  /** Source bytes of the chunks in flight. */
  private bytesInFlight = 0;
  /** writeChunk waiting for a free slot. */
  private wakeWriter: Array<() => void> = [];
  /** A chunk was skipped (the submission stopped): the cursor may not move past it. */
  private gap = false;
  /** The last chunk's store stage: the next chunk's store starts after it (never rejects). */
  private lastStore: Promise<unknown> = Promise.resolve();
  /** Problems were found (conflict, duplicate id) or the batch was terminated: write nothing more. */
  private stopped = false;
  private terminated: Batch | null = null;
  /** How the batch was ended, once a chunk was refused because it was: the refusal names it. */
  get terminatedAs(): "cancelled" | "failed" | null {
    const b = this.terminated;
    if (!b) return null;
    return b.terminateAs ?? (b.status === "failed" ? "failed" : "cancelled");
  }
  /** A test's crash point was reached: this request is "dead" and writes nothing more. */
  private crashedAt: CrashPoint | null = null;

  /**
   * `created`: this request created the batch; `exists`: a re-submission of a whole batch (every
   * chunk compared with what is stored); `append`: items of an append request past the stored
   * prefix, from `opts.startAt` — everything before it is stored and published (the append handler
   * compared the overlap and published from the lagging cursor first), so, as for a new batch,
   * chunks are stored concurrently and a racing store is sorted out by the create-only writes.
   */
  constructor(
    private readonly env: SubmissionEnv,
    private readonly batch: Batch,
    kind: "created" | "exists" | "append",
    opts: { startAt?: number; appendJoin?: { joinedWriters: number; othersInFlight: boolean } } = {},
  ) {
    this.batchId = batch.batchId;
    this.fresh = kind === "created" || kind === "append";
    this.joinedAtStart = opts.appendJoin?.joinedWriters ?? batch.joinedWriters ?? 0;
    this.checksEveryChunk = !this.fresh || (opts.appendJoin?.othersInFlight ?? false);
    this.accepting =
      (batch.status === "submitting" || batch.status === "blocked") &&
      batch.terminateAs === null &&
      batch.generation === 1 &&
      !batch.submissionComplete;
    this.publishing = this.accepting && batch.status === "submitting";
    this.concurrentStores = this.fresh && this.publishing;
    this.cursorAtStart = batch.cursor;
    this.cursorWritten = batch.cursor;
    this.publishedUpTo = batch.cursor;
    if (opts.startAt !== undefined) {
      this.nextSeq = opts.startAt;
      this.cursorAtStart = opts.startAt;
      this.publishedUpTo = opts.startAt;
    }
    this.lastCursorWriteAt = env.deps.clock.now();
  }

  /** A test's crash point (functions/faults.ts): stop here as if the process had been killed. */
  private crash(point: CrashPoint): void {
    this.assertAlive();
    const sw = this.env.settings.crashAt;
    if (!crashSwitchAsks(sw, point) || !sw(point, this.batchId)) return;
    this.crashedAt = point;
    this.stopped = true;
    throw new CrashPointReached(point, this.batchId);
  }

  /** After a crash point nothing of this request runs on (its other chunks, the cursor, the settle). */
  private assertAlive(): void {
    if (this.crashedAt) throw new CrashPointReached(this.crashedAt, this.batchId);
  }

  /** The stored batch (as read when the request started). */
  get storedBatch(): Batch {
    return this.batch;
  }

  /** A JSON body knows its count up front: a stored total that differs is a conflict before any write. */
  checkTotal(total: number, problems: ProblemList): boolean {
    if (!this.fresh && this.batch.total !== null && this.batch.total !== total) {
      problems.add(
        "conflict",
        "items",
        `the stored batch has ${this.batch.total} items; this submission has ${total}`,
      );
      return false;
    }
    return true;
  }

  /**
   * Starts storing (or comparing) and then publishing the next chunk. A new batch's chunks are
   * stored `chunksInFlight` at a time; otherwise stores run one at a time, in order (a
   * re-submission must compare chunk k before anything of chunk k+1 is written), while the
   * previous chunk's publish and the caller's reading of the next chunk overlap them.
   * Returns false when the submission must stop: problems were added (409 conflict, duplicate
   * ids) or the batch was cancelled.
   */
  async writeChunk(items: ChunkItem[], problems: ProblemList): Promise<boolean> {
    this.assertAlive();
    const window = this.concurrentStores ? this.env.settings.chunksInFlight : 2;
    const w0 = Date.now();
    // The window counts stores, not publishes (a chunk's slot is free once its commit is back, as
    // in the raw baseline where writes and publishes overlap); chunks still publishing are bounded
    // by twice the window and by bytes (payloads of up to 64 KiB make a 500-item chunk ~32 MiB).
    for (;;) {
      while (this.inflight[0]?.settled) this.advance(await this.inflight.shift()!.promise);
      const busy =
        this.storing >= window ||
        this.inflight.length >= 2 * window ||
        (this.inflight.length > 0 && this.bytesInFlight >= maxBytesInFlight);
      if (!busy) break;
      await new Promise<void>((resolve) => this.wakeWriter.push(resolve));
    }
    this.timings.windowWaitMs += Date.now() - w0;
    // The cursor is written beside the stores, not between them: a transaction on the batch
    // document takes as long as a chunk's commit when Firestore is busy, and awaiting it here
    // stalled the intake about once a second. Its failure surfaces on the next chunk.
    await this.settleCursorWrite(false);
    // Only a batch being published has a cursor to move: a blocked batch's stored items were not
    // published, and a cursor past them would make publishFromCursor skip them once it is unblocked.
    if (this.publishing && !this.stopped && !this.cursorWrite) {
      const write = { done: false, promise: this.writeCursor(false) };
      write.promise.then(
        () => (write.done = true),
        () => (write.done = true),
      );
      this.cursorWrite = write;
    }
    this.assertAlive(); // a chunk in flight reached a crash point while this one waited
    if (this.stopped) return false;
    const from = this.nextSeq;
    const to = from + items.length;
    this.nextSeq = to;
    if (items.length > 0) this.lastItemId = items[items.length - 1]!.itemId;
    const bytes = items.reduce((n, it) => n + (it.origin.sourceBytes ?? 0), 0);
    this.storing++;
    this.bytesInFlight += bytes;
    const stored = this.concurrentStores
      ? this.store(items, from, problems)
      : this.lastStore.then(() => this.store(items, from, problems));
    this.lastStore = stored.catch(() => {});
    const storeDone = () => {
      this.storing--;
      this.wake();
    };
    stored.then(storeDone, storeDone);
    const task = stored.then(async (ok) => {
      if (!ok) return null;
      this.crash("afterChunkStore");
      await this.publishChunk(items, from);
      this.crash("afterPublish");
      return to;
    });
    const entry = { settled: false, promise: task };
    const taskDone = () => {
      entry.settled = true;
      this.bytesInFlight -= bytes;
      this.wake();
    };
    task.then(taskDone, taskDone); // the result (or failure) is taken in order by a later call or by finish()/stop()
    this.inflight.push(entry);
    return true;
  }

  private wake(): void {
    const waiting = this.wakeWriter;
    this.wakeWriter = [];
    for (const resolve of waiting) resolve();
  }

  /**
   * Stops early (problems found, client gone, batch cancelled): lets the chunks in flight finish
   * and records the cursor. Never throws: the caller is already answering with the reason.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.crashedAt) return;
    try {
      await this.drain();
      await this.settleCursorWrite(true);
      if (this.publishing) await this.writeCursor(true);
      // Cancelled mid-submission: what this request stored after the cancel's sweep is swept too.
      if (this.terminated) await this.sweepTerminated(this.terminated);
    } catch (err) {
      this.env.log.warn("batch.submission_stop_failed", `batch ${this.batchId}: ${(err as Error).message}`, {
        batchId: this.batchId,
      });
    }
  }

  /** Waits for every chunk in flight, in order; the first failure is thrown after all have settled. */
  private async drain(): Promise<void> {
    let failure: unknown = null;
    while (this.inflight.length > 0) {
      try {
        const to = await this.inflight.shift()!.promise;
        if (failure === null) this.advance(to);
      } catch (err) {
        failure ??= err;
      }
    }
    if (failure !== null) throw failure;
  }

  /** Moves the published prefix over a finished chunk (in order; never past a skipped one). */
  private advance(to: number | null): void {
    if (to === null) this.gap = true;
    else if (!this.gap) this.publishedUpTo = Math.max(this.publishedUpTo, to);
  }

  /** Compares and stores one chunk; false when it found problems (or the submission stopped). */
  private async store(items: ChunkItem[], from: number, problems: ProblemList): Promise<boolean> {
    if (this.stopped) return false;
    const { ledger } = this.env.deps;
    const to = from + items.length;
    const before = problems.total;

    // 1. Compare with what is stored at these positions (a re-submission, or a concurrent one).
    //    A re-submission that may store joins first: a writer already storing then sees it (step 3).
    const missing: boolean[] = items.map(() => true);
    if (!this.fresh && this.accepting) {
      this.join ??= ledger.joinSubmission(this.batchId, this.env.deps.clock.now()).then(() => undefined);
      await this.join;
    }
    if (!this.fresh) {
      const t0 = Date.now();
      const stored = await ledger.getItemsBySeq(this.batchId, from, items.length);
      this.timings.compareMs += Date.now() - t0;
      for (const s of stored) {
        const i = s.seq - from;
        const item = items[i];
        if (!item) continue;
        missing[i] = false;
        this.matched++;
        this.compare(item, s, problems);
      }
    }
    if (problems.total > before) {
      this.stopped = true;
      return false;
    }

    // 2. Store what is missing, in contiguous runs (create-only).
    const created: Array<{ itemId: string; seq: number; item: ChunkItem }> = [];
    let joinedWriters = 0;
    if (missing.some(Boolean)) {
      const firstMissing = missing.indexOf(true);
      if (!this.accepting) {
        problems.add(
          "conflict",
          items[firstMissing]!.origin.label,
          `the stored batch is ${this.batch.status}${this.batch.reason ? ` (${this.batch.reason})` : ""} and holds ${this.batch.received} items; it accepts no more: submit under a new id`,
        );
        this.stopped = true;
        return false;
      }
      if (this.batch.total !== null && to > this.batch.total) {
        problems.add(
          "conflict",
          items[Math.max(firstMissing, this.batch.total - from)]!.origin.label,
          `the stored batch has ${this.batch.total} items; this submission has more`,
        );
        this.stopped = true;
        return false;
      }
      for (const run of missingRuns(missing)) {
        const runItems = items.slice(run.start, run.end);
        const t0 = Date.now();
        let alreadyExisting: string[];
        try {
          let seen: number;
          ({ alreadyExisting, joinedWriters: seen } = await ledger.appendItems(
            this.batchId,
            from + run.start,
            runItems.map(({ itemId, payload }) => ({ itemId, payload })),
            this.env.deps.clock.now(),
            { publishable: this.publishing, deferReceived: this.concurrentStores },
          ));
          joinedWriters = Math.max(joinedWriters, seen);
        } catch (err) {
          if (!(err instanceof BatchFencedError)) throw err;
          // The batch stopped admitting items (core/batchFence.ts): nothing of this run was stored.
          if (!(await this.afterFence(err, runItems, from + run.start, problems))) return false;
          continue;
        } finally {
          this.timings.storeMs += Date.now() - t0;
        }
        this.stored += runItems.length - alreadyExisting.length;
        const existed = new Set(alreadyExisting);
        runItems.forEach((it, i) => {
          if (!existed.has(it.itemId))
            created.push({ itemId: it.itemId, seq: from + run.start + i, item: it });
        });
        if (alreadyExisting.length > 0)
          await this.explainExisting(runItems, from + run.start, alreadyExisting, problems);
      }
      if (problems.total > before) {
        this.stopped = true;
        return false;
      }
    }

    // 3. One item per position. Create-only writes are keyed by item id, so two requests of this
    //    batch sending different items at once can both store theirs at one position (each compared
    //    with what was stored before either wrote). Each checks after its own store and before its
    //    publish, with a count of the chunk's positions: whoever stored second sees both items and
    //    withdraws its own; the first sees only its own (and goes on) or both (and yields too).
    //    Either way no position keeps two items and no withdrawn item was ever published.
    //    Who checks: a re-submission, always (it joined a batch another request may be storing), and
    //    an append that began while another append was in flight (core/concurrentAppends.ts); the
    //    request that started first, once its commits see a join — its commits before the join
    //    were visible to the joiner's comparison. A lone submission or append pays nothing for this.
    const mayShare = this.checksEveryChunk || joinedWriters > this.joinedAtStart;
    if (created.length > 0 && mayShare && !(await this.holdsPositionsAlone(created, items, from, problems))) {
      this.stopped = true;
      return false;
    }

    return true;
  }

  /**
   * Step 3 of store: true when the chunk's positions hold one item each. Otherwise withdraws the
   * items this request created at a shared position and names each position in a 409 problem.
   */
  private async holdsPositionsAlone(
    created: Array<{ itemId: string; seq: number; item: ChunkItem }>,
    items: ChunkItem[],
    from: number,
    problems: ProblemList,
  ): Promise<boolean> {
    const { ledger, clock } = this.env.deps;
    const t0 = Date.now();
    const count = await ledger.countItemsAt(this.batchId, from, items.length);
    this.timings.compareMs += Date.now() - t0;
    if (count <= items.length) return true;
    const bySeq = new Map<number, string[]>();
    for (const s of await ledger.getItemsBySeq(this.batchId, from, items.length))
      bySeq.set(s.seq, [...(bySeq.get(s.seq) ?? []), s.itemId]);
    const shared = created.filter((c) => (bySeq.get(c.seq)?.length ?? 0) > 1);
    if (shared.length === 0) return true;
    // In slices: a chunk is up to 500 items, and one commit takes at most 500 writes (the deletes
    // plus the batch document's `received`).
    const withdrawn = new Set<string>();
    for (let at = 0; at < shared.length; at += withdrawSlice)
      for (const id of await ledger.withdrawItems(
        this.batchId,
        shared.slice(at, at + withdrawSlice),
        clock.now(),
      ))
        withdrawn.add(id);
    this.stored -= withdrawn.size;
    for (const c of shared) {
      const others = bySeq.get(c.seq)!.filter((id) => id !== c.itemId);
      problems.add(
        "conflict",
        c.item.origin.label,
        `position ${c.seq} also holds item "${others.join('", "')}", stored at the same time by another request of this batch with different items; ${withdrawn.has(c.itemId) ? `item "${c.itemId}" was withdrawn` : `item "${c.itemId}" could not be withdrawn (already taken)`}: send one content per batch id`,
      );
    }
    this.env.log.warn(
      "batch.position_conflict",
      `batch ${this.batchId}: ${shared.length} positions from ${shared[0]!.seq} stored twice by concurrent requests with different items; this request withdrew ${withdrawn.size}`,
      { batchId: this.batchId, positions: shared.map((c) => c.seq).slice(0, 20), withdrawn: withdrawn.size },
    );
    return false;
  }

  /**
   * A fenced store was refused. Terminated (cancelled, failed): the submission stops and says so.
   * Sealed by another request of the same batch (a client's concurrent re-submission): this run is
   * fine if every item of it is stored as sent — then it counts as matched. Anything else: a 409
   * naming why the batch accepts no more items.
   */
  private async afterFence(
    err: BatchFencedError,
    items: ChunkItem[],
    from: number,
    problems: ProblemList,
  ): Promise<boolean> {
    const { ledger } = this.env.deps;
    const current = await ledger.getBatch(this.batchId);
    if (current?.terminateAs) {
      this.terminated = current;
      this.stopped = true;
      return false;
    }
    const stored = await ledger.getItemsBySeq(this.batchId, from, items.length);
    const before = problems.total;
    for (const s of stored) {
      const item = items[s.seq - from];
      if (item) this.compare(item, s, problems);
    }
    if (stored.length < items.length && problems.total === before)
      problems.add("conflict", items[0]!.origin.label, err.message);
    if (problems.total > before) {
      this.stopped = true;
      return false;
    }
    this.matched += stored.length;
    return true;
  }

  /** Publishes a stored chunk's doorbells: only now do its items exist for a worker to read. */
  private async publishChunk(items: ChunkItem[], from: number): Promise<void> {
    this.assertAlive();
    if (!this.publishing) return;
    const generation = this.batch.generation;
    const refs: ItemRef[] = [];
    items.forEach((it, i) => {
      if (from + i >= this.cursorAtStart) refs.push({ batchId: this.batchId, itemId: it.itemId, generation });
    });
    const t0 = Date.now();
    // A re-submission publishes items an earlier request stored, perhaps while the batch was blocked
    // (unpublishable, no pendingSince): mark them first, so a lost publish is still found by the
    // stale-pending sweep. A new batch's items were stored publishable.
    if (refs.length > 0 && !this.fresh)
      await this.env.deps.ledger.touchPending(refs, this.env.deps.clock.now());
    if (refs.length > 0) await this.env.deps.queue.publish(this.batch.pipeline, refs);
    this.timings.publishMs += Date.now() - t0;
    this.published += refs.length;
  }

  /**
   * Ends an append request (not the submission): waits for its chunks, then records the cursor and
   * `received` (the stored prefix). Returns the batch when it was terminated meanwhile (its pending
   * items swept), else null. A failure (e.g. a store refused by the fence) is thrown once every
   * chunk in flight has settled: call stop() then, which records what was stored.
   */
  async flush(): Promise<Batch | null> {
    this.assertAlive();
    await this.drain();
    await this.settleCursorWrite(true);
    this.crash("beforeCursorWrite");
    if (this.publishing) await this.writeCursor(true);
    if (this.terminated) return this.sweepTerminated(this.terminated);
    return null;
  }

  /** Ends the submission of `total` items: the batch starts (or records its total while blocked) and settles. */
  async finish(total: number, problems: ProblemList): Promise<FinishOutcome | null> {
    const { ledger, clock } = this.env.deps;
    this.assertAlive();
    await this.drain();
    await this.settleCursorWrite(true);
    if (this.stopped && !this.terminated) return null;
    if (!this.terminated && this.accepting) {
      // Cancelled since the last cursor write? (markSubmitted would start it regardless.)
      const current = await ledger.getBatch(this.batchId);
      if (current?.terminateAs) this.terminated = current;
    }
    if (this.terminated) {
      if (this.publishing) await this.writeCursor(true);
      return { kind: "terminated", batch: await this.sweepTerminated(this.terminated) };
    }

    if (!this.fresh) {
      // Stored items beyond this submission's end: the stored batch is longer (one indexed read).
      const beyond = await ledger.getItemsBySeq(this.batchId, total, 1);
      if (beyond.length > 0 || (this.batch.total !== null && this.batch.total !== total)) {
        problems.add(
          "conflict",
          "items",
          `the stored batch has ${Math.max(this.batch.total ?? 0, this.batch.received, total + beyond.length)} or more items; this submission has ${total}`,
        );
        return null;
      }
    }
    if (!this.accepting) {
      const b = this.batch;
      // Sealed with this total by a submission whose coordinator died before it started the batch
      // (crash after the seal, before its cursor write): finish that start now instead of leaving
      // it to the reconciler's stale-submission sweep.
      const sealedNotStarted =
        b.status === "submitting" && b.submissionComplete && b.terminateAs === null && b.generation === 1;
      if (!sealedNotStarted || b.total !== total) return { kind: "unchanged", batch: b };
      await this.publishFromCursor(b.cursor, total);
      if (await ledger.markSubmitted(this.batchId, total, clock.now()))
        await settleAfterRequest(this.finalizeDeps(), this.batchId);
      return { kind: "submitted", batch: (await ledger.getBatch(this.batchId)) ?? b };
    }

    let current: Batch | null;
    if (this.publishing) {
      // The seal first: from here on the fence refuses new items and the total is on the batch, so
      // a coordinator that dies before the cursor write below leaves a batch the reconciler finishes
      // on its own (it derives the stored prefix, finds every item stored, publishes from the cursor
      // and starts it) rather than failing it as incomplete_submission (issue #15 item 4).
      if (!this.batch.submissionComplete) await ledger.recordTotal(this.batchId, total, clock.now());
      this.crash("beforeCursorWrite");
      await this.writeCursor(true);
      if (this.terminated) return { kind: "terminated", batch: await this.sweepTerminated(this.terminated) };
      const started = await ledger.markSubmitted(this.batchId, total, clock.now());
      current = started ? null : await ledger.getBatch(this.batchId);
    } else {
      await ledger.recordTotal(this.batchId, total, clock.now());
      current = await ledger.getBatch(this.batchId);
      if (current?.status === "submitting" && !current.terminateAs) {
        // Unblocked by the reconciler while this request was still storing items (stored
        // unpublished): publish from the cursor now rather than waiting for a stale-submission sweep.
        await this.publishFromCursor(current.cursor, total);
        await ledger.markSubmitted(this.batchId, total, clock.now());
        current = null;
      }
    }
    if (current?.terminateAs) return { kind: "terminated", batch: await this.sweepTerminated(current) };
    // Items may all have finished while the batch was still `submitting` (their workers could not
    // finalize it): settle. One point read usually rules that out — the item stored last: while it
    // is pending or running the batch cannot be finished, and whoever ends it does so after the
    // batch started, so it finalizes the batch. Only a terminal last item costs the existence
    // query, which the emulator answers by scanning every item (2–3 s at 100k).
    if (!(await this.lastItemIsLive())) await settleAfterRequest(this.finalizeDeps(), this.batchId);
    const after = await ledger.getBatch(this.batchId);
    return { kind: "submitted", batch: after ?? this.batch };
  }

  private compare(item: ChunkItem, stored: Item, problems: ProblemList): void {
    if (stored.itemId !== item.itemId) {
      problems.add(
        "conflict",
        pathOf(item, "id"),
        `position ${stored.seq} is stored as item "${stored.itemId}", not "${item.itemId}"`,
      );
    } else if (!sameContent(stored.payload, item.payload)) {
      problems.add(
        "conflict",
        pathOf(item, "payload"),
        `differs from the stored payload of item "${item.itemId}"`,
      );
    }
  }

  /**
   * Ids whose create found a document: either a concurrent identical submission stored them (same
   * position: compare), or the id was already used at another position of this batch (400).
   */
  private async explainExisting(
    runItems: ChunkItem[],
    runFrom: number,
    existing: string[],
    problems: ProblemList,
  ): Promise<void> {
    const { ledger } = this.env.deps;
    const ids = new Set(existing);
    // One query for the run's positions (a concurrent submission stored them there); a single
    // read only for ids found elsewhere (an id used twice).
    const atPositions = new Map(
      (await ledger.getItemsBySeq(this.batchId, runFrom, runItems.length)).map((it) => [it.seq, it]),
    );
    for (let i = 0; i < runItems.length; i++) {
      const item = runItems[i]!;
      if (!ids.has(item.itemId)) continue;
      const here = atPositions.get(runFrom + i);
      const stored = here?.itemId === item.itemId ? here : await ledger.getItem(this.batchId, item.itemId);
      if (!stored) continue;
      if (stored.seq === runFrom + i) this.compare(item, stored, problems);
      else
        problems.add(
          "invalid",
          pathOf(item, "id"),
          `duplicate item id "${item.itemId}" (already used by the item at position ${stored.seq})`,
        );
    }
  }

  /** Waits for the cursor write under way (or only collects a finished one): its error is thrown here. */
  private async settleCursorWrite(wait: boolean): Promise<void> {
    const write = this.cursorWrite;
    if (!write || (!wait && !write.done)) return;
    this.cursorWrite = null;
    await write.promise;
  }

  private async writeCursor(force: boolean): Promise<void> {
    if (this.crashedAt) return;
    const now = this.env.deps.clock.now();
    // Chunks keep finishing while the write is under way: record what this write says.
    const upTo = this.publishedUpTo;
    if (upTo <= this.cursorWritten) return;
    if (!force && now - this.lastCursorWriteAt < this.env.settings.cursorIntervalMs) return;
    this.lastCursorWriteAt = now;
    const t0 = Date.now();
    // Stored and published are one prefix here (a chunk counts once both are done): `received`
    // moves with the cursor when the stores defer it.
    const b = await this.env.deps.ledger.advanceCursor(
      this.batchId,
      upTo,
      now,
      this.concurrentStores ? upTo : undefined,
    );
    this.timings.cursorWrites++;
    this.timings.cursorMs += Date.now() - t0;
    this.cursorWritten = Math.max(this.cursorWritten, upTo);
    if (b.terminateAs) {
      this.terminated = b;
      this.stopped = true;
    }
  }

  private async publishFromCursor(cursor: number, total: number): Promise<void> {
    const { ledger, queue, clock } = this.env.deps;
    let at = cursor;
    while (at < total) {
      const refs = await ledger.readItemRefs(
        this.batchId,
        at,
        Math.min(this.env.settings.chunkItems, total - at),
      );
      if (refs.length === 0) break;
      await ledger.touchPending(refs, clock.now());
      await queue.publish(this.batch.pipeline, refs);
      this.published += refs.length;
      at += refs.length;
      await ledger.advanceCursor(this.batchId, at, clock.now());
    }
  }

  /** Cancelled during the submission: the pending items this request stored are failed `cancelled` too. */
  private async sweepTerminated(batch: Batch): Promise<Batch> {
    const { ledger, clock } = this.env.deps;
    if (batch.terminateAs === "cancelled") {
      const reason = batch.reason ?? "cancelled";
      while (
        (await ledger.cancelPendingItems(
          this.batchId,
          reason,
          this.env.settings.operatorPageSize,
          clock.now(),
        )) > 0
      ) {
        // next page
      }
    }
    await settleAfterRequest(this.finalizeDeps(), this.batchId);
    return (await ledger.getBatch(this.batchId)) ?? batch;
  }

  private async lastItemIsLive(): Promise<boolean> {
    if (this.lastItemId === null) return false;
    const item = await this.env.deps.ledger.getItem(this.batchId, this.lastItemId);
    return item !== null && (item.status === "pending" || item.status === "running");
  }

  private finalizeDeps() {
    return finalizeDepsFor(this.env.deps, this.env.log);
  }
}

function pathOf(item: ChunkItem, field: string): string {
  return item.origin.label.startsWith("line ")
    ? `${item.origin.label}: ${field}`
    : `${item.origin.label}.${field}`;
}

function missingRuns(missing: boolean[]): Array<{ start: number; end: number }> {
  const runs: Array<{ start: number; end: number }> = [];
  let start = -1;
  missing.forEach((m, i) => {
    if (m && start < 0) start = i;
    if (!m && start >= 0) {
      runs.push({ start, end: i });
      start = -1;
    }
  });
  if (start >= 0) runs.push({ start, end: missing.length });
  return runs;
}
