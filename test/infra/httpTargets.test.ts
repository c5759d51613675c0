// roles/run.invoker on the Cloud Run services HTTP pipelines call (issue #17 §4), under Pulumi mocks:
// a declaration with cloudRunService gets one grant to its own pipeline's worker account on exactly
// that service (defaults: the stack's project and region) — two pipelines calling one service get one
// grant each, never a grant to another pipeline's account — that worker is deployed after its grants,
// and nothing is added when no target is declared. The policy pack passes on the stack with targets.
import { beforeAll, describe, expect, it } from "vitest";
import { checkAll, type ResourceRecord, types } from "../../infra/policy/rules";
import { mockProject, runStack, type StackRun } from "./support/pulumiMocks";

const serviceIamMember = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember";
const P = mockProject.projectId;
const workerMember = (pipeline: string) =>
  `serviceAccount:tally-dev-w-${pipeline}@${P}.iam.gserviceaccount.com`;
/** The stack's own services: their grants are checked in stack.test.ts. */
const isOwnService = (name: string) => name.startsWith("tally-dev-");

const pipelines = [
  {
    name: "predict",
    url: `https://predict-${mockProject.number}.us-central1.run.app/v1/predict`,
    timeoutSeconds: 60,
    auth: "oidc",
    cloudRunService: { name: "predict" },
  },
  // A second pipeline on the same service: its own grant, to its own worker's account.
  {
    name: "predict-batch",
    url: `https://predict-${mockProject.number}.us-central1.run.app/v1/predict-batch`,
    timeoutSeconds: 60,
    auth: "oidc",
    cloudRunService: { name: "predict" },
  },
  // Another project and region, behind a custom domain.
  {
    name: "rank",
    url: "https://rank.ml.example.com/v1/rank",
    timeoutSeconds: 30,
    auth: "oidc",
    cloudRunService: { name: "ranker", location: "europe-west4", project: "ml-serving-prod" },
  },
  // No target named: its IAM is the deployer's business, nothing is granted.
  { name: "geocode", url: "https://geo.example.com/v1", timeoutSeconds: 10 },
];

const targetGrants = (run: StackRun) =>
  run.ofType(serviceIamMember).filter((g) => !isOwnService(g.props.name));

describe("run.invoker on declared Cloud Run targets", () => {
  let plain: StackRun;
  let declared: StackRun;
  const runs: Record<string, StackRun> = {};
  const await_ = (name: string) => runs[name]!;
  /** Resources one more pipeline adds: its account, worker, push invoker, topic, subscription, the
   * agent's subscriber grant, three publisher grants, and its ledger/results/export grants. */
  const perPipeline = 12;
  beforeAll(async () => {
    plain = await runStack({});
    declared = await runStack({ httpPipelines: JSON.stringify(pipelines) });
    runs.withoutTarget = await runStack({ httpPipelines: JSON.stringify([pipelines[3]]) });
  });

  it("grants each calling pipeline's worker account roles/run.invoker on exactly its declared service", () => {
    const grants = targetGrants(declared)
      .map((g) => ({ logicalName: g.name, ...g.props }))
      .sort((a, b) => a.logicalName.localeCompare(b.logicalName));
    expect(grants).toEqual([
      {
        logicalName: "tally-dev-http-target-invoker-predict-us-central1-predict",
        project: P,
        location: "us-central1",
        name: "predict",
        role: "roles/run.invoker",
        member: workerMember("predict"),
      },
      {
        logicalName: "tally-dev-http-target-invoker-predict-us-central1-predict-batch",
        project: P,
        location: "us-central1",
        name: "predict",
        role: "roles/run.invoker",
        member: workerMember("predict-batch"),
      },
      {
        logicalName: "tally-dev-http-target-invoker-ranker-europe-west4-ml-serving-prod-rank",
        project: "ml-serving-prod",
        location: "europe-west4",
        name: "ranker",
        role: "roles/run.invoker",
        member: workerMember("rank"),
      },
    ]);
    // The member is the identity that pipeline's worker function runs as, not merely an account of that name.
    for (const pipeline of ["predict", "predict-batch", "rank"]) {
      const worker = declared
        .ofType(types.function)
        .find((f) => f.props.name === `tally-dev-worker-${pipeline}`) as ResourceRecord;
      expect(`serviceAccount:${worker.props.serviceConfig.serviceAccountEmail}`).toBe(workerMember(pipeline));
    }
  });

  it("adds nothing when no target is declared, and exactly one grant per calling pipeline", () => {
    expect(targetGrants(plain)).toEqual([]);
    // A declared pipeline without a target (geocode) is a unit of its own all the same, with no target grant.
    const withoutTarget = await_("withoutTarget");
    expect(withoutTarget.resources.length - plain.resources.length).toBe(perPipeline);
    expect(targetGrants(withoutTarget)).toEqual([]);
    expect(declared.resources.length - plain.resources.length).toBe(4 * perPipeline + 3);
  });

  it("deploys the worker after the grants (a call before them is a 403, which fails items permanently)", () => {
    const grantUrns = targetGrants(declared).map((g) => g.urn!);
    const fn = (name: string) => declared.ofType(types.function).find((f) => f.props.name === name)!;
    for (const g of targetGrants(declared)) {
      const pipeline = String(g.props.member).match(/tally-dev-w-([a-z-]+)@/)![1]!;
      expect(fn(`tally-dev-worker-${pipeline}`).dependencies).toContain(g.urn);
    }
    for (const other of [
      "tally-dev-coordinator",
      "tally-dev-reconciler",
      "tally-dev-worker-geocode",
      "tally-dev-worker-demo",
    ])
      expect(fn(other).dependencies?.filter((d) => grantUrns.includes(d))).toEqual([]);
  });

  it("passes every policy in the pack", () => {
    expect(checkAll(declared.resources)).toEqual([]);
  });

  it("a target without auth oidc is refused before any resource is registered, naming the field", async () => {
    const bad = [{ ...pipelines[0], auth: "none" }];
    await expect(runStack({ httpPipelines: JSON.stringify(bad) })).rejects.toThrow(
      'tally:httpPipelines[0].cloudRunService: only applies with auth "oidc"',
    );
  });
});
