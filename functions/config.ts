// Handler configuration, read once from the environment. The Pulumi program (infra/services.ts)
// and the local stack (local/) set these variables; defaults suit the local stack.
import { z } from "zod";
import { limits } from "./core/limits";
import { type HttpPipelineDeclaration, parseHttpPipelineDeclarations } from "./pipelines/httpPipeline";
import { codePipelineNames, httpPipelinesVariable } from "./pipelines/registry";
import {
  buildTopology,
  type DeliverySettings,
  defaultDelivery,
  pipelineTopology,
  type Topology,
} from "./topology";

/** Per-pipeline delivery settings (issue #17 §1): JSON, pipeline name → the settings that differ. */
export const pipelineDeliveryVariable = "TALLY_PIPELINE_DELIVERY";
/** Set on a worker function: the one pipeline it runs. */
export const workerPipelineVariable = "TALLY_WORKER_PIPELINE";

const deliveryOverride = z.strictObject({
  ackDeadlineSeconds: z.number().int().optional(),
  maxDeliveryAttempts: z.number().int().optional(),
  minimumBackoffSeconds: z.number().int().optional(),
  maximumBackoffSeconds: z.number().int().optional(),
  leaseSeconds: z.number().int().optional(),
  maxItemAttempts: z.number().int().optional(),
  workerTimeoutSeconds: z.number().int().optional(),
}) satisfies z.ZodType<Partial<DeliverySettings>>;
const pipelineDeliverySchema = z.record(z.string(), deliveryOverride);

const intFrom = (def: number) => z.coerce.number().int().positive().default(def);

// Delivery defaults come from the topology's, so a handler with no variables set runs what the
// stack declares.
const envSchema = z.object({
  TALLY_PREFIX: z
    .string()
    .regex(/^[a-z][a-z0-9-]{0,40}$/)
    .default("tally"),
  GOOGLE_CLOUD_PROJECT: z.string().min(1).default("tally-local"),
  TALLY_SINK: z.enum(["duckdb", "bigquery"]).default("duckdb"),
  TALLY_DUCKDB_PATH: z.string().default(".tally/results.duckdb"),
  TALLY_BIGQUERY_DATASET: z.string().default("tally_results"),
  TALLY_BIGQUERY_LOCATION: z.string().default("US"),
  TALLY_LEASE_SECONDS: intFrom(defaultDelivery.leaseSeconds),
  TALLY_ACK_DEADLINE_SECONDS: intFrom(defaultDelivery.ackDeadlineSeconds),
  TALLY_MAX_DELIVERY_ATTEMPTS: intFrom(defaultDelivery.maxDeliveryAttempts),
  TALLY_MAX_ITEM_ATTEMPTS: intFrom(defaultDelivery.maxItemAttempts),
  TALLY_WORKER_TIMEOUT_SECONDS: intFrom(defaultDelivery.workerTimeoutSeconds),
  TALLY_MIN_BACKOFF_SECONDS: z.coerce.number().int().min(0).default(defaultDelivery.minimumBackoffSeconds),
  TALLY_MAX_BACKOFF_SECONDS: z.coerce.number().int().min(0).default(defaultDelivery.maximumBackoffSeconds),
  TALLY_STALE_SUBMISSION_SECONDS: intFrom(120),
  TALLY_STALE_PENDING_SECONDS: intFrom(900),
  TALLY_STALE_FINALIZING_SECONDS: intFrom(120),
  TALLY_RECONCILE_PAGE_SIZE: intFrom(500),
  TALLY_RETENTION_DAYS: intFrom(90),
  /**
   * The worker service's maximum instance count (issue #17 §2): a pipeline's `ratePerSecond` is split
   * evenly across this many instances, so the pipeline stays under its rate however many run. The
   * stack sets it from tally:workerMaxInstances, the local stack to its worker process count.
   */
  TALLY_WORKER_MAX_INSTANCES: z.coerce.number().int().min(1).max(1000).default(1),
  /** Lowers the coordinator's item cap per batch (413 beyond); unset: core/limits.ts. */
  TALLY_MAX_ITEMS_PER_BATCH: z.coerce.number().int().positive().max(limits.maxItemsPerBatch).optional(),
  /** OIDC verification of push / scheduler requests (on in the cloud, off locally: emulators send no token). */
  TALLY_OIDC_AUDIENCE: z.string().optional(),
  TALLY_OIDC_SERVICE_ACCOUNT: z.string().optional(),
  /** HTTP pipelines (issue #17 §4): a JSON array of declarations, functions/pipelines/httpPipeline.ts. */
  TALLY_HTTP_PIPELINES: z.string().optional(),
  /** Per-pipeline delivery settings (the stack sets it from tally:pipelines; infra/services.ts). */
  TALLY_PIPELINE_DELIVERY: z.string().optional(),
  /** The worker's pipeline: a worker serves one pipeline's subscription (issue #17 §1). */
  TALLY_WORKER_PIPELINE: z.string().optional(),
});

export type TallyEnv = z.infer<typeof envSchema>;

export interface TallyConfig {
  env: TallyEnv;
  projectId: string;
  topology: Topology;
  /** The HTTP pipelines declared in TALLY_HTTP_PIPELINES (validated; the registry builds them). */
  httpPipelines: HttpPipelineDeclaration[];
  /** A worker's one pipeline (TALLY_WORKER_PIPELINE); undefined: a worker that takes any pipeline (tests). */
  workerPipeline?: string;
}

export function loadConfig(source: NodeJS.ProcessEnv = process.env): TallyConfig {
  const parsed = envSchema.safeParse(source);
  const problems = parsed.success ? [] : parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
  // Validated here so a handler with a bad declaration fails when it is built, naming each field.
  const http = parseHttpPipelineDeclarations(
    source[httpPipelinesVariable],
    httpPipelinesVariable,
    codePipelineNames,
  );
  if (!http.ok) problems.push(...http.problems);
  const perPipeline = parsePipelineDelivery(source[pipelineDeliveryVariable], problems);
  if (problems.length > 0 || !parsed.success)
    throw new Error(`invalid Tally configuration: ${problems.join("; ")}`);
  const env = parsed.data;
  const declarations = http.ok ? http.declarations : [];
  const names = [...codePipelineNames, ...declarations.map((d) => d.name)];
  for (const name of Object.keys(perPipeline))
    if (!names.includes(name))
      problems.push(`${pipelineDeliveryVariable}.${name}: no such pipeline (known: ${names.join(", ")})`);
  if (env.TALLY_WORKER_PIPELINE !== undefined && !names.includes(env.TALLY_WORKER_PIPELINE))
    problems.push(
      `${workerPipelineVariable}: no such pipeline ${JSON.stringify(env.TALLY_WORKER_PIPELINE)} (known: ${names.join(", ")})`,
    );
  if (problems.length > 0) throw new Error(`invalid Tally configuration: ${problems.join("; ")}`);
  const topology = buildTopology({
    pipelines: names.map((name) => ({ name, delivery: perPipeline[name] })),
    prefix: env.TALLY_PREFIX,
    delivery: {
      ackDeadlineSeconds: env.TALLY_ACK_DEADLINE_SECONDS,
      maxDeliveryAttempts: env.TALLY_MAX_DELIVERY_ATTEMPTS,
      minimumBackoffSeconds: env.TALLY_MIN_BACKOFF_SECONDS,
      maximumBackoffSeconds: env.TALLY_MAX_BACKOFF_SECONDS,
      leaseSeconds: env.TALLY_LEASE_SECONDS,
      maxItemAttempts: env.TALLY_MAX_ITEM_ATTEMPTS,
      workerTimeoutSeconds: env.TALLY_WORKER_TIMEOUT_SECONDS,
    },
    reconcile: {
      pageSize: env.TALLY_RECONCILE_PAGE_SIZE,
      staleSubmissionSeconds: env.TALLY_STALE_SUBMISSION_SECONDS,
      stalePendingSeconds: env.TALLY_STALE_PENDING_SECONDS,
      staleFinalizingSeconds: env.TALLY_STALE_FINALIZING_SECONDS,
    },
  });
  return {
    env,
    projectId: env.GOOGLE_CLOUD_PROJECT,
    topology,
    httpPipelines: declarations,
    workerPipeline: env.TALLY_WORKER_PIPELINE,
  };
}

function parsePipelineDelivery(
  raw: string | undefined,
  problems: string[],
): Record<string, Partial<DeliverySettings>> {
  if (raw === undefined || raw.trim() === "") return {};
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (err) {
    problems.push(`${pipelineDeliveryVariable}: not valid JSON (${(err as Error).message})`);
    return {};
  }
  const parsed = pipelineDeliverySchema.safeParse(value);
  if (!parsed.success) {
    problems.push(
      ...parsed.error.issues.map(
        (i) => `${[pipelineDeliveryVariable, ...i.path.map(String)].join(".")}: ${i.message}`,
      ),
    );
    return {};
  }
  return parsed.data;
}

/**
 * The configuration a worker runs with: a worker deployed for one pipeline (TALLY_WORKER_PIPELINE)
 * applies that pipeline's delivery settings — its ack deadline, request timeout, attempts — where
 * the handler reads the topology's.
 */
export function workerConfig(config: TallyConfig): TallyConfig {
  if (config.workerPipeline === undefined) return config;
  const own = pipelineTopology(config.topology, config.workerPipeline);
  return { ...config, topology: { ...config.topology, delivery: own.delivery } };
}
