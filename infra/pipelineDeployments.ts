// How each pipeline runs in the cloud (issue #17 §1): `tally:pipelines`, a map keyed by pipeline name
// (code pipelines from functions/pipelines/registry.ts and the HTTP pipelines of tally:httpPipelines),
// each entry holding that pipeline's worker sizing, delivery settings, environment and secrets.
// Anything an entry leaves out — and every pipeline without an entry — takes the stack-wide worker
// keys (tally:workerMemory, tally:workerConcurrency, …, tally:ackDeadlineSeconds, …): today's
// behaviour. Problems are returned, each naming its key (tally:pipelines.<name>.<field>), so
// config.ts reports them together with every other problem.
//
// A JSON text, like tally:httpPipelines (Pulumi's project schema has no object type for it):
//   pulumi config set tally:pipelines "$(cat pipelines.json)"
//   {"text-stats": {"cpu": 4, "memory": "8Gi", "concurrency": 1, "maxInstances": 5,
//                   "secrets": {"API_KEY": "text-stats-api-key"}}}
import { z } from "zod";
import { type DeliverySettings, validateDelivery } from "../functions/topology";

export interface SecretBinding {
  /** The environment variable the worker reads it from. */
  variable: string;
  /** Secret Manager secret id, in the stack's project. */
  secret: string;
  /** "latest" or a version number. */
  version: string;
}

export interface WorkerSizing {
  cpu: string;
  memory: string;
  concurrency: number;
  minInstances: number;
  maxInstances: number;
}

export interface PipelineDeployment {
  name: string;
  kind: "code" | "http";
  sizing: WorkerSizing;
  /** The delivery settings this pipeline sets itself (the topology merges them over the defaults). */
  delivery: Partial<DeliverySettings>;
  /** Plain environment variables for this pipeline's worker. */
  environment: Record<string, string>;
  /** Secret Manager secrets mounted as environment variables of this pipeline's worker only. */
  secrets: SecretBinding[];
}

/**
 * Cloud Run's CPU and memory rules (https://cloud.google.com/run/docs/configuring/services/cpu and
 * …/configuring/services/memory-limits; Cloud Run functions gen2 are Cloud Run services):
 * - CPU is a fraction from 0.08 to 1, or a whole 1, 2, 4, 6 or 8;
 * - below 1 CPU the instance takes one request at a time (concurrency 1), needs at least 0.5 CPU for
 *   more than 512 MiB and a whole CPU for more than 1 GiB;
 * - each CPU count allows up to: 1 → 4 GiB, 2 → 8 GiB, 4 → 16 GiB, 6 → 24 GiB, 8 → 32 GiB;
 * - and needs at least: 4 → 2 GiB, 6 → 4 GiB, 8 → 4 GiB;
 * - memory is 128 MiB at least.
 */
const memoryPerCpu: Record<string, { minMiB: number; maxMiB: number }> = {
  "1": { minMiB: 128, maxMiB: 4 * 1024 },
  "2": { minMiB: 128, maxMiB: 8 * 1024 },
  "4": { minMiB: 2 * 1024, maxMiB: 16 * 1024 },
  "6": { minMiB: 4 * 1024, maxMiB: 24 * 1024 },
  "8": { minMiB: 4 * 1024, maxMiB: 32 * 1024 },
};

/** MiB in "512Mi" / "2Gi"; undefined for anything else. */
export function memoryMiB(memory: string): number | undefined {
  const m = /^(\d+)(Mi|Gi)$/.exec(memory);
  if (!m) return undefined;
  return Number(m[1]) * (m[2] === "Gi" ? 1024 : 1);
}

/** Problems of a CPU / memory / concurrency combination, as Cloud Run would refuse it. */
export function sizingProblems(s: WorkerSizing): { field: keyof WorkerSizing; message: string }[] {
  const out: { field: keyof WorkerSizing; message: string }[] = [];
  const mib = memoryMiB(s.memory);
  if (mib === undefined) {
    out.push({
      field: "memory",
      message: `must be a memory size such as "512Mi" or "4Gi" (got ${JSON.stringify(s.memory)})`,
    });
    return out;
  }
  if (mib < 128) out.push({ field: "memory", message: `must be at least 128Mi (got ${s.memory})` });
  const whole = memoryPerCpu[s.cpu];
  if (whole) {
    if (mib > whole.maxMiB)
      out.push({
        field: "memory",
        message: `${s.memory} is more than ${s.cpu} CPU allows (at most ${whole.maxMiB / 1024}Gi); raise cpu`,
      });
    if (mib < whole.minMiB)
      out.push({
        field: "memory",
        message: `${s.cpu} CPUs need at least ${whole.minMiB / 1024}Gi of memory (got ${s.memory})`,
      });
    return out;
  }
  const fraction = /^0?\.\d{1,3}$/.test(s.cpu) ? Number(s.cpu) : Number.NaN;
  if (!(fraction >= 0.08 && fraction < 1)) {
    out.push({
      field: "cpu",
      message: `must be 1, 2, 4, 6 or 8, or a fraction from 0.08 to 1 such as "0.5" (got ${JSON.stringify(s.cpu)})`,
    });
    return out;
  }
  if (s.concurrency !== 1)
    out.push({
      field: "concurrency",
      message: `must be 1 with less than 1 CPU (cpu ${s.cpu}, got ${s.concurrency})`,
    });
  if (mib > 1024)
    out.push({ field: "memory", message: `more than 1Gi needs a whole CPU (cpu ${s.cpu}, got ${s.memory})` });
  else if (mib > 512 && fraction < 0.5)
    out.push({
      field: "memory",
      message: `more than 512Mi needs at least 0.5 CPU (cpu ${s.cpu}, got ${s.memory})`,
    });
  return out;
}

/** Secret Manager secret ids: 1..255 letters, digits, - and _ (SecretManagerService.CreateSecret). */
export const secretIdPattern = /^[A-Za-z0-9_-]{1,255}$/;
const envNamePattern = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Set by the stack or by Cloud Run itself: a pipeline may not declare them. */
const reservedVariables = [
  "PORT",
  "K_SERVICE",
  "K_REVISION",
  "K_CONFIGURATION",
  "NODE_ENV",
  "GOOGLE_CLOUD_PROJECT",
  "FUNCTION_TARGET",
  "FUNCTION_SIGNATURE_TYPE",
];
/** Why `name` cannot be a variable a pipeline declares; null when it can. */
function variableProblem(name: string): string | null {
  if (!envNamePattern.test(name)) return "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)";
  if (name.startsWith("TALLY_") || name.startsWith("X_GOOGLE_") || reservedVariables.includes(name))
    return "is set by the stack or by Cloud Run (TALLY_*, X_GOOGLE_*, PORT, K_*, …) and cannot be declared";
  return null;
}

const secretReference = z.union([
  z.string().regex(secretIdPattern, "must be a Secret Manager secret id (1..255 letters, digits, - and _)"),
  z.strictObject({
    secret: z
      .string()
      .regex(secretIdPattern, "must be a Secret Manager secret id (1..255 letters, digits, - and _)"),
    version: z
      .union([z.string(), z.number()])
      .transform(String)
      .pipe(z.string().regex(/^(latest|[1-9]\d*)$/, 'must be "latest" or a version number'))
      .optional(),
  }),
]);

const int = (min: number, max: number) =>
  z
    .number()
    .int(`must be an integer in ${min}..${max}`)
    .min(min, `must be in ${min}..${max}`)
    .max(max, `must be in ${min}..${max}`);

const entry = z.strictObject({
  cpu: z.union([z.string(), z.number()]).transform(String).optional(),
  memory: z.string().optional(),
  concurrency: int(1, 1000).optional(),
  minInstances: int(0, 1000).optional(),
  maxInstances: int(1, 1000).optional(),
  /** The worker's request timeout: Cloud Run functions allow 3,600 s for HTTP functions. */
  timeoutSeconds: int(1, 3600).optional(),
  /** Pub/Sub allows 10..600 s; for push it is the request's deadline. */
  ackDeadlineSeconds: int(10, 600).optional(),
  maxItemAttempts: int(1, 100).optional(),
  maxDeliveryAttempts: int(5, 100).optional(),
  leaseSeconds: int(10, 3600).optional(),
  minimumBackoffSeconds: int(0, 600).optional(),
  maximumBackoffSeconds: int(0, 600).optional(),
  // Variable names are checked by variableProblem (zod reports a bad record key without its message).
  environment: z.record(z.string(), z.string().max(32_768)).optional(),
  secrets: z.record(z.string(), secretReference).optional(),
});

export interface PipelineDeclarations {
  code: readonly string[];
  /** HTTP declarations: name and the variables its secretHeaders read. */
  http: { name: string; index: number; secretHeaderVariables: Record<string, string> }[];
}

export function parsePipelineDeployments(
  raw: string | undefined,
  key: string,
  known: PipelineDeclarations,
  defaults: { sizing: WorkerSizing; delivery: DeliverySettings },
  httpKey: string,
): { deployments: PipelineDeployment[]; problems: string[] } {
  const problems: string[] = [];
  let value: unknown = {};
  if (raw !== undefined && raw.trim() !== "") {
    try {
      value = JSON.parse(raw);
    } catch (err) {
      return { deployments: [], problems: [`${key}: not valid JSON (${(err as Error).message})`] };
    }
  }
  if (typeof value !== "object" || value === null || Array.isArray(value))
    return { deployments: [], problems: [`${key}: must be a JSON object keyed by pipeline name`] };
  const names = [...known.code, ...known.http.map((h) => h.name)];
  const entries = new Map<string, z.infer<typeof entry>>();
  const refused = new Set<string>();
  // Each entry on its own, so one bad entry does not hide the others' problems.
  for (const [name, raw] of Object.entries(value)) {
    if (!names.includes(name)) {
      problems.push(`${key}.${name}: no such pipeline (known: ${names.join(", ")})`);
      continue;
    }
    const parsed = entry.safeParse(raw);
    if (!parsed.success) {
      problems.push(
        ...parsed.error.issues.map((i) => `${[key, name, ...i.path.map(String)].join(".")}: ${i.message}`),
      );
      refused.add(name);
    } else entries.set(name, parsed.data);
    for (const field of ["environment", "secrets"] as const) {
      const record = (raw as Record<string, unknown> | null)?.[field];
      if (record && typeof record === "object")
        for (const variable of Object.keys(record)) {
          const why = variableProblem(variable);
          if (why) problems.push(`${key}.${name}.${field}.${variable}: ${why}`);
        }
    }
  }

  const deployments: PipelineDeployment[] = [];
  for (const name of names) {
    if (refused.has(name)) continue;
    const e = entries.get(name) ?? {};
    const at = `${key}.${name}`;
    const sizing: WorkerSizing = {
      cpu: e.cpu ?? defaults.sizing.cpu,
      memory: e.memory ?? defaults.sizing.memory,
      concurrency: e.concurrency ?? defaults.sizing.concurrency,
      minInstances: e.minInstances ?? defaults.sizing.minInstances,
      maxInstances: e.maxInstances ?? defaults.sizing.maxInstances,
    };
    for (const p of sizingProblems(sizing)) problems.push(`${at}.${p.field}: ${p.message}`);
    if (sizing.minInstances > sizing.maxInstances)
      problems.push(
        `${at}.minInstances (${sizing.minInstances}) must not exceed maxInstances (${sizing.maxInstances})`,
      );

    const delivery: Partial<DeliverySettings> = {};
    if (e.ackDeadlineSeconds !== undefined) delivery.ackDeadlineSeconds = e.ackDeadlineSeconds;
    if (e.timeoutSeconds !== undefined) delivery.workerTimeoutSeconds = e.timeoutSeconds;
    if (e.maxItemAttempts !== undefined) delivery.maxItemAttempts = e.maxItemAttempts;
    if (e.maxDeliveryAttempts !== undefined) delivery.maxDeliveryAttempts = e.maxDeliveryAttempts;
    if (e.leaseSeconds !== undefined) delivery.leaseSeconds = e.leaseSeconds;
    if (e.minimumBackoffSeconds !== undefined) delivery.minimumBackoffSeconds = e.minimumBackoffSeconds;
    if (e.maximumBackoffSeconds !== undefined) delivery.maximumBackoffSeconds = e.maximumBackoffSeconds;
    // The same cross-field rules as the stack-wide keys (timeout inside the ack deadline, attempts
    // headroom), named by this entry's fields.
    if (Object.keys(delivery).length > 0)
      for (const p of validateDelivery({ ...defaults.delivery, ...delivery }))
        problems.push(`${at}: ${p.replace(/\bworkerTimeoutSeconds\b/g, "timeoutSeconds")}`);

    const environment = e.environment ?? {};
    const secrets: SecretBinding[] = Object.entries(e.secrets ?? {}).map(([variable, ref]) =>
      typeof ref === "string"
        ? { variable, secret: ref, version: "latest" }
        : { variable, secret: ref.secret, version: ref.version ?? "latest" },
    );
    for (const s of secrets)
      if (s.variable in environment)
        problems.push(`${at}.secrets.${s.variable}: is also declared in ${at}.environment`);

    const http = known.http.find((h) => h.name === name);
    if (http)
      for (const [header, variable] of Object.entries(http.secretHeaderVariables))
        if (!secrets.some((s) => s.variable === variable) && !(variable in environment))
          problems.push(
            `${httpKey}[${http.index}].secretHeaders.${header}: reads ${variable}, which pipeline ${name}'s worker does not have: declare it in ${at}.secrets (a Secret Manager secret)`,
          );
    deployments.push({ name, kind: http ? "http" : "code", sizing, delivery, environment, secrets });
  }
  return { deployments, problems };
}
