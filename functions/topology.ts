// The one source of truth for names and delivery settings. The Pulumi program (infra/) and the
// local stack (local/) both build their resources from `buildTopology`, so what runs locally is
// what is deployed. Nothing here imports Google or Pulumi code.
//
// Each pipeline is its own deployable unit (issue #17 §1): its own work topic, push subscription and
// worker service (and, in the cloud, service account), with its own delivery settings. The
// dead-letter topic, its subscription and the parking topic are shared: every pipeline's
// subscription dead-letters to the same topic, and the reconciler records dead letters of any
// pipeline the same way.
import { createHash } from "node:crypto";

export interface DeliverySettings {
  /** Pub/Sub ack deadline for the push subscription; for push it is also the request timeout. */
  ackDeadlineSeconds: number;
  /** Pub/Sub dead-letters a message after this many delivery attempts (5..100). */
  maxDeliveryAttempts: number;
  /** Retry policy backoff bounds (0..600 s). */
  minimumBackoffSeconds: number;
  maximumBackoffSeconds: number;
  /** How long a delivery owns an item before the reconciler may redrive it. Heartbeats extend it. */
  leaseSeconds: number;
  /** Ledger attempts before an item fails `attempts_exhausted` (< maxDeliveryAttempts: see the headroom note). */
  maxItemAttempts: number;
  /** Handler request timeout on Cloud Run; must fit inside the ack deadline. */
  workerTimeoutSeconds: number;
}

export interface ReconcileSettings {
  /** Cloud Scheduler cron (finest: every minute). */
  schedule: string;
  timeZone: string;
  /** Work bounds for one tick (F4: bounded, paged work). */
  pageSize: number;
  /** A `submitting` batch whose cursor has not moved for this long is resumed or failed. */
  staleSubmissionSeconds: number;
  /** A pending item untouched for this long gets its doorbell republished. */
  stalePendingSeconds: number;
  /** A `finalizing` batch older than this is finalized again (the first finalizer died). */
  staleFinalizingSeconds: number;
}

/** One pipeline's share of the topology: where its doorbells go and who serves them. */
export interface PipelineTopology {
  pipeline: string;
  /** The coordinator and the reconciler publish this pipeline's doorbells here. */
  workTopic: string;
  /** Push subscription of `workTopic` to this pipeline's worker. */
  workSubscription: string;
  /** The worker function (Cloud Run service) that runs only this pipeline's items. */
  workerService: string;
  /** Service-account id the worker runs as (6..30 characters). */
  workerAccountId: string;
  /** The topology's delivery settings with this pipeline's own values over them. */
  delivery: DeliverySettings;
}

export interface Topology {
  prefix: string;
  deadLetterTopic: string;
  deadLetterSubscription: string;
  /** Where dead letters the reconciler itself could not take end up (a pull subscription holds them). */
  parkedTopic: string;
  parkedSubscription: string;
  services: { coordinator: string; reconciler: string };
  /** One entry per pipeline, in the order they were given. */
  pipelines: PipelineTopology[];
  schedulerJob: string;
  resultsTable: string;
  /** Path the dead-letter subscription pushes to on the reconciler. */
  deadLetterPath: string;
  reconcilePath: string;
  /** Defaults of every pipeline's delivery; also the dead-letter subscription's settings. */
  delivery: DeliverySettings;
  reconcile: ReconcileSettings;
}

export const defaultDelivery: DeliverySettings = {
  ackDeadlineSeconds: 600,
  // Headroom over maxItemAttempts: deliveries that end before the lease (429 at the instance limit,
  // a cold start's 5xx) or in a shutdown release use a Pub/Sub delivery but no ledger attempt, and
  // must not dead-letter an item the ledger would still retry (issue #15 item 10).
  maxDeliveryAttempts: 10,
  minimumBackoffSeconds: 10,
  maximumBackoffSeconds: 300,
  leaseSeconds: 120,
  maxItemAttempts: 5,
  workerTimeoutSeconds: 540,
};

export const defaultReconcile: ReconcileSettings = {
  schedule: "* * * * *",
  timeZone: "Etc/UTC",
  pageSize: 500,
  staleSubmissionSeconds: 120,
  stalePendingSeconds: 900,
  staleFinalizingSeconds: 120,
};

export interface PipelineInput {
  name: string;
  /** This pipeline's own delivery settings; unset ones are the topology's. */
  delivery?: Partial<DeliverySettings>;
}

export interface TopologyInput {
  prefix: string;
  delivery?: Partial<DeliverySettings>;
  reconcile?: Partial<ReconcileSettings>;
  /** The pipelines to route: every code pipeline and every declared HTTP pipeline. */
  pipelines: PipelineInput[];
}

/**
 * Name limits of the resources named here, as the platform enforces them:
 * - Pub/Sub topic and subscription ids: 3..255 characters, a letter first, then letters, digits and
 *   `-_.~+%`, not starting with "goog" (https://cloud.google.com/pubsub/docs/pubsub-basics#resource_names).
 * - Cloud Run service (= Cloud Run functions gen2 function) names: a letter first, lowercase letters,
 *   digits and -, not ending with -, at most 49 characters (the limit functions/pipelines/httpPipeline.ts
 *   checks as well); the deterministic URL's first DNS label `<service>-<project number>` must fit
 *   63 characters, which 49 + 1 + a 12-digit project number does.
 * - Service-account ids: 6..30 characters matching [a-z]([-a-z0-9]*[a-z0-9]) (IAM's
 *   projects.serviceAccounts.create; the Google provider's google_service_account `account_id`).
 */
export const nameLimits = { topic: 255, subscription: 255, service: 49, accountId: 30 } as const;

/**
 * `base` when it fits `max` characters; otherwise its beginning and 8 hex characters of its SHA-256,
 * so two long pipeline names that share a beginning still get different, stable names. The hash
 * comes from the full name, so renaming nothing never moves a resource.
 */
export function fitName(base: string, max: number): string {
  if (base.length <= max) return base;
  const hash = createHash("sha256").update(base).digest("hex").slice(0, 8);
  const head = base.slice(0, Math.max(0, max - hash.length - 1)).replace(/-+$/, "");
  if (head.length === 0 || !/^[a-z]/.test(head))
    throw new Error(`cannot shorten ${JSON.stringify(base)} to ${max} characters: shorten the prefix`);
  return `${head}-${hash}`;
}

/** Names and settings of one pipeline (throws, naming the pipeline, when they cannot be built). */
export function buildPipelineTopology(
  prefix: string,
  pipeline: string,
  delivery: DeliverySettings,
): PipelineTopology {
  if (!/^[a-z][a-z0-9-]{0,62}$/.test(pipeline))
    throw new Error(
      `pipeline name ${JSON.stringify(pipeline)} must match [a-z][a-z0-9-]* (at most 63 characters)`,
    );
  const workTopic = `${prefix}-work-${pipeline}`;
  const workSubscription = `${workTopic}-push`;
  // Topic and subscription ids allow 255 characters: a ≤41-character prefix (functions/config.ts) and
  // a ≤63-character pipeline name always fit, so these are never shortened (and always readable).
  if (workSubscription.length > nameLimits.subscription)
    throw new Error(
      `pipeline ${pipeline}: subscription name ${workSubscription} exceeds ${nameLimits.subscription} characters`,
    );
  return {
    pipeline,
    workTopic,
    workSubscription,
    workerService: fitName(`${prefix}-worker-${pipeline}`, nameLimits.service),
    workerAccountId: fitName(`${prefix}-w-${pipeline}`, nameLimits.accountId),
    delivery,
  };
}

export function buildTopology(input: TopologyInput): Topology {
  const p = input.prefix;
  const delivery = { ...defaultDelivery, ...input.delivery };
  const reconcile = { ...defaultReconcile, ...input.reconcile };
  const problems = validateDelivery(delivery);
  const pipelines: PipelineTopology[] = [];
  const seen = new Set<string>();
  for (const pi of input.pipelines) {
    if (seen.has(pi.name)) {
      problems.push(`pipeline ${pi.name} is listed twice`);
      continue;
    }
    seen.add(pi.name);
    const own = { ...delivery, ...pi.delivery };
    const ownProblems = validateDelivery(own);
    if (ownProblems.length > 0) {
      problems.push(...ownProblems.map((m) => `pipeline ${pi.name}: ${m}`));
      continue;
    }
    try {
      pipelines.push(buildPipelineTopology(p, pi.name, own));
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  const deadLetterTopic = `${p}-work-dead-letter`;
  const topology: Topology = {
    prefix: p,
    deadLetterTopic,
    deadLetterSubscription: `${deadLetterTopic}-push`,
    parkedTopic: `${deadLetterTopic}-parked`,
    parkedSubscription: `${deadLetterTopic}-parked-hold`,
    services: { coordinator: `${p}-coordinator`, reconciler: `${p}-reconciler` },
    pipelines,
    schedulerJob: `${p}-reconcile`,
    resultsTable: "item_results",
    deadLetterPath: "/dead-letter",
    reconcilePath: "/reconcile",
    delivery,
    reconcile,
  };
  problems.push(...nameCollisions(topology));
  if (problems.length > 0) throw new Error(`invalid topology: ${problems.join("; ")}`);
  return topology;
}

/**
 * Two resources of one kind with one name would be one resource: a pipeline named "dead-letter"
 * would publish its work onto the dead-letter topic. Refused, naming the pipeline.
 */
function nameCollisions(t: Topology): string[] {
  const problems: string[] = [];
  const kinds: [string, [string, string][]][] = [
    [
      "topic",
      [
        ["the dead-letter topic", t.deadLetterTopic],
        ["the parking topic", t.parkedTopic],
        ...t.pipelines.map((x): [string, string] => [`pipeline ${x.pipeline}'s work topic`, x.workTopic]),
      ],
    ],
    [
      "subscription",
      [
        ["the dead-letter subscription", t.deadLetterSubscription],
        ["the parking subscription", t.parkedSubscription],
        ...t.pipelines.map((x): [string, string] => [
          `pipeline ${x.pipeline}'s subscription`,
          x.workSubscription,
        ]),
      ],
    ],
    [
      "service",
      [
        ["the coordinator", t.services.coordinator],
        ["the reconciler", t.services.reconciler],
        ...t.pipelines.map((x): [string, string] => [`pipeline ${x.pipeline}'s worker`, x.workerService]),
      ],
    ],
    [
      "service account",
      t.pipelines.map((x): [string, string] => [`pipeline ${x.pipeline}'s worker`, x.workerAccountId]),
    ],
  ];
  for (const [kind, named] of kinds) {
    const owner = new Map<string, string>();
    for (const [who, name] of named) {
      const first = owner.get(name);
      if (first)
        problems.push(`${who} and ${first} would share the ${kind} name ${name}: rename the pipeline`);
      else owner.set(name, who);
    }
  }
  return problems;
}

/** The named pipeline's share of the topology; throws for a pipeline the topology does not route. */
export function pipelineTopology(t: Topology, pipeline: string): PipelineTopology {
  const found = t.pipelines.find((x) => x.pipeline === pipeline);
  if (!found)
    throw new Error(
      `pipeline ${JSON.stringify(pipeline)} has no work topic (known: ${t.pipelines.map((x) => x.pipeline).join(", ") || "none"})`,
    );
  return found;
}

/** Range checks shared by the Pulumi config validation and the local stack's flags. */
export function validateDelivery(d: DeliverySettings): string[] {
  const problems: string[] = [];
  const range = (key: keyof DeliverySettings, min: number, max: number) => {
    const v = d[key];
    if (!Number.isInteger(v) || v < min || v > max)
      problems.push(`${key} must be an integer in ${min}..${max} (got ${v})`);
  };
  range("ackDeadlineSeconds", 10, 600);
  range("maxDeliveryAttempts", 5, 100);
  range("minimumBackoffSeconds", 0, 600);
  range("maximumBackoffSeconds", 0, 600);
  range("leaseSeconds", 1, 3600);
  range("maxItemAttempts", 1, 100);
  range("workerTimeoutSeconds", 1, 3600);
  if (d.minimumBackoffSeconds > d.maximumBackoffSeconds)
    problems.push("minimumBackoffSeconds must not exceed maximumBackoffSeconds");
  if (d.workerTimeoutSeconds > d.ackDeadlineSeconds)
    problems.push(
      `workerTimeoutSeconds (${d.workerTimeoutSeconds}) must fit inside ackDeadlineSeconds (${d.ackDeadlineSeconds}): for push the ack deadline is the request timeout`,
    );
  if (d.maxItemAttempts >= d.maxDeliveryAttempts)
    problems.push(
      `maxItemAttempts (${d.maxItemAttempts}) must be less than maxDeliveryAttempts (${d.maxDeliveryAttempts}): deliveries refused before the lease (instance limit, cold start) or ended by a shutdown use a delivery but no ledger attempt, and with no headroom Pub/Sub dead-letters items the ledger would still retry`,
    );
  return problems;
}
