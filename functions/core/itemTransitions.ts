// The item transitions (DESIGN.md §2.2) as pure decisions: given the item as read (or null when it
// does not exist), what the transition answers and which stored fields it writes. A ledger reads the
// item, calls one of these, and commits the write conditioned on that read (a precondition on the
// read's update time, or a transaction), so a concurrent change makes it decide again on a fresh read.
// The Firestore ledger (adapters/firestoreLedger.ts) and the simulator's in-memory ledger
// (test/simulation/memoryLedger.ts) apply the same functions, so the simulator checks these rules and
// not a copy of them.
//
// None of these makes an item live that was not: a lease takes a pending (or lapsed running) item,
// a release or a redrive moves a running one back to pending. Only item-creating and item-resetting
// writes make an item live, and those are fenced against the batch's finalization (batchFence.ts).
import type { Item, ItemError, ItemStatus } from "./model";
import { isTerminalItemStatus } from "./model";
import type { ItemRef, LeaseResult, RedriveResult, ReleaseOptions, TransitionResult } from "./ports";

/**
 * The stored fields of an item that a transition writes: the item document's shape (the lease kept
 * as flat `leaseOwner` / `leaseUntil` fields, and `pendingSince`, which the stale-pending sweep reads).
 */
export interface ItemWrite {
  status?: ItemStatus;
  attempt?: number;
  leaseOwner?: string | null;
  leaseUntil?: number | null;
  heartbeatAt?: number | null;
  startedAt?: number | null;
  result?: unknown;
  error?: ItemError | null;
  lastError?: ItemError | null;
  finishedAt?: number | null;
  runStartedAt?: number | null;
  notBefore?: number | null;
  updatedAt: number;
  /** When the item last became pending and publishable; null once it is leased or terminal. */
  pendingSince?: number | null;
}

/** What a transition answers, and the write that makes it so (absent: nothing is written). */
export interface Decision<R> {
  result: R;
  write?: ItemWrite;
}

/** Does `owner` hold the item's lease in the delivery's generation? (heartbeat, checkpoint, release) */
export function holdsLease(item: Item | null, ref: ItemRef, owner: string): item is Item {
  return (
    !!item && item.generation === ref.generation && item.status === "running" && item.lease?.owner === owner
  );
}

/**
 * A delivery takes the lease (F6): attempt+1, owner, until = now + leaseMs. A terminal item, another
 * generation's delivery or a live lease held by someone else is skipped; an item whose attempts are
 * used up fails `attempts_exhausted` instead.
 */
export function decideLease(
  item: Item | null,
  ref: ItemRef,
  owner: string,
  leaseMs: number,
  maxAttempts: number,
  now: number,
): Decision<LeaseResult> {
  if (!item) return { result: { kind: "skip", reason: "not_found", item: null } };
  if (item.generation !== ref.generation)
    return { result: { kind: "skip", reason: "stale_generation", item } };
  if (isTerminalItemStatus(item.status)) return { result: { kind: "skip", reason: "terminal", item } };
  if (item.status === "running" && item.lease && item.lease.until > now)
    return { result: { kind: "skip", reason: "leased_by_other", item } };
  // Checked before the attempts: an early delivery writes nothing and uses nothing.
  if (item.status === "pending" && item.notBefore != null && now < item.notBefore)
    return { result: { kind: "deferred", notBefore: item.notBefore, item } };
  if (item.attempt >= maxAttempts) {
    const error: ItemError = {
      kind: "attempts_exhausted",
      message: `${item.attempt} attempts used (maximum ${maxAttempts})${item.lastError ? `; last error: ${item.lastError.message}` : ""}`,
    };
    return {
      write: {
        status: "failed",
        error,
        leaseOwner: null,
        leaseUntil: null,
        updatedAt: now,
        finishedAt: now,
        pendingSince: null,
      },
      result: {
        kind: "exhausted",
        item: { ...item, status: "failed", error, lease: null, updatedAt: now, finishedAt: now },
      },
    };
  }
  const write = {
    status: "running" as const,
    attempt: item.attempt + 1,
    leaseOwner: owner,
    leaseUntil: now + leaseMs,
    heartbeatAt: now,
    startedAt: item.startedAt ?? now,
    // A continuation resumes the run its previous request began; any other lease starts a new one.
    runStartedAt: item.runStartedAt ?? now,
    notBefore: null,
    updatedAt: now,
    pendingSince: null,
  };
  return {
    write,
    result: {
      kind: "leased",
      item: {
        ...item,
        status: "running",
        attempt: write.attempt,
        lease: { owner, until: write.leaseUntil },
        heartbeatAt: now,
        startedAt: write.startedAt,
        runStartedAt: write.runStartedAt,
        notBefore: null,
        updatedAt: now,
      },
    },
  };
}

/** The lease holder extends its lease (only after `holdsLease`). */
export function heartbeatWrite(leaseMs: number, now: number): ItemWrite {
  return { leaseUntil: now + leaseMs, heartbeatAt: now, updatedAt: now };
}

/**
 * Result and `succeeded` in one write (F1), for an item known to be neither terminal nor of another
 * generation: the caller read it just now, or holds the lease it wrote and nothing wrote since.
 */
export function completion(item: Item, result: unknown, now: number): { write: ItemWrite; item: Item } {
  const write = {
    status: "succeeded" as const,
    result: result ?? null,
    error: null,
    leaseOwner: null,
    leaseUntil: null,
    finishedAt: now,
    updatedAt: now,
    pendingSince: null,
  };
  return {
    write,
    item: {
      ...item,
      status: "succeeded",
      result: write.result,
      error: null,
      lease: null,
      finishedAt: now,
      updatedAt: now,
    },
  };
}

/**
 * Completion of an item as read: refused when it is missing, of another generation or terminal (a
 * late duplicate never overwrites a finished item). A stale holder whose lease was taken over may
 * still complete a non-terminal item (the result is as good); the other delivery's completion then
 * finds it terminal.
 */
export function decideComplete(
  item: Item | null,
  ref: ItemRef,
  result: unknown,
  now: number,
): Decision<TransitionResult> {
  if (!item) return { result: { kind: "skip", reason: "not_found", item: null } };
  if (item.generation !== ref.generation)
    return { result: { kind: "skip", reason: "stale_generation", item } };
  if (isTerminalItemStatus(item.status)) return { result: { kind: "skip", reason: "terminal", item } };
  const done = completion(item, result, now);
  return { write: done.write, result: { kind: "done", item: done.item } };
}

/**
 * Fails the item unless it is terminal. With `owner`, the caller must hold the lease or the lease
 * must have lapsed; without, the item must not be under a live lease (dead-letter, reconciler).
 */
export function decideFail(
  item: Item | null,
  ref: ItemRef,
  error: ItemError,
  now: number,
  owner?: string,
): Decision<TransitionResult> {
  if (!item) return { result: { kind: "skip", reason: "not_found", item: null } };
  if (item.generation !== ref.generation)
    return { result: { kind: "skip", reason: "stale_generation", item } };
  if (isTerminalItemStatus(item.status)) return { result: { kind: "skip", reason: "terminal", item } };
  const live = item.status === "running" && item.lease !== null && item.lease.until > now;
  if (live && item.lease!.owner !== owner)
    return { result: { kind: "skip", reason: owner ? "not_leased_by_caller" : "live_lease", item } };
  const write = {
    status: "failed" as const,
    error,
    leaseOwner: null,
    leaseUntil: null,
    finishedAt: now,
    updatedAt: now,
    pendingSince: null,
  };
  return {
    write,
    result: {
      kind: "done",
      item: { ...item, status: "failed", error, lease: null, finishedAt: now, updatedAt: now },
    },
  };
}

/**
 * Back to `pending` (transient error, shutdown, continuation), only for the lease holder; the error
 * and the step checkpoints are kept.
 */
export function decideRelease(
  item: Item | null,
  ref: ItemRef,
  owner: string,
  lastError: ItemError | null,
  now: number,
  opts: ReleaseOptions = {},
): Decision<TransitionResult> {
  if (!holdsLease(item, ref, owner)) {
    const seen = item as Item | null;
    return {
      result: {
        kind: "skip",
        reason: seen && isTerminalItemStatus(seen.status) ? "terminal" : "not_leased_by_caller",
        item: seen,
      },
    };
  }
  // A release that is not the item's fault (the worker shutting down) gives the attempt back, so a
  // SIGTERM on the last attempt does not fail the item as attempts_exhausted.
  // A continuation (the run goes on in a fresh request, issue #17 §3) is not the item's fault either,
  // and keeps the run's start so the pipeline's timeout covers the whole run.
  const attempt = opts.refundAttempt || opts.continuation ? Math.max(0, item.attempt - 1) : item.attempt;
  const runStartedAt = opts.continuation ? (item.runStartedAt ?? null) : null;
  const notBefore = opts.notBefore !== undefined && opts.notBefore > now ? opts.notBefore : null;
  const write = {
    status: "pending" as const,
    attempt,
    leaseOwner: null,
    leaseUntil: null,
    lastError: lastError ?? item.lastError,
    runStartedAt,
    notBefore,
    updatedAt: now,
    pendingSince: now,
  };
  return {
    write,
    result: {
      kind: "done",
      item: {
        ...item,
        status: "pending",
        attempt,
        lease: null,
        lastError: write.lastError,
        runStartedAt,
        notBefore,
        updatedAt: now,
      },
    },
  };
}

/**
 * A lapsed lease (the worker vanished): back to `pending` while attempts remain, else failed
 * `attempts_exhausted`. Skipped when the item is not running in this generation, or its lease was
 * renewed since the reconciler's query.
 */
export function decideRedrive(
  item: Item | null,
  ref: ItemRef,
  maxAttempts: number,
  now: number,
): Decision<RedriveResult> {
  if (!item || item.generation !== ref.generation || item.status !== "running") return { result: "skip" };
  if (item.lease && item.lease.until >= now) return { result: "skip" }; // renewed since the query
  if (item.attempt >= maxAttempts) {
    const error: ItemError = {
      kind: "attempts_exhausted",
      message: `lease expired on attempt ${item.attempt} of ${maxAttempts} (worker vanished)`,
    };
    return {
      result: "exhausted",
      write: {
        status: "failed",
        error,
        leaseOwner: null,
        leaseUntil: null,
        finishedAt: now,
        updatedAt: now,
        pendingSince: null,
      },
    };
  }
  const lastError: ItemError = {
    kind: "timeout",
    message: `lease held by ${item.lease?.owner ?? "?"} expired`,
  };
  return {
    result: "redriven",
    write: {
      status: "pending",
      leaseOwner: null,
      leaseUntil: null,
      lastError,
      runStartedAt: null,
      notBefore: null,
      updatedAt: now,
      pendingSince: now,
    },
  };
}
