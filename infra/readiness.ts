// Readiness gates: resources whose creation waits for something Google Cloud makes true only some
// time after another resource exists, so that a first `pulumi up` succeeds without a re-run.
//
// 1. MetricReadiness — a log-based metric (gcp.logging.Metric) is usable in an alert policy only once
//    Cloud Monitoring knows its descriptor. Until then, creating an AlertPolicy that names
//    `logging.googleapis.com/user/NAME` fails with 404 "Cannot find metric(s) that match type = … If a
//    metric was created recently, it could take up to 10 minutes to become available"
//    (hashicorp/terraform-provider-google#11102, open). The provider does not retry it: its
//    AlertPolicy create retries only IsMonitoringConcurrentEditError
//    (google/services/monitoring/resource_monitoring_alert_policy.go). So each metric gets a gate that
//    polls `GET https://monitoring.googleapis.com/v3/projects/P/metricDescriptors/logging.googleapis.com/user/NAME`
//    (Application Default Credentials, the identity running `pulumi up`) until it answers 200 on
//    consecutive polls, bounded by a deadline with an error naming the metric.
//    Why poll rather than sleep: the delay varies from seconds to ~10 minutes; a fixed sleep either
//    fails on a slow day or costs 10+ minutes on every first `up`. The descriptor is the very thing
//    the 404 says is missing. Two consecutive 200s are required because Monitoring's descriptor reads
//    are eventually consistent (googleapis/nodejs-monitoring#190: maintainers confirmed list-after-
//    create lag is expected), so one lucky read is not trusted.
//
// 2. PropagationWait — IAM grants take effect only after they propagate: "typically 2 minutes,
//    potentially 7 minutes or longer" for allow-policy changes
//    (https://cloud.google.com/iam/docs/access-change-propagation). The build service account's grants
//    are created seconds before the function builds that use them, and a build started before they
//    propagate fails with a permission error (the provider does not retry a failed function
//    operation: google/services/cloudfunctions2/resource_cloudfunctions2_function.go). Propagation
//    cannot be observed from outside (the deployer cannot test another principal's permissions), so
//    this is a fixed wait, run only when the wait is created or the set of grants it covers changes
//    (not on every `up`).
//
// Both are `pulumi.dynamic.Resource`s. Their provider code is serialized by Pulumi and run in the
// engine's dynamic-provider host, so it captures no imported module: the one library it needs
// (google-auth-library, a dependency of this repository) is `require`d inside `create`. The polling
// logic is a pure function with injected probe, clock and sleep (waitForMetricDescriptor), unit-tested
// in test/infra/readiness.test.ts; that test also runs the serialized provider text itself.
import * as pulumi from "@pulumi/pulumi";

export const metricReadinessType = "pulumi-nodejs:dynamic/tally:MetricReadiness";
export const propagationWaitType = "pulumi-nodejs:dynamic/tally:PropagationWait";

/** Defaults: Google says up to ~10 minutes; the deadline leaves margin. */
export const metricReadinessDefaults = { timeoutSeconds: 900, intervalSeconds: 15, confirmations: 2 };

export interface MetricDescriptorWait {
  project: string;
  /** Full metric type, e.g. logging.googleapis.com/user/tally-dev-batch-failed. */
  metricType: string;
  /** One GET of the descriptor: resolves to its HTTP status; rejects on a network error. */
  probe: () => Promise<number>;
  now: () => number;
  sleep: (ms: number) => Promise<void>;
  timeoutMs: number;
  intervalMs: number;
  /** Consecutive 200 answers required (default 2). */
  confirmations?: number;
}

/** URL of a metric descriptor in the Cloud Monitoring API. */
export function metricDescriptorUrl(project: string, metricType: string): string {
  return `https://monitoring.googleapis.com/v3/projects/${encodeURIComponent(project)}/metricDescriptors/${metricType}`;
}

/**
 * Polls until Cloud Monitoring answers 200 for the descriptor `confirmations` times in a row.
 * 404 (not known yet), 429, 5xx and network errors mean "wait"; 401/403 and other 4xx fail at once
 * (waiting cannot fix them); the deadline fails with a message naming the metric.
 * Pure: everything it touches is injected. Kept free of references outside its own body so the
 * dynamic provider below can carry it.
 */
export async function waitForMetricDescriptor(w: MetricDescriptorWait): Promise<{ polls: number }> {
  const needed = w.confirmations ?? 2;
  const started = w.now();
  const deadline = started + w.timeoutMs;
  let polls = 0;
  let streak = 0;
  let last = "no answer yet";
  for (;;) {
    polls++;
    let status: number | undefined;
    try {
      status = await w.probe();
      last = `HTTP ${status}`;
    } catch (err) {
      last = `request failed: ${err instanceof Error ? err.message : String(err)}`;
    }
    if (status === 200) {
      streak++;
      if (streak >= needed) return { polls };
    } else {
      streak = 0;
      if (status === 401 || status === 403)
        throw new Error(
          `metric ${w.metricType} in project ${w.project}: Cloud Monitoring refused to read its descriptor (${last}). The identity running pulumi up needs monitoring.metricDescriptors.get (roles/monitoring.viewer or roles/monitoring.editor).`,
        );
      if (status !== undefined && status !== 404 && status !== 429 && status < 500)
        throw new Error(
          `metric ${w.metricType} in project ${w.project}: unexpected answer reading its descriptor (${last}).`,
        );
    }
    if (w.now() + w.intervalMs > deadline)
      throw new Error(
        `metric ${w.metricType} in project ${w.project} was not available in Cloud Monitoring after ${Math.round((w.now() - started) / 1000)} s (${polls} polls, last: ${last}). A new log-based metric can take up to 10 minutes to appear; the alert policies that use it were not created. Run pulumi up again.`,
      );
    await w.sleep(w.intervalMs);
  }
}

interface MetricReadinessInputs {
  project: string;
  metricType: string;
  timeoutSeconds: number;
  intervalSeconds: number;
  confirmations: number;
}

/** The dynamic provider: create waits; nothing else touches the cloud. */
export const metricReadinessProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: MetricReadinessInputs) {
    // Required here, not imported: the provider is serialized and must carry no module bindings.
    const { GoogleAuth } = require("google-auth-library") as typeof import("google-auth-library");
    const auth = new GoogleAuth({ scopes: ["https://www.googleapis.com/auth/monitoring.read"] });
    const url = metricDescriptorUrl(inputs.project, inputs.metricType);
    await waitForMetricDescriptor({
      project: inputs.project,
      metricType: inputs.metricType,
      probe: async () => (await auth.request({ url, method: "GET", validateStatus: () => true })).status,
      now: () => Date.now(),
      sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
      timeoutMs: inputs.timeoutSeconds * 1000,
      intervalMs: inputs.intervalSeconds * 1000,
      confirmations: inputs.confirmations,
    });
    return { id: `${inputs.project}/${inputs.metricType}`, outs: inputs };
  },
  // A different metric (or project) is a different gate; timing settings are not worth a wait.
  async diff(_id: string, olds: MetricReadinessInputs, news: MetricReadinessInputs) {
    const replaces = (["project", "metricType"] as const).filter((k) => olds[k] !== news[k]);
    return { changes: replaces.length > 0, replaces, deleteBeforeReplace: false };
  },
};

export interface MetricReadinessArgs {
  project: pulumi.Input<string>;
  metricType: pulumi.Input<string>;
  timeoutSeconds?: number;
  intervalSeconds?: number;
  confirmations?: number;
}

/** Exists once Cloud Monitoring serves the descriptor of `metricType`; alert policies depend on it. */
export class MetricReadiness extends pulumi.dynamic.Resource {
  declare readonly metricType: pulumi.Output<string>;
  constructor(name: string, args: MetricReadinessArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      metricReadinessProvider,
      name,
      {
        project: args.project,
        metricType: args.metricType,
        timeoutSeconds: args.timeoutSeconds ?? metricReadinessDefaults.timeoutSeconds,
        intervalSeconds: args.intervalSeconds ?? metricReadinessDefaults.intervalSeconds,
        confirmations: args.confirmations ?? metricReadinessDefaults.confirmations,
      },
      opts,
      "tally",
      "MetricReadiness",
    );
  }
}

interface PropagationWaitInputs {
  seconds: number;
  reason: string;
  /** What the wait covers (e.g. "role member" of each grant): a change waits again. */
  covers: string[];
}

export const propagationWaitProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: PropagationWaitInputs) {
    await new Promise((r) => setTimeout(r, inputs.seconds * 1000));
    return { id: `wait-${inputs.seconds}s`, outs: inputs };
  },
  async diff(_id: string, olds: PropagationWaitInputs, news: PropagationWaitInputs) {
    const same =
      olds.covers?.length === news.covers.length &&
      [...olds.covers].sort().join("\n") === [...news.covers].sort().join("\n");
    return { changes: !same, replaces: same ? [] : ["covers"], deleteBeforeReplace: false };
  },
};

/**
 * IAM propagation: "typically 2 minutes, potentially 7 minutes or longer"
 * (https://cloud.google.com/iam/docs/access-change-propagation). Three minutes covers the typical
 * case with margin without adding the 7-minute tail to every first `up`; a build that still meets an
 * unpropagated grant fails with a permission error and the next `up` retries it.
 */
export const iamPropagationSeconds = 180;

/** Created after the resources it depends on, `seconds` later; dependents wait for it. */
export class PropagationWait extends pulumi.dynamic.Resource {
  constructor(
    name: string,
    args: { seconds: number; reason: string; covers: pulumi.Input<string>[] },
    opts?: pulumi.CustomResourceOptions,
  ) {
    super(propagationWaitProvider, name, { ...args }, opts, "tally", "PropagationWait");
  }
}
