// Every request the reconciler refuses is answered with the JSON error contract (DESIGN.md §3),
// never with the Functions Framework's HTML page or a stack trace: bodies the framework's parsers
// refuse (malformed JSON, an unsupported charset or Content-Encoding) on both POST endpoints, paths
// its router cannot decode, requests that are not push deliveries, unknown routes (404), wrong
// methods (405), and unexpected exceptions (500 with a generic message; the details are logged).
// None of them runs a tick or changes an item. Served through the Functions Framework with the JSON
// final handler functions/index.ts installs (installed here before the harness builds its server).
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { answerFrameworkErrorsWithJson } from "../../functions/http/frameworkErrors";
import { expectJsonError, fetchAnswer } from "../support/errorContract";
import {
  deadLetterEnvelope,
  type ReconcilerHarness,
  startReconcilerHarness,
} from "./support/reconcilerHarness";

let h: ReconcilerHarness;
beforeAll(async () => {
  answerFrameworkErrorsWithJson();
  h = await startReconcilerHarness();
  await h.createBatch("b", 1);
});
afterAll(() => h?.close());

interface Case {
  name: string;
  method?: string;
  path: string;
  body?: string;
  headers?: Record<string, string>;
  status: number;
  code: string;
  paths?: string[];
  allow?: string;
}

const json = { "content-type": "application/json" };
const envelopeText = JSON.stringify(deadLetterEnvelope({ batchId: "b", itemId: "i0", generation: "1" }));
const cases: Case[] = [];
for (const path of ["/reconcile", "/dead-letter"]) {
  cases.push(
    {
      name: `${path}: a malformed JSON body`,
      path,
      body: '{"pageSize": ',
      headers: json,
      status: 400,
      code: "invalid_argument",
      paths: ["body"],
    },
    {
      name: `${path}: a charset the framework does not read`,
      path,
      body: path === "/reconcile" ? "{}" : envelopeText,
      headers: { "content-type": "application/json; charset=latin1" },
      status: 415,
      code: "unsupported_media_type",
      paths: ["Content-Type"],
    },
    {
      name: `${path}: a Content-Encoding the framework does not know`,
      path,
      body: path === "/reconcile" ? "{}" : envelopeText,
      headers: { ...json, "content-encoding": "x-tally-unknown" },
      status: 415,
      code: "unsupported_media_type",
      paths: ["Content-Encoding"],
    },
    { name: `${path}: GET`, method: "GET", path, status: 405, code: "method_not_allowed", allow: "POST" },
  );
}
cases.push(
  {
    name: "/reconcile: a text body (wrong content type)",
    path: "/reconcile",
    body: "tick please",
    headers: { "content-type": "text/plain" },
    status: 400,
    code: "invalid_argument",
    paths: ["body"],
  },
  {
    name: "/dead-letter: JSON that is not a push envelope",
    path: "/dead-letter",
    body: JSON.stringify({ hello: "world" }),
    headers: json,
    status: 400,
    code: "invalid_argument",
    paths: ["body"],
  },
  {
    name: "a path that is not valid percent-encoding",
    path: "/reconcile%E0%A4%A",
    body: "{}",
    headers: json,
    status: 400,
    code: "invalid_argument",
    paths: ["path"],
  },
  {
    name: "an unknown route",
    path: "/reconcile/now",
    body: "{}",
    headers: json,
    status: 404,
    code: "not_found",
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
);

describe("the reconciler's error answers", () => {
  it.each(cases)("$name → $status JSON", async (c) => {
    const failItem = vi.spyOn(h.ledger, "failItem");
    const summaries = h.logs.filter((l) => l.event === "reconcile.summary").length;
    try {
      const res = await fetchAnswer(`${h.url}${c.path}`, {
        method: c.method ?? "POST",
        headers: c.headers,
        body: c.body,
      });
      expectJsonError(res, c.status, c.code);
      const listed = (res.body.error.details ?? []).map((d: { path: string }) => d.path);
      for (const p of c.paths ?? []) expect(listed, JSON.stringify(res.body)).toContain(p);
      if (c.allow) expect((res.headers as Headers).get("allow")).toBe(c.allow);
      expect(failItem).not.toHaveBeenCalled();
      expect(h.logs.filter((l) => l.event === "reconcile.summary")).toHaveLength(summaries);
    } finally {
      failItem.mockRestore();
    }
  });

  it("an unexpected exception is a 500 with a generic message; the details are logged, not returned", async () => {
    const failItem = vi
      .spyOn(h.ledger, "failItem")
      .mockRejectedValueOnce(new Error("ledger exploded: secret-detail-789"));
    try {
      const res = await fetchAnswer(`${h.url}/dead-letter`, {
        method: "POST",
        headers: json,
        body: envelopeText,
      });
      expectJsonError(res, 500, "internal");
      expect(res.body).toEqual({
        error: { code: "internal", message: "internal error; see the service logs" },
      });
    } finally {
      failItem.mockRestore();
    }
    const logged = h.logs.find((l) => l.event === "http.internal_error");
    expect(logged).toMatchObject({ severity: "ERROR" });
    expect(logged?.message).toContain("secret-detail-789");
    expect(String(logged?.error)).toContain("at ");
    expect((await h.ledger.getItem("b", "i0"))?.status).toBe("pending");
  });
});
