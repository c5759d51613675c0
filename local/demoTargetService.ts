// The HTTP demo's target (`npm run demo:http`): a small stand-in for "a prediction service you
// already run", on 127.0.0.1 only. It answers in a fixed pattern by item number, so the demo knows
// its final counts before it starts:
//   n % 25 == 0  → 400 on every call: the item's features are empty (the items are built that way)
//   n % 10 == 3  → 429 with Retry-After: 1 on the item's first call, then 200
//   n % 10 == 7  → 500 on the item's first call, then 200
//   otherwise    → 200 with a JSON prediction
// "First call" is per (x-tally-batch-id, x-tally-item-id), Tally's idempotency headers.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export type DemoAnswerKind = "ok" | "busy-once" | "error-once" | "invalid";

export function demoAnswerKind(n: number): DemoAnswerKind {
  if (n % 25 === 0) return "invalid";
  if (n % 10 === 3) return "busy-once";
  if (n % 10 === 7) return "error-once";
  return "ok";
}

export interface DemoExpectation {
  total: number;
  succeeded: number;
  failed: number;
  /** Items answered 429 once, then 200 (the worker waits out the Retry-After inside the step). */
  busyOnce: number;
  /** Items answered 500 once, then 200 (a transient failure: a second attempt). */
  errorOnce: number;
}

export function expectedDemoCounts(count: number): DemoExpectation {
  const e: DemoExpectation = { total: count, succeeded: 0, failed: 0, busyOnce: 0, errorOnce: 0 };
  for (let n = 1; n <= count; n++) {
    const kind = demoAnswerKind(n);
    if (kind === "invalid") e.failed++;
    else e.succeeded++;
    if (kind === "busy-once") e.busyOnce++;
    if (kind === "error-once") e.errorOnce++;
  }
  return e;
}

export interface DemoHttpItem {
  id: string;
  payload: { n: number; features: number[] };
}

/** The demo batch: item n carries three features, none for the items the service refuses. */
export function demoHttpItems(count: number): DemoHttpItem[] {
  const width = String(count).length;
  return Array.from({ length: count }, (_, i) => {
    const n = i + 1;
    const features = demoAnswerKind(n) === "invalid" ? [] : [n % 7, n % 11, n % 13];
    return { id: `item-${String(n).padStart(width, "0")}`, payload: { n, features } };
  });
}

/** What the prediction looks like: deterministic in the features, so rows can be checked. */
export function demoPrediction(features: number[]): { score: number; label: string } {
  const score = Math.round((features.reduce((a, b) => a + b, 0) / 30) * 1000) / 1000;
  return { score, label: score >= 0.5 ? "high" : "low" };
}

export interface DemoTargetCall {
  itemId: string;
  n: number | null;
  status: number;
  attempt: string | undefined;
}

export interface DemoTargetService {
  /** The prediction endpoint, e.g. http://127.0.0.1:PORT/v1/predict. */
  url: string;
  /** Every call answered, in order. */
  readonly calls: DemoTargetCall[];
  /** Calls answered, by status. */
  answeredByStatus(): Record<number, number>;
  stop(): Promise<void>;
}

const maxBodyBytes = 64 * 1024;

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > maxBodyBytes) req.destroy(new Error("body too large"));
      else chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

/** Starts the service on 127.0.0.1 (`port` 0: any free one). */
export async function startDemoTargetService(port = 0): Promise<DemoTargetService> {
  const calls: DemoTargetCall[] = [];
  const seen = new Set<string>();

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const header = (name: string) => req.headers[name] as string | undefined;
    const itemId = header("x-tally-item-id") ?? "";
    const attempt = header("x-tally-attempt");
    const answer = (n: number | null, status: number, body: unknown, headers?: Record<string, string>) => {
      calls.push({ itemId, n, status, attempt });
      send(res, status, body, headers);
    };
    if (req.method !== "POST" || req.url !== "/v1/predict")
      return answer(null, 404, { error: { message: `no route ${req.method} ${req.url}` } });
    let payload: { n?: unknown; features?: unknown };
    try {
      payload = JSON.parse(await readBody(req));
    } catch {
      return answer(null, 400, { error: { message: "the body is not JSON" } });
    }
    const n = typeof payload?.n === "number" && Number.isInteger(payload.n) ? payload.n : null;
    const features = payload?.features;
    if (n === null) return answer(null, 400, { error: { message: "n must be an integer" } });
    if (!Array.isArray(features) || features.length === 0 || !features.every((f) => typeof f === "number"))
      return answer(n, 400, {
        error: { message: `item ${n}: features must be a non-empty list of numbers` },
      });

    const key = `${header("x-tally-batch-id") ?? ""}/${itemId || n}`;
    const first = !seen.has(key);
    seen.add(key);
    const kind = demoAnswerKind(n);
    if (first && kind === "busy-once")
      return answer(n, 429, { error: { message: "busy: try again in a second" } }, { "retry-after": "1" });
    if (first && kind === "error-once")
      return answer(n, 500, { error: { message: "model server restarting" } });
    return answer(n, 200, { n, ...demoPrediction(features as number[]), model: "demo-v1" });
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err) => {
      if (!res.headersSent) send(res, 500, { error: { message: (err as Error).message } });
    });
  });
  // Loopback only: the demo must not expose anything to the network.
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  const bound = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${bound}/v1/predict`,
    calls,
    answeredByStatus: () => {
      const out: Record<number, number> = {};
      for (const c of calls) out[c.status] = (out[c.status] ?? 0) + 1;
      return out;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
