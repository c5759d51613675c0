// The raw submission limit (DESIGN.md §9): the same count of batched Firestore writes and batched
// publishes the coordinator performs, done by the emulators' own clients with no Tally code, in the
// same run. Writes are measured two ways (BulkWriter with throttling off, and WriteBatch commits of
// 500 with a few in flight) and the faster one counts; writes and publishes are measured one after
// the other and overlapped, and the faster schedule is the limit. Picking the best of each makes the
// ratio against it conservative.
import type { Firestore } from "@google-cloud/firestore";
import type { PubSub } from "@google-cloud/pubsub";
import { perSecond } from "../support/stats";
import { doorbell, itemIdFor, pendingItemDoc } from "./itemDocShape";

export interface RawSubmissionResult {
  items: number;
  /** Null when the pass was skipped (sizes above bulkWriterUpTo). */
  bulkWriterMs: number | null;
  writeBatchMs: number;
  publishMs: number;
  /** Best writer, then publishes. */
  sequentialMs: number;
  /** Best writer and publishes at the same time. */
  overlappedMs: number;
  /** Items per second of the faster schedule: the limit the coordinator is compared with. */
  itemsPerSecond: number;
  writer: "BulkWriter" | "WriteBatch";
}

/** Enough writes in flight to keep the emulator busy without holding the whole batch in memory. */
const windowSize = 10_000;
const writeBatchSize = 500;
const writeBatchesInFlight = 8;
/** Sizes above this skip the BulkWriter pass (see measureRawSubmission). */
export const bulkWriterUpTo = 200_000;

async function timed(fn: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

export async function bulkWriterWrites(db: Firestore, batchId: string, n: number): Promise<void> {
  const now = Date.now();
  const items = db.collection("batches").doc(batchId).collection("items");
  for (let from = 0; from < n; from += windowSize) {
    const writer = db.bulkWriter({ throttling: false });
    const failures: Error[] = [];
    writer.onWriteError((err) => {
      if (err.failedAttempts < 10) return true;
      failures.push(err);
      return false;
    });
    const to = Math.min(n, from + windowSize);
    for (let i = from; i < to; i++) {
      const id = itemIdFor(i);
      writer.create(items.doc(id), pendingItemDoc(batchId, id, i, now)).catch(() => {
        /* reported through onWriteError */
      });
    }
    await writer.close();
    if (failures.length > 0) throw failures[0];
  }
}

/** Creates items `from`…`n-1` with WriteBatch commits of 500, a few in flight. */
export async function writeBatchWrites(db: Firestore, batchId: string, n: number, from = 0): Promise<void> {
  const now = Date.now();
  const items = db.collection("batches").doc(batchId).collection("items");
  let next = from;
  const lane = async () => {
    for (;;) {
      const from = next;
      if (from >= n) return;
      next += writeBatchSize;
      const wb = db.batch();
      for (let i = from; i < Math.min(n, from + writeBatchSize); i++) {
        const id = itemIdFor(i);
        wb.create(items.doc(id), pendingItemDoc(batchId, id, i, now));
      }
      await wb.commit();
    }
  };
  await Promise.all(Array.from({ length: writeBatchesInFlight }, lane));
}

/** The work queue's client settings: batches of up to 1,000 messages or 10 ms. */
export const publisherSettings = {
  batching: { maxMessages: 1000, maxMilliseconds: 10, maxBytes: 9 * 1024 * 1024 },
};

/** Publishes doorbells for items `start`…`n-1`, a window at a time. */
export async function rawPublishes(
  pubsub: PubSub,
  topicName: string,
  batchId: string,
  n: number,
  start = 0,
): Promise<void> {
  const topic = pubsub.topic(topicName, publisherSettings);
  for (let from = start; from < n; from += windowSize) {
    const to = Math.min(n, from + windowSize);
    const pending: Promise<string>[] = [];
    for (let i = from; i < to; i++) pending.push(topic.publishMessage(doorbell(batchId, itemIdFor(i))));
    await Promise.all(pending);
  }
}

/** Where one write pass writes: a Firestore client, and what to do with it afterwards. */
export interface WriteTarget {
  db: Firestore;
  /** Clears (or discards) what the pass wrote, so the emulator holds one batch at a time. */
  release: () => Promise<void>;
}

export async function measureRawSubmission(opts: {
  pubsub: PubSub;
  topicName: string;
  items: number;
  /** A target for each write pass (the same emulator cleared, or a fresh one for large sizes). */
  writeTarget: () => Promise<WriteTarget>;
  progress: (m: string) => void;
}): Promise<RawSubmissionResult> {
  const { pubsub, topicName, items: n } = opts;
  const tag = `${Date.now().toString(36)}`;
  const pass = async (fn: (db: Firestore) => Promise<void>): Promise<number> => {
    const target = await opts.writeTarget();
    try {
      return await timed(() => fn(target.db));
    } finally {
      await target.release();
    }
  };
  let bulkWriterMs: number | null = null;
  // The BulkWriter (20 writes per request) was 1.4–2.4× slower than WriteBatch×500 at every size
  // measured up to 100k; above that its pass only makes the run longer (a million documents
  // written once more), so the larger sizes run the WriteBatch pass alone.
  if (n <= bulkWriterUpTo) {
    bulkWriterMs = await pass((db) => bulkWriterWrites(db, `raw-bw-${tag}`, n));
    opts.progress(
      `raw BulkWriter: ${n} creates in ${Math.round(bulkWriterMs)} ms (${Math.round(perSecond(n, bulkWriterMs))}/s)`,
    );
  }
  const writeBatchMs = await pass((db) => writeBatchWrites(db, `raw-wb-${tag}`, n));
  opts.progress(
    `raw WriteBatch×500: ${n} creates in ${Math.round(writeBatchMs)} ms (${Math.round(perSecond(n, writeBatchMs))}/s)`,
  );
  const publishMs = await timed(() => rawPublishes(pubsub, topicName, `raw-pub-${tag}`, n));
  opts.progress(
    `raw publishes: ${n} in ${Math.round(publishMs)} ms (${Math.round(perSecond(n, publishMs))}/s)`,
  );
  const writer = bulkWriterMs !== null && bulkWriterMs <= writeBatchMs ? "BulkWriter" : "WriteBatch";
  const write = writer === "BulkWriter" ? bulkWriterWrites : writeBatchWrites;
  const overlappedMs = await pass(async (db) => {
    await Promise.all([write(db, `raw-ov-${tag}`, n), rawPublishes(pubsub, topicName, `raw-ov-${tag}`, n)]);
  });
  const sequentialMs = Math.min(bulkWriterMs ?? Number.POSITIVE_INFINITY, writeBatchMs) + publishMs;
  opts.progress(
    `raw limit: sequential ${Math.round(perSecond(n, sequentialMs))}/s, overlapped ${Math.round(perSecond(n, overlappedMs))}/s`,
  );
  return {
    items: n,
    bulkWriterMs,
    writeBatchMs,
    publishMs,
    sequentialMs,
    overlappedMs,
    itemsPerSecond: perSecond(n, Math.min(sequentialMs, overlappedMs)),
    writer,
  };
}
