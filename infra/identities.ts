// Service accounts: one per handler (what the code runs as) — the coordinator, the reconciler and
// one worker per pipeline (issue #17 §1: a pipeline's secrets and targets are granted to its
// worker's account only) — one per caller of a handler (the identity in the OIDC token Pub/Sub or
// Cloud Scheduler attaches), and one for building the function source. Each grant is made next to the resource it is scoped to (messaging.ts,
// services.ts, storage.ts, functionSource.ts); this file only creates the accounts.
import * as gcp from "@pulumi/gcp";
import type * as pulumi from "@pulumi/pulumi";
import type { Topology } from "../functions/topology";

export const identityRoles = {
  coordinator: { suffix: "coord", purpose: "runs the coordinator (HTTP API and dashboard)" },
  reconciler: { suffix: "recon", purpose: "runs the reconciler (scheduled repair, dead-letter recording)" },
  workPush: {
    suffix: "push",
    purpose: "identity of the work subscriptions' pushes to the pipelines' workers",
  },
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

/** Pipeline name → the account its worker runs as (id from the topology: functions/topology.ts). */
export type WorkerAccounts = Record<string, gcp.serviceaccount.Account>;

export function createWorkerAccounts(
  topology: Topology,
  project: pulumi.Input<string>,
  opts: { parent?: pulumi.Resource; dependsOn: pulumi.Resource[] },
): WorkerAccounts {
  const out: WorkerAccounts = {};
  for (const x of topology.pipelines)
    out[x.pipeline] = new gcp.serviceaccount.Account(
      `${topology.prefix}-sa-worker-${x.pipeline}`,
      {
        project,
        accountId: x.workerAccountId,
        displayName: `Tally ${topology.prefix} worker ${x.pipeline}`.slice(0, 100),
        description: `Tally (${topology.prefix}): runs pipeline ${x.pipeline}'s worker (its items only)`,
      },
      opts,
    );
  return out;
}

/**
 * Every account that runs handler code, keyed for logical resource names: "coordinator",
 * "reconciler" and "worker-<pipeline>". Grants every handler needs (the ledger, the results) go to each.
 */
export function handlerAccounts(
  identities: Identities,
  workers: WorkerAccounts,
): [string, gcp.serviceaccount.Account][] {
  return [
    ["coordinator", identities.coordinator],
    ["reconciler", identities.reconciler],
    ...Object.entries(workers).map(([pipeline, sa]): [string, gcp.serviceaccount.Account] => [
      `worker-${pipeline}`,
      sa,
    ]),
  ];
}
