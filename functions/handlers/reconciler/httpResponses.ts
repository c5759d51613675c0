// JSON answers of the reconciler's endpoints; errors in the shape of DESIGN.md §3:
// {"error": {"code", "message", "details"?}}.
import type { Response } from "@google-cloud/functions-framework";
import type { ProblemDetail } from "../../core/errors";

export function sendJson(res: Response, status: number, body: unknown): void {
  res.status(status).set("content-type", "application/json; charset=utf-8").send(JSON.stringify(body));
}

export function sendError(
  res: Response,
  status: number,
  code: string,
  message: string,
  details?: ProblemDetail[],
  extra: Record<string, unknown> = {},
): void {
  sendJson(res, status, { error: { code, message, ...(details ? { details } : {}) }, ...extra });
}
