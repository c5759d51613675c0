// Export targets for tests that call a result sink directly: a batch id and generation, and the
// batch's creation time (its incarnation), fixed unless a test says otherwise.
import type { ExportTarget } from "../../functions/core/ports";

/** The creation time tests give a batch they export directly (any fixed instant would do). */
export const testBatchCreatedAt = Date.UTC(2026, 0, 1);

export function exportTarget(
  batchId: string,
  generation: number,
  batchCreatedAt = testBatchCreatedAt,
): ExportTarget {
  return { batchId, generation, batchCreatedAt };
}
