// State: the Firestore ledger (database, the composite indexes its queries need, TTL on finished
// documents), the BigQuery results dataset and table, and optionally a log sink routing Tally's logs
// to BigQuery (execution logs belong in Cloud Logging, never in per-item table writes: F2).
//
// Index and TTL declarations come from functions/adapters/firestoreIndexes.ts and the table's
// schema, partitioning and clustering from functions/adapters/bigqueryResultSink.ts, so the adapters'
// queries and the declared resources cannot drift apart.
import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import { bigqueryExportPermissions, resultsTableSpec } from "../functions/adapters/bigqueryResultSink";
import {
  type CompositeIndex,
  firestoreIndexExemptions,
  firestoreIndexes,
  firestoreTtlFields,
} from "../functions/adapters/firestoreIndexes";
import type { Apis } from "./apis";
import type { InfraConfig } from "./config";
import { handlerAccounts, type Identities, type WorkerAccounts } from "./identities";
import { handlerLogFilter } from "./logQueries";

/** Custom-role ids allow ^[a-zA-Z0-9_.]{3,64}$ (terraform-provider-google google/verify/validation.go). */
export function exporterRoleId(prefix: string): string {
  return `${prefix.replace(/[^a-zA-Z0-9_.]/g, "_")}_bigquery_exporter`;
}

/** The handlers use the default database (`new Firestore({ projectId })`). */
export const firestoreDatabase = "(default)";

export interface Storage {
  database?: gcp.firestore.Database;
  indexes: gcp.firestore.Index[];
  ttlFields: gcp.firestore.Field[];
  /** Single-field index exemptions: fields no query needs an automatic index of (issue #16). */
  indexExemptions: gcp.firestore.Field[];
  resultsDataset: gcp.bigquery.Dataset;
  resultsTable: gcp.bigquery.Table;
  logSink?: gcp.logging.ProjectSink;
}

export function indexResourceName(prefix: string, index: CompositeIndex): string {
  const scope = index.queryScope === "COLLECTION_GROUP" ? "group" : "coll";
  return `${prefix}-index-${index.collection}-${scope}-${index.fields.map((f) => f.fieldPath).join("-")}`;
}

/** The results table's schema as the BigQuery API takes it (JSON). */
export function resultsTableSchemaJson(): string {
  return JSON.stringify(
    resultsTableSpec.schema.map((f) => ({
      name: f.name,
      type: f.type,
      mode: f.mode,
      description: f.description,
    })),
  );
}

export function createStorage(
  a: {
    cfg: InfraConfig;
    project: pulumi.Input<string>;
    labels: Record<string, string>;
    apis: Apis;
    identities: Identities;
    workerAccounts: WorkerAccounts;
  },
  parent?: pulumi.Resource,
): Storage {
  const { cfg } = a;
  const handlers = handlerAccounts(a.identities, a.workerAccounts);
  const p = cfg.prefix;

  // --- Firestore ---------------------------------------------------------------------------------
  const database = cfg.manageFirestoreDatabase
    ? new gcp.firestore.Database(
        `${p}-firestore`,
        {
          project: a.project,
          name: firestoreDatabase,
          locationId: cfg.firestoreLocation,
          type: "FIRESTORE_NATIVE",
          deleteProtectionState: "DELETE_PROTECTION_ENABLED",
          // The ledger outlives the stack: `pulumi destroy` leaves the database and its data.
          deletionPolicy: "ABANDON",
        },
        { parent, dependsOn: a.apis.on("firestore.googleapis.com") },
      )
    : undefined;
  const firestoreReady = database ? [database] : a.apis.on("firestore.googleapis.com");

  const indexes = firestoreIndexes.map(
    (index) =>
      new gcp.firestore.Index(
        indexResourceName(p, index),
        {
          project: a.project,
          database: firestoreDatabase,
          collection: index.collection,
          queryScope: index.queryScope,
          fields: index.fields.map((f) => ({ fieldPath: f.fieldPath, order: f.order })),
        },
        { parent, dependsOn: firestoreReady },
      ),
  );
  const ttlFields = firestoreTtlFields.map(
    (ttl) =>
      new gcp.firestore.Field(
        `${p}-ttl-${ttl.collection}-${ttl.field}`,
        {
          project: a.project,
          database: firestoreDatabase,
          // TTL policies apply to a collection group: every `items` subcollection at once.
          collection: ttl.collection,
          field: ttl.field,
          ttlConfig: {},
          // No single-field index on the expiry timestamp: nothing queries it, and an index on a
          // monotonically increasing value hotspots writes.
          indexConfig: {},
        },
        { parent, dependsOn: firestoreReady },
      ),
  );
  // Every field no query needs is exempt from Firestore's automatic single-field indexes: an index
  // over a time or position the ledger writes in increasing order caps its collection at 500 writes/s,
  // and every index entry is a write more per document write (functions/adapters/firestoreIndexes.ts).
  const indexExemptions = firestoreIndexExemptions.map(
    (ex) =>
      new gcp.firestore.Field(
        `${p}-noindex-${ex.collection}-${ex.field.replace(/[^a-zA-Z0-9]/g, "-")}`,
        {
          project: a.project,
          database: firestoreDatabase,
          // Like the TTL fields: the collection group, every `items` subcollection at once.
          collection: ex.collection,
          field: ex.field,
          indexConfig: {},
        },
        { parent, dependsOn: firestoreReady },
      ),
  );
  // Firestore has no per-collection IAM: roles/datastore.user on the project is the narrowest grant
  // that lets a handler read and write the ledger. Only the handlers get it (each pipeline's worker too).
  for (const [role, account] of handlers)
    new gcp.projects.IAMMember(
      `${p}-${role}-datastore-user`,
      { project: a.project, role: "roles/datastore.user", member: account.member },
      { parent },
    );

  // --- BigQuery results ---------------------------------------------------------------------------
  const resultsDataset = new gcp.bigquery.Dataset(
    `${p}-results-dataset`,
    {
      project: a.project,
      datasetId: cfg.resultsDataset,
      location: cfg.resultsLocation,
      description: `Tally (${p}): results of finalized batches, one row per succeeded item`,
      labels: a.labels,
      // Results are the product's output and exist nowhere else once the ledger's TTL removes the
      // items: `pulumi destroy` must not delete them (the table also has deletionProtection).
      deleteContentsOnDestroy: false,
    },
    { parent, dependsOn: a.apis.on("bigquery.googleapis.com") },
  );
  const resultsTable = new gcp.bigquery.Table(
    `${p}-results-table`,
    {
      project: a.project,
      datasetId: resultsDataset.datasetId,
      tableId: cfg.topology.resultsTable,
      description: "One row per succeeded item per export; written once per batch generation by a load job",
      labels: a.labels,
      schema: resultsTableSchemaJson(),
      timePartitioning: {
        type: resultsTableSpec.timePartitioning.type,
        field: resultsTableSpec.timePartitioning.field,
      },
      clusterings: [...resultsTableSpec.clustering.fields],
      deletionProtection: true,
    },
    { parent },
  );
  // The export ladder (functions/adapters/bigqueryResultSink.ts) inserts a load job under a
  // deterministic id and, when the id is taken, reads the job another finalizer created. jobs.get on a
  // job one did not create "requires the bigquery.jobs.get permission on the job resource"; only the
  // creator gets by with bigquery.jobs.create (https://cloud.google.com/bigquery/docs/reference/rest/v2/jobs/get,
  // https://cloud.google.com/bigquery/docs/jobs-overview). roles/bigquery.jobUser has jobs.create but
  // not jobs.get, so a finalizer taking over a dead one's export got 403 and the batch stayed
  // finalizing. This custom role holds exactly the two permissions; jobs are project resources, so
  // it is granted on the project. (Role ids allow letters, digits, _ and .: ^[a-zA-Z0-9_.]{3,64}$.)
  const exporterRole = new gcp.projects.IAMCustomRole(
    `${p}-bigquery-exporter-role`,
    {
      project: a.project,
      roleId: exporterRoleId(p),
      title: `Tally ${p} BigQuery exporter`,
      description:
        "Insert BigQuery load/query jobs and read any job in the project (take over another finalizer's export)",
      // What the sink declares its export ladder needs.
      permissions: [...bigqueryExportPermissions],
      stage: "GA",
    },
    { parent, dependsOn: a.apis.on("iam.googleapis.com") },
  );
  for (const [role, account] of handlers) {
    // Whichever handler finalizes a batch exports its results (worker: after the last item;
    // reconciler: the safety net; coordinator: cancelling a batch with nothing left running), and any
    // of them may take over an export another one started.
    new gcp.bigquery.DatasetIamMember(
      `${p}-results-${role}-data-editor`,
      {
        project: a.project,
        datasetId: resultsDataset.datasetId,
        role: "roles/bigquery.dataEditor",
        member: account.member,
      },
      { parent },
    );
    // Jobs belong to the project: bigquery.jobs.create/get have no narrower scope. The role is named
    // by its id (known at preview) and ordered after the custom role.
    new gcp.projects.IAMMember(
      `${p}-${role}-bigquery-exporter`,
      {
        project: a.project,
        role: pulumi.interpolate`projects/${a.project}/roles/${exporterRoleId(p)}`,
        member: account.member,
      },
      { parent, dependsOn: [exporterRole, ...a.apis.on("bigquery.googleapis.com")] },
    );
  }

  // --- optional log sink --------------------------------------------------------------------------
  let logSink: gcp.logging.ProjectSink | undefined;
  if (cfg.logSinkDataset) {
    const logsDataset = new gcp.bigquery.Dataset(
      `${p}-logs-dataset`,
      {
        project: a.project,
        datasetId: cfg.logSinkDataset,
        location: cfg.resultsLocation,
        description: `Tally (${p}): handler logs routed by the ${p}-logs sink`,
        labels: a.labels,
        // The sink creates a table per log and day; without this `pulumi destroy` cannot delete a
        // dataset that still holds tables ("Dataset … is still in use"). The logs stay in Cloud
        // Logging, the primary store; these are a copy.
        deleteContentsOnDestroy: true,
      },
      { parent, dependsOn: a.apis.on("bigquery.googleapis.com") },
    );
    logSink = new gcp.logging.ProjectSink(
      `${p}-log-sink`,
      {
        project: a.project,
        name: `${p}-logs`,
        description: "Tally handler logs to BigQuery (Cloud Logging stays the primary store)",
        destination: pulumi.interpolate`bigquery.googleapis.com/projects/${a.project}/datasets/${logsDataset.datasetId}`,
        filter: handlerLogFilter(cfg.topology),
        uniqueWriterIdentity: true,
        bigqueryOptions: { usePartitionedTables: true },
      },
      { parent, dependsOn: a.apis.on("logging.googleapis.com") },
    );
    // The sink's own writer identity appends log rows to this dataset only.
    new gcp.bigquery.DatasetIamMember(
      `${p}-logs-sink-writer`,
      {
        project: a.project,
        datasetId: logsDataset.datasetId,
        role: "roles/bigquery.dataEditor",
        member: logSink.writerIdentity,
      },
      { parent },
    );
  }

  return { database, indexes, ttlFields, indexExemptions, resultsDataset, resultsTable, logSink };
}
