// The stored prefix of a batch: how many items, from position 0, are stored without a gap — derived
// from what is stored, not taken from the batch's `received` (issue #15 item 4).
//
// `received` is a lower bound only. A submission records it beside the cursor (at most once a
// second, and once at the end of a request) rather than per chunk, and a coordinator that dies after
// storing items but before that write leaves it behind what is stored. Items are only ever stored at
// positions whose predecessors are stored (an append is refused past the prefix), except by a stream
// whose concurrent chunk stores were cut short, which can leave a hole after the prefix: so the probe
// reads the positions from `received` on, in order, and stops at the first missing one.
//
// Cost: one indexed query per `probePage` items stored beyond `received` (usually none or one), read
// by the append and seal handlers and the reconciler's stale-submission sweep before they decide.
import type { Batch } from "../core/model";
import type { Ledger } from "../core/ports";

/** Items read per probe query (payloads come along: getItemsBySeq is the port's read by position). */
export const probePage = 200;

export interface StoredPrefix {
  /** Items 0..prefix-1 are all stored. */
  prefix: number;
  /** The probe stopped at `maxItems` with every position stored so far: more may be stored. */
  bounded: boolean;
}

export async function storedPrefix(
  ledger: Pick<Ledger, "getItemsBySeq">,
  batch: Pick<Batch, "batchId" | "received">,
  opts: {
    /** Stop once the prefix reaches this position (the caller needs no more). */
    upTo?: number;
    /** Read at most this many positions beyond `received`. */
    maxItems?: number;
  } = {},
): Promise<StoredPrefix> {
  let at = batch.received;
  const stopAt = opts.upTo ?? Number.POSITIVE_INFINITY;
  const limit = at + (opts.maxItems ?? Number.POSITIVE_INFINITY);
  while (at < stopAt) {
    if (at >= limit) return { prefix: at, bounded: true };
    const count = Math.min(probePage, stopAt - at, limit - at);
    const items = await ledger.getItemsBySeq(batch.batchId, at, count);
    let next = at;
    for (const it of items) {
      if (it.seq !== next) break;
      next++;
    }
    const full = next - at === count;
    at = next;
    if (!full) return { prefix: at, bounded: false };
  }
  return { prefix: at, bounded: false };
}
