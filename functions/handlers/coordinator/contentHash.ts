// Idempotency of submissions (DESIGN.md §2.3). The batch stores a fingerprint of its header; items
// are compared one by one against the stored ones (canonical JSON of the payload), which is what
// lets an NDJSON stream be checked without knowing the whole content up front.
//
// The fingerprint covers what changes the batch's meaning: pipeline, failureThreshold and the set
// of dependencies. It deliberately leaves out the format and the item count, so the same batch may
// be re-sent as JSON or as NDJSON; a different number of items is still a 409, found by comparing
// against the stored items and total (submitBatch.ts).
import { createHash } from "node:crypto";

/** JSON with object keys sorted at every level: equal values give equal text. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const keys = Object.keys(value).sort();
  return `{${keys
    .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
    .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`)
    .join(",")}}`;
}

export function sameContent(a: unknown, b: unknown): boolean {
  return canonicalJson(a) === canonicalJson(b);
}

export function batchContentHash(header: {
  pipeline: string;
  failureThreshold: number;
  dependsOn: string[];
}): string {
  const canonical = canonicalJson({
    pipeline: header.pipeline,
    failureThreshold: header.failureThreshold,
    dependsOn: [...header.dependsOn].sort(),
  });
  return createHash("sha256").update(canonical).digest("hex");
}
