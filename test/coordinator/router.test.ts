// Route matching: paths to routes, 404 for unknown paths, 405 (with the allowed methods) for known
// paths with the wrong method, and custom methods on ids that may themselves contain ':'.
import { describe, expect, it } from "vitest";
import { matchRoute } from "../../functions/handlers/coordinator/router";

describe("router", () => {
  it.each([
    ["GET", "/healthz", { kind: "route", name: "health" }],
    ["POST", "/v1/batches", { kind: "route", name: "submitBatch" }],
    ["GET", "/v1/batches/", { kind: "route", name: "listBatches" }],
    ["GET", "/v1/batches/b-1", { kind: "route", name: "getBatch", batchId: "b-1" }],
    ["GET", "/v1/batches/a:b", { kind: "route", name: "getBatch", batchId: "a:b" }],
    ["GET", "/v1/batches/a%3Ab", { kind: "route", name: "getBatch", batchId: "a:b" }],
    ["GET", "/v1/batches/b-1/items", { kind: "route", name: "listItems", batchId: "b-1" }],
    ["POST", "/v1/batches/b-1:cancel", { kind: "route", name: "cancelBatch", batchId: "b-1" }],
    ["POST", "/v1/batches/a:b:retry", { kind: "route", name: "retryBatch", batchId: "a:b" }],
    ["POST", "/v1/batches/b-1%3Aretry", { kind: "route", name: "retryBatch", batchId: "b-1" }],
    ["GET", "/", { kind: "route", name: "dashboard" }],
    ["GET", "/batches/b-1", { kind: "route", name: "dashboard" }],
  ])("%s %s", (method, path, expected) => {
    expect(matchRoute(method, path)).toEqual(expected);
  });

  it.each([
    ["DELETE", "/v1/batches", ["GET", "POST"]],
    ["POST", "/v1/batches/b-1", ["GET"]],
    ["PUT", "/v1/batches/b-1:cancel", ["POST"]],
    ["POST", "/v1/batches/b-1/items", ["GET"]],
    ["POST", "/healthz", ["GET"]],
  ])("%s %s → 405", (method, path, allow) => {
    expect(matchRoute(method, path)).toEqual({ kind: "method_not_allowed", allow });
  });

  it.each([["/v2/batches"], ["/v1/batches/a/b"], ["/v1/batches/%E0%A4%A"], ["/v1"]])("%s → 404", (path) => {
    expect(matchRoute("GET", path)).toEqual({ kind: "not_found" });
  });
});
