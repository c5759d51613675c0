// Support for the HTTP pipeline tests (issue #17 §4): a real HTTP service on 127.0.0.1 standing in
// for "a service you already run" — it records every request (arrival time, path, Tally's headers,
// body) and answers through a per-path behaviour the test sets — plus the coordinator served by the
// Functions Framework, so batches are submitted through the API (which checks the pipeline against
// the registry) and the ledger invariant is read back through it (local/invariant.ts).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Firestore } from "@google-cloud/firestore";
import { http } from "@google-cloud/functions-framework";
import { getTestServer } from "@google-cloud/functions-framework/testing";
import type { PubSub } from "@google-cloud/pubsub";
import { expect } from "vitest";
import type { TallyConfig } from "../../../functions/config";
import type { Batch } from "../../../functions/core/model";
import { createCoordinatorHandler } from "../../../functions/handlers/coordinator";
import type { HandlerDeps } from "../../../functions/runtime";
import { checkLedgerInvariant, formatInvariantReport, type InvariantReport } from "../../../local/invariant";
import { waitFor } from "../../support/cloud";
import { buildDeps, type PushTopology, provisionPush, type ServedWorker, serveWorker } from "./workerHarness";

export interface TargetRequest {
  path: string;
  at: number;
  batchId: string;
  itemId: string;
  step: string;
  attempt: string;
  headers: IncomingMessage["headers"];
  body: unknown;
}

export interface Answer {
  status?: number;
  headers?: Record<string, string>;
  /** Sent as JSON unless a string. */
  body?: unknown;
  /** Waits this long before answering (stops if the client goes away). */
  delayMs?: number;
  /** Never answers (the client's timeout must end the call). */
  hang?: boolean;
}

/** Decides the answer to a request; `calls` counts this item's calls to this path, this one included. */
export type Behaviour = (req: TargetRequest, calls: number) => Answer | Promise<Answer>;

export class TargetServer {
  readonly requests: TargetRequest[] = [];
  readonly behaviours = new Map<string, Behaviour>();
  private server: Server | null = null;
  private stopping: Promise<void> = Promise.resolve();
  port = 0;

  url(path: string): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  /** Listens on `port` (0: any free one; the same port again after `stop`). */
  async start(port = this.port): Promise<void> {
    await this.stopping;
    const server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => resolve());
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
  }

  /** Stops as a crash would: open connections are cut, new ones refused. */
  async stop(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return this.stopping;
    this.stopping = new Promise<void>((resolve) => s.close(() => resolve()));
    s.closeAllConnections();
    return this.stopping;
  }

  callsTo(path: string, itemId?: string): TargetRequest[] {
    return this.requests.filter((r) => r.path === path && (itemId === undefined || r.itemId === itemId));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // kept as text
    }
    const path = (req.url ?? "/").split("?")[0]!;
    const record: TargetRequest = {
      path,
      at: Date.now(),
      batchId: String(req.headers["x-tally-batch-id"] ?? ""),
      itemId: String(req.headers["x-tally-item-id"] ?? ""),
      step: String(req.headers["x-tally-step"] ?? ""),
      attempt: String(req.headers["x-tally-attempt"] ?? ""),
      headers: req.headers,
      body,
    };
    this.requests.push(record);
    const calls = this.callsTo(path, record.itemId).length;
    const behaviour = this.behaviours.get(path);
    const answer: Answer = behaviour
      ? await behaviour(record, calls)
      : { status: 404, body: { error: "no such path" } };
    if (answer.hang) return;
    if (answer.delayMs) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, answer.delayMs);
        res.once("close", () => {
          clearTimeout(t);
          resolve();
        });
      });
      if (res.destroyed) return;
    }
    const payload = typeof answer.body === "string" ? answer.body : JSON.stringify(answer.body ?? null);
    res.writeHead(answer.status ?? 200, {
      "content-type": typeof answer.body === "string" ? "text/plain" : "application/json",
      ...answer.headers,
    });
    res.end(payload);
  }
}

let served = 0;
/** The coordinator handler behind the Functions Framework on a loopback port. */
export async function serveCoordinator(deps: HandlerDeps): Promise<{ url: string; close(): Promise<void> }> {
  const name = `http-pipeline-coordinator-${process.pid}-${++served}`;
  http(name, createCoordinatorHandler(deps) as never);
  const server: Server = getTestServer(name);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * The HTTP-pipeline tests' stack on the emulators: the adapters, one worker and the coordinator on
 * loopback ports, and the push topology to the worker.
 */
export async function serveWorkerStack(
  config: TallyConfig,
  db: Firestore,
  pubsub: PubSub,
): Promise<WorkerStack> {
  const deps = await buildDeps(config, db, pubsub);
  const worker = await serveWorker(deps);
  const coordinator = await serveCoordinator(deps);
  const topology = await provisionPush(pubsub, config, worker.url);
  return { deps, worker, coordinator, topology };
}

export interface WorkerStack {
  deps: Awaited<ReturnType<typeof buildDeps>>;
  worker: ServedWorker;
  coordinator: Awaited<ReturnType<typeof serveCoordinator>>;
  topology: PushTopology;
}

/** POST /v1/batches through the coordinator; returns the status and body. */
export async function submit(
  coordinatorUrl: string,
  batch: { id: string; pipeline: string; items: Array<{ id: string; payload: unknown }> },
): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${coordinatorUrl}/v1/batches`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(batch),
  });
  return { status: res.status, body: await res.json() };
}

/**
 * Waits for the batch to be finalized (through the ledger) and asserts the ledger invariant through
 * the coordinator's API and the DuckDB file.
 */
export async function finalizedWithInvariant(a: {
  ledger: { getBatch(id: string): Promise<Batch | null> };
  coordinatorUrl: string;
  resultsPath: string;
  batchId: string;
  itemIds: string[];
  timeoutMs?: number;
}): Promise<{ batch: Batch; report: InvariantReport }> {
  const batch = await waitFor(
    `batch ${a.batchId} finalized`,
    async () => {
      const b = await a.ledger.getBatch(a.batchId);
      return b && ["succeeded", "partial", "failed"].includes(b.status) ? b : null;
    },
    a.timeoutMs ?? 60_000,
    200,
  );
  const report = await checkLedgerInvariant({
    coordinatorUrl: a.coordinatorUrl,
    batchId: a.batchId,
    resultsPath: a.resultsPath,
    submittedItemIds: a.itemIds,
  });
  expect(report.violations, formatInvariantReport(report)).toEqual([]);
  return { batch, report };
}
