// Per-pipeline admission in one worker instance (issue #17 §2): a concurrency cap and a start rate.
// The worker asks the pipeline's gate for a slot BEFORE it leases the item, so a delivery that
// cannot start in time is answered for redelivery without using a ledger attempt.
//
// Rate is the PIPELINE's: instances share nothing but the ledger and the queue, and a shared counter
// would be one hot Firestore document (about 1 write/s sustained), so each instance takes an equal
// share. With N = the worker's maximum instance count (TALLY_WORKER_MAX_INSTANCES), an instance
// refills a token bucket at ratePerSecond / N and holds at most max(1, burst / N) tokens (a bucket
// needs room for one whole token); one token per item start; the bucket starts full. Starts of one
// instance in any interval of T seconds are at most its capacity + its rate × T, so the pipeline's,
// summed over N instances, are at most
//     ratePerSecond × T + max(burst, N)
// — the documented burst is max(burst, N): a 1-s window holds at most ratePerSecond + max(burst, N)
// starts, however many instances run. The trade-off: fewer running instances than N start
// proportionally fewer items (one of 20 instances alone runs at ratePerSecond / 20), because an
// instance cannot know how many others are up. Set the worker's max instances to what the pipeline
// should use (and min instances as high, for a steady rate).
//
// Concurrency: at most `concurrency` items of the pipeline run at once in this instance (not split:
// the hard cap on the pipeline's in-flight items is concurrency × N); a slot is held from admission
// until the delivery is answered.
//
// Waiting: deliveries queue first in, first out (a redelivery joins at the back) and each waits at
// most `maxWaitMs` for both a slot and a token; past that `acquire` answers null and the worker
// refuses the delivery (429) — a Pub/Sub delivery used, no ledger attempt. The wait must be long
// enough for the backlog one instance receives to drain, or every refusal spends one of the
// message's maxDeliveryAttempts (the headroom of functions/topology.ts) and a long backlog would
// dead-letter items the ledger never tried.

export interface GateLimits {
  /** Items of the pipeline running at once in one worker instance. */
  concurrency?: number;
  /** Item starts per second in one worker instance. */
  ratePerSecond?: number;
  /** Tokens the bucket holds (starts allowed at once after an idle spell, ≥ 1); default 1. */
  burst?: number;
}

/** What a pipeline declares: its rate and burst are the pipeline's, across all instances. */
export interface PipelineLimits {
  concurrency?: number;
  ratePerSecond?: number;
  burst?: number;
}

/** One instance's share of a pipeline's limits when up to `instances` instances run. */
export function instanceShare(limits: PipelineLimits, instances: number): GateLimits {
  if (!(Number.isInteger(instances) && instances >= 1))
    throw new Error(`instances must be a whole number ≥ 1 (got ${instances})`);
  return {
    concurrency: limits.concurrency,
    ratePerSecond: limits.ratePerSecond === undefined ? undefined : limits.ratePerSecond / instances,
    burst: limits.ratePerSecond === undefined ? undefined : Math.max(1, (limits.burst ?? 1) / instances),
  };
}

/** The most starts the pipeline makes in any window of `seconds`, across `instances` instances. */
export function startsBound(limits: PipelineLimits, instances: number, seconds: number): number {
  if (limits.ratePerSecond === undefined) return Number.POSITIVE_INFINITY;
  return limits.ratePerSecond * seconds + Math.max(limits.burst ?? 1, instances);
}

export class TokenBucket {
  private tokens: number;
  private last: number;
  constructor(
    readonly ratePerSecond: number,
    readonly burst: number,
    private readonly now: () => number = Date.now,
  ) {
    if (!(ratePerSecond > 0)) throw new Error(`ratePerSecond must be above 0 (got ${ratePerSecond})`);
    // Not necessarily whole: an instance's share of a pipeline's burst (instanceShare).
    if (!(burst >= 1)) throw new Error(`burst must be at least 1 (got ${burst})`);
    this.tokens = burst;
    this.last = now();
  }

  private refill(): void {
    const t = this.now();
    if (t > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) / 1000) * this.ratePerSecond);
      this.last = t;
    }
  }

  /** Takes a token when one is there (true); otherwise false and nothing changes. */
  tryTake(): boolean {
    this.refill();
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    return false;
  }

  /** Milliseconds until a token is there (0 when one is). */
  msUntilToken(): number {
    this.refill();
    if (this.tokens >= 1) return 0;
    return Math.ceil(((1 - this.tokens) / this.ratePerSecond) * 1000);
  }
}

interface Waiter {
  grant(release: () => void): void;
  refuse(): void;
  done: boolean;
}

/** A permit: call it once when the delivery is answered (idempotent). */
export type Release = () => void;

export class PipelineGate {
  private active = 0;
  private readonly queue: Waiter[] = [];
  private readonly bucket: TokenBucket | null;
  private readonly concurrency: number;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    limits: GateLimits,
    private readonly now: () => number = Date.now,
  ) {
    this.concurrency = limits.concurrency ?? Number.POSITIVE_INFINITY;
    this.bucket =
      limits.ratePerSecond === undefined
        ? null
        : new TokenBucket(limits.ratePerSecond, limits.burst ?? 1, now);
  }

  /** Items admitted and not yet released. */
  get inFlight(): number {
    return this.active;
  }
  /** Deliveries waiting for admission. */
  get waiting(): number {
    return this.queue.length;
  }

  /**
   * Waits up to `maxWaitMs` for a slot and a token; resolves a Release, or null when the wait ran
   * out or `signal` fired (shutdown) first.
   */
  acquire(maxWaitMs: number, signal?: AbortSignal): Promise<Release | null> {
    if (signal?.aborted) return Promise.resolve(null);
    return new Promise<Release | null>((resolve) => {
      let deadline: NodeJS.Timeout | undefined;
      const onAbort = () => waiter.refuse();
      const waiter: Waiter = {
        done: false,
        grant: (release) => {
          if (waiter.done) return;
          waiter.done = true;
          cleanup();
          resolve(release);
        },
        refuse: () => {
          if (waiter.done) return;
          waiter.done = true;
          cleanup();
          const i = this.queue.indexOf(waiter);
          if (i >= 0) this.queue.splice(i, 1);
          resolve(null);
          // The head may have changed.
          this.pump();
        },
      };
      const cleanup = () => {
        if (deadline) clearTimeout(deadline);
        signal?.removeEventListener("abort", onAbort);
      };
      this.queue.push(waiter);
      signal?.addEventListener("abort", onAbort, { once: true });
      deadline = setTimeout(() => waiter.refuse(), Math.max(0, maxWaitMs));
      this.pump();
    });
  }

  /** Admits waiters from the head of the queue while a slot and a token are there. */
  private pump(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    while (this.queue.length > 0 && this.active < this.concurrency) {
      if (this.bucket) {
        const wait = this.bucket.msUntilToken();
        if (wait > 0) {
          this.timer = setTimeout(() => {
            this.timer = null;
            this.pump();
          }, wait);
          return;
        }
        this.bucket.tryTake();
      }
      const waiter = this.queue.shift()!;
      this.active++;
      let released = false;
      waiter.grant(() => {
        if (released) return;
        released = true;
        this.active--;
        this.pump();
      });
    }
  }
}

/**
 * One gate per pipeline name, built on first use from this instance's share of the pipeline's
 * declared limits (`instances`: the worker's maximum instance count).
 */
export class PipelineGates {
  private readonly gates = new Map<string, PipelineGate>();
  constructor(
    readonly instances: number = 1,
    private readonly now: () => number = Date.now,
  ) {}

  /** The pipeline's gate, or null when it declares no limit. */
  gateFor(name: string, limits: PipelineLimits): PipelineGate | null {
    if (limits.concurrency === undefined && limits.ratePerSecond === undefined) return null;
    let gate = this.gates.get(name);
    if (!gate) {
      gate = new PipelineGate(instanceShare(limits, this.instances), this.now);
      this.gates.set(name, gate);
    }
    return gate;
  }
}
