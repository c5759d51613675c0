// The chaos scenarios (DESIGN.md §1, §8), in the order the suite and the soak run them. Each is
// written once here and run by test/chaos/*.test.ts (npm test) and test/chaos/runChaos.ts (soak).
import { cancelAndRetry } from "./cancelAndRetry";
import { concurrentReconcilers } from "./concurrentReconcilers";
import { coordinatorKilled } from "./coordinatorKilled";
import { dependencies } from "./dependencies";
import { duplicateDeliveries } from "./duplicateDeliveries";
import { errorKinds } from "./errorKinds";
import { lostAcknowledgements } from "./lostAcknowledgements";
import { poisonMessages } from "./poisonMessages";
import { resultWriteFails } from "./resultWriteFails";
import type { Scenario } from "./scenario";
import { workerKilled } from "./workerKilled";
import { workerTerminated } from "./workerTerminated";

export const scenarios: Scenario[] = [
  resultWriteFails,
  workerKilled,
  workerTerminated,
  lostAcknowledgements,
  coordinatorKilled,
  duplicateDeliveries,
  concurrentReconcilers,
  errorKinds,
  poisonMessages,
  dependencies,
  cancelAndRetry,
];

export {
  cancelAndRetry,
  concurrentReconcilers,
  coordinatorKilled,
  dependencies,
  duplicateDeliveries,
  errorKinds,
  lostAcknowledgements,
  poisonMessages,
  resultWriteFails,
  workerKilled,
  workerTerminated,
};
