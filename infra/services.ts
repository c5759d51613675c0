// The three handlers as Cloud Run functions (`gcp.cloudfunctionsv2.Function`), built from the one
// bundle, each running as its own service account, and the `roles/run.invoker` grants scoped to
// each service for exactly the identities that call it.
//
// Ingress. The worker and the reconciler accept internal traffic only (ALLOW_INTERNAL_ONLY, i.e.
// Cloud Run ingress "internal"). Cloud Run counts requests from Pub/Sub push, Cloud Scheduler,
// Cloud Tasks, Eventarc and Workflows in the same project (or VPC-SC perimeter) as internal when they
// call the default run.app URL — not a custom domain and not the cloudfunctions.net URL — so the
// push subscriptions and the scheduler job target the run.app URL. The coordinator is called by
// clients outside Google Cloud, so it allows all ingress and relies on IAM (no public invoker).
//
// URLs and audiences. Cloud Run gives every service a deterministic URL,
// https://<service>-<project number>.<region>.run.app. It is known before the service exists, which
// lets each handler be told its own OIDC audience in its environment (TALLY_OIDC_AUDIENCE) without a
// dependency cycle, and lets the policies check push endpoints at preview time.
import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import type { Apis } from "./apis";
import type { HandlerSizing, InfraConfig } from "./config";
import type { FunctionSource } from "./functionSource";
import type { Identities } from "./identities";

export const nodeRuntime = "nodejs22";
export type HandlerRole = "coordinator" | "worker" | "reconciler";
export const handlerRoles: HandlerRole[] = ["coordinator", "worker", "reconciler"];

/** Cloud Run's deterministic URL; its first DNS label (service-number) must fit 63 characters. */
export function runServiceUrl(service: string, projectNumber: string, region: string): string {
  const label = `${service}-${projectNumber}`;
  if (label.length > 63)
    throw new Error(
      `Cloud Run service name ${service} is too long for a deterministic URL (${label.length} > 63 characters): shorten tally:prefix`,
    );
  return `https://${label}.${region}.run.app`;
}

/** Environment variables the handlers read (functions/config.ts), the same for all three. */
export function handlerEnvironment(cfg: InfraConfig, projectId: string): Record<string, string> {
  const t = cfg.topology;
  const d = t.delivery;
  const r = t.reconcile;
  return {
    NODE_ENV: "production",
    GOOGLE_CLOUD_PROJECT: projectId,
    TALLY_PREFIX: t.prefix,
    TALLY_SINK: "bigquery",
    TALLY_BIGQUERY_DATASET: cfg.resultsDataset,
    TALLY_BIGQUERY_LOCATION: cfg.resultsLocation,
    TALLY_LEASE_SECONDS: String(d.leaseSeconds),
    TALLY_ACK_DEADLINE_SECONDS: String(d.ackDeadlineSeconds),
    TALLY_MAX_DELIVERY_ATTEMPTS: String(d.maxDeliveryAttempts),
    TALLY_MAX_ITEM_ATTEMPTS: String(d.maxItemAttempts),
    TALLY_WORKER_TIMEOUT_SECONDS: String(d.workerTimeoutSeconds),
    TALLY_MIN_BACKOFF_SECONDS: String(d.minimumBackoffSeconds),
    TALLY_MAX_BACKOFF_SECONDS: String(d.maximumBackoffSeconds),
    TALLY_STALE_SUBMISSION_SECONDS: String(r.staleSubmissionSeconds),
    TALLY_STALE_PENDING_SECONDS: String(r.stalePendingSeconds),
    TALLY_STALE_FINALIZING_SECONDS: String(r.staleFinalizingSeconds),
    TALLY_RECONCILE_PAGE_SIZE: String(r.pageSize),
    TALLY_RETENTION_DAYS: String(cfg.retentionDays),
    // The worker splits each pipeline's ratePerSecond across this many instances (issue #17 §2).
    TALLY_WORKER_MAX_INSTANCES: String(cfg.worker.maxInstances),
    // HTTP pipelines (issue #17 §4): the coordinator checks submissions against them, the worker
    // runs them, the reconciler reads their maxAttempts when it redrives expired leases. Only set
    // when some are declared.
    ...(cfg.httpPipelines.length > 0 ? { TALLY_HTTP_PIPELINES: JSON.stringify(cfg.httpPipelines) } : {}),
  };
}

export interface Services {
  functions: Record<HandlerRole, gcp.cloudfunctionsv2.Function>;
  urls: Record<HandlerRole, pulumi.Output<string>>;
  /** Functions plus their invoker grants: what push subscriptions and the scheduler wait for. */
  ready: Record<"worker" | "reconciler", pulumi.Resource[]>;
}

export function createServices(
  a: {
    cfg: InfraConfig;
    project: { projectId: pulumi.Output<string>; number: pulumi.Output<string> };
    labels: Record<string, string>;
    apis: Apis;
    identities: Identities;
    source: FunctionSource;
    /** What the worker is deployed after: the grants on its HTTP pipelines' targets (httpTargets.ts). */
    workerAfter?: pulumi.Resource[];
  },
  parent?: pulumi.Resource,
): Services {
  const { cfg, identities } = a;
  const t = cfg.topology;
  const p = t.prefix;
  const urls = Object.fromEntries(
    handlerRoles.map((role) => [
      role,
      a.project.number.apply((n) => runServiceUrl(t.services[role], n, cfg.region)),
    ]),
  ) as Record<HandlerRole, pulumi.Output<string>>;

  const baseEnv = a.project.projectId.apply((id) => handlerEnvironment(cfg, id));
  // The worker and reconciler verify the Google-signed token of their callers as well (DESIGN §3).
  const env: Record<HandlerRole, pulumi.Output<Record<string, string>>> = {
    coordinator: baseEnv,
    worker: pulumi.all([baseEnv, urls.worker, identities.workPush.email]).apply(
      ([e, url, push]): Record<string, string> => ({
        ...e,
        TALLY_OIDC_AUDIENCE: url,
        TALLY_OIDC_SERVICE_ACCOUNT: push,
      }),
    ),
    reconciler: pulumi
      .all([baseEnv, urls.reconciler, identities.scheduler.email, identities.deadLetterPush.email])
      .apply(
        ([e, url, sched, dlq]): Record<string, string> => ({
          ...e,
          TALLY_OIDC_AUDIENCE: url,
          // Two callers: the scheduler job (/reconcile) and the dead-letter subscription (/dead-letter).
          TALLY_OIDC_SERVICE_ACCOUNT: `${sched},${dlq}`,
        }),
      ),
  };
  const sizing: Record<HandlerRole, HandlerSizing> = {
    coordinator: cfg.coordinator,
    worker: cfg.worker,
    reconciler: cfg.reconciler,
  };
  const ingress: Record<HandlerRole, string> = {
    coordinator: "ALLOW_ALL",
    worker: "ALLOW_INTERNAL_ONLY",
    reconciler: "ALLOW_INTERNAL_ONLY",
  };
  const descriptions: Record<HandlerRole, string> = {
    coordinator: "Tally coordinator: batch API and dashboard",
    worker: "Tally worker: Pub/Sub push endpoint processing items",
    reconciler: "Tally reconciler: scheduled repair and dead-letter recording",
  };

  const functions = {} as Record<HandlerRole, gcp.cloudfunctionsv2.Function>;
  for (const role of handlerRoles) {
    const s = sizing[role];
    functions[role] = new gcp.cloudfunctionsv2.Function(
      `${p}-fn-${role}`,
      {
        project: a.project.projectId,
        location: cfg.region,
        name: t.services[role],
        description: descriptions[role],
        labels: { ...a.labels, "tally-handler": role },
        buildConfig: {
          runtime: nodeRuntime,
          // The Functions Framework target registered by functions/index.ts.
          entryPoint: role,
          serviceAccount: identities.builder.id,
          source: { storageSource: { bucket: a.source.bucket.name, object: a.source.object.name } },
        },
        serviceConfig: {
          serviceAccountEmail: identities[role].email,
          ingressSettings: ingress[role],
          timeoutSeconds: s.timeoutSeconds,
          availableMemory: s.memory,
          // More than one concurrent request per instance needs at least one whole CPU.
          availableCpu: "1",
          maxInstanceRequestConcurrency: s.concurrency,
          maxInstanceCount: s.maxInstances,
          minInstanceCount: s.minInstances,
          allTrafficOnLatestRevision: true,
          environmentVariables: env[role],
        },
      },
      {
        parent,
        dependsOn: [
          ...a.apis.on(
            "cloudfunctions.googleapis.com",
            "run.googleapis.com",
            "cloudbuild.googleapis.com",
            "artifactregistry.googleapis.com",
          ),
          // Every grant to the build account, and the IAM propagation wait after them: a build
          // started before the grants propagate fails with a permission error.
          ...a.source.builderGrants,
          a.source.builderReady,
          // Targets answer 403 without their grant and a 403 fails items permanently: grants first.
          ...(role === "worker" ? (a.workerAfter ?? []) : []),
        ],
      },
    );
  }

  const invoker = (name: string, role: HandlerRole, member: pulumi.Input<string>) =>
    new gcp.cloudrunv2.ServiceIamMember(
      name,
      {
        project: a.project.projectId,
        location: cfg.region,
        name: t.services[role],
        role: "roles/run.invoker",
        member,
      },
      { parent, dependsOn: [functions[role]] },
    );

  // The work subscription's push identity calls the worker.
  const workerPushInvoker = invoker(`${p}-worker-invoker-push`, "worker", identities.workPush.member);
  // The scheduler job calls the reconciler's /reconcile.
  const reconcilerSchedulerInvoker = invoker(
    `${p}-reconciler-invoker-scheduler`,
    "reconciler",
    identities.scheduler.member,
  );
  // The dead-letter subscription's push identity calls the reconciler's /dead-letter.
  const reconcilerDeadLetterInvoker = invoker(
    `${p}-reconciler-invoker-dead-letter`,
    "reconciler",
    identities.deadLetterPush.member,
  );
  // The principals listed in tally:coordinatorInvokers call the API; nobody else can.
  // Named after the principal, so reordering the list changes nothing.
  for (const principal of cfg.coordinatorInvokers)
    invoker(
      `${p}-coordinator-invoker-${principal.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`,
      "coordinator",
      principal,
    );

  return {
    functions,
    urls,
    ready: {
      worker: [functions.worker, workerPushInvoker],
      reconciler: [functions.reconciler, reconcilerSchedulerInvoker, reconcilerDeadLetterInvoker],
    },
  };
}
