// The step runner (DESIGN.md §2.2): runs a leased item's steps from the first unfinished one,
// checkpointing each finished step on the item so a redelivery resumes where this one stopped.
// The last step is not checkpointed: its output becomes the result, which the completion writes
// together with `succeeded` (F1) — one write per item saved.
//
// Every step gets an AbortSignal that fires on its own timeout, the item's timeout, the worker's
// shutdown, or the loss of the lease; the runner stops waiting for a step as soon as its signal
// fires, even if the step ignores it. Errors are classified here (F11): PermanentError or the
// pipeline's classifyError → permanent; timeouts → transient of kind `timeout`; anything else →
// transient. The caller (the worker handler) turns the outcome into ledger transitions.
//
// Continuations (issue #17 §3): an item may need longer than one push request (the ack deadline caps
// a request at 600 s) as long as each step fits in one. After each checkpointed step the runner
// compares what is left of this request's budget with what the next step is expected to need — the
// longest step this request has run, plus a quarter, plus a second for the writes that follow — and
// when it does not fit it stops there with `continued`: the worker then releases the item keeping
// its checkpoints and the attempt, and hands it to a fresh delivery that resumes at the next step.
// The rule guesses from steps already run (a pipeline's steps are often alike); a next step longer
// than the guess still ends at the request budget as a `timeout`, like any step too long for a request.
import { PermanentError, RetryLaterError } from "../core/errors";
import { jsonSize, limits } from "../core/limits";
import type { Logger } from "../core/logger";
import type { Item } from "../core/model";
import type { Clock, ItemRef, Ledger } from "../core/ports";
import type { ErrorClass, PipelineDefinition, StepContext, StepDefinition } from "./definePipeline";
import { LeaseKeeper } from "./leaseKeeper";

export type InterruptReason = "timeout" | "shutdown" | "lease_lost";

/** The reason a run's signal fired. */
export class RunInterrupted extends Error {
  constructor(
    readonly reason: InterruptReason,
    message: string,
  ) {
    super(message);
    this.name = "RunInterrupted";
  }
}

export type RunOutcome =
  | { kind: "completed"; result: unknown; stepsRun: string[] }
  /** `timeout` is a transient failure that ends as kind `timeout` after the last attempt. */
  | {
      kind: "failed";
      errorClass: ErrorClass | "timeout";
      message: string;
      step: string | null;
      /** A transient error that asked not to be retried sooner (RetryLaterError). */
      retryAfterMs?: number;
    }
  /** Shutdown or a lost lease: the item must not be failed for it. */
  | { kind: "interrupted"; reason: "shutdown" | "lease_lost"; message: string; step: string | null }
  /** The next step would not fit in what is left of this request: resume it in a fresh one. */
  | { kind: "continued"; stepsRun: string[]; nextStep: string; message: string };

/** Room the next step is expected to need: the longest step run so far, + 25 %, + 1 s for the writes. */
export function expectedStepMs(longestStepMs: number): number {
  return Math.ceil(longestStepMs * 1.25) + 1000;
}

export interface RunItemInput {
  // biome-ignore lint/suspicious/noExplicitAny: the registry holds pipelines of every payload type.
  pipeline: PipelineDefinition<any>;
  /** The item as leased by this delivery (its `steps` hold the checkpoints of earlier attempts). */
  item: Item;
  ref: ItemRef;
  owner: string;
  ledger: Ledger;
  clock: Clock;
  log: Logger;
  leaseMs: number;
  /**
   * What is left of the pipeline's timeout for this attempt's run (the whole run, across the
   * requests continuations spread it over).
   */
  itemTimeoutMs: number;
  /**
   * What this request may still use (the worker's request timeout less a margin). Given: the run
   * stops at it (a `timeout`) and hands over to a fresh request when the next step would not fit.
   */
  requestBudgetMs?: number;
  /** Fired when the worker shuts down. */
  shutdown: AbortSignal;
  /** Receives the lease keeper (tests and op counters read its heartbeat count). */
  onLeaseKeeper?: (keeper: LeaseKeeper) => void;
}

const maxMessageLength = 1000;
export function errorMessage(err: unknown): string {
  const text = err instanceof Error ? err.message || err.name : String(err);
  return text.length > maxMessageLength ? `${text.slice(0, maxMessageLength)}…` : text;
}

// biome-ignore lint/suspicious/noExplicitAny: see RunItemInput.pipeline
export function classifyError(pipeline: PipelineDefinition<any>, err: unknown): ErrorClass {
  // Checked by name as well: a PermanentError from another copy of the module is still permanent.
  if (err instanceof PermanentError || (err instanceof Error && err.name === "PermanentError"))
    return "permanent";
  if (!pipeline.classifyError) return "transient";
  try {
    return pipeline.classifyError(err) === "permanent" ? "permanent" : "transient";
  } catch {
    return "transient";
  }
}

/** Steps this payload runs (a step's `when` may leave it out). */
// biome-ignore lint/suspicious/noExplicitAny: see RunItemInput.pipeline
export function activeSteps(pipeline: PipelineDefinition<any>, payload: unknown): StepDefinition<any>[] {
  return pipeline.steps.filter((s) => !s.when || s.when(payload));
}

function validatePayload(
  // biome-ignore lint/suspicious/noExplicitAny: see RunItemInput.pipeline
  pipeline: PipelineDefinition<any>,
  payload: unknown,
): { ok: true; payload: unknown } | { ok: false; message: string } {
  if (!pipeline.payload) return { ok: true, payload };
  const parsed = pipeline.payload.safeParse(payload);
  if (parsed.success) return { ok: true, payload: parsed.data };
  const problems = parsed.error.issues
    .map((i) => `${i.path.length ? i.path.join(".") : "payload"}: ${i.message}`)
    .join("; ");
  return { ok: false, message: `the payload does not match pipeline ${pipeline.name}: ${problems}` };
}

/** Resolves when the signal fires (with its reason); never settles otherwise. */
function whenAborted(signal: AbortSignal): { promise: Promise<never>; dispose(): void } {
  let onAbort: () => void = () => {};
  const promise = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  promise.catch(() => {});
  return { promise, dispose: () => signal.removeEventListener("abort", onAbort) };
}

export async function runItem(input: RunItemInput): Promise<RunOutcome> {
  const { pipeline, item, ref, owner, ledger, clock, log } = input;
  const validated = validatePayload(pipeline, item.payload);
  if (!validated.ok)
    return { kind: "failed", errorClass: "permanent", message: validated.message, step: null };
  const payload = validated.payload;
  if (input.itemTimeoutMs <= 0)
    return {
      kind: "failed",
      errorClass: "timeout",
      message: `the item timed out: its pipeline's timeout (${pipeline.timeoutSeconds} s) ran out before this request`,
      step: null,
    };

  // One controller for the item: timeout, shutdown and a lost lease all abort it with a reason.
  const itemController = new AbortController();
  const interrupt = (reason: InterruptReason, message: string) => {
    if (!itemController.signal.aborted) itemController.abort(new RunInterrupted(reason, message));
  };
  const requestStart = clock.now();
  const requestBound = input.requestBudgetMs !== undefined && input.requestBudgetMs < input.itemTimeoutMs;
  const itemTimer = requestBound
    ? setTimeout(
        () =>
          interrupt(
            "timeout",
            `the step did not finish within the request's budget (${input.requestBudgetMs} ms): a step must fit in one request (workerTimeoutSeconds)`,
          ),
        input.requestBudgetMs,
      )
    : setTimeout(
        () =>
          interrupt(
            "timeout",
            `the item timed out after ${pipeline.timeoutSeconds} s (its pipeline's timeout, for the whole run)`,
          ),
        input.itemTimeoutMs,
      );
  const onShutdown = () => interrupt("shutdown", "the worker is shutting down");
  if (input.shutdown.aborted) onShutdown();
  else input.shutdown.addEventListener("abort", onShutdown, { once: true });

  const keeper = new LeaseKeeper({
    ledger,
    clock,
    log,
    ref,
    owner,
    leaseMs: input.leaseMs,
    leaseUntil: item.lease?.until ?? clock.now() + input.leaseMs,
    onLost: (message) => interrupt("lease_lost", message),
  });
  input.onLeaseKeeper?.(keeper);
  keeper.start();

  const steps = activeSteps(pipeline, payload);
  const outputs: Record<string, unknown> = {};
  const stepsRun: string[] = [];
  let current: string | null = null;
  let longestStepMs = 0;
  try {
    for (const [index, step] of steps.entries()) {
      const checkpoint = item.steps[step.name];
      if (checkpoint?.status === "succeeded") {
        outputs[step.name] = checkpoint.output ?? null;
        continue;
      }
      if (stepsRun.length > 0 && requestBound) {
        const left = input.requestBudgetMs! - (clock.now() - requestStart);
        if (left < expectedStepMs(longestStepMs))
          return {
            kind: "continued",
            stepsRun,
            nextStep: step.name,
            message: `${left} ms left in this request, step ${step.name} is expected to need ${expectedStepMs(longestStepMs)} ms`,
          };
      }
      current = step.name;
      const isLast = index === steps.length - 1;
      const stepStart = clock.now();
      const output = await runStep(step, payload, { ...outputs }, itemController.signal, input, keeper);
      longestStepMs = Math.max(longestStepMs, clock.now() - stepStart);
      stepsRun.push(step.name);
      if (!isLast) {
        const size = jsonSize(output);
        if (size > limits.maxStepOutputBytes)
          throw new PermanentError(
            `step ${step.name} returned ${size} bytes; a checkpointed step output may hold at most ${limits.maxStepOutputBytes}`,
          );
        if (itemController.signal.aborted) throw itemController.signal.reason;
        const held = await ledger.checkpointStep(ref, owner, step.name, output ?? null, clock.now());
        if (!held)
          interrupt("lease_lost", `the checkpoint of step ${step.name} was refused: the lease is gone`);
        if (itemController.signal.aborted) throw itemController.signal.reason;
        log.debug("item.step_checkpointed", `step ${step.name} checkpointed`, { step: step.name });
      }
      outputs[step.name] = output ?? null;
    }
    current = null;
    const last = steps[steps.length - 1];
    const result = pipeline.result ? pipeline.result(outputs) : last ? outputs[last.name] : null;
    const size = jsonSize(result);
    if (size > limits.maxResultBytes)
      throw new PermanentError(
        `the result is ${size} bytes; an item's result may hold at most ${limits.maxResultBytes}`,
      );
    return { kind: "completed", result: result ?? null, stepsRun };
  } catch (err) {
    const signal = itemController.signal;
    const interrupted =
      err instanceof RunInterrupted
        ? err
        : signal.aborted && signal.reason instanceof RunInterrupted
          ? signal.reason
          : null;
    if (interrupted) {
      if (interrupted.reason === "timeout")
        return { kind: "failed", errorClass: "timeout", message: interrupted.message, step: current };
      return { kind: "interrupted", reason: interrupted.reason, message: interrupted.message, step: current };
    }
    const where = current ? `step ${current}: ` : "";
    const errorClass = classifyError(pipeline, err);
    const retryAfterMs =
      errorClass === "transient" &&
      (err instanceof RetryLaterError || (err as Error)?.name === "RetryLaterError")
        ? (err as RetryLaterError).retryAfterMs
        : undefined;
    return {
      kind: "failed",
      errorClass,
      message: `${where}${errorMessage(err)}`,
      step: current,
      ...(retryAfterMs !== undefined && Number.isFinite(retryAfterMs) && { retryAfterMs }),
    };
  } finally {
    keeper.stop();
    clearTimeout(itemTimer);
    input.shutdown.removeEventListener("abort", onShutdown);
  }
}

async function runStep(
  // biome-ignore lint/suspicious/noExplicitAny: see RunItemInput.pipeline
  step: StepDefinition<any>,
  payload: unknown,
  outputs: Record<string, unknown>,
  itemSignal: AbortSignal,
  input: RunItemInput,
  keeper: LeaseKeeper,
): Promise<unknown> {
  if (itemSignal.aborted) throw itemSignal.reason;
  // The step's own controller: its timeout, and whatever aborts the item.
  const controller = new AbortController();
  const forward = () => controller.abort(itemSignal.reason);
  itemSignal.addEventListener("abort", forward, { once: true });
  const stepTimer = step.timeoutSeconds
    ? setTimeout(
        () =>
          controller.abort(
            new RunInterrupted("timeout", `step ${step.name} timed out after ${step.timeoutSeconds} s`),
          ),
        step.timeoutSeconds * 1000,
      )
    : null;
  const ctx: StepContext = {
    signal: controller.signal,
    attempt: input.item.attempt,
    batchId: input.ref.batchId,
    itemId: input.ref.itemId,
    heartbeat: async () => {
      if (!(await keeper.beat(true)))
        throw controller.signal.aborted
          ? controller.signal.reason
          : new RunInterrupted("lease_lost", "lease lost");
    },
    log: input.log.child({ step: step.name }),
  };
  const aborted = whenAborted(controller.signal);
  const running = Promise.resolve().then(() => step.run(payload, outputs, ctx));
  // A step that ignores its signal keeps running in the background; its late outcome is dropped.
  running.catch(() => {});
  try {
    return await Promise.race([running, aborted.promise]);
  } catch (err) {
    // Whatever the step threw after its signal fired (an AbortError, usually), the signal's
    // reason says why it stopped.
    if (controller.signal.aborted && controller.signal.reason instanceof RunInterrupted)
      throw controller.signal.reason;
    throw err;
  } finally {
    aborted.dispose();
    if (stepTimer) clearTimeout(stepTimer);
    itemSignal.removeEventListener("abort", forward);
  }
}
