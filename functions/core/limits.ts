// Size caps. A Firestore document is at most 1 MiB and holds the payload, every step output and the
// result of one item, so each gets a slice well under that; a request to Firestore is at most
// 10 MiB, which bounds how many items one chunk may carry.
import { tooLarge } from "./errors";

export const limits = {
  maxPayloadBytes: 64 * 1024,
  maxResultBytes: 256 * 1024,
  maxStepOutputBytes: 128 * 1024,
  /** A JSON request body (the NDJSON stream has no total cap; each line is capped instead). */
  maxJsonBodyBytes: 32 * 1024 * 1024,
  maxLineBytes: 128 * 1024,
  maxItemsPerBatch: 2_000_000,
  /** Items per ledger chunk: 500 × 64 KiB payloads stays far below Firestore's 10 MiB request cap. */
  submitChunkItems: 500,
} as const;

export function jsonSize(value: unknown): number {
  return value === undefined ? 0 : Buffer.byteLength(JSON.stringify(value));
}

export function assertFits(what: string, value: unknown, maxBytes: number): void {
  const size = jsonSize(value);
  if (size > maxBytes)
    throw tooLarge(`${what} is ${size} bytes; the limit is ${maxBytes}`, [
      { path: what, problem: `${size} bytes exceeds ${maxBytes}` },
    ]);
}
