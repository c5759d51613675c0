// Options of the local stack: the programmatic shape (`startLocalStack(opts)`) and the `npm start`
// flags that map onto it. Delivery settings are range-checked by the topology's own validation, so
// a flag the deployed stack would refuse is refused here too.
import { readFileSync } from "node:fs";
import { parseHttpPipelineDeclarations } from "../functions/pipelines/httpPipeline";
import { codePipelineNames, httpPipelinesVariable } from "../functions/pipelines/registry";
import { type DeliverySettings, defaultDelivery, validateDelivery } from "../functions/topology";

export interface LocalStackOptions {
  /** Coordinator port (default 8080; 0 picks a free one). */
  port?: number;
  /** Worker processes per pipeline, each group behind its own front door (default 2). */
  workers?: number;
  /** Seconds between the local scheduler's `POST /reconcile` calls (default 5; fractions allowed). */
  tickSeconds?: number;
  /** false: no scheduler loop (a test that calls /reconcile itself). Default true. */
  scheduler?: boolean;
  /**
   * 0 (default): the emulator pushes the work subscription itself, exactly as declared — two
   * requests at a time. N > 0: the push relay (pushRelay.ts) delivers it, N requests at a time, from
   * a pull subscription with the same settings (for throughput runs).
   */
  pushConcurrency?: number;
  /** Delivery settings (DESIGN.md §2.5); unset ones keep the topology's defaults. */
  delivery?: Partial<DeliverySettings>;
  /**
   * One pipeline's own delivery settings over `delivery` (its subscription and its workers), as
   * `tally:pipelines` sets them in the stack; handed to the handlers as TALLY_PIPELINE_DELIVERY.
   */
  pipelineDelivery?: Record<string, Partial<DeliverySettings>>;
  /** Reconciler staleness thresholds (seconds). */
  staleSubmissionSeconds?: number;
  stalePendingSeconds?: number;
  staleFinalizingSeconds?: number;
  /** Data folder: emulator data and the DuckDB results file (default `.tally`). */
  dataDir?: string;
  /** Keep the data folder between runs (default: wiped on start). */
  persist?: boolean;
  projectId?: string;
  prefix?: string;
  /** Extra environment for every handler process (e.g. TALLY_FAULT_* for fault injection). */
  env?: Record<string, string>;
  /** Extra environment per component, applied after `env`. */
  componentEnv?: Partial<Record<"coordinator" | "worker" | "reconciler", Record<string, string>>>;
  /** Show every log line, per-item events and DEBUG included. */
  verbose?: boolean;
  /** Show no handler logs at all (supervisor warnings still show). */
  quiet?: boolean;
  /** Where the stack's own lines and the prefixed logs go (default: stdout). */
  output?: (line: string) => void;
  /** Every raw log line of every process, before filtering (for the chaos suite). */
  onLog?: (source: string, line: string) => void;
}

export class UsageError extends Error {}

export const startUsage = `Usage: npm start -- [options]

Runs the Tally local stack in the foreground: the Pub/Sub and Firestore emulators, the topology as
the Pulumi stack declares it, the coordinator, N workers per pipeline (each pipeline's behind its
own local front door), the reconciler and a scheduler loop calling it. Ctrl-C stops everything.

Options:
  --port N                    coordinator port (default 8080; 0 = any free port)
  --workers N                 worker processes per pipeline (default 2)
  --tick SECONDS              scheduler tick: POST /reconcile every SECONDS (default 5)
  --lease-seconds N           item lease (default ${defaultDelivery.leaseSeconds})
  --ack-deadline N            push ack deadline = request timeout (default ${defaultDelivery.ackDeadlineSeconds})
  --min-backoff N             retry policy minimum backoff (default ${defaultDelivery.minimumBackoffSeconds})
  --max-backoff N             retry policy maximum backoff (default ${defaultDelivery.maximumBackoffSeconds})
  --max-delivery-attempts N   Pub/Sub dead-letters after N deliveries (default ${defaultDelivery.maxDeliveryAttempts})
  --max-item-attempts N       ledger attempts before attempts_exhausted (default ${defaultDelivery.maxItemAttempts})
  --worker-timeout N          item timeout in the worker (default min(${defaultDelivery.workerTimeoutSeconds}, ack deadline))
  --push-concurrency N        deliver work through the push relay, N requests at a time (default 0:
                              the emulator's own push, exactly as declared, 2 at a time)
  --stale-pending N           reconciler republishes pending items untouched for N s (default 900)
  --data DIR                  data folder (default .tally); wiped on start unless --persist
  --persist                   keep the data folder (Firestore data is exported on stop, imported on start)
  --project ID                emulator project id (default tally-local)
  --http-pipelines FILE       HTTP pipelines: a JSON file holding an array of declarations
                              (docs/pipelines.md), given to every handler as TALLY_HTTP_PIPELINES
  --env KEY=VALUE             extra environment for every handler process (repeatable)
  --verbose                   every log line, per-item events included
  --quiet                     no handler logs
  --help                      this text`;

const intFlags: Record<string, (o: LocalStackOptions, v: number) => void> = {
  "--port": (o, v) => {
    o.port = v;
  },
  "--workers": (o, v) => {
    o.workers = v;
  },
  "--lease-seconds": (o, v) => setDelivery(o, "leaseSeconds", v),
  "--ack-deadline": (o, v) => setDelivery(o, "ackDeadlineSeconds", v),
  "--min-backoff": (o, v) => setDelivery(o, "minimumBackoffSeconds", v),
  "--max-backoff": (o, v) => setDelivery(o, "maximumBackoffSeconds", v),
  "--max-delivery-attempts": (o, v) => setDelivery(o, "maxDeliveryAttempts", v),
  "--max-item-attempts": (o, v) => setDelivery(o, "maxItemAttempts", v),
  "--worker-timeout": (o, v) => setDelivery(o, "workerTimeoutSeconds", v),
  "--push-concurrency": (o, v) => {
    o.pushConcurrency = v;
  },
  "--stale-pending": (o, v) => {
    o.stalePendingSeconds = v;
  },
};

function setDelivery(o: LocalStackOptions, key: keyof DeliverySettings, v: number) {
  o.delivery = { ...o.delivery, [key]: v };
}

/** Parses `npm start` flags. Throws UsageError naming the flag; returns null for --help. */
export function parseStartArgs(argv: string[]): LocalStackOptions | null {
  const opts: LocalStackOptions = {};
  const env: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const raw = argv[i]!;
    const eq = raw.startsWith("--") ? raw.indexOf("=") : -1;
    const flag = eq > 0 ? raw.slice(0, eq) : raw;
    const inline = eq > 0 ? raw.slice(eq + 1) : undefined;
    const value = (): string => {
      if (inline !== undefined) return inline;
      const next = argv[i + 1];
      if (next === undefined || next.startsWith("--")) throw new UsageError(`${flag} needs a value`);
      i++;
      return next;
    };
    const noValue = () => {
      if (inline !== undefined) throw new UsageError(`${flag} takes no value (got "${inline}")`);
    };
    if (flag === "--help" || flag === "-h") return null;
    if (flag in intFlags) {
      const v = value();
      if (!/^\d+$/.test(v)) throw new UsageError(`${flag} must be a whole number (got "${v}")`);
      intFlags[flag]!(opts, Number(v));
    } else if (flag === "--tick") {
      const v = value();
      const n = Number(v);
      if (!/^\d+(\.\d+)?$/.test(v) || !(n > 0))
        throw new UsageError(`--tick must be a positive number of seconds (got "${v}")`);
      opts.tickSeconds = n;
    } else if (flag === "--data") {
      opts.dataDir = value();
    } else if (flag === "--project") {
      opts.projectId = value();
    } else if (flag === "--env") {
      const v = value();
      const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(v);
      if (!m) throw new UsageError(`--env must be KEY=VALUE (got "${v}")`);
      env[m[1]!] = m[2]!;
    } else if (flag === "--http-pipelines") {
      env[httpPipelinesVariable] = readHttpPipelines(value());
    } else if (flag === "--persist") {
      noValue();
      opts.persist = true;
    } else if (flag === "--verbose") {
      noValue();
      opts.verbose = true;
    } else if (flag === "--quiet") {
      noValue();
      opts.quiet = true;
    } else {
      throw new UsageError(`unknown option ${flag} (see --help)`);
    }
  }
  if (Object.keys(env).length > 0) opts.env = env;
  validateStackOptions(opts);
  return opts;
}

/** Reads and validates an HTTP pipelines file; the declarations as JSON text, or a UsageError naming each bad field. */
function readHttpPipelines(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new UsageError(`--http-pipelines: cannot read ${file}: ${(err as Error).message}`);
  }
  const parsed = parseHttpPipelineDeclarations(text, file, codePipelineNames);
  if (!parsed.ok) throw new UsageError(`--http-pipelines: ${parsed.problems.join("; ")}`);
  return JSON.stringify(parsed.declarations);
}

/** The delivery settings the stack will run with: defaults, then the options, then derived values. */
export function resolveDelivery(opts: LocalStackOptions): DeliverySettings {
  const given = opts.delivery ?? {};
  const merged: DeliverySettings = { ...defaultDelivery, ...given };
  // A shorter ack deadline than the default worker timeout would be refused by the topology; the
  // timeout follows the deadline unless it was set explicitly.
  if (given.workerTimeoutSeconds === undefined)
    merged.workerTimeoutSeconds = Math.min(defaultDelivery.workerTimeoutSeconds, merged.ackDeadlineSeconds);
  // Item attempts keep their headroom under a lowered delivery limit (the topology refuses none).
  if (given.maxItemAttempts === undefined)
    merged.maxItemAttempts = Math.min(defaultDelivery.maxItemAttempts, merged.maxDeliveryAttempts - 1);
  return merged;
}

const flagOf: Record<keyof DeliverySettings, string> = {
  ackDeadlineSeconds: "--ack-deadline",
  maxDeliveryAttempts: "--max-delivery-attempts",
  minimumBackoffSeconds: "--min-backoff",
  maximumBackoffSeconds: "--max-backoff",
  leaseSeconds: "--lease-seconds",
  maxItemAttempts: "--max-item-attempts",
  workerTimeoutSeconds: "--worker-timeout",
};

/** Throws UsageError listing every problem, each naming its flag. */
export function validateStackOptions(opts: LocalStackOptions): void {
  const problems: string[] = [];
  if (opts.port !== undefined && !(Number.isInteger(opts.port) && opts.port >= 0 && opts.port <= 65535))
    problems.push(`--port must be 0..65535 (got ${opts.port})`);
  if (
    opts.workers !== undefined &&
    !(Number.isInteger(opts.workers) && opts.workers >= 1 && opts.workers <= 16)
  )
    problems.push(`--workers must be 1..16 (got ${opts.workers})`);
  if (
    opts.pushConcurrency !== undefined &&
    !(Number.isInteger(opts.pushConcurrency) && opts.pushConcurrency >= 0 && opts.pushConcurrency <= 1000)
  )
    problems.push(`--push-concurrency must be 0..1000 (got ${opts.pushConcurrency})`);
  if (opts.tickSeconds !== undefined && !(opts.tickSeconds > 0 && opts.tickSeconds <= 3600))
    problems.push(`--tick must be in (0, 3600] seconds (got ${opts.tickSeconds})`);
  if (
    opts.stalePendingSeconds !== undefined &&
    !(Number.isInteger(opts.stalePendingSeconds) && opts.stalePendingSeconds >= 1)
  )
    problems.push(`--stale-pending must be a positive whole number (got ${opts.stalePendingSeconds})`);
  if (opts.projectId !== undefined && !/^[a-z][a-z0-9-]{3,29}$/.test(opts.projectId))
    problems.push(`--project must be a project id like tally-local (got "${opts.projectId}")`);
  if (opts.verbose && opts.quiet) problems.push("--verbose and --quiet exclude each other");
  for (const p of validateDelivery(resolveDelivery(opts))) {
    const key = p.split(" ")[0] as keyof DeliverySettings;
    problems.push(flagOf[key] ? `${flagOf[key]}: ${p}` : p);
  }
  if (problems.length > 0) throw new UsageError(problems.join("; "));
}
