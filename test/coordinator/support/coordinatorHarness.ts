// A coordinator under test on the real emulators: a fresh project, the Firestore ledger, the work
// topic with a pull subscription that counts every doorbell, the DuckDB sink in a temp dir, and the
// handler served twice — through the Functions Framework's test server (the deployed path: the
// framework reads the body first) and through the plain streaming server (bodies streamed).
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { http } from "@google-cloud/functions-framework";
import { getTestServer } from "@google-cloud/functions-framework/testing";
import type { Message } from "@google-cloud/pubsub";
import { DuckDBResultSink } from "../../../functions/adapters/duckdbResultSink";
import { FirestoreLedger } from "../../../functions/adapters/firestoreLedger";
import { PubSubWorkQueue } from "../../../functions/adapters/pubsubWorkQueue";
import { loadConfig } from "../../../functions/config";
import { createLogger } from "../../../functions/core/logger";
import { systemClock } from "../../../functions/core/ports";
import { type CoordinatorOptions, createCoordinatorHandler } from "../../../functions/handlers/coordinator";
import type { HandlerDeps } from "../../../functions/handlers/coordinator/handlerDeps";
import { startStreamingServer } from "../../../functions/http/streamingServer";
import { emulatorHosts, testFirestore, testPubSub, uniqueProjectId, waitFor } from "../../support/cloud";
import { harnessWorkTopic } from "../../support/harnessTopics";

export type LogLine = Record<string, unknown> & { event: string; severity: string; message: string };

export interface HttpAnswer {
  status: number;
  headers: Headers | Record<string, string | string[] | undefined>;
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are asserted field by field
  body: any;
}

export interface Doorbell {
  batchId: string;
  itemId: string;
  generation: number;
}

export async function startCoordinatorHarness(opts: CoordinatorOptions = {}) {
  const projectId = uniqueProjectId("coord");
  const prefix = `t${randomUUID().slice(0, 6)}`;
  const config = loadConfig({ GOOGLE_CLOUD_PROJECT: projectId, TALLY_PREFIX: prefix });
  const db = testFirestore(projectId);
  const pubsub = testPubSub(projectId);
  const ledger = new FirestoreLedger(db);
  const dataDir = mkdtempSync(join(tmpdir(), "tally-coordinator-"));
  const sink = new DuckDBResultSink(join(dataDir, "results.duckdb"));
  const logs: LogLine[] = [];
  const log = createLogger({ component: "coordinator", sink: (line) => logs.push(JSON.parse(line)) });

  const [topic] = await pubsub.createTopic(harnessWorkTopic(config.topology));
  const subscriptionName = `${harnessWorkTopic(config.topology)}-counter`;
  // A long ack deadline: a doorbell counted once is never redelivered during the test, so the
  // totals below count publishes, not redeliveries.
  await topic.createSubscription(subscriptionName, { ackDeadlineSeconds: 600 });
  const queue = new PubSubWorkQueue(pubsub, () => harnessWorkTopic(config.topology));
  const deps: HandlerDeps = { config, ledger, queue, sink, clock: systemClock, log };

  const handler = createCoordinatorHandler(deps, opts);
  const name = `coordinator-${prefix}`;
  http(name, handler);
  const framework = getTestServer(name);
  await new Promise<void>((resolve) => framework.listen(0, "127.0.0.1", resolve));
  const frameworkUrl = `http://127.0.0.1:${(framework.address() as AddressInfo).port}`;
  const streaming = await startStreamingServer(handler, { log });

  const pullUrl = `http://${emulatorHosts().pubsubHost}/v1/projects/${projectId}/subscriptions/${subscriptionName}`;
  const pullOnce = async (): Promise<Doorbell[]> => {
    const res = await fetch(`${pullUrl}:pull`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ maxMessages: 1000, returnImmediately: true }),
    });
    if (!res.ok) throw new Error(`pull: ${res.status} ${await res.text()}`);
    const body = (await res.json()) as {
      receivedMessages?: Array<{ ackId: string; message: { attributes: Record<string, string> } }>;
    };
    const received = body.receivedMessages ?? [];
    if (received.length > 0) {
      const ack = await fetch(`${pullUrl}:acknowledge`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ ackIds: received.map((r) => r.ackId) }),
      });
      if (!ack.ok) throw new Error(`acknowledge: ${ack.status} ${await ack.text()}`);
    }
    return received
      .filter((r) => !r.message.attributes.sentinel)
      .map((r) => ({
        batchId: r.message.attributes.batchId!,
        itemId: r.message.attributes.itemId!,
        generation: Number(r.message.attributes.generation),
      }));
  };

  return {
    projectId,
    config,
    db,
    ledger,
    logs,
    deps,
    frameworkUrl,
    streamingUrl: streaming.url,

    events(event: string, batchId?: string): LogLine[] {
      return logs.filter((l) => l.event === event && (batchId === undefined || l.batchId === batchId));
    },

    /**
     * Receives (and acks) doorbells until `expected` have arrived, then until a sentinel published
     * after them has arrived too (see `drainUntil`): a doorbell the action should not have published
     * is among those returned, however late it was on its way.
     */
    async drainDoorbells(expected: number, timeoutMs = 120_000): Promise<Doorbell[]> {
      return this.drainUntil(`${expected} doorbells`, (all) => all.length >= expected, timeoutMs);
    },

    /**
     * Receives (and acks) doorbells with a streaming pull until `done` says so; then publishes a
     * sentinel on the work topic and keeps receiving until the sentinel has arrived, so what the
     * action published has had its chance to arrive before the caller asserts on what did (absence
     * checks included); then closes the pull and pulls whatever else is waiting (synchronous pulls
     * that return at once). Sentinels are never returned.
     */
    async drainUntil(
      what: string,
      done: (all: Doorbell[]) => boolean,
      timeoutMs = 120_000,
    ): Promise<Doorbell[]> {
      const out: Doorbell[] = [];
      const sentinel = randomUUID();
      let sentinelSeen = false;
      const subscription = pubsub.subscription(subscriptionName, {
        flowControl: { maxMessages: 5000, allowExcessMessages: false },
      });
      let failure: Error | null = null;
      subscription.on("message", (m: Message) => {
        m.ack();
        if (m.attributes.sentinel) {
          if (m.attributes.sentinel === sentinel) sentinelSeen = true;
          return;
        }
        out.push({
          batchId: m.attributes.batchId!,
          itemId: m.attributes.itemId!,
          generation: Number(m.attributes.generation),
        });
      });
      subscription.on("error", (err: Error) => {
        failure = err;
      });
      const until = (label: string, condition: () => boolean) =>
        waitFor(
          label,
          () => {
            if (failure) throw failure;
            return condition();
          },
          timeoutMs,
        );
      try {
        await until(what, () => done(out));
        await topic.publishMessage({ data: Buffer.alloc(0), attributes: { sentinel } });
        await until(`the sentinel published after ${what}`, () => sentinelSeen);
      } finally {
        await subscription.close();
      }
      for (let i = 0; i < 2; i++) out.push(...(await pullOnce()));
      return out;
    },

    async request(
      method: string,
      path: string,
      init: { json?: unknown; body?: string; headers?: Record<string, string>; base?: string } = {},
    ): Promise<HttpAnswer> {
      const headers: Record<string, string> = { ...init.headers };
      let body: string | undefined = init.body;
      if (init.json !== undefined) {
        body = JSON.stringify(init.json);
        headers["content-type"] ??= "application/json";
      }
      const res = await fetch(`${init.base ?? frameworkUrl}${path}`, { method, headers, body });
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        // not JSON (e.g. the framework's own HTML error page)
      }
      return { status: res.status, headers: res.headers, body: parsed };
    },

    /**
     * POSTs an NDJSON stream with real backpressure (lines are generated as the socket drains).
     * `abortAfter`: after that many lines, calls `beforeAbort` and destroys the request mid-stream.
     */
    async postNdjson(
      lines: Iterable<string> | AsyncIterable<string>,
      opts: {
        base?: string;
        /** After this many lines (flushed to the socket), run `pause`, then go on. */
        pauseAfter?: number;
        pause?: () => Promise<unknown>;
        /** After this many lines (flushed), run `beforeAbort`, then destroy the request. */
        abortAfter?: number;
        beforeAbort?: () => Promise<unknown>;
        contentType?: string;
      } = {},
    ): Promise<HttpAnswer | "aborted"> {
      const url = new URL("/v1/batches", opts.base ?? streaming.url);
      const req = httpRequest(url, {
        method: "POST",
        headers: { "content-type": opts.contentType ?? "application/x-ndjson" },
      });
      const answer = new Promise<HttpAnswer>((resolve, reject) => {
        req.on("response", (res) => {
          const parts: Buffer[] = [];
          res.on("data", (c: Buffer) => parts.push(c));
          res.on("end", () => {
            const text = Buffer.concat(parts).toString("utf8");
            let body: unknown = text;
            try {
              body = JSON.parse(text);
            } catch {
              // keep the text
            }
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
          });
          res.on("error", reject);
        });
        req.on("error", reject);
      });
      answer.catch(() => {});
      let buf = "";
      let n = 0;
      const flush = async () => {
        if (buf.length === 0) return;
        const ok = req.write(buf);
        buf = "";
        if (!ok) await new Promise<void>((resolve) => req.once("drain", resolve));
      };
      for await (const line of lines as AsyncIterable<string>) {
        buf += `${line}\n`;
        n++;
        if (buf.length >= 64 * 1024) await flush();
        if (opts.pauseAfter !== undefined && n === opts.pauseAfter) {
          await flush();
          await opts.pause?.();
        }
        if (opts.abortAfter !== undefined && n >= opts.abortAfter) {
          await flush();
          await opts.beforeAbort?.();
          req.destroy();
          return "aborted";
        }
      }
      await flush();
      req.end();
      return answer;
    },

    async batchCount(): Promise<number> {
      return (await db.collection("batches").count().get()).data().count;
    },
    async itemCount(): Promise<number> {
      return (await db.collectionGroup("items").count().get()).data().count;
    },

    async close() {
      await streaming.close();
      await new Promise<void>((resolve) => framework.close(() => resolve()));
      await Promise.allSettled([sink.close(), pubsub.close(), db.terminate()]);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export type CoordinatorHarness = Awaited<ReturnType<typeof startCoordinatorHarness>>;

/** NDJSON lines of a batch: the header, then `n` demo items generated one at a time. */
export function* ndjsonBatch(
  header: Record<string, unknown>,
  n: number,
  payload = (i: number) => ({ value: i }),
) {
  yield JSON.stringify(header);
  for (let i = 0; i < n; i++) yield JSON.stringify({ payload: payload(i) });
}
