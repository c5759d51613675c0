// The coordinator: Tally's HTTP API (DESIGN.md §3) as one Functions Framework HTTP function.
//
//   POST /v1/batches                      submit (JSON body or NDJSON stream)
//   GET  /v1/batches?status=&limit=&pageToken=
//   GET  /v1/batches/{id}
//   GET  /v1/batches/{id}/items?status=&limit=&pageToken=&include=
//   POST /v1/batches/{id}:append          POST /v1/batches/{id}:seal   (open/append/seal submission)
//   POST /v1/batches/{id}:cancel          POST /v1/batches/{id}:retry
//   GET  /healthz
//   GET  /, GET /batches/...              the dashboard, when one is mounted (opts.dashboard)
//
// The handler only uses Node's request/response API, so it runs under the Functions Framework
// (deployed; the framework has already read the body) and under functions/http/streamingServer.ts
// (local stack; bodies are streamed, memory stays flat for any batch size).
import { notFound, TallyError } from "../../core/errors";
import { traceField } from "../../core/logger";
import { type HttpHandler, requestUrl } from "../../http/httpTypes";
import { drainRequest } from "../../http/requestBody";
import { sendError, sendJson } from "../../http/responses";
import { appendToBatch } from "./appendItems";
import { getBatchView, listBatchesView, listItemsView } from "./batchQueries";
import { type CoordinatorOptions, resolveSettings } from "./coordinatorOptions";
import type { HandlerDeps } from "./handlerDeps";
import { cancelBatch, reExportBatch, retryBatch } from "./operatorActions";
import { matchRoute } from "./router";
import { sealBatch } from "./sealBatch";
import { ClientGone, PartiallyStoredSubmission } from "./submissionErrors";
import { submitBatch } from "./submissionRoute";
import { idPattern } from "./validation";

export function createCoordinatorHandler(deps: HandlerDeps, opts: CoordinatorOptions = {}): HttpHandler {
  const settings = resolveSettings(opts, deps.config.env);
  return async (req, res) => {
    const method = (req.method ?? "GET").toUpperCase();
    const url = requestUrl(req);
    const trace = req.headers["x-cloud-trace-context"];
    const log = deps.log.child(traceField(Array.isArray(trace) ? trace[0] : trace, deps.config.projectId));
    try {
      const match = matchRoute(method, url.pathname);
      if (match.kind === "not_found") throw notFound(`no route for ${method} ${url.pathname}`);
      if (match.kind === "method_not_allowed") {
        res.setHeader("Allow", match.allow.join(", "));
        throw new TallyError(405, "method_not_allowed", `${method} is not allowed on ${url.pathname}`, [
          { path: "method", problem: `allowed: ${match.allow.join(", ")}` },
        ]);
      }
      const batchId = match.batchId ?? "";
      if (match.batchId !== undefined && !idPattern.test(batchId))
        throw notFound(`no batch "${batchId}" (batch ids are 1-128 characters of A-Z a-z 0-9 . _ : -)`);
      switch (match.name) {
        case "health":
          return sendJson(res, 200, { status: "ok" });
        case "dashboard":
          if (!settings.dashboard) throw notFound(`no dashboard is mounted on this coordinator`);
          return await settings.dashboard(req, res);
        case "submitBatch": {
          const result = await submitBatch({ deps, log, settings }, req);
          return sendJson(res, result.status, result.body, {
            Location: `/v1/batches/${encodeURIComponent(result.body.id)}`,
          });
        }
        case "getBatch":
          return sendJson(res, 200, await getBatchView(deps.ledger, batchId));
        case "listBatches":
          return sendJson(res, 200, await listBatchesView(deps.ledger, url.searchParams));
        case "listItems":
          return sendJson(res, 200, await listItemsView(deps.ledger, batchId, url.searchParams));
        case "cancelBatch":
          return sendJson(res, 200, await cancelBatch(deps, settings, log, batchId));
        case "retryBatch":
          return sendJson(res, 200, await retryBatch(deps, settings, log, batchId));
        case "exportBatch":
          return sendJson(res, 200, await reExportBatch(deps, log, batchId));
        case "appendItems":
          return sendJson(
            res,
            200,
            await appendToBatch({ deps, log, settings }, batchId, req, url.searchParams),
          );
        case "sealBatch":
          return sendJson(res, 200, await sealBatch({ deps, log, settings }, batchId, req));
      }
    } catch (err) {
      if (err instanceof ClientGone) {
        res.destroy();
        return;
      }
      // An early answer (a bad NDJSON header, a 413) must still reach a client that is sending.
      await drainRequest(req);
      if (err instanceof TallyError && method === "POST" && url.pathname.startsWith("/v1/batches"))
        log.info("batch.request_refused", `${method} ${url.pathname}: ${err.status} ${err.code}`, {
          status: err.status,
          code: err.code,
          problems: err.details?.length ?? 0,
          ...(err instanceof PartiallyStoredSubmission ? { batchId: err.batch.id } : {}),
        });
      sendError(res, err, log, err instanceof PartiallyStoredSubmission ? { batch: err.batch } : {});
    }
  };
}
