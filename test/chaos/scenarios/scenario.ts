// What every chaos scenario shares: its shape (run once against a chaos stack, by the vitest suite
// and by the soak runner), the result row of the soak table, and the checks — each failure says what
// was violated: which items, which state, expected versus found.
import { queryResults } from "../../../functions/adapters/duckdbResultSink";
import { assertLedgerInvariant, type InvariantReport } from "../../../local/invariant";
import { waitFor } from "../../../local/waitFor";
import { type BatchJson, finalBatchStatuses, type ItemJson, type SubmitItem } from "../support/chaosApi";
import type { ChaosStack } from "../support/chaosStack";

/** Which stack a scenario needs: the shared one, or the one whose workers run with injected faults. */
export type StackKind = "shared" | "faults";

export interface ScenarioScale {
  /** The soak's `--items`; the test suite runs with 2,000. Each scenario derives its own sizes. */
  items: number;
}

export interface ScenarioResult {
  /** Items submitted in all of the scenario's batches. */
  items: number;
  /** Final status of each batch, e.g. "partial" or "succeeded ×50, failed ×6". */
  outcome: string;
  /** How long the system took to recover from the fault, as the scenario defines it (see `recovery`). */
  recoveryMs: number | null;
  /** What the recovery time measures. */
  recovery: string;
  /** Other figures worth printing (counts, latencies). */
  figures: Record<string, number | string>;
}

export interface Scenario {
  /** Short id, e.g. "F1-result-write-fails"; the soak's --only takes these. */
  id: string;
  title: string;
  stack: StackKind;
  run(env: ChaosStack, scale: ScenarioScale, say: (line: string) => void): Promise<ScenarioResult>;
}

/** A scenario's own assertion failed (the invariant checker throws InvariantViolationError). */
export class ScenarioAssertionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ScenarioAssertionError";
  }
}

export function check(condition: unknown, message: string | (() => string)): asserts condition {
  if (!condition) throw new ScenarioAssertionError(typeof message === "string" ? message : message());
}

/** Fails listing up to 10 offenders, e.g. `3 item(s) …: a (expected x, found y), …`. */
export function checkNone(offenders: string[], what: string): void {
  if (offenders.length === 0) return;
  const shown = offenders.slice(0, 10).join("\n    ");
  const more = offenders.length > 10 ? `\n    … and ${offenders.length - 10} more` : "";
  throw new ScenarioAssertionError(`${offenders.length} ${what}:\n    ${shown}${more}`);
}

/**
 * For checks on log events: a handler's log line travels through a pipe and may arrive a moment
 * after the API shows its effect. Re-checks until no problem is left or the deadline passes, then
 * fails listing what is still wrong.
 */
export async function eventuallyNone(
  problems: () => string[] | Promise<string[]>,
  what: string,
  timeoutMs = 15_000,
): Promise<void> {
  let last: string[] = [];
  await waitFor(
    what,
    async () => {
      last = await problems();
      return last.length === 0;
    },
    timeoutMs,
    100,
  ).catch(() => checkNone(last, what));
}

export const clamp = (v: number, min: number, max: number) => Math.max(min, Math.min(max, Math.round(v)));

export function itemIds(prefix: string, count: number): string[] {
  const width = String(count).length;
  return Array.from({ length: count }, (_, i) => `${prefix}${String(i + 1).padStart(width, "0")}`);
}

export function demoItems(
  prefix: string,
  count: number,
  payload: (n: number) => Record<string, unknown>,
): SubmitItem[] {
  return itemIds(prefix, count).map((id, i) => ({ id, payload: payload(i + 1) }));
}

/** Generous: the suite shares two cores with the emulators and every other test file. */
export function finalDeadlineMs(items: number, extraMs = 0): number {
  return 300_000 + items * 150 + extraMs;
}

/**
 * Waits for a batch to be final. On timeout the error says where it is stuck: its status and counts
 * and a sample of the items that are not terminal (state, attempt, lease, last error).
 */
export async function waitFinal(env: ChaosStack, batchId: string, timeoutMs: number): Promise<BatchJson> {
  try {
    return await waitFor(
      `batch ${batchId} to be final`,
      async () => {
        const b = await env.api.getBatch(batchId);
        return finalBatchStatuses.includes(b.status) ? b : null;
      },
      timeoutMs,
      250,
    );
  } catch (err) {
    const b = await env.api.getBatch(batchId).catch(() => null);
    const stuck = [
      ...(await env.api.listItems(batchId, { status: "running", limit: 10 }).catch(() => ({ items: [] })))
        .items,
      ...(await env.api.listItems(batchId, { status: "pending", limit: 10 }).catch(() => ({ items: [] })))
        .items,
    ];
    throw new ScenarioAssertionError(
      `${(err as Error).message}\n  batch: ${b ? `${b.status}, counts ${JSON.stringify(b.counts)}, progress ${JSON.stringify(b.progress)}, reason ${b.reason}` : "unreadable"}\n  not terminal (sample): ${
        stuck
          .map((i) => `${i.id} ${i.status} attempt ${i.attempt} lease ${i.lease?.owner ?? "-"}`)
          .join("; ") || "none listed"
      }\n  recent stack output:\n    ${env.recentOutput().slice(-15).join("\n    ")}`,
    );
  }
}

/** The full ledger invariant (DESIGN.md §8) through the API and the DuckDB file; throws listing every violation. */
export function assertInvariant(
  env: ChaosStack,
  batchId: string,
  submittedItemIds: string[],
): Promise<InvariantReport> {
  return assertLedgerInvariant({
    coordinatorUrl: env.stack.urls.coordinator,
    batchId,
    resultsPath: env.stack.resultsPath,
    submittedItemIds,
  });
}

/** Every item, results included, by id. */
export async function itemsById(env: ChaosStack, batchId: string): Promise<Map<string, ItemJson>> {
  const items = await env.api.allItems(batchId, { include: "result" });
  return new Map(items.map((i) => [i.id, i]));
}

/** Items that are not in the expected state: `id: expected …, found …`. */
export function unexpectedItems(
  items: Map<string, ItemJson>,
  ids: string[],
  expected: { status: string; kind?: string; attempt?: number | ((a: number) => boolean) },
): string[] {
  const out: string[] = [];
  for (const id of ids) {
    const it = items.get(id);
    const want = `${expected.status}${expected.kind ? `(${expected.kind})` : ""}${
      typeof expected.attempt === "number" ? ` at attempt ${expected.attempt}` : ""
    }`;
    if (!it) {
      out.push(`${id}: expected ${want}, found no such item`);
      continue;
    }
    const attemptOk =
      expected.attempt === undefined ||
      (typeof expected.attempt === "number" ? it.attempt === expected.attempt : expected.attempt(it.attempt));
    if (it.status !== expected.status || (expected.kind && it.error?.kind !== expected.kind) || !attemptOk)
      out.push(
        `${id}: expected ${want}, found ${it.status}${it.error ? `(${it.error.kind}: ${it.error.message})` : ""} at attempt ${it.attempt}`,
      );
  }
  return out;
}

/** Export markers of a batch in the DuckDB file (one per finalized generation). */
export async function exportMarkers(
  env: ChaosStack,
  batchId: string,
): Promise<{ export_id: string; generation: number; rows: number }[]> {
  return (await queryResults(
    env.stack.resultsPath,
    "SELECT export_id, generation, rows FROM exports WHERE batch_id = $1 ORDER BY generation",
    [batchId],
  )) as { export_id: string; generation: number; rows: number }[];
}

/** Result rows of a batch in the DuckDB file. */
export async function sinkRows(
  env: ChaosStack,
  batchId: string,
): Promise<{ item_id: string; generation: number; export_id: string }[]> {
  return (await queryResults(
    env.stack.resultsPath,
    "SELECT item_id, generation, export_id FROM item_results WHERE batch_id = $1",
    [batchId],
  )) as { item_id: string; generation: number; export_id: string }[];
}

export const epoch = (iso: string | null | undefined): number | null => (iso ? Date.parse(iso) : null);

/** "succeeded ×50, failed ×6" */
export function outcomeSummary(statuses: string[]): string {
  const counts = new Map<string, number>();
  for (const s of statuses) counts.set(s, (counts.get(s) ?? 0) + 1);
  return [...counts].map(([s, n]) => (statuses.length === 1 ? s : `${s} ×${n}`)).join(", ");
}

/** What happened to an item: its log events and its deliveries through the proxy, relative to `since`. */
export function itemHistory(env: ChaosStack, batchId: string, itemId: string, since: number): string {
  const deliveries = env.workProxy
    .deliveries(batchId)
    .filter((d) => d.itemId === itemId)
    .map(
      (d) =>
        `delivery +${d.at - since} ms → ${d.action === "forward" ? "" : `${d.action} `}${d.status ?? "no answer"}${d.answeredAt ? ` at +${d.answeredAt - since} ms` : ""}`,
    );
  return `${env.logs.timeline(batchId, itemId, since)}\n      ${deliveries.join("; ") || "no deliveries seen by the proxy"}`;
}

/** Polls the batch's counts until at least `done` items are terminal. */
export async function waitDone(
  env: ChaosStack,
  batchId: string,
  done: number,
  timeoutMs: number,
): Promise<BatchJson> {
  return waitFor(
    `${done} items of ${batchId} to be terminal`,
    async () => {
      const b = await env.api.getBatch(batchId);
      const c = b.counts;
      if (finalBatchStatuses.includes(b.status)) return b;
      return c && c.succeeded + c.failed >= done ? b : null;
    },
    timeoutMs,
    100,
  );
}
