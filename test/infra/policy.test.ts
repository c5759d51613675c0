// The policy rules, run offline over the resources the mocked program registers: the real stack
// passes, and each deliberately broken copy is reported by the rule that guards it. The pack wiring
// (infra/policy/index.ts) is checked by loading it against a recording PolicyPack.
import { beforeAll, describe, expect, it, vi } from "vitest";
import { checkAll, type ResourceRecord, rules, types, type Violation } from "../../infra/policy/rules";
import { mockProject, runStack } from "./support/pulumiMocks";

let stack: ResourceRecord[];
beforeAll(async () => {
  stack = (await runStack({ alertEmail: "ops@example.com" })).resources;
});

/** A deep copy of the stack with one change. */
function broken(change: (resources: ResourceRecord[]) => void): ResourceRecord[] {
  const copy = structuredClone(stack);
  change(copy);
  return copy;
}
// biome-ignore lint/suspicious/noExplicitAny: resource properties are provider JSON.
const find = (resources: ResourceRecord[], type: string, pred: (props: Record<string, any>) => boolean) => {
  const r = resources.find((x) => x.type === type && pred(x.props));
  if (!r) throw new Error(`no ${type} matches`);
  return r;
};
const workSub = (rs: ResourceRecord[]) =>
  find(rs, types.subscription, (p) => p.name === "tally-dev-work-demo-push");
const ruleNames = (violations: Violation[]) => [...new Set(violations.map((v) => v.rule))];
const project = mockProject.projectId;

describe("policy rules over the mocked stack", () => {
  it("the stack as declared passes every rule", () => {
    expect(stack.length).toBeGreaterThan(50);
    expect(checkAll(stack)).toEqual([]);
  });

  it("a subscription without a dead-letter policy is reported", () => {
    const v = checkAll(broken((rs) => delete workSub(rs).props.deadLetterPolicy));
    expect(ruleNames(v)).toEqual(["subscriptions-dead-letter"]);
    expect(v[0]!.message).toContain("subscription tally-dev-work-demo-push has no dead-letter policy");
    expect(v[0]!.urn).toContain("tally-dev-sub-work-demo");
  });

  it("an out-of-range maxDeliveryAttempts is reported", () => {
    const v = checkAll(broken((rs) => (workSub(rs).props.deadLetterPolicy.maxDeliveryAttempts = 3)));
    expect(v.map((x) => x.message)).toEqual([
      "subscription tally-dev-work-demo-push must set deadLetterPolicy.maxDeliveryAttempts in 5..100 (got 3)",
      // …and its worker still counts on 10.
      "worker tally-dev-worker-demo runs with maxDeliveryAttempts 10 but subscription tally-dev-work-demo-push's deadLetterPolicy.maxDeliveryAttempts is 3: the worker and Pub/Sub would disagree about this pipeline's delivery",
    ]);
  });

  it("a subscription that can expire is reported", () => {
    const v = checkAll(broken((rs) => delete workSub(rs).props.expirationPolicy));
    expect(ruleNames(v)).toEqual(["subscriptions-never-expire"]);
    expect(v[0]!.message).toContain('must set expirationPolicy.ttl to ""');
  });

  it("a missing publisher grant to the Pub/Sub service agent on the dead-letter topic is reported", () => {
    const v = checkAll(
      broken((rs) => {
        const grant = find(rs, types.topicIamMember, (p) => p.topic === "tally-dev-work-dead-letter");
        rs.splice(rs.indexOf(grant), 1);
      }),
    );
    expect(v.map((x) => [x.rule, x.message])).toEqual([
      [
        "dead-letter-grants",
        "the Pub/Sub service agent needs roles/pubsub.publisher on dead-letter topic tally-dev-work-dead-letter (used by subscription tally-dev-work-demo-push)",
      ],
      [
        "dead-letter-grants",
        "the Pub/Sub service agent needs roles/pubsub.publisher on dead-letter topic tally-dev-work-dead-letter (used by subscription tally-dev-work-text-stats-push)",
      ],
    ]);
  });

  it("a subscriber grant to the wrong member is reported", () => {
    const v = checkAll(
      broken((rs) => {
        const grant = find(
          rs,
          types.subscriptionIamMember,
          (p) => p.subscription === "tally-dev-work-demo-push",
        );
        grant.props.member = `serviceAccount:tally-dev-w-demo@${project}.iam.gserviceaccount.com`;
      }),
    );
    expect(v.map((x) => x.message)).toEqual([
      "the Pub/Sub service agent needs roles/pubsub.subscriber on subscription tally-dev-work-demo-push to forward its dead letters",
    ]);
  });

  it("a dead-letter topic nobody subscribes to is reported", () => {
    const v = checkAll(
      broken((rs) => {
        const hold = find(rs, types.subscription, (p) => p.name === "tally-dev-work-dead-letter-parked-hold");
        rs.splice(rs.indexOf(hold), 1);
      }),
    );
    expect(ruleNames(v)).toEqual(["dead-letter-topics-subscribed"]);
  });

  it("a pull subscription on an ordinary topic still needs a dead-letter policy", () => {
    const v = checkAll(
      broken((rs) => {
        const hold = find(rs, types.subscription, (p) => p.name === "tally-dev-work-dead-letter-parked-hold");
        hold.props.topic = "tally-dev-work-demo";
      }),
    );
    expect(ruleNames(v)).toContain("subscriptions-dead-letter");
  });

  it("public principals are reported wherever they appear", () => {
    const v = checkAll(
      broken((rs) => {
        rs.push({
          type: "gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
          name: "oops-public",
          props: { name: "tally-dev-coordinator", role: "roles/run.invoker", member: "allUsers" },
        });
        rs.push({
          type: types.projectIamPolicy,
          name: "oops-policy",
          props: {
            project,
            policyData: JSON.stringify({
              bindings: [{ role: "roles/viewer", members: ["allAuthenticatedUsers"] }],
            }),
          },
        });
      }),
    );
    expect(v.filter((x) => x.rule === "no-public-principals").map((x) => x.resource)).toEqual([
      "oops-public",
      "oops-policy",
    ]);
  });

  it("a push subscription or scheduler job without OIDC is reported", () => {
    const v = checkAll(
      broken((rs) => {
        delete workSub(rs).props.pushConfig.oidcToken;
        delete find(rs, types.schedulerJob, () => true).props.httpTarget.oidcToken.audience;
      }),
    );
    expect(v.filter((x) => x.rule === "push-and-scheduler-use-oidc").map((x) => x.resource)).toEqual([
      "tally-dev-sub-work-demo",
      "tally-dev-reconcile-job",
    ]);
  });

  it("an ack deadline shorter than the worker's timeout, or other than the one its worker runs with, is reported", () => {
    const v = checkAll(broken((rs) => (workSub(rs).props.ackDeadlineSeconds = 60)));
    expect(v.map((x) => [x.rule, x.message])).toEqual([
      [
        "deadlines-cover-timeouts",
        "subscription tally-dev-work-demo-push has ackDeadlineSeconds 60, shorter than the timeout of tally-dev-worker-demo (540 s): Pub/Sub would redeliver while the first delivery still runs",
      ],
      [
        "pipeline-delivery-consistent",
        "worker tally-dev-worker-demo runs with ackDeadlineSeconds 600 but subscription tally-dev-work-demo-push's ackDeadlineSeconds is 60: the worker and Pub/Sub would disagree about this pipeline's delivery",
      ],
    ]);
  });

  it("a worker whose delivery settings differ from its subscription's or function's is reported", () => {
    const v = checkAll(
      broken((rs) => {
        workSub(rs).props.deadLetterPolicy.maxDeliveryAttempts = 20;
        const demo = find(rs, types.function, (p) => p.name === "tally-dev-worker-demo");
        demo.props.serviceConfig.timeoutSeconds = 500;
      }),
    );
    expect(v.filter((x) => x.rule === "pipeline-delivery-consistent").map((x) => x.message)).toEqual([
      "worker tally-dev-worker-demo runs with maxDeliveryAttempts 10 but subscription tally-dev-work-demo-push's deadLetterPolicy.maxDeliveryAttempts is 20: the worker and Pub/Sub would disagree about this pipeline's delivery",
      "worker tally-dev-worker-demo runs with workerTimeoutSeconds 540 but its function timeoutSeconds is 500: the worker and Pub/Sub would disagree about this pipeline's delivery",
    ]);
  });

  it("a pipeline worker fed by no subscription, or by two, is reported", () => {
    const none = checkAll(
      broken((rs) => {
        const demoSub = workSub(rs);
        const other = find(rs, types.subscription, (p) => p.name === "tally-dev-work-text-stats-push");
        other.props.pushConfig = structuredClone(demoSub.props.pushConfig);
      }),
    );
    expect(none.filter((x) => x.rule === "pipeline-delivery-consistent").map((x) => x.resource)).toEqual([
      "tally-dev-fn-worker-demo",
      "tally-dev-fn-worker-text-stats",
    ]);
    expect(none.find((x) => x.resource === "tally-dev-fn-worker-text-stats")!.message).toContain(
      "is the push target of 0 subscriptions",
    );
  });

  it("a scheduler attempt deadline shorter than the reconciler's timeout is reported", () => {
    const v = checkAll(
      broken((rs) => (find(rs, types.schedulerJob, () => true).props.attemptDeadline = "30s")),
    );
    expect(ruleNames(v)).toEqual(["deadlines-cover-timeouts"]);
    expect(v[0]!.message).toContain(
      "attemptDeadline 30 s, shorter than the timeout of tally-dev-reconciler (300 s)",
    );
  });

  it("project-wide Pub/Sub and token-creator grants are reported", () => {
    const v = checkAll(
      broken((rs) => {
        const base = find(rs, types.projectIamMember, (p) => p.role === "roles/datastore.user");
        rs.push({
          ...structuredClone(base),
          name: "wide-pubsub",
          props: { ...base.props, role: "roles/pubsub.editor" },
        });
        rs.push({
          type: types.projectIamBinding,
          name: "wide-token",
          props: { project, role: "roles/iam.serviceAccountTokenCreator", members: [base.props.member] },
        });
      }),
    );
    expect(
      v.filter((x) => x.rule === "no-project-wide-pubsub-or-token-creator").map((x) => x.resource),
    ).toEqual(["wide-pubsub", "wide-token"]);
  });

  it("a project-wide roles/run.invoker is reported, with or without a condition", () => {
    const worker = `serviceAccount:tally-dev-w-demo@${project}.iam.gserviceaccount.com`;
    const v = checkAll(
      broken((rs) => {
        rs.push({
          type: types.projectIamMember,
          name: "wide-invoker",
          props: {
            project,
            role: "roles/run.invoker",
            member: worker,
            condition: { title: "predict", expression: 'resource.name.endsWith("/services/predict")' },
          },
        });
        rs.push({
          type: types.projectIamBinding,
          name: "wide-invoker-binding",
          props: { project, role: "roles/run.invoker", members: [worker] },
        });
      }),
    );
    expect(v.filter((x) => x.rule === "no-project-wide-run-invoker").map((x) => x.resource)).toEqual([
      "wide-invoker",
      "wide-invoker-binding",
    ]);
    expect(v.find((x) => x.rule === "no-project-wide-run-invoker")!.message).toContain(worker);
  });

  it("roles/datastore.user for an identity that runs no handler is reported", () => {
    const push = `serviceAccount:tally-dev-push@${project}.iam.gserviceaccount.com`;
    const v = checkAll(
      broken((rs) => {
        rs.push({
          type: types.projectIamMember,
          name: "push-datastore",
          props: { project, role: "roles/datastore.user", member: push },
        });
      }),
    );
    expect(v.map((x) => [x.rule, x.resource])).toEqual([
      ["datastore-user-only-for-handlers", "push-datastore"],
    ]);
    expect(v[0]!.message).toContain(push);
  });

  it("an alert policy without a channel, while one is configured, is reported", () => {
    const v = checkAll(
      broken(
        (rs) =>
          (find(rs, types.alertPolicy, (p) =>
            p.displayName.includes("batches failed"),
          ).props.notificationChannels = []),
      ),
    );
    expect(v.map((x) => x.rule)).toEqual(["alerts-notify"]);
    expect(v[0]!.message).toContain("Tally tally-dev: batches failed");
    // Without any channel configured, silent alert policies are allowed.
    const noChannel = broken((rs) => {
      rs.splice(
        rs.findIndex((r) => r.type === types.notificationChannel),
        1,
      );
      for (const a of rs.filter((r) => r.type === types.alertPolicy)) a.props.notificationChannels = [];
    });
    expect(checkAll(noChannel)).toEqual([]);
  });
});

describe("least privilege and the grants the deployed system needs", () => {
  const builder = `serviceAccount:tally-dev-build@${project}.iam.gserviceaccount.com`;
  const objectAdmin = (rs: ResourceRecord[]) =>
    find(rs, types.projectIamMember, (p) => p.role === "roles/storage.objectAdmin");

  it("the build account's objectAdmin is conditioned to the gcf-v2-* buckets in Cloud Storage's resource-name form", () => {
    expect(objectAdmin(stack).props.condition).toMatchObject({
      expression: 'resource.name.startsWith("projects/_/buckets/gcf-v2-")',
    });
  });

  it("a project-level grant without a condition, outside the allowed list, is reported (the old objectAdmin)", () => {
    const v = checkAll(broken((rs) => delete objectAdmin(rs).props.condition));
    expect(v.map((x) => [x.rule, x.resource])).toEqual([
      ["project-grants-scoped", "tally-dev-builder-object-admin"],
    ]);
    expect(v[0]!.message).toBe(
      `roles/storage.objectAdmin is granted on the whole project to ${builder} without a condition: scope it to the resource (or an IAM condition)`,
    );
    // Any other role too, e.g. an editor grant slipped in.
    const v2 = checkAll(
      broken((rs) =>
        rs.push({
          type: types.projectIamMember,
          name: "wide",
          props: { project, role: "roles/editor", member: "user:someone@example.com" },
        }),
      ),
    );
    expect(v2.map((x) => [x.rule, x.resource])).toEqual([["project-grants-scoped", "wide"]]);
  });

  it("a storage condition naming buckets in another form (matches nothing in IAM) is reported", () => {
    const v = checkAll(
      broken(
        (rs) =>
          (objectAdmin(rs).props.condition.expression =
            `resource.name.startsWith("projects/${project}/buckets/gcf-v2-")`),
      ),
    );
    expect(v.map((x) => x.rule)).toEqual(["project-grants-scoped"]);
    expect(v[0]!.message).toContain('does not scope by resource.name.startsWith("projects/_/buckets/…")');
  });

  it("a push subscription whose OIDC account lacks the Pub/Sub agent's token-creator grant is reported", () => {
    const v = checkAll(
      broken((rs) => {
        const grant = find(rs, types.serviceAccountIamMember, (p) =>
          String(p.serviceAccountId).endsWith("tally-dev-dlq@tally-test-project.iam.gserviceaccount.com"),
        );
        rs.splice(rs.indexOf(grant), 1);
      }),
    );
    expect(v.map((x) => [x.rule, x.resource])).toEqual([
      ["push-identity-token-creator", "tally-dev-sub-dead-letter"],
    ]);
    expect(v[0]!.message).toContain(
      `signs its OIDC tokens as tally-dev-dlq@${project}.iam.gserviceaccount.com, but the Pub/Sub service agent has no roles/iam.serviceAccountTokenCreator`,
    );
    // Granted to someone else than the agent: still reported.
    const v2 = checkAll(
      broken((rs) => {
        for (const g of rs.filter((r) => r.type === types.serviceAccountIamMember)) g.props.member = builder;
      }),
    );
    // Both pipelines' work subscriptions (one push identity) and the dead-letter subscription.
    expect(v2.filter((x) => x.rule === "push-identity-token-creator")).toHaveLength(3);
  });

  it("every BigQuery exporter holds bigquery.jobs.create and bigquery.jobs.get; roles/bigquery.jobUser alone is reported", () => {
    const exporters = stack
      .filter(
        (r) =>
          r.type === types.function && r.props.serviceConfig.environmentVariables.TALLY_SINK === "bigquery",
      )
      .map((f) => f.props.name);
    expect(exporters).toEqual([
      "tally-dev-coordinator",
      "tally-dev-reconciler",
      "tally-dev-worker-demo",
      "tally-dev-worker-text-stats",
    ]);
    const v = checkAll(
      broken((rs) => {
        for (const g of rs.filter(
          (r) => r.type === types.projectIamMember && String(r.props.role).includes("bigquery_exporter"),
        ))
          g.props.role = "roles/bigquery.jobUser";
      }),
    );
    // (roles/bigquery.jobUser on the project is also an unconditioned grant outside the allowed list.)
    expect(v.filter((x) => x.rule === "project-grants-scoped")).toHaveLength(4);
    expect(v.filter((x) => x.rule !== "project-grants-scoped").map((x) => [x.rule, x.resource])).toEqual([
      ["bigquery-exporters-can-take-over", "tally-dev-fn-coordinator"],
      ["bigquery-exporters-can-take-over", "tally-dev-fn-reconciler"],
      ["bigquery-exporters-can-take-over", "tally-dev-fn-worker-demo"],
      ["bigquery-exporters-can-take-over", "tally-dev-fn-worker-text-stats"],
    ]);
    expect(v.find((x) => x.resource === "tally-dev-fn-worker-demo")!.message).toContain(
      `exports results to BigQuery as serviceAccount:tally-dev-w-demo@${project}.iam.gserviceaccount.com, which lacks bigquery.jobs.get on the project`,
    );
    // A custom role without jobs.get is no better.
    const v2 = checkAll(
      broken(
        (rs) => (find(rs, types.projectCustomRole, () => true).props.permissions = ["bigquery.jobs.create"]),
      ),
    );
    expect(v2.filter((x) => x.rule === "bigquery-exporters-can-take-over")).toHaveLength(4);
  });
});

describe("secret grants: one secret, one account", () => {
  let withSecrets: ResourceRecord[];
  beforeAll(async () => {
    withSecrets = (
      await runStack({
        pipelines: JSON.stringify({ "text-stats": { secrets: { LLM_API_KEY: "llm-api-key" } } }),
      })
    ).resources;
  });
  const mutate = (change: (rs: ResourceRecord[]) => void) => {
    const copy = structuredClone(withSecrets);
    change(copy);
    return checkAll(copy).filter((x) => x.rule === "secret-grants-scoped");
  };
  const grantOf = (rs: ResourceRecord[]) =>
    find(rs, types.secretIamMember, (p) => p.secretId === "llm-api-key");

  it("the stack with a pipeline secret passes", () => {
    expect(checkAll(withSecrets)).toEqual([]);
  });

  it("a grant to an account whose function does not mount the secret is reported", () => {
    const v = mutate((rs) => {
      grantOf(rs).props.member = `serviceAccount:tally-dev-w-demo@${project}.iam.gserviceaccount.com`;
    });
    expect(v.map((x) => x.message)).toEqual([
      `secret llm-api-key is granted to serviceAccount:tally-dev-w-demo@${project}.iam.gserviceaccount.com, but no function running as that account mounts it: the grant is wider than any pipeline needs`,
      `function tally-dev-worker-text-stats mounts secret llm-api-key but its account serviceAccount:tally-dev-w-text-stats@${project}.iam.gserviceaccount.com has no roles/secretmanager.secretAccessor on it: the revision would fail to deploy`,
    ]);
  });

  it("a project-wide Secret Manager role, a binding of several members and a role beyond accessor are reported", () => {
    const v = mutate((rs) => {
      const member = grantOf(rs).props.member;
      rs.push({
        type: types.projectIamMember,
        name: "wide-secrets",
        props: { project, role: "roles/secretmanager.secretAccessor", member },
      });
      rs.push({
        type: types.secretIamBinding,
        name: "secret-binding",
        props: {
          secretId: "llm-api-key",
          role: "roles/secretmanager.secretAccessor",
          members: [member, "group:x@example.com"],
        },
      });
      grantOf(rs).props.role = "roles/secretmanager.admin";
    });
    expect(v.map((x) => x.resource).sort()).toEqual(
      [
        "secret-binding",
        "tally-dev-fn-worker-text-stats",
        "tally-dev-worker-text-stats-secret-llm-api-key",
        "wide-secrets",
      ].sort(),
    );
  });
});

describe("the policy pack", () => {
  it("wraps every rule as a stack policy that reports violations with the resource's URN", async () => {
    // biome-ignore lint/suspicious/noExplicitAny: the recorded PolicyPack arguments.
    const packs: { name: string; args: any }[] = [];
    vi.doMock("@pulumi/policy", () => ({
      PolicyPack: class {
        constructor(name: string, args: unknown) {
          packs.push({ name, args });
        }
      },
    }));
    // A computed specifier: the pack module runs its constructor on load, under the mock above.
    const packModule = "../../infra/policy/index";
    await import(packModule);
    vi.doUnmock("@pulumi/policy");
    expect(packs).toHaveLength(1);
    const { name, args } = packs[0]!;
    expect(name).toBe("tally");
    expect(args.enforcementLevel).toBe("mandatory");
    expect(args.policies.map((p: { name: string }) => p.name)).toEqual(rules.map((r) => r.name));

    const reported: [string, string | undefined][] = [];
    const brokenStack = broken((rs) => delete workSub(rs).props.deadLetterPolicy);
    // The policy SDK hands the pack PolicyResources, whose dependencies are resources, not URNs.
    const policyResources = brokenStack.map((r) => ({
      ...r,
      dependencies: (r.dependencies ?? []).map((urn) => ({ urn })),
    }));
    for (const policy of args.policies)
      policy.validateStack({ resources: policyResources }, (message: string, urn?: string) =>
        reported.push([message, urn]),
      );
    expect(reported).toHaveLength(1);
    expect(reported[0]![0]).toContain("has no dead-letter policy");
    expect(reported[0]![1]).toBe(
      "urn:pulumi:dev::tally::gcp:pubsub/subscription:Subscription::tally-dev-sub-work-demo",
    );
  });
});
