// The `demo` pipeline: a controllable item processor for tests, chaos runs and the local demo.
// Its payload makes an item sleep, fail transiently a number of times, fail permanently, crash the
// process, or run several checkpointed steps. Payload (every field optional, unknown keys refused):
//   value      echoed back in the result
//   sleepMs    each step sleeps this long (0..600000); the sleep stops when the step's signal fires
//   failTimes  the last step throws a transient error while attempt <= failTimes (0..100)
//   permanent  the last step throws a PermanentError (failed at once, never retried)
//   crash      the last step calls process.exit(1) mid-step: true on every attempt, n while attempt <= n
//   steps      how many checkpointed steps run (1..10, default 1); steps 1..n-1 are checkpointed,
//              the last one's output is the result
// Result: { value, attempt, steps }.
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { PermanentError } from "../core/errors";
import { definePipeline, type StepDefinition } from "./definePipeline";

export const demoPayload = z.strictObject({
  value: z.unknown().optional(),
  sleepMs: z.number().int().min(0).max(600_000).optional(),
  failTimes: z.number().int().min(0).max(100).optional(),
  permanent: z.boolean().optional(),
  crash: z.union([z.boolean(), z.number().int().min(0).max(100)]).optional(),
  steps: z.number().int().min(1).max(10).optional(),
});
export type DemoPayload = z.infer<typeof demoPayload>;

export interface DemoResult {
  value: unknown;
  attempt: number;
  steps: number;
}

export const demoMaxSteps = 10;

function shouldCrash(crash: DemoPayload["crash"], attempt: number): boolean {
  if (crash === true) return true;
  return typeof crash === "number" && attempt <= crash;
}

function demoStep(index: number): StepDefinition<DemoPayload> {
  return {
    name: `step-${index}`,
    when: (p) => index <= (p.steps ?? 1),
    async run(p, _outputs, ctx) {
      if (p.sleepMs) await sleep(p.sleepMs, undefined, { signal: ctx.signal });
      const last = index === (p.steps ?? 1);
      if (!last) return { step: index, attempt: ctx.attempt };
      if (shouldCrash(p.crash, ctx.attempt)) {
        ctx.log.warn("demo.crash", `demo item crashes the process on attempt ${ctx.attempt}`);
        process.exit(1);
      }
      if (p.permanent) throw new PermanentError("demo: permanent failure requested by the payload");
      if (p.failTimes !== undefined && ctx.attempt <= p.failTimes)
        throw new Error(`demo: transient failure ${ctx.attempt} of ${p.failTimes}`);
      const result: DemoResult = { value: p.value ?? null, attempt: ctx.attempt, steps: p.steps ?? 1 };
      return result;
    },
  };
}

export const demoPipeline = definePipeline<DemoPayload>({
  name: "demo",
  description: "Sleeps, fails, crashes or runs several steps on request; for tests, chaos runs and demos.",
  payload: demoPayload,
  steps: Array.from({ length: demoMaxSteps }, (_, i) => demoStep(i + 1)),
  // The longest payload (10 steps × 600 s) exceeds any push request; the worker caps the item
  // timeout at the topology's workerTimeoutSeconds.
  timeoutSeconds: 600,
});
