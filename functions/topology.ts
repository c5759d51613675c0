// The one source of truth for names and delivery settings. The Pulumi program (infra/) and the
// local stack (local/) both build their resources from `buildTopology`, so what runs locally is
// what is deployed. Nothing here imports Google or Pulumi code.

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

export interface Topology {
  prefix: string;
  workTopic: string;
  deadLetterTopic: string;
  workSubscription: string;
  deadLetterSubscription: string;
  services: { coordinator: string; worker: string; reconciler: string };
  schedulerJob: string;
  resultsTable: string;
  /** Path the dead-letter subscription pushes to on the reconciler. */
  deadLetterPath: string;
  reconcilePath: string;
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

export interface TopologyInput {
  prefix: string;
  delivery?: Partial<DeliverySettings>;
  reconcile?: Partial<ReconcileSettings>;
}

export function buildTopology(input: TopologyInput): Topology {
  const p = input.prefix;
  const delivery = { ...defaultDelivery, ...input.delivery };
  const reconcile = { ...defaultReconcile, ...input.reconcile };
  const problems = validateDelivery(delivery);
  if (problems.length > 0) throw new Error(`invalid delivery settings: ${problems.join("; ")}`);
  return {
    prefix: p,
    workTopic: `${p}-work`,
    deadLetterTopic: `${p}-work-dead-letter`,
    workSubscription: `${p}-work-push`,
    deadLetterSubscription: `${p}-work-dead-letter-push`,
    services: { coordinator: `${p}-coordinator`, worker: `${p}-worker`, reconciler: `${p}-reconciler` },
    schedulerJob: `${p}-reconcile`,
    resultsTable: "item_results",
    deadLetterPath: "/dead-letter",
    reconcilePath: "/reconcile",
    delivery,
    reconcile,
  };
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
