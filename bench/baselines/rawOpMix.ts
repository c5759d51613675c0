// The raw end-to-end limit (DESIGN.md §9): the emulators doing the same work per item as a Tally
// batch — the item documents written and the doorbells published in windows as the coordinator
// does, one push delivery per item through the same local front door to W bare endpoint processes
// (bench/children/rawPushEndpoint.ts) that do the same count of transactions and queries, and a
// paged read of every item at the end (the export's read) — with no Tally logic anywhere.
import { join } from "node:path";
import type { Firestore } from "@google-cloud/firestore";
import type { PubSub } from "@google-cloud/pubsub";
import type { DeliverySettings } from "../../functions/topology";
import { type Backend, startFrontDoor } from "../../local/frontDoor";
import { waitFor } from "../../local/waitFor";
import type { EmulatorHosts } from "../support/clients";
import { emulatorEnv } from "../support/clients";
import { type DeliveryWindow, measureDeliveryWindow, type WindowMeasure } from "../support/deliveryWindow";
import { perSecond } from "../support/stats";
import { spawnTs, type TsChild } from "../support/tsChild";
import { rawPublishes, writeBatchWrites } from "./rawSubmission";

export interface OpMix {
  /** Reads of the item document per delivery, outside transactions. */
  plainReads: number;
  /** Read+write transactions on the item document per delivery. */
  transactions: number;
  /** Writes to the item document per delivery outside transactions (conditional on its update time). */
  plainWrites: number;
  /** Queries per delivery (the "anything left?" existence query). */
  queries: number;
}

export interface RawOpMixResult {
  items: number;
  workers: number;
  mix: OpMix;
  ms: number;
  itemsPerSecond: number;
}

const submitWindow = 5_000;
const rawWarmupItems = 20;

/** W bare endpoint processes behind a front door, and a push subscription on a fresh topic. */
interface RawPipeline {
  topicName: string;
  batchId: string;
  /** Deliveries the endpoints have answered so far. */
  done(): number;
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Writes items `from`…`to-1` and publishes their doorbells, a window at a time. */
  submit(from: number, to: number): Promise<void>;
  stop(): Promise<void>;
}

async function startRawPipeline(opts: {
  hosts: EmulatorHosts;
  projectId: string;
  db: Firestore;
  pubsub: PubSub;
  workers: number;
  mix: OpMix;
  delivery: DeliverySettings;
  paused: boolean;
}): Promise<RawPipeline> {
  const { db, pubsub } = opts;
  const tag = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;
  const topicName = `raw-work-${tag}`;
  const subName = `${topicName}-push`;
  const batchId = `raw-${tag}`;
  const children: TsChild[] = [];
  const backends: Backend[] = [];
  const done = new Map<number, number>();
  const [topic] = await pubsub.createTopic(topicName);
  let frontDoor: Awaited<ReturnType<typeof startFrontDoor>> | null = null;
  const stop = async () => {
    await pubsub
      .subscription(subName)
      .delete()
      .catch(() => {});
    await topic.delete().catch(() => {});
    await frontDoor?.close();
    await Promise.all(children.map((c) => c.stop()));
  };
  try {
    await Promise.all(
      Array.from({ length: opts.workers }, async (_, i) => {
        let port = 0;
        const child = await spawnTs(join(__dirname, "../children/rawPushEndpoint.ts"), {
          env: {
            ...emulatorEnv(opts.hosts, opts.projectId),
            BENCH_RAW_TRANSACTIONS: String(opts.mix.transactions),
            BENCH_RAW_QUERIES: String(opts.mix.queries),
            BENCH_RAW_READS: String(opts.mix.plainReads),
            BENCH_RAW_WRITES: String(opts.mix.plainWrites),
          },
          readyLine: (l) => {
            const m = /^listening (\d+)$/.exec(l.trim());
            if (m) port = Number(m[1]);
            return m !== null;
          },
          onStdoutLine: (l) => {
            const m = /^done (\d+)$/.exec(l.trim());
            if (m) done.set(i, Number(m[1]));
          },
        });
        children.push(child);
        backends.push({ name: `raw ${i + 1}`, url: `http://127.0.0.1:${port}` });
      }),
    );
    const door = await startFrontDoor({ backends: () => backends });
    frontDoor = door;
    const d = opts.delivery;
    await topic.createSubscription(subName, {
      pushConfig: opts.paused ? {} : { pushEndpoint: door.url },
      ackDeadlineSeconds: d.ackDeadlineSeconds,
      retryPolicy: {
        minimumBackoff: { seconds: d.minimumBackoffSeconds },
        maximumBackoff: { seconds: d.maximumBackoffSeconds },
      },
    });
    return {
      topicName,
      batchId,
      done: () => [...done.values()].reduce((a, b) => a + b, 0),
      pause: async () => {
        await pubsub.subscription(subName).modifyPushConfig({});
      },
      resume: async () => {
        await pubsub.subscription(subName).modifyPushConfig({ pushEndpoint: door.url });
      },
      submit: async (from, to) => {
        for (let a = from; a < to; a += submitWindow) {
          const b = Math.min(to, a + submitWindow);
          await writeBatchWrites(db, batchId, b, a);
          await rawPublishes(pubsub, topicName, batchId, b, a);
        }
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

type RawOptions = {
  hosts: EmulatorHosts;
  projectId: string;
  db: Firestore;
  pubsub: PubSub;
  workers: number;
  mix: OpMix;
  delivery: DeliverySettings;
  deadlineMs: number;
  progress: (m: string) => void;
};

/** The end-to-end baseline: submit N, every delivery, then the export's read. */
export async function measureRawOpMix(opts: RawOptions & { items: number }): Promise<RawOpMixResult> {
  const { db, items: n } = opts;
  const raw = await startRawPipeline({ ...opts, paused: false });
  try {
    // Warm-up, as Tally's stack gets one: 20 items through the fresh subscription and endpoints.
    await raw.submit(0, rawWarmupItems);
    await waitFor("raw warm-up deliveries", () => raw.done() >= rawWarmupItems, opts.deadlineMs, 20);
    const t0 = performance.now();
    await raw.submit(rawWarmupItems, rawWarmupItems + n);
    await waitFor(`${n} raw deliveries`, () => raw.done() >= rawWarmupItems + n, opts.deadlineMs, 20);
    // The export's read: every measured item once, in pages.
    let after: number = rawWarmupItems - 1;
    for (;;) {
      const snap = await db
        .collection("batches")
        .doc(raw.batchId)
        .collection("items")
        .where("status", "==", "succeeded")
        .orderBy("seq")
        .startAfter(after)
        .select("itemId", "seq", "result", "finishedAt", "attempt")
        .limit(1000)
        .get();
      if (snap.empty) break;
      after = snap.docs[snap.docs.length - 1]!.get("seq");
      if (snap.size < 1000) break;
    }
    const ms = performance.now() - t0;
    opts.progress(
      `raw op mix, ${opts.workers} endpoint(s): ${n} items in ${Math.round(ms)} ms (${Math.round(perSecond(n, ms))}/s)`,
    );
    return { items: n, workers: opts.workers, mix: opts.mix, ms, itemsPerSecond: perSecond(n, ms) };
  } finally {
    await raw.stop();
  }
}

/**
 * The scaling baseline: a backlog of B items queued while deliveries are paused, then the rate over
 * the same kind of window as Tally's (see support/deliveryWindow.ts).
 */
export async function measureRawBacklogWindow(
  opts: RawOptions & { backlog: number; window: DeliveryWindow },
): Promise<WindowMeasure> {
  const raw = await startRawPipeline({ ...opts, paused: true });
  try {
    await raw.submit(0, opts.backlog);
    await raw.resume();
    return await measureDeliveryWindow(() => raw.done(), opts.backlog, opts.window, opts.deadlineMs);
  } finally {
    await raw.pause().catch(() => {});
    await raw.stop();
  }
}
