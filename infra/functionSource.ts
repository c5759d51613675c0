// Where the functions' source lives: a private bucket holding the bundle (infra/bundle) under its
// content-hashed name, and the build identity Cloud Build uses to turn it into images. An unchanged
// bundle keeps its object name, so the functions see no change and are not rebuilt.
import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import type { Apis } from "./apis";
import type { Bundle } from "./bundle/buildBundle";
import type { Identities, WorkerAccounts } from "./identities";
import { iamPropagationSeconds, PropagationWait } from "./readiness";

export interface FunctionSource {
  bucket: gcp.storage.Bucket;
  object: gcp.storage.BucketObject;
  /** Grants the build identity needs before a build can run. */
  builderGrants: pulumi.CustomResource[];
  /** Created `iamPropagationSeconds` after the builder's grants (and the handler accounts) exist. */
  builderReady: PropagationWait;
}

/**
 * Cloud Functions stages sources and uploads in buckets it creates and names gcf-v2-sources-<number>-<region>
 * and gcf-v2-uploads-<number>-<region>. In IAM conditions a Cloud Storage bucket is
 * `projects/_/buckets/NAME` and an object `projects/_/buckets/NAME/objects/OBJECT`
 * (https://cloud.google.com/iam/docs/conditions-resource-attributes), so this prefix covers both.
 */
export const gcfBucketsCondition = {
  title: "gcf-v2 buckets only",
  description: "Cloud Functions' own staging buckets (gcf-v2-sources-*, gcf-v2-uploads-*)",
  expression: 'resource.name.startsWith("projects/_/buckets/gcf-v2-")',
};

export function createFunctionSource(
  a: {
    prefix: string;
    project: pulumi.Input<string>;
    region: string;
    labels: Record<string, string>;
    bundle: Bundle;
    apis: Apis;
    identities: Identities;
    workerAccounts: WorkerAccounts;
  },
  parent?: pulumi.Resource,
): FunctionSource {
  const p = a.prefix;
  const bucket = new gcp.storage.Bucket(
    `${p}-source-bucket`,
    {
      project: a.project,
      // Bucket names are global: the project id keeps them unique.
      name: pulumi.interpolate`${a.project}-${p}-src`,
      location: a.region.toUpperCase(),
      uniformBucketLevelAccess: true,
      publicAccessPrevention: "enforced",
      // Only build inputs live here, all reproducible from the repository.
      forceDestroy: true,
      labels: a.labels,
    },
    { parent, dependsOn: a.apis.on("storage.googleapis.com") },
  );
  const object = new gcp.storage.BucketObject(
    `${p}-source-object`,
    {
      bucket: bucket.name,
      name: a.bundle.objectName,
      source: new pulumi.asset.FileAsset(a.bundle.zipPath),
      contentType: "application/zip",
    },
    { parent },
  );

  const builder = a.identities.builder.member;
  const builderGrants: pulumi.CustomResource[] = [
    // The build identity reads the uploaded source from this bucket.
    new gcp.storage.BucketIAMMember(
      `${p}-source-bucket-builder-viewer`,
      { bucket: bucket.name, role: "roles/storage.objectViewer", member: builder },
      { parent },
    ),
    // Cloud Build writes the build's logs as the build identity; logs are a project resource.
    new gcp.projects.IAMMember(
      `${p}-builder-log-writer`,
      { project: a.project, role: "roles/logging.logWriter", member: builder },
      { parent },
    ),
    // Images go to the gcf-artifacts repository Cloud Functions creates on first deploy, which does
    // not exist yet when this grant is made, so it cannot be scoped to the repository.
    new gcp.projects.IAMMember(
      `${p}-builder-artifact-writer`,
      { project: a.project, role: "roles/artifactregistry.writer", member: builder },
      { parent },
    ),
    // Cloud Functions copies the source into its own staging bucket (gcf-v2-sources-*), created by the
    // service, which the build must read; Google documents objectAdmin for the build identity. The
    // buckets do not exist before the first deploy, so the grant is project-level but conditioned
    // to the gcf-v2-* buckets rather than every bucket in the project.
    new gcp.projects.IAMMember(
      `${p}-builder-object-admin`,
      {
        project: a.project,
        role: "roles/storage.objectAdmin",
        member: builder,
        condition: gcfBucketsCondition,
      },
      { parent },
    ),
  ];
  // IAM grants (and new service accounts) take minutes to propagate; the builds wait for them.
  const builderReady = new PropagationWait(
    `${p}-builder-iam-propagation`,
    {
      seconds: iamPropagationSeconds,
      reason: "IAM grants to the build service account propagate before the function builds use them",
      // A grant's id names its resource, role, member (and condition): a changed set waits again.
      covers: builderGrants.map((g) => g.id),
    },
    {
      parent,
      dependsOn: [
        ...builderGrants,
        a.identities.coordinator,
        a.identities.reconciler,
        ...Object.values(a.workerAccounts),
      ],
    },
  );
  return { bucket, object, builderGrants, builderReady };
}
