// Whether a blocked batch may start (DESIGN.md §2.3): every dependency finalized with an allowed
// outcome → start; any dependency final with another status (or gone) → fail, naming it; else wait.
import type { Batch, BatchStatus } from "../../core/model";
import { isFinalBatchStatus } from "../../core/model";

export const allowedDependencyOutcomes: readonly BatchStatus[] = ["succeeded", "partial"];

export type DependencyDecision =
  | { kind: "start" }
  | { kind: "wait"; waitingOn: string[] }
  | { kind: "fail"; reason: string };

export function decideDependencies(
  batch: Batch,
  dependencies: ReadonlyMap<string, Batch | null>,
): DependencyDecision {
  const problems: string[] = [];
  const waitingOn: string[] = [];
  for (const id of batch.dependsOn) {
    const dep = dependencies.get(id);
    if (!dep) problems.push(`dependency ${id} does not exist`);
    else if (!isFinalBatchStatus(dep.status)) waitingOn.push(id);
    else if (!allowedDependencyOutcomes.includes(dep.status))
      problems.push(`dependency ${id} ended ${dep.status}${dep.reason ? ` (${dep.reason})` : ""}`);
  }
  if (problems.length > 0) return { kind: "fail", reason: problems.join("; ") };
  if (waitingOn.length > 0) return { kind: "wait", waitingOn };
  return { kind: "start" };
}
