// Cost per million items, from the counted operations (opsPerItem.ts), the CPU the handlers used in
// this run (coordinator and workers, read from /proc), and the list prices in prices.ts; beside the
// orchestration fee of Cloud Workflows, AWS Step Functions and Cloud Tasks for a fan-out of the
// same size. The pipeline's own compute is the same whichever orchestrator calls it and is left
// out of every column; so is each orchestrator's invocation of the worker (one request per item
// everywhere), which is listed once as a shared line.
import type { OpCounts } from "./opsPerItem";
import { type ListPrice, prices, pricesReadOn } from "./prices";

export interface CostLine {
  what: string;
  quantity: number;
  unit: string;
  usd: number;
  assumption?: string;
}

export interface CostModel {
  items: number;
  pricesReadOn: string;
  tally: { lines: CostLine[]; totalUsd: number };
  /** Every orchestrator pays this too: one worker request per item. */
  shared: CostLine[];
  peers: { name: string; lines: CostLine[]; totalUsd: number }[];
  unverifiedPrices: string[];
}

/** Bytes of one doorbell as Pub/Sub bills it: attribute keys and values, 20 for the timestamp, the message id. */
export function doorbellBytes(batchIdLength = 36, itemIdLength = 13, messageIdLength = 16): number {
  const attrs = "batchId".length + batchIdLength + "itemId".length + itemIdLength + "generation".length + 1;
  return attrs + 20 + messageIdLength;
}

const TiB = 2 ** 40;
/** Pub/Sub bills at least 1,000 bytes per publish, push or pull request (prices.pubsubThroughput's source). */
const pubsubMinimumBytesPerRequest = 1000;

export function buildCostModel(opts: {
  items: number;
  perItem: OpCounts;
  perBatch: OpCounts;
  perChunk: OpCounts;
  chunkItems: number;
  /** CPU seconds the worker processes used per item in the end-to-end run (null: not measured). */
  workerCpuSecondsPerItem: number | null;
  /** CPU seconds the coordinator used per item in the submission run (null: not measured). */
  coordinatorCpuSecondsPerItem: number | null;
  /** Memory per instance assumed for the GiB-second line. */
  instanceGiB?: number;
}): CostModel {
  const n = opts.items;
  const chunks = Math.ceil(n / opts.chunkItems);
  const gib = opts.instanceGiB ?? 0.5;
  const total = (k: keyof OpCounts) => opts.perItem[k] * n + opts.perChunk[k] * chunks + opts.perBatch[k];
  // count() bills one read per 1,000 index entries matched (at least one): every aggregation of a
  // batch is charged as if it matched the whole batch — an upper bound.
  const aggregationReads = total("aggregations") * Math.max(1, Math.ceil(n / 1000));
  const reads = total("reads") + aggregationReads;
  const writes = total("writes");
  // Every item document and the batch document are deleted by the TTL policy after retention.
  const deletes = n + 1;
  const publishRequests = Math.ceil(total("published") / opts.chunkItems);
  const publishBytes = Math.max(
    publishRequests * pubsubMinimumBytesPerRequest,
    total("published") * doorbellBytes(),
  );
  const deliveryBytes = total("deliveries") * Math.max(pubsubMinimumBytesPerRequest, doorbellBytes());
  const lines: CostLine[] = [
    {
      what: "Firestore document reads (count() aggregations included)",
      quantity: reads,
      unit: "reads",
      usd: (reads / 100_000) * prices.firestoreReads.usd,
    },
    {
      what: "Firestore document writes",
      quantity: writes,
      unit: "writes",
      usd: (writes / 100_000) * prices.firestoreWrites.usd,
    },
    {
      what: "Firestore TTL deletes (items + batch)",
      quantity: deletes,
      unit: "deletes",
      usd: (deletes / 100_000) * prices.firestoreDeletes.usd,
    },
    {
      what: "Pub/Sub publish throughput (doorbells, 500 per request)",
      quantity: publishBytes,
      unit: "bytes",
      usd: (publishBytes / TiB) * prices.pubsubThroughput.usd,
    },
    {
      what: "Pub/Sub push delivery throughput (1,000-byte minimum per push)",
      quantity: deliveryBytes,
      unit: "bytes",
      usd: (deliveryBytes / TiB) * prices.pubsubThroughput.usd,
    },
    {
      what: "Result export (BigQuery load jobs)",
      quantity: total("sinkOperations"),
      unit: "load jobs",
      usd: total("sinkOperations") * prices.bigqueryLoadJobs.usd,
    },
  ];
  const cpuLine = (what: string, cpuPerItem: number | null, assumption: string): CostLine[] =>
    cpuPerItem === null
      ? []
      : [
          {
            what,
            quantity: cpuPerItem * n,
            unit: "vCPU-s",
            usd: cpuPerItem * n * (prices.cloudRunVcpuSecond.usd + gib * prices.cloudRunGibSecond.usd),
            assumption,
          },
        ];
  lines.push(
    ...cpuLine(
      "Coordinator CPU (+ memory at the same seconds)",
      opts.coordinatorCpuSecondsPerItem,
      `CPU seconds measured in this run; billed as vCPU-s plus ${gib} GiB-s per vCPU-s (instances busy while billed)`,
    ),
    ...cpuLine(
      "Worker CPU for Tally's per-delivery work (no-op pipeline)",
      opts.workerCpuSecondsPerItem,
      `CPU seconds measured in this run with the no-op pipeline, so they are Tally's own overhead (decode, lease, complete, check, logs); billed as vCPU-s plus ${gib} GiB-s per vCPU-s`,
    ),
  );
  const shared: CostLine[] = [
    {
      what: "Worker requests (one per item, whichever orchestrator calls the worker)",
      quantity: total("deliveries"),
      unit: "requests",
      usd: (total("deliveries") / 1e6) * prices.cloudRunRequests.usd,
    },
  ];
  const sum = (ls: CostLine[]) => ls.reduce((a, l) => a + l.usd, 0);
  const expressGbS = 0.0625 * 0.1; // 64 MB minimum × 100 ms minimum per execution
  const peers = [
    {
      name: "Cloud Workflows (parallel for over the items, each iteration calls the worker)",
      lines: [
        {
          what: "internal steps",
          quantity: 2 * n,
          unit: "steps",
          usd: ((2 * n) / 1000) * prices.workflowsInternalSteps.usd,
          assumption:
            "2 steps per item: the call to the worker and the assignment of its result (a lower bound)",
        },
      ],
    },
    {
      name: "AWS Step Functions Standard (Map over the items, one Task each)",
      lines: [
        {
          what: "state transitions",
          quantity: n,
          unit: "transitions",
          usd: (n / 1000) * prices.stepFunctionsStandardTransitions.usd,
          assumption: "1 transition per item (the Task state alone; a lower bound)",
        },
      ],
    },
    {
      name: "AWS Step Functions Express (one child execution per item)",
      lines: [
        {
          what: "requests",
          quantity: n,
          unit: "executions",
          usd: (n / 1e6) * prices.stepFunctionsExpressRequests.usd,
        },
        {
          what: "duration",
          quantity: n * expressGbS,
          unit: "GB-s",
          usd: n * expressGbS * prices.stepFunctionsExpressGbSecond.usd,
          assumption: "the billing minimum per execution: 64 MB for 100 ms",
        },
      ],
    },
    {
      name: "Cloud Tasks (one task per item, pushed to the worker)",
      lines: [
        {
          what: "billable operations",
          quantity: 2 * n,
          unit: "operations",
          usd: ((2 * n) / 1e6) * prices.cloudTasksOperations.usd,
          assumption: "CreateTask + one push delivery attempt per item, no retries; free tier ignored",
        },
      ],
    },
  ].map((p) => ({ ...p, totalUsd: sum(p.lines) }));
  return {
    items: n,
    pricesReadOn,
    tally: { lines, totalUsd: sum(lines) },
    shared,
    peers,
    unverifiedPrices: (Object.entries(prices) as [string, ListPrice][])
      .filter(([, p]) => !p.verified)
      .map(([name, p]) => `${name}: $${p.usd} per ${p.unit} (${p.note ?? p.source})`),
  };
}
