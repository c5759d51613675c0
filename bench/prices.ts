// List prices the cost model uses (USD, beyond free tiers, no discounts). Each entry says where it
// comes from and when it was read; `verified` is false where the page's own table could not be
// read in this session and the figure is the widely published one — the report says so instead of
// passing it off as checked. Prices change: re-check before quoting a figure outside this repo.
//
// Read on 2026-11-22 (the date this file was written), via the public pages named below.

export interface ListPrice {
  /** USD per `unit`. */
  usd: number;
  unit: string;
  source: string;
  /** true: the figure was read from the source page (or a copy of it) in this session. */
  verified: boolean;
  note?: string;
}

export const pricesReadOn = "2026-11-22";

export const prices = {
  // --- Firestore (Standard edition), regional us-central1 -------------------------------------
  firestoreReads: {
    usd: 0.03,
    unit: "100,000 document reads",
    source:
      "https://cloud.google.com/firestore/pricing (per-location table); figure as quoted for US regions by https://airbyte.com/data-engineering-resources/google-firestore-pricing",
    verified: false,
    note: "the official page's per-location table is rendered dynamically and was not readable here; multi-region nam5 is $0.06",
  },
  firestoreWrites: {
    usd: 0.09,
    unit: "100,000 document writes",
    source: "as firestoreReads",
    verified: false,
    note: "multi-region nam5 is $0.18",
  },
  firestoreDeletes: {
    usd: 0.01,
    unit: "100,000 document deletes (TTL deletes included)",
    source: "as firestoreReads",
    verified: false,
    note: "multi-region nam5 is $0.02",
  },
  /** count() aggregations: one read per batch of up to 1,000 index entries matched (minimum one). */
  firestoreAggregationEntriesPerRead: {
    usd: 0,
    unit: "1,000 index entries per billed read",
    source: "https://cloud.google.com/firestore/pricing (aggregation queries)",
    verified: false,
  },

  // --- Pub/Sub ----------------------------------------------------------------------------------
  pubsubThroughput: {
    usd: 40,
    unit: "TiB of publish or delivery throughput",
    source: "https://cloud.google.com/pubsub/pricing",
    verified: true,
    note: "a minimum of 1,000 bytes is billed per publish, push or pull request (so a push of one small doorbell bills 1,000 bytes); first 10 GiB/month free",
  },

  // --- Cloud Run (functions run on Cloud Run), Tier 1, CPU allocated only during requests ------
  cloudRunVcpuSecond: {
    usd: 0.000024,
    unit: "vCPU-second",
    source: "https://cloud.google.com/run/pricing (Tier 1, request-based billing)",
    verified: true,
    note: "free: 180,000 vCPU-s/month",
  },
  cloudRunGibSecond: {
    usd: 0.0000025,
    unit: "GiB-second",
    source:
      "https://cloud.google.com/run/pricing (Tier 1, request-based billing); figure as quoted by https://cloudchipr.com/blog/cloud-run-pricing",
    verified: false,
    note: "the memory column of the official table was cut off in the copy read here",
  },
  cloudRunRequests: {
    usd: 0.4,
    unit: "million requests",
    source:
      "https://cloud.google.com/run/pricing; https://cloudwebschool.com/tools/cloud-run-cost-calculator/",
    verified: true,
    note: "first 2 million/month free",
  },

  // --- BigQuery -----------------------------------------------------------------------------
  bigqueryLoadJobs: {
    usd: 0,
    unit: "batch load job (shared slot pool)",
    source: "https://cloud.google.com/bigquery/pricing (free operations: batch loading)",
    verified: true,
  },
  bigqueryActiveStorage: {
    usd: 0.02,
    unit: "GiB-month of active logical storage",
    source:
      "https://cloud.google.com/bigquery/pricing; figure as summarised by https://coconote.app/notes/2caa4c53-cab8-40ca-8ad5-1a9e8556ec57",
    verified: false,
    note: "first 10 GiB/month free; long-term storage $0.01",
  },

  // --- The orchestrators Tally is compared with ----------------------------------------------
  workflowsInternalSteps: {
    usd: 0.01,
    unit: "1,000 internal steps",
    source: "https://cloud.google.com/workflows/pricing",
    verified: false,
    note: "the page's table was not in the text read here; calls to *.run.app and assignments are internal steps; 5,000 free/month",
  },
  stepFunctionsStandardTransitions: {
    usd: 0.025,
    unit: "1,000 state transitions",
    source:
      "https://aws.amazon.com/step-functions/pricing/ ; $25 per million as quoted by https://www.wring.co/blog/aws-step-functions-pricing-guide",
    verified: true,
    note: "retries are extra transitions; 4,000 free/month",
  },
  stepFunctionsExpressRequests: {
    usd: 1.0,
    unit: "million workflow requests",
    source: "https://www.wring.co/blog/aws-step-functions-pricing-guide (Express)",
    verified: true,
  },
  stepFunctionsExpressGbSecond: {
    usd: 0.00001667,
    unit: "GB-second (64 MB minimum, 100 ms rounding)",
    source: "https://www.wring.co/blog/aws-step-functions-pricing-guide (Express, first tier)",
    verified: true,
  },
  cloudTasksOperations: {
    usd: 0.4,
    unit: "million billable operations (API calls and push delivery attempts, 32 KB chunks)",
    source: "https://cloud.google.com/tasks/docs/pricing",
    verified: true,
    note: "first million per month free",
  },
} satisfies Record<string, ListPrice>;

export type PriceName = keyof typeof prices;
