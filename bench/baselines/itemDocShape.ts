// The document a pending item is stored as (the same fields and value types the Firestore ledger
// writes), so the raw baselines write exactly as many bytes per item as Tally does — without any of
// Tally's code. Kept as a literal copy on purpose: a baseline must not call the code it measures.
import { Timestamp } from "@google-cloud/firestore";

export function pendingItemDoc(batchId: string, itemId: string, seq: number, now: number) {
  return {
    batchId,
    itemId,
    seq,
    generation: 1,
    status: "pending",
    payload: {},
    attempt: 0,
    leaseOwner: null,
    leaseUntil: null,
    heartbeatAt: null,
    steps: {},
    result: null,
    error: null,
    lastError: null,
    createdAt: now,
    updatedAt: now,
    startedAt: null,
    finishedAt: null,
    pendingSince: now,
    expireAt: Timestamp.fromMillis(now + 90 * 86_400_000),
  };
}

/** Doorbell attributes as the work queue publishes them (no data). */
export function doorbell(batchId: string, itemId: string) {
  return { data: Buffer.alloc(0), attributes: { batchId, itemId, generation: "1" } };
}

export const itemIdFor = (i: number) => `item-${String(i).padStart(8, "0")}`;
