// roles/run.invoker on the Cloud Run services HTTP pipelines call (issue #17 §4), under Pulumi mocks:
// a declaration with cloudRunService gets one grant to the worker's service account on exactly that
// service (defaults: the stack's project and region), pipelines sharing a service share one grant,
// the worker is deployed after the grants, and nothing is added when no target is declared. The
// policy pack passes on the stack with targets.
import { beforeAll, describe, expect, it } from "vitest";
import { checkAll, type ResourceRecord, types } from "../../infra/policy/rules";
import { mockProject, runStack, type StackRun } from "./support/pulumiMocks";

const serviceIamMember = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember";
const P = mockProject.projectId;
const workerMember = `serviceAccount:tally-dev-worker@${P}.iam.gserviceaccount.com`;
/** The stack's own services: their grants are checked in stack.test.ts. */
const ownServices = ["tally-dev-coordinator", "tally-dev-worker", "tally-dev-reconciler"];

const pipelines = [
  {
    name: "predict",
    url: `https://predict-${mockProject.number}.us-central1.run.app/v1/predict`,
    timeoutSeconds: 60,
    auth: "oidc",
    cloudRunService: { name: "predict" },
  },
  // A second pipeline on the same service: one grant serves both.
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
  run.ofType(serviceIamMember).filter((g) => !ownServices.includes(g.props.name));

describe("run.invoker on declared Cloud Run targets", () => {
  let plain: StackRun;
  let declared: StackRun;
  beforeAll(async () => {
    plain = await runStack({});
    declared = await runStack({ httpPipelines: JSON.stringify(pipelines) });
  });

  it("grants the worker's account roles/run.invoker on exactly each declared service, once per service", () => {
    const grants = targetGrants(declared)
      .map((g) => ({ logicalName: g.name, ...g.props }))
      .sort((a, b) => a.logicalName.localeCompare(b.logicalName));
    expect(grants).toEqual([
      {
        logicalName: "tally-dev-http-target-invoker-predict-us-central1",
        project: P,
        location: "us-central1",
        name: "predict",
        role: "roles/run.invoker",
        member: workerMember,
      },
      {
        logicalName: "tally-dev-http-target-invoker-ranker-europe-west4-ml-serving-prod",
        project: "ml-serving-prod",
        location: "europe-west4",
        name: "ranker",
        role: "roles/run.invoker",
        member: workerMember,
      },
    ]);
    // The member is the identity the worker function runs as, not merely an account of that name.
    const worker = declared
      .ofType(types.function)
      .find((f) => f.props.name === "tally-dev-worker") as ResourceRecord;
    expect(`serviceAccount:${worker.props.serviceConfig.serviceAccountEmail}`).toBe(workerMember);
  });

  it("adds nothing when no target is declared, and exactly one resource per declared service", () => {
    expect(targetGrants(plain)).toEqual([]);
    expect(declared.resources.length - plain.resources.length).toBe(2);
    // The stack's own invoker grants are the same either way.
    const own = (run: StackRun) =>
      run
        .ofType(serviceIamMember)
        .filter((g) => ownServices.includes(g.props.name))
        .map((g) => g.name)
        .sort();
    expect(own(declared)).toEqual(own(plain));
  });

  it("deploys the worker after the grants (a call before them is a 403, which fails items permanently)", () => {
    const grantUrns = targetGrants(declared).map((g) => g.urn!);
    const fn = (name: string) => declared.ofType(types.function).find((f) => f.props.name === name)!;
    for (const urn of grantUrns) expect(fn("tally-dev-worker").dependencies).toContain(urn);
    for (const other of ["tally-dev-coordinator", "tally-dev-reconciler"])
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
