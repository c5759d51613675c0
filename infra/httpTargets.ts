// `roles/run.invoker` on the Cloud Run services that HTTP pipelines call (issue #17 §4). A
// declaration that names its target (`cloudRunService`, functions/pipelines/httpPipeline.ts) gets
// one grant: the worker's service account — every pipeline runs in the one worker, and its identity
// token is what the calls carry (auth "oidc") — on exactly that service. Nothing wider: no
// project-level grant (the policy rule no-project-wide-run-invoker refuses one). A declaration
// without `cloudRunService` adds no resource; its target's IAM is the deployer's business.
import * as gcp from "@pulumi/gcp";
import type * as pulumi from "@pulumi/pulumi";
import type { Apis } from "./apis";
import type { InfraConfig } from "./config";
import type { Identities } from "./identities";

export interface HttpTarget {
  name: string;
  location: string;
  /** Undefined: the stack's own project. */
  project?: string;
  /** The pipelines that call it. */
  pipelines: string[];
}

/** The declared Cloud Run targets, one per service: two pipelines calling one service share its grant. */
export function httpTargets(cfg: InfraConfig): HttpTarget[] {
  const byKey = new Map<string, HttpTarget>();
  for (const d of cfg.httpPipelines) {
    const s = d.cloudRunService;
    if (!s) continue;
    const target = { name: s.name, location: s.location ?? cfg.region, project: s.project };
    const key = `${target.project ?? ""}/${target.location}/${target.name}`;
    const known = byKey.get(key);
    if (known) known.pipelines.push(d.name);
    else byKey.set(key, { ...target, pipelines: [d.name] });
  }
  return [...byKey.values()];
}

/** Logical name of a target's grant: from the service, so adding or reordering pipelines moves nothing. */
export function httpTargetInvokerName(prefix: string, t: HttpTarget): string {
  return [`${prefix}-http-target-invoker`, t.name, t.location, ...(t.project ? [t.project] : [])].join("-");
}

export function grantHttpTargetInvokers(a: {
  cfg: InfraConfig;
  projectId: pulumi.Output<string>;
  apis: Apis;
  identities: Identities;
}): gcp.cloudrunv2.ServiceIamMember[] {
  return httpTargets(a.cfg).map(
    (t) =>
      // The worker calls this service for its HTTP pipelines; Cloud Run IAM admits its token only with this role.
      new gcp.cloudrunv2.ServiceIamMember(
        httpTargetInvokerName(a.cfg.prefix, t),
        {
          project: t.project ?? a.projectId,
          location: t.location,
          name: t.name,
          role: "roles/run.invoker",
          member: a.identities.worker.member,
        },
        { dependsOn: a.apis.on("run.googleapis.com") },
      ),
  );
}
