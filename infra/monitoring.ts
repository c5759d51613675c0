// Monitoring: log-based metrics over the handlers' structured events, alert policies for the
// failure modes Tally exists to catch (DESIGN §1), an e-mail notification channel when
// tally:alertEmail is set, and one dashboard. Each alert's documentation says what it means and
// where to look (docs/operations.md).
//
// Two languages meet here. Log-based metric filters are Logging queries (logQueries.ts); alert
// conditions and dashboard charts are Monitoring filters (https://cloud.google.com/monitoring/api/v3/filters),
// whose grammar differs: a set of values is `one_of("a", "b")`, never Logging's `("a" OR "b")`
// (refused with 400). infra/policy/monitoringFilter.ts checks every Monitoring filter emitted here.
//
// A new log-based metric is unknown to Cloud Monitoring for up to ~10 minutes, and an alert policy
// naming it fails with 404 meanwhile; each metric therefore has a readiness gate (readiness.ts) and
// every alert policy and the dashboard depend on the gates of the metrics their filters name.
import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import type { Topology } from "../functions/topology";
import type { Apis } from "./apis";
import type { InfraConfig } from "./config";
import { eventFilter, handlerLogFilter, workerServices } from "./logQueries";
import { userMetricPrefix, userMetricsNamed } from "./policy/monitoringFilter";
import { MetricReadiness } from "./readiness";

/** Log events and fields the metrics count (emitted by functions/; see DESIGN §3). */
export const monitoredEvents = {
  deadLettered: "item.dead_lettered",
  batchFinalized: "batch.finalized",
  reconcileSummary: "reconcile.summary",
  poison: "message.poison",
  exportGaveUp: "batch.export_gave_up",
  finalizeRefused: "batch.finalize_refused",
} as const;

export type LogMetricKey =
  | "itemDeadLettered"
  | "batchFailed"
  | "stalledFound"
  | "leasesRedriven"
  | "reconcilerErrors"
  | "poisonMessages"
  | "reconcileTicks"
  | "exportGaveUp"
  | "finalizeRefused";

export interface LogMetricSpec {
  suffix: string;
  description: string;
  filter: string;
}

export function logMetricSpecs(cfg: InfraConfig): Record<LogMetricKey, LogMetricSpec> {
  const t = cfg.topology;
  return {
    itemDeadLettered: {
      suffix: "item-dead-lettered",
      description: "Items recorded failed(dead_lettered): Pub/Sub gave up delivering them",
      filter: eventFilter(t, monitoredEvents.deadLettered),
    },
    batchFailed: {
      suffix: "batch-failed",
      description: "Batches finalized as failed (failed share above their failureThreshold)",
      filter: eventFilter(t, monitoredEvents.batchFinalized, 'jsonPayload.status="failed"'),
    },
    stalledFound: {
      suffix: "reconcile-stalled-found",
      description: "Reconciler ticks that found running items whose lease had lapsed (a worker died)",
      filter: eventFilter(t, monitoredEvents.reconcileSummary, "jsonPayload.expiredLeases.found>0"),
    },
    leasesRedriven: {
      suffix: "reconcile-redriven",
      description: "Reconciler ticks that redrove items with lapsed leases",
      filter: eventFilter(t, monitoredEvents.reconcileSummary, "jsonPayload.expiredLeases.redriven>0"),
    },
    reconcilerErrors: {
      suffix: "reconciler-errors",
      description:
        "ERROR lines from the reconciler (failed sweeps, failed requests), poison messages excepted",
      filter: [
        handlerLogFilter(t, ["reconciler"]),
        "severity>=ERROR",
        `NOT jsonPayload.event=${JSON.stringify(monitoredEvents.poison)}`,
      ].join(" AND "),
    },
    poisonMessages: {
      suffix: "poison-messages",
      description: "Undecodable or unknown messages acknowledged and dropped (worker or dead-letter handler)",
      filter: eventFilter(t, monitoredEvents.poison),
    },
    reconcileTicks: {
      suffix: "reconcile-ticks",
      description: "Completed reconciler ticks (their absence means the scheduler or the reconciler is down)",
      filter: eventFilter(t, monitoredEvents.reconcileSummary),
    },
    exportGaveUp: {
      suffix: "export-gave-up",
      description:
        "Batches whose result export failed its last allowed attempt: they wait in finalizing for an operator's re-export",
      filter: eventFilter(t, monitoredEvents.exportGaveUp),
    },
    finalizeRefused: {
      suffix: "finalize-refused",
      description:
        "Finalizations refused by the finalizer's check (live items, export rows not equal to succeeded items, or a sealed total not held)",
      filter: eventFilter(t, monitoredEvents.finalizeRefused),
    },
  };
}

export interface Monitoring {
  channel?: gcp.monitoring.NotificationChannel;
  metrics: Record<LogMetricKey, gcp.logging.Metric>;
  /** One per metric: exists once Cloud Monitoring serves the metric's descriptor. */
  metricGates: Record<LogMetricKey, MetricReadiness>;
  alerts: Record<string, gcp.monitoring.AlertPolicy>;
  dashboard: gcp.monitoring.Dashboard;
  dashboardUrl: pulumi.Output<string>;
}

/** An alert condition whose Monitoring filters are plain strings (so they can be read back and checked). */
interface Condition {
  displayName: string;
  conditionThreshold?: gcp.types.input.monitoring.AlertPolicyConditionConditionThreshold & {
    filter: string;
    denominatorFilter?: string;
  };
  conditionAbsent?: gcp.types.input.monitoring.AlertPolicyConditionConditionAbsent & { filter: string };
}

const quote = (s: string) => JSON.stringify(s);

/** A Monitoring comparison against one value or a set of values (`one_of`, not Logging's `("a" OR "b")`). */
export function labelIn(selector: string, values: string[]): string {
  if (values.length === 0) throw new Error(`no values for ${selector}`);
  return values.length === 1
    ? `${selector} = ${quote(values[0]!)}`
    : `${selector} = one_of(${values.map(quote).join(", ")})`;
}

const userMetric = (name: string) =>
  `metric.type = ${quote(`${userMetricPrefix}${name}`)} AND resource.type = "cloud_run_revision"`;

/** A log-based counter summed over a window, above a threshold. */
function logCountAbove(displayName: string, metricName: string, threshold = 0, window = "300s"): Condition {
  return {
    displayName,
    conditionThreshold: {
      filter: userMetric(metricName),
      comparison: "COMPARISON_GT",
      thresholdValue: threshold,
      duration: "0s",
      aggregations: [
        { alignmentPeriod: window, perSeriesAligner: "ALIGN_SUM", crossSeriesReducer: "REDUCE_SUM" },
      ],
      trigger: { count: 1 },
      evaluationMissingData: "EVALUATION_MISSING_DATA_INACTIVE",
    },
  };
}

function subscriptionFilter(metric: string, subscriptions: string[]): string {
  return [
    `metric.type = ${quote(`pubsub.googleapis.com/subscription/${metric}`)}`,
    'resource.type = "pubsub_subscription"',
    labelIn("resource.labels.subscription_id", subscriptions),
  ].join(" AND ");
}

/** Every pipeline's work subscription. */
function workSubscriptions(t: Topology): string[] {
  return t.pipelines.map((x) => x.workSubscription);
}

/** Requests to the workers (every pipeline's, summed by the conditions' reducers). */
function workerRequests(services: string[], codeClass?: string): string {
  return [
    'metric.type = "run.googleapis.com/request_count"',
    'resource.type = "cloud_run_revision"',
    labelIn("resource.labels.service_name", services),
    ...(codeClass ? [labelIn("metric.labels.response_code_class", [codeClass])] : []),
  ].join(" AND ");
}

/** The Monitoring filters of a list of alert conditions (threshold, ratio denominator, absence). */
function conditionFilters(conditions: Condition[]): string[] {
  return conditions.flatMap((c) =>
    [c.conditionThreshold?.filter, c.conditionThreshold?.denominatorFilter, c.conditionAbsent?.filter].filter(
      (f): f is string => typeof f === "string",
    ),
  );
}

export function createMonitoring(
  a: { cfg: InfraConfig; project: pulumi.Output<string>; labels: Record<string, string>; apis: Apis },
  parent?: pulumi.Resource,
): Monitoring {
  const { cfg } = a;
  const t = cfg.topology;
  const p = cfg.prefix;
  const monitoringApi = a.apis.on("monitoring.googleapis.com");

  const channel = cfg.alertEmail
    ? new gcp.monitoring.NotificationChannel(
        `${p}-alert-email`,
        {
          project: a.project,
          displayName: `Tally ${p} alerts`,
          type: "email",
          labels: { email_address: cfg.alertEmail },
          userLabels: a.labels,
        },
        { parent, dependsOn: monitoringApi },
      )
    : undefined;

  const specs = logMetricSpecs(cfg);
  const metricName = (k: LogMetricKey) => `${p}-${specs[k].suffix}`;
  const metrics = {} as Record<LogMetricKey, gcp.logging.Metric>;
  for (const k of Object.keys(specs) as LogMetricKey[])
    metrics[k] = new gcp.logging.Metric(
      `${p}-metric-${specs[k].suffix}`,
      {
        project: a.project,
        name: metricName(k),
        description: specs[k].description,
        filter: specs[k].filter,
        metricDescriptor: { metricKind: "DELTA", valueType: "INT64", unit: "1" },
      },
      { parent, dependsOn: a.apis.on("logging.googleapis.com") },
    );
  // The gate of each metric: alert policies naming the metric are created only once it is ready.
  const metricGates = {} as Record<LogMetricKey, MetricReadiness>;
  for (const k of Object.keys(specs) as LogMetricKey[])
    metricGates[k] = new MetricReadiness(
      `${p}-metric-ready-${specs[k].suffix}`,
      { project: a.project, metricType: pulumi.interpolate`${userMetricPrefix}${metrics[k].name}` },
      { parent, dependsOn: [metrics[k], ...monitoringApi] },
    );
  const gateByName = new Map(
    (Object.keys(specs) as LogMetricKey[]).map((k) => [metricName(k), metricGates[k]]),
  );
  /** The gates of the log-based metrics these Monitoring filters name; a name the stack does not declare is an error. */
  const gatesFor = (filters: string[]): MetricReadiness[] =>
    [...new Set(filters.flatMap(userMetricsNamed))].map((name) => {
      const gate = gateByName.get(name);
      if (!gate)
        throw new Error(
          `a Monitoring filter names log-based metric ${name}, which this stack does not declare`,
        );
      return gate;
    });

  const runbook = "See docs/operations.md (alerts and what to do).";
  const alert = (key: string, displayName: string, conditions: Condition[], what: string, severity: string) =>
    new gcp.monitoring.AlertPolicy(
      `${p}-alert-${key}`,
      {
        project: a.project,
        displayName: `Tally ${p}: ${displayName}`,
        combiner: "OR",
        conditions,
        notificationChannels: channel ? [channel.name] : [],
        severity,
        userLabels: a.labels,
        alertStrategy: { autoClose: "1800s" },
        documentation: { mimeType: "text/markdown", content: `${what}\n\n${runbook}` },
      },
      { parent, dependsOn: [...monitoringApi, ...gatesFor(conditionFilters(conditions))] },
    );

  const alerts = {
    deadLettered: alert(
      "dead-lettered",
      "messages dead-lettered",
      [
        {
          displayName: "Pub/Sub dead-lettered messages > 0",
          conditionThreshold: {
            filter: subscriptionFilter("dead_letter_message_count", [
              ...workSubscriptions(t),
              t.deadLetterSubscription,
            ]),
            comparison: "COMPARISON_GT",
            thresholdValue: 0,
            duration: "0s",
            aggregations: [
              { alignmentPeriod: "300s", perSeriesAligner: "ALIGN_SUM", crossSeriesReducer: "REDUCE_SUM" },
            ],
            trigger: { count: 1 },
            evaluationMissingData: "EVALUATION_MISSING_DATA_INACTIVE",
          },
        },
        logCountAbove("items recorded failed(dead_lettered) > 0", metricName("itemDeadLettered")),
      ],
      "Pub/Sub exhausted its delivery attempts for some work messages (worker crashes, timeouts or OOM). The items are recorded failed(dead_lettered) and their batches still finalize; retry them with POST /v1/batches/{id}:retry once the cause is fixed. Messages the reconciler could not record are parked on the parked topic's hold subscription.",
      "ERROR",
    ),
    oldestUnacked: alert(
      "oldest-unacked",
      "work backlog is old",
      [
        {
          displayName: `oldest unacked work message older than ${cfg.alerts.oldestUnackedSeconds} s`,
          conditionThreshold: {
            filter: subscriptionFilter("oldest_unacked_message_age", workSubscriptions(t)),
            comparison: "COMPARISON_GT",
            thresholdValue: cfg.alerts.oldestUnackedSeconds,
            duration: "300s",
            aggregations: [{ alignmentPeriod: "60s", perSeriesAligner: "ALIGN_MAX" }],
            trigger: { count: 1 },
          },
        },
      ],
      "The work subscription holds a message older than the threshold: workers are failing, too few, or too slow (check the worker's 5xx ratio, its max instances and the pipeline's latency).",
      "WARNING",
    ),
    reconcilerFailures: alert(
      "reconciler-failures",
      "reconciler failing or not running",
      [
        logCountAbove("reconciler ERROR lines > 0", metricName("reconcilerErrors")),
        {
          displayName: "no reconciler tick for 10 minutes",
          conditionAbsent: {
            filter: userMetric(metricName("reconcileTicks")),
            duration: "600s",
            aggregations: [
              { alignmentPeriod: "300s", perSeriesAligner: "ALIGN_SUM", crossSeriesReducer: "REDUCE_SUM" },
            ],
            trigger: { count: 1 },
          },
        },
      ],
      "The reconciler (the safety net that redrives dead workers' items and finalizes missed batches) logged errors, or has not completed a tick for 10 minutes (scheduler job paused or failing, or the reconciler crashing).",
      "ERROR",
    ),
    stalledItems: alert(
      "stalled-items",
      "stalled items found",
      [logCountAbove("ticks that found lapsed leases > 0", metricName("stalledFound"))],
      "The reconciler found running items whose lease lapsed: a worker died mid-item (crash, OOM, SIGKILL). They are redriven automatically; frequent firing means workers are dying — check worker logs and memory.",
      "WARNING",
    ),
    failedBatches: alert(
      "failed-batches",
      "batches failed",
      [logCountAbove("batches finalized as failed > 0", metricName("batchFailed"))],
      "A batch finalized as failed: more of its items failed than its failureThreshold allows. Its successful results were still exported; GET /v1/batches/{id}/items?status=failed lists the reasons.",
      "ERROR",
    ),
    worker5xx: alert(
      "worker-5xx",
      "worker 5xx ratio high",
      [
        {
          displayName: `worker 5xx responses above ${cfg.alerts.worker5xxRatio * 100}% of requests`,
          conditionThreshold: {
            filter: workerRequests(workerServices(t), "5xx"),
            denominatorFilter: workerRequests(workerServices(t)),
            comparison: "COMPARISON_GT",
            thresholdValue: cfg.alerts.worker5xxRatio,
            duration: "300s",
            aggregations: [
              { alignmentPeriod: "300s", perSeriesAligner: "ALIGN_RATE", crossSeriesReducer: "REDUCE_SUM" },
            ],
            denominatorAggregations: [
              { alignmentPeriod: "300s", perSeriesAligner: "ALIGN_RATE", crossSeriesReducer: "REDUCE_SUM" },
            ],
            trigger: { count: 1 },
            evaluationMissingData: "EVALUATION_MISSING_DATA_INACTIVE",
          },
        },
      ],
      "Many worker deliveries end in 5xx. Transient pipeline errors answer 5xx by design (Pub/Sub redelivers with backoff), so a high share means a dependency is failing or workers are overloaded.",
      "WARNING",
    ),
    exportGaveUp: alert(
      "export-gave-up",
      "result export gave up",
      [logCountAbove("batches whose export gave up > 0", metricName("exportGaveUp"))],
      "A batch's result export failed its last allowed attempt (attempts persist on the batch, with backoff between them). The batch stays finalizing with exportFailedAt and exportError set (GET /v1/batches/{id} shows exportFailure), and its dependents wait. Fix the cause named in exportError (BigQuery permissions, schema, quota), then POST /v1/batches/{id}:export to re-export.",
      "ERROR",
    ),
    finalizeRefused: alert(
      "finalize-refused",
      "finalization refused by its check",
      [logCountAbove("finalizations refused > 0", metricName("finalizeRefused"))],
      "A finalizer found, after its export, that the batch still had live items, that the export did not hold exactly the generation's succeeded items, or that the ledger did not hold the sealed total. It released its claim instead of recording an outcome; the next finalizer tries again. Repeated firing for one batch means the ledger and the sink disagree: read the event's problems field and the batch's items before anything else.",
      "ERROR",
    ),
    poisonMessages: alert(
      "poison-messages",
      "poison messages",
      [logCountAbove("poison messages acknowledged > 0", metricName("poisonMessages"))],
      "Messages that could not be decoded or named an unknown batch were acknowledged and dropped. Something other than the coordinator publishes to the work topic, or an old message outlived its batch.",
      "WARNING",
    ),
  };

  const dashboardSpec = dashboardJson(cfg, metricName);
  const dashboard = new gcp.monitoring.Dashboard(
    `${p}-dashboard`,
    { project: a.project, dashboardJson: dashboardSpec },
    { parent, dependsOn: [...monitoringApi, ...gatesFor(chartFilters(dashboardSpec))] },
  );
  // Dashboard ids are `projects/<number>/dashboards/<id>`; the console addresses them by the last part.
  const dashboardUrl = pulumi
    .all([dashboard.id, a.project])
    .apply(
      ([id, project]) =>
        `https://console.cloud.google.com/monitoring/dashboards/custom/${id.split("/").pop()}?project=${project}`,
    );
  return { channel, metrics, metricGates, alerts, dashboard, dashboardUrl };
}

/** The charts' Monitoring filters in a dashboard built by dashboardJson. */
function chartFilters(json: string): string[] {
  const widgets = (JSON.parse(json) as { mosaicLayout: { tiles: { widget: ReturnType<typeof chart> }[] } })
    .mosaicLayout.tiles;
  return widgets.flatMap((t) =>
    t.widget.xyChart.dataSets.map((d) => d.timeSeriesQuery.timeSeriesFilter.filter),
  );
}

function chart(title: string, filter: string, aligner: string, groupBy: string[] = []) {
  return {
    title,
    xyChart: {
      dataSets: [
        {
          plotType: "LINE",
          timeSeriesQuery: {
            timeSeriesFilter: {
              filter,
              aggregation: {
                alignmentPeriod: "60s",
                perSeriesAligner: aligner,
                crossSeriesReducer: "REDUCE_SUM",
                groupByFields: groupBy,
              },
            },
          },
        },
      ],
    },
  };
}

export function dashboardJson(cfg: InfraConfig, metricName: (k: LogMetricKey) => string): string {
  const t = cfg.topology;
  const widgets = [
    chart(
      "Work messages undelivered",
      subscriptionFilter("num_undelivered_messages", workSubscriptions(t)),
      "ALIGN_MAX",
    ),
    chart(
      "Oldest unacked work message (s)",
      subscriptionFilter("oldest_unacked_message_age", workSubscriptions(t)),
      "ALIGN_MAX",
    ),
    chart("Worker requests by response class", workerRequests(workerServices(t)), "ALIGN_RATE", [
      "metric.label.response_code_class",
    ]),
    chart(
      "Instances by service",
      [
        'metric.type = "run.googleapis.com/container/instance_count"',
        'resource.type = "cloud_run_revision"',
        labelIn("resource.labels.service_name", Object.values(t.services)),
      ].join(" AND "),
      "ALIGN_MAX",
      ["resource.label.service_name"],
    ),
    chart("Items dead-lettered", userMetric(metricName("itemDeadLettered")), "ALIGN_SUM"),
    chart("Batches failed", userMetric(metricName("batchFailed")), "ALIGN_SUM"),
    chart("Reconciler ticks that found lapsed leases", userMetric(metricName("stalledFound")), "ALIGN_SUM"),
    chart("Reconciler ticks that redrove items", userMetric(metricName("leasesRedriven")), "ALIGN_SUM"),
    chart("Reconciler errors", userMetric(metricName("reconcilerErrors")), "ALIGN_SUM"),
    chart("Poison messages", userMetric(metricName("poisonMessages")), "ALIGN_SUM"),
  ];
  return JSON.stringify({
    displayName: `Tally ${cfg.prefix}`,
    mosaicLayout: {
      columns: 12,
      tiles: widgets.map((widget, i) => ({
        xPos: (i % 2) * 6,
        yPos: Math.floor(i / 2) * 4,
        width: 6,
        height: 4,
        widget,
      })),
    },
  });
}
