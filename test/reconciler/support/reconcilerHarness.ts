// A reconciler under test on the real emulators: a fresh project (so the reconciler's project-wide
// sweeps only see this test's batches), the Firestore ledger, a work topic with a pull subscription
// that records every doorbell the reconciler publishes, the DuckDB sink in a temp dir, and the
// handler served by the Functions Framework on a loopback port. Workers are simulated through the
// ledger: leasing (and never completing) is a vanished worker; completing is a finished item.
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { http } from "@google-cloud/functions-framework";
import { getTestServer } from "@google-cloud/functions-framework/testing";
import type { Message } from "@google-cloud/pubsub";
import { DuckDBResultSink, queryResults } from "../../../functions/adapters/duckdbResultSink";
import { FirestoreLedger } from "../../../functions/adapters/firestoreLedger";
import { PubSubWorkQueue } from "../../../functions/adapters/pubsubWorkQueue";
import { loadConfig, type TallyConfig } from "../../../functions/config";
import { createLogger } from "../../../functions/core/logger";
import type { Batch, NewBatch } from "../../../functions/core/model";
import type { ExportResult, ExportTarget, ItemRef, ResultSink } from "../../../functions/core/ports";
import { systemClock } from "../../../functions/core/ports";
import {
  createReconcilerHandler,
  type ReconcilerHandlerOptions,
} from "../../../functions/handlers/reconciler/reconcilerHandler";
import type { HandlerDeps } from "../../../functions/runtime";
import { testFirestore, testPubSub, uniqueProjectId, waitFor } from "../../support/cloud";
import { harnessWorkTopic } from "../../support/harnessTopics";

export type LogLine = Record<string, unknown> & { event: string; severity: string; message: string };

/** The real DuckDB sink, counting the exports it is asked for (the race test asserts one). */
export class CountingSink implements ResultSink {
  exports: Array<{ batchId: string; generation: number }> = [];
  constructor(readonly inner: DuckDBResultSink) {}
  exportBatch(
    target: ExportTarget,
    rows: AsyncIterable<import("../../../functions/core/model").ResultRow[]>,
  ): Promise<ExportResult> {
    this.exports.push({ batchId: target.batchId, generation: target.generation });
    return this.inner.exportBatch(target, rows);
  }
  countRows(batchId: string) {
    return this.inner.countRows(batchId);
  }
  get operations() {
    return this.inner.operations;
  }
  close() {
    return this.inner.close();
  }
}

export interface HarnessOptions {
  env?: Record<string, string>;
  handler?: ReconcilerHandlerOptions;
}

export interface HttpAnswer {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are asserted field by field
  body: any;
}

export async function startReconcilerHarness(opts: HarnessOptions = {}) {
  const projectId = uniqueProjectId("rec");
  const prefix = `t${randomUUID().slice(0, 6)}`;
  const config: TallyConfig = loadConfig({
    GOOGLE_CLOUD_PROJECT: projectId,
    TALLY_PREFIX: prefix,
    ...opts.env,
  });
  const db = testFirestore(projectId);
  const pubsub = testPubSub(projectId);
  const ledger = new FirestoreLedger(db);
  const dataDir = mkdtempSync(join(tmpdir(), "tally-reconciler-"));
  const duckdbPath = join(dataDir, "results.duckdb");
  const sink = new CountingSink(new DuckDBResultSink(duckdbPath));
  const logs: LogLine[] = [];
  const log = createLogger({ component: "reconciler", sink: (line) => logs.push(JSON.parse(line)) });

  const [topic] = await pubsub.createTopic(harnessWorkTopic(config.topology));
  const [subscription] = await topic.createSubscription(`${harnessWorkTopic(config.topology)}-observer`, {
    ackDeadlineSeconds: 60,
  });
  const doorbells: Array<ItemRef & { messageId: string; at: number }> = [];
  /** Sentinels seen (see `doorbellsSettled`); never counted as doorbells. */
  const sentinels = new Set<string>();
  subscription.on("message", (m: Message) => {
    if (m.attributes.sentinel) {
      sentinels.add(m.attributes.sentinel);
      m.ack();
      return;
    }
    doorbells.push({
      batchId: m.attributes.batchId!,
      itemId: m.attributes.itemId!,
      generation: Number(m.attributes.generation),
      messageId: m.id,
      at: Date.now(),
    });
    m.ack();
  });
  subscription.on("error", () => {
    /* the observer is best effort; assertions say what is missing */
  });
  const queue = new PubSubWorkQueue(pubsub, () => harnessWorkTopic(config.topology));
  const deps: HandlerDeps = { config, ledger, queue, sink, clock: systemClock, log };

  const name = `reconciler-${prefix}`;
  http(name, createReconcilerHandler(deps, opts.handler));
  const server = getTestServer(name);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const post = async (
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<HttpAnswer> => {
    const res = await fetch(`${url}${path}`, {
      method: "POST",
      headers: body === undefined ? headers : { "content-type": "application/json", ...headers },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };

  const finalizedEvents = (batchId: string) =>
    logs.filter((l) => l.event === "batch.finalized" && l.batchId === batchId);

  const h = {
    projectId,
    config,
    db,
    pubsub,
    ledger,
    sink,
    duckdbPath,
    logs,
    doorbells,
    deps,
    url,
    post,
    finalizedEvents,
    /** One POST /reconcile, as Cloud Scheduler sends it (no body). */
    async tick(body?: unknown): Promise<HttpAnswer> {
      return post(config.topology.reconcilePath, body);
    },
    async deadLetter(envelope: unknown, headers?: Record<string, string>): Promise<HttpAnswer> {
      return post(config.topology.deadLetterPath, envelope, headers);
    },
    doorbellsFor(batchId: string): string[] {
      return doorbells.filter((d) => d.batchId === batchId).map((d) => d.itemId);
    },
    /**
     * For absence checks ("nothing was published"): publishes a sentinel on the work topic after the
     * action and waits until the observer has received it, so a doorbell the action published has
     * had its chance to arrive before the caller asserts that none did.
     */
    async doorbellsSettled(timeoutMs = 15_000): Promise<void> {
      const sentinel = randomUUID();
      await topic.publishMessage({ data: Buffer.alloc(0), attributes: { sentinel } });
      await waitFor(`the sentinel ${sentinel} on the work topic`, () => sentinels.has(sentinel), timeoutMs);
    },
    /** Waits until every listed item of the batch has had at least one doorbell observed. */
    async waitForDoorbells(batchId: string, itemIds: string[], timeoutMs = 15_000) {
      return waitFor(
        `doorbells for ${batchId}: ${itemIds.join(",")}`,
        () => {
          const seen = new Set(h.doorbellsFor(batchId));
          return itemIds.every((id) => seen.has(id));
        },
        timeoutMs,
      );
    },
    /**
     * A batch as the coordinator leaves it: created, items stored, doorbells "published" (cursor
     * moved; nothing is actually published), `running` — or `blocked` with its total recorded.
     */
    async createBatch(
      batchId: string,
      n: number,
      over: Partial<NewBatch> & { at?: number; state?: "running" | "stored" } = {},
    ): Promise<Batch> {
      const at = over.at ?? Date.now();
      const dependsOn = over.dependsOn ?? [];
      await ledger.createBatch(
        {
          batchId,
          pipeline: "demo",
          failureThreshold: over.failureThreshold ?? 0.05,
          dependsOn,
          contentHash: `hash-${batchId}`,
          total: over.total === undefined ? n : over.total,
        },
        at,
      );
      const items = Array.from({ length: n }, (_, i) => ({ itemId: `i${i}`, payload: { value: i } }));
      if (n > 0) await ledger.appendItems(batchId, 0, items, at, { publishable: dependsOn.length === 0 });
      if (over.state !== "stored") {
        if (dependsOn.length > 0) await ledger.recordTotal(batchId, n, at);
        else {
          await ledger.advanceCursor(batchId, n, at);
          await ledger.markSubmitted(batchId, n, at);
        }
      }
      return (await ledger.getBatch(batchId))!;
    },
    /**
     * Simulated workers: lease and finish every pending item of the batch — `fail` names the items
     * that fail permanently. Does not settle the batch (the caller decides who finalizes).
     */
    async finishItems(batchId: string, fail: (itemId: string) => boolean = () => false) {
      const { entries } = await ledger.listItems(batchId, { status: "pending", limit: 1000 });
      for (const it of entries) {
        const ref = { batchId, itemId: it.itemId, generation: it.generation };
        const now = Date.now();
        const leased = await ledger.leaseItem(ref, "sim-worker", 60_000, 5, now);
        if (leased.kind !== "leased")
          throw new Error(`could not lease ${batchId}/${it.itemId}: ${leased.kind}`);
        if (fail(it.itemId))
          await ledger.failItem(
            ref,
            { kind: "permanent", message: `simulated failure of ${it.itemId}` },
            now,
            {
              owner: "sim-worker",
            },
          );
        else await ledger.completeItem(ref, "sim-worker", { value: it.payload, attempt: 1, steps: 1 }, now);
      }
      return entries.length;
    },
    async exportsInSink(batchId: string): Promise<number> {
      const rows = await queryResults(
        duckdbPath,
        "SELECT count(*) AS n FROM results.exports WHERE batch_id = $1",
        [batchId],
      );
      return Number(rows[0]?.n ?? 0);
    },
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await subscription.close().catch(() => {});
      await Promise.allSettled([pubsub.close(), db.terminate(), sink.close()]);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return h;
}

export type ReconcilerHarness = Awaited<ReturnType<typeof startReconcilerHarness>>;

/** A push envelope as the dead-letter subscription sends it. */
export function deadLetterEnvelope(
  attributes: Record<string, string>,
  opts: { messageId?: string; subscription?: string } = {},
) {
  return {
    message: {
      attributes,
      data: "",
      messageId: opts.messageId ?? `dl-${randomUUID().slice(0, 8)}`,
      publishTime: new Date().toISOString(),
    },
    subscription: opts.subscription ?? "projects/p/subscriptions/tally-work-dead-letter-push",
  };
}
