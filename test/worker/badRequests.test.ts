// Every request the worker refuses is answered with the JSON error contract (DESIGN.md §3), never
// with the Functions Framework's HTML page or a stack trace: bodies the framework's parsers refuse
// (malformed JSON, an unsupported charset or Content-Encoding), paths its router cannot decode,
// requests that are not push deliveries, unknown routes (404), wrong methods (405), and unexpected
// exceptions (500 with a generic message; the details are logged). Nothing is leased by any of
// them. Served through the Functions Framework as deployed (workerHarness.serveWorker).
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { testFirestore, testPubSub, uniqueProjectId } from "../support/cloud";
import { type Answer, expectJsonError, fetchAnswer } from "../support/errorContract";
import {
  buildDeps,
  envelope,
  type ServedWorker,
  serveWorker,
  submitBatch,
  tempDataDir,
  testConfig,
} from "./support/workerHarness";

const projectId = uniqueProjectId("wbad");
const db = testFirestore(projectId);
const pubsub = testPubSub(projectId);
const data = tempDataDir();
const config = testConfig(projectId, data.dir);

let deps: Awaited<ReturnType<typeof buildDeps>>;
let worker: ServedWorker;
let base: string;

beforeAll(async () => {
  deps = await buildDeps(config, db, pubsub);
  worker = await serveWorker(deps);
  base = worker.url.replace(/\/$/, "");
});
afterAll(async () => {
  await worker?.close();
  await deps?.close();
  await pubsub.close();
  await db.terminate();
  data.remove();
});

interface Case {
  name: string;
  method?: string;
  path?: string;
  body?: string;
  headers?: Record<string, string>;
  status: number;
  code: string;
  paths?: string[];
  allow?: string;
}

const json = { "content-type": "application/json" };
const cases: Case[] = [
  {
    name: "a malformed JSON body",
    body: '{"message": {',
    headers: json,
    status: 400,
    code: "invalid_argument",
    paths: ["body"],
  },
  {
    name: "a bare JSON string (strict JSON)",
    body: '"push"',
    headers: json,
    status: 400,
    code: "invalid_argument",
    paths: ["body"],
  },
  {
    name: "JSON that is not a push envelope",
    body: JSON.stringify({ hello: "world" }),
    headers: json,
    status: 400,
    code: "invalid_argument",
    paths: ["body"],
  },
  {
    name: "a text body (wrong content type: no envelope)",
    body: "batchId=b&itemId=i",
    headers: { "content-type": "text/plain" },
    status: 400,
    code: "invalid_argument",
  },
  {
    name: "a charset the framework does not read",
    body: JSON.stringify(envelope({ batchId: "b", itemId: "i", generation: "1" })),
    headers: { "content-type": "application/json; charset=latin1" },
    status: 415,
    code: "unsupported_media_type",
    paths: ["Content-Type"],
  },
  {
    name: "a Content-Encoding the framework does not know",
    body: JSON.stringify(envelope({ batchId: "b", itemId: "i", generation: "1" })),
    headers: { ...json, "content-encoding": "x-tally-unknown" },
    status: 415,
    code: "unsupported_media_type",
    paths: ["Content-Encoding"],
  },
  {
    name: "a path that is not valid percent-encoding",
    path: "/%E0%A4%A",
    body: "{}",
    headers: json,
    status: 400,
    code: "invalid_argument",
    paths: ["path"],
  },
  {
    name: "an unknown route",
    path: "/push/elsewhere",
    body: "{}",
    headers: json,
    status: 404,
    code: "not_found",
  },
  { name: "GET on the push endpoint", method: "GET", status: 405, code: "method_not_allowed", allow: "POST" },
  {
    name: "DELETE on the push endpoint",
    method: "DELETE",
    status: 405,
    code: "method_not_allowed",
    allow: "POST",
  },
  {
    name: "POST on /healthz",
    path: "/healthz",
    body: "{}",
    headers: json,
    status: 405,
    code: "method_not_allowed",
    allow: "GET",
  },
];

describe("the worker's error answers", () => {
  it.each(cases)("$name → $status JSON", async (c) => {
    const lease = vi.spyOn(deps.ledger, "leaseItem");
    try {
      const res = await fetchAnswer(`${base}${c.path ?? "/"}`, {
        method: c.method ?? "POST",
        headers: c.headers,
        body: c.body,
      });
      expectJsonError(res, c.status, c.code);
      const listed = (res.body.error.details ?? []).map((d: { path: string }) => d.path);
      for (const p of c.paths ?? []) expect(listed, JSON.stringify(res.body)).toContain(p);
      if (c.allow) expect(header(res, "allow")).toBe(c.allow);
      expect(lease).not.toHaveBeenCalled();
    } finally {
      lease.mockRestore();
    }
  });

  it("answers GET /healthz (liveness)", async () => {
    const res = await fetchAnswer(`${base}/healthz`);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ status: "ok" });
  });

  it("an unexpected exception is a 500 (so Pub/Sub redelivers) with a generic message; the details are logged", async () => {
    const { batchId } = await submitBatch(deps, "demo", [{ itemId: "boom", payload: {} }], {
      publish: false,
    });
    const getBatch = vi
      .spyOn(deps.ledger, "getBatch")
      .mockRejectedValueOnce(new Error("ledger exploded: secret-detail-456"));
    try {
      const res = await fetchAnswer(`${base}/`, {
        method: "POST",
        headers: json,
        body: JSON.stringify(envelope({ batchId, itemId: "boom", generation: "1" })),
      });
      expectJsonError(res, 500, "internal");
      expect(res.body).toEqual({
        error: { code: "internal", message: "internal error; see the service logs" },
      });
    } finally {
      getBatch.mockRestore();
    }
    const logged = deps.logs.find((l) => l.event === "worker.error");
    expect(logged).toMatchObject({ severity: "ERROR" });
    expect(logged?.message).toContain("secret-detail-456");
    expect(String(logged?.stack)).toContain("at ");
    expect(await deps.ledger.getItem(batchId, "boom")).toMatchObject({ status: "pending", attempt: 0 });
  });
});

function header(res: Answer, name: string): string | null | undefined {
  return res.headers instanceof Headers ? res.headers.get(name) : (res.headers[name] as string | undefined);
}
