// The raw end-to-end limit (DESIGN.md §9): the emulators doing the same work per item as a Tally
// batch — the item documents written and the doorbells published in windows as the coordinator
// does, one push delivery per item through the same local front door to W bare endpoint processes
// (bench/children/rawPushEndpoint.ts) that do the same count of transactions and queries, and a
// paged read of every item at the end (the export's read) — with no Tally logic anywhere.
import type { Firestore } from "@google-cloud/firestore";
import type { PubSub } from "@google-cloud/pubsub";
import type { DeliverySettings } from "../../functions/topology";
import { type Backend, startFrontDoor } from "../../local/frontDoor";
import { waitFor } from "../../local/waitFor";
import type { EmulatorHosts } from "../support/clients";
import { emulatorEnv } from "../support/clients";
import { perSecond } from "../support/stats";
import { spawnTs, type TsChild } from "../support/tsChild";
import { rawPublishes, writeBatchWrites } from "./rawSubmission";

export interface OpMix {
  /** Read+write transactions on the item document per delivery. */
  transactions: number;
  /** Queries per delivery (the "anything left?" existence query). */
  queries: number;
  /** Plain document reads per delivery outside transactions. */
  plainReads: number;
}

export interface RawOpMixResult {
  items: number;
  workers: number;
  mix: OpMix;
  ms: number;
  itemsPerSecond: number;
}

const submitWindow = 5_000;

export async function measureRawOpMix(opts: {
  hosts: EmulatorHosts;
  projectId: string;
  db: Firestore;
  pubsub: PubSub;
  items: number;
  workers: number;
  mix: OpMix;
  delivery: DeliverySettings;
  deadlineMs: number;
  progress: (m: string) => void;
}): Promise<RawOpMixResult> {
  const { db, pubsub, items: n } = opts;
  const tag = Date.now().toString(36);
  const topicName = `raw-work-${tag}`;
  const batchId = `raw-e2e-${tag}`;
  const children: TsChild[] = [];
  const backends: Backend[] = [];
  const done = new Map<number, number>();
  const total = () => [...done.values()].reduce((a, b) => a + b, 0);
  const [topic] = await pubsub.createTopic(topicName);
  let frontDoor: Awaited<ReturnType<typeof startFrontDoor>> | null = null;
  try {
    await Promise.all(
      Array.from({ length: opts.workers }, async (_, i) => {
        let port = 0;
        const child = await spawnTs("bench/children/rawPushEndpoint.ts", {
          env: {
            ...emulatorEnv(opts.hosts, opts.projectId),
            BENCH_RAW_TRANSACTIONS: String(opts.mix.transactions),
            BENCH_RAW_QUERIES: String(opts.mix.queries),
            BENCH_RAW_READS: String(opts.mix.plainReads),
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
    frontDoor = await startFrontDoor({ backends: () => backends });
    const d = opts.delivery;
    await topic.createSubscription(`${topicName}-push`, {
      pushConfig: { pushEndpoint: frontDoor.url },
      ackDeadlineSeconds: d.ackDeadlineSeconds,
      retryPolicy: {
        minimumBackoff: { seconds: d.minimumBackoffSeconds },
        maximumBackoff: { seconds: d.maximumBackoffSeconds },
      },
    });
    const t0 = performance.now();
    for (let from = 0; from < n; from += submitWindow) {
      const to = Math.min(n, from + submitWindow);
      await writeBatchWrites(db, batchId, to, from);
      await rawPublishes(pubsub, topicName, batchId, to, from);
    }
    await waitFor(`${n} raw deliveries`, () => total() >= n, opts.deadlineMs, 20);
    // The export's read: every item once, in pages.
    let after: number | undefined;
    for (;;) {
      let q = db
        .collection("batches")
        .doc(batchId)
        .collection("items")
        .where("status", "==", "succeeded")
        .orderBy("seq")
        .select("itemId", "seq", "result", "finishedAt", "attempt")
        .limit(1000);
      if (after !== undefined) q = q.startAfter(after);
      const snap = await q.get();
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
    await pubsub
      .subscription(`${topicName}-push`)
      .delete()
      .catch(() => {});
    await topic.delete().catch(() => {});
    await frontDoor?.close();
    await Promise.all(children.map((c) => c.stop()));
  }
}
