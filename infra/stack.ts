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
import { createIdentities } from "./identities";
import { createMessaging } from "./messaging";
import { createMonitoring } from "./monitoring";
import { createScheduling } from "./scheduling";
import { createServices } from "./services";
import { createStorage } from "./storage";

export interface StackOptions {
  /** Builds the handler bundle (default: functions/ into .tally/bundle); called after config validation. */
  bundle?: () => Bundle;
}

export interface StackOutputs {
  coordinatorUrl: pulumi.Output<string>;
  workerUrl: pulumi.Output<string>;
  reconcilerUrl: pulumi.Output<string>;
  workTopic: pulumi.Output<string>;
  deadLetterTopic: pulumi.Output<string>;
  parkedTopic: pulumi.Output<string>;
  workSubscription: pulumi.Output<string>;
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
  const storage = createStorage({ cfg, project: projectId, labels, apis, identities });
  const source = createFunctionSource({
    prefix: cfg.prefix,
    project: projectId,
    region: cfg.region,
    labels,
    bundle,
    apis,
    identities,
  });
  const httpTargetInvokers = grantHttpTargetInvokers({ cfg, projectId, apis, identities });
  const services = createServices({
    cfg,
    project,
    labels,
    apis,
    identities,
    source,
    workerAfter: httpTargetInvokers,
  });
  const messaging = createMessaging({
    topology: t,
    project: projectId,
    labels,
    apis,
    identities,
    workerUrl: services.urls.worker,
    reconcilerUrl: services.urls.reconciler,
    pushTargets: [...services.ready.worker, ...services.ready.reconciler],
  });
  const job = createScheduling({
    cfg,
    project: projectId,
    apis,
    identities,
    reconcilerUrl: services.urls.reconciler,
    reconcilerReady: services.ready.reconciler,
  });
  const monitoring = createMonitoring({ cfg, project: projectId, labels, apis });

  return {
    coordinatorUrl: services.urls.coordinator,
    workerUrl: services.urls.worker,
    reconcilerUrl: services.urls.reconciler,
    workTopic: messaging.workTopic.name,
    deadLetterTopic: messaging.deadLetterTopic.name,
    parkedTopic: messaging.parkedTopic.name,
    workSubscription: messaging.workSubscription.name,
    deadLetterSubscription: messaging.deadLetterSubscription.name,
    parkedSubscription: messaging.parkedSubscription.name,
    schedulerJob: job.name,
    resultsTable: pulumi.interpolate`${projectId}.${storage.resultsDataset.datasetId}.${storage.resultsTable.tableId}`,
    dashboardUrl: monitoring.dashboardUrl,
    functionSourceObject: bundle.objectName,
    serviceAccounts: Object.fromEntries(Object.entries(identities).map(([role, sa]) => [role, sa.email])),
  };
}
