// The optional body of POST /reconcile. Cloud Scheduler sends none (or `{}`); an operator may ask
// for a smaller or larger tick. Anything else is refused with every problem named.
import { z } from "zod";
import type { ProblemDetail } from "../../core/errors";
import type { ReconcileOptions } from "./reconcileContext";

const bodySchema = z
  .object({
    pageSize: z.number().int().min(1).max(5000).optional(),
    maxPagesPerSweep: z.number().int().min(1).max(100).optional(),
  })
  .strict();

export type ParsedReconcileRequest =
  | { ok: true; options: ReconcileOptions }
  | { ok: false; problems: ProblemDetail[] };

export function parseReconcileRequest(body: unknown): ParsedReconcileRequest {
  if (body === undefined || body === null || body === "") return { ok: true, options: {} };
  if (Buffer.isBuffer(body)) {
    if (body.length === 0) return { ok: true, options: {} };
    return {
      ok: false,
      problems: [{ path: "body", problem: "must be JSON (Content-Type: application/json)" }],
    };
  }
  if (typeof body === "string") {
    if (body.trim() === "") return { ok: true, options: {} };
    try {
      body = JSON.parse(body);
    } catch {
      return { ok: false, problems: [{ path: "body", problem: "is not valid JSON" }] };
    }
  }
  const parsed = bodySchema.safeParse(body);
  if (parsed.success) return { ok: true, options: parsed.data };
  return {
    ok: false,
    problems: parsed.error.issues.flatMap((issue): ProblemDetail[] =>
      issue.code === "unrecognized_keys"
        ? issue.keys.map((k) => ({ path: k, problem: "is not a known option (pageSize, maxPagesPerSweep)" }))
        : [{ path: issue.path.join(".") || "body", problem: issue.message }],
    ),
  };
}
