// The Cloud Scheduler job that runs the reconciler: POST /reconcile on the reconciler's run.app URL
// with an OIDC token (audience = the service URL, the value the reconciler verifies). A tick's work
// is bounded, and two overlapping ticks are safe (the reconciler is idempotent), so a failed attempt
// is retried briefly and otherwise left to the next tick.
import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import type { Apis } from "./apis";
import type { InfraConfig } from "./config";
import type { Identities } from "./identities";

/** Cloud Scheduler accepts HTTP attempt deadlines of 15 s..30 min. */
export function attemptDeadlineSeconds(handlerTimeoutSeconds: number): number {
  return Math.min(1800, Math.max(15, handlerTimeoutSeconds));
}

export function createScheduling(
  a: {
    cfg: InfraConfig;
    project: pulumi.Input<string>;
    apis: Apis;
    identities: Identities;
    reconcilerUrl: pulumi.Input<string>;
    reconcilerReady: pulumi.Resource[];
  },
  parent?: pulumi.Resource,
): gcp.cloudscheduler.Job {
  const t = a.cfg.topology;
  return new gcp.cloudscheduler.Job(
    `${t.prefix}-reconcile-job`,
    {
      project: a.project,
      region: a.cfg.region,
      name: t.schedulerJob,
      description: `Tally (${t.prefix}): reconciler tick — redrive lapsed leases, resume submissions, finalize`,
      schedule: t.reconcile.schedule,
      timeZone: t.reconcile.timeZone,
      attemptDeadline: `${attemptDeadlineSeconds(a.cfg.reconciler.timeoutSeconds)}s`,
      retryConfig: {
        retryCount: 2,
        minBackoffDuration: "5s",
        maxBackoffDuration: "30s",
        maxDoublings: 2,
      },
      httpTarget: {
        uri: pulumi.interpolate`${a.reconcilerUrl}${t.reconcilePath}`,
        httpMethod: "POST",
        headers: { "Content-Type": "application/json" },
        body: Buffer.from("{}").toString("base64"),
        oidcToken: {
          serviceAccountEmail: a.identities.scheduler.email,
          audience: a.reconcilerUrl,
        },
      },
    },
    { parent, dependsOn: [...a.apis.on("cloudscheduler.googleapis.com"), ...a.reconcilerReady] },
  );
}
