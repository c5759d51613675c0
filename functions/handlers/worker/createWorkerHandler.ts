// The worker (DESIGN.md §2.2, §2.5, §3): a Functions Framework HTTP function receiving Pub/Sub push
// deliveries of doorbells {batchId, itemId, generation}. Per delivery:
//   verify the OIDC token (when configured) → decode (poison → acknowledge) → lease the item in one
//   conditional transaction (F6) → run its steps from the first unfinished one → complete (result
//   + succeeded in one write, F1) → "anything left?" (one read) → finalize when this was the last
//   → 2xx.
// Permanent errors fail the item at once and acknowledge (F11). Transient errors release the lease
// with the error recorded and answer 5xx so Pub/Sub redelivers after the subscription's backoff;
// at the ledger's last attempt the item fails instead and the delivery is acknowledged (F10).
// Shutdown aborts running steps, releases their leases and answers their deliveries 503 (F9).
//
// Admission (issue #17 §2): a pipeline that declares `concurrency` or `ratePerSecond` is admitted
// through its gate (functions/pipelines/rateLimiter.ts; the rate is the pipeline's, this instance
// takes 1 / TALLY_WORKER_MAX_INSTANCES of it) BEFORE the lease — the lease is what uses a
// ledger attempt. A delivery waits first in, first out for a slot and a token, at most
// `admissionWaitMs`; if none comes it is answered 429 `rate_limited` (503 when the worker shuts
// down meanwhile) with nothing written to the ledger: a Pub/Sub delivery used, no attempt. Because
// such refusals spend the message's delivery headroom (maxDeliveryAttempts > maxItemAttempts,
// functions/topology.ts), the wait is long (a quarter of the request timeout, at most 60 s) so that
// a refused item is rare and always able to run later; the time waited is taken off the item's
// budget so the item still finishes inside the request.
//
// Continuations (issue #17 §3): a pipeline's timeoutSeconds bounds the whole run of an attempt,
// which may span several push requests; each request still ends within the worker's request
// timeout. When the runner stops after a checkpointed step because the next one would not fit in
// this request (runItem.ts), the item is released with its checkpoints, the attempt given back and
// the run's start kept (Ledger.releaseItem `continuation`), a fresh doorbell is published and the
// delivery acknowledged: the next delivery resumes at the next step as the same attempt. A fresh
// message rather than a non-2xx answer, because a redelivery would come after the retry backoff and
// count toward the message's maxDeliveryAttempts, so a long item would be dead-lettered.
//
// Not before (issue #17 §2): a transient failure that said when to try again (RetryLaterError: an
// HTTP pipeline's 429 with a Retry-After longer than it waits out in the step) releases the item
// with `notBefore` recorded, using the attempt as any transient failure does, and answers 5xx. A
// delivery that finds the item not due writes nothing and uses no attempt: it waits for it when
// the time left fits in the admission wait, else it is answered 429 so Pub/Sub redelivers after
// its backoff — or, when the message is one delivery short of dead-lettering, acknowledged, the
// item left pending for the stale-pending sweep to republish. No delivery leases it sooner.
//
// Per delivery the work is constant (F8): with a warm batch cache, 1 read + 1 write to lease,
// 1 read + 1 write to complete, 1 read for the "anything left?" check — nothing scans the queue or
// the batch. A pipeline name is read from the batch once per batch per instance (cached).

import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { hostname } from "node:os";
import type { Request, Response } from "@google-cloud/functions-framework";
import {
  type CertificateSource,
  createOidcVerifier,
  OidcVerificationError,
  type OidcVerifier,
  parseAllowedEmails,
} from "../../auth/oidc";
import { type FinalizeDeps, settleBatch } from "../../core/finalizeBatch";
import { type Logger, traceField } from "../../core/logger";
import type { ItemError } from "../../core/model";
import type { ItemRef } from "../../core/ports";
import { assertCrashPointsAllowed, CrashPointReached, type CrashSwitch } from "../../faults";
import type { PipelineDefinition } from "../../pipelines/definePipeline";
import { PipelineGates, type Release } from "../../pipelines/rateLimiter";
import { getPipeline } from "../../pipelines/registry";
import { errorMessage, type RunOutcome, runItem } from "../../pipelines/runItem";
import { decodePushRequest, itemRefFromAttributes, type PushDelivery } from "../../pubsub/pushDelivery";
import type { TallyDeps } from "../../runtime";
import { finalizeDepsFor } from "../finalizeDeps";

export type WorkerDeps = Pick<TallyDeps, "config" | "ledger" | "queue" | "sink" | "clock" | "log">;

export interface WorkerHandlerOptions {
  /** Pipeline lookup; the registry by default (tests register their own pipelines here). */
  // biome-ignore lint/suspicious/noExplicitAny: pipelines differ in payload type; each validates its own.
  pipelines?: (name: string) => PipelineDefinition<any> | undefined;
  /** Names this worker instance in lease owners; defaults to host and pid. */
  instanceId?: string;
  /** Certificates for OIDC verification (default: Google's); tests inject a local key pair's. */
  oidcCertificates?: CertificateSource;
  /**
   * How long a delivery of a rate- or concurrency-limited pipeline waits for admission before it is
   * refused (429, no ledger attempt). Default: a quarter of the worker's request timeout, at most 60 s.
   */
  admissionWaitMs?: number;
  /** How long `shutdown()` waits for running deliveries to release their items. */
  shutdownTimeoutMs?: number;
  /** Batches whose pipeline name is remembered (a batch's pipeline never changes). */
  batchCacheSize?: number;
  /**
   * Test harness only: "dies" at a named crash point (functions/faults.ts) — here right after a
   * completion committed, before the settle and the answer. Refused in a deployment.
   */
  crashAt?: CrashSwitch;
}

export interface WorkerStats {
  deliveries: number;
  succeeded: number;
  failed: number;
  /** Leases released after a transient error (answered 5xx for redelivery). */
  released: number;
  /** Deliveries acknowledged without work (item terminal or leased by a live holder). */
  skipped: number;
  poison: number;
  /** Deliveries stopped by shutdown or a lost lease (answered 503). */
  interrupted: number;
  unauthenticated: number;
  /** Deliveries refused before the lease by a pipeline's concurrency or rate limit (no attempt used). */
  refused: number;
  /** Deliveries that handed their item to a fresh delivery after a checkpoint (continuations). */
  continued: number;
  /** Deliveries that found their item not due yet (notBefore) and did not wait for it. */
  deferred: number;
}

export interface WorkerHandler {
  (req: Request, res: Response): Promise<void>;
  /** Stops accepting deliveries, aborts running steps, releases their leases; resolves when answered. */
  shutdown(): Promise<void>;
  readonly stats: WorkerStats;
  /** Requests being handled right now. */
  readonly inFlight: number;
}

interface Reply {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}
const ack = (outcome: string, fields: Record<string, unknown> = {}): Reply => ({
  status: 200,
  body: { acknowledged: true, outcome, ...fields },
});
const errorReply = (status: number, code: string, message: string, details?: unknown): Reply => ({
  status,
  body: { error: { code, message, ...(details === undefined ? {} : { details }) } },
});

export function createWorkerHandler(deps: WorkerDeps, opts: WorkerHandlerOptions = {}): WorkerHandler {
  const { config, ledger, clock } = deps;
  const { delivery: settings } = config.topology;
  const log = deps.log.child({ component: "worker" });
  const lookupPipeline = opts.pipelines ?? getPipeline;
  if (opts.crashAt) assertCrashPointsAllowed();
  const instanceId = opts.instanceId ?? `${hostname()}/${process.pid}`;
  const leaseMs = settings.leaseSeconds * 1000;
  // The item must finish and complete inside the push request (the ack deadline bounds it too).
  const requestMs = settings.workerTimeoutSeconds * 1000;
  const ackDeadlineMs = settings.ackDeadlineSeconds * 1000;
  const itemBudgetMs = Math.max(1000, requestMs - Math.min(5000, requestMs / 10));
  const shutdownTimeoutMs = opts.shutdownTimeoutMs ?? 8000;
  const admissionWaitMs = opts.admissionWaitMs ?? Math.min(60_000, Math.floor(requestMs / 4));
  const gates = new PipelineGates(config.env.TALLY_WORKER_MAX_INSTANCES);
  const finalizeDeps: FinalizeDeps = finalizeDepsFor(deps, log);

  const verifier = buildVerifier(deps, opts);
  const stats: WorkerStats = {
    deliveries: 0,
    succeeded: 0,
    failed: 0,
    released: 0,
    skipped: 0,
    poison: 0,
    interrupted: 0,
    unauthenticated: 0,
    refused: 0,
    continued: 0,
    deferred: 0,
  };
  const shutdownController = new AbortController();
  const inflight = new Set<Promise<void>>();

  // batchId → pipeline name, least recently used first; concurrent first deliveries of a batch
  // share one read.
  const batchCache = new Map<string, string>();
  const pendingLookups = new Map<string, Promise<string | null>>();
  const cacheSize = opts.batchCacheSize ?? 1000;
  function pipelineNameOf(batchId: string): Promise<string | null> {
    const cached = batchCache.get(batchId);
    if (cached !== undefined) {
      batchCache.delete(batchId);
      batchCache.set(batchId, cached);
      return Promise.resolve(cached);
    }
    let lookup = pendingLookups.get(batchId);
    if (!lookup) {
      lookup = ledger
        .getBatch(batchId)
        .then((batch) => {
          if (!batch) return null;
          batchCache.set(batchId, batch.pipeline);
          if (batchCache.size > cacheSize) batchCache.delete(batchCache.keys().next().value!);
          return batch.pipeline;
        })
        .finally(() => pendingLookups.delete(batchId));
      pendingLookups.set(batchId, lookup);
    }
    return lookup;
  }

  async function settle(batchId: string, ilog: Logger): Promise<void> {
    try {
      await settleBatch(finalizeDeps, batchId);
    } catch (err) {
      // The item is terminal either way; the reconciler finalizes what slipped through.
      ilog.error("batch.settle_failed", `finalization check failed: ${errorMessage(err)}`);
    }
  }

  function poison(dlog: Logger, delivery: PushDelivery, reason: string): Reply {
    stats.poison++;
    dlog.error("message.poison", `poison message ${delivery.messageId} acknowledged: ${reason}`, {
      reason,
      attributes: delivery.attributes,
      subscription: delivery.subscription,
    });
    return ack("poison", { reason });
  }

  async function handleDelivery(req: Request): Promise<Reply> {
    const decoded = decodePushRequest(req.body, req.headers);
    if (decoded.kind === "not_a_delivery")
      return errorReply(
        400,
        "invalid_argument",
        "the request is not a Pub/Sub push delivery",
        decoded.problems,
      );
    const { delivery } = decoded;
    stats.deliveries++;
    const dlog = log.child({
      messageId: delivery.messageId,
      ...traceField(req.header("x-cloud-trace-context"), config.projectId),
    });
    const parsed = itemRefFromAttributes(delivery.attributes);
    if (!parsed.ok) return poison(dlog, delivery, parsed.problems.join("; "));
    const ref = parsed.ref;
    const ilog = dlog.child({ batchId: ref.batchId, itemId: ref.itemId, generation: ref.generation });

    const pipelineName = await pipelineNameOf(ref.batchId);
    if (pipelineName === null) return poison(ilog, delivery, `unknown batch ${ref.batchId}`);
    // A worker deployed for one pipeline (its resources, its secrets) never runs another's item. A
    // doorbell on the wrong topic is acknowledged untouched: the item stays pending, and the
    // reconciler's stale-pending sweep publishes it on its own pipeline's topic (it may publish
    // there; this worker may not).
    if (config.workerPipeline !== undefined && pipelineName !== config.workerPipeline) {
      ilog.warn(
        "item.misrouted",
        `item of pipeline ${pipelineName} reached the ${config.workerPipeline} worker: left pending for the reconciler to republish`,
        { pipeline: pipelineName, worker: config.workerPipeline },
      );
      return ack("misrouted", { pipeline: pipelineName });
    }
    const pipeline = lookupPipeline(pipelineName);
    const maxAttempts = pipeline?.maxAttempts ?? settings.maxItemAttempts;

    // Admission before the lease: a refusal here writes nothing and uses no attempt.
    const gate = pipeline ? gates.gateFor(pipeline.name, pipeline) : null;
    let release: Release | null = null;
    let waitedMs = 0;
    if (gate) {
      const arrived = clock.now();
      release = await gate.acquire(admissionWaitMs, shutdownController.signal);
      waitedMs = clock.now() - arrived;
      if (!release) {
        stats.refused++;
        if (shutdownController.signal.aborted)
          return errorReply(503, "shutting_down", "the worker is shutting down");
        const message = `pipeline ${pipelineName} is at its limit in this instance (${describeLimits(pipeline!, gates.instances)}); no slot within ${admissionWaitMs} ms — redeliver later (no attempt was used)`;
        ilog.info("item.admission_refused", message, {
          pipeline: pipelineName,
          waitedMs,
          inFlight: gate.inFlight,
          waiting: gate.waiting,
          deliveryAttempt: delivery.deliveryAttempt,
        });
        return {
          ...errorReply(429, "rate_limited", message, { pipeline: pipelineName, waitedMs }),
          headers: { "Retry-After": "1" },
        };
      }
    }
    try {
      return await leaseAndRun(ref, delivery, ilog, pipelineName, pipeline, maxAttempts, waitedMs);
    } finally {
      release?.();
    }
  }

  async function leaseAndRun(
    ref: ItemRef,
    delivery: PushDelivery,
    ilog: Logger,
    pipelineName: string,
    // biome-ignore lint/suspicious/noExplicitAny: see WorkerHandlerOptions.pipelines
    pipeline: PipelineDefinition<any> | undefined,
    maxAttempts: number,
    admissionWaitedMs: number,
  ): Promise<Reply> {
    const owner = `${instanceId}/${randomUUID().slice(0, 8)}`;
    let waitedMs = admissionWaitedMs;

    let lease = await ledger.leaseItem(ref, owner, leaseMs, maxAttempts, clock.now());
    while (lease.kind === "deferred") {
      const dueInMs = lease.notBefore - clock.now();
      if (dueInMs > admissionWaitMs - waitedMs) return deferDelivery(delivery, lease.notBefore, ilog);
      // Due within the wait this delivery may still spend: wait for it rather than spend a delivery.
      const waitStart = clock.now();
      if (!(await sleepUnlessShutdown(Math.max(0, dueInMs))))
        return errorReply(503, "shutting_down", "the worker is shutting down");
      waitedMs += clock.now() - waitStart;
      lease = await ledger.leaseItem(ref, owner, leaseMs, maxAttempts, clock.now());
    }
    if (lease.kind === "skip") {
      if (lease.reason === "not_found")
        return poison(ilog, delivery, `unknown item ${ref.itemId} in batch ${ref.batchId}`);
      stats.skipped++;
      ilog.info("item.idempotent_skip", `delivery skipped: ${lease.reason}`, {
        reason: lease.reason,
        status: lease.item?.status,
      });
      return ack("skipped", { reason: lease.reason });
    }
    if (lease.kind === "exhausted") {
      stats.failed++;
      ilog.warn("item.failed", `item failed: ${lease.item.error?.message}`, {
        kind: "attempts_exhausted",
        attempt: lease.item.attempt,
      });
      await settle(ref.batchId, ilog);
      return ack("failed", { kind: "attempts_exhausted" });
    }

    const item = lease.item;
    ilog.info("item.leased", `item leased (attempt ${item.attempt} of ${maxAttempts})`, {
      attempt: item.attempt,
      pipeline: pipelineName,
      deliveryAttempt: delivery.deliveryAttempt,
    });
    const startedAt = clock.now();
    // The run's budget counts from its first request (a continuation keeps runStartedAt).
    const runStartedAt = item.runStartedAt ?? startedAt;
    const outcome: RunOutcome = pipeline
      ? await runItem({
          pipeline,
          item,
          ref,
          owner,
          ledger,
          clock,
          log: ilog,
          leaseMs,
          itemTimeoutMs: pipeline.timeoutSeconds * 1000 - (startedAt - runStartedAt),
          requestBudgetMs: Math.max(1000, itemBudgetMs - waitedMs),
          shutdown: shutdownController.signal,
        })
      : {
          // A pipeline this worker does not know (a deploy in progress?): retried, not failed at once.
          kind: "failed",
          errorClass: "transient",
          message: `pipeline ${pipelineName} is not registered in this worker`,
          step: null,
        };
    return settleOutcome(ref, pipelineName, owner, item.attempt, maxAttempts, outcome, startedAt, ilog);
  }

  /** Sleeps `ms` unless the worker shuts down first (false then). */
  function sleepUnlessShutdown(ms: number): Promise<boolean> {
    const signal = shutdownController.signal;
    if (signal.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const onAbort = () => {
        clearTimeout(timer);
        resolve(false);
      };
      const timer = setTimeout(() => {
        signal.removeEventListener("abort", onAbort);
        resolve(true);
      }, ms);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** The item is not due before `notBefore`: ask for a later redelivery, using no attempt. */
  function deferDelivery(delivery: PushDelivery, notBefore: number, ilog: Logger): Reply {
    stats.deferred++;
    const dueInSeconds = Math.max(1, Math.ceil((notBefore - clock.now()) / 1000));
    const fields = {
      notBefore: new Date(notBefore).toISOString(),
      deliveryAttempt: delivery.deliveryAttempt,
    };
    // One delivery short of the dead-letter topic: acknowledge instead, and leave the item (pending,
    // pendingSince set by its release) to the stale-pending sweep, so it is not dead-lettered for waiting.
    if (delivery.deliveryAttempt !== null && delivery.deliveryAttempt >= settings.maxDeliveryAttempts - 1) {
      ilog.info(
        "item.deferred",
        "item not due; acknowledged, the stale-pending sweep republishes it",
        fields,
      );
      return ack("deferred", { notBefore: fields.notBefore });
    }
    ilog.info(
      "item.deferred",
      `item not due for ${dueInSeconds} s: redeliver later (no attempt was used)`,
      fields,
    );
    return {
      ...errorReply(429, "not_due", `the item may not run before ${fields.notBefore}; no attempt was used`, {
        notBefore: fields.notBefore,
      }),
      headers: { "Retry-After": String(dueInSeconds) },
    };
  }

  async function settleOutcome(
    ref: ItemRef,
    pipelineName: string,
    owner: string,
    attempt: number,
    maxAttempts: number,
    outcome: RunOutcome,
    startedAt: number,
    ilog: Logger,
  ): Promise<Reply> {
    const fields = { attempt, durationMs: clock.now() - startedAt };
    if (outcome.kind === "completed") {
      let completed: Awaited<ReturnType<typeof ledger.completeItem>>;
      try {
        completed = await ledger.completeItem(ref, owner, outcome.result, clock.now());
      } catch (err) {
        // No completion signal exists apart from this write (F1): retry the item.
        return retryOrFail(ref, owner, attempt, maxAttempts, {
          errorClass: "transient",
          message: `the completion write failed: ${errorMessage(err)}`,
          ilog,
          fields,
          deliveredAt: startedAt,
        });
      }
      if (completed.kind === "skip") {
        stats.skipped++;
        ilog.info("item.idempotent_skip", `result discarded: ${completed.reason}`, {
          reason: completed.reason,
          ...fields,
        });
        return ack("skipped", { reason: completed.reason });
      }
      if (opts.crashAt?.("afterCompletionCommit", ref.batchId))
        throw new CrashPointReached("afterCompletionCommit", ref.batchId);
      stats.succeeded++;
      ilog.info("item.succeeded", "item succeeded", { ...fields, stepsRun: outcome.stepsRun });
      await settle(ref.batchId, ilog);
      return ack("succeeded");
    }
    if (outcome.kind === "continued")
      return continueInFreshDelivery(ref, pipelineName, owner, outcome, ilog, fields);
    if (outcome.kind === "interrupted") {
      stats.interrupted++;
      if (outcome.reason === "lease_lost") {
        // Someone else owns the item now; a redelivery finds it leased or terminal and skips.
        ilog.warn("item.lease_lost", `delivery stopped: ${outcome.message}`, {
          step: outcome.step,
          ...fields,
        });
        return errorReply(503, "lease_lost", outcome.message);
      }
      const released = await releaseQuietly(
        ref,
        owner,
        {
          kind: "transient",
          message: `interrupted at ${outcome.step ? `step ${outcome.step}` : "start"}: the worker shut down`,
        },
        ilog,
        { refundAttempt: true, deliveredAt: startedAt },
      );
      ilog.warn("item.released", "item released: the worker is shutting down", {
        reason: "shutdown",
        step: outcome.step,
        released,
        ...fields,
      });
      return errorReply(
        503,
        "shutting_down",
        "the worker is shutting down; the item was released for redelivery",
      );
    }
    if (outcome.errorClass === "permanent")
      return failNow(ref, owner, { kind: "permanent", message: outcome.message }, ilog, fields);
    return retryOrFail(ref, owner, attempt, maxAttempts, {
      errorClass: outcome.errorClass,
      message: outcome.message,
      ilog,
      fields,
      deliveredAt: startedAt,
      retryAfterMs: outcome.retryAfterMs,
    });
  }

  /** Hands the item to a fresh delivery that resumes at the next step, as the same attempt. */
  async function continueInFreshDelivery(
    ref: ItemRef,
    pipelineName: string,
    owner: string,
    outcome: Extract<RunOutcome, { kind: "continued" }>,
    ilog: Logger,
    fields: Record<string, unknown>,
  ): Promise<Reply> {
    let released: Awaited<ReturnType<typeof ledger.releaseItem>>;
    try {
      released = await ledger.releaseItem(ref, owner, null, clock.now(), { continuation: true });
    } catch (err) {
      // Still leased by this delivery: the lease runs out and the reconciler redrives the item.
      ilog.error("item.release_failed", `could not hand the item over: ${errorMessage(err)}`);
      return errorReply(503, "continuation_failed", "the item could not be handed over; it is redriven");
    }
    if (released.kind === "skip") {
      stats.skipped++;
      ilog.info("item.idempotent_skip", `continuation not recorded: ${released.reason}`, {
        reason: released.reason,
        ...fields,
      });
      return ack("skipped", { reason: released.reason });
    }
    stats.continued++;
    try {
      await deps.queue.publish(pipelineName, [ref]);
    } catch (err) {
      // The item is pending with its checkpoints: a redelivery of this message resumes it as well
      // (and if none comes, the stale-pending sweep republishes it).
      ilog.error("item.republish_failed", `could not publish the continuation: ${errorMessage(err)}`);
      return errorReply(503, "continuation_not_published", "the item was released; redeliver to resume it");
    }
    ilog.info(
      "item.continued",
      `handed over to a fresh delivery at step ${outcome.nextStep}: ${outcome.message}`,
      {
        nextStep: outcome.nextStep,
        stepsRun: outcome.stepsRun,
        ...fields,
      },
    );
    return ack("continued", { nextStep: outcome.nextStep });
  }

  async function failNow(
    ref: ItemRef,
    owner: string,
    error: ItemError,
    ilog: Logger,
    fields: Record<string, unknown>,
  ): Promise<Reply> {
    const failed = await ledger.failItem(ref, error, clock.now(), { owner });
    if (failed.kind === "skip") {
      stats.skipped++;
      ilog.info("item.idempotent_skip", `failure not recorded: ${failed.reason}`, {
        reason: failed.reason,
        ...fields,
      });
      return ack("skipped", { reason: failed.reason });
    }
    stats.failed++;
    ilog.warn("item.failed", `item failed (${error.kind}): ${error.message}`, {
      kind: error.kind,
      ...fields,
    });
    await settle(ref.batchId, ilog);
    return ack("failed", { kind: error.kind });
  }

  async function retryOrFail(
    ref: ItemRef,
    owner: string,
    attempt: number,
    maxAttempts: number,
    f: {
      errorClass: "transient" | "timeout";
      message: string;
      ilog: Logger;
      fields: Record<string, unknown>;
      deliveredAt: number;
      /** The error asked not to be retried sooner: recorded on the item as notBefore. */
      retryAfterMs?: number;
    },
  ): Promise<Reply> {
    const kind = f.errorClass === "timeout" ? "timeout" : "transient";
    if (attempt >= maxAttempts) {
      const error: ItemError =
        kind === "timeout"
          ? { kind: "timeout", message: `${f.message} (attempt ${attempt} of ${maxAttempts})` }
          : {
              kind: "attempts_exhausted",
              message: `${attempt} attempts used (maximum ${maxAttempts}); last error: ${f.message}`,
            };
      return failNow(ref, owner, error, f.ilog, f.fields);
    }
    const notBefore = f.retryAfterMs !== undefined ? clock.now() + f.retryAfterMs : undefined;
    const released = await releaseQuietly(ref, owner, { kind, message: f.message }, f.ilog, {
      deliveredAt: f.deliveredAt,
      notBefore,
    });
    stats.released++;
    f.ilog.warn("item.released", `attempt ${attempt} failed (${kind}), redelivery expected: ${f.message}`, {
      kind,
      released,
      ...(notBefore !== undefined && { notBefore: new Date(notBefore).toISOString() }),
      ...f.fields,
    });
    return errorReply(500, kind === "timeout" ? "timeout" : "transient_failure", f.message, {
      attempt,
      maxAttempts,
    });
  }

  /**
   * Releases the lease; a failure only delays the item until its lease expires (the reconciler
   * redrives it). When the delivery has outlived its ack deadline, Pub/Sub has already redelivered
   * the message — and that redelivery found the lease live and was acknowledged — so this
   * delivery's non-2xx answer queues nothing: a fresh doorbell is published for the released item
   * instead of leaving it to the stale-pending sweep (issue #15 item 8).
   */
  async function releaseQuietly(
    ref: ItemRef,
    owner: string,
    lastError: ItemError,
    ilog: Logger,
    opts: { refundAttempt?: boolean; deliveredAt: number; notBefore?: number },
  ): Promise<boolean> {
    let released: boolean;
    try {
      released =
        (
          await ledger.releaseItem(ref, owner, lastError, clock.now(), {
            refundAttempt: opts.refundAttempt,
            notBefore: opts.notBefore,
          })
        ).kind === "done";
    } catch (err) {
      ilog.error("item.release_failed", `could not release the lease: ${errorMessage(err)}`);
      return false;
    }
    if (released && clock.now() - opts.deliveredAt >= ackDeadlineMs * 0.9) {
      try {
        // The batch's pipeline is cached from this delivery's own lookup: its topic is this worker's.
        const pipelineName = await pipelineNameOf(ref.batchId);
        if (pipelineName !== null) await deps.queue.publish(pipelineName, [ref]);
        ilog.info(
          "item.republished",
          "released after the delivery's ack deadline: a fresh doorbell was published",
          {
            elapsedMs: clock.now() - opts.deliveredAt,
          },
        );
      } catch (err) {
        // The released item keeps its pendingSince: the stale-pending sweep republishes it.
        ilog.error("item.republish_failed", `could not publish a fresh doorbell: ${errorMessage(err)}`);
      }
    }
    return released;
  }

  /**
   * Routes: `POST /` is the push endpoint (the subscription pushes to the service URL with a
   * trailing slash), `GET /healthz` liveness; anything else is a 404 or a 405 naming the method.
   */
  async function route(req: Request, res: Response): Promise<Reply | null> {
    if (req.path === "/healthz") {
      if (req.method === "GET") return { status: 200, body: { status: "ok" } };
      res.setHeader("Allow", "GET");
      return errorReply(405, "method_not_allowed", `/healthz accepts GET only (got ${req.method})`);
    }
    if (req.path !== "/")
      return errorReply(404, "not_found", `no route ${req.method} ${req.path}: the push endpoint is POST /`);
    if (req.method !== "POST") {
      res.setHeader("Allow", "POST");
      return errorReply(
        405,
        "method_not_allowed",
        `the worker accepts POST (Pub/Sub push), not ${req.method}`,
      );
    }
    return null;
  }

  async function authenticate(req: Request): Promise<Reply | null> {
    if (!verifier) return null;
    try {
      await verifier(req.header("authorization"));
      return null;
    } catch (err) {
      stats.unauthenticated++;
      const reason = err instanceof OidcVerificationError ? err.reason : "verification_failed";
      log.warn("auth.rejected", `request refused: ${errorMessage(err)}`, { reason });
      return errorReply(401, "unauthenticated", errorMessage(err), [
        { path: "authorization", problem: reason },
      ]);
    }
  }

  const handler = (async (req: Request, res: Response) => {
    if (shutdownController.signal.aborted) {
      send(res, errorReply(503, "shutting_down", "the worker is shutting down"));
      return;
    }
    let finished!: () => void;
    const done = new Promise<void>((resolve) => {
      finished = resolve;
    });
    inflight.add(done);
    try {
      const reply = (await route(req, res)) ?? (await authenticate(req)) ?? (await handleDelivery(req));
      send(res, reply);
    } catch (err) {
      // A ledger error before the item was leased or after it settled: ask for redelivery. The
      // details go to the log only; the answer says no more than "internal".
      log.error("worker.error", `delivery failed: ${errorMessage(err)}`, {
        stack: err instanceof Error ? err.stack : undefined,
      });
      if (!res.headersSent) send(res, errorReply(500, "internal", "internal error; see the service logs"));
    } finally {
      // Shutdown waits for the answer to reach the socket, not just for the handler to return.
      if (!res.writableFinished && !res.destroyed)
        await Promise.race([once(res, "finish"), once(res, "close")]).catch(() => {});
      inflight.delete(done);
      finished();
    }
  }) as WorkerHandler;

  Object.defineProperty(handler, "stats", { value: stats });
  Object.defineProperty(handler, "inFlight", { get: () => inflight.size });
  handler.shutdown = async () => {
    if (!shutdownController.signal.aborted) {
      log.info("worker.shutdown", `shutting down: ${inflight.size} deliveries in flight`, {
        inFlight: inflight.size,
      });
      shutdownController.abort();
    }
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, shutdownTimeoutMs);
    });
    await Promise.race([Promise.allSettled([...inflight]), deadline]);
    clearTimeout(timer);
  };
  return handler;
}

function send(res: Response, reply: Reply): void {
  for (const [name, value] of Object.entries(reply.headers ?? {})) res.setHeader(name, value);
  res.status(reply.status).json(reply.body);
}

// biome-ignore lint/suspicious/noExplicitAny: see WorkerHandlerOptions.pipelines
function describeLimits(p: PipelineDefinition<any>, instances: number): string {
  const parts: string[] = [];
  if (p.concurrency !== undefined) parts.push(`concurrency ${p.concurrency}`);
  if (p.ratePerSecond !== undefined)
    parts.push(
      `${p.ratePerSecond}/s, burst ${p.burst ?? 1} for the pipeline: ${p.ratePerSecond / instances}/s in each of up to ${instances} instances`,
    );
  return parts.join(", ");
}

function buildVerifier(deps: WorkerDeps, opts: WorkerHandlerOptions): OidcVerifier | null {
  const audience = deps.config.env.TALLY_OIDC_AUDIENCE;
  if (!audience) return null;
  const allowedEmails = parseAllowedEmails(deps.config.env.TALLY_OIDC_SERVICE_ACCOUNT);
  if (allowedEmails.length === 0)
    throw new Error(
      "TALLY_OIDC_AUDIENCE is set but TALLY_OIDC_SERVICE_ACCOUNT is not: name the push subscription's service account",
    );
  return createOidcVerifier({ audience, allowedEmails, certificates: opts.oidcCertificates });
}
