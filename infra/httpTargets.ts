// `roles/run.invoker` on the Cloud Run services that HTTP pipelines call (issue #17 §4). A
// declaration that names its target (`cloudRunService`, functions/pipelines/httpPipeline.ts) gets
// one grant: that pipeline's worker's service account — each pipeline runs in its own worker
// (issue #17 §1), and its identity token is what the calls carry (auth "oidc") — on exactly that
// service. Nothing wider: no other pipeline's account, no project-level grant (the policy rule
// no-project-wide-run-invoker refuses one). A declaration without `cloudRunService` adds no
// resource; its target's IAM is the deployer's business.
import * as gcp from "@pulumi/gcp";
import type * as pulumi from "@pulumi/pulumi";
import type { Apis } from "./apis";
import type { InfraConfig } from "./config";
import type { WorkerAccounts } from "./identities";

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

/**
 * Logical name of one pipeline's grant on a target: from the service and the pipeline, so adding or
 * reordering pipelines moves nothing.
 */
export function httpTargetInvokerName(prefix: string, t: HttpTarget, pipeline: string): string {
  return [
    `${prefix}-http-target-invoker`,
    t.name,
    t.location,
    ...(t.project ? [t.project] : []),
    pipeline,
  ].join("-");
}

/** The grants, by the pipeline whose worker they are for (its worker is deployed after them). */
export function grantHttpTargetInvokers(a: {
  cfg: InfraConfig;
  projectId: pulumi.Output<string>;
  apis: Apis;
  workerAccounts: WorkerAccounts;
}): Record<string, gcp.cloudrunv2.ServiceIamMember[]> {
  const byPipeline: Record<string, gcp.cloudrunv2.ServiceIamMember[]> = {};
  for (const t of httpTargets(a.cfg))
    for (const pipeline of t.pipelines) {
      const account = a.workerAccounts[pipeline];
      if (!account) throw new Error(`no service account for pipeline ${pipeline}`);
      // Pipeline `pipeline`'s worker calls this service; Cloud Run IAM admits its token only with this role.
      const grant = new gcp.cloudrunv2.ServiceIamMember(
        httpTargetInvokerName(a.cfg.prefix, t, pipeline),
        {
          project: t.project ?? a.projectId,
          location: t.location,
          name: t.name,
          role: "roles/run.invoker",
          member: account.member,
        },
        { dependsOn: a.apis.on("run.googleapis.com") },
      );
      byPipeline[pipeline] = [...(byPipeline[pipeline] ?? []), grant];
    }
  return byPipeline;
}
