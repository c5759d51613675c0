// Stack configuration: defaults, the shared topology it produces, and the errors for bad values —
// each naming the key and the allowed range, all reported together, before any resource exists.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../functions/config";
import { defaultDelivery } from "../../functions/topology";
import { repoRoot } from "../../infra/bundle/buildBundle";
import {
  type ConfigKey,
  configKeys,
  defaultPrefix,
  InfraConfigError,
  parseInfraConfig,
} from "../../infra/config";
import { cronProblems } from "../../infra/cronExpression";
import { handlerEnvironment } from "../../infra/services";
import { createStack } from "../../infra/stack";
import { installMocks, registrationsSettled, setStackConfig } from "./support/pulumiMocks";

const parse = (values: Partial<Record<ConfigKey, string>>, stack = "dev") =>
  parseInfraConfig((k) => values[k], { stack });

function problemsOf(values: Partial<Record<ConfigKey, string>>): string[] {
  try {
    parse(values);
  } catch (err) {
    expect(err).toBeInstanceOf(InfraConfigError);
    return (err as InfraConfigError).problems;
  }
  throw new Error(`expected ${JSON.stringify(values)} to be rejected`);
}

describe("stack configuration", () => {
  it("defaults build the shared topology from the stack name", () => {
    const cfg = parse({});
    expect(cfg.prefix).toBe("tally-dev");
    expect(cfg.region).toBe("us-central1");
    expect(cfg.topology.pipelines.map((x) => [x.pipeline, x.workTopic, x.workSubscription])).toEqual([
      ["demo", "tally-dev-work-demo", "tally-dev-work-demo-push"],
      ["text-stats", "tally-dev-work-text-stats", "tally-dev-work-text-stats-push"],
    ]);
    // Without tally:pipelines every pipeline runs as today's single worker did.
    for (const d of cfg.pipelines)
      expect(d).toMatchObject({
        sizing: { cpu: "1", memory: "1Gi", concurrency: 16, minInstances: 0, maxInstances: 20 },
        delivery: {},
        environment: {},
        secrets: [],
      });
    expect(cfg.topology.delivery).toEqual(defaultDelivery);
    expect(cfg.topology.reconcile.schedule).toBe("* * * * *");
    expect(cfg.topology.reconcile.timeZone).toBe("Etc/UTC");
    expect(cfg.resultsDataset).toBe("tally_dev_results");
    expect(cfg.coordinatorInvokers).toEqual([]);
    expect(cfg.alertEmail).toBeUndefined();
    expect(cfg.worker).toMatchObject({
      timeoutSeconds: 540,
      concurrency: 16,
      maxInstances: 20,
      minInstances: 0,
    });
    // The reconciler's timeout fits inside the dead-letter subscription's ack deadline.
    expect(cfg.reconciler.timeoutSeconds).toBe(300);
  });

  it("takes every documented key", () => {
    const cfg = parse({
      prefix: "acme-prod",
      region: "europe-west1",
      alertEmail: "ops@example.com",
      reconcileSchedule: "*/2 * * * *",
      timeZone: "Europe/Paris",
      maxDeliveryAttempts: "10",
      maxItemAttempts: "8",
      ackDeadlineSeconds: "300",
      minimumBackoffSeconds: "5",
      maximumBackoffSeconds: "120",
      leaseSeconds: "60",
      workerConcurrency: "4",
      workerMaxInstances: "50",
      workerMinInstances: "1",
      workerMemory: "2Gi",
      workerTimeoutSeconds: "240",
      coordinatorMaxInstances: "3",
      coordinatorTimeoutSeconds: "1200",
      coordinatorInvokers: '["user:ana@example.com","group:ops@example.com"]',
      resultsDataset: "acme_results",
      resultsLocation: "EU",
      firestoreLocation: "eur3",
      manageFirestoreDatabase: "false",
      retentionDays: "30",
      logSinkDataset: "acme_logs",
      oldestUnackedAlertSeconds: "900",
      worker5xxRatio: "0.5",
    });
    expect(cfg.topology.prefix).toBe("acme-prod");
    expect(cfg.topology.delivery).toEqual({
      ackDeadlineSeconds: 300,
      maxDeliveryAttempts: 10,
      minimumBackoffSeconds: 5,
      maximumBackoffSeconds: 120,
      leaseSeconds: 60,
      maxItemAttempts: 8,
      workerTimeoutSeconds: 240,
    });
    expect(cfg.topology.reconcile).toMatchObject({ schedule: "*/2 * * * *", timeZone: "Europe/Paris" });
    expect(cfg.coordinatorInvokers).toEqual(["user:ana@example.com", "group:ops@example.com"]);
    expect(cfg.worker).toEqual({
      cpu: "1",
      timeoutSeconds: 240,
      concurrency: 4,
      maxInstances: 50,
      minInstances: 1,
      memory: "2Gi",
    });
    expect(cfg.coordinator).toMatchObject({ timeoutSeconds: 1200, maxInstances: 3 });
    expect(cfg.reconciler.timeoutSeconds).toBe(300);
    expect(cfg).toMatchObject({
      region: "europe-west1",
      alertEmail: "ops@example.com",
      resultsDataset: "acme_results",
      resultsLocation: "EU",
      firestoreLocation: "eur3",
      manageFirestoreDatabase: false,
      retentionDays: 30,
      logSinkDataset: "acme_logs",
      alerts: { oldestUnackedSeconds: 900, worker5xxRatio: 0.5 },
    });
    // Comma-separated invokers work too.
    expect(
      parse({ coordinatorInvokers: "user:a@example.com, serviceAccount:ci@p.iam.gserviceaccount.com" })
        .coordinatorInvokers,
    ).toEqual(["user:a@example.com", "serviceAccount:ci@p.iam.gserviceaccount.com"]);
  });

  it("an ack deadline of 900 names tally:ackDeadlineSeconds and 10..600", () => {
    const problems = problemsOf({ ackDeadlineSeconds: "900" });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toContain("tally:ackDeadlineSeconds");
    expect(problems[0]).toContain("10..600");
    expect(problems[0]).toContain('"900"');
  });

  it("a lease under the ack-deadline floor names tally:leaseSeconds and 10..3600", () => {
    const [problem] = problemsOf({ leaseSeconds: "5" });
    expect(problem).toMatch(/^tally:leaseSeconds must be an integer in 10\.\.3600 \(got "5"\)/);
    expect(problem).toContain("ack-deadline floor");
  });

  it("a worker timeout longer than the ack deadline names both keys", () => {
    const problems = problemsOf({ ackDeadlineSeconds: "300", workerTimeoutSeconds: "400" });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toContain("tally:workerTimeoutSeconds (400)");
    expect(problems[0]).toContain("tally:ackDeadlineSeconds (300)");
  });

  it("more ledger attempts than Pub/Sub deliveries is refused", () => {
    const [problem] = problemsOf({ maxDeliveryAttempts: "5", maxItemAttempts: "7" });
    expect(problem).toContain("tally:maxItemAttempts (7) must be less than tally:maxDeliveryAttempts (5)");
  });

  it("as many ledger attempts as Pub/Sub deliveries is refused: no headroom for refusals before the lease", () => {
    const [problem] = problemsOf({ maxDeliveryAttempts: "5", maxItemAttempts: "5" });
    expect(problem).toContain("tally:maxItemAttempts (5) must be less than tally:maxDeliveryAttempts (5)");
  });

  it("malformed schedules name tally:reconcileSchedule and what is wrong", () => {
    const words = problemsOf({ reconcileSchedule: "every minute" })[0]!;
    expect(words).toContain("tally:reconcileSchedule");
    expect(words).toContain("expected 5 space-separated fields");
    const minute = problemsOf({ reconcileSchedule: "61 * * * *" })[0]!;
    expect(minute).toContain("minute value 61 is outside 0..59");
    const seconds = problemsOf({ reconcileSchedule: "*/30 * * * * *" })[0]!;
    expect(seconds).toContain("got 6");
    const step = problemsOf({ reconcileSchedule: "*/0 * * * *" })[0]!;
    expect(step).toContain('minute step "0" must be a positive integer');
  });

  it("reports every problem at once", () => {
    const problems = problemsOf({
      ackDeadlineSeconds: "abc",
      maxDeliveryAttempts: "3",
      timeZone: "Mars/Olympus",
      alertEmail: "not-an-email",
      workerConcurrency: "0",
      coordinatorInvokers: '["allUsers"]',
      prefix: "Bad_Prefix",
    });
    const keys = problems.map((p) => p.split(" ")[0]);
    expect(keys).toEqual(
      expect.arrayContaining([
        "tally:ackDeadlineSeconds",
        "tally:maxDeliveryAttempts",
        "tally:timeZone",
        "tally:alertEmail",
        "tally:workerConcurrency",
        "tally:coordinatorInvokers",
        "tally:prefix",
      ]),
    );
    expect(problems.find((p) => p.startsWith("tally:maxDeliveryAttempts"))).toContain("5..100");
    expect(problems.find((p) => p.startsWith("tally:workerConcurrency"))).toContain("1..1000");
    expect(problems.find((p) => p.startsWith("tally:coordinatorInvokers"))).toContain(
      "must not contain allUsers",
    );
  });

  it("derives a valid prefix from any stack name", () => {
    expect(defaultPrefix("dev")).toBe("tally-dev");
    const long = defaultPrefix("Feature/Very_Long-Branch-Name-2024");
    expect(long.length).toBeLessThanOrEqual(20);
    expect(long).toMatch(/^[a-z][a-z0-9-]*[a-z0-9]$/);
    expect(parse({}, "Feature/Very_Long-Branch-Name-2024").prefix).toBe(long);
  });

  it("tally:httpPipelines: validated by the handlers' own parser, each bad field named; passed to every handler", () => {
    expect(parse({}).httpPipelines).toEqual([]);
    expect(
      problemsOf({
        httpPipelines: JSON.stringify([
          { name: "demo", url: "https://a.example.com", timeoutSeconds: 10 },
          { name: "x", url: "nope", timeoutSeconds: 0 },
        ]),
      }),
    ).toEqual([
      "tally:httpPipelines[1].url: must be an http:// or https:// URL without credentials",
      "tally:httpPipelines[1].timeoutSeconds: Too small: expected number to be >=1",
    ]);
    expect(
      problemsOf({
        httpPipelines: JSON.stringify([{ name: "demo", url: "https://a.example.com", timeoutSeconds: 10 }]),
      }),
    ).toEqual(['tally:httpPipelines[0].name: "demo" is already a code pipeline; choose another name']);
    const declared = [
      { name: "predict", url: "https://predict.example.com", timeoutSeconds: 60, auth: "oidc" },
    ];
    const cfg = parse({ httpPipelines: JSON.stringify(declared) });
    expect(cfg.httpPipelines).toEqual(declared);
    const env = handlerEnvironment(cfg, "p");
    expect(JSON.parse(env.TALLY_HTTP_PIPELINES!)).toEqual(declared);
    expect(loadConfig(env).httpPipelines).toEqual(declared);
    expect(handlerEnvironment(parse({}), "p").TALLY_HTTP_PIPELINES).toBeUndefined();
  });

  it("documents every key in Pulumi.dev.yaml", () => {
    const yaml = readFileSync(join(repoRoot, "Pulumi.dev.yaml"), "utf8");
    const missing = Object.keys(configKeys).filter((k) => !yaml.includes(`tally:${k}:`));
    expect(missing).toEqual([]);
  });

  it("invalid configuration stops the program before any resource is registered", async () => {
    const { resources } = await installMocks();
    setStackConfig({ ackDeadlineSeconds: "900", reconcileSchedule: "* * *" });
    let bundleBuilt = false;
    expect(() =>
      createStack({
        bundle: () => {
          bundleBuilt = true;
          throw new Error("the bundle must not be built for an invalid configuration");
        },
      }),
    ).toThrow(/tally:ackDeadlineSeconds must be an integer in 10\.\.600[\s\S]*tally:reconcileSchedule/);
    await registrationsSettled();
    expect(bundleBuilt).toBe(false);
    expect(resources).toEqual([]);
  });
});

describe("cron expressions", () => {
  it("accepts what Cloud Scheduler accepts", () => {
    for (const ok of [
      "* * * * *",
      "*/5 * * * *",
      "0 9-17 * * mon-fri",
      "0 0 1 jan,jul *",
      "15,45 */2 1-7 * 0,7",
    ])
      expect(cronProblems(ok), ok).toEqual([]);
  });
  it("rejects the rest with the field that is wrong", () => {
    expect(cronProblems("* 24 * * *")).toEqual(["hour value 24 is outside 0..23"]);
    expect(cronProblems("* * 0 * *")).toEqual(["day of month value 0 is outside 1..31"]);
    expect(cronProblems("* * * foo *")).toEqual(['month value "foo" is not a number or name']);
    expect(cronProblems("5-1 * * * *")).toEqual(['minute range "5-1" runs backwards']);
    expect(cronProblems("")).toEqual([
      "expected 5 space-separated fields (minute hour day-of-month month day-of-week), got 0",
    ]);
  });
});

describe("tally:pipelines: each pipeline's worker (issue #17 §1)", () => {
  const pipelinesOf = (value: unknown, extra: Partial<Record<ConfigKey, string>> = {}) =>
    parse({ pipelines: JSON.stringify(value), ...extra });
  const problemsFor = (value: unknown, extra: Partial<Record<ConfigKey, string>> = {}) =>
    problemsOf({ pipelines: JSON.stringify(value), ...extra });

  it("an entry sizes its pipeline's worker and sets its delivery; unset fields keep the stack-wide keys", () => {
    const cfg = pipelinesOf(
      {
        "text-stats": {
          cpu: 2,
          memory: "4Gi",
          concurrency: 8,
          maxInstances: 4,
          timeoutSeconds: 200,
          ackDeadlineSeconds: 240,
          maxItemAttempts: 2,
          environment: { MODEL: "small" },
          secrets: { API_KEY: "text-stats-key", OTHER: { secret: "other_key", version: 7 } },
        },
      },
      { workerMemory: "2Gi", workerMinInstances: "1" },
    );
    const stats = cfg.pipelines.find((p) => p.name === "text-stats")!;
    expect(stats).toMatchObject({
      kind: "code",
      sizing: { cpu: "2", memory: "4Gi", concurrency: 8, minInstances: 1, maxInstances: 4 },
      environment: { MODEL: "small" },
      secrets: [
        { variable: "API_KEY", secret: "text-stats-key", version: "latest" },
        { variable: "OTHER", secret: "other_key", version: "7" },
      ],
    });
    expect(cfg.topology.pipelines.find((x) => x.pipeline === "text-stats")!.delivery).toMatchObject({
      ackDeadlineSeconds: 240,
      workerTimeoutSeconds: 200,
      maxItemAttempts: 2,
      maxDeliveryAttempts: 10,
    });
    // The other pipeline: the stack-wide keys.
    expect(cfg.pipelines.find((p) => p.name === "demo")!.sizing).toEqual({
      cpu: "1",
      memory: "2Gi",
      concurrency: 16,
      minInstances: 1,
      maxInstances: 20,
    });
    expect(cfg.topology.pipelines.find((x) => x.pipeline === "demo")!.delivery).toEqual(defaultDelivery);
  });

  it("Cloud Run's CPU and memory rules, each problem naming its key", () => {
    expect(problemsFor({ demo: { cpu: 4, memory: "1Gi" } })).toEqual([
      "tally:pipelines.demo.memory: 4 CPUs need at least 2Gi of memory (got 1Gi)",
    ]);
    expect(problemsFor({ demo: { cpu: 8, memory: "2Gi" } })).toEqual([
      "tally:pipelines.demo.memory: 8 CPUs need at least 4Gi of memory (got 2Gi)",
    ]);
    expect(problemsFor({ demo: { cpu: 1, memory: "8Gi" } })).toEqual([
      "tally:pipelines.demo.memory: 8Gi is more than 1 CPU allows (at most 4Gi); raise cpu",
    ]);
    expect(problemsFor({ demo: { cpu: 3 } })[0]).toMatch(
      /^tally:pipelines\.demo\.cpu: must be 1, 2, 4, 6 or 8/,
    );
    // Below one CPU: one request at a time, and at most 1Gi (512Mi below half a CPU).
    expect(problemsFor({ demo: { cpu: "0.5", memory: "2Gi" } })).toEqual([
      "tally:pipelines.demo.concurrency: must be 1 with less than 1 CPU (cpu 0.5, got 16)",
      "tally:pipelines.demo.memory: more than 1Gi needs a whole CPU (cpu 0.5, got 2Gi)",
    ]);
    expect(problemsFor({ demo: { cpu: "0.25", memory: "1Gi", concurrency: 1 } })).toEqual([
      "tally:pipelines.demo.memory: more than 512Mi needs at least 0.5 CPU (cpu 0.25, got 1Gi)",
    ]);
    // What Cloud Run accepts passes.
    for (const ok of [
      { cpu: 4, memory: "2Gi" },
      { cpu: 8, memory: "32Gi" },
      { cpu: "0.5", memory: "1Gi", concurrency: 1 },
      { cpu: 6, memory: "4Gi" },
    ])
      expect(() => pipelinesOf({ demo: ok }), JSON.stringify(ok)).not.toThrow();
  });

  it("the platform's ranges: timeout 1..3600 (and within the ack deadline), ack deadline 10..600", () => {
    expect(problemsFor({ demo: { timeoutSeconds: 3601 } })).toEqual([
      "tally:pipelines.demo.timeoutSeconds: must be in 1..3600",
    ]);
    expect(problemsFor({ demo: { ackDeadlineSeconds: 601 } })).toEqual([
      "tally:pipelines.demo.ackDeadlineSeconds: must be in 10..600",
    ]);
    expect(problemsFor({ demo: { ackDeadlineSeconds: 60 } })).toEqual([
      "tally:pipelines.demo: timeoutSeconds (540) must fit inside ackDeadlineSeconds (60): for push the ack deadline is the request timeout",
    ]);
    expect(problemsFor({ demo: { maxItemAttempts: 10 } })[0]).toContain(
      "tally:pipelines.demo: maxItemAttempts (10) must be less than maxDeliveryAttempts (10)",
    );
  });

  it("secret names, version and environment variable names follow the platform's grammar", () => {
    const problems = problemsFor({
      demo: {
        secrets: { API_KEY: "has a space", "1BAD": "ok-secret", TOKEN: { secret: "fine", version: "v2" } },
        environment: { TALLY_PREFIX: "x", PORT: "1" },
      },
    });
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^tally:pipelines\.demo\.secrets\.API_KEY: must be a Secret Manager secret id/),
        expect.stringMatching(/^tally:pipelines\.demo\.secrets\.1BAD: must be an environment variable name/),
        expect.stringMatching(
          /^tally:pipelines\.demo\.secrets\.TOKEN\.version: must be "latest" or a version number/,
        ),
        expect.stringMatching(/^tally:pipelines\.demo\.environment\.TALLY_PREFIX: is set by the stack/),
        expect.stringMatching(/^tally:pipelines\.demo\.environment\.PORT: is set by the stack/),
      ]),
    );
    expect(problemsFor({ demo: { secrets: { K: "a".repeat(256) } } })[0]).toMatch(
      /^tally:pipelines\.demo\.secrets\.K: must be a Secret Manager secret id/,
    );
    expect(problemsFor({ demo: { secrets: { K: "s" }, environment: { K: "v" } } })).toEqual([
      "tally:pipelines.demo.secrets.K: is also declared in tally:pipelines.demo.environment",
    ]);
  });

  it("an unknown pipeline, an unknown field and bad JSON are named", () => {
    expect(problemsFor({ nope: {} })).toEqual([
      "tally:pipelines.nope: no such pipeline (known: demo, text-stats)",
    ]);
    expect(problemsFor({ demo: { gpu: 1 } })[0]).toMatch(/^tally:pipelines\.demo: Unrecognized key/);
    expect(problemsOf({ pipelines: "{not json" })[0]).toMatch(/^tally:pipelines: not valid JSON/);
  });

  it("an HTTP pipeline's secretHeaders must read a variable its worker has", () => {
    const http = JSON.stringify([
      {
        name: "llm",
        url: "https://llm.example.com/v1",
        timeoutSeconds: 60,
        secretHeaders: { "X-Api-Key": "LLM_KEY" },
      },
    ]);
    expect(problemsOf({ httpPipelines: http })).toEqual([
      "tally:httpPipelines[0].secretHeaders.X-Api-Key: reads LLM_KEY, which pipeline llm's worker does not have: declare it in tally:pipelines.llm.secrets (a Secret Manager secret)",
    ]);
    const cfg = parse({
      httpPipelines: http,
      pipelines: JSON.stringify({ llm: { secrets: { LLM_KEY: "llm-key" } } }),
    });
    expect(cfg.pipelines.map((p) => [p.name, p.kind])).toEqual([
      ["demo", "code"],
      ["text-stats", "code"],
      ["llm", "http"],
    ]);
  });

  it("reports pipeline problems together with every other problem", () => {
    const problems = problemsOf({
      ackDeadlineSeconds: "900",
      pipelines: JSON.stringify({ demo: { cpu: 4, memory: "1Gi" }, "text-stats": { concurrency: 0 } }),
    });
    expect(problems.map((p) => p.split(" ")[0])).toEqual([
      "tally:ackDeadlineSeconds",
      "tally:pipelines.text-stats.concurrency:",
      "tally:pipelines.demo.memory:",
    ]);
  });
});
