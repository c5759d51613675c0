// A deterministic simulation of the batch lifecycle (issue #15 "Prove it by simulation"): the real
// core and handler code — SubmissionWriter, the worker's ledger sequence, the reconciler's sweeps,
// the operator's cancel / retry / re-export, settleBatch / finalizeBatch — runs against MemoryLedger
// (the Firestore ledger's twin over an in-memory store with Firestore's semantics), an in-memory
// Pub/Sub and an in-memory result sink, every round trip scheduled by one seeded PRNG
// (scheduler.ts). The invariant (invariant.ts) is checked at every commit and export, and at the
// end, when every actor has come to rest: every batch must then be final (liveness).
//
// Actors, each a process that may crash at any round trip (while faults are on):
// - coordinators, one per submission: the JSON or NDJSON shorthand's sequence of ledger calls through
//   the real SubmissionWriter, chunk by chunk; a stream's client may pause for minutes between chunks;
//   a client whose request failed or whose coordinator died may re-send the same batch;
// - workers, each a process with two delivery lanes: lease, work (heartbeating, or stuck), then
//   complete, fail permanently, or release after a transient error (fail at the last attempt), and
//   settle — the worker handler's sequence (functions/handlers/worker/createWorkerHandler.ts);
// - the reconciler: ticks at random times (sometimes two at once), each the whole tick or one sweep;
// - the dead-letter receiver (functions/handlers/reconciler/deadLetterReceiver.ts);
// - an operator who cancels, retries a batch once it is final (paging slowly: operator round trips
//   take seconds to a minute) and re-exports, and an on-call operator who answers the failed-export
//   alert by re-exporting;
// - the sink, which fails exports before or after committing them.
// Faults (crashes, stalls of minutes, lost / duplicated / delayed doorbells, failed publishes and
// exports) stop at a random horizon; from then on the system must settle within a bound.
import { loadConfig, type TallyConfig } from "../../functions/config";
import { TallyError } from "../../functions/core/errors";
import { finalizeBatch, settleBatch } from "../../functions/core/finalizeBatch";
import type { Logger } from "../../functions/core/logger";
import type { Batch, BatchStatus, ItemError } from "../../functions/core/model";
import { CrashPointReached } from "../../functions/faults";
import { appendToBatch } from "../../functions/handlers/coordinator/appendItems";
import { resolveSettings } from "../../functions/handlers/coordinator/coordinatorOptions";
import { submitJson } from "../../functions/handlers/coordinator/jsonSubmission";
import { cancelBatch, reExportBatch, retryBatch } from "../../functions/handlers/coordinator/operatorActions";
import { ProblemList } from "../../functions/handlers/coordinator/problems";
import { sealBatch } from "../../functions/handlers/coordinator/sealBatch";
import { PartiallyStoredSubmission } from "../../functions/handlers/coordinator/submissionErrors";
import { type ChunkItem, SubmissionWriter } from "../../functions/handlers/coordinator/submissionWriter";
import { finalizeDepsFor } from "../../functions/handlers/finalizeDeps";
import { receiveDeadLetter } from "../../functions/handlers/reconciler/deadLetterReceiver";
import {
  createReconcileContext,
  type ReconcileContext,
} from "../../functions/handlers/reconciler/reconcileContext";
import { reconcileTick } from "../../functions/handlers/reconciler/reconcileTick";
import { sweepExpiredLeases } from "../../functions/handlers/reconciler/sweepExpiredLeases";
import { sweepMissedFinalizations } from "../../functions/handlers/reconciler/sweepMissedFinalizations";
import { sweepStalePending } from "../../functions/handlers/reconciler/sweepStalePending";
import { sweepStaleSubmissions } from "../../functions/handlers/reconciler/sweepStaleSubmissions";
import type { HttpRequest } from "../../functions/http/httpTypes";
import type { HandlerDeps } from "../../functions/runtime";
import { InvariantChecker, type Violation } from "./invariant";
import { batchPath, MemoryLedger } from "./memoryLedger";
import { MemoryResultSink, SinkStore } from "./memorySink";
import { MemoryStore, StoreClient } from "./memoryStore";
import { type Actor, type Latency, Rng, Scheduler } from "./scheduler";
import { type Message, SimQueue } from "./simQueue";

export const simulationStart = 1_700_000_000_000;

export interface SimOptions {
  seed: number;
  /** Without the batch fence write (MemoryLedger's control variant). Default true. */
  fence?: boolean;
  /** Trace lines kept (the tail printed with a failure). */
  traceSize?: number;
  /** Stop at the first violation (default); false runs on to collect what follows from it. */
  stopAtFirstViolation?: boolean;
  /**
   * Processes frozen for minutes (slower than every stale threshold) and dependent batches (stored
   * blocked, started when their parent ends). Default true. They reached two bugs, both fixed and
   * kept as regression seeds in simulation.test.ts: a frozen finalizer finished a later generation
   * (finishBatch ignored the claim: seed 5142), and a blocked stream's cursor passed unpublished
   * items (seed 13). False leaves them out, for comparison with runs from before the fixes.
   */
  freezesAndDependencies?: boolean;
  /**
   * Batches submitted with open / append / seal, and rival clients sending other items under the
   * same batch id and header at about the same time (issue #15 item 10). Default true. Drawn from
   * a generator of their own, so a seed that uses neither runs exactly as before they were added.
   */
  appendsAndRivals?: boolean;
  /** False: writers never see two items at one position (MemoryLedger's control). Default true. */
  countPositions?: boolean;
}

export interface SimResult {
  seed: number;
  fence: boolean;
  ended: "settled" | "aborted" | "out_of_steps" | "out_of_time" | "deadlock";
  steps: number;
  simulatedSeconds: number;
  scenario: string;
  violations: Violation[];
  /** The trace as it was when the first violation was seen (else the end of the run). */
  trace: string[];
  /** A hash of every step: equal for two runs of one seed. */
  hash: number;
  /** Which of issue #15's interleavings this run produced. */
  issue15: { item1: boolean; item2: boolean; item2Cancel: boolean; item10: boolean };
  /** Batches submitted with open / append / seal, and batches with a rival client, in this run. */
  shapes: { appends: number; rivals: number };
}

const finalStatuses: readonly BatchStatus[] = ["succeeded", "partial", "failed", "cancelled"];

interface BatchSpec {
  batchId: string;
  items: number;
  json: boolean;
  chunk: number;
  failureThreshold: number;
  dependsOn: string[];
  /** Submitted with open / append / seal (appendItems.ts, sealBatch.ts) instead of the shorthand. */
  appends: boolean;
  /** A second client sends the same header with different items at about the same time. */
  rival: boolean;
}

/** Which items a client sends: its own, or a rival's (same positions, other ids and payloads). */
type Variant = "own" | "rival";

/** A buffered JSON request, as the Functions Framework hands it to a handler. */
const jsonRequest = (body: unknown): HttpRequest =>
  ({
    headers: { "content-type": "application/json" },
    body,
    rawBody: Buffer.from(JSON.stringify(body)),
  }) as unknown as HttpRequest;

export async function simulate(opts: SimOptions): Promise<SimResult> {
  const sched = new Scheduler(opts.seed, simulationStart, opts.traceSize ?? 120);
  return sched.withSimulatedIntervals(() => runSimulation(sched, opts));
}

async function runSimulation(sched: Scheduler, opts: SimOptions): Promise<SimResult> {
  const { rng } = sched;
  const fence = opts.fence ?? true;
  const stopAtFirst = opts.stopAtFirstViolation ?? true;

  // --- the scenario's knobs (small: thousands of seeds run in seconds) --------------------------
  const knobs = {
    batches: rng.int(1, 2),
    workers: rng.int(1, 3),
    lanes: rng.int(1, 2),
    permanentRate: rng.pick([0, 0.15, 0.35]),
    transientRate: rng.pick([0, 0.1, 0.25]),
    longWorkRate: rng.pick([0, 0.05, 0.15]),
    stuckRate: rng.pick([0, 0.5]),
    crashRate: rng.pick([0, 0.002, 0.01]),
    stallRate: rng.pick([0, 0.005, 0.02]),
    pauseRate: rng.pick([0, 0.2, 0.5]),
    exportFailRate: rng.pick([0, 0.2, 0.6]),
    operatorActions: rng.int(0, 3),
    operatorPageSize: rng.int(1, 2),
    reconcilePageSize: rng.int(2, 5),
    faultMinutes: rng.int(10, 30),
    /** A process frozen for minutes (a paused VM, a long GC): slower than every stale threshold. */
    freezeRate: rng.pick([0, 0, 0.003]),
  };
  const freezesAndDependencies = opts.freezesAndDependencies ?? true;
  if (!freezesAndDependencies) knobs.freezeRate = 0;
  sched.faultsUntil = simulationStart + knobs.faultMinutes * 60_000;
  const leaseMs = 60_000;
  const config: TallyConfig = loadConfig({
    TALLY_PREFIX: "sim",
    GOOGLE_CLOUD_PROJECT: "sim",
    TALLY_LEASE_SECONDS: "60",
    TALLY_ACK_DEADLINE_SECONDS: "60",
    TALLY_MAX_DELIVERY_ATTEMPTS: "5",
    TALLY_MAX_ITEM_ATTEMPTS: "3",
    TALLY_WORKER_TIMEOUT_SECONDS: "50",
    TALLY_MIN_BACKOFF_SECONDS: "10",
    TALLY_MAX_BACKOFF_SECONDS: "60",
    TALLY_STALE_SUBMISSION_SECONDS: "120",
    TALLY_STALE_PENDING_SECONDS: "300",
    TALLY_STALE_FINALIZING_SECONDS: "120",
    TALLY_RECONCILE_PAGE_SIZE: String(knobs.reconcilePageSize),
  });
  const { delivery } = config.topology;
  const settings = resolveSettings({
    chunkItems: rng.int(1, 3),
    cursorIntervalMs: 1000,
    chunksInFlight: 2,
    operatorPageSize: knobs.operatorPageSize,
    newBatchId: () => "unused",
  });
  const shapes = new Rng((opts.seed * 2654435761) ^ 0x5eed);
  const appendsAndRivals = opts.appendsAndRivals ?? true;
  const specs: BatchSpec[] = Array.from({ length: knobs.batches }, (_, i) => ({
    batchId: `b${i}`,
    items: rng.int(1, 6),
    json: rng.chance(0.4),
    chunk: settings.chunkItems,
    failureThreshold: rng.pick([0, 0.2, 0.5]),
    // Sometimes the second batch waits for the first (stored blocked, started when b0 ends).
    dependsOn: i > 0 && rng.chance(0.3) && freezesAndDependencies ? ["b0"] : [],
    appends: appendsAndRivals && shapes.chance(0.3),
    rival: appendsAndRivals && shapes.chance(0.2),
  }));
  const scenario = `${JSON.stringify(knobs)} batches ${specs.map((s) => `${s.batchId}: ${s.items} items, ${s.appends ? "open/append/seal" : s.json ? "JSON" : "NDJSON"}${s.rival ? " with a rival" : ""}, chunks of ${s.chunk}, threshold ${s.failureThreshold}${s.dependsOn.length > 0 ? `, after ${s.dependsOn.join(", ")}` : ""}`).join("; ")}`;

  // --- the world ----------------------------------------------------------------------------------
  const store = new MemoryStore();
  const sinkStore = new SinkStore();
  sinkStore.fault = () =>
    sched.faultsOn && rng.chance(knobs.exportFailRate)
      ? rng.chance(0.5)
        ? "before_commit"
        : "after_commit"
      : null;
  const queue = new SimQueue(sched, {
    ackDeadlineMs: delivery.ackDeadlineSeconds * 1000,
    maxDeliveryAttempts: delivery.maxDeliveryAttempts,
    minBackoffMs: delivery.minimumBackoffSeconds * 1000,
    maxBackoffMs: delivery.maximumBackoffSeconds * 1000,
    publishFailRate: knobs.crashRate > 0 ? 0.03 : 0,
    loseRate: 0.02,
    duplicateRate: 0.1,
    delayRate: 0.05,
  });
  let firstViolationTrace: string[] | null = null;
  const checker = new InvariantChecker(store, sinkStore, () => ({
    at: sched.clockLabel(),
    step: sched.steps,
  }));
  checker.onViolation = (v) => {
    sched.log(`VIOLATION ${v.code} ${v.batchId}${v.itemId ? `/${v.itemId}` : ""}: ${v.message}`);
    firstViolationTrace ??= sched.tail();
  };
  const clock = { now: () => sched.now };

  const network: Latency = () => {
    const base = 2 + rng.next() * 40;
    if (!sched.faultsOn) return base;
    if (rng.chance(knobs.stallRate)) return base + rng.between(5_000, 180_000);
    if (rng.chance(knobs.freezeRate)) return base + rng.between(300_000, 1_500_000);
    return base;
  };
  const slowOperator: Latency = () =>
    500 +
    rng.next() * 40_000 +
    (sched.faultsOn && rng.chance(knobs.stallRate) ? rng.between(30_000, 240_000) : 0);

  const logFor = (name: string): Logger => {
    const log: Logger = {
      debug: () => {},
      info: (event, message) => sched.log(`${name} ${event}: ${message}`),
      warn: (event, message) => sched.log(`${name} ${event}: ${message}`),
      error: (event, message) => sched.log(`${name} ${event}: ${message}`),
      child: () => log,
    };
    return log;
  };
  const depsFor = (actor: Actor): HandlerDeps => {
    const gate = (op: string, detail: () => string) => sched.point(actor, op, detail);
    return {
      config,
      ledger: new MemoryLedger(new StoreClient(store, gate), {
        fence,
        countPositions: opts.countPositions ?? true,
      }),
      queue: queue.view(actor),
      sink: new MemoryResultSink(sinkStore, gate),
      clock,
      log: logFor(actor.name),
    };
  };
  const quietly = async (actor: Actor, what: string, fn: () => Promise<unknown>) => {
    try {
      await fn();
    } catch (err) {
      sched.log(`${actor.name} ${what} failed: ${err instanceof Error ? err.message : String(err)}`);
    }
  };

  // --- coordinators (clients) ------------------------------------------------------------------------
  let clientsPending = 0;
  const startClient = (spec: BatchSpec, attempt: number, delayMs: number, variant: Variant = "own") => {
    clientsPending++;
    let done = false;
    const finish = (outcome: string) => {
      if (done) return;
      done = true;
      clientsPending--;
      sched.log(
        `${variant === "rival" ? "rival " : ""}client of ${spec.batchId} (attempt ${attempt}): ${outcome}`,
      );
      if (outcome !== "submitted" && outcome !== "unchanged" && attempt < 3 && rng.chance(0.5))
        startClient(spec, attempt + 1, rng.between(5_000, 300_000), variant);
    };
    const actor = sched.actor(
      `${variant === "rival" ? "rival-" : ""}coordinator-${spec.batchId}`,
      network,
      knobs.crashRate,
      () => finish("connection reset (coordinator crashed)"),
    );
    const deps = depsFor(actor);
    sched.spawn(
      actor,
      async () => {
        let outcome: string;
        try {
          outcome = spec.appends
            ? await submitByAppends(actor, deps, spec, variant)
            : await submit(actor, deps, spec, variant);
        } catch (err) {
          outcome = `error: ${err instanceof Error ? err.message : String(err)}`;
        }
        if (outcome === "submitted") {
          checker.acknowledged.set(spec.batchId, spec.items);
          const ids = chunkItems(spec, variant).map((it) => it.itemId);
          checker.acknowledgedIds.set(spec.batchId, [
            ...(checker.acknowledgedIds.get(spec.batchId) ?? []),
            ids,
          ]);
        }
        finish(outcome);
      },
      delayMs,
    );
  };

  /** The JSON / NDJSON shorthand's sequence of ledger calls (jsonSubmission.ts, ndjsonSubmission.ts). */
  const chunkItems = (spec: BatchSpec, variant: Variant): ChunkItem[] =>
    Array.from({ length: spec.items }, (_, i) => ({
      itemId: variant === "rival" ? `r${i}` : `i${i}`,
      // The shorthand path keeps the payloads it always had; appends go through the demo pipeline's
      // payload check (value only).
      payload: spec.appends
        ? { value: variant === "rival" ? `r${i}` : i }
        : variant === "rival"
          ? { n: i, rival: true }
          : { n: i },
      origin: { position: i, label: spec.json ? `items[${i}]` : `line ${i + 2}` },
    }));
  const submit = async (
    actor: Actor,
    deps: HandlerDeps,
    spec: BatchSpec,
    variant: Variant,
  ): Promise<string> => {
    const env = { deps, log: deps.log, settings };
    const created = await deps.ledger.createBatch(
      {
        batchId: spec.batchId,
        pipeline: "sim",
        failureThreshold: spec.failureThreshold,
        dependsOn: spec.dependsOn,
        contentHash: `content-of-${spec.batchId}`,
        total: spec.json ? spec.items : null,
      },
      clock.now(),
    );
    if (created.kind === "conflict") return "conflict";
    const writer = new SubmissionWriter(env, created.batch, created.kind);
    const problems = new ProblemList();
    if (spec.json && !writer.checkTotal(spec.items, problems)) return "conflict";
    const all = chunkItems(spec, variant);
    for (let at = 0; at < spec.items; at += spec.chunk) {
      // A stream's next lines may be slow to come (the client pages an upstream source).
      if (!spec.json && at > 0 && rng.chance(knobs.pauseRate))
        await sched.sleep(actor, rng.between(1_000, 400_000));
      if (!(await writer.writeChunk(all.slice(at, at + spec.chunk), problems))) {
        await writer.stop();
        return problems.empty ? "terminated" : `refused: ${problems.listed.map((p) => p.problem).join("; ")}`;
      }
    }
    const finished = await writer.finish(spec.items, problems);
    if (!finished) return `refused: ${problems.listed.map((p) => p.problem).join("; ")}`;
    return finished.kind;
  };

  /**
   * Open / append / seal (docs/api.md "Submissions of any size"), as the typed client does it, through
   * the handlers' own functions: open, then appends of a few items keyed by offset — a refused
   * append whose answer names the stored prefix resumes from there — then the seal with the total.
   * A client that failed starts again from offset 0 (re-sending a stored range is a no-op).
   */
  const submitByAppends = async (
    actor: Actor,
    deps: HandlerDeps,
    spec: BatchSpec,
    variant: Variant,
  ): Promise<string> => {
    const env = { deps, log: deps.log, settings };
    const header = {
      id: spec.batchId,
      pipeline: "demo",
      failureThreshold: spec.failureThreshold,
      ...(spec.dependsOn.length > 0 ? { dependsOn: spec.dependsOn } : {}),
    };
    try {
      await submitJson(env, jsonRequest({ ...header, open: true }));
    } catch (err) {
      return `refused: ${err instanceof Error ? err.message : String(err)}`;
    }
    const all = chunkItems(spec, variant).map(({ itemId, payload }) => ({ id: itemId, payload }));
    const size = spec.chunk * 2;
    let offset = 0;
    let refusals = 0;
    while (offset < all.length) {
      if (offset > 0 && rng.chance(knobs.pauseRate)) await sched.sleep(actor, rng.between(1_000, 400_000));
      try {
        const answer = await appendToBatch(
          env,
          spec.batchId,
          jsonRequest({ offset, items: all.slice(offset, offset + size) }),
          new URLSearchParams(),
        );
        offset = Math.max(offset, answer.append.received);
      } catch (err) {
        if (err instanceof CrashPointReached) throw err;
        const stored = err instanceof PartiallyStoredSubmission ? err.batch.received : null;
        const why = err instanceof Error ? err.message : String(err);
        if (err instanceof TallyError && err.code === "batch_closed") return `terminated: ${why}`;
        // A gap: resume at the stored prefix the answer names; anything else ends this attempt.
        if (stored !== null && stored < offset && ++refusals <= 3) {
          offset = stored;
          continue;
        }
        return `refused: ${why}`;
      }
    }
    try {
      await sealBatch(env, spec.batchId, jsonRequest({ total: all.length }));
    } catch (err) {
      return `refused: ${err instanceof Error ? err.message : String(err)}`;
    }
    return "submitted";
  };

  // --- workers ------------------------------------------------------------------------------------------
  const maxAttempts = delivery.maxItemAttempts;
  const startWorker = (index: number, delayMs: number) => {
    const actor: Actor = sched.actor(`worker${index}`, network, knobs.crashRate, () =>
      startWorker(index, rng.between(5_000, 60_000)),
    );
    const deps = depsFor(actor);
    const proc = { actor, deps, pipelines: new Map<string, string>(), deliveries: 0 };
    for (let lane = 0; lane < knobs.lanes; lane++)
      sched.spawn(
        actor,
        async () => {
          for (;;) {
            const taken = await queue.take(actor);
            if (!taken) {
              await idleUntilWork(actor, false);
              continue;
            }
            let ack: boolean;
            try {
              ack = await deliver(proc, taken.message);
            } catch (err) {
              sched.log(`${actor.name} delivery failed: ${err instanceof Error ? err.message : String(err)}`);
              ack = false;
            }
            await queue.answer(actor, taken, ack);
          }
        },
        delayMs,
      );
  };

  /** An idle lane waits until the next message is due, or a new one arrives (a push). */
  const idleUntilWork = (actor: Actor, dead: boolean) => {
    const due = queue.nextDue(dead);
    const wait = due === null ? 600_000 : Math.max(100, due - sched.now);
    const sleep = sched.cancellableSleep(actor, wait);
    const wake = () => sleep.cancel();
    queue.onArrival.add(wake);
    return sleep.promise.finally(() => queue.onArrival.delete(wake));
  };

  /** One push delivery, as the worker handler answers it: true acknowledges (2xx). */
  const deliver = async (
    proc: { actor: Actor; deps: HandlerDeps; pipelines: Map<string, string>; deliveries: number },
    message: Message,
  ): Promise<boolean> => {
    const { ledger } = proc.deps;
    const ref = message.ref;
    if (!proc.pipelines.has(ref.batchId)) {
      const batch = await ledger.getBatch(ref.batchId);
      if (!batch) return true; // poison: unknown batch
      proc.pipelines.set(ref.batchId, batch.pipeline);
    }
    const deliveredAt = clock.now();
    const owner = `${proc.actor.name}/${++proc.deliveries}`;
    const lease = await ledger.leaseItem(ref, owner, leaseMs, maxAttempts, clock.now());
    if (lease.kind === "skip") return true;
    const settle = () =>
      quietly(proc.actor, "settle", () => settleBatch(finalizeDepsFor(proc.deps), ref.batchId));
    if (lease.kind === "exhausted") {
      await settle();
      return true;
    }
    const attempt = lease.item.attempt;
    // The pipeline's run: work for a while (heartbeating like the LeaseKeeper, unless stuck).
    const long = rng.chance(knobs.longWorkRate);
    const stuck = long && rng.chance(knobs.stuckRate);
    let remaining = long ? rng.between(leaseMs * 0.5, leaseMs * 2.5) : rng.between(50, 3_000);
    let until = lease.item.lease?.until ?? clock.now() + leaseMs;
    while (remaining > 0) {
      const slice = Math.min(remaining, leaseMs / 3);
      await sched.sleep(proc.actor, slice);
      remaining -= slice;
      if (!stuck && until - clock.now() < (leaseMs * 2) / 3) {
        if (!(await ledger.heartbeat(ref, owner, leaseMs, clock.now()))) return false; // lease lost: 503
        until = clock.now() + leaseMs;
      }
    }
    const fate = rng.next();
    const failNow = async (error: ItemError) => {
      const failed = await ledger.failItem(ref, error, clock.now(), { owner });
      if (failed.kind === "done") await settle();
      return true;
    };
    /** releaseQuietly: a release after the delivery's ack deadline publishes a fresh doorbell. */
    const release = async (error: ItemError, refundAttempt: boolean) => {
      let released = false;
      await quietly(proc.actor, "release", async () => {
        released =
          (await ledger.releaseItem(ref, owner, error, clock.now(), { refundAttempt })).kind === "done";
      });
      if (released && clock.now() - deliveredAt >= delivery.ackDeadlineSeconds * 1000 * 0.9)
        await quietly(proc.actor, "republish", () =>
          proc.deps.queue.publish(proc.pipelines.get(ref.batchId)!, [ref]),
        );
    };
    const retryOrFail = async (message: string) => {
      if (attempt >= maxAttempts)
        return failNow({
          kind: "attempts_exhausted",
          message: `${attempt} attempts used (maximum ${maxAttempts}); last error: ${message}`,
        });
      await release({ kind: "transient", message }, false);
      return false;
    };
    if (fate < knobs.permanentRate)
      return failNow({ kind: "permanent", message: "simulated permanent error" });
    if (fate < knobs.permanentRate + knobs.transientRate) return retryOrFail("simulated transient error");
    if (sched.faultsOn && knobs.crashRate > 0 && rng.chance(0.03)) {
      // SIGTERM: the run is aborted, the lease released with the attempt given back, 503.
      await release({ kind: "transient", message: "interrupted at start: the worker shut down" }, true);
      return false;
    }
    const result = { item: ref.itemId, generation: ref.generation, attempt, by: owner };
    let completed: Awaited<ReturnType<typeof ledger.completeItem>>;
    try {
      completed = await ledger.completeItem(ref, owner, result, clock.now());
      // F1 after the commit: the completion committed, and its answer was lost.
      if (completed.kind === "done" && sched.faultsOn && knobs.crashRate > 0 && rng.chance(0.03))
        throw new Error("simulated: the completion committed, then its answer was lost");
    } catch (err) {
      return retryOrFail(`the completion write failed: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (completed.kind === "done") await settle();
    return true;
  };

  // --- the dead-letter receiver ---------------------------------------------------------------------------
  const startDeadLetterReceiver = (delayMs: number) => {
    const actor: Actor = sched.actor("dead-letter", network, knobs.crashRate, () =>
      startDeadLetterReceiver(rng.between(5_000, 60_000)),
    );
    const deps = depsFor(actor);
    sched.spawn(
      actor,
      async () => {
        for (;;) {
          const taken = await queue.take(actor, true);
          if (!taken) {
            await idleUntilWork(actor, true);
            continue;
          }
          const { ref } = taken.message;
          let ack = true;
          try {
            await receiveDeadLetter(
              deps,
              {
                messageId: String(taken.message.id),
                publishTime: null,
                subscription: "sim-work-dead-letter-push",
                deliveryAttempt: null,
                form: "wrapped",
                attributes: {
                  batchId: ref.batchId,
                  itemId: ref.itemId,
                  generation: String(ref.generation),
                  CloudPubSubDeadLetterSourceSubscription: "sim-work-push",
                  CloudPubSubDeadLetterSourceDeliveryCount: String(delivery.maxDeliveryAttempts),
                },
              },
              deps.log,
            );
          } catch (err) {
            sched.log(`${actor.name} failed: ${err instanceof Error ? err.message : String(err)}`);
            ack = false;
          }
          await queue.answer(actor, taken, ack, true);
        }
      },
      delayMs,
    );
  };

  // --- the reconciler ------------------------------------------------------------------------------------
  const sweeps: Array<[string, (ctx: ReconcileContext) => Promise<unknown>]> = [
    ["expiredLeases", sweepExpiredLeases],
    ["staleSubmissions", sweepStaleSubmissions],
    ["finalizations", sweepMissedFinalizations],
    ["stalePending", sweepStalePending],
    // A settle whose "anything left?" is arbitrarily old (a slow worker's, a dead-letter's): the
    // claim alone must refuse while items are live (batchFence.ts, fact 3).
    [
      "settle with a stale check",
      async (ctx) => {
        for (const spec of specs)
          await ctx.guard({ sweep: "staleSettle", batchId: spec.batchId }, () =>
            finalizeBatch(finalizeDepsFor(ctx.deps), spec.batchId),
          );
      },
    ],
  ];
  const startTick = () => {
    const actor = sched.actor("reconciler", network, knobs.crashRate);
    const deps = depsFor(actor);
    sched.spawn(actor, async () => {
      if (rng.chance(0.5)) {
        sched.log(`${actor.name}: tick`);
        await quietly(actor, "tick", () => reconcileTick(deps));
      } else {
        const [name, sweep] = rng.pick(sweeps);
        sched.log(`${actor.name}: sweep ${name}`);
        await quietly(actor, name, () => sweep(createReconcileContext(deps)));
      }
    });
  };
  const scheduler = sched.actor("cloud-scheduler", () => 0);
  sched.spawn(scheduler, async () => {
    for (;;) {
      await sched.sleep(scheduler, rng.between(20_000, 90_000), true);
      startTick();
      if (rng.chance(0.15)) startTick();
    }
  });

  // --- operators ----------------------------------------------------------------------------------------
  let operatorPending = 0;
  const finalStatus = (b: Batch | null) => !!b && finalStatuses.includes(b.status);
  for (let k = 0; k < knobs.operatorActions; k++) {
    operatorPending++;
    let done = false;
    const finish = () => {
      if (!done) operatorPending--;
      done = true;
    };
    const actor = sched.actor("operator", slowOperator, knobs.crashRate, finish);
    const deps = depsFor(actor);
    const batchId = rng.pick(specs).batchId;
    const action = rng.pick(["cancel", "retry", "retry", "reexport", "retry, then cancel"] as const);
    const cancelAfterMs = rng.between(5_000, 200_000);
    sched.spawn(
      actor,
      async () => {
        if (action !== "cancel" && action !== "reexport") {
          // Retry once the batch is final (an operator looks at a finished batch with failures).
          for (let i = 0; i < 40 && !finalStatus(await deps.ledger.getBatch(batchId)); i++)
            await sched.sleep(actor, rng.between(30_000, 120_000));
        }
        sched.log(`${actor.name}: ${action} ${batchId}`);
        const retry = () =>
          quietly(actor, `retry ${batchId}`, () => retryBatch(deps, settings, deps.log, batchId));
        const cancel = () =>
          quietly(actor, `cancel ${batchId}`, () => cancelBatch(deps, settings, deps.log, batchId));
        if (action === "cancel") await cancel();
        else if (action === "retry") await retry();
        else if (action === "reexport")
          await quietly(actor, `re-export ${batchId}`, () => reExportBatch(deps, deps.log, batchId));
        // A second request from the operator's console while the retry is still paging.
        else await Promise.all([retry(), sched.sleep(actor, cancelAfterMs).then(cancel)]);
        finish();
      },
      rng.between(0, knobs.faultMinutes * 60_000),
    );
  }
  // On call: the failed-export alert is answered by a re-export, some minutes later.
  const onCall = sched.actor("on-call", () => 0);
  sched.spawn(onCall, async () => {
    for (;;) {
      await sched.sleep(onCall, rng.between(180_000, 600_000), true);
      const failed = [...checker.batchIds()]
        .map((id) => store.get(batchPath(id)).data as unknown as Batch | undefined)
        .filter((b) => b?.status === "finalizing" && b.exportFailedAt != null);
      for (const b of failed) {
        const actor = sched.actor("operator-on-call", network, knobs.crashRate);
        const deps = depsFor(actor);
        sched.spawn(actor, () =>
          quietly(actor, `re-export ${b!.batchId}`, () => reExportBatch(deps, deps.log, b!.batchId)),
        );
      }
    }
  });

  // --- start ----------------------------------------------------------------------------------------------
  for (const spec of specs) startClient(spec, 1, rng.between(0, 30_000));
  // Rivals: the same batch id and header with other items, within seconds of the first client.
  for (const spec of specs) if (spec.rival) startClient(spec, 1, shapes.between(0, 30_000), "rival");
  for (let w = 0; w < knobs.workers; w++) startWorker(w, 0);
  startDeadLetterReceiver(0);

  const allFinal = () =>
    checker.batchIds().every((id) => {
      const b = store.get(batchPath(id)).data as unknown as Batch | undefined;
      return !!b && finalStatuses.includes(b.status);
    });
  const ended = await sched.run({
    maxSteps: 40_000,
    deadline: sched.faultsUntil + 4 * 3_600_000,
    settled: () =>
      clientsPending === 0 && operatorPending === 0 && queue.empty && !sched.busy() && allFinal(),
    abort: () => stopAtFirst && checker.violations.length > 0,
  });
  checker.checkAll(ended === "settled" || ended === "aborted", (id) => describeBatch(store, id));
  if (ended !== "settled" && ended !== "aborted" && checker.violations.length === 0)
    sched.log(`run ended ${ended} with nothing else wrong`);

  const violations = checker.violations;
  const sameBatch = (v: Violation, codes: string[]) =>
    violations.some((w) => w.batchId === v.batchId && codes.includes(w.code));
  const isFinalStatus = (s: BatchStatus | null) => s !== null && finalStatuses.includes(s);
  return {
    seed: opts.seed,
    fence,
    ended,
    steps: sched.steps,
    simulatedSeconds: Math.round((sched.now - simulationStart) / 1000),
    scenario,
    violations,
    trace: firstViolationTrace ?? sched.tail(),
    hash: sched.hash,
    shapes: {
      appends: specs.filter((s) => s.appends).length,
      rivals: specs.filter((s) => s.rival).length,
    },
    issue15: {
      item1: violations.some(
        (v) =>
          v.code === "created_after_claim" &&
          isFinalStatus(v.batchStatus) &&
          (v.reason ?? "").startsWith("incomplete_submission") &&
          sameBatch(v, ["missing_row"]),
      ),
      // A slow retry taken for dead: the stale-submission sweep ended its submission, it was
      // finalized between two pages, and the next page was reset into the final generation.
      item2: violations.some(
        (v) =>
          v.code === "reset_after_claim" &&
          isFinalStatus(v.batchStatus) &&
          (v.generation ?? 0) >= 2 &&
          v.terminateAs === null &&
          sameBatch(v, ["missing_row", "live_in_final"]),
      ),
      // Two clients of one batch id left two items at one position.
      item10: violations.some((v) => v.code === "shared_position"),
      // The same with a cancel in the middle of the retry.
      item2Cancel: violations.some(
        (v) =>
          v.code === "reset_after_claim" &&
          isFinalStatus(v.batchStatus) &&
          (v.generation ?? 0) >= 2 &&
          v.terminateAs === "cancelled" &&
          sameBatch(v, ["missing_row", "live_in_final"]),
      ),
    },
  };
}

function describeBatch(store: MemoryStore, batchId: string): string {
  const b = store.get(batchPath(batchId)).data as unknown as Batch | undefined;
  if (!b) return "missing";
  const items: string[] = [];
  for (const [path, d] of store.entries())
    if (path.startsWith(`${batchPath(batchId)}/items/`))
      items.push(`${d.itemId}:${d.status}@${d.generation}`);
  return `${b.status}${b.terminateAs ? ` ending ${b.terminateAs}` : ""} generation ${b.generation}, finalizingAt ${b.finalizingAt}, exportAttempts ${b.exportAttempts ?? 0}${b.exportFailedAt ? " (export failed)" : ""}, items ${items.join(" ")}`;
}

/** One line per violation, and the trace, for a failing seed. */
export function formatResult(r: SimResult): string {
  const lines = [
    `seed ${r.seed}${r.fence ? "" : " (no fence)"}: ${r.violations.length} violation(s), ended ${r.ended} after ${r.steps} steps, ${r.simulatedSeconds} simulated s`,
    `scenario: ${r.scenario}`,
    ...r.violations.map(
      (v) =>
        `  ${v.code} ${v.batchId}${v.itemId ? `/${v.itemId}` : ""} at ${v.at} (step ${v.step}; batch ${v.batchStatus} generation ${v.generation}${v.reason ? `, ${v.reason}` : ""}): ${v.message}`,
    ),
    `trace (last ${r.trace.length} lines${r.violations.length > 0 ? " up to the first violation" : ""}):`,
    ...r.trace.map((l) => `  ${l}`),
    `replay: npm run simulate -- --seed ${r.seed}${r.fence ? "" : " --no-fence"}`,
  ];
  return lines.join("\n");
}
