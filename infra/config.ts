// The stack's configuration: every `tally:` key, typed, with defaults and range checks. All problems
// are collected and reported together, naming the key and the allowed range, and this runs before
// any resource is registered — a bad value fails `pulumi preview` and never half-applies.
// Delivery settings are turned into the shared topology (functions/topology.ts), the same module
// the local stack builds from, so names, ack deadline, retry and dead-letter settings, lease and
// schedule mean the same thing in both places.
import * as pulumi from "@pulumi/pulumi";
import {
  type HttpPipelineDeclaration,
  parseHttpPipelineDeclarations,
} from "../functions/pipelines/httpPipeline";
import { codePipelineNames } from "../functions/pipelines/registry";
import { buildTopology, type DeliverySettings, type Topology, validateDelivery } from "../functions/topology";
import { cronProblems } from "./cronExpression";
import { type PipelineDeployment, parsePipelineDeployments } from "./pipelineDeployments";

export const configNamespace = "tally";

/** Every key this program reads, with its default as documented in Pulumi.dev.yaml and docs/deploy.md. */
export const configKeys = {
  prefix: "name prefix for every resource (default: tally-<stack>, at most 20 characters)",
  region: "region for functions, scheduler and the source bucket (default: gcp:region, else us-central1)",
  alertEmail: "e-mail address for alert notifications (optional; no channel when unset)",
  reconcileSchedule: 'reconciler cron schedule (default "* * * * *", every minute)',
  timeZone: 'time zone of the schedule (default "Etc/UTC")',
  maxDeliveryAttempts:
    "Pub/Sub deliveries before dead-lettering (5..100, more than maxItemAttempts, default 10)",
  maxItemAttempts:
    "ledger attempts before an item fails attempts_exhausted (1..maxDeliveryAttempts-1, default 5)",
  ackDeadlineSeconds: "work subscription ack deadline = push request timeout (10..600, default 600)",
  minimumBackoffSeconds: "retry policy minimum backoff (0..600, default 10)",
  maximumBackoffSeconds: "retry policy maximum backoff (0..600, default 300)",
  leaseSeconds: "item lease per delivery, extended by heartbeats (10..3600, default 120)",
  workerConcurrency: "concurrent requests per worker instance (1..1000, default 16)",
  workerMaxInstances: "worker instance limit (1..1000, default 20)",
  workerMinInstances: "worker instances kept warm (0..1000, default 0)",
  workerMemory: 'worker memory (e.g. "512Mi", "1Gi"; default "1Gi")',
  workerTimeoutSeconds: "worker request timeout (1..ackDeadlineSeconds, default 540)",
  coordinatorMaxInstances: "coordinator instance limit (1..1000, default 10)",
  coordinatorTimeoutSeconds:
    "coordinator request timeout, bounds one streamed submission (1..3600, default 900)",
  coordinatorInvokers:
    'IAM principals allowed to call the coordinator, e.g. ["user:ana@example.com","group:ops@example.com"] (default none)',
  resultsDataset: "BigQuery dataset for results (default <prefix with _>_results)",
  resultsLocation: 'BigQuery location of the results dataset (default "US")',
  firestoreLocation: 'location of the (default) Firestore database (default "nam5")',
  manageFirestoreDatabase:
    "create the (default) Firestore database; false when it already exists (default true)",
  retentionDays: "days before Firestore TTL deletes finished batches and items (1..3650, default 90)",
  logSinkDataset:
    "BigQuery dataset that receives Tally's logs through a log sink (optional; no sink when unset)",
  oldestUnackedAlertSeconds:
    "alert when the oldest unacked work message is older than this (60..86400, default 1800)",
  worker5xxRatio: "alert when the worker's 5xx share of requests exceeds this over 5 min (0..1, default 0.2)",
  httpPipelines:
    'HTTP pipelines (issue #17): a JSON array of declarations, functions/pipelines/httpPipeline.ts (default "[]", none)',
  pipelines:
    "per-pipeline worker settings (issue #17 §1): a map pipeline name → {cpu, memory, concurrency, minInstances, maxInstances, timeoutSeconds, ackDeadlineSeconds, maxItemAttempts, maxDeliveryAttempts, environment, secrets}, infra/pipelineDeployments.ts (default {}: every pipeline sized by the worker* keys)",
} as const;

export type ConfigKey = keyof typeof configKeys;

export interface HandlerSizing {
  /** Cloud Run CPU ("1", "2", … or a fraction); every handler but a pipeline's worker uses "1". */
  cpu: string;
  timeoutSeconds: number;
  maxInstances: number;
  minInstances: number;
  concurrency: number;
  memory: string;
}

export interface InfraConfig {
  stack: string;
  prefix: string;
  region: string;
  topology: Topology;
  alertEmail?: string;
  coordinatorInvokers: string[];
  resultsDataset: string;
  resultsLocation: string;
  firestoreLocation: string;
  manageFirestoreDatabase: boolean;
  retentionDays: number;
  logSinkDataset?: string;
  coordinator: HandlerSizing;
  /** The stack-wide worker keys: what a pipeline's worker gets where tally:pipelines says nothing. */
  worker: HandlerSizing;
  reconciler: HandlerSizing;
  /** One worker per pipeline, in the topology's order (topology.pipelines holds their delivery). */
  pipelines: PipelineDeployment[];
  alerts: { oldestUnackedSeconds: number; worker5xxRatio: number };
  /** Declared HTTP pipelines, validated; passed to the handlers as TALLY_HTTP_PIPELINES. */
  httpPipelines: HttpPipelineDeclaration[];
}

export class InfraConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid stack configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "InfraConfigError";
  }
}

/** Reads one raw `tally:` value (undefined when unset). */
export type ConfigSource = (key: ConfigKey) => string | undefined;

export interface ConfigContext {
  stack: string;
  /** `gcp:region`, used when `tally:region` is unset. */
  providerRegion?: string;
}

/**
 * The reconciler's request timeout. Its work per tick is bounded and paged (F4), so five minutes is
 * ample; the dead-letter subscription's ack deadline and the scheduler's attempt deadline cover it.
 */
export const reconcilerTimeoutCapSeconds = 300;

const key = (k: ConfigKey) => `${configNamespace}:${k}`;

/** `tally-<stack>` made safe for every resource name it prefixes (service accounts allow 30 chars). */
export function defaultPrefix(stack: string): string {
  const cleaned = `tally-${stack}`
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/-+/g, "-")
    .slice(0, 20)
    .replace(/-+$/, "");
  return cleaned;
}

export function parseInfraConfig(source: ConfigSource, ctx: ConfigContext): InfraConfig {
  const problems: string[] = [];
  const raw = (k: ConfigKey) => {
    const v = source(k);
    return v === undefined || v.trim() === "" ? undefined : v.trim();
  };

  const int = (k: ConfigKey, def: number, min: number, max: number, why = ""): number => {
    const v = raw(k);
    if (v === undefined) return def;
    const n = /^-?\d+$/.test(v) ? Number(v) : Number.NaN;
    if (!Number.isInteger(n) || n < min || n > max) {
      problems.push(`${key(k)} must be an integer in ${min}..${max} (got ${JSON.stringify(v)})${why}`);
      return def;
    }
    return n;
  };
  const fraction = (k: ConfigKey, def: number): number => {
    const v = raw(k);
    if (v === undefined) return def;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0 || n > 1) {
      problems.push(`${key(k)} must be a number in 0..1, above 0 (got ${JSON.stringify(v)})`);
      return def;
    }
    return n;
  };
  const bool = (k: ConfigKey, def: boolean): boolean => {
    const v = raw(k);
    if (v === undefined) return def;
    if (v === "true" || v === "false") return v === "true";
    problems.push(`${key(k)} must be true or false (got ${JSON.stringify(v)})`);
    return def;
  };
  const text = (k: ConfigKey, def: string, pattern: RegExp, what: string): string => {
    const v = raw(k);
    if (v === undefined) return def;
    if (!pattern.test(v)) {
      problems.push(`${key(k)} must be ${what} (got ${JSON.stringify(v)})`);
      return def;
    }
    return v;
  };

  const prefix = text(
    "prefix",
    defaultPrefix(ctx.stack),
    /^[a-z][a-z0-9-]{0,18}[a-z0-9]$/,
    "2..20 characters of a-z, 0-9 and -, starting with a letter and not ending with - (it prefixes service-account ids, which allow 30 characters)",
  );
  if (raw("prefix") === undefined && !/^[a-z][a-z0-9-]{0,18}[a-z0-9]$/.test(prefix))
    problems.push(
      `${key("prefix")} could not be derived from the stack name ${JSON.stringify(ctx.stack)}: set it explicitly`,
    );

  const region = text(
    "region",
    ctx.providerRegion ?? "us-central1",
    /^[a-z]+-[a-z]+\d+$/,
    'a Google Cloud region such as "us-central1"',
  );

  // Delivery settings: the infra ranges (the lease floor is the 10 s minimum ack deadline: a shorter
  // lease would lapse before Pub/Sub could even redeliver), then the shared cross-field checks.
  const deliveryStart = problems.length;
  const delivery: DeliverySettings = {
    ackDeadlineSeconds: int("ackDeadlineSeconds", 600, 10, 600, " (Pub/Sub's limit for push)"),
    maxDeliveryAttempts: int("maxDeliveryAttempts", 10, 5, 100),
    minimumBackoffSeconds: int("minimumBackoffSeconds", 10, 0, 600),
    maximumBackoffSeconds: int("maximumBackoffSeconds", 300, 0, 600),
    leaseSeconds: int(
      "leaseSeconds",
      120,
      10,
      3600,
      " (at least the 10 s ack-deadline floor, or the lease lapses before any redelivery)",
    ),
    maxItemAttempts: int("maxItemAttempts", 5, 1, 100),
    workerTimeoutSeconds: int("workerTimeoutSeconds", 540, 1, 3600),
  };
  if (problems.length === deliveryStart)
    for (const p of validateDelivery(delivery))
      problems.push(
        p.replace(
          /\b(ackDeadlineSeconds|maxDeliveryAttempts|minimumBackoffSeconds|maximumBackoffSeconds|leaseSeconds|maxItemAttempts|workerTimeoutSeconds)\b/g,
          (m) => key(m as ConfigKey),
        ),
      );

  const schedule = raw("reconcileSchedule") ?? "* * * * *";
  const cron = cronProblems(schedule);
  if (cron.length > 0)
    problems.push(
      `${key("reconcileSchedule")} must be a unix-cron expression of 5 fields, finest every minute (got ${JSON.stringify(schedule)}): ${cron.join("; ")}`,
    );
  const timeZone = raw("timeZone") ?? "Etc/UTC";
  if (!isTimeZone(timeZone))
    problems.push(
      `${key("timeZone")} must be an IANA time zone such as "Etc/UTC" or "Europe/Paris" (got ${JSON.stringify(timeZone)})`,
    );

  const alertEmail = raw("alertEmail");
  if (alertEmail !== undefined && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(alertEmail))
    problems.push(`${key("alertEmail")} must be an e-mail address (got ${JSON.stringify(alertEmail)})`);

  const coordinatorInvokers = parsePrincipals(raw("coordinatorInvokers"), problems);

  const datasetPattern = /^[A-Za-z_][A-Za-z0-9_]{0,1023}$/;
  const resultsDataset = text(
    "resultsDataset",
    `${prefix.replace(/-/g, "_")}_results`,
    datasetPattern,
    "a BigQuery dataset id (letters, digits and _)",
  );
  const logSinkDataset = raw("logSinkDataset");
  if (logSinkDataset !== undefined && !datasetPattern.test(logSinkDataset))
    problems.push(
      `${key("logSinkDataset")} must be a BigQuery dataset id (letters, digits and _) (got ${JSON.stringify(logSinkDataset)})`,
    );
  if (logSinkDataset !== undefined && logSinkDataset === resultsDataset)
    problems.push(`${key("logSinkDataset")} must differ from ${key("resultsDataset")} (${resultsDataset})`);

  const memoryPattern = /^\d+(Mi|Gi)$/;
  const worker: HandlerSizing = {
    cpu: "1",
    timeoutSeconds: delivery.workerTimeoutSeconds,
    concurrency: int("workerConcurrency", 16, 1, 1000),
    maxInstances: int("workerMaxInstances", 20, 1, 1000),
    minInstances: int("workerMinInstances", 0, 0, 1000),
    memory: text("workerMemory", "1Gi", memoryPattern, 'a memory size such as "512Mi" or "2Gi"'),
  };
  if (worker.minInstances > worker.maxInstances)
    problems.push(
      `${key("workerMinInstances")} (${worker.minInstances}) must not exceed ${key("workerMaxInstances")} (${worker.maxInstances})`,
    );
  const coordinator: HandlerSizing = {
    cpu: "1",
    timeoutSeconds: int("coordinatorTimeoutSeconds", 900, 1, 3600),
    concurrency: 80,
    maxInstances: int("coordinatorMaxInstances", 10, 1, 1000),
    minInstances: 0,
    memory: "1Gi",
  };
  const reconciler: HandlerSizing = {
    cpu: "1",
    // The dead-letter subscription shares the ack deadline, so the timeout must fit inside it.
    timeoutSeconds: Math.min(reconcilerTimeoutCapSeconds, delivery.ackDeadlineSeconds),
    concurrency: 16,
    maxInstances: 5,
    minInstances: 0,
    memory: "512Mi",
  };

  // The same parser the handlers run on TALLY_HTTP_PIPELINES, so a declaration the handlers would
  // refuse fails `pulumi preview` instead, naming the field (tally:httpPipelines[0].url: …).
  const http = parseHttpPipelineDeclarations(
    source("httpPipelines"),
    key("httpPipelines"),
    codePipelineNames,
  );
  if (!http.ok) problems.push(...http.problems);

  const deployments = parsePipelineDeployments(
    source("pipelines"),
    key("pipelines"),
    {
      code: codePipelineNames,
      http: (http.ok ? http.declarations : []).map((d, index) => ({
        name: d.name,
        index,
        secretHeaderVariables: d.secretHeaders ?? {},
      })),
    },
    { sizing: worker, delivery },
    key("httpPipelines"),
  );
  problems.push(...deployments.problems);

  const config: InfraConfig = {
    stack: ctx.stack,
    prefix,
    region,
    topology: buildTopologySafely(prefix, delivery, schedule, timeZone, deployments.deployments, problems),
    alertEmail,
    coordinatorInvokers,
    resultsDataset,
    resultsLocation: text(
      "resultsLocation",
      "US",
      /^[A-Za-z0-9-]+$/,
      'a BigQuery location such as "US" or "EU"',
    ),
    firestoreLocation: text(
      "firestoreLocation",
      "nam5",
      /^[a-z0-9-]+$/,
      'a Firestore location such as "nam5" or "eur3"',
    ),
    manageFirestoreDatabase: bool("manageFirestoreDatabase", true),
    retentionDays: int("retentionDays", 90, 1, 3650),
    logSinkDataset,
    coordinator,
    worker,
    reconciler,
    alerts: {
      oldestUnackedSeconds: int("oldestUnackedAlertSeconds", 1800, 60, 86400),
      worker5xxRatio: fraction("worker5xxRatio", 0.2),
    },
    httpPipelines: http.ok ? http.declarations : [],
    pipelines: deployments.deployments,
  };
  if (problems.length > 0) throw new InfraConfigError(problems);
  return config;
}

function buildTopologySafely(
  prefix: string,
  delivery: DeliverySettings,
  schedule: string,
  timeZone: string,
  pipelines: PipelineDeployment[],
  problems: string[],
): Topology {
  // With problems already found, build from defaults so the error lists every problem at once.
  if (problems.length > 0) return buildTopology({ prefix: "invalid", pipelines: [] });
  try {
    return buildTopology({
      prefix,
      delivery,
      reconcile: { schedule, timeZone },
      pipelines: pipelines.map((d) => ({ name: d.name, delivery: d.delivery })),
    });
  } catch (err) {
    // Names that collide or cannot be fitted (functions/topology.ts), named by pipeline.
    problems.push(`${key("pipelines")}: ${(err as Error).message}`);
    return buildTopology({ prefix: "invalid", pipelines: [] });
  }
}

function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

const principalPattern = /^(user|group|serviceAccount|domain|principal|principalSet):\S+$/;

/** A JSON array (as `pulumi config set --path` stores it) or a comma-separated list of IAM principals. */
function parsePrincipals(value: string | undefined, problems: string[]): string[] {
  if (value === undefined) return [];
  let list: unknown;
  if (value.startsWith("[")) {
    try {
      list = JSON.parse(value);
    } catch {
      problems.push(`${key("coordinatorInvokers")} must be a JSON array of IAM principals (got ${value})`);
      return [];
    }
  } else list = value.split(",").map((s) => s.trim());
  if (!Array.isArray(list) || list.some((p) => typeof p !== "string")) {
    problems.push(`${key("coordinatorInvokers")} must be a list of IAM principal strings`);
    return [];
  }
  const principals = list as string[];
  for (const p of principals) {
    if (p === "allUsers" || p === "allAuthenticatedUsers")
      problems.push(
        `${key("coordinatorInvokers")} must not contain ${p}: the coordinator is never public; list users, groups or service accounts`,
      );
    else if (!principalPattern.test(p))
      problems.push(
        `${key("coordinatorInvokers")} entry ${JSON.stringify(p)} must look like user:EMAIL, group:EMAIL, serviceAccount:EMAIL or domain:DOMAIN`,
      );
  }
  return [...new Set(principals)];
}

/** Reads the live stack configuration (`tally:` namespace) under the Pulumi runtime. */
export function loadInfraConfig(): InfraConfig {
  const config = new pulumi.Config(configNamespace);
  const gcp = new pulumi.Config("gcp");
  return parseInfraConfig((k) => config.get(k), {
    stack: pulumi.getStack(),
    providerRegion: gcp.get("region"),
  });
}
