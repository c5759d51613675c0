// The whole stack, composed from one function per concern. Configuration is read and validated
// first: a bad value throws before any resource is registered. Tests call `createStack` under
// `pulumi.runtime.setMocks`; `infra/index.ts` hands it to the Pulumi runtime.
import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import { enableApis } from "./apis";
import { type Bundle, buildBundle } from "./bundle/buildBundle";
import { loadInfraConfig } from "./config";
import { createFunctionSource } from "./functionSource";
import { grantHttpTargetInvokers } from "./httpTargets";
import { createIdentities, createWorkerAccounts } from "./identities";
import { createMessaging } from "./messaging";
import { createMonitoring } from "./monitoring";
import { createScheduling } from "./scheduling";
import { createServices } from "./services";
import { createStorage } from "./storage";

export interface StackOptions {
  /** Builds the handler bundle (default: functions/ into .tally/bundle); called after config validation. */
  bundle?: () => Bundle;
}

/** One pipeline's deployable unit (issue #17 §1). */
export interface PipelineOutputs {
  workerUrl: pulumi.Output<string>;
  workTopic: pulumi.Output<string>;
  workSubscription: pulumi.Output<string>;
  serviceAccount: pulumi.Output<string>;
}

export interface StackOutputs {
  coordinatorUrl: pulumi.Output<string>;
  reconcilerUrl: pulumi.Output<string>;
  /** Pipeline name → its worker, work topic, subscription and account. */
  pipelines: Record<string, PipelineOutputs>;
  deadLetterTopic: pulumi.Output<string>;
  parkedTopic: pulumi.Output<string>;
  deadLetterSubscription: pulumi.Output<string>;
  parkedSubscription: pulumi.Output<string>;
  schedulerJob: pulumi.Output<string>;
  resultsTable: pulumi.Output<string>;
  dashboardUrl: pulumi.Output<string>;
  functionSourceObject: string;
  serviceAccounts: Record<string, pulumi.Output<string>>;
}

export function createStack(options: StackOptions = {}): StackOutputs {
  const cfg = loadInfraConfig();
  const bundle = (options.bundle ?? buildBundle)();
  const t = cfg.topology;

  const gcpProject = gcp.organizations.getProjectOutput({});
  const projectId = gcpProject.apply(({ projectId: id }) => {
    if (!id) throw new Error("no Google Cloud project: set it with `pulumi config set gcp:project <id>`");
    return id;
  });
  const project = { projectId, number: gcpProject.apply((p) => p.number) };
  // Label values allow lowercase letters, digits, - and _: the prefix qualifies.
  const labels = { "tally-stack": cfg.prefix };

  const apis = enableApis(cfg.prefix, projectId);
  const identities = createIdentities(cfg.prefix, projectId, { dependsOn: apis.on("iam.googleapis.com") });
  const workerAccounts = createWorkerAccounts(t, projectId, { dependsOn: apis.on("iam.googleapis.com") });
  const storage = createStorage({ cfg, project: projectId, labels, apis, identities, workerAccounts });
  const source = createFunctionSource({
    prefix: cfg.prefix,
    project: projectId,
    region: cfg.region,
    labels,
    bundle,
    apis,
    identities,
    workerAccounts,
  });
  const httpTargetInvokers = grantHttpTargetInvokers({ cfg, projectId, apis, workerAccounts });
  const services = createServices({
    cfg,
    project,
    labels,
    apis,
    identities,
    workerAccounts,
    source,
    workerAfter: httpTargetInvokers,
  });
  const messaging = createMessaging({
    topology: t,
    project: projectId,
    labels,
    apis,
    identities,
    workerAccounts,
    pipelines: services.workers.map((w) => ({ topology: w.topology, workerUrl: w.url, ready: w.ready })),
    reconcilerUrl: services.urls.reconciler,
    reconcilerReady: services.reconcilerReady,
  });
  const job = createScheduling({
    cfg,
    project: projectId,
    apis,
    identities,
    reconcilerUrl: services.urls.reconciler,
    reconcilerReady: services.reconcilerReady,
  });
  const monitoring = createMonitoring({ cfg, project: projectId, labels, apis });

  return {
    coordinatorUrl: services.urls.coordinator,
    reconcilerUrl: services.urls.reconciler,
    pipelines: Object.fromEntries(
      services.workers.map((w, i) => [
        w.deployment.name,
        {
          workerUrl: w.url,
          workTopic: messaging.pipelines[i]!.topic.name,
          workSubscription: messaging.pipelines[i]!.subscription.name,
          serviceAccount: workerAccounts[w.deployment.name]!.email,
        },
      ]),
    ),
    deadLetterTopic: messaging.deadLetterTopic.name,
    parkedTopic: messaging.parkedTopic.name,
    deadLetterSubscription: messaging.deadLetterSubscription.name,
    parkedSubscription: messaging.parkedSubscription.name,
    schedulerJob: job.name,
    resultsTable: pulumi.interpolate`${projectId}.${storage.resultsDataset.datasetId}.${storage.resultsTable.tableId}`,
    dashboardUrl: monitoring.dashboardUrl,
    functionSourceObject: bundle.objectName,
    // The shared accounts by role; each pipeline's worker account is under `pipelines`.
    serviceAccounts: Object.fromEntries(Object.entries(identities).map(([role, sa]) => [role, sa.email])),
  };
}
