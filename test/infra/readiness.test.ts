// Readiness gates (infra/readiness.ts): the metric-descriptor polling as a pure function with an
// injected probe and clock; the serialized dynamic provider run the way the engine's provider host
// runs it (its own module text, with `require` supplied); and the ordering under mocks — every alert
// policy (and the dashboard) after the gate of each log-based metric its filters name, each gate
// after its metric; every function build after every grant to its build account and the IAM
// propagation wait.
import { beforeAll, describe, expect, it } from "vitest";
import { alertPolicyFilters, dashboardFilters, userMetricsNamed } from "../../infra/policy/monitoringFilter";
import { checkAll, type ResourceRecord, types } from "../../infra/policy/rules";
import {
  iamPropagationSeconds,
  metricDescriptorUrl,
  metricReadinessDefaults,
  waitForMetricDescriptor,
} from "../../infra/readiness";
import { mockProject, runStack, type StackRun } from "./support/pulumiMocks";

const metricType = "logging.googleapis.com/user/tally-dev-batch-failed";

/** A scripted probe and a fake clock: sleeping advances time, nothing really waits. */
function scripted(
  answers: (number | Error)[],
  opts: { timeoutMs?: number; intervalMs?: number; confirmations?: number } = {},
) {
  let t = 0;
  const sleeps: number[] = [];
  let i = 0;
  const wait = waitForMetricDescriptor({
    project: "p",
    metricType,
    probe: async () => {
      const a = answers[Math.min(i++, answers.length - 1)]!;
      if (a instanceof Error) throw a;
      return a;
    },
    now: () => t,
    sleep: async (ms) => {
      sleeps.push(ms);
      t += ms;
    },
    timeoutMs: opts.timeoutMs ?? 900_000,
    intervalMs: opts.intervalMs ?? 15_000,
    confirmations: opts.confirmations,
  });
  return { wait, sleeps, probes: () => i };
}

describe("waitForMetricDescriptor", () => {
  it("200 → ready (two consecutive 200s by default; one when asked)", async () => {
    const twice = scripted([200]);
    expect(await twice.wait).toEqual({ polls: 2 });
    expect(twice.sleeps).toEqual([15_000]);
    const once = scripted([200], { confirmations: 1 });
    expect(await once.wait).toEqual({ polls: 1 });
    expect(once.sleeps).toEqual([]);
  });

  it("404, then 200 → waits between polls until the descriptor answers", async () => {
    const s = scripted([404, 404, 404, 200, 200]);
    expect(await s.wait).toEqual({ polls: 5 });
    expect(s.sleeps).toEqual([15_000, 15_000, 15_000, 15_000]);
  });

  it("a 200 followed by a 404 starts the count again (reads are eventually consistent)", async () => {
    const s = scripted([200, 404, 200, 200]);
    expect(await s.wait).toEqual({ polls: 4 });
  });

  it("429, 5xx and network errors are waited out too", async () => {
    const s = scripted([429, 503, new Error("ECONNRESET"), 200, 200]);
    expect(await s.wait).toEqual({ polls: 5 });
  });

  it("never → fails at the deadline with a message naming the metric", async () => {
    const s = scripted([404], { timeoutMs: 900_000 });
    await expect(s.wait).rejects.toThrow(
      `metric ${metricType} in project p was not available in Cloud Monitoring after 900 s (61 polls, last: HTTP 404). A new log-based metric can take up to 10 minutes to appear; the alert policies that use it were not created. Run pulumi up again.`,
    );
  });

  it("403 fails at once, naming the permission the deployer lacks", async () => {
    const s = scripted([403]);
    await expect(s.wait).rejects.toThrow(
      `metric ${metricType} in project p: Cloud Monitoring refused to read its descriptor (HTTP 403). The identity running pulumi up needs monitoring.metricDescriptors.get`,
    );
    expect(s.probes()).toBe(1);
  });

  it("polls the descriptor's URL in the Monitoring API", () => {
    expect(metricDescriptorUrl("my-proj", metricType)).toBe(
      `https://monitoring.googleapis.com/v3/projects/my-proj/metricDescriptors/${metricType}`,
    );
    expect(metricReadinessDefaults).toEqual({ timeoutSeconds: 900, intervalSeconds: 15, confirmations: 2 });
    expect(iamPropagationSeconds).toBeGreaterThanOrEqual(120); // Google: "typically 2 minutes"
  });
});

// --- the stack under mocks -------------------------------------------------------------------------

let run: StackRun;
beforeAll(async () => {
  run = await runStack({ alertEmail: "ops@example.com" });
});

/** Loads a dynamic provider from its serialized text, as the engine's provider host does. */
function loadSerializedProvider(text: string, requireFn: (m: string) => unknown) {
  const exports: { handler?: () => Record<string, (...a: unknown[]) => Promise<unknown>> } = {};
  new Function("exports", "require", "module", "__filename", "__dirname", text)(
    exports,
    requireFn,
    { exports },
    "provider.js",
    ".",
  );
  return exports.handler!();
}

describe("the MetricReadiness provider as serialized for the engine", () => {
  const gateText = () => {
    const gate = run.ofType(types.metricReadiness)[0]!;
    return { gate, text: String(gate.props.__provider) };
  };

  it("carries no module binding of the program: only google-auth-library is required, at run time", () => {
    const { text } = gateText();
    expect(text).toContain("exports.handler");
    expect([...text.matchAll(/require\("([^"]+)"\)/g)].map((m) => m[1])).toEqual(["google-auth-library"]);
    expect(text).not.toMatch(/__vi_|__vite_ssr|@pulumi\/pulumi/);
  });

  function fakeAuthLibrary(statuses: number[]) {
    const requests: { url: string; method: string }[] = [];
    let i = 0;
    const lib = {
      GoogleAuth: class {
        constructor(readonly opts: { scopes: string[] }) {}
        async request(o: { url: string; method: string; validateStatus: (s: number) => boolean }) {
          requests.push({ url: o.url, method: o.method });
          const status = statuses[Math.min(i++, statuses.length - 1)]!;
          if (!o.validateStatus(status)) throw new Error("validateStatus refused");
          return { status };
        }
      },
    };
    return { lib, requests };
  }

  it("create polls the descriptor with Application Default Credentials until it is served, then exists", async () => {
    const { gate, text } = gateText();
    const { lib, requests } = fakeAuthLibrary([404, 404, 200, 200]);
    const provider = loadSerializedProvider(text, (m) => {
      if (m !== "google-auth-library") throw new Error(`unexpected require ${m}`);
      return lib;
    });
    const inputs = { ...gate.props, intervalSeconds: 0.001, timeoutSeconds: 5 };
    delete (inputs as Record<string, unknown>).__provider;
    const created = (await provider.create!(inputs)) as { id: string };
    expect(created.id).toBe(`${mockProject.projectId}/${gate.props.metricType}`);
    expect(requests).toHaveLength(4);
    expect(requests[0]).toEqual({
      method: "GET",
      url: `https://monitoring.googleapis.com/v3/projects/${mockProject.projectId}/metricDescriptors/${gate.props.metricType}`,
    });
  });

  it("create fails with the metric's name when the descriptor never appears", async () => {
    const { gate, text } = gateText();
    const { lib } = fakeAuthLibrary([404]);
    const provider = loadSerializedProvider(text, () => lib);
    const inputs = { ...gate.props, intervalSeconds: 0.001, timeoutSeconds: 0.02 };
    await expect(provider.create!(inputs)).rejects.toThrow(`metric ${gate.props.metricType} in project`);
  });

  it("diff replaces the gate only for another metric or project", async () => {
    const { gate, text } = gateText();
    const provider = loadSerializedProvider(text, () => ({}));
    const olds = gate.props;
    expect(await provider.diff!("id", olds, { ...olds, timeoutSeconds: 60 })).toMatchObject({
      changes: false,
    });
    expect(await provider.diff!("id", olds, { ...olds, metricType: `${olds.metricType}-2` })).toMatchObject({
      changes: true,
      replaces: ["metricType"],
    });
  });
});

// --- ordering ---------------------------------------------------------------------------------------

/** Whether `from` depends on `to`, directly or through the dependencies the program registered. */
function reaches(resources: ResourceRecord[], from: ResourceRecord, to: ResourceRecord): boolean {
  const byUrn = new Map(resources.map((r) => [r.urn!, r]));
  const seen = new Set<string>();
  const stack = [...(from.dependencies ?? [])];
  while (stack.length) {
    const u = stack.pop()!;
    if (u === to.urn) return true;
    if (!seen.has(u)) {
      seen.add(u);
      stack.push(...(byUrn.get(u)?.dependencies ?? []));
    }
  }
  return false;
}

/** For every alert policy and the dashboard: [resource, metric name, gate, metric] for each user metric it names. */
function metricUses(resources: ResourceRecord[]) {
  const users = [
    ...resources
      .filter((r) => r.type === types.alertPolicy)
      .map((a) => [a, alertPolicyFilters(a.props)] as const),
    ...resources
      .filter((r) => r.type === types.dashboard)
      .map((d) => [d, dashboardFilters(d.props.dashboardJson)] as const),
  ];
  return users.flatMap(([r, filters]) =>
    [...new Set(filters.flatMap((f) => userMetricsNamed(f.filter)))].map((name) => {
      const metric = resources.find((m) => m.type === "gcp:logging/metric:Metric" && m.props.name === name);
      const gate = resources.find(
        (g) =>
          g.type === types.metricReadiness && g.props.metricType === `logging.googleapis.com/user/${name}`,
      );
      return { r, name, metric, gate };
    }),
  );
}

function orderingProblems(resources: ResourceRecord[]): string[] {
  return metricUses(resources).flatMap(({ r, name, metric, gate }) => {
    if (!metric || !gate) return [`${r.name}: ${name} has no metric or gate`];
    const out: string[] = [];
    if (!reaches(resources, gate, metric)) out.push(`${gate.name} does not depend on metric ${name}`);
    if (!reaches(resources, r, gate)) out.push(`${r.name} does not depend on ${gate.name}`);
    return out;
  });
}

describe("ordering under mocks", () => {
  it("the recorder sees the dependencies the SDK sends the engine", () => {
    const metric = run.named("tally-dev-metric-batch-failed");
    const gate = run.named("tally-dev-metric-ready-batch-failed");
    expect(gate.dependencies).toContain(metric.urn);
  });

  it("every alert policy and the dashboard depend on the gate of each log-based metric their filters name; each gate on its metric", () => {
    const uses = metricUses(run.resources);
    // Every alert on a log-based metric is covered (7 of the 9 policies name one; the dashboard 6 metrics).
    expect(new Set(uses.filter((u) => u.r.type === types.alertPolicy).map((u) => u.r.name)).size).toBe(7);
    expect(uses.filter((u) => u.r.type === types.dashboard)).toHaveLength(6);
    expect(orderingProblems(run.resources)).toEqual([]);
    expect(checkAll(run.resources).filter((v) => v.rule === "alerts-wait-for-metric-readiness")).toEqual([]);
  });

  it("an alert policy created without waiting for its metric's gate is caught (by the test and by the policy)", () => {
    const copy = structuredClone(run.resources);
    const alert = copy.find((r) => r.name === "tally-dev-alert-failed-batches")!;
    const gate = copy.find((r) => r.name === "tally-dev-metric-ready-batch-failed")!;
    const metric = copy.find((r) => r.name === "tally-dev-metric-batch-failed")!;
    // As before the fix: the alert depended on the metric itself, not on the gate.
    alert.dependencies = [...alert.dependencies!.filter((u) => u !== gate.urn), metric.urn!];
    expect(orderingProblems(copy)).toEqual([
      "tally-dev-alert-failed-batches does not depend on tally-dev-metric-ready-batch-failed",
    ]);
    expect(checkAll(copy).map((v) => [v.rule, v.resource])).toEqual([
      ["alerts-wait-for-metric-readiness", "tally-dev-alert-failed-batches"],
    ]);
    // A gate that does not wait for its metric is no gate.
    const copy2 = structuredClone(run.resources);
    const gate2 = copy2.find((r) => r.name === "tally-dev-metric-ready-batch-failed")!;
    gate2.dependencies = [];
    expect(orderingProblems(copy2)).toContain(
      "tally-dev-metric-ready-batch-failed does not depend on metric tally-dev-batch-failed",
    );
    expect(
      checkAll(copy2)
        .filter((v) => v.rule === "alerts-wait-for-metric-readiness")
        .map((v) => v.resource),
    ).toEqual(["tally-dev-alert-failed-batches", "tally-dev-dashboard"]);
  });

  it("every function depends on every grant to its build account and on the IAM propagation wait after them", () => {
    const fns = run.ofType(types.function);
    // The coordinator, the reconciler and one worker per code pipeline (demo, text-stats).
    expect(fns).toHaveLength(4);
    const wait = run.ofType(types.propagationWait)[0]!;
    expect(wait.props.seconds).toBe(iamPropagationSeconds);
    for (const f of fns) {
      const builder = `serviceAccount:${String(f.props.buildConfig.serviceAccount).split("/").pop()}`;
      const grants = run.resources.filter(
        (r) => /IAMMember|IamMember/.test(r.type) && r.props.member === builder,
      );
      expect(grants.map((g) => g.props.role).sort()).toEqual([
        "roles/artifactregistry.writer",
        "roles/logging.logWriter",
        "roles/storage.objectAdmin",
        "roles/storage.objectViewer",
      ]);
      for (const g of grants) {
        expect(reaches(run.resources, f, g), `${f.name} → ${g.name}`).toBe(true);
        expect(reaches(run.resources, wait, g), `wait → ${g.name}`).toBe(true);
      }
      expect(reaches(run.resources, f, wait)).toBe(true);
    }
    expect(checkAll(run.resources).filter((v) => v.rule === "function-builds-wait-for-grants")).toEqual([]);
  });

  it("a function that does not wait for IAM propagation, or a wait that misses a grant, is reported", () => {
    const copy = structuredClone(run.resources);
    const worker = copy.find((r) => r.name === "tally-dev-fn-worker-demo")!;
    const wait = copy.find((r) => r.type === types.propagationWait)!;
    worker.dependencies = worker.dependencies!.filter((u) => u !== wait.urn);
    expect(checkAll(copy).map((v) => [v.rule, v.resource])).toEqual([
      ["function-builds-wait-for-grants", "tally-dev-fn-worker-demo"],
    ]);
    const copy2 = structuredClone(run.resources);
    const grant = copy2.find((r) => r.name === "tally-dev-builder-object-admin")!;
    const wait2 = copy2.find((r) => r.type === types.propagationWait)!;
    wait2.dependencies = wait2.dependencies!.filter((u) => u !== grant.urn);
    const v = checkAll(copy2).filter((x) => x.rule === "function-builds-wait-for-grants");
    expect(v.map((x) => x.resource)).toEqual([
      "tally-dev-fn-coordinator",
      "tally-dev-fn-reconciler",
      "tally-dev-fn-worker-demo",
      "tally-dev-fn-worker-text-stats",
    ]);
    expect(v[0]!.message).toContain(
      "does not wait for IAM propagation after the grants to its build account",
    );
  });
});
