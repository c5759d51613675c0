// The simulator's deterministic scheduler (FoundationDB / TigerBeetle style): every round trip an
// actor makes — a store read or commit, a publish, a pull, a sink export, a sleep — is a ticket that
// becomes runnable after a latency drawn from the seed's PRNG, and the scheduler resumes exactly one
// ticket per step, on a simulated clock. Between steps it lets every continuation run until it
// parks on its next ticket (one macrotask turn drains the microtasks), so the order in which
// concurrent operations land is a function of the seed alone, and a seed replays exactly.
//
// An actor is a process: crashing it (at any ticket) drops its tickets, so it never runs again and
// no `finally` of it runs — as a SIGKILL. Timers the code under test starts with setInterval (the
// finalizer's claim renewal) run on the simulated clock too; they never keep a run alive.

/** mulberry32: a small, fast, seedable PRNG. */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  chance(p: number): boolean {
    return p > 0 && this.next() < p;
  }
  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  /** Real in [lo, hi). */
  between(lo: number, hi: number): number {
    return lo + this.next() * (hi - lo);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]!;
  }
}

export type Latency = (op: string) => number;

/** What a round trip does, for the trace (a function: built only when the trace is printed). */
export type Detail = string | (() => string);

interface TraceEntry {
  at: number;
  who: string;
  op: string;
  detail: Detail;
}

export class Actor {
  dead = false;
  constructor(
    readonly id: number,
    readonly name: string,
    /** Simulated milliseconds before a round trip of this actor lands. */
    readonly latency: Latency,
    /** Probability that the actor crashes at any one of its tickets (while faults are on). */
    readonly crashRate: number,
    readonly onDeath?: () => void,
  ) {}
}

interface Ticket {
  kind: "ticket";
  at: number;
  seq: number;
  actor: Actor;
  op: string;
  detail: Detail;
  /** An idle loop's wait (a daemon with nothing to do): it does not keep the run going. */
  idle: boolean;
  resolve: () => void;
  cancelled?: boolean;
}

interface IntervalEntry {
  kind: "interval";
  at: number;
  seq: number;
  timer: SimInterval;
}

type Entry = Ticket | IntervalEntry;

class SimInterval {
  cleared = false;
  constructor(
    readonly fn: () => void,
    readonly every: number,
  ) {}
  unref(): this {
    return this;
  }
  ref(): this {
    return this;
  }
  hasRef(): boolean {
    return false;
  }
}

const never = new Promise<void>(() => {});

/** Is a file named like `name` on the stack? (Raw call sites: no source-map work.) */
function calledFrom(name: string): boolean {
  const original = Error.prepareStackTrace;
  Error.prepareStackTrace = (_err, frames) => frames;
  try {
    const frames = new Error().stack as unknown as NodeJS.CallSite[];
    return frames.some((f) => f.getFileName()?.includes(name));
  } finally {
    Error.prepareStackTrace = original;
  }
}

export interface RunLimits {
  /** Stop (not settled) after this many resumed tickets. */
  maxSteps: number;
  /** Stop (not settled) once the simulated clock passes this time. */
  deadline: number;
  /** Checked before every step; true ends the run as settled. */
  settled: () => boolean;
  /** Checked before every step; true ends the run at once (a violation was found). */
  abort?: () => boolean;
}

export class Scheduler {
  now: number;
  steps = 0;
  readonly rng: Rng;
  /** Faults (crashes, stalls, lost and failed messages, failed exports) happen only before this time. */
  faultsUntil = Number.POSITIVE_INFINITY;
  private readonly entries: Entry[] = [];
  private seq = 0;
  private actorSeq = 0;
  private readonly trace: TraceEntry[] = [];
  private traceAt = 0;
  /** A running hash of every step (two runs of one seed must agree). */
  hash = 2166136261;
  private readonly startTime: number;

  constructor(
    seed: number,
    startTime: number,
    private readonly traceSize = 120,
  ) {
    this.rng = new Rng(seed);
    this.now = startTime;
    this.startTime = startTime;
  }

  get faultsOn(): boolean {
    return this.now < this.faultsUntil;
  }

  actor(name: string, latency: Latency, crashRate = 0, onDeath?: () => void): Actor {
    return new Actor(++this.actorSeq, `${name}#${this.actorSeq}`, latency, crashRate, onDeath);
  }

  /** A round trip of `actor`: resolves when the scheduler picks it (never, once the actor is dead). */
  point(actor: Actor, op: string, detail: Detail = ""): Promise<void> {
    if (actor.dead) return never;
    return this.ticket(actor, op, detail, actor.latency(op), false);
  }

  /** The actor waits `ms` of simulated time (`idle`: a daemon waiting for work). */
  sleep(actor: Actor, ms: number, idle = false): Promise<void> {
    if (actor.dead) return never;
    return this.ticket(actor, idle ? "idle" : "sleep", `${Math.round(ms)} ms`, ms, idle);
  }

  /**
   * An idle wait that ends early when cancelled (an idle lane woken by a new message): the ticket is
   * dropped and the promise resolves at once.
   */
  cancellableSleep(actor: Actor, ms: number): { promise: Promise<void>; cancel: () => void } {
    if (actor.dead) return { promise: never, cancel: () => {} };
    let entry: Ticket | undefined;
    const promise = new Promise<void>((resolve) => {
      entry = {
        kind: "ticket",
        at: this.now + Math.max(0, ms),
        seq: ++this.seq,
        actor,
        op: "idle",
        detail: `${Math.round(ms)} ms`,
        idle: true,
        resolve,
      };
      this.entries.push(entry);
    });
    return {
      promise,
      cancel: () => {
        if (!entry || entry.cancelled) return;
        entry.cancelled = true;
        entry.resolve();
      },
    };
  }

  /** Starts an actor's code; it first runs at its first ticket. */
  spawn(actor: Actor, body: () => Promise<unknown>, delayMs = 0): void {
    void this.sleep(actor, delayMs).then(() =>
      body().catch((err) => this.log(`${actor.name} threw: ${err}`)),
    );
  }

  kill(actor: Actor, why: string): void {
    if (actor.dead) return;
    actor.dead = true;
    this.log(`${actor.name} CRASHED (${why})`);
    actor.onDeath?.();
  }

  private ticket(actor: Actor, op: string, detail: Detail, latency: number, idle: boolean): Promise<void> {
    return new Promise<void>((resolve) => {
      this.entries.push({
        kind: "ticket",
        at: this.now + Math.max(0, latency),
        seq: ++this.seq,
        actor,
        op,
        detail,
        idle,
        resolve,
      });
    });
  }

  /** True while some live actor has a ticket that is not an idle wait (work in progress). */
  busy(): boolean {
    return this.entries.some((e) => e.kind === "ticket" && !e.idle && !e.actor.dead && !e.cancelled);
  }

  // --- timers of the code under test ------------------------------------------------------------
  setInterval(fn: () => void, ms: number): SimInterval {
    const timer = new SimInterval(fn, Math.max(1, ms));
    this.entries.push({ kind: "interval", at: this.now + timer.every, seq: ++this.seq, timer });
    return timer;
  }

  /** Runs `body` with setInterval/clearInterval of the finalizer on the simulated clock. */
  async withSimulatedIntervals<T>(body: () => Promise<T>): Promise<T> {
    const realSet = globalThis.setInterval;
    const realClear = globalThis.clearInterval;
    const sim = this;
    const patchedSet = function (this: unknown, fn: () => void, ms?: number, ...args: unknown[]) {
      // Only the code under test's timers (the finalizer's claim renewal): the test runner's stay real.
      if (calledFrom("finalizeBatch")) return sim.setInterval(fn, ms ?? 0);
      return (realSet as (...a: unknown[]) => unknown)(fn, ms, ...args);
    };
    const patchedClear = (handle: unknown) => {
      if (handle instanceof SimInterval) handle.cleared = true;
      else realClear(handle as NodeJS.Timeout);
    };
    globalThis.setInterval = patchedSet as unknown as typeof setInterval;
    globalThis.clearInterval = patchedClear as typeof clearInterval;
    try {
      return await body();
    } finally {
      globalThis.setInterval = realSet;
      globalThis.clearInterval = realClear;
    }
  }

  // --- the run -------------------------------------------------------------------------------------
  /** Resumes one ticket per step until settled, aborted, or out of steps or time. */
  async run(limits: RunLimits): Promise<"settled" | "aborted" | "out_of_steps" | "out_of_time" | "deadlock"> {
    for (;;) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (limits.abort?.()) return "aborted";
      if (limits.settled()) return "settled";
      const next = this.popNext();
      if (!next) return "deadlock";
      if (next.at > this.now) this.now = next.at;
      if (this.now > limits.deadline) return "out_of_time";
      if (this.steps >= limits.maxSteps) return "out_of_steps";
      if (next.kind === "interval") {
        if (next.timer.cleared) continue;
        this.entries.push({
          kind: "interval",
          at: this.now + next.timer.every,
          seq: ++this.seq,
          timer: next.timer,
        });
        this.record("timer", "interval", "");
        next.timer.fn();
        continue;
      }
      if (next.actor.dead) continue;
      if (this.faultsOn && next.actor.crashRate > 0 && this.rng.chance(next.actor.crashRate)) {
        this.kill(next.actor, `at ${next.op}`);
        continue;
      }
      this.steps++;
      this.record(next.actor.name, next.op, next.detail);
      next.resolve();
    }
  }

  /** The earliest entry; ties in time go by the order they were made (deterministic). */
  private popNext(): Entry | undefined {
    let best = -1;
    for (let i = 0; i < this.entries.length; i++) {
      const e = this.entries[i]!;
      if (e.kind === "interval" && e.timer.cleared) continue;
      if (e.kind === "ticket" && (e.actor.dead || e.cancelled)) continue;
      const b = best >= 0 ? this.entries[best]! : undefined;
      if (!b || e.at < b.at || (e.at === b.at && e.seq < b.seq)) best = i;
    }
    // Entries of dead actors and cleared timers are dropped on the way.
    if (best < 0) {
      this.entries.length = 0;
      return undefined;
    }
    const [e] = this.entries.splice(best, 1);
    if (this.entries.length > 64) this.compact();
    return e;
  }

  private compact(): void {
    const live = this.entries.filter(
      (e) =>
        !(e.kind === "interval" && e.timer.cleared) &&
        !(e.kind === "ticket" && (e.actor.dead || e.cancelled)),
    );
    this.entries.length = 0;
    this.entries.push(...live);
  }

  // --- the trace -----------------------------------------------------------------------------------
  private record(who: string, op: string, detail: Detail): void {
    // The hash covers who ran what when (cheaply: the trace's text is only built when printed).
    let h = this.hash;
    h = Math.imul(h ^ Math.round((this.now - this.startTime) * 1000), 16777619);
    for (let i = 0; i < op.length; i++) h = Math.imul(h ^ op.charCodeAt(i), 16777619);
    for (let i = 0; i < who.length; i++) h = Math.imul(h ^ who.charCodeAt(i), 16777619);
    this.hash = h >>> 0;
    this.push({ at: this.now, who, op, detail });
  }

  /** A line in the trace (log events, crashes, checks). */
  log(line: string): void {
    this.push({ at: this.now, who: "", op: line, detail: "" });
  }

  private push(entry: TraceEntry): void {
    if (this.trace.length < this.traceSize) this.trace.push(entry);
    else {
      this.trace[this.traceAt] = entry;
      this.traceAt = (this.traceAt + 1) % this.traceSize;
    }
  }

  clockLabel(at = this.now): string {
    return `t=${((at - this.startTime) / 1000).toFixed(3)}s`;
  }

  /** The last `traceSize` lines, oldest first. */
  tail(): string[] {
    return [...this.trace.slice(this.traceAt), ...this.trace.slice(0, this.traceAt)].map((e) => {
      const detail = typeof e.detail === "function" ? e.detail() : e.detail;
      return `${this.clockLabel(e.at)} ${e.who ? `${e.who} ` : ""}${e.op}${detail ? ` ${detail}` : ""}`;
    });
  }
}
