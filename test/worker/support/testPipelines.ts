// Pipelines the worker tests register next to the registry's (through the handler's `pipelines`
// option), shared by the in-process workers and the worker child processes.
import { setTimeout as sleep } from "node:timers/promises";
import { definePipeline, type PipelineDefinition } from "../../../functions/pipelines/definePipeline";
import { getPipeline } from "../../../functions/pipelines/registry";

/** Executions per item in this process (to prove a duplicate delivery did not run twice). */
export const executions = new Map<string, number>();

export const countingPipeline = definePipeline<{ sleepMs?: number }>({
  name: "test-counting",
  timeoutSeconds: 30,
  steps: [
    {
      name: "work",
      async run(p, _outputs, ctx) {
        const n = (executions.get(ctx.itemId) ?? 0) + 1;
        executions.set(ctx.itemId, n);
        if (p.sleepMs) await sleep(p.sleepMs, undefined, { signal: ctx.signal });
        return { execution: n, attempt: ctx.attempt };
      },
    },
  ],
});

/** Its step ignores its signal and outlives its 1 s timeout: the runner must stop waiting anyway. */
export const stuckPipeline = definePipeline({
  name: "test-stuck",
  timeoutSeconds: 30,
  maxAttempts: 2,
  steps: [
    {
      name: "stuck",
      timeoutSeconds: 1,
      run: () => new Promise((resolve) => setTimeout(() => resolve("too late"), 4000)),
    },
  ],
});

/**
 * Slow in a worker process started with TALLY_TEST_SLOW=1, fast elsewhere: the delivery that a
 * SIGTERM interrupts is slow, the survivor's finishes at once. (Keyed on the process, not on the
 * attempt: a shutdown release gives the attempt back, so the survivor runs attempt 1 again.)
 */
export const slowFirstPipeline = definePipeline<{ firstAttemptMs: number }>({
  name: "test-slow-first",
  timeoutSeconds: 60,
  steps: [
    {
      name: "work",
      async run(p, _outputs, ctx) {
        if (process.env.TALLY_TEST_SLOW === "1")
          await sleep(p.firstAttemptMs, undefined, { signal: ctx.signal });
        return { attempt: ctx.attempt, pid: process.pid };
      },
    },
  ],
});

/** Maps a third-party error code to permanent (F11), everything else stays transient. */
export const classifiedPipeline = definePipeline<{ violation?: boolean }>({
  name: "test-classified",
  timeoutSeconds: 10,
  classifyError: (err) =>
    (err as { code?: string }).code === "POLICY_VIOLATION" ? "permanent" : "transient",
  steps: [
    {
      name: "call",
      async run(p) {
        if (p.violation)
          throw Object.assign(new Error("policy violation: content refused"), { code: "POLICY_VIOLATION" });
        throw Object.assign(new Error("upstream answered 503"), { code: "UNAVAILABLE" });
      },
    },
  ],
});

// biome-ignore lint/suspicious/noExplicitAny: pipelines differ in payload type.
const testPipelines: PipelineDefinition<any>[] = [
  countingPipeline,
  stuckPipeline,
  slowFirstPipeline,
  classifiedPipeline,
];

// biome-ignore lint/suspicious/noExplicitAny: see above
export function testPipelineLookup(name: string): PipelineDefinition<any> | undefined {
  return testPipelines.find((p) => p.name === name) ?? getPipeline(name);
}
