// Per-pipeline admission in one worker instance (issue #17 §2): a concurrency cap and a start rate.
// The worker asks the pipeline's gate for a slot BEFORE it leases the item, so a delivery that
// cannot start in time is answered for redelivery without using a ledger attempt.
//
// Rate: a token bucket refilled at `ratePerSecond`, holding at most `burst` tokens (default 1); one
// token per item start. Starts in any interval of length T are at most burst + ratePerSecond × T,
// so with the default burst of 1 a 1-s window holds at most ratePerSecond + 1 starts (the documented
// burst). The bucket starts full.
//
// Concurrency: at most `concurrency` items of the pipeline run at once in this instance; a slot is
// held from admission until the delivery is answered.
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
  /** Tokens the bucket holds (starts allowed at once after an idle spell); default 1. */
  burst?: number;
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
    if (!(Number.isInteger(burst) && burst >= 1))
      throw new Error(`burst must be a whole number ≥ 1 (got ${burst})`);
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

/** One gate per pipeline name, built on first use from the pipeline's declared limits. */
export class PipelineGates {
  private readonly gates = new Map<string, PipelineGate>();
  constructor(private readonly now: () => number = Date.now) {}

  /** The pipeline's gate, or null when it declares no limit. */
  gateFor(name: string, limits: GateLimits): PipelineGate | null {
    if (limits.concurrency === undefined && limits.ratePerSecond === undefined) return null;
    let gate = this.gates.get(name);
    if (!gate) {
      gate = new PipelineGate(limits, this.now);
      this.gates.set(name, gate);
    }
    return gate;
  }
}
