// The local Cloud Scheduler: calls the reconciler's `POST /reconcile` every tick (the deployed job
// does it every minute; locally the tick is seconds). Like a scheduler job it fires on its own
// clock whatever the previous call did, logs failed calls and carries on; unlike Cloud Scheduler it
// never overlaps two calls, so a slow reconcile cannot pile up requests on a 2-core machine.

export interface SchedulerLoop {
  /** Calls made and failed so far. */
  readonly calls: number;
  readonly failures: number;
  /** Calls /reconcile now (outside the schedule) and returns the response body. */
  tickNow(): Promise<unknown>;
  stop(): Promise<void>;
}

export function startSchedulerLoop(opts: {
  reconcileUrl: string;
  tickMs: number;
  /** Cloud Scheduler's attempt deadline: a call taking longer counts as failed. */
  attemptDeadlineMs?: number;
  onFailure: (message: string) => void;
}): SchedulerLoop {
  let calls = 0;
  let failures = 0;
  let stopped = false;
  let inFlight: Promise<unknown> | null = null;
  let timer: NodeJS.Timeout | null = null;
  const abort = new AbortController();

  const call = async (): Promise<unknown> => {
    calls++;
    try {
      const res = await fetch(opts.reconcileUrl, {
        method: "POST",
        headers: { "content-type": "application/json", "user-agent": "Google-Cloud-Scheduler (tally local)" },
        body: "{}",
        signal: AbortSignal.any([abort.signal, AbortSignal.timeout(opts.attemptDeadlineMs ?? 180_000)]),
      });
      const text = await res.text();
      if (!res.ok) {
        failures++;
        opts.onFailure(`POST ${opts.reconcileUrl} answered ${res.status}: ${text.slice(0, 300)}`);
        return undefined;
      }
      return text ? JSON.parse(text) : null;
    } catch (err) {
      if (stopped) return undefined;
      failures++;
      opts.onFailure(`POST ${opts.reconcileUrl} failed: ${(err as Error).message}`);
      return undefined;
    }
  };

  const tick = async () => {
    timer = null;
    if (stopped) return;
    const started = Date.now();
    if (!inFlight) {
      inFlight = call();
      await inFlight;
      inFlight = null;
    }
    if (!stopped) timer = setTimeout(tick, Math.max(0, opts.tickMs - (Date.now() - started)));
  };
  timer = setTimeout(tick, opts.tickMs);

  return {
    get calls() {
      return calls;
    },
    get failures() {
      return failures;
    },
    tickNow: () => call(),
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      abort.abort();
      await inFlight?.catch(() => undefined);
    },
  };
}
