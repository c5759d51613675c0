// The pipeline API: what users write. A pipeline is a named, ordered list of steps; each finished
// step's output is checkpointed on the item, so a redelivery resumes at the first unfinished step.
import type { ZodType } from "zod";
import type { Logger } from "../core/logger";

export interface StepContext {
  /** Fired on timeout or shutdown: long work must stop when it fires. */
  signal: AbortSignal;
  /** The ledger's attempt number for this item (1 on the first delivery). */
  attempt: number;
  batchId: string;
  itemId: string;
  /** Extends the lease now (it is also extended automatically while a step runs). */
  heartbeat(): Promise<void>;
  log: Logger;
}

export interface StepDefinition<P = unknown> {
  name: string;
  /** Receives the payload and the outputs of the steps before it, by step name. */
  run(payload: P, outputs: Record<string, unknown>, ctx: StepContext): Promise<unknown>;
  /** Per-step timeout; the item's timeout applies as well. */
  timeoutSeconds?: number;
  /**
   * Runs the step only for payloads where this returns true; a skipped step is neither run nor
   * checkpointed and has no output.
   */
  when?: (payload: P) => boolean;
}

export type ErrorClass = "permanent" | "transient";

export interface PipelineDefinition<P = unknown> {
  name: string;
  description?: string;
  /** Validated at submission (so a bad payload is refused with a 400) and again by the worker. */
  payload?: ZodType<P>;
  steps: StepDefinition<P>[];
  /** Whole-item timeout across all steps; counts as transient (`timeout` after the last attempt). */
  timeoutSeconds: number;
  /** Ledger attempts before `attempts_exhausted`; defaults to the topology's maxItemAttempts. */
  maxAttempts?: number;
  /** Maps third-party errors to permanent/transient; PermanentError is always permanent. */
  classifyError?: (err: unknown) => ErrorClass;
  /** The item's result from the step outputs; by default the output of the last step that ran. */
  result?: (outputs: Record<string, unknown>) => unknown;
  /**
   * Items of this pipeline running at once in one worker instance (issue #17 §2); the hard cap on
   * the pipeline's in-flight items is this × the worker's max instances. Unset: no cap but the
   * worker's own request concurrency.
   */
  concurrency?: number;
  /**
   * Item starts per second of the whole pipeline, across its worker instances: each instance takes
   * an equal share (this ÷ the worker's max instances, TALLY_WORKER_MAX_INSTANCES; token buckets,
   * functions/pipelines/rateLimiter.ts). Any window of T seconds holds at most this × T +
   * max(burst, max instances) starts. Unset: no rate limit.
   */
  ratePerSecond?: number;
  /** Starts the pipeline may make at once after an idle spell, split across instances; default 1. */
  burst?: number;
}

export function definePipeline<P>(def: PipelineDefinition<P>): PipelineDefinition<P> {
  if (!/^[a-z][a-z0-9-]{0,62}$/.test(def.name))
    throw new Error(`pipeline name "${def.name}" must match [a-z][a-z0-9-]*`);
  if (def.steps.length === 0) throw new Error(`pipeline ${def.name} needs at least one step`);
  const names = new Set<string>();
  for (const s of def.steps) {
    if (names.has(s.name)) throw new Error(`pipeline ${def.name}: step "${s.name}" is defined twice`);
    names.add(s.name);
  }
  if (def.concurrency !== undefined && !(Number.isInteger(def.concurrency) && def.concurrency >= 1))
    throw new Error(`pipeline ${def.name}: concurrency must be a whole number ≥ 1 (got ${def.concurrency})`);
  if (def.ratePerSecond !== undefined && !(def.ratePerSecond > 0))
    throw new Error(`pipeline ${def.name}: ratePerSecond must be above 0 (got ${def.ratePerSecond})`);
  if (def.burst !== undefined && !(Number.isInteger(def.burst) && def.burst >= 1))
    throw new Error(`pipeline ${def.name}: burst must be a whole number ≥ 1 (got ${def.burst})`);
  return def;
}
