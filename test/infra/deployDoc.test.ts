// docs/deploy.md's first-deploy checklist states what a first `pulumi up` creates. Those figures
// drift silently whenever the program changes (an alert added, an index exempted), and a deployer
// who sees a different plan cannot tell whether something is wrong. So the figures the checklist
// states are read back from the doc and compared with the program run under mocks.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { types } from "../../infra/policy/rules";
import { runStack, type StackRun } from "./support/pulumiMocks";

const doc = readFileSync(join(__dirname, "../../docs/deploy.md"), "utf8").replace(/\s+/g, " ");

/** The number in the doc that the pattern's first group captures; fails naming the pattern. */
function stated(pattern: RegExp): number {
  const m = doc.match(pattern);
  if (!m) throw new Error(`docs/deploy.md no longer states ${pattern}`);
  return Number(m[1]);
}

const countOf = (run: StackRun, type: string) => run.ofType(type).length;

describe("docs/deploy.md matches the program", () => {
  let plain: StackRun;
  let withEmail: StackRun;
  let withInvoker: StackRun;
  let withPipeline: StackRun;
  let withTarget: StackRun;
  let withSecret: StackRun;
  let withLogSink: StackRun;
  beforeAll(async () => {
    plain = await runStack({});
    withEmail = await runStack({ alertEmail: "ops@example.com" });
    withInvoker = await runStack({
      alertEmail: "ops@example.com",
      coordinatorInvokers: JSON.stringify(["user:ana@example.com"]),
    });
    const predict = { name: "predict", url: "https://predict.example.com/v1", timeoutSeconds: 60 };
    withPipeline = await runStack({
      alertEmail: "ops@example.com",
      httpPipelines: JSON.stringify([predict]),
    });
    withTarget = await runStack({
      alertEmail: "ops@example.com",
      httpPipelines: JSON.stringify([{ ...predict, auth: "oidc", cloudRunService: { name: "predict" } }]),
    });
    withSecret = await runStack({
      alertEmail: "ops@example.com",
      pipelines: JSON.stringify({ demo: { secrets: { API_KEY: "demo-api-key" } } }),
    });
    withLogSink = await runStack({ alertEmail: "ops@example.com", logSinkDataset: "tally_dev_logs" });
  });

  it("the resource totals of the preview step", () => {
    expect(stated(/creates \*\*(\d+) resources\*\*/)).toBe(withEmail.resources.length);
    expect(stated(/\*\*\d+ resources\*\* \((\d+) without it/)).toBe(plain.resources.length);
    expect(stated(/\+(\d+) per coordinator invoker/)).toBe(
      withInvoker.resources.length - withEmail.resources.length,
    );
    expect(stated(/\+(\d+) per pipeline —/)).toBe(withPipeline.resources.length - withEmail.resources.length);
    expect(stated(/\+(\d+) per pipeline's declared Cloud Run target/)).toBe(
      withTarget.resources.length - withPipeline.resources.length,
    );
    expect(stated(/\+(\d+) per secret a pipeline mounts/)).toBe(
      withSecret.resources.length - withEmail.resources.length,
    );
    expect(stated(/\+(\d+) with `tally:logSinkDataset`/)).toBe(
      withLogSink.resources.length - withEmail.resources.length,
    );
  });

  it("the counts of the first `up`: APIs, service accounts, metrics, gates, alert policies", () => {
    expect(stated(/the (\d+) APIs and the Pub\/Sub service agent/)).toBe(
      countOf(withEmail, "gcp:projects/service:Service"),
    );
    expect(stated(/the (\d+) service accounts/)).toBe(
      countOf(withEmail, "gcp:serviceaccount/account:Account"),
    );
    expect(stated(/(\d+) log-based metrics, then one readiness gate per metric/)).toBe(
      countOf(withEmail, "gcp:logging/metric:Metric"),
    );
    expect(stated(/MetricReadiness` ×(\d+)/)).toBe(countOf(withEmail, types.metricReadiness));
    expect(stated(/PropagationWait` ×(\d+)/)).toBe(countOf(withEmail, types.propagationWait));
    expect(stated(/the (\d+) alert policies and the dashboard, each after/)).toBe(
      countOf(withEmail, types.alertPolicy),
    );
    expect(stated(/the (\d+) log-based metrics \(`monitoring.ts`\)/)).toBe(
      countOf(withEmail, "gcp:logging/metric:Metric"),
    );
  });

  it("would notice a drift (the reader itself works)", () => {
    expect(() => stated(/creates \*\*(\d+) widgets\*\*/)).toThrow(/no longer states/);
  });
});
