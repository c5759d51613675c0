// The threshold rule (DESIGN.md §2.3): succeeded when nothing failed; partial when the failed
// fraction is at or below the batch's failureThreshold; failed above it.
import type { BatchCounts, BatchOutcome } from "./model";

export const defaultFailureThreshold = 0.05;

export function decideOutcome(
  counts: Pick<BatchCounts, "total" | "failed">,
  failureThreshold: number,
): BatchOutcome {
  if (counts.failed === 0) return "succeeded";
  const fraction = counts.total === 0 ? 0 : counts.failed / counts.total;
  return fraction <= failureThreshold ? "partial" : "failed";
}
