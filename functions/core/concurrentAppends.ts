// Concurrent `:append` requests of one batch (issue #15 item 10). Appends are keyed by offset and
// items are stored create-only, keyed by item id: two appends at one offset with different items,
// in flight at once, each compare with what was stored before either wrote, and both can store an
// item at one position. So an append counts itself in flight on the batch document before it
// compares, and:
//   - an append that begins while another is in flight checks every chunk's positions after its
//     store and before its publish (it may be the second writer at a position);
//   - an append already in flight sees the newcomer's join (`joinedWriters` moved) in its next
//     fenced commit and checks from then on; its commits before the join were visible to the
//     newcomer's comparison.
// The sequential client (one append in flight at a time) pays two small batch-document writes per
// append request and no count. A request that died never ends its count; the count is trusted
// until `appendsInFlightUntil`, which no live request can outlast (Cloud Run's request timeout
// caps every append), and after that the next append starts it over.
import type { Batch } from "./model";

/** The longest an append request can be alive: Cloud Run's maximum request timeout (60 minutes). */
export const appendInFlightMaxMs = 3_600_000;

export function decideBeginAppend(
  b: Batch,
  now: number,
  until: number,
): {
  update: Pick<Batch, "joinedWriters" | "appendsInFlight" | "appendsInFlightUntil">;
  answer: { joinedWriters: number; othersInFlight: boolean };
} {
  const live = b.appendsInFlightUntil != null && b.appendsInFlightUntil > now ? (b.appendsInFlight ?? 0) : 0;
  const joinedWriters = (b.joinedWriters ?? 0) + 1;
  return {
    update: {
      joinedWriters,
      appendsInFlight: live + 1,
      appendsInFlightUntil: Math.max(until, live > 0 ? (b.appendsInFlightUntil ?? 0) : 0),
    },
    answer: { joinedWriters, othersInFlight: live > 0 },
  };
}
