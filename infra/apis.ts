// The Google APIs the stack uses, enabled by the stack itself so a first `pulumi up` on a fresh
// project works, and the Pub/Sub service agent (the identity Pub/Sub uses to dead-letter messages),
// created explicitly because it only exists once Pub/Sub has been used in the project. Resources that
// need an API depend on it through `apiDependencies`.
import * as gcp from "@pulumi/gcp";
import type * as pulumi from "@pulumi/pulumi";

export const requiredApis = [
  "artifactregistry.googleapis.com", // Cloud Functions stores the built images here
  "bigquery.googleapis.com",
  "cloudbuild.googleapis.com", // builds the function source into images
  "cloudfunctions.googleapis.com",
  "cloudscheduler.googleapis.com",
  "firestore.googleapis.com",
  "iam.googleapis.com",
  "logging.googleapis.com",
  "monitoring.googleapis.com",
  "pubsub.googleapis.com",
  "run.googleapis.com", // Cloud Run functions run as Cloud Run services
  "secretmanager.googleapis.com", // pipelines' secrets, mounted as environment variables (issue #17 §1)
  "storage.googleapis.com",
] as const;

export type Api = (typeof requiredApis)[number];

export interface Apis {
  services: Record<Api, gcp.projects.Service>;
  /** The Pub/Sub service agent, `service-<number>@gcp-sa-pubsub.iam.gserviceaccount.com`. */
  pubsubAgent: gcp.projects.ServiceIdentity;
  /** dependsOn for resources that need these APIs. */
  on(...apis: Api[]): pulumi.Resource[];
}

export function enableApis(prefix: string, project: pulumi.Input<string>, parent?: pulumi.Resource): Apis {
  const services = {} as Record<Api, gcp.projects.Service>;
  for (const api of requiredApis) {
    services[api] = new gcp.projects.Service(
      `${prefix}-api-${api.split(".")[0]}`,
      {
        project,
        service: api,
        // Other stacks and workloads in the project may use the same API: never switch it off.
        disableOnDestroy: false,
        disableDependentServices: false,
      },
      { parent },
    );
  }
  const pubsubAgent = new gcp.projects.ServiceIdentity(
    `${prefix}-pubsub-agent`,
    { project, service: "pubsub.googleapis.com" },
    { parent, dependsOn: [services["pubsub.googleapis.com"]] },
  );
  return {
    services,
    pubsubAgent,
    on: (...apis) => apis.map((a) => services[a]),
  };
}
