// The CLI's reading of the coordinator's batch JSON (`GET /v1/batches/{id}`, DESIGN.md §3): the
// fields it shows and decides exit codes by. Times arrive as epoch ms or ISO strings; both are read.
import type { FinalSummary, StateCounts } from "./progressBar";

export interface BatchView {
  batchId: string;
  pipeline: string;
  status: string;
  outcome: string | null;
  total: number | null;
  counts: StateCounts;
  failedByKind: Record<string, number>;
  failureThreshold: number | null;
  dependsOn: string[];
  generation: number | null;
  reason: string | null;
  createdAt: number | null;
  startedAt: number | null;
  finishedAt: number | null;
  exportInfo: Record<string, unknown> | null;
}

export const finalStatuses = ["succeeded", "partial", "failed", "cancelled"];
export const isFinal = (v: BatchView) => finalStatuses.includes(v.status);

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (v && typeof v === "object" && !Array.isArray(v) ? (v as Json) : {});
const num = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);
const str = (v: unknown): string | null => (typeof v === "string" ? v : null);

function time(v: unknown): number | null {
  if (typeof v === "number" && Number.isFinite(v)) return v;
  if (typeof v === "string") {
    const t = Date.parse(v);
    return Number.isNaN(t) ? null : t;
  }
  return null;
}

export function toBatchView(body: unknown): BatchView {
  // Accept `{batch: {...}}` as well as the batch object itself.
  const outer = obj(body);
  const b = outer.batch && typeof outer.batch === "object" ? obj(outer.batch) : outer;
  const summary = obj(b.summary);
  const rawCounts = obj(b.counts ?? summary.counts);
  const counts: StateCounts = {
    succeeded: num(rawCounts.succeeded) ?? 0,
    failed: num(rawCounts.failed) ?? 0,
    running: num(rawCounts.running) ?? 0,
    pending: num(rawCounts.pending) ?? 0,
  };
  const failedByKind: Record<string, number> = {};
  for (const [k, n] of Object.entries(obj(b.failedByKind ?? summary.failedByKind)))
    if (typeof n === "number") failedByKind[k] = n;
  const exportInfo = b.export ?? b.exportInfo ?? null;
  return {
    batchId: str(b.id) ?? str(b.batchId) ?? "?",
    pipeline: str(b.pipeline) ?? "?",
    status: str(b.status) ?? "unknown",
    outcome: str(b.outcome) ?? str(summary.outcome),
    total: num(b.total),
    counts,
    failedByKind,
    failureThreshold: num(b.failureThreshold),
    dependsOn: Array.isArray(b.dependsOn)
      ? b.dependsOn.filter((d): d is string => typeof d === "string")
      : [],
    generation: num(b.generation),
    reason: str(b.reason),
    createdAt: time(b.createdAt),
    startedAt: time(b.startedAt),
    finishedAt: time(b.finishedAt),
    exportInfo: exportInfo && typeof exportInfo === "object" ? (exportInfo as Json) : null,
  };
}

/** 0 succeeded (or not final yet), 2 partial, 3 failed or cancelled. */
export function exitCodeFor(v: BatchView): number {
  switch (v.status) {
    case "partial":
      return 2;
    case "failed":
    case "cancelled":
      return 3;
    default:
      return 0;
  }
}

export function finalSummaryOf(v: BatchView): FinalSummary {
  const { succeeded, failed, running, pending } = v.counts;
  return {
    batchId: v.batchId,
    status: v.status,
    total: v.total ?? succeeded + failed + running + pending,
    succeeded,
    failed,
    failedByKind: v.failedByKind,
    durationMs: v.finishedAt !== null && v.createdAt !== null ? v.finishedAt - v.createdAt : null,
  };
}

/** A few lines for `tally status`. */
export function renderStatus(v: BatchView): string {
  const { succeeded, failed, running, pending } = v.counts;
  const total = v.total ?? succeeded + failed + running + pending;
  const lines = [
    `batch ${v.batchId}`,
    `  pipeline   ${v.pipeline}`,
    `  status     ${v.status}${v.outcome && v.outcome !== v.status ? ` (outcome ${v.outcome})` : ""}`,
    `  items      ${total}${v.total === null ? " so far" : ""}: succeeded ${succeeded}, failed ${failed}, running ${running}, pending ${pending}`,
  ];
  const kinds = Object.entries(v.failedByKind).filter(([, n]) => n > 0);
  if (kinds.length > 0) lines.push(`  failures   ${kinds.map(([k, n]) => `${k} ${n}`).join(", ")}`);
  if (v.failureThreshold !== null) lines.push(`  threshold  ${v.failureThreshold}`);
  if (v.dependsOn.length > 0) lines.push(`  dependsOn  ${v.dependsOn.join(", ")}`);
  if (v.generation !== null && v.generation > 1) lines.push(`  generation ${v.generation}`);
  if (v.reason) lines.push(`  reason     ${v.reason}`);
  const fmt = (t: number | null) => (t === null ? "–" : new Date(t).toISOString());
  lines.push(`  created    ${fmt(v.createdAt)}`);
  if (v.startedAt !== null) lines.push(`  started    ${fmt(v.startedAt)}`);
  if (v.finishedAt !== null) lines.push(`  finished   ${fmt(v.finishedAt)}`);
  if (v.exportInfo) lines.push(`  export     ${JSON.stringify(v.exportInfo)}`);
  return lines.join("\n");
}
