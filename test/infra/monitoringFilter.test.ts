// Cloud Monitoring's filter grammar (https://cloud.google.com/monitoring/api/v3/filters), checked on
// every Monitoring filter the program emits: alert conditions (threshold, ratio denominator, absence)
// and dashboard charts. Log-based metric and log-sink filters are Logging queries and are not
// Monitoring filters: the checker is never applied to them.
import { beforeAll, describe, expect, it } from "vitest";
import {
  alertPolicyFilters,
  checkTimeSeriesFilter,
  dashboardFilters,
  parseMonitoringFilter,
  userMetricsNamed,
} from "../../infra/policy/monitoringFilter";
import { checkAll, type ResourceRecord, types } from "../../infra/policy/rules";
import { runStack, type StackRun } from "./support/pulumiMocks";

const ok = (f: string) => parseMonitoringFilter(f).ok;
const errorOf = (f: string) => {
  const r = parseMonitoringFilter(f);
  return r.ok ? undefined : r.error;
};

describe("the Monitoring filter grammar", () => {
  it("accepts the documented forms", () => {
    for (const f of [
      'resource.type = "gce_instance"',
      'metric.type = "compute.googleapis.com/instance/cpu/usage_time"',
      'metric.labels.instance_name = monitoring.regex.full_match("gke-(hipster|nginx).*")',
      'resource.labels.zone = starts_with("europe-")',
      'resource.labels.zone = ends_with("-a") AND metric.labels.x = has_substring("y")',
      'resource.labels.subscription_id = one_of("a", "b")',
      'resource.labels.subscription_id=one_of("a","b")',
      'project = "p" OR project = "q"',
      'group.id = "g"',
      'metric.type="a" resource.type="b"', // juxtaposition is AND
      'metric.type = "a" AND NOT (resource.labels.x = "1" OR resource.labels.x != "2")',
      'resource.label."pod_name" = "x"',
      'metadata.user_labels."team" = "ops" AND metadata.system_labels.state = "RUNNING"',
      'metric.labels.path : "api"',
      'metric.labels.msg = "a \\"quoted\\" word"',
    ])
      expect(ok(f), f).toBe(true);
  });

  it("refuses Logging syntax and anything undocumented, saying why", () => {
    // The form infra/monitoring.ts used to emit: Monitoring answers 400.
    expect(errorOf('resource.labels.subscription_id=("a" OR "b")')).toContain(
      'is Logging syntax; Monitoring wants resource.labels.subscription_id = one_of("a", "b")',
    );
    expect(errorOf('resource.labels.service_name=("a")')).toContain("Logging syntax");
    expect(errorOf('jsonPayload.event = "x"')).toContain("unknown selector jsonPayload.event");
    expect(errorOf("severity>=ERROR")).toBeDefined();
    expect(errorOf('metric.labels.code >= "500"')).toBeDefined();
    expect(errorOf('metric.type = contains("x")')).toContain("unknown function contains");
    expect(errorOf('metric.type = starts_with("a", "b")')).toContain("takes one string");
    expect(errorOf("metric.type = 'single'")).toBeDefined();
    expect(errorOf('metric.type = "a" and resource.type = "b"')).toBeDefined(); // keywords are upper case
    expect(errorOf('metric.type = "unterminated')).toContain("unterminated string");
    expect(errorOf('(metric.type = "a"')).toBeDefined();
    expect(errorOf("")).toContain("empty filter");
  });

  it("a time-series filter names exactly one metric type, at the top level, within 2048 characters", () => {
    expect(checkTimeSeriesFilter('metric.type = "a" AND resource.type = "b"')).toEqual([]);
    expect(checkTimeSeriesFilter('resource.type = "b"')).toEqual([
      'must name exactly one metric type (metric.type = "…" ANDed at the top level), found 0',
    ]);
    expect(checkTimeSeriesFilter('metric.type = "a" OR metric.type = "b"')[0]).toContain("found 0");
    expect(checkTimeSeriesFilter('metric.type = "a" AND metric.type = "b"')[0]).toContain("found 2");
    const long = `metric.type = "a" AND resource.labels.x = one_of(${Array.from({ length: 300 }, (_, i) => `"v${i}"`).join(", ")})`;
    expect(checkTimeSeriesFilter(long)[0]).toMatch(/characters long; Monitoring accepts at most 2048/);
  });

  it("finds the log-based metrics a filter names", () => {
    expect(
      userMetricsNamed(
        'metric.type = "logging.googleapis.com/user/x-errors" AND resource.type = "cloud_run_revision"',
      ),
    ).toEqual(["x-errors"]);
    expect(userMetricsNamed('metric.type = "run.googleapis.com/request_count"')).toEqual([]);
  });

  it("walks alert conditions by kind: Monitoring filters checked, Logging/MQL/PromQL skipped, unknown kinds refused", () => {
    expect(
      alertPolicyFilters({
        conditions: [
          { conditionThreshold: { filter: "t", denominatorFilter: "d" } },
          { conditionAbsent: { filter: "a" } },
          { conditionMatchedLog: { filter: 'severity>=ERROR AND jsonPayload.x="y"' } },
          { conditionMonitoringQueryLanguage: { query: "fetch x" } },
          { conditionPrometheusQueryLanguage: { query: "up" } },
        ],
      }).map((f) => [f.path, f.filter]),
    ).toEqual([
      ["conditions[0].conditionThreshold.filter", "t"],
      ["conditions[0].conditionThreshold.denominatorFilter", "d"],
      ["conditions[1].conditionAbsent.filter", "a"],
    ]);
    expect(() => alertPolicyFilters({ conditions: [{ conditionNew: { filter: "x" } }] })).toThrow(
      "conditions[0].conditionNew: a condition kind the filter checker does not know",
    );
    expect(
      dashboardFilters(
        JSON.stringify({
          widgets: [
            { xyChart: { dataSets: [{ timeSeriesQuery: { timeSeriesFilter: { filter: "f1" } } }] } },
            {
              scorecard: {
                timeSeriesQuery: {
                  timeSeriesFilterRatio: { numerator: { filter: "n" }, denominator: { filter: "d" } },
                },
              },
            },
            { logsPanel: { filter: 'severity>="ERROR"' } },
          ],
        }),
      ).map((f) => f.filter),
    ).toEqual(["f1", "n", "d"]);
  });
});

describe("every Monitoring filter the program emits", () => {
  let run: StackRun;
  beforeAll(async () => {
    run = await runStack({ alertEmail: "ops@example.com" });
  });

  const emitted = () => [
    ...run
      .ofType(types.alertPolicy)
      .flatMap((a) =>
        alertPolicyFilters(a.props).map((f) => ({ where: `${a.props.displayName} ${f.path}`, ...f })),
      ),
    ...run
      .ofType(types.dashboard)
      .flatMap((d) =>
        dashboardFilters(d.props.dashboardJson).map((f) => ({ where: `dashboard ${f.path}`, ...f })),
      ),
  ];

  it("is valid: alert thresholds, ratio denominators, absence conditions and every dashboard chart", () => {
    const all = emitted();
    // 7 policies: 9 conditions, one with a denominator; 10 charts.
    expect(all.filter((f) => f.where.startsWith("dashboard"))).toHaveLength(10);
    expect(all.filter((f) => !f.where.startsWith("dashboard"))).toHaveLength(12);
    expect(all.map((f) => [f.where, checkTimeSeriesFilter(f.filter)])).toEqual(all.map((f) => [f.where, []]));
    // Sets of values are one_of, as Monitoring wants.
    expect(all.some((f) => f.filter.includes("one_of("))).toBe(true);
    expect(all.every((f) => !/=\s*\(/.test(f.filter))).toBe(true);
  });

  it("the log-based metrics' and log sink's filters are Logging queries, which the Monitoring grammar would refuse: it is not applied to them", async () => {
    const withSink = await runStack({ logSinkDataset: "tally_dev_logs" });
    const logging = [
      ...withSink.ofType("gcp:logging/metric:Metric").map((m) => m.props.filter as string),
      ...withSink.ofType("gcp:logging/projectSink:ProjectSink").map((s) => s.props.filter as string),
    ];
    expect(logging.length).toBe(10);
    for (const f of logging) expect(ok(f), f).toBe(false);
    // …and the rules pass anyway: they only look at alert conditions and dashboards.
    expect(checkAll(withSink.resources).filter((v) => v.rule === "monitoring-filters-valid")).toEqual([]);
  });

  it("the policy reports the Logging form in an alert or a chart (the defect this replaced)", () => {
    const copy = structuredClone(run.resources) as ResourceRecord[];
    const backlog = copy.find(
      (r) => r.type === types.alertPolicy && String(r.props.displayName).includes("work backlog is old"),
    )!;
    const before = backlog.props.conditions[0].conditionThreshold.filter as string;
    backlog.props.conditions[0].conditionThreshold.filter = before.replace(
      'resource.labels.subscription_id = one_of("tally-dev-work-demo-push", "tally-dev-work-text-stats-push")',
      'resource.labels.subscription_id=("tally-dev-work-demo-push" OR "tally-dev-work-text-stats-push")',
    );
    const dashboard = copy.find((r) => r.type === types.dashboard)!;
    dashboard.props.dashboardJson = dashboard.props.dashboardJson.replace(
      /resource\.labels\.service_name = one_of\(([^)]*)\)/,
      (_: string, list: string) => `resource.labels.service_name=(${list.split(", ").join(" OR ")})`,
    );
    const v = checkAll(copy).filter((x) => x.rule === "monitoring-filters-valid");
    expect(v.map((x) => x.resource)).toEqual(["tally-dev-alert-oldest-unacked", "tally-dev-dashboard"]);
    expect(v[0]!.message).toContain(
      "conditions[0].conditionThreshold.filter is not a valid Monitoring filter",
    );
    expect(v[0]!.message).toContain("is Logging syntax");
  });
});
