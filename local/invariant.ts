// The ledger invariant (DESIGN.md §8), checked from the outside: through the coordinator's API
// (GET /v1/batches/{id}, paging GET /v1/batches/{id}/items) and the DuckDB results file. Used by
// `npm run demo`, the local-stack tests and the chaos suite. A violation names the rule, the items
// involved and what was expected versus found.
import { DuckDBResultSink } from "../functions/adapters/duckdbResultSink";
import { decideOutcome } from "../functions/core/outcome";

export interface InvariantInput {
  coordinatorUrl: string;
  batchId: string;
  /** The DuckDB results file (the stack's `results:` path). */
  resultsPath: string;
  /** The item ids the client submitted; when given, each must be listed exactly once. */
  submittedItemIds?: string[];
  /** Items per page when listing (default 1000). */
  pageSize?: number;
}

export interface Violation {
  rule:
    | "batch_not_final"
    | "item_missing"
    | "item_unexpected"
    | "item_duplicated"
    | "item_not_terminal"
    | "counts_mismatch"
    | "failed_without_reason"
    | "sink_row_missing"
    | "sink_row_unexpected"
    | "sink_row_duplicated"
    | "sink_result_mismatch"
    | "outcome_mismatch"
    | "sink_count_mismatch";
  message: string;
  /** Up to 10 examples: item ids, or `itemId: expected … found …`. */
  examples?: string[];
  /** How many items the rule failed for in all. */
  count?: number;
}

export interface ItemSnapshot {
  itemId: string;
  status: string;
  attempt: number | null;
  error: { kind?: string; message?: string } | null;
  result: unknown;
  generation: number | null;
  /** Who holds the lease (`host/pid` of a worker process), while one does. */
  leaseOwner: string | null;
  /** When the lease lapses (RFC 3339), while one is held. */
  leaseUntil: string | null;
}

export interface InvariantReport {
  ok: boolean;
  batchId: string;
  status: string;
  total: number | null;
  failureThreshold: number | null;
  /** Counts as the API's batch resource reports them. */
  apiCounts: { pending: number; running: number; succeeded: number; failed: number };
  /** Counts from the listed items. */
  listedCounts: Record<string, number>;
  failedByKind: Record<string, number>;
  sinkRows: number;
  violations: Violation[];
  durationMs: number | null;
}

export class InvariantViolationError extends Error {
  constructor(readonly report: InvariantReport) {
    super(formatInvariantReport(report));
    this.name = "InvariantViolationError";
  }
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (v && typeof v === "object" && !Array.isArray(v) ? (v as Json) : {});
const num = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);
const finalStatuses = ["succeeded", "partial", "failed", "cancelled"];

async function getJson(url: string): Promise<Json> {
  const res = await fetch(url, {
    headers: { accept: "application/json" },
    signal: AbortSignal.timeout(60_000),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`GET ${url} answered ${res.status}: ${text.slice(0, 500)}`);
  return obj(JSON.parse(text));
}

/** Reads the batch resource (the coordinator may wrap it as `{batch: …}`). */
export async function fetchBatch(coordinatorUrl: string, batchId: string): Promise<Json> {
  const body = await getJson(`${coordinatorUrl}/v1/batches/${encodeURIComponent(batchId)}`);
  return body.batch && typeof body.batch === "object" ? obj(body.batch) : body;
}

/** Pages through every item of a batch, results included. */
export async function fetchAllItems(
  coordinatorUrl: string,
  batchId: string,
  pageSize = 1000,
): Promise<ItemSnapshot[]> {
  const items: ItemSnapshot[] = [];
  let pageToken: string | undefined;
  for (let page = 0; ; page++) {
    const q = new URLSearchParams({ limit: String(pageSize), include: "result" });
    if (pageToken) q.set("pageToken", pageToken);
    const body = await getJson(`${coordinatorUrl}/v1/batches/${encodeURIComponent(batchId)}/items?${q}`);
    const list = Array.isArray(body.items) ? body.items : [];
    for (const raw of list) items.push(toItemSnapshot(obj(raw)));
    pageToken = typeof body.nextPageToken === "string" && body.nextPageToken ? body.nextPageToken : undefined;
    if (!pageToken) break;
    if (page > 100_000) throw new Error(`listing the items of ${batchId} did not end after ${page} pages`);
  }
  return items;
}

function toItemSnapshot(i: Json): ItemSnapshot {
  const error = i.error && typeof i.error === "object" ? (i.error as ItemSnapshot["error"]) : null;
  return {
    itemId: String(i.itemId ?? i.id ?? ""),
    status: String(i.status ?? ""),
    attempt: num(i.attempt),
    error,
    result: i.result,
    generation: num(i.generation),
    leaseOwner: typeof obj(i.lease).owner === "string" ? String(obj(i.lease).owner) : null,
    leaseUntil: typeof obj(i.lease).until === "string" ? String(obj(i.lease).until) : null,
  };
}

/** Checks the invariant for a finalized batch; never throws for a violation (see `assertLedgerInvariant`). */
export async function checkLedgerInvariant(input: InvariantInput): Promise<InvariantReport> {
  const violations: Violation[] = [];
  const add = (rule: Violation["rule"], message: string, examples?: string[], count?: number) =>
    violations.push({
      rule,
      message,
      ...(examples && { examples: examples.slice(0, 10) }),
      ...(count !== undefined && { count }),
    });

  const batch = await fetchBatch(input.coordinatorUrl, input.batchId);
  const items = await fetchAllItems(input.coordinatorUrl, input.batchId, input.pageSize);
  const sink = new DuckDBResultSink(input.resultsPath);
  const rows = await sink.readRows(input.batchId);

  const status = String(batch.status ?? "");
  const summary = obj(batch.summary);
  const rawCounts = obj(batch.counts ?? summary.counts);
  const apiCounts = {
    pending: num(rawCounts.pending) ?? 0,
    running: num(rawCounts.running) ?? 0,
    succeeded: num(rawCounts.succeeded) ?? 0,
    failed: num(rawCounts.failed) ?? 0,
  };
  const total = num(batch.total) ?? num(rawCounts.total);
  const failureThreshold = num(batch.failureThreshold);
  const failedByKind: Record<string, number> = {};
  for (const [k, n] of Object.entries(obj(batch.failedByKind ?? summary.failedByKind)))
    if (typeof n === "number") failedByKind[k] = n;

  if (!finalStatuses.includes(status))
    add(
      "batch_not_final",
      `batch ${input.batchId} is "${status}", expected one of ${finalStatuses.join(", ")}`,
    );

  // Every submitted item is listed exactly once.
  const byId = new Map<string, ItemSnapshot>();
  const duplicated: string[] = [];
  for (const item of items) {
    if (byId.has(item.itemId)) duplicated.push(item.itemId);
    else byId.set(item.itemId, item);
  }
  if (duplicated.length > 0)
    add(
      "item_duplicated",
      `${duplicated.length} item(s) are listed more than once`,
      duplicated,
      duplicated.length,
    );
  if (input.submittedItemIds) {
    const submitted = new Set(input.submittedItemIds);
    const missing = input.submittedItemIds.filter((id) => !byId.has(id));
    const unexpected = [...byId.keys()].filter((id) => !submitted.has(id));
    if (missing.length > 0)
      add(
        "item_missing",
        `${missing.length} submitted item(s) are not in the ledger`,
        missing,
        missing.length,
      );
    if (unexpected.length > 0)
      add(
        "item_unexpected",
        `${unexpected.length} listed item(s) were never submitted`,
        unexpected,
        unexpected.length,
      );
  }

  // Exactly one terminal state each; failures carry a reason.
  const listedCounts: Record<string, number> = {};
  const notTerminal: string[] = [];
  const noReason: string[] = [];
  for (const item of byId.values()) {
    listedCounts[item.status] = (listedCounts[item.status] ?? 0) + 1;
    if (item.status !== "succeeded" && item.status !== "failed")
      notTerminal.push(`${item.itemId}: ${item.status}`);
    if (item.status === "failed" && !(item.error?.kind && item.error.message))
      noReason.push(`${item.itemId}: error ${JSON.stringify(item.error)}`);
  }
  if (notTerminal.length > 0)
    add(
      "item_not_terminal",
      `${notTerminal.length} item(s) are not succeeded or failed (nothing may be pending or running after finalization)`,
      notTerminal,
      notTerminal.length,
    );
  if (noReason.length > 0)
    add(
      "failed_without_reason",
      `${noReason.length} failed item(s) have no error kind and message`,
      noReason,
      noReason.length,
    );

  const listedSucceeded = listedCounts.succeeded ?? 0;
  const listedFailed = listedCounts.failed ?? 0;
  const countProblems: string[] = [];
  if (total === null) countProblems.push("the batch reports no total");
  else {
    if (apiCounts.succeeded + apiCounts.failed !== total)
      countProblems.push(
        `API counts: succeeded ${apiCounts.succeeded} + failed ${apiCounts.failed} = ${apiCounts.succeeded + apiCounts.failed}, expected total ${total}`,
      );
    if (byId.size !== total)
      countProblems.push(`listed ${byId.size} distinct item(s), expected total ${total}`);
  }
  if (input.submittedItemIds && total !== null && total !== input.submittedItemIds.length)
    countProblems.push(`total is ${total}, but ${input.submittedItemIds.length} item(s) were submitted`);
  if (apiCounts.pending + apiCounts.running > 0)
    countProblems.push(`API counts still show pending ${apiCounts.pending}, running ${apiCounts.running}`);
  if (apiCounts.succeeded !== listedSucceeded || apiCounts.failed !== listedFailed)
    countProblems.push(
      `API counts (succeeded ${apiCounts.succeeded}, failed ${apiCounts.failed}) differ from the listed items (succeeded ${listedSucceeded}, failed ${listedFailed})`,
    );
  const kindTotal = Object.values(failedByKind).reduce((a, b) => a + b, 0);
  if (Object.keys(failedByKind).length > 0 && kindTotal !== apiCounts.failed)
    countProblems.push(`failedByKind adds up to ${kindTotal}, expected failed ${apiCounts.failed}`);
  if (countProblems.length > 0) add("counts_mismatch", countProblems.join("; "));

  // Each succeeded item has exactly one row, holding the item's result; no other rows.
  const rowsById = new Map<string, unknown[]>();
  for (const r of rows) rowsById.set(r.itemId, [...(rowsById.get(r.itemId) ?? []), r.result]);
  const missingRows: string[] = [];
  const mismatched: string[] = [];
  for (const item of byId.values()) {
    if (item.status !== "succeeded") continue;
    const found = rowsById.get(item.itemId);
    if (!found) missingRows.push(item.itemId);
    else if (canonical(found[0]) !== canonical(item.result))
      mismatched.push(`${item.itemId}: ledger ${canonical(item.result)} vs sink ${canonical(found[0])}`);
  }
  const unexpectedRows = [...rowsById.keys()].filter((id) => byId.get(id)?.status !== "succeeded");
  const duplicatedRows = [...rowsById.entries()]
    .filter(([, r]) => r.length > 1)
    .map(([id, r]) => `${id}: ${r.length} rows`);
  if (missingRows.length > 0)
    add(
      "sink_row_missing",
      `${missingRows.length} succeeded item(s) have no row in the sink`,
      missingRows,
      missingRows.length,
    );
  if (unexpectedRows.length > 0)
    add(
      "sink_row_unexpected",
      `${unexpectedRows.length} sink row(s) belong to no succeeded item`,
      unexpectedRows.map((id) => `${id}: item ${byId.get(id)?.status ?? "not listed"}`),
      unexpectedRows.length,
    );
  if (duplicatedRows.length > 0)
    add(
      "sink_row_duplicated",
      `${duplicatedRows.length} item(s) have more than one sink row`,
      duplicatedRows,
      duplicatedRows.length,
    );
  if (mismatched.length > 0)
    add(
      "sink_result_mismatch",
      `${mismatched.length} sink row(s) differ from the item's result`,
      mismatched,
      mismatched.length,
    );
  if (rows.length !== apiCounts.succeeded)
    add(
      "sink_count_mismatch",
      `the sink has ${rows.length} row(s) for the batch, the API counts ${apiCounts.succeeded} succeeded`,
    );
  // The summary counts the rows of the latest generation's export; after an operator retry the
  // rows of earlier generations stay in the sink beside them.
  const exportedRows = num(summary.exportedRows) ?? num(obj(batch.export).rows);
  const generation = num(batch.generation);
  const generationRows =
    generation === null ? rows.length : rows.filter((r) => r.generation === generation).length;
  if (exportedRows !== null && exportedRows !== generationRows)
    add(
      "sink_count_mismatch",
      `the batch summary says ${exportedRows} row(s) were exported, the sink has ${generationRows}${generation === null ? "" : ` of generation ${generation}`}`,
    );

  // The outcome follows the threshold rule (a cancelled batch ends `cancelled` whatever its counts).
  if (status !== "cancelled" && finalStatuses.includes(status) && total !== null) {
    if (failureThreshold === null) add("outcome_mismatch", "the batch reports no failureThreshold");
    else {
      const expected = decideOutcome({ total, failed: apiCounts.failed }, failureThreshold);
      if (status !== expected)
        add(
          "outcome_mismatch",
          `status is "${status}", but failed ${apiCounts.failed} of ${total} (${((apiCounts.failed / Math.max(1, total)) * 100).toFixed(2)}%) with failureThreshold ${failureThreshold} means "${expected}"`,
        );
    }
  }

  return {
    ok: violations.length === 0,
    batchId: input.batchId,
    status,
    total,
    failureThreshold,
    apiCounts,
    listedCounts,
    failedByKind,
    sinkRows: rows.length,
    violations,
    durationMs: num(summary.durationMs),
  };
}

/** Checks the invariant and throws InvariantViolationError (with the full report) when it does not hold. */
export async function assertLedgerInvariant(input: InvariantInput): Promise<InvariantReport> {
  const report = await checkLedgerInvariant(input);
  if (!report.ok) throw new InvariantViolationError(report);
  return report;
}

export function formatInvariantReport(r: InvariantReport): string {
  if (r.ok)
    return `ledger invariant holds for batch ${r.batchId}: ${r.status}, total ${r.total}, succeeded ${r.apiCounts.succeeded}, failed ${r.apiCounts.failed}, ${r.sinkRows} sink rows`;
  const lines = [`ledger invariant VIOLATED for batch ${r.batchId} (${r.violations.length} rule(s)):`];
  for (const v of r.violations) {
    lines.push(`  - ${v.rule}: ${v.message}`);
    for (const e of v.examples ?? []) lines.push(`      ${e}`);
    if (v.count !== undefined && v.examples && v.count > v.examples.length)
      lines.push(`      … and ${v.count - v.examples.length} more`);
  }
  return lines.join("\n");
}

/**
 * Before finalization (DESIGN.md §8): no item is lost — each submitted item is listed exactly once,
 * pending, running or terminal. Returns the problems (empty when none).
 */
export async function checkNoItemLost(
  coordinatorUrl: string,
  batchId: string,
  submittedItemIds: string[],
): Promise<string[]> {
  const items = await fetchAllItems(coordinatorUrl, batchId);
  const seen = new Map<string, number>();
  for (const i of items) seen.set(i.itemId, (seen.get(i.itemId) ?? 0) + 1);
  const problems: string[] = [];
  for (const id of submittedItemIds) {
    const n = seen.get(id) ?? 0;
    if (n !== 1) problems.push(`${id}: listed ${n} times`);
  }
  for (const i of items)
    if (!["pending", "running", "succeeded", "failed"].includes(i.status))
      problems.push(`${i.itemId}: state "${i.status}"`);
  return problems;
}

/** JSON with sorted keys, so equal results compare equal whatever their key order. */
function canonical(v: unknown): string {
  return JSON.stringify(v === undefined ? null : v, (_k, val) =>
    val && typeof val === "object" && !Array.isArray(val)
      ? Object.fromEntries(Object.entries(val as Json).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : val,
  );
}
