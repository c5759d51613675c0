// The chaos suite (DESIGN.md §1, §8): every failure mode, end to end through real processes, real
// emulators and real HTTP, each scenario asserting the full ledger invariant. Two local stacks, one
// after the other (this file runs its describes in order, so the 2-core machine never carries two
// chaos stacks at once): the faults stack (workers with injected faults, a second reconciler) and
// the shared stack (everything else, each scenario on its own batch ids). The scenario logic lives
// in ./scenarios and is shared with the soak runner (npm run chaos).
import { afterAll, beforeAll, describe, it } from "vitest";
import {
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
} from "./scenarios";
import type { Scenario, ScenarioScale, StackKind } from "./scenarios/scenario";
import type { ChaosStack } from "./support/chaosStack";
import { startStack } from "./support/stackProfiles";

const scale: ScenarioScale = { items: 2000 };
const scenarioTimeoutMs = 1_200_000;

function chaosStack(kind: StackKind) {
  let env: ChaosStack | null = null;
  beforeAll(async () => {
    const started = Date.now();
    env = await startStack(kind);
    console.log(`[chaos] ${kind} stack ready in ${Date.now() - started} ms`);
  }, 300_000);
  afterAll(async () => {
    await env?.stop();
  }, 120_000);
  return (scenario: Scenario) =>
    it(
      `${scenario.id}: ${scenario.title}`,
      async () => {
        if (!env) throw new Error(`the ${kind} stack did not start`);
        const started = Date.now();
        const result = await scenario.run(env, scale, (line) =>
          console.log(`[chaos ${scenario.id}] ${line}`),
        );
        console.log(
          `[chaos ${scenario.id}] ${result.items} items, ${result.outcome}, invariant held, recovery ${result.recoveryMs ?? "—"} ms (${result.recovery}); ${Date.now() - started} ms`,
        );
      },
      scenarioTimeoutMs,
    );
}

describe("chaos on the faults stack (workers with injected faults, two reconcilers)", () => {
  const scenario = chaosStack("faults");
  scenario(resultWriteFails);
  scenario(concurrentReconcilers);
});

describe("chaos on the shared stack", () => {
  const scenario = chaosStack("shared");
  scenario(workerKilled);
  scenario(workerTerminated);
  scenario(lostAcknowledgements);
  scenario(coordinatorKilled);
  scenario(duplicateDeliveries);
  scenario(errorKinds);
  scenario(poisonMessages);
  scenario(dependencies);
  scenario(cancelAndRetry);
});
