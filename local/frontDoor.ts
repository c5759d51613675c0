// The local front door: what Cloud Run's load balancer is to the worker service. The work
// subscription pushes here; each request goes to the next live worker process (round-robin). A
// request whose process dies fails with 502, and one that finds no live process for `queueMs` with
// 503 — so Pub/Sub redelivers it, exactly as after an instance crash in the cloud. No timeout of
// its own: for push the subscription's ack deadline is the request timeout.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { waitFor } from "./waitFor";

export interface Backend {
  name: string;
  /** http://127.0.0.1:PORT */
  url: string;
}

export interface FrontDoorStats {
  /** Requests forwarded per backend name. */
  forwarded: Record<string, number>;
  /** Responses per backend name and status class, e.g. { "worker 1": { "2xx": 10, "5xx": 1 } }. */
  responses: Record<string, Record<string, number>>;
  /** Response time per backend name: count, total and slowest (ms), until the response headers. */
  latencyMs: Record<string, { count: number; total: number; max: number }>;
  /** Requests that failed at the front door: no live backend (503) or the backend failed (502). */
  noBackend: number;
  backendErrors: number;
}

export interface FrontDoor {
  url: string;
  port: number;
  stats(): FrontDoorStats;
  close(): Promise<void>;
}

export async function startFrontDoor(opts: {
  /** The live backends at this moment (the supervisor's view). */
  backends: () => Backend[];
  port?: number;
  /** How long a request waits for a live worker before a 503 (default 10 s). */
  queueMs?: number;
  onError?: (message: string) => void;
}): Promise<FrontDoor> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const stats: FrontDoorStats = {
    forwarded: {},
    responses: {},
    latencyMs: {},
    noBackend: 0,
    backendErrors: 0,
  };
  let next = 0;

  const queueMs = opts.queueMs ?? 10_000;
  // Like Cloud Run while instances start, a request that finds no live worker waits for one a while.
  const pick = async (): Promise<Backend | null> => {
    const live = await waitFor(
      "a live worker",
      () => {
        const l = opts.backends();
        return l.length > 0 ? l : null;
      },
      queueMs,
      50,
    ).catch(() => null);
    return live ? live[next++ % live.length]! : null;
  };

  const server = http.createServer(async (req, res) => {
    const backend = await pick();
    if (!backend) {
      stats.noBackend++;
      req.resume();
      return sendError(res, 503, "unavailable", `no worker process was running for ${queueMs} ms`);
    }
    stats.forwarded[backend.name] = (stats.forwarded[backend.name] ?? 0) + 1;
    const target = new URL(req.url ?? "/", backend.url);
    const sentAt = Date.now();
    const upstream = http.request(
      target,
      { method: req.method, headers: { ...req.headers, host: target.host }, agent },
      (up) => {
        const cls = `${Math.floor((up.statusCode ?? 0) / 100)}xx`;
        const byClass = stats.responses[backend.name] ?? {};
        byClass[cls] = (byClass[cls] ?? 0) + 1;
        stats.responses[backend.name] = byClass;
        const took = Date.now() - sentAt;
        const lat = stats.latencyMs[backend.name] ?? { count: 0, total: 0, max: 0 };
        stats.latencyMs[backend.name] = {
          count: lat.count + 1,
          total: lat.total + took,
          max: Math.max(lat.max, took),
        };
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
        up.on("error", () => res.destroy());
      },
    );
    upstream.on("error", (err) => {
      stats.backendErrors++;
      opts.onError?.(`${backend.name} failed a request: ${err.message}`);
      if (!res.headersSent) sendError(res, 502, "bad_gateway", `${backend.name}: ${err.message}`);
      else res.destroy();
    });
    // The caller gave up (Pub/Sub's deadline): stop the upstream request too.
    res.on("close", () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  });
  // Push requests may run up to the ack deadline (≤ 600 s); Node's own request timeouts must not cut them.
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = 30_000;
  server.setTimeout(0);

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    stats: () => structuredClone(stats),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        agent.destroy();
      }),
  };
}

function sendError(res: http.ServerResponse, status: number, code: string, message: string) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify({ error: { code, message } }));
}
