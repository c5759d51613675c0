// The chaos proxy: an HTTP hop between the Pub/Sub emulator and a push endpoint (the workers' front
// door, or the reconciler's /dead-letter). The chaos stack points the push subscriptions at it, so
// every delivery passes through here. By default it forwards untouched and records what happened to
// each message (its answer, or what the proxy did instead); a scenario can add rules for its own
// batch:
// - drop the responses of the final N deliveries (F10): for the last N items to arrive, the first
//   delivery the worker answers 2xx (the work is done) has its connection cut instead of answered —
//   the acknowledgement is lost, and Pub/Sub redelivers;
// - refuse deliveries of chosen items without forwarding them (a crash before the ledger is ever
//   reached): after maxDeliveryAttempts Pub/Sub dead-letters them.
import http from "node:http";
import type { AddressInfo } from "node:net";

export type DeliveryAction = "forward" | "drop_response" | "refuse";

export interface DeliveryRecord {
  /** When the request arrived (epoch ms). */
  at: number;
  messageId: string;
  batchId: string | null;
  itemId: string | null;
  action: DeliveryAction;
  /** The status the endpoint answered (also for a dropped response: what Pub/Sub never saw), or null. */
  status: number | null;
  /** When the answer was sent, or the connection cut. */
  answeredAt: number | null;
}

export interface DeliveryInfo {
  messageId: string;
  batchId: string | null;
  itemId: string | null;
  attributes: Record<string, string>;
}

interface BatchRule {
  /** Drop a 2xx response for each of the last `count` distinct items to arrive (of `total`). */
  dropFinal?: { total: number; count: number };
  /** Answer 503 without forwarding, every time. */
  refuse?: Set<string>;
  /** Distinct items seen so far, the ones chosen for a dropped response, and those dropped. */
  seen: Set<string>;
  dropping: Set<string>;
  dropped: Set<string>;
}

export interface ChaosProxy {
  url: string;
  /** Drops one 2xx response for each of the last `count` of `total` items to arrive. */
  dropFinalResponses(batchId: string, total: number, count: number): void;
  /** Refuses (503, not forwarded) every delivery of these items. */
  refuseItems(batchId: string, itemIds: string[]): void;
  clearRules(batchId: string): void;
  /** Every delivery recorded so far, optionally of one batch. */
  deliveries(batchId?: string): DeliveryRecord[];
  /** Deliveries of one message id. */
  deliveriesOf(messageId: string): DeliveryRecord[];
  /** Items whose responses were dropped, per batch. */
  droppedItems(batchId: string): string[];
  /** Called for every delivery as it arrives (before it is forwarded). */
  onDelivery(listener: (d: DeliveryInfo) => void): () => void;
  close(): Promise<void>;
}

export async function startChaosProxy(opts: {
  /** Base URL of the endpoint; the request path is kept (e.g. `/dead-letter`). */
  target: string;
}): Promise<ChaosProxy> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const records: DeliveryRecord[] = [];
  const byBatch = new Map<string, DeliveryRecord[]>();
  const byMessage = new Map<string, DeliveryRecord[]>();
  const rules = new Map<string, BatchRule>();
  const listeners = new Set<(d: DeliveryInfo) => void>();
  const ruleFor = (batchId: string): BatchRule => {
    let r = rules.get(batchId);
    if (!r) {
      r = { seen: new Set(), dropping: new Set(), dropped: new Set() };
      rules.set(batchId, r);
    }
    return r;
  };

  const decide = (d: DeliveryInfo): DeliveryAction => {
    if (!d.batchId || !d.itemId) return "forward";
    const rule = rules.get(d.batchId);
    if (!rule) return "forward";
    if (rule.refuse?.has(d.itemId)) return "refuse";
    if (rule.dropFinal && !rule.seen.has(d.itemId)) {
      rule.seen.add(d.itemId);
      if (rule.seen.size > rule.dropFinal.total - rule.dropFinal.count) rule.dropping.add(d.itemId);
    }
    // Until a 2xx answer was dropped for the item (a 5xx or a skip is passed on and counts not).
    if (rule.dropping.has(d.itemId) && !rule.dropped.has(d.itemId)) return "drop_response";
    return "forward";
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const info = describeDelivery(body);
      for (const l of listeners) l(info);
      const action = decide(info);
      const record: DeliveryRecord = {
        at: Date.now(),
        messageId: info.messageId,
        batchId: info.batchId,
        itemId: info.itemId,
        action,
        status: null,
        answeredAt: null,
      };
      records.push(record);
      if (info.batchId) push(byBatch, info.batchId, record);
      push(byMessage, info.messageId, record);

      if (action === "refuse") {
        record.status = 503;
        record.answeredAt = Date.now();
        res.writeHead(503, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { code: "chaos_refused", message: "refused by the chaos proxy" } }));
        return;
      }
      const target = new URL(req.url ?? "/", opts.target);
      const upstream = http.request(
        target,
        {
          method: req.method,
          headers: { ...req.headers, host: target.host, "content-length": String(body.length) },
          agent,
        },
        (up) => {
          const parts: Buffer[] = [];
          up.on("data", (c: Buffer) => parts.push(c));
          up.on("end", () => {
            record.status = up.statusCode ?? 502;
            record.answeredAt = Date.now();
            const dropped = info.batchId && info.itemId ? rules.get(info.batchId)?.dropped : undefined;
            if (action === "drop_response" && record.status < 300 && !dropped?.has(info.itemId!)) {
              // The work is done; the acknowledgement never reaches Pub/Sub.
              dropped?.add(info.itemId!);
              req.socket.destroy();
              return;
            }
            if (action === "drop_response") record.action = "forward";
            res.writeHead(record.status, up.headers);
            res.end(Buffer.concat(parts));
          });
          up.on("error", () => res.destroy());
        },
      );
      upstream.on("error", (err) => {
        record.status = 502;
        record.answeredAt = Date.now();
        if (res.headersSent) return res.destroy();
        res.writeHead(502, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { code: "bad_gateway", message: err.message } }));
      });
      upstream.end(body);
    });
  });
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = 30_000;
  server.setTimeout(0);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://127.0.0.1:${port}`,
    dropFinalResponses(batchId, total, count) {
      ruleFor(batchId).dropFinal = { total, count };
    },
    refuseItems(batchId, itemIds) {
      const rule = ruleFor(batchId);
      rule.refuse = new Set([...(rule.refuse ?? []), ...itemIds]);
    },
    clearRules(batchId) {
      rules.delete(batchId);
    },
    deliveries: (batchId) => (batchId === undefined ? [...records] : [...(byBatch.get(batchId) ?? [])]),
    deliveriesOf: (messageId) => [...(byMessage.get(messageId) ?? [])],
    droppedItems: (batchId) => [...(rules.get(batchId)?.dropped ?? [])],
    onDelivery(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        agent.destroy();
      }),
  };
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V) {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

/** The message id and doorbell attributes of a wrapped push body (anything else: unknown). */
function describeDelivery(body: Buffer): DeliveryInfo {
  try {
    const parsed = JSON.parse(body.toString("utf8")) as {
      message?: { messageId?: string; message_id?: string; attributes?: Record<string, string> };
    };
    const m = parsed.message ?? {};
    const attributes = m.attributes ?? {};
    return {
      messageId: String(m.messageId ?? m.message_id ?? "unknown"),
      batchId: typeof attributes.batchId === "string" ? attributes.batchId : null,
      itemId: typeof attributes.itemId === "string" ? attributes.itemId : null,
      attributes,
    };
  } catch {
    return { messageId: "unknown", batchId: null, itemId: null, attributes: {} };
  }
}
