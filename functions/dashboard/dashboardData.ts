// What the dashboard shows, read through the Ledger port only. Every read is bounded whatever the
// batch size: final batches use their recorded summary; live ones four count() aggregations; the
// completion chart one count() per time bucket; failure messages one page of failed items.
import type { Batch, BatchCounts, ErrorKind } from "../core/model";
import { isFinalBatchStatus } from "../core/model";
import type { Ledger } from "../core/ports";

export interface BatchRow {
  batch: Batch;
  counts: BatchCounts;
  /** The denominator of the bar: the known total, or what has been counted so far. */
  total: number;
  live: boolean;
  /** Finished items per second since the batch became active. */
  ratePerSecond: number | null;
  elapsedMs: number;
}

export interface CompletionSeries {
  start: number;
  end: number;
  /** Items finished in each bucket [start + i·width, start + (i+1)·width). */
  buckets: number[];
  bucketMs: number;
}

export interface FailureMessage {
  message: string;
  count: number;
  itemIds: string[];
}

export interface FailureGroup {
  kind: ErrorKind;
  /** All failed items of this kind (a count() aggregation). */
  count: number;
  /** Distinct messages among the sampled failed items, most frequent first. */
  messages: FailureMessage[];
}

export interface BatchDetail extends BatchRow {
  chart: CompletionSeries | null;
  failures: FailureGroup[];
  /** How many failed items the messages were read from (bounded). */
  sampledFailures: number;
}

export const chartBuckets = 40;
export const failureSampleSize = 200;
const maxItemIdsPerMessage = 5;

/** When the batch's clock starts: a batch waiting on dependencies starts when it is unblocked. */
function activeSince(b: Batch): number {
  // Otherwise from creation: a streamed batch's items finish while it is still being submitted.
  return b.dependsOn.length > 0 && b.startedAt !== null ? b.startedAt : b.createdAt;
}

export async function loadRow(ledger: Ledger, batch: Batch, now: number): Promise<BatchRow> {
  const live = !isFinalBatchStatus(batch.status);
  const counts = !live && batch.summary ? batch.summary.counts : await ledger.countItems(batch.batchId);
  const total = Math.max(batch.total ?? 0, counts.total);
  const end = batch.finishedAt ?? now;
  const elapsedMs = Math.max(0, end - activeSince(batch));
  const finished = counts.succeeded + counts.failed;
  const ratePerSecond = elapsedMs > 0 && finished > 0 ? finished / (elapsedMs / 1000) : null;
  return { batch, counts, total, live, ratePerSecond, elapsedMs };
}

export async function loadBatchList(
  ledger: Ledger,
  now: number,
  opts: { limit: number; pageToken?: string },
): Promise<{ rows: BatchRow[]; nextPageToken?: string }> {
  const page = await ledger.listBatches({ limit: opts.limit, pageToken: opts.pageToken });
  const rows = await Promise.all(page.entries.map((b) => loadRow(ledger, b, now)));
  return { rows, nextPageToken: page.nextPageToken };
}

async function loadChart(ledger: Ledger, batch: Batch, now: number): Promise<CompletionSeries | null> {
  const start = activeSince(batch);
  const end = Math.max(batch.finishedAt ?? now, start + 1);
  const bucketMs = Math.max(1, Math.ceil((end - start + 1) / chartBuckets));
  const edges = Array.from({ length: chartBuckets + 1 }, (_, i) => start + i * bucketMs);
  const buckets = await ledger.countFinishedBetween(batch.batchId, edges);
  return { start, end: edges[edges.length - 1]!, buckets, bucketMs };
}

async function loadFailures(
  ledger: Ledger,
  batchId: string,
  failed: number,
): Promise<{ groups: FailureGroup[]; sampled: number }> {
  if (failed === 0) return { groups: [], sampled: 0 };
  const [byKind, page] = await Promise.all([
    ledger.countFailedByKind(batchId),
    ledger.listItems(batchId, { status: "failed", limit: failureSampleSize }),
  ]);
  const messages = new Map<ErrorKind, Map<string, FailureMessage>>();
  for (const item of page.entries) {
    if (!item.error) continue;
    const perKind = messages.get(item.error.kind) ?? new Map<string, FailureMessage>();
    messages.set(item.error.kind, perKind);
    const m = perKind.get(item.error.message) ?? { message: item.error.message, count: 0, itemIds: [] };
    perKind.set(item.error.message, m);
    m.count++;
    if (m.itemIds.length < maxItemIdsPerMessage) m.itemIds.push(item.itemId);
  }
  const groups = (Object.entries(byKind) as [ErrorKind, number][])
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1])
    .map(([kind, count]) => ({
      kind,
      count,
      messages: [...(messages.get(kind)?.values() ?? [])].sort((a, b) => b.count - a.count),
    }));
  return { groups, sampled: page.entries.length };
}

export async function loadBatchDetail(
  ledger: Ledger,
  batchId: string,
  now: number,
): Promise<BatchDetail | null> {
  const batch = await ledger.getBatch(batchId);
  if (!batch) return null;
  const row = await loadRow(ledger, batch, now);
  const finished = row.counts.succeeded + row.counts.failed;
  const [chart, failures] = await Promise.all([
    finished > 0 ? loadChart(ledger, batch, now) : null,
    loadFailures(ledger, batchId, row.counts.failed),
  ]);
  return { ...row, chart, failures: failures.groups, sampledFailures: failures.sampled };
}
