// One refused request per rule: each answers with its status and the `{"error": {code, message,
// details}}` body listing every problem (field paths), as `application/json` and never with a stack
// trace or an HTML page, and writes nothing. Served through the Functions Framework (the deployed
// path) unless the case needs the streaming server; caps are small so the "too large" cases stay
// small. Requests the framework itself refuses before the handler runs (a malformed JSON body, an
// unsupported charset or Content-Encoding, a path that is not valid percent-encoding) are answered
// by the JSON final handler functions/index.ts installs (functions/http/frameworkErrors.ts), which
// the harness's framework server gets too (installed below, before the server is built).
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { answerFrameworkErrorsWithJson } from "../../functions/http/frameworkErrors";
import { expectJsonError, fetchAnswer } from "../support/errorContract";
import { type CoordinatorHarness, startCoordinatorHarness } from "./support/coordinatorHarness";

let h: CoordinatorHarness;
beforeAll(async () => {
  answerFrameworkErrorsWithJson();
  h = await startCoordinatorHarness({
    maxItemsPerBatch: 20,
    maxJsonBodyBytes: 64 * 1024,
    maxPayloadBytes: 1024,
    maxLineBytes: 4096,
  });
  // A batch to depend on, and one more to list.
  const dep = await h.request("POST", "/v1/batches", {
    json: { id: "dep-ok", pipeline: "demo", items: [{ payload: {} }] },
  });
  expect(dep.status).toBe(201);
});
afterAll(() => h?.close());

interface Case {
  name: string;
  method?: string;
  path?: string;
  json?: unknown;
  body?: string;
  ndjson?: string[];
  contentType?: string;
  /** More request headers (Content-Encoding, …). */
  headers?: Record<string, string>;
  /** Raw request bytes (instead of `body`). */
  bytes?: Buffer;
  /** Serve through the plain streaming server instead of the Functions Framework. */
  streaming?: boolean;
  status: number;
  code: string;
  /** Every path that must be listed in details. */
  paths?: string[];
  /** Words the message must contain. */
  message?: RegExp;
}

const demoItem = (payload: unknown = {}) => ({ payload });
const big = "x".repeat(2000);

const cases: Case[] = [
  {
    name: "missing pipeline",
    json: { id: "c-nopipe", items: [demoItem()] },
    status: 400,
    code: "invalid_argument",
    paths: ["pipeline"],
  },
  {
    name: "failureThreshold out of range and of the wrong type, every problem listed",
    json: {
      id: "c-threshold",
      pipeline: "demo",
      failureThreshold: 1.5,
      dependsOn: "dep-ok",
      items: [demoItem()],
    },
    status: 400,
    code: "invalid_argument",
    paths: ["failureThreshold", "dependsOn"],
  },
  {
    name: "duplicate item ids (explicit and positional)",
    json: {
      id: "c-dup",
      pipeline: "demo",
      items: [{ id: "a", payload: {} }, { id: "a", payload: {} }, { id: "3", payload: {} }, demoItem()],
    },
    status: 400,
    code: "invalid_argument",
    paths: ["items[1].id", "items[3].id"],
  },
  {
    name: "ids with characters Firestore or the API cannot take",
    json: {
      id: "bad id!",
      pipeline: "demo",
      items: [
        { id: "a/b", payload: {} },
        { id: "__x__", payload: {} },
        { id: "", payload: {} },
      ],
    },
    status: 400,
    code: "invalid_argument",
    paths: ["id", "items[0].id", "items[1].id", "items[2].id"],
  },
  {
    name: "payloads that fail the pipeline's schema",
    json: {
      id: "c-schema",
      pipeline: "demo",
      items: [demoItem({ sleepMs: -1 }), demoItem({ steps: 11, failTimes: "two" }), demoItem({ value: 1 })],
    },
    status: 400,
    code: "invalid_argument",
    paths: ["items[0].payload.sleepMs", "items[1].payload.steps", "items[1].payload.failTimes"],
  },
  {
    name: "unknown keys at every level",
    json: { id: "c-keys", pipeline: "demo", colour: "red", items: [{ payload: { foo: 1 }, extra: true }] },
    status: 400,
    code: "invalid_argument",
    paths: ["colour", "items[0].extra", "items[0].payload.foo"],
  },
  {
    name: "items that are not {id?, payload}",
    json: { id: "c-shape", pipeline: "demo", items: [42, { id: "p" }, null] },
    status: 400,
    code: "invalid_argument",
    paths: ["items[0]", "items[1].payload", "items[2]"],
  },
  {
    name: "payloads Firestore cannot store (nested arrays, empty keys)",
    json: {
      id: "c-store",
      pipeline: "text-stats",
      items: [{ payload: { text: "a", nested: [[1]] } }, { payload: { text: "b", "": 1 } }],
    },
    status: 400,
    code: "invalid_argument",
    paths: ["items[0].payload.nested[0]", "items[1].payload"],
  },
  {
    name: "a payload over the payload cap",
    json: { id: "c-payload", pipeline: "demo", items: [demoItem(), demoItem({ value: big })] },
    status: 413,
    code: "too_large",
    paths: ["items[1].payload"],
  },
  {
    name: "a body over the body cap",
    json: {
      id: "c-body",
      pipeline: "demo",
      items: Array.from({ length: 18 }, () => demoItem({ value: "y".repeat(4000) })),
    },
    status: 413,
    code: "too_large",
    paths: ["body"],
  },
  {
    name: "more items than the batch cap (the count is named)",
    json: { id: "c-count", pipeline: "demo", items: Array.from({ length: 21 }, () => demoItem()) },
    status: 413,
    code: "too_large",
    paths: ["items"],
    message: /21 items; the limit is 20/,
  },
  {
    name: "unknown pipeline",
    json: { id: "c-pipe", pipeline: "nope", items: [demoItem()] },
    status: 404,
    code: "not_found",
    paths: ["pipeline"],
    message: /unknown pipeline "nope".*demo/,
  },
  {
    name: "unknown and repeated dependencies",
    json: {
      id: "c-deps",
      pipeline: "demo",
      dependsOn: ["missing-1", "dep-ok", "missing-2"],
      items: [demoItem()],
    },
    status: 400,
    code: "invalid_argument",
    paths: ["dependsOn[0]", "dependsOn[2]"],
  },
  {
    name: "NDJSON: a line that is not JSON, a bad payload, a duplicate id, a bad id — all listed with line numbers",
    ndjson: [
      JSON.stringify({ id: "c-nd", pipeline: "demo" }),
      JSON.stringify({ payload: {} }),
      "{not json",
      "",
      JSON.stringify({ payload: { sleepMs: "soon" } }),
      JSON.stringify({ id: "z", payload: {} }),
      JSON.stringify({ id: "z", payload: {} }),
      JSON.stringify({ id: "no spaces", payload: {} }),
    ],
    status: 400,
    code: "invalid_argument",
    paths: ["line 3", "line 5: payload.sleepMs", "line 7: id", "line 8: id"],
  },
  {
    name: "NDJSON through the streaming server: a bad header line",
    streaming: true,
    ndjson: [
      JSON.stringify({ id: "c-ndh", pipeline: "demo", items: [], failureThreshold: -1 }),
      JSON.stringify({ payload: {} }),
    ],
    status: 400,
    code: "invalid_argument",
    paths: ["line 1: items", "failureThreshold"],
  },
  {
    name: "NDJSON: more items than the cap",
    streaming: true,
    ndjson: [
      JSON.stringify({ id: "c-ndcount", pipeline: "demo" }),
      ...Array.from({ length: 25 }, () => JSON.stringify({ payload: {} })),
    ],
    status: 413,
    code: "too_large",
    paths: ["line 22"],
  },
  {
    name: "NDJSON: a line over the line cap",
    ndjson: [
      JSON.stringify({ id: "c-ndline", pipeline: "demo" }),
      JSON.stringify({ payload: { value: "q".repeat(5000) } }),
    ],
    status: 413,
    code: "too_large",
    paths: ["line 2"],
  },
  {
    name: "NDJSON: an empty stream",
    ndjson: [],
    status: 400,
    code: "invalid_argument",
    paths: ["line 1"],
  },
  {
    name: "a body that is not JSON, through the streaming server (the handler parses it)",
    streaming: true,
    body: "{nope",
    contentType: "application/json",
    status: 400,
    code: "invalid_argument",
    paths: ["body"],
  },
  {
    name: "a body that is not JSON, under the Functions Framework (its JSON parser refuses it)",
    body: "{nope",
    contentType: "application/json",
    status: 400,
    code: "invalid_argument",
    paths: ["body"],
    message: /not valid JSON/,
  },
  {
    name: "a JSON body cut short, under the Functions Framework",
    body: '{"id": "c-cut", "pipeline": "demo", "items": [',
    contentType: "application/json",
    status: 400,
    code: "invalid_argument",
    paths: ["body"],
  },
  {
    name: "a bare JSON string, under the Functions Framework (its strict JSON parser refuses it)",
    body: '"batch please"',
    contentType: "application/json",
    status: 400,
    code: "invalid_argument",
    paths: ["body"],
  },
  {
    name: "a JSON body in a charset the framework does not read",
    body: JSON.stringify({ id: "c-latin", pipeline: "demo", items: [demoItem()] }),
    contentType: "application/json; charset=latin1",
    status: 415,
    code: "unsupported_media_type",
    paths: ["Content-Type"],
  },
  {
    name: "a body in a Content-Encoding the framework does not know",
    body: JSON.stringify({ id: "c-enc", pipeline: "demo", items: [demoItem()] }),
    contentType: "application/json",
    headers: { "content-encoding": "x-tally-unknown" },
    status: 415,
    code: "unsupported_media_type",
    paths: ["Content-Encoding"],
  },
  {
    name: "a body that says gzip but is not",
    body: "this is not gzip",
    contentType: "application/json",
    headers: { "content-encoding": "gzip" },
    status: 400,
    code: "invalid_argument",
  },
  {
    name: "gzip holding malformed JSON",
    bytes: gzipSync("{nope"),
    contentType: "application/json",
    headers: { "content-encoding": "gzip" },
    status: 400,
    code: "invalid_argument",
    paths: ["body"],
  },
  {
    name: "a path that is not valid percent-encoding (the framework's router refuses it)",
    method: "GET",
    path: "/v1/batches/%E0%A4%A",
    status: 400,
    code: "invalid_argument",
    paths: ["path"],
    message: /percent-encoding/,
  },
  {
    name: "a body that is a JSON array",
    json: [1, 2],
    status: 400,
    code: "invalid_argument",
    paths: ["body"],
  },
  {
    name: "an unsupported content type",
    body: "pipeline=demo",
    contentType: "text/plain",
    status: 415,
    code: "unsupported_media_type",
    paths: ["Content-Type"],
  },
  {
    name: "bad query parameters on the batch listing",
    method: "GET",
    path: "/v1/batches?limit=0&status=done&colour=red&limit=5",
    status: 400,
    code: "invalid_argument",
    paths: ["limit", "status", "colour"],
  },
  {
    name: "bad query parameters on the item listing",
    method: "GET",
    path: "/v1/batches/dep-ok/items?limit=abc&status=lost&include=payload,secrets",
    status: 400,
    code: "invalid_argument",
    paths: ["limit", "status", "include[1]"],
  },
  {
    name: "a pageToken the listing never issued",
    method: "GET",
    path: "/v1/batches?pageToken=bm90LWEtdG9rZW4",
    status: 400,
    code: "invalid_argument",
    paths: ["pageToken"],
  },
  {
    name: "a pageToken for the item listing that is not a token",
    method: "GET",
    path: "/v1/batches/dep-ok/items?pageToken=%25%25%25",
    status: 400,
    code: "invalid_argument",
    paths: ["pageToken"],
  },
  { name: "an unknown route", method: "GET", path: "/v2/things", status: 404, code: "not_found" },
  {
    name: "a batch that does not exist",
    method: "GET",
    path: "/v1/batches/nope",
    status: 404,
    code: "not_found",
  },
  {
    name: "the wrong method",
    method: "DELETE",
    path: "/v1/batches",
    status: 405,
    code: "method_not_allowed",
  },
  { name: "the dashboard when none is mounted", method: "GET", path: "/", status: 404, code: "not_found" },
];

describe("bad requests", () => {
  for (const c of cases) {
    it(`${c.name} → ${c.status}`, async () => {
      const batchesBefore = await h.batchCount();
      const itemsBefore = await h.itemCount();
      const base = c.streaming ? h.streamingUrl : h.frameworkUrl;
      const headers = { ...(c.contentType ? { "content-type": c.contentType } : {}), ...c.headers };
      const res = c.ndjson
        ? await h.postNdjson(c.ndjson, { base })
        : c.bytes
          ? await fetchAnswer(`${base}${c.path ?? "/v1/batches"}`, {
              method: c.method ?? "POST",
              headers,
              body: new Uint8Array(c.bytes),
            })
          : await h.request(c.method ?? "POST", c.path ?? "/v1/batches", {
              base,
              json: c.json,
              body: c.body,
              headers,
            });
      if (res === "aborted") throw new Error("unexpected abort");
      expect(res.status, JSON.stringify(res.body)).toBe(c.status);
      expectJsonError(res);
      expect(res.body.error.code).toBe(c.code);
      expect(typeof res.body.error.message).toBe("string");
      if (c.message) expect(res.body.error.message).toMatch(c.message);
      const listed = (res.body.error.details ?? []).map((d: { path: string }) => d.path);
      for (const p of c.paths ?? []) expect(listed, JSON.stringify(res.body.error)).toContain(p);
      for (const d of res.body.error.details ?? []) expect(d.problem, JSON.stringify(d)).toBeTruthy();
      // Nothing was written.
      expect(await h.batchCount()).toBe(batchesBefore);
      expect(await h.itemCount()).toBe(itemsBefore);
    });
  }

  it("a wrong method names the allowed ones", async () => {
    const res = await h.request("PUT", "/v1/batches/dep-ok");
    expect(res.status).toBe(405);
    expect((res.headers as Headers).get("allow")).toBe("GET");
    const cancel = await h.request("GET", "/v1/batches/dep-ok:cancel");
    expect(cancel.status).toBe(404); // GET reads the batch "dep-ok:cancel", which does not exist
    const del = await h.request("DELETE", "/v1/batches/dep-ok:cancel");
    expect(del.status).toBe(405);
    expect((del.headers as Headers).get("allow")).toBe("POST");
  });

  it("an unexpected exception is a 500 with a generic message; the details are logged, not returned", async () => {
    const failure = new Error("ledger exploded: secret-detail-123");
    const getBatch = vi.spyOn(h.ledger, "getBatch").mockRejectedValueOnce(failure);
    try {
      const res = await h.request("GET", "/v1/batches/dep-ok");
      expect(res.status).toBe(500);
      expectJsonError(res);
      expect(res.body).toEqual({
        error: { code: "internal", message: "internal error; see the service logs" },
      });
      expect(JSON.stringify(res.body)).not.toContain("secret-detail-123");
    } finally {
      getBatch.mockRestore();
    }
    const logged = h.logs.find(
      (l) => l.event === "http.internal_error" && String(l.message).includes("secret-detail-123"),
    );
    expect(logged?.severity).toBe("ERROR");
    expect(String(logged?.error)).toContain("at "); // the stack goes to the log
  });
});
