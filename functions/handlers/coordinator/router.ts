// Routes of the coordinator's HTTP API (DESIGN.md §3). Matching is by path shape first, then by
// method, so a known path with the wrong method is a 405 (with Allow) and an unknown path a 404.
// Batch ids may contain ':' (see validation.ts), so custom methods (`…/{id}:cancel`) are split at
// the last ':' and only recognised on POST; `GET /v1/batches/a:cancel` is the batch "a:cancel".

export type RouteName =
  | "health"
  | "submitBatch"
  | "listBatches"
  | "getBatch"
  | "listItems"
  | "cancelBatch"
  | "retryBatch"
  | "exportBatch"
  | "appendItems"
  | "sealBatch"
  | "dashboard";

export type RouteMatch =
  | { kind: "route"; name: RouteName; batchId?: string }
  | { kind: "method_not_allowed"; allow: string[] }
  | { kind: "not_found" };

export function matchRoute(method: string, pathname: string): RouteMatch {
  const path = pathname.length > 1 && pathname.endsWith("/") ? pathname.slice(0, -1) : pathname;
  const byMethod = (routes: Partial<Record<string, RouteName>>, batchId?: string): RouteMatch => {
    const name = routes[method];
    if (name) return { kind: "route", name, batchId };
    return { kind: "method_not_allowed", allow: Object.keys(routes) };
  };

  if (path === "/healthz") return byMethod({ GET: "health" });
  if (path === "/v1/batches") return byMethod({ GET: "listBatches", POST: "submitBatch" });
  // The dashboard's HTML pages (functions/dashboard/, mounted through CoordinatorOptions.dashboard).
  if (path === "/" || path === "/batches" || path.startsWith("/batches/"))
    return byMethod({ GET: "dashboard" });

  const m = /^\/v1\/batches\/([^/]+)(\/items)?$/.exec(path);
  if (!m) return { kind: "not_found" };
  let segment: string;
  try {
    segment = decodeURIComponent(m[1]!);
  } catch {
    return { kind: "not_found" };
  }
  if (m[2]) return byMethod({ GET: "listItems" }, segment);
  if (method === "POST") {
    const colon = segment.lastIndexOf(":");
    const verb = colon > 0 ? segment.slice(colon + 1) : "";
    const batchId = segment.slice(0, colon);
    if (verb === "cancel") return { kind: "route", name: "cancelBatch", batchId };
    if (verb === "retry") return { kind: "route", name: "retryBatch", batchId };
    if (verb === "export") return { kind: "route", name: "exportBatch", batchId };
    if (verb === "append") return { kind: "route", name: "appendItems", batchId };
    if (verb === "seal") return { kind: "route", name: "sealBatch", batchId };
  }
  const custom = /:(cancel|retry|export|append|seal)$/.test(segment);
  // `/v1/batches/{id}:cancel` exists for POST only; `/v1/batches/{id}` for GET only.
  return custom && method !== "GET"
    ? { kind: "method_not_allowed", allow: ["POST"] }
    : byMethod({ GET: "getBatch" }, segment);
}
