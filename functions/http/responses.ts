// Writing responses with Node's own ServerResponse API (no Express helpers), so the same code works
// under the Functions Framework and a plain node:http server. Errors follow DESIGN.md §3:
// `{"error": {"code", "message", "details"?}}` with the TallyError's status.
import { type ProblemDetail, TallyError } from "../core/errors";
import type { Logger } from "../core/logger";
import type { HttpResponse } from "./httpTypes";

export interface ErrorBody {
  error: { code: string; message: string; details?: ProblemDetail[] } & Record<string, unknown>;
}

export function sendJson(
  res: HttpResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
) {
  const text = JSON.stringify(body);
  res.statusCode = status;
  res.setHeader("Content-Type", "application/json; charset=utf-8");
  res.setHeader("Content-Length", Buffer.byteLength(text));
  res.setHeader("Cache-Control", "no-store");
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  res.end(text);
}

export function errorBody(err: TallyError, extra: Record<string, unknown> = {}): ErrorBody {
  return {
    error: {
      code: err.code,
      message: err.message,
      ...(err.details && err.details.length > 0 ? { details: err.details } : {}),
      ...extra,
    },
  };
}

/**
 * Sends a TallyError as its status and JSON body. Anything else is a bug or an outage: it is
 * logged at ERROR with its stack and answered 500 without internals. When the response has
 * already started there is nothing left to say, so the connection is cut (the client sees a
 * truncated response rather than a false success).
 */
export function sendError(
  res: HttpResponse,
  err: unknown,
  log: Logger,
  extra: Record<string, unknown> = {},
): void {
  if (res.headersSent) {
    res.destroy(err instanceof Error ? err : undefined);
    return;
  }
  if (err instanceof TallyError) {
    sendJson(res, err.status, errorBody(err, extra));
    return;
  }
  log.error("http.internal_error", `request failed: ${(err as Error)?.message ?? String(err)}`, {
    error: (err as Error)?.stack ?? String(err),
  });
  sendJson(res, 500, { error: { code: "internal", message: "internal error; see the service logs" } });
}
