// Wires a process's SIGTERM/SIGINT to a graceful `shutdown()` (DESIGN.md §2.2, F9): Cloud Run sends
// SIGTERM and kills the instance 10 s later, so running items must be released at once — then
// Pub/Sub redelivers them to another instance within its backoff instead of waiting for the lease
// to run out.
//
// The Functions Framework's own CLI registers a SIGTERM listener that answers only the latest
// request with a 500 and exits immediately, before any lease could be released. With
// `exclusive: true` (use it in the deployed worker) the listeners others add for these signals are
// removed, so this one decides when the process exits.
import type { Logger } from "../../core/logger";

export interface ShutdownTarget {
  shutdown(): Promise<void>;
}

export interface InstallShutdownOptions {
  signals?: NodeJS.Signals[];
  /** Exit the process once every target has shut down (default true). */
  exit?: boolean;
  /** Remove the other listeners of these signals, present and future (see above). */
  exclusive?: boolean;
  log?: Logger;
}

/** Returns a function that uninstalls the listeners. */
export function installShutdown(
  targets: ShutdownTarget | ShutdownTarget[],
  opts: InstallShutdownOptions = {},
): () => void {
  const list = Array.isArray(targets) ? targets : [targets];
  const signals = opts.signals ?? ["SIGTERM", "SIGINT"];
  const exit = opts.exit ?? true;
  let started = false;

  const onSignal = (signal: NodeJS.Signals) => {
    if (started) return;
    started = true;
    const t0 = Date.now();
    opts.log?.info("process.shutdown", `${signal} received: shutting down`, { signal });
    void Promise.allSettled(list.map((t) => t.shutdown())).then(() => {
      opts.log?.info("process.shutdown_complete", `shut down in ${Date.now() - t0} ms`, { signal });
      if (exit) process.exit(0);
    });
  };

  const displace = (event: string | symbol, listener: (...args: unknown[]) => void) => {
    if (!signals.includes(event as NodeJS.Signals) || listener === onSignal) return;
    // `newListener` fires before the listener is added: remove it right after.
    setImmediate(() => process.removeListener(event, listener));
  };

  for (const s of signals) {
    if (opts.exclusive) for (const l of process.listeners(s)) process.removeListener(s, l);
    process.on(s, onSignal);
  }
  if (opts.exclusive) process.on("newListener", displace);

  return () => {
    for (const s of signals) process.removeListener(s, onSignal);
    process.removeListener("newListener", displace);
  };
}
