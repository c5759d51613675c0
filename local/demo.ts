// `npm run demo`: a one-shot proof that nothing is lost. Starts the local stack, submits a 2,000-item
// demo batch with transient failures, permanent failures and items that crash their worker process,
// SIGKILLs a worker mid-run, shows the progress bar, waits for finalization, checks the ledger
// invariant (DESIGN.md §8) against the API and the DuckDB file, prints one summary line and stops
// everything. Exit 0 only when the invariant holds.
//
// Settings are chosen so crashes recover quickly: a 5 s lease and a 2 s reconciler tick bound how
// long a crashed item waits (lease + one tick), a 1 s minimum backoff how long a failed delivery does.
import { appendFileSync } from "node:fs";
import { join } from "node:path";
import { type BatchView, isFinal, toBatchView } from "./cli/batchView";
import { LiveProgress, RateMeter, renderOutcomeLine } from "./cli/progressBar";
import { MissingToolError } from "./emulators";
import { checkLedgerInvariant, formatInvariantReport } from "./invariant";
import { type LocalStack, startLocalStack } from "./localStack";
import { UsageError } from "./stackOptions";

interface DemoOptions {
  items: number;
  workers: number;
  pushConcurrency: number;
  verbose: boolean;
}

const usage = `Usage: npm run demo -- [--items N] [--workers N] [--push-concurrency N] [--verbose]

Starts the local stack, submits a demo batch (default 2,000 items: about 5% fail transiently and
recover, 1.5% fail permanently, 5 crash their worker once, 2 crash it on every attempt),
SIGKILLs a worker mid-run, waits for the batch to finalize and checks the ledger invariant.
--push-concurrency: requests the push relay sends at a time (default 16; 0 = the emulator's own
push, two at a time — exactly the declared subscription, but slow).`;

function parseArgs(argv: string[]): DemoOptions | null {
  const opts: DemoOptions = { items: 2000, workers: 2, pushConcurrency: 16, verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const int = (min: number, max: number) => {
      const v = argv[++i];
      if (v === undefined || !/^\d+$/.test(v) || Number(v) < min || Number(v) > max)
        throw new UsageError(
          `${flag} must be a whole number in ${min}..${max} (got ${v === undefined ? "nothing" : `"${v}"`})`,
        );
      return Number(v);
    };
    if (flag === "--help" || flag === "-h") return null;
    else if (flag === "--items") opts.items = int(100, 100_000);
    else if (flag === "--workers") opts.workers = int(2, 8);
    else if (flag === "--push-concurrency") opts.pushConcurrency = int(0, 256);
    else if (flag === "--verbose") opts.verbose = true;
    else throw new UsageError(`unknown option ${flag} (see --help)`);
  }
  return opts;
}

export interface DemoItem {
  id: string;
  payload: Record<string, unknown>;
}

/**
 * The demo batch, deterministic: every 20th item fails transiently once or twice (then succeeds),
 * every 67th fails permanently, every 397th crashes its worker process on the first attempt (then
 * succeeds) and every 1000th crashes it on every attempt (so it ends `attempts_exhausted`). The
 * rest sleep a few milliseconds. About 1.6% fail: with a 5% threshold the batch ends `partial`.
 * Each crash also takes down the deliveries running beside it in that process; they come back
 * through redelivery or lease expiry, and a message that keeps landing on dying processes is
 * dead-lettered after its 5 attempts — so a few `dead_lettered` failures are part of the story.
 */
export function demoBatchItems(count: number): DemoItem[] {
  const width = String(count).length;
  return Array.from({ length: count }, (_, i) => {
    const n = i + 1;
    const payload: Record<string, unknown> = { value: n };
    if (n % 1000 === 0) payload.crash = true;
    else if (n % 397 === 0) payload.crash = 1;
    else if (n % 67 === 0) payload.permanent = true;
    else if (n % 20 === 0) payload.failTimes = (n / 20) % 2 === 0 ? 2 : 1;
    else payload.sleepMs = n % 7;
    return { id: `item-${String(n).padStart(width, "0")}`, payload };
  });
}

export const demoFailureThreshold = 0.05;

async function main(): Promise<number> {
  let opts: DemoOptions | null;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`npm run demo: ${(err as Error).message}`);
    return 1;
  }
  if (!opts) {
    console.log(usage);
    return 0;
  }

  const out = process.stdout;
  let progress = new LiveProgress(out);
  let barShown = false;
  // Messages go above the bar: erase the bar's two lines, print, and let the next update redraw it.
  const say = (line: string) => {
    if (progress.tty && barShown) {
      out.write("\r\x1b[2K\x1b[1A\x1b[2K");
      progress = new LiveProgress(out);
      barShown = false;
    }
    out.write(`${line}\n`);
  };

  let stack: LocalStack | null = null;
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) return;
    interrupted = true;
    say("[demo] interrupted: stopping the stack");
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  try {
    say("[demo] starting the local stack (emulators, coordinator, workers, reconciler)…");
    const dataDir = join(".tally", "demo");
    let logPath = "";
    stack = await startLocalStack({
      port: 0,
      workers: opts.workers,
      tickSeconds: 2,
      dataDir,
      delivery: {
        leaseSeconds: 5,
        minimumBackoffSeconds: 1,
        maximumBackoffSeconds: 10,
        ackDeadlineSeconds: 60,
      },
      staleFinalizingSeconds: 10,
      // The emulator's own push is two requests at a time; the relay keeps 2,000 items to about a minute.
      pushConcurrency: opts.pushConcurrency,
      quiet: !opts.verbose,
      output: (line) => {
        // Supervisor news (restarts) is part of the story; the rest goes to the log file.
        if (opts.verbose || line.startsWith("[supervisor]") || line.startsWith("[scheduler]")) say(line);
        else if (logPath) appendFileSync(logPath, `${line}\n`);
      },
      onLog: (source, line) => {
        if (logPath) appendFileSync(logPath, `[${source}] ${line}\n`);
      },
    });
    logPath = join(stack.dataDir, "stack.log");
    say(
      `[demo] stack ready: coordinator ${stack.urls.coordinator}, ${opts.workers} workers, logs in ${logPath}`,
    );
    if (interrupted) return 1;

    const items = demoBatchItems(opts.items);
    const batchId = `demo-${new Date().toISOString().replace(/[-:T]/g, "").slice(0, 14)}`;
    const submittedAt = Date.now();
    const res = await fetch(`${stack.urls.coordinator}/v1/batches`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id: batchId, pipeline: "demo", failureThreshold: demoFailureThreshold, items }),
    });
    const submitted = await res.text();
    if (res.status !== 201 && res.status !== 200)
      throw new Error(`submitting the demo batch failed: ${res.status} ${submitted.slice(0, 500)}`);
    say(
      `[demo] submitted batch ${batchId}: ${items.length} items (failureThreshold ${demoFailureThreshold}) in ${Date.now() - submittedAt} ms`,
    );

    // Watch until final; SIGKILL a worker once about a third of the items are done.
    const meter = new RateMeter();
    let killed = false;
    let lastPlainAt = 0;
    let view: BatchView | null = null;
    const deadline = Date.now() + 15 * 60_000;
    for (;;) {
      if (Date.now() > deadline)
        throw new Error(`batch ${batchId} was not final after 15 minutes (${view?.status ?? "never read"})`);
      try {
        view = toBatchView(
          JSON.parse(await getText(`${stack.urls.coordinator}/v1/batches/${encodeURIComponent(batchId)}`)),
        );
      } catch (err) {
        // A slow answer on a loaded machine is not the end of the run: report it and ask again.
        say(`[demo] reading the batch failed (${(err as Error).message}); retrying`);
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      const done = view.counts.succeeded + view.counts.failed;
      meter.add(Date.now(), done);
      // On a terminal the bar is redrawn in place; in a log, a line every few seconds is enough.
      const drawNow = progress.tty || isFinal(view) || Date.now() - lastPlainAt >= 5_000;
      if (drawNow && !progress.tty) lastPlainAt = Date.now();
      if (drawNow)
        progress.update({
          label: batchId,
          status: view.status,
          total: view.total,
          counts: view.counts,
          ratePerSecond: meter.rate(),
          etaSeconds: meter.etaSeconds((view.total ?? items.length) - done),
          elapsedMs: Date.now() - submittedAt,
        });
      barShown = true;
      if (isFinal(view) || interrupted) break;
      // A crashing item may have just taken a worker down: kill one that is running.
      const victim = stack.workers.findIndex((w) => w.live) + 1;
      if (!killed && done >= items.length / 3 && victim > 0) {
        killed = true;
        const pid = stack.killWorker(victim, "SIGKILL");
        say(`[demo] SIGKILL worker ${victim} (pid ${pid}) with ${done}/${items.length} items done`);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    progress.finish();
    barShown = false;
    if (interrupted) return 1;
    const tookMs = Date.now() - submittedAt;

    const report = await checkLedgerInvariant({
      coordinatorUrl: stack.urls.coordinator,
      batchId,
      resultsPath: stack.resultsPath,
      submittedItemIds: items.map((i) => i.id),
    });
    const restarts = stack.workers.reduce((n, w) => n + w.restarts, 0);
    say(`[demo] worker processes restarted ${restarts} time(s) (crashing items and the SIGKILL)`);
    say(formatInvariantReport(report));
    say(
      `${renderOutcomeLine({
        batchId,
        status: view.status,
        total: view.total ?? items.length,
        succeeded: view.counts.succeeded,
        failed: view.counts.failed,
        failedByKind: view.failedByKind,
        durationMs: tookMs,
      })}; results: ${stack.resultsPath} (${report.sinkRows} rows)`,
    );
    return report.ok ? 0 : 1;
  } catch (err) {
    progress.finish();
    if (err instanceof MissingToolError || err instanceof UsageError) say(`npm run demo: ${err.message}`);
    else say(`npm run demo: ${(err as Error).stack ?? err}`);
    return 1;
  } finally {
    if (stack) {
      say("[demo] stopping the stack…");
      await stack.stop();
    }
  }
}

async function getText(url: string): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(60_000) });
  const text = await res.text();
  if (!res.ok) throw new Error(`GET ${url} answered ${res.status}: ${text.slice(0, 300)}`);
  return text;
}

if (require.main === module)
  main().then(
    (code) => process.exit(code),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
