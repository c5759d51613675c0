// The handlers as Cloud Run functions (`gcp.cloudfunctionsv2.Function`), built from the one bundle:
// the coordinator, the reconciler and one worker per pipeline (issue #17 §1), each running as its own
// service account, with the `roles/run.invoker` grants scoped to each service for exactly the
// identities that call it, and each pipeline's Secret Manager secrets granted to that pipeline's
// worker account only, one secret at a time.
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
import { type PipelineTopology, pipelineTopology } from "../functions/topology";
import type { Apis } from "./apis";
import type { HandlerSizing, InfraConfig } from "./config";
import type { FunctionSource } from "./functionSource";
import type { Identities, WorkerAccounts } from "./identities";
import type { PipelineDeployment } from "./pipelineDeployments";

export const nodeRuntime = "nodejs22";
/** The shared handlers; workers are per pipeline. */
export type HandlerRole = "coordinator" | "reconciler";
export const handlerRoles: HandlerRole[] = ["coordinator", "reconciler"];

/** Cloud Run's deterministic URL; its first DNS label (service-number) must fit 63 characters. */
export function runServiceUrl(service: string, projectNumber: string, region: string): string {
  const label = `${service}-${projectNumber}`;
  if (label.length > 63)
    throw new Error(
      `Cloud Run service name ${service} is too long for a deterministic URL (${label.length} > 63 characters): shorten tally:prefix`,
    );
  return `https://${label}.${region}.run.app`;
}

/** Environment variables the handlers read (functions/config.ts), the same for every handler. */
export function handlerEnvironment(cfg: InfraConfig, projectId: string): Record<string, string> {
  const t = cfg.topology;
  const d = t.delivery;
  const r = t.reconcile;
  const ownDelivery = Object.fromEntries(
    cfg.pipelines.filter((x) => Object.keys(x.delivery).length > 0).map((x) => [x.name, x.delivery]),
  );
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
    // Per-pipeline delivery (issue #17 §1): each worker applies its own; the reconciler reads the
    // attempts when it redrives. Only set when some pipeline sets its own.
    ...(Object.keys(ownDelivery).length > 0 ? { TALLY_PIPELINE_DELIVERY: JSON.stringify(ownDelivery) } : {}),
  };
}

export interface PipelineWorker {
  deployment: PipelineDeployment;
  topology: PipelineTopology;
  fn: gcp.cloudfunctionsv2.Function;
  url: pulumi.Output<string>;
  /** The function and its push invoker grant: what its push subscription waits for. */
  ready: pulumi.Resource[];
  /** One per secret the pipeline mounts: secretAccessor on that secret for this worker's account. */
  secretGrants: gcp.secretmanager.SecretIamMember[];
}

export interface Services {
  functions: Record<HandlerRole, gcp.cloudfunctionsv2.Function>;
  urls: Record<HandlerRole, pulumi.Output<string>>;
  /** One per pipeline, in the topology's order. */
  workers: PipelineWorker[];
  /** The reconciler and its invoker grants: what the dead-letter subscription and the scheduler wait for. */
  reconcilerReady: pulumi.Resource[];
}

/** Logical name of a pipeline's grant on one secret (named by both, so reordering moves nothing). */
export function secretGrantName(prefix: string, pipeline: string, secret: string): string {
  return `${prefix}-worker-${pipeline}-secret-${secret}`;
}

export function createServices(
  a: {
    cfg: InfraConfig;
    project: { projectId: pulumi.Output<string>; number: pulumi.Output<string> };
    labels: Record<string, string>;
    apis: Apis;
    identities: Identities;
    workerAccounts: WorkerAccounts;
    source: FunctionSource;
    /** What each pipeline's worker is deployed after: the grants on its HTTP targets (httpTargets.ts). */
    workerAfter?: Record<string, pulumi.Resource[]>;
  },
  parent?: pulumi.Resource,
): Services {
  const { cfg, identities } = a;
  const t = cfg.topology;
  const p = t.prefix;
  const urlOf = (service: string) => a.project.number.apply((n) => runServiceUrl(service, n, cfg.region));
  const urls = {
    coordinator: urlOf(t.services.coordinator),
    reconciler: urlOf(t.services.reconciler),
  };

  const baseEnv = a.project.projectId.apply((id) => handlerEnvironment(cfg, id));
  // The reconciler verifies the Google-signed token of its callers as well (DESIGN §3).
  const env: Record<HandlerRole, pulumi.Output<Record<string, string>>> = {
    coordinator: baseEnv,
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
    reconciler: cfg.reconciler,
  };
  const ingress: Record<HandlerRole, string> = {
    coordinator: "ALLOW_ALL",
    reconciler: "ALLOW_INTERNAL_ONLY",
  };
  const descriptions: Record<HandlerRole, string> = {
    coordinator: "Tally coordinator: batch API and dashboard",
    reconciler: "Tally reconciler: scheduled repair and dead-letter recording",
  };
  const buildDependencies = [
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
  ];
  const buildConfig = (entryPoint: string) => ({
    runtime: nodeRuntime,
    // The Functions Framework target registered by functions/index.ts.
    entryPoint,
    serviceAccount: identities.builder.id,
    source: { storageSource: { bucket: a.source.bucket.name, object: a.source.object.name } },
  });

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
        buildConfig: buildConfig(role),
        serviceConfig: {
          serviceAccountEmail: identities[role].email,
          ingressSettings: ingress[role],
          timeoutSeconds: s.timeoutSeconds,
          ...instanceSizing(s),
          environmentVariables: env[role],
        },
      },
      { parent, dependsOn: buildDependencies },
    );
  }

  const invoker = (name: string, service: string, after: pulumi.Resource, member: pulumi.Input<string>) =>
    new gcp.cloudrunv2.ServiceIamMember(
      name,
      {
        project: a.project.projectId,
        location: cfg.region,
        name: service,
        role: "roles/run.invoker",
        member,
      },
      { parent, dependsOn: [after] },
    );

  // --- one worker per pipeline ---------------------------------------------------------------------
  const workers: PipelineWorker[] = cfg.pipelines.map((deployment) => {
    const x = pipelineTopology(t, deployment.name);
    const account = a.workerAccounts[deployment.name];
    if (!account) throw new Error(`no service account for pipeline ${deployment.name}`);
    const url = urlOf(x.workerService);
    // One grant per secret (two variables reading one secret share it), on that secret only.
    const secrets = [...new Set(deployment.secrets.map((s) => s.secret))];
    const secretGrants = secrets.map(
      (secret) =>
        // This pipeline's worker reads this secret at instance start (a secret environment variable);
        // Cloud Run refuses to deploy a revision whose account cannot access it.
        new gcp.secretmanager.SecretIamMember(
          secretGrantName(p, deployment.name, secret),
          {
            project: a.project.projectId,
            secretId: secret,
            role: "roles/secretmanager.secretAccessor",
            member: account.member,
          },
          { parent, dependsOn: a.apis.on("secretmanager.googleapis.com") },
        ),
    );
    const workerEnv = pulumi.all([baseEnv, url, identities.workPush.email]).apply(
      ([e, own, push]): Record<string, string> => ({
        ...deployment.environment,
        ...e,
        TALLY_WORKER_PIPELINE: deployment.name,
        // This pipeline's worker splits its ratePerSecond across its own instance limit (§2).
        TALLY_WORKER_MAX_INSTANCES: String(deployment.sizing.maxInstances),
        // The worker verifies the Google-signed token of its pushes (DESIGN §3).
        TALLY_OIDC_AUDIENCE: own,
        TALLY_OIDC_SERVICE_ACCOUNT: push,
      }),
    );
    const s = deployment.sizing;
    const fn = new gcp.cloudfunctionsv2.Function(
      `${p}-fn-worker-${deployment.name}`,
      {
        project: a.project.projectId,
        location: cfg.region,
        name: x.workerService,
        description: `Tally worker for pipeline ${deployment.name}: Pub/Sub push endpoint processing its items`,
        labels: { ...a.labels, "tally-handler": "worker", "tally-pipeline": deployment.name },
        buildConfig: buildConfig("worker"),
        serviceConfig: {
          serviceAccountEmail: account.email,
          ingressSettings: "ALLOW_INTERNAL_ONLY",
          // Fits inside this pipeline's ack deadline (functions/topology.ts validateDelivery).
          timeoutSeconds: x.delivery.workerTimeoutSeconds,
          ...instanceSizing(s),
          environmentVariables: workerEnv,
          secretEnvironmentVariables: deployment.secrets.map((sec) => ({
            key: sec.variable,
            projectId: a.project.projectId,
            secret: sec.secret,
            version: sec.version,
          })),
        },
      },
      {
        parent,
        dependsOn: [
          ...buildDependencies,
          // A revision whose account cannot read its secrets fails to deploy: grants first.
          ...secretGrants,
          // Targets answer 403 without their grant and a 403 fails items permanently: grants first.
          ...(a.workerAfter?.[deployment.name] ?? []),
        ],
      },
    );
    // The work subscriptions' push identity calls this pipeline's worker.
    const pushInvoker = invoker(
      `${p}-worker-${deployment.name}-invoker-push`,
      x.workerService,
      fn,
      identities.workPush.member,
    );
    return { deployment, topology: x, fn, url, ready: [fn, pushInvoker], secretGrants };
  });

  // The scheduler job calls the reconciler's /reconcile.
  const reconcilerSchedulerInvoker = invoker(
    `${p}-reconciler-invoker-scheduler`,
    t.services.reconciler,
    functions.reconciler,
    identities.scheduler.member,
  );
  // The dead-letter subscription's push identity calls the reconciler's /dead-letter.
  const reconcilerDeadLetterInvoker = invoker(
    `${p}-reconciler-invoker-dead-letter`,
    t.services.reconciler,
    functions.reconciler,
    identities.deadLetterPush.member,
  );
  // The principals listed in tally:coordinatorInvokers call the API; nobody else can.
  // Named after the principal, so reordering the list changes nothing.
  for (const principal of cfg.coordinatorInvokers)
    invoker(
      `${p}-coordinator-invoker-${principal.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`,
      t.services.coordinator,
      functions.coordinator,
      principal,
    );

  return {
    functions,
    urls,
    workers,
    reconcilerReady: [functions.reconciler, reconcilerSchedulerInvoker, reconcilerDeadLetterInvoker],
  };
}

/** A function's instances as sized (memory, CPU, concurrency, instance bounds), on its latest revision. */
function instanceSizing(s: {
  memory: string;
  cpu: string;
  concurrency: number;
  maxInstances: number;
  minInstances: number;
}) {
  return {
    availableMemory: s.memory,
    // More than one concurrent request per instance needs at least one whole CPU (checked where
    // the sizes are read: infra/pipelineDeployments.ts).
    availableCpu: s.cpu,
    maxInstanceRequestConcurrency: s.concurrency,
    maxInstanceCount: s.maxInstances,
    minInstanceCount: s.minInstances,
    allTrafficOnLatestRevision: true,
  };
}
