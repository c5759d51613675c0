// `npm run demo:http`: an HTTP pipeline end to end, no pipeline code (issue #17 §4). Starts a small
// prediction service on 127.0.0.1 (demoTargetService.ts), starts the local stack with one HTTP
// pipeline declared against it, submits a batch, shows progress, checks the ledger invariant
// (local/invariant.ts) and prints the final counts beside the ones the service's fixed pattern
// predicts, and the first rows of the DuckDB results. Exit 0 only when the invariant holds and the
// counts are the predicted ones.
//
// Settings as in `npm run demo`: a 1 s minimum backoff so an item the service answered 500 is
// retried within seconds, a 2 s reconciler tick.
import { appendFileSync } from "node:fs";
import { join } from "node:path";
import { DuckDBResultSink } from "../functions/adapters/duckdbResultSink";
import type { ResultRow } from "../functions/core/model";
import { parseHttpPipelineDeclarations } from "../functions/pipelines/httpPipeline";
import { codePipelineNames, httpPipelinesVariable } from "../functions/pipelines/registry";
import { type BatchView, isFinal, toBatchView } from "./cli/batchView";
import { LiveProgress, type ProgressStream, RateMeter, renderOutcomeLine } from "./cli/progressBar";
import {
  type DemoExpectation,
  type DemoTargetService,
  demoHttpItems,
  expectedDemoCounts,
  startDemoTargetService,
} from "./demoTargetService";
import { MissingToolError } from "./emulators";
import {
  checkLedgerInvariant,
  fetchAllItems,
  formatInvariantReport,
  type InvariantReport,
  type ItemSnapshot,
} from "./invariant";
import { type LocalStack, startLocalStack } from "./localStack";
import { UsageError } from "./stackOptions";

export const httpDemoPipeline = "predict-demo";
export const httpDemoFailureThreshold = 0.05;

export interface HttpDemoOptions {
  items: number;
  workers: number;
  verbose: boolean;
  /** The stack's data folder (default `.tally/demo-http`). */
  dataDir?: string;
  /** Where progress and messages go (default stdout). */
  out?: ProgressStream;
  /** Stops the watch early (Ctrl-C). */
  signal?: AbortSignal;
}

export interface HttpDemoResult {
  batchId: string;
  view: BatchView;
  expected: DemoExpectation;
  /** The final counts are the ones the service's pattern predicts. */
  countsAsExpected: boolean;
  report: InvariantReport;
  rows: ResultRow[];
  /** Calls the service answered, by status. */
  answeredByStatus: Record<number, number>;
  /** The items as the API lists them (status, attempt, error, result). */
  items: ItemSnapshot[];
  durationMs: number;
}

const usage = `Usage: npm run demo:http -- [--items N] [--workers N] [--verbose]

Starts a small prediction service on 127.0.0.1 and the local stack with an HTTP pipeline
("${httpDemoPipeline}") pointed at it, submits a batch (default 200 items) and follows it. The
service answers by item number: every 25th 400 (permanent), every n ending in 3 429 with
Retry-After: 1 on its first call, every n ending in 7 500 on its first call, the rest 200 — so
the final counts are known in advance; they and the ledger invariant are checked at the end.`;

function parseArgs(argv: string[]): HttpDemoOptions | null {
  const opts: HttpDemoOptions = { items: 200, workers: 2, verbose: false };
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
    else if (flag === "--items") opts.items = int(25, 20_000);
    else if (flag === "--workers") opts.workers = int(1, 8);
    else if (flag === "--verbose") opts.verbose = true;
    else throw new UsageError(`unknown option ${flag} (see --help)`);
  }
  return opts;
}

/** The pipeline declaration, through the same parser `npm start -- --http-pipelines` uses. */
function declarationsFor(target: DemoTargetService): string {
  const parsed = parseHttpPipelineDeclarations(
    [{ name: httpDemoPipeline, url: target.url, timeoutSeconds: 10 }],
    "demo:http",
    codePipelineNames,
  );
  if (!parsed.ok) throw new Error(parsed.problems.join("; "));
  return JSON.stringify(parsed.declarations);
}

/** Runs the whole demo and stops everything it started; throws only when it could not run. */
export async function runHttpDemo(opts: HttpDemoOptions): Promise<HttpDemoResult> {
  const out = opts.out ?? process.stdout;
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

  let target: DemoTargetService | null = null;
  let stack: LocalStack | null = null;
  try {
    target = await startDemoTargetService();
    say(`[demo:http] prediction service on ${target.url} (127.0.0.1 only)`);
    say("[demo:http] starting the local stack (emulators, coordinator, workers, reconciler)…");
    let logPath = "";
    stack = await startLocalStack({
      port: 0,
      workers: opts.workers,
      tickSeconds: 2,
      dataDir: opts.dataDir ?? join(".tally", "demo-http"),
      delivery: {
        leaseSeconds: 10,
        minimumBackoffSeconds: 1,
        maximumBackoffSeconds: 10,
        ackDeadlineSeconds: 60,
      },
      staleFinalizingSeconds: 10,
      pushConcurrency: 16,
      quiet: !opts.verbose,
      env: { [httpPipelinesVariable]: declarationsFor(target) },
      output: (line) => {
        if (opts.verbose || line.startsWith("[supervisor]")) say(line);
        else if (logPath) appendFileSync(logPath, `${line}\n`);
      },
      onLog: (source, line) => {
        if (logPath) appendFileSync(logPath, `[${source}] ${line}\n`);
      },
    });
    logPath = join(stack.dataDir, "stack.log");
    say(
      `[demo:http] stack ready: coordinator ${stack.urls.coordinator}, pipeline "${httpDemoPipeline}" → ${target.url}, logs in ${logPath}`,
    );

    const items = demoHttpItems(opts.items);
    const expected = expectedDemoCounts(opts.items);
    const batchId = `demo-http-${new Date().toISOString().replace(/[-:T]/g, "").slice(0, 14)}`;
    const submittedAt = Date.now();
    const res = await fetch(`${stack.urls.coordinator}/v1/batches`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        id: batchId,
        pipeline: httpDemoPipeline,
        failureThreshold: httpDemoFailureThreshold,
        items,
      }),
    });
    const submitted = await res.text();
    if (res.status !== 201 && res.status !== 200)
      throw new Error(`submitting the batch failed: ${res.status} ${submitted.slice(0, 500)}`);
    say(
      `[demo:http] submitted batch ${batchId}: ${items.length} items; the service's pattern predicts ` +
        `${expected.succeeded} succeeded (${expected.busyOnce} after a 429, ${expected.errorOnce} after a 500) and ${expected.failed} failed (400)`,
    );

    const meter = new RateMeter();
    let view: BatchView | null = null;
    const deadline = Date.now() + 10 * 60_000;
    for (;;) {
      if (opts.signal?.aborted) throw new Error("interrupted");
      if (Date.now() > deadline)
        throw new Error(`batch ${batchId} was not final after 10 minutes (${view?.status ?? "never read"})`);
      try {
        view = toBatchView(
          JSON.parse(await getText(`${stack.urls.coordinator}/v1/batches/${encodeURIComponent(batchId)}`)),
        );
      } catch (err) {
        // A slow answer on a loaded machine is not the end of the run: report it and ask again.
        say(`[demo:http] reading the batch failed (${(err as Error).message}); retrying`);
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      const done = view.counts.succeeded + view.counts.failed;
      meter.add(Date.now(), done);
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
      if (isFinal(view)) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    progress.finish();
    barShown = false;
    const durationMs = Date.now() - submittedAt;

    const report = await checkLedgerInvariant({
      coordinatorUrl: stack.urls.coordinator,
      batchId,
      resultsPath: stack.resultsPath,
      submittedItemIds: items.map((i) => i.id),
    });
    const rows = await new DuckDBResultSink(stack.resultsPath).readRows(batchId);
    const listed = await fetchAllItems(stack.urls.coordinator, batchId);
    const countsAsExpected =
      view.counts.succeeded === expected.succeeded && view.counts.failed === expected.failed;

    say(formatInvariantReport(report));
    say(
      `[demo:http] the service answered ${Object.entries(target.answeredByStatus())
        .map(([status, n]) => `${status} ×${n}`)
        .join(", ")}`,
    );
    say(
      `[demo:http] expected succeeded ${expected.succeeded}, failed ${expected.failed}; got succeeded ${view.counts.succeeded}, failed ${view.counts.failed}: ${countsAsExpected ? "as predicted" : "NOT as predicted"}`,
    );
    say(`[demo:http] results in ${stack.resultsPath}, ${rows.length} rows; the first 5:`);
    for (const r of rows.slice(0, 5))
      say(`  ${r.itemId}  generation ${r.generation}  attempts ${r.attempts}  ${JSON.stringify(r.result)}`);
    say(
      renderOutcomeLine({
        batchId,
        status: view.status,
        total: view.total ?? items.length,
        succeeded: view.counts.succeeded,
        failed: view.counts.failed,
        failedByKind: view.failedByKind,
        durationMs,
      }),
    );
    return {
      batchId,
      view,
      expected,
      countsAsExpected,
      report,
      rows,
      answeredByStatus: target.answeredByStatus(),
      items: listed,
      durationMs,
    };
  } finally {
    progress.finish();
    if (stack) {
      say("[demo:http] stopping the stack…");
      await stack.stop();
    }
    await target?.stop();
  }
}

async function getText(url: string): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(60_000) });
  const text = await res.text();
  if (!res.ok) throw new Error(`GET ${url} answered ${res.status}: ${text.slice(0, 300)}`);
  return text;
}

async function main(): Promise<number> {
  let opts: HttpDemoOptions | null;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`npm run demo:http: ${(err as Error).message}`);
    return 1;
  }
  if (!opts) {
    console.log(usage);
    return 0;
  }
  const interrupt = new AbortController();
  const onSignal = () => interrupt.abort();
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    const r = await runHttpDemo({ ...opts, signal: interrupt.signal });
    return r.report.ok && r.countsAsExpected ? 0 : 1;
  } catch (err) {
    if (err instanceof MissingToolError || err instanceof UsageError)
      console.error(`npm run demo:http: ${err.message}`);
    else console.error(`npm run demo:http: ${(err as Error).stack ?? err}`);
    return 1;
  }
}

if (require.main === module)
  main().then(
    (code) => process.exit(code),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
