// The ledger invariant (DESIGN.md §8), checked from the outside: through the coordinator's API
// (GET /v1/batches/{id}, paging GET /v1/batches/{id}/items) and the DuckDB results file. Used by
// `npm run demo`, the local-stack tests and the chaos suite. A violation names the rule, the items
// involved and what was expected versus found.
//
// The checker is independent of the code it checks: it imports nothing from functions/core (the
// outcome is computed here from the threshold rule as DESIGN.md §2.3 states it), and a field it
// needs that the API does not report is a violation (`field_missing`), never a reason to skip a
// rule. Reading (`checkLedgerInvariant`) is separate from judging (`evaluateLedgerInvariant`, a
// pure function), so each rule can be shown to fire on its own (test/local/invariant.test.ts).
import { DuckDBResultSink } from "../functions/adapters/duckdbResultSink";

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
    | "field_missing"
    | "batch_not_final"
    | "item_missing"
    | "item_unexpected"
    | "item_duplicated"
    | "item_not_terminal"
    | "counts_mismatch"
    | "failed_without_reason"
    | "failed_by_kind_mismatch"
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
  /** failedByKind as the batch's summary reports it. */
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

/** The rows the invariant compares: what the sink holds for the batch. */
export type SinkRow = { itemId: string; generation: number; result: unknown };

export interface InvariantEvidence {
  batchId: string;
  /** The batch resource as the API answers it. */
  batch: Record<string, unknown>;
  /** Every item as listed by the API, results included (a duplicate listing stays duplicated). */
  items: ItemSnapshot[];
  /** The sink's rows of the batch. */
  rows: SinkRow[];
  /** The item ids the client submitted; when given, each must be listed exactly once. */
  submittedItemIds?: string[];
}

/**
 * The threshold rule (DESIGN.md §2.3), written out here rather than imported from the code under
 * test: `succeeded` when nothing failed; `partial` when some failed and the failed fraction is at
 * or below the failure threshold; `failed` above it.
 */
export function expectedOutcome(total: number, failed: number, failureThreshold: number) {
  if (failed === 0) return "succeeded";
  return failed / total <= failureThreshold ? "partial" : "failed";
}

/** Reads the batch, its items and its sink rows, and checks the invariant for a finalized batch; never throws for a violation (see `assertLedgerInvariant`). */
export async function checkLedgerInvariant(input: InvariantInput): Promise<InvariantReport> {
  const batch = await fetchBatch(input.coordinatorUrl, input.batchId);
  const items = await fetchAllItems(input.coordinatorUrl, input.batchId, input.pageSize);
  const rows = await new DuckDBResultSink(input.resultsPath).readRows(input.batchId);
  return evaluateLedgerInvariant({
    batchId: input.batchId,
    batch,
    items,
    rows,
    submittedItemIds: input.submittedItemIds,
  });
}

/**
 * Judges the evidence against the invariant of a finalized batch (DESIGN.md §8). Each rule judges
 * one thing, so a defect is named by the rule it breaks (test/local/invariant.test.ts makes each
 * fire alone); together they are the invariant:
 *   field_missing            a field the rules need is not reported (the rules that need it are not judged)
 *   batch_not_final          the batch is not succeeded, partial, failed or cancelled
 *   item_missing / item_unexpected / item_duplicated
 *                            the listing holds each submitted item exactly once, nothing else
 *   item_not_terminal        every listed item is succeeded or failed (nothing pending or running)
 *   failed_without_reason    every failed item has an error kind and message
 *   counts_mismatch          the API's counts (live and summary) equal the listed items' counts,
 *                            and the total equals the number of listed items; with the item rules
 *                            this makes succeeded + failed = total
 *   failed_by_kind_mismatch  the summary's failures by kind equal the listed failed items by kind
 *   sink_row_missing / sink_row_duplicated / sink_row_unexpected / sink_result_mismatch
 *                            every succeeded item has exactly one row, of the item's generation,
 *                            holding the item's result; no row belongs to anything else
 *   sink_count_mismatch      the rows the batch says it exported equal its succeeded items of
 *                            the final generation (with the row rules: the sink's rows of that
 *                            generation are exactly those items)
 *   outcome_mismatch         status = terminateAs when the batch was terminated (cancelled or
 *                            failed early), else the threshold rule over the listed items; the
 *                            summary's outcome follows the threshold rule either way
 */
export function evaluateLedgerInvariant(e: InvariantEvidence): InvariantReport {
  const violations: Violation[] = [];
  const add = (rule: Violation["rule"], message: string, examples?: string[], count?: number) =>
    violations.push({
      rule,
      message,
      ...(examples && { examples: examples.slice(0, 10) }),
      ...(count !== undefined && { count }),
    });
  const addList = (rule: Violation["rule"], message: string, list: string[]) => {
    if (list.length > 0) add(rule, `${list.length} ${message}`, list, list.length);
  };

  // --- the fields the rules need ------------------------------------------------------------------
  const missing: string[] = [];
  const need = <T>(value: T | null, field: string): T | null => {
    if (value === null) missing.push(field);
    return value;
  };
  const { batch } = e;
  const status = String(batch.status ?? "");
  const rawCounts = batch.counts && typeof batch.counts === "object" ? obj(batch.counts) : null;
  const countFields = ["total", "pending", "running", "succeeded", "failed"] as const;
  const readCounts = (raw: Json | null, field: string) => {
    if (!need(raw, field)) return null;
    const out = Object.fromEntries(countFields.map((k) => [k, need(num(raw![k]), `${field}.${k}`)]));
    return Object.values(out).every((v) => v !== null)
      ? (out as Record<(typeof countFields)[number], number>)
      : null;
  };
  const counts = readCounts(rawCounts, "counts");
  const total = need(num(batch.total), "total");
  const failureThreshold = need(num(batch.failureThreshold), "failureThreshold");
  const generation = need(num(batch.generation), "generation");
  const terminateAs =
    batch.terminateAs === null || batch.terminateAs === "cancelled" || batch.terminateAs === "failed"
      ? (batch.terminateAs as "cancelled" | "failed" | null)
      : undefined;
  if (terminateAs === undefined) missing.push("terminateAs");
  const rawSummary = batch.summary && typeof batch.summary === "object" ? obj(batch.summary) : null;
  need(rawSummary, "summary");
  const summary = rawSummary ?? {};
  const summaryCounts = rawSummary
    ? readCounts(
        summary.counts && typeof summary.counts === "object" ? obj(summary.counts) : null,
        "summary.counts",
      )
    : null;
  const summaryOutcome = rawSummary
    ? need(typeof summary.outcome === "string" ? summary.outcome : null, "summary.outcome")
    : null;
  let failedByKind: Record<string, number> | null = null;
  if (rawSummary) {
    const raw = summary.failedByKind;
    if (raw && typeof raw === "object" && !Array.isArray(raw)) {
      failedByKind = {};
      for (const [k, n] of Object.entries(raw as Json)) {
        if (typeof n === "number" && Number.isInteger(n)) failedByKind[k] = n;
        else missing.push(`summary.failedByKind.${k}`);
      }
    } else missing.push("summary.failedByKind");
  }
  const exportedRows = need(num(obj(batch.export).rows), "export.rows");
  const noGeneration = e.items.filter((i) => i.generation === null).map((i) => i.itemId);
  if (noGeneration.length > 0)
    missing.push(`generation of ${noGeneration.length} item(s) (${noGeneration.slice(0, 5).join(", ")})`);
  if (missing.length > 0)
    add(
      "field_missing",
      `the API does not report ${missing.join(", ")}: the rules that need them were not judged`,
      missing,
      missing.length,
    );

  // --- the batch and its items --------------------------------------------------------------------
  if (!finalStatuses.includes(status))
    add("batch_not_final", `batch ${e.batchId} is "${status}", expected one of ${finalStatuses.join(", ")}`);

  const byId = new Map<string, ItemSnapshot>();
  const duplicated: string[] = [];
  for (const item of e.items) {
    if (byId.has(item.itemId)) duplicated.push(item.itemId);
    else byId.set(item.itemId, item);
  }
  addList("item_duplicated", "item(s) are listed more than once", duplicated);
  if (e.submittedItemIds) {
    const submitted = new Set(e.submittedItemIds);
    addList(
      "item_missing",
      "submitted item(s) are not in the ledger",
      e.submittedItemIds.filter((id) => !byId.has(id)),
    );
    addList(
      "item_unexpected",
      "listed item(s) were never submitted",
      [...byId.keys()].filter((id) => !submitted.has(id)),
    );
  }

  const listed: Record<string, number> = {};
  const listedKinds: Record<string, number> = {};
  const notTerminal: string[] = [];
  const noReason: string[] = [];
  for (const item of byId.values()) {
    listed[item.status] = (listed[item.status] ?? 0) + 1;
    if (item.status !== "succeeded" && item.status !== "failed")
      notTerminal.push(`${item.itemId}: ${item.status || "no status"}`);
    if (item.status === "failed") {
      // A failure without a kind is failed_without_reason's to report, not a kind of its own.
      const kind = item.error?.kind;
      if (kind) listedKinds[kind] = (listedKinds[kind] ?? 0) + 1;
      if (!(item.error?.kind && item.error.message))
        noReason.push(`${item.itemId}: error ${JSON.stringify(item.error)}`);
    }
  }
  addList(
    "item_not_terminal",
    "item(s) are not succeeded or failed (nothing may be pending or running after finalization)",
    notTerminal,
  );
  addList("failed_without_reason", "failed item(s) have no error kind and message", noReason);

  // --- counts: the API's against the listed items -------------------------------------------------
  const listedCounts = {
    total: byId.size,
    pending: listed.pending ?? 0,
    running: listed.running ?? 0,
    succeeded: listed.succeeded ?? 0,
    failed: listed.failed ?? 0,
  };
  const countProblems: string[] = [];
  const compareCounts = (what: string, c: Record<string, number> | null) => {
    if (!c) return;
    const differ = countFields.filter((k) => c[k] !== listedCounts[k]);
    if (differ.length > 0)
      countProblems.push(
        `${what} ${differ.map((k) => `${k} ${c[k]}`).join(", ")}; the listed items: ${differ.map((k) => `${k} ${listedCounts[k]}`).join(", ")}`,
      );
  };
  if (total !== null && total !== byId.size)
    countProblems.push(`total is ${total}, but ${byId.size} distinct item(s) are listed`);
  compareCounts("the API's counts say", counts);
  compareCounts("the summary's counts say", summaryCounts);
  if (countProblems.length > 0) add("counts_mismatch", countProblems.join("; "));

  if (failedByKind) {
    const kinds = [...new Set([...Object.keys(failedByKind), ...Object.keys(listedKinds)])].sort();
    const differ = kinds
      .filter((k) => (failedByKind![k] ?? 0) !== (listedKinds[k] ?? 0))
      .map((k) => `${k}: summary ${failedByKind![k] ?? 0}, listed ${listedKinds[k] ?? 0}`);
    addList(
      "failed_by_kind_mismatch",
      "error kind(s) counted differently by the summary than by the listed failed items",
      differ,
    );
  }

  // --- the sink: exactly the succeeded items, once each, with their results -----------------------
  const rowsById = new Map<string, SinkRow[]>();
  for (const r of e.rows) rowsById.set(r.itemId, [...(rowsById.get(r.itemId) ?? []), r]);
  const missingRows: string[] = [];
  const duplicatedRows: string[] = [];
  const mismatched: string[] = [];
  for (const item of byId.values()) {
    if (item.status !== "succeeded") continue;
    const found = rowsById.get(item.itemId) ?? [];
    if (found.length === 0) missingRows.push(item.itemId);
    if (found.length > 1) duplicatedRows.push(`${item.itemId}: ${found.length} rows`);
    for (const row of found) {
      if (item.generation !== null && row.generation !== item.generation)
        mismatched.push(
          `${item.itemId}: item of generation ${item.generation}, sink row of generation ${row.generation}`,
        );
      else if (canonical(row.result) !== canonical(item.result))
        mismatched.push(`${item.itemId}: ledger ${canonical(item.result)} vs sink ${canonical(row.result)}`);
    }
  }
  const unexpectedRows = [...rowsById.entries()]
    .filter(([id]) => byId.get(id)?.status !== "succeeded")
    .map(([id, r]) => `${id}: ${r.length} row(s), item ${byId.get(id)?.status ?? "not listed"}`);
  addList("sink_row_missing", "succeeded item(s) have no row in the sink", missingRows);
  addList("sink_row_duplicated", "item(s) have more than one sink row", duplicatedRows);
  addList("sink_row_unexpected", "item(s) that did not succeed have sink rows", unexpectedRows);
  addList("sink_result_mismatch", "sink row(s) are not the result recorded on the item", mismatched);
  if (exportedRows !== null && generation !== null && noGeneration.length === 0) {
    // Rows of earlier generations (items that succeeded before an operator retry) stay in the sink
    // as exported then; the last export wrote the succeeded items of the final generation.
    const finalGeneration = [...byId.values()].filter(
      (i) => i.status === "succeeded" && i.generation === generation,
    ).length;
    if (exportedRows !== finalGeneration)
      add(
        "sink_count_mismatch",
        `the batch says its export wrote ${exportedRows} row(s); it has ${finalGeneration} succeeded item(s) of generation ${generation}`,
      );
  }

  // --- the outcome --------------------------------------------------------------------------------
  if (finalStatuses.includes(status) && failureThreshold !== null && terminateAs !== undefined) {
    const n = byId.size;
    const failed = listedCounts.failed;
    const byRule = expectedOutcome(n, failed, failureThreshold);
    const why = `failed ${failed} of ${n} (${((failed / Math.max(1, n)) * 100).toFixed(2)}%) with failureThreshold ${failureThreshold} means "${byRule}"`;
    const problems: string[] = [];
    if (terminateAs !== null && status !== terminateAs)
      problems.push(`status is "${status}", but the batch was terminated as "${terminateAs}"`);
    if (terminateAs === null && status !== byRule) problems.push(`status is "${status}", but ${why}`);
    if (summaryOutcome !== null && summaryOutcome !== byRule)
      problems.push(`the summary's outcome is "${summaryOutcome}", but ${why}`);
    if (problems.length > 0) add("outcome_mismatch", problems.join("; "));
  }

  return {
    ok: violations.length === 0,
    batchId: e.batchId,
    status,
    total,
    failureThreshold,
    apiCounts: {
      pending: counts?.pending ?? 0,
      running: counts?.running ?? 0,
      succeeded: counts?.succeeded ?? 0,
      failed: counts?.failed ?? 0,
    },
    listedCounts: listed,
    failedByKind: failedByKind ?? {},
    sinkRows: e.rows.length,
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
