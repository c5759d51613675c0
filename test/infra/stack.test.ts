// The Pulumi program under mocks: every resource DESIGN §4 lists is registered with the properties
// that matter (delivery settings, OIDC, ingress, runtime, schedule, alerts) and exactly the IAM
// grants below — no more. The handlers' environment round-trips through functions/config.ts to the
// same topology the stack was built from.

import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { bigqueryExportPermissions } from "../../functions/adapters/bigqueryResultSink";
import {
  firestoreIndexExemptions,
  firestoreIndexes,
  firestoreTtlFields,
} from "../../functions/adapters/firestoreIndexes";
import { loadConfig, workerConfig } from "../../functions/config";
import { requiredApis } from "../../infra/apis";
import { checkAll, exportPermissions, type ResourceRecord, types } from "../../infra/policy/rules";
import { exporterRoleId } from "../../infra/storage";
import { mockProject, runStack, type StackRun } from "./support/pulumiMocks";

const P = mockProject.projectId;
const N = mockProject.number;
const sa = (id: string) => `${id}@${P}.iam.gserviceaccount.com`;
const pubsubAgent = `serviceAccount:service-${N}@gcp-sa-pubsub.iam.gserviceaccount.com`;
const url = (service: string) => `https://${service}-${N}.us-central1.run.app`;
/** The code pipelines (functions/pipelines/registry.ts): each deployed as its own unit. */
const pipelines = ["demo", "text-stats"] as const;
const workerUrl = (pipeline: string) => url(`tally-dev-worker-${pipeline}`);
const reconcilerUrl = url("tally-dev-reconciler");

const config = {
  alertEmail: "ops@example.com",
  coordinatorInvokers: '["user:ana@example.com","group:ops@example.com"]',
};

let run: StackRun;
beforeAll(async () => {
  run = await runStack(config);
});

const byProp = (type: string, key: string, value: unknown): ResourceRecord => {
  const found = run.ofType(type).filter((r) => r.props[key] === value);
  if (found.length !== 1)
    throw new Error(`expected one ${type} with ${key}=${String(value)}, found ${found.length}`);
  return found[0]!;
};
const fn = (name: string) => byProp(types.function, "name", name).props;
const sub = (name: string) => byProp(types.subscription, "name", name).props;

describe("the stack under mocks", () => {
  it("registers every resource DESIGN §4 lists", () => {
    const count = (type: string) => run.ofType(type).length;
    expect(count("gcp:projects/service:Service")).toBe(requiredApis.length);
    expect(count("gcp:projects/serviceIdentity:ServiceIdentity")).toBe(1);
    // The shared accounts (coordinator, reconciler, two push identities, scheduler, builder) and
    // one worker account per pipeline.
    expect(count("gcp:serviceaccount/account:Account")).toBe(6 + pipelines.length);
    // One work topic and push subscription per pipeline; the dead-letter and parking topics are shared.
    expect(count("gcp:pubsub/topic:Topic")).toBe(2 + pipelines.length);
    expect(count(types.subscription)).toBe(2 + pipelines.length);
    expect(count(types.function)).toBe(2 + pipelines.length);
    // No secrets declared: no secret grants.
    expect(count(types.secretIamMember)).toBe(0);
    expect(count(types.schedulerJob)).toBe(1);
    expect(count("gcp:storage/bucket:Bucket")).toBe(1);
    expect(count("gcp:storage/bucketObject:BucketObject")).toBe(1);
    expect(count("gcp:firestore/database:Database")).toBe(1);
    expect(count("gcp:firestore/index:Index")).toBe(firestoreIndexes.length);
    expect(count("gcp:firestore/field:Field")).toBe(
      firestoreTtlFields.length + firestoreIndexExemptions.length,
    );
    expect(count("gcp:bigquery/dataset:Dataset")).toBe(1);
    expect(count("gcp:bigquery/table:Table")).toBe(1);
    expect(count("gcp:logging/metric:Metric")).toBe(9);
    expect(count(types.alertPolicy)).toBe(9);
    expect(count(types.metricReadiness)).toBe(9);
    expect(count(types.propagationWait)).toBe(1);
    expect(count(types.projectCustomRole)).toBe(1);
    expect(count(types.notificationChannel)).toBe(1);
    expect(count("gcp:monitoring/dashboard:Dashboard")).toBe(1);
    // No log sink unless tally:logSinkDataset is set.
    expect(count("gcp:logging/projectSink:ProjectSink")).toBe(0);
  });

  it("enables the APIs without ever disabling them, and creates the Pub/Sub service agent", () => {
    for (const api of run.ofType("gcp:projects/service:Service")) {
      expect(api.props.disableOnDestroy).toBe(false);
      expect(api.props.project).toBe(P);
    }
    expect(
      run
        .ofType("gcp:projects/service:Service")
        .map((s) => s.props.service)
        .sort(),
    ).toEqual([...requiredApis].sort());
    expect(run.ofType("gcp:projects/serviceIdentity:ServiceIdentity")[0]!.props.service).toBe(
      "pubsub.googleapis.com",
    );
  });

  it("each pipeline's work subscription pushes to its own worker with OIDC, ack deadline, retry and dead-letter policy", () => {
    for (const pipeline of pipelines)
      expect(sub(`tally-dev-work-${pipeline}-push`), pipeline).toMatchObject({
        topic: `tally-dev-work-${pipeline}`,
        ackDeadlineSeconds: 600,
        messageRetentionDuration: "604800s",
        expirationPolicy: { ttl: "" },
        retryPolicy: { minimumBackoff: "10s", maximumBackoff: "300s" },
        deadLetterPolicy: {
          deadLetterTopic: `projects/${P}/topics/tally-dev-work-dead-letter`,
          maxDeliveryAttempts: 10,
        },
        pushConfig: {
          pushEndpoint: `${workerUrl(pipeline)}/`,
          oidcToken: { serviceAccountEmail: sa("tally-dev-push"), audience: workerUrl(pipeline) },
        },
      });
  });

  it("the dead-letter subscription pushes to the reconciler's /dead-letter, and parks what it cannot deliver", () => {
    expect(sub("tally-dev-work-dead-letter-push")).toMatchObject({
      topic: "tally-dev-work-dead-letter",
      ackDeadlineSeconds: 600,
      expirationPolicy: { ttl: "" },
      retryPolicy: { minimumBackoff: "10s", maximumBackoff: "300s" },
      deadLetterPolicy: {
        deadLetterTopic: `projects/${P}/topics/tally-dev-work-dead-letter-parked`,
        maxDeliveryAttempts: 10,
      },
      pushConfig: {
        pushEndpoint: `${reconcilerUrl}/dead-letter`,
        oidcToken: { serviceAccountEmail: sa("tally-dev-dlq"), audience: reconcilerUrl },
      },
    });
    const hold = sub("tally-dev-work-dead-letter-parked-hold");
    expect(hold).toMatchObject({
      topic: "tally-dev-work-dead-letter-parked",
      expirationPolicy: { ttl: "" },
      messageRetentionDuration: "604800s",
    });
    expect(hold.pushConfig).toBeUndefined();
  });

  it("deploys the coordinator, the reconciler and one worker per pipeline from the content-hashed bundle, each with its own identity", () => {
    const object = run.ofType("gcp:storage/bucketObject:BucketObject")[0]!.props;
    expect(object.name).toBe(run.outputs.functionSourceObject);
    expect(object.name).toMatch(/^functions-[0-9a-f]{24}\.zip$/);
    const bucket = run.ofType("gcp:storage/bucket:Bucket")[0]!.props;
    expect(bucket).toMatchObject({
      name: `${P}-tally-dev-src`,
      publicAccessPrevention: "enforced",
      uniformBucketLevelAccess: true,
    });
    const expected = {
      "tally-dev-coordinator": {
        entryPoint: "coordinator",
        sa: "tally-dev-coord",
        ingress: "ALLOW_ALL",
        timeout: 900,
      },
      ...Object.fromEntries(
        pipelines.map((pipeline) => [
          `tally-dev-worker-${pipeline}`,
          {
            entryPoint: "worker",
            sa: `tally-dev-w-${pipeline}`,
            ingress: "ALLOW_INTERNAL_ONLY",
            timeout: 540,
          },
        ]),
      ),
      "tally-dev-reconciler": {
        entryPoint: "reconciler",
        sa: "tally-dev-recon",
        ingress: "ALLOW_INTERNAL_ONLY",
        timeout: 300,
      },
    };
    for (const [name, e] of Object.entries(expected)) {
      const f = fn(name);
      expect(f.location).toBe("us-central1");
      expect(f.buildConfig).toMatchObject({
        runtime: "nodejs22",
        entryPoint: e.entryPoint,
        serviceAccount: `projects/${P}/serviceAccounts/${sa("tally-dev-build")}`,
        source: { storageSource: { bucket: bucket.name, object: object.name } },
      });
      expect(f.serviceConfig).toMatchObject({
        serviceAccountEmail: sa(e.sa),
        ingressSettings: e.ingress,
        timeoutSeconds: e.timeout,
        allTrafficOnLatestRevision: true,
      });
    }
    // Without tally:pipelines every worker has today's single worker's size.
    for (const pipeline of pipelines)
      expect(fn(`tally-dev-worker-${pipeline}`).serviceConfig).toMatchObject({
        maxInstanceRequestConcurrency: 16,
        maxInstanceCount: 20,
        minInstanceCount: 0,
        availableMemory: "1Gi",
        availableCpu: "1",
      });
  });

  it("handler timeouts fit inside the ack deadlines of the subscriptions that push to them", () => {
    for (const pipeline of pipelines)
      expect(fn(`tally-dev-worker-${pipeline}`).serviceConfig.timeoutSeconds).toBeLessThanOrEqual(
        sub(`tally-dev-work-${pipeline}-push`).ackDeadlineSeconds,
      );
    expect(fn("tally-dev-reconciler").serviceConfig.timeoutSeconds).toBeLessThanOrEqual(
      sub("tally-dev-work-dead-letter-push").ackDeadlineSeconds,
    );
  });

  it("the handlers' environment round-trips through functions/config.ts to the stack's topology", () => {
    const worker = fn("tally-dev-worker-demo").serviceConfig.environmentVariables as Record<string, string>;
    expect(worker).toMatchObject({
      NODE_ENV: "production",
      GOOGLE_CLOUD_PROJECT: P,
      TALLY_PREFIX: "tally-dev",
      TALLY_SINK: "bigquery",
      TALLY_BIGQUERY_DATASET: "tally_dev_results",
      TALLY_LEASE_SECONDS: "120",
      TALLY_ACK_DEADLINE_SECONDS: "600",
      TALLY_OIDC_AUDIENCE: workerUrl("demo"),
      TALLY_OIDC_SERVICE_ACCOUNT: sa("tally-dev-push"),
      TALLY_WORKER_PIPELINE: "demo",
    });
    const loaded = loadConfig(worker);
    expect(loaded.projectId).toBe(P);
    expect(loaded.workerPipeline).toBe("demo");
    expect(loaded.topology.pipelines.map((x) => x.pipeline)).toEqual([...pipelines]);
    const deployed = run.outputs.pipelines as Record<string, { workTopic: string; workSubscription: string }>;
    for (const x of loaded.topology.pipelines) {
      expect(x.workTopic).toBe(deployed[x.pipeline]!.workTopic);
      expect(x.workSubscription).toBe(deployed[x.pipeline]!.workSubscription);
    }
    expect(loaded.topology.delivery).toEqual({
      ackDeadlineSeconds: 600,
      maxDeliveryAttempts: 10,
      minimumBackoffSeconds: 10,
      maximumBackoffSeconds: 300,
      leaseSeconds: 120,
      maxItemAttempts: 5,
      workerTimeoutSeconds: 540,
    });
    const reconciler = fn("tally-dev-reconciler").serviceConfig.environmentVariables as Record<
      string,
      string
    >;
    expect(reconciler.TALLY_OIDC_AUDIENCE).toBe(reconcilerUrl);
    expect(reconciler.TALLY_OIDC_SERVICE_ACCOUNT).toBe(`${sa("tally-dev-sched")},${sa("tally-dev-dlq")}`);
    const coordinator = fn("tally-dev-coordinator").serviceConfig.environmentVariables as Record<
      string,
      string
    >;
    expect(coordinator.TALLY_OIDC_AUDIENCE).toBeUndefined();
    expect(coordinator.TALLY_SINK).toBe("bigquery");
  });

  it("the scheduler job calls POST /reconcile with an OIDC token for the reconciler", () => {
    const job = run.ofType(types.schedulerJob)[0]!.props;
    expect(job).toMatchObject({
      name: "tally-dev-reconcile",
      region: "us-central1",
      schedule: "* * * * *",
      timeZone: "Etc/UTC",
      attemptDeadline: "300s",
      retryConfig: { retryCount: 2, minBackoffDuration: "5s", maxBackoffDuration: "30s" },
      httpTarget: {
        uri: `${reconcilerUrl}/reconcile`,
        httpMethod: "POST",
        oidcToken: { serviceAccountEmail: sa("tally-dev-sched"), audience: reconcilerUrl },
      },
    });
    expect(Buffer.from(job.httpTarget.body, "base64").toString()).toBe("{}");
  });

  it("grants exactly these roles, each scoped to its resource", () => {
    const member = (id: string) => `serviceAccount:${sa(id)}`;
    const workers = pipelines.map((x) => `tally-dev-w-${x}`);
    const handlers = ["tally-dev-coord", ...workers, "tally-dev-recon"];
    const grants = run.resources
      .filter((r) => /IAMMember|IamMember/.test(r.type))
      .map((r) => {
        const target =
          r.props.topic ??
          r.props.subscription ??
          r.props.datasetId ??
          r.props.bucket ??
          r.props.serviceAccountId ??
          r.props.name ??
          r.props.project;
        const condition = r.props.condition ? ` if ${r.props.condition.expression}` : "";
        return `${r.type.split(":")[1]} ${target} ${r.props.role} ${r.props.member}${condition}`;
      })
      .sort();
    const expected = [
      // dead-lettering: the Pub/Sub service agent
      `pubsub/topicIAMMember tally-dev-work-dead-letter roles/pubsub.publisher ${pubsubAgent}`,
      `pubsub/topicIAMMember tally-dev-work-dead-letter-parked roles/pubsub.publisher ${pubsubAgent}`,
      ...pipelines.map(
        (x) => `pubsub/subscriptionIAMMember tally-dev-work-${x}-push roles/pubsub.subscriber ${pubsubAgent}`,
      ),
      `pubsub/subscriptionIAMMember tally-dev-work-dead-letter-push roles/pubsub.subscriber ${pubsubAgent}`,
      // publishing doorbells: coordinator and reconciler on every pipeline's topic, a worker on its own only
      ...pipelines.flatMap((x) =>
        ["tally-dev-coord", "tally-dev-recon", `tally-dev-w-${x}`].map(
          (h) => `pubsub/topicIAMMember tally-dev-work-${x} roles/pubsub.publisher ${member(h)}`,
        ),
      ),
      // invoking the services
      ...pipelines.map(
        (x) =>
          `cloudrunv2/serviceIamMember tally-dev-worker-${x} roles/run.invoker ${member("tally-dev-push")}`,
      ),
      `cloudrunv2/serviceIamMember tally-dev-reconciler roles/run.invoker ${member("tally-dev-sched")}`,
      `cloudrunv2/serviceIamMember tally-dev-reconciler roles/run.invoker ${member("tally-dev-dlq")}`,
      "cloudrunv2/serviceIamMember tally-dev-coordinator roles/run.invoker user:ana@example.com",
      "cloudrunv2/serviceIamMember tally-dev-coordinator roles/run.invoker group:ops@example.com",
      // the ledger and the results
      ...handlers.map((h) => `projects/iAMMember ${P} roles/datastore.user ${member(h)}`),
      // the export: a custom role with bigquery.jobs.create + bigquery.jobs.get (take-over reads others' jobs)
      ...handlers.map(
        (h) => `projects/iAMMember ${P} projects/${P}/roles/tally_dev_bigquery_exporter ${member(h)}`,
      ),
      ...handlers.map(
        (h) => `bigquery/datasetIamMember tally_dev_results roles/bigquery.dataEditor ${member(h)}`,
      ),
      // building the functions
      `storage/bucketIAMMember ${P}-tally-dev-src roles/storage.objectViewer ${member("tally-dev-build")}`,
      `projects/iAMMember ${P} roles/logging.logWriter ${member("tally-dev-build")}`,
      `projects/iAMMember ${P} roles/artifactregistry.writer ${member("tally-dev-build")}`,
      `projects/iAMMember ${P} roles/storage.objectAdmin ${member("tally-dev-build")} if resource.name.startsWith("projects/_/buckets/gcf-v2-")`,
      // the Pub/Sub service agent mints the push subscriptions' OIDC tokens, on each push account only
      `serviceaccount/iAMMember projects/${P}/serviceAccounts/${sa("tally-dev-push")} roles/iam.serviceAccountTokenCreator ${pubsubAgent}`,
      `serviceaccount/iAMMember projects/${P}/serviceAccounts/${sa("tally-dev-dlq")} roles/iam.serviceAccountTokenCreator ${pubsubAgent}`,
    ].sort();
    expect(grants).toEqual(expected);
  });

  it("declares the ledger's indexes and TTL policies from functions/adapters/firestoreIndexes.ts", () => {
    const declared = run
      .ofType("gcp:firestore/index:Index")
      .map((i) =>
        JSON.stringify({
          collection: i.props.collection,
          queryScope: i.props.queryScope,
          fields: i.props.fields,
        }),
      )
      .sort();
    expect(declared).toEqual(
      firestoreIndexes
        .map((i) => JSON.stringify({ collection: i.collection, queryScope: i.queryScope, fields: i.fields }))
        .sort(),
    );
    for (const i of run.ofType("gcp:firestore/index:Index")) expect(i.props.database).toBe("(default)");
    const ttl = run
      .ofType("gcp:firestore/field:Field")
      .filter((f) => f.props.ttlConfig !== undefined)
      .map((f) => [f.props.collection, f.props.field, f.props.ttlConfig]);
    expect(ttl.sort()).toEqual(firestoreTtlFields.map((t) => [t.collection, t.field, {}]).sort());
    expect(run.ofType("gcp:firestore/database:Database")[0]!.props).toMatchObject({
      name: "(default)",
      locationId: "nam5",
      type: "FIRESTORE_NATIVE",
      deletionPolicy: "ABANDON",
    });
  });

  it("declares the BigQuery results table: partitioned by day, clustered by batch id, the sinks' columns", () => {
    const table = run.ofType("gcp:bigquery/table:Table")[0]!.props;
    expect(table.tableId).toBe("item_results");
    expect(table.datasetId).toBe("tally_dev_results");
    expect(table.timePartitioning).toEqual({ type: "DAY", field: "exported_at" });
    expect(table.clusterings).toEqual(["batch_id"]);
    expect(table.deletionProtection).toBe(true);
    const columns = (JSON.parse(table.schema) as { name: string; type: string }[]).map(
      (c) => `${c.name}:${c.type}`,
    );
    expect(columns).toEqual([
      "batch_id:STRING",
      "item_id:STRING",
      "generation:INTEGER",
      "result:JSON",
      "finished_at:TIMESTAMP",
      "attempts:INTEGER",
      "export_id:STRING",
      "exported_at:TIMESTAMP",
      "batch_created_at:TIMESTAMP",
    ]);
    expect(run.ofType("gcp:bigquery/dataset:Dataset")[0]!.props).toMatchObject({
      datasetId: "tally_dev_results",
      location: "US",
    });
    expect(run.outputs.resultsTable).toBe(`${P}.tally_dev_results.item_results`);
  });

  it("counts the handlers' events with log-based metrics", () => {
    const filters = Object.fromEntries(
      run.ofType("gcp:logging/metric:Metric").map((m) => [m.props.name, m.props.filter]),
    );
    const services =
      'resource.labels.service_name=("tally-dev-coordinator" OR "tally-dev-reconciler" OR "tally-dev-worker-demo" OR "tally-dev-worker-text-stats")';
    expect(filters["tally-dev-item-dead-lettered"]).toContain('jsonPayload.event="item.dead_lettered"');
    expect(filters["tally-dev-item-dead-lettered"]).toContain(services);
    expect(filters["tally-dev-batch-failed"]).toContain(
      'jsonPayload.event="batch.finalized" AND jsonPayload.status="failed"',
    );
    expect(filters["tally-dev-reconcile-stalled-found"]).toContain("jsonPayload.expiredLeases.found>0");
    expect(filters["tally-dev-reconcile-redriven"]).toContain("jsonPayload.expiredLeases.redriven>0");
    expect(filters["tally-dev-reconciler-errors"]).toContain(
      'resource.labels.service_name=("tally-dev-reconciler")',
    );
    expect(filters["tally-dev-reconciler-errors"]).toContain("severity>=ERROR");
    expect(filters["tally-dev-poison-messages"]).toContain('jsonPayload.event="message.poison"');
    expect(filters["tally-dev-reconcile-ticks"]).toContain('jsonPayload.event="reconcile.summary"');
  });

  it("alerts on dead letters, old backlog, reconciler failures, stalled items, failed batches and worker 5xx", () => {
    const channel = run.ofType(types.notificationChannel)[0]!.props;
    expect(channel).toMatchObject({ type: "email", labels: { email_address: "ops@example.com" } });
    const alerts = Object.fromEntries(
      run.ofType(types.alertPolicy).map((a) => [a.props.displayName as string, a.props] as const),
    );
    for (const a of Object.values(alerts)) {
      expect(a.notificationChannels).toEqual([channel.name]);
      expect(a.documentation.content).toContain("docs/operations.md");
    }
    // biome-ignore lint/suspicious/noExplicitAny: alert conditions are provider JSON.
    const conditions = (title: string) => alerts[`Tally tally-dev: ${title}`]!.conditions as any[];

    const dead = conditions("messages dead-lettered");
    expect(dead[0].conditionThreshold.filter).toContain(
      "pubsub.googleapis.com/subscription/dead_letter_message_count",
    );
    expect(dead[0].conditionThreshold.filter).toContain(
      'resource.labels.subscription_id = one_of("tally-dev-work-demo-push", "tally-dev-work-text-stats-push", "tally-dev-work-dead-letter-push")',
    );
    expect(dead[0].conditionThreshold).toMatchObject({ comparison: "COMPARISON_GT", thresholdValue: 0 });
    expect(dead[1].conditionThreshold.filter).toContain(
      "logging.googleapis.com/user/tally-dev-item-dead-lettered",
    );

    const backlog = conditions("work backlog is old")[0].conditionThreshold;
    expect(backlog.filter).toContain("subscription/oldest_unacked_message_age");
    expect(backlog.filter).toContain(
      'resource.labels.subscription_id = one_of("tally-dev-work-demo-push", "tally-dev-work-text-stats-push")',
    );
    expect(backlog.thresholdValue).toBe(1800);

    const reconciler = conditions("reconciler failing or not running");
    expect(reconciler[0].conditionThreshold.filter).toContain("user/tally-dev-reconciler-errors");
    expect(reconciler[1].conditionAbsent).toMatchObject({ duration: "600s" });
    expect(reconciler[1].conditionAbsent.filter).toContain("user/tally-dev-reconcile-ticks");

    expect(conditions("stalled items found")[0].conditionThreshold.filter).toContain(
      "user/tally-dev-reconcile-stalled-found",
    );
    expect(conditions("batches failed")[0].conditionThreshold).toMatchObject({
      comparison: "COMPARISON_GT",
      thresholdValue: 0,
    });

    const ratio = conditions("worker 5xx ratio high")[0].conditionThreshold;
    expect(ratio.filter).toContain('metric.labels.response_code_class = "5xx"');
    expect(ratio.filter).toContain(
      'resource.labels.service_name = one_of("tally-dev-worker-demo", "tally-dev-worker-text-stats")',
    );
    expect(ratio.denominatorFilter).toContain('metric.type = "run.googleapis.com/request_count"');
    expect(ratio.denominatorFilter).not.toContain("5xx");
    expect(ratio.thresholdValue).toBe(0.2);
  });

  it("builds a dashboard and exports its link, the URLs and the names", () => {
    const dashboard = JSON.parse(run.ofType("gcp:monitoring/dashboard:Dashboard")[0]!.props.dashboardJson);
    expect(dashboard.displayName).toBe("Tally tally-dev");
    expect(dashboard.mosaicLayout.tiles).toHaveLength(10);
    expect(run.outputs).toMatchObject({
      coordinatorUrl: url("tally-dev-coordinator"),
      reconcilerUrl,
      pipelines: Object.fromEntries(
        pipelines.map((x) => [
          x,
          {
            workerUrl: workerUrl(x),
            workTopic: `tally-dev-work-${x}`,
            workSubscription: `tally-dev-work-${x}-push`,
            serviceAccount: sa(`tally-dev-w-${x}`),
          },
        ]),
      ),
      deadLetterTopic: "tally-dev-work-dead-letter",
      deadLetterSubscription: "tally-dev-work-dead-letter-push",
      schedulerJob: "tally-dev-reconcile",
      dashboardUrl: `https://console.cloud.google.com/monitoring/dashboards/custom/tally-dev-dashboard-0001?project=${P}`,
    });
  });

  it("the exporter custom role holds exactly what the sink's export ladder needs, under a valid role id", () => {
    const role = run.ofType(types.projectCustomRole)[0]!.props;
    expect(role.permissions).toEqual(["bigquery.jobs.create", "bigquery.jobs.get"]);
    expect(role.permissions).toEqual([...bigqueryExportPermissions]);
    expect(exportPermissions).toEqual([...bigqueryExportPermissions]);
    // terraform-provider-google google/verify/validation.go: IAMCustomRoleIDRegex.
    const roleIdRule = /^[a-zA-Z0-9_.]{3,64}$/;
    expect(role.roleId).toBe("tally_dev_bigquery_exporter");
    for (const prefix of ["tally-dev", "a1", "abcdefghij-klmnopqrs", "x-y-z"])
      expect(exporterRoleId(prefix)).toMatch(roleIdRule);
    expect("tally-dev_bigquery_exporter").not.toMatch(roleIdRule); // why the prefix's dashes are replaced
  });

  it("every handler can run the BigQuery export (so every handler identity needs the exporter role)", () => {
    // functions/runtime.ts builds the result sink for every component, and each handler reaches the
    // finalizer (finalizeBatch / settleBatch → sink.exportBatch).
    expect(readFileSync("functions/runtime.ts", "utf8")).toMatch(
      /const sink = await createResultSink\(config\)/,
    );
    for (const dir of ["coordinator", "worker", "reconciler"]) {
      const sources = readdirSync(join("functions/handlers", dir))
        .filter((f) => f.endsWith(".ts"))
        .map((f) => readFileSync(join("functions/handlers", dir, f), "utf8"))
        .join("\n");
      expect(sources, dir).toMatch(/\b(finalizeBatch|settleBatch)\b/);
    }
    for (const f of run.ofType(types.function))
      expect(f.props.serviceConfig.environmentVariables.TALLY_SINK).toBe("bigquery");
  });

  it("passes every policy in the pack", () => {
    expect(checkAll(run.resources)).toEqual([]);
  });
});

describe("the stack with other configuration", () => {
  it("carries custom delivery settings and schedule into subscription, functions and job", async () => {
    const custom = await runStack(
      {
        prefix: "acme",
        region: "europe-west1",
        ackDeadlineSeconds: "120",
        workerTimeoutSeconds: "100",
        maxDeliveryAttempts: "12",
        minimumBackoffSeconds: "1",
        maximumBackoffSeconds: "60",
        leaseSeconds: "30",
        reconcileSchedule: "*/5 * * * *",
        timeZone: "Europe/Paris",
        manageFirestoreDatabase: "false",
        logSinkDataset: "acme_logs",
      },
      { stack: "prod" },
    );
    const work = custom.ofType(types.subscription).find((s) => s.props.name === "acme-work-demo-push")!.props;
    expect(work).toMatchObject({
      ackDeadlineSeconds: 120,
      retryPolicy: { minimumBackoff: "1s", maximumBackoff: "60s" },
      deadLetterPolicy: { maxDeliveryAttempts: 12 },
      pushConfig: { pushEndpoint: `https://acme-worker-demo-${N}.europe-west1.run.app/` },
    });
    const fns = Object.fromEntries(custom.ofType(types.function).map((f) => [f.props.name, f.props]));
    expect(fns["acme-worker-demo"]!.serviceConfig.timeoutSeconds).toBe(100);
    expect(fns["acme-worker-demo"]!.serviceConfig.environmentVariables.TALLY_LEASE_SECONDS).toBe("30");
    // The reconciler's timeout is capped to the shared ack deadline.
    expect(fns["acme-reconciler"]!.serviceConfig.timeoutSeconds).toBe(120);
    const job = custom.ofType(types.schedulerJob)[0]!.props;
    expect(job).toMatchObject({ schedule: "*/5 * * * *", timeZone: "Europe/Paris", attemptDeadline: "120s" });
    // No database (it already exists), no channel (no alertEmail), a log sink with its writer grant.
    expect(custom.ofType("gcp:firestore/database:Database")).toHaveLength(0);
    expect(custom.ofType(types.notificationChannel)).toHaveLength(0);
    for (const a of custom.ofType(types.alertPolicy)) expect(a.props.notificationChannels).toEqual([]);
    const sink = custom.ofType("gcp:logging/projectSink:ProjectSink")[0]!.props;
    expect(sink).toMatchObject({
      destination: `bigquery.googleapis.com/projects/${P}/datasets/acme_logs`,
      uniqueWriterIdentity: true,
    });
    expect(sink.filter).toContain(
      'resource.labels.service_name=("acme-coordinator" OR "acme-reconciler" OR "acme-worker-demo" OR "acme-worker-text-stats")',
    );
    // Every dataset a log sink writes to can be destroyed with its tables; the results never are.
    const datasets = custom.ofType("gcp:bigquery/dataset:Dataset");
    const sinkTargets = new Set(
      custom
        .ofType("gcp:logging/projectSink:ProjectSink")
        .map((s) => String(s.props.destination).split("/datasets/").pop()),
    );
    expect([...sinkTargets]).toEqual(["acme_logs"]);
    expect(datasets.map((d) => [d.props.datasetId, d.props.deleteContentsOnDestroy]).sort()).toEqual([
      ["acme_logs", true],
      ["acme_results", false],
    ]);
    for (const d of datasets)
      expect(d.props.deleteContentsOnDestroy, d.props.datasetId).toBe(sinkTargets.has(d.props.datasetId));
    expect(
      custom
        .ofType("gcp:bigquery/datasetIamMember:DatasetIamMember")
        .filter((g) => g.props.datasetId === "acme_logs")
        .map((g) => [g.props.role, g.props.member]),
    ).toEqual([
      ["roles/bigquery.dataEditor", `serviceAccount:service-${N}@gcp-sa-logging.iam.gserviceaccount.com`],
    ]);
    // No coordinator invokers configured: nobody may call it.
    expect(
      custom
        .ofType("gcp:cloudrunv2/serviceIamMember:ServiceIamMember")
        .filter((g) => g.props.name === "acme-coordinator"),
    ).toEqual([]);
    expect(checkAll(custom.resources)).toEqual([]);
  });
});

describe("each pipeline a deployable unit (tally:pipelines)", () => {
  let sized: StackRun;
  beforeAll(async () => {
    sized = await runStack({
      pipelines: JSON.stringify({
        "text-stats": {
          cpu: 4,
          memory: "8Gi",
          concurrency: 1,
          minInstances: 1,
          maxInstances: 3,
          timeoutSeconds: 300,
          ackDeadlineSeconds: 320,
          maxItemAttempts: 3,
          environment: { MODEL: "large" },
          secrets: { LLM_API_KEY: "llm-api-key", SERVICE_TOKEN: { secret: "svc-token", version: "2" } },
        },
      }),
    });
  });
  const fnOf = (name: string) => sized.ofType(types.function).find((f) => f.props.name === name)!.props;
  const subOf = (name: string) => sized.ofType(types.subscription).find((s) => s.props.name === name)!.props;

  it("the sized pipeline's worker and subscription carry its settings; the other keeps the defaults", () => {
    const ml = fnOf("tally-dev-worker-text-stats");
    expect(ml.serviceConfig).toMatchObject({
      serviceAccountEmail: sa("tally-dev-w-text-stats"),
      availableCpu: "4",
      availableMemory: "8Gi",
      maxInstanceRequestConcurrency: 1,
      minInstanceCount: 1,
      maxInstanceCount: 3,
      timeoutSeconds: 300,
    });
    expect(ml.serviceConfig.environmentVariables.MODEL).toBe("large");
    // Its ratePerSecond is split across its own instance limit, not the stack-wide one (§2).
    expect(ml.serviceConfig.environmentVariables.TALLY_WORKER_MAX_INSTANCES).toBe("3");
    expect(ml.serviceConfig.secretEnvironmentVariables).toEqual([
      { key: "LLM_API_KEY", projectId: P, secret: "llm-api-key", version: "latest" },
      { key: "SERVICE_TOKEN", projectId: P, secret: "svc-token", version: "2" },
    ]);
    expect(subOf("tally-dev-work-text-stats-push")).toMatchObject({
      ackDeadlineSeconds: 320,
      deadLetterPolicy: { maxDeliveryAttempts: 10 },
    });

    const demo = fnOf("tally-dev-worker-demo");
    expect(demo.serviceConfig).toMatchObject({
      availableCpu: "1",
      availableMemory: "1Gi",
      maxInstanceRequestConcurrency: 16,
      timeoutSeconds: 540,
    });
    expect(demo.serviceConfig.environmentVariables.MODEL).toBeUndefined();
    expect(demo.serviceConfig.environmentVariables.TALLY_WORKER_MAX_INSTANCES).toBe("20");
    expect(demo.serviceConfig.secretEnvironmentVariables).toEqual([]);
    expect(subOf("tally-dev-work-demo-push").ackDeadlineSeconds).toBe(600);
  });

  it("a secretAccessor grant per declared secret, on that secret, to that pipeline's account only", () => {
    const grants = sized
      .ofType(types.secretIamMember)
      .map((g) => `${g.props.secretId} ${g.props.role} ${g.props.member}`)
      .sort();
    expect(grants).toEqual([
      `llm-api-key roles/secretmanager.secretAccessor serviceAccount:${sa("tally-dev-w-text-stats")}`,
      `svc-token roles/secretmanager.secretAccessor serviceAccount:${sa("tally-dev-w-text-stats")}`,
    ]);
    // Nothing project-wide for Secret Manager.
    expect(
      sized
        .ofType(types.projectIamMember)
        .filter((g) => String(g.props.role).startsWith("roles/secretmanager.")),
    ).toEqual([]);
    // The worker is deployed after its secrets are readable (a revision that cannot read them fails).
    const worker = sized.ofType(types.function).find((f) => f.props.name === "tally-dev-worker-text-stats")!;
    for (const g of sized.ofType(types.secretIamMember)) expect(worker.dependencies).toContain(g.urn);
  });

  it("each worker runs with its own pipeline's delivery settings (functions/config.ts workerConfig)", () => {
    const env = fnOf("tally-dev-worker-text-stats").serviceConfig.environmentVariables as Record<
      string,
      string
    >;
    const own = workerConfig(loadConfig(env));
    expect(own.topology.delivery).toMatchObject({
      ackDeadlineSeconds: 320,
      workerTimeoutSeconds: 300,
      maxItemAttempts: 3,
    });
    const demoEnv = fnOf("tally-dev-worker-demo").serviceConfig.environmentVariables as Record<
      string,
      string
    >;
    expect(workerConfig(loadConfig(demoEnv)).topology.delivery).toMatchObject({
      ackDeadlineSeconds: 600,
      workerTimeoutSeconds: 540,
      maxItemAttempts: 5,
    });
  });

  it("passes every policy in the pack", () => {
    expect(checkAll(sized.resources)).toEqual([]);
  });
});
