// State: the Firestore ledger (database, the composite indexes its queries need, TTL on finished
// documents), the BigQuery results dataset and table, and optionally a log sink routing Tally's logs
// to BigQuery (execution logs belong in Cloud Logging, never in per-item table writes: F2).
//
// Index and TTL declarations come from functions/adapters/firestoreIndexes.ts and the table's
// schema, partitioning and clustering from functions/adapters/bigqueryResultSink.ts, so the adapters'
// queries and the declared resources cannot drift apart.
import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import { resultsTableSpec } from "../functions/adapters/bigqueryResultSink";
import {
  type CompositeIndex,
  firestoreIndexes,
  firestoreTtlFields,
} from "../functions/adapters/firestoreIndexes";
import type { Apis } from "./apis";
import type { InfraConfig } from "./config";
import type { Identities } from "./identities";
import { handlerLogFilter } from "./logQueries";

/** The handlers use the default database (`new Firestore({ projectId })`). */
export const firestoreDatabase = "(default)";

export interface Storage {
  database?: gcp.firestore.Database;
  indexes: gcp.firestore.Index[];
  ttlFields: gcp.firestore.Field[];
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

const handlers = ["coordinator", "worker", "reconciler"] as const;

export function createStorage(
  a: {
    cfg: InfraConfig;
    project: pulumi.Input<string>;
    labels: Record<string, string>;
    apis: Apis;
    identities: Identities;
  },
  parent?: pulumi.Resource,
): Storage {
  const { cfg, identities } = a;
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
  // Firestore has no per-collection IAM: roles/datastore.user on the project is the narrowest grant
  // that lets a handler read and write the ledger. Only the three handlers get it.
  for (const role of handlers)
    new gcp.projects.IAMMember(
      `${p}-${role}-datastore-user`,
      { project: a.project, role: "roles/datastore.user", member: identities[role].member },
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
  for (const role of handlers) {
    // Whichever handler finalizes a batch exports its results (worker: after the last item;
    // reconciler: the safety net; coordinator: cancelling a batch with nothing left running).
    new gcp.bigquery.DatasetIamMember(
      `${p}-results-${role}-data-editor`,
      {
        project: a.project,
        datasetId: resultsDataset.datasetId,
        role: "roles/bigquery.dataEditor",
        member: identities[role].member,
      },
      { parent },
    );
    // The export is a load job, and jobs belong to the project: bigquery.jobs.create has no narrower scope.
    new gcp.projects.IAMMember(
      `${p}-${role}-bigquery-job-user`,
      { project: a.project, role: "roles/bigquery.jobUser", member: identities[role].member },
      { parent, dependsOn: a.apis.on("bigquery.googleapis.com") },
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

  return { database, indexes, ttlFields, resultsDataset, resultsTable, logSink };
}
