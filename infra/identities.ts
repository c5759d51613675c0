// Service accounts: one per handler (what the code runs as), one per caller of a handler (the
// identity in the OIDC token Pub/Sub or Cloud Scheduler attaches), and one for building the
// function source. Each grant is made next to the resource it is scoped to (messaging.ts,
// services.ts, storage.ts, functionSource.ts); this file only creates the accounts.
import * as gcp from "@pulumi/gcp";
import type * as pulumi from "@pulumi/pulumi";

export const identityRoles = {
  coordinator: { suffix: "coord", purpose: "runs the coordinator (HTTP API and dashboard)" },
  worker: { suffix: "worker", purpose: "runs the worker (processes items pushed by Pub/Sub)" },
  reconciler: { suffix: "recon", purpose: "runs the reconciler (scheduled repair, dead-letter recording)" },
  workPush: { suffix: "push", purpose: "identity of the work subscription's pushes to the worker" },
  deadLetterPush: {
    suffix: "dlq",
    purpose: "identity of the dead-letter subscription's pushes to the reconciler",
  },
  scheduler: { suffix: "sched", purpose: "identity of the Cloud Scheduler job calling the reconciler" },
  builder: { suffix: "build", purpose: "Cloud Build identity that builds the function source" },
} as const;

export type IdentityRole = keyof typeof identityRoles;
export type Identities = Record<IdentityRole, gcp.serviceaccount.Account>;

/** Service-account ids are 6..30 characters; the prefix is at most 20, the longest suffix 6. */
export function accountId(prefix: string, role: IdentityRole): string {
  return `${prefix}-${identityRoles[role].suffix}`;
}

export function createIdentities(
  prefix: string,
  project: pulumi.Input<string>,
  opts: { parent?: pulumi.Resource; dependsOn: pulumi.Resource[] },
): Identities {
  const ids = {} as Identities;
  for (const role of Object.keys(identityRoles) as IdentityRole[]) {
    ids[role] = new gcp.serviceaccount.Account(
      `${prefix}-sa-${role}`,
      {
        project,
        accountId: accountId(prefix, role),
        displayName: `Tally ${prefix} ${role}`,
        description: `Tally (${prefix}): ${identityRoles[role].purpose}`,
      },
      opts,
    );
  }
  return ids;
}
