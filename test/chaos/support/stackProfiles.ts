// The two stacks the scenarios run on: the shared one (plain configuration, chaos proxies on the
// push subscriptions) and the faults one, whose workers run with injected faults (functions/faults.ts)
// and which has a second reconciler process.

import { completeFailAfterCommitRate, completeFailRate } from "../scenarios/resultWriteFails";
import type { StackKind } from "../scenarios/scenario";
import { type ChaosStack, type ChaosStackOptions, startChaosStack } from "./chaosStack";

export const stackProfiles: Record<StackKind, ChaosStackOptions> = {
  shared: { name: "shared", workers: 2 },
  faults: {
    name: "faults",
    workers: 2,
    secondReconciler: true,
    workerEnv: {
      TALLY_FAULT_COMPLETE_FAIL_RATE: String(completeFailRate),
      TALLY_FAULT_COMPLETE_FAIL_AFTER_COMMIT_RATE: String(completeFailAfterCommitRate),
      TALLY_FAULT_SKIP_FINALIZE_RATE: "1",
    },
  },
};

export function startStack(kind: StackKind, echo?: (line: string) => void): Promise<ChaosStack> {
  return startChaosStack({ ...stackProfiles[kind], echo });
}
