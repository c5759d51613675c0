// The ledger invariant (DESIGN.md §8, §2.3 "Fencing"), checked by the simulator after every commit to
// the store and every export to the sink, from the stored documents and sink rows themselves — not
// through the ledger, and with its own threshold rule (not core/outcome.ts), so a bug in the code
// under test cannot hide itself.
//
// At every commit:
// - an item is created only into the first generation of a batch that is submitting (or blocked),
//   not sealed and not told to end; an item is reset (terminal → live) only by a retry, into the
//   generation of a batch that is submitting it;
// - a succeeded item never changes again;
// - no item is live (pending or running) in a batch whose finalization was claimed (finalizing)
//   or that is final.
// Once a batch is final:
// - every item is terminal; the summary's counts are the stored items' counts;
// - its status is the termination's (cancelled / failed) or the threshold rule's outcome;
// - each succeeded item has exactly one sink row, of its generation, equal to its stored result, and
//   no sink row exists without a succeeded item of that generation; the summary's exported rows
//   are the rows of the batch's final generation.
import type { BatchStatus, ItemStatus } from "../../functions/core/model";
import { batchPath } from "./memoryLedger";
import type { SinkStore } from "./memorySink";
import { type CommitEvent, type DocData, deepEqual, type MemoryStore } from "./memoryStore";

export type ViolationCode =
  | "created_after_claim"
  | "created_when_closed"
  | "reset_after_claim"
  | "reset_when_closed"
  | "terminal_changed"
  | "live_after_claim"
  | "live_in_final"
  | "summary_mismatch"
  | "outcome_mismatch"
  | "missing_row"
  | "duplicate_row"
  | "row_mismatch"
  | "row_without_item"
  | "exported_rows_mismatch"
  | "lost_items"
  | "shared_position"
  | "acknowledged_other_items"
  | "not_settled";

export interface Violation {
  code: ViolationCode;
  batchId: string;
  itemId?: string;
  message: string;
  /** The batch as stored when the violation was seen. */
  batchStatus: BatchStatus | null;
  generation: number | null;
  reason: string | null;
  terminateAs: string | null;
  at: string;
  step: number;
}

interface BatchDoc {
  batchId: string;
  status: BatchStatus;
  generation: number;
  terminateAs: "cancelled" | "failed" | null;
  reason: string | null;
  submissionComplete: boolean;
  failureThreshold: number;
  summary: {
    outcome: string;
    counts: { total: number; pending: number; running: number; succeeded: number; failed: number };
    exportedRows: number;
  } | null;
}

interface ItemDoc {
  itemId: string;
  seq: number;
  generation: number;
  status: ItemStatus;
  result: unknown;
}

const finalStatuses: readonly BatchStatus[] = ["succeeded", "partial", "failed", "cancelled"];
const isFinal = (s: BatchStatus) => finalStatuses.includes(s);
const isLive = (s: ItemStatus) => s === "pending" || s === "running";
const isTerminal = (s: ItemStatus) => s === "succeeded" || s === "failed";

/** batches/{b} or batches/{b}/items/{i} */
function parse(path: string): { batchId: string; itemId?: string } | null {
  const parts = path.split("/");
  if (parts[0] !== "batches") return null;
  if (parts.length === 2) return { batchId: parts[1]! };
  if (parts.length === 4 && parts[2] === "items") return { batchId: parts[1]!, itemId: parts[3]! };
  return null;
}

export class InvariantChecker {
  readonly violations: Violation[] = [];
  private readonly seen = new Set<string>();
  private readonly itemPaths = new Map<string, Set<string>>();
  /** Items a client was told were all stored (a `submitted` answer): batchId → count. */
  readonly acknowledged = new Map<string, number>();
  /**
   * The item ids each client was told were stored, by batch: two clients of one batch id with
   * different items (rivals) must not both be told so, and the final batch holds what was told.
   */
  readonly acknowledgedIds = new Map<string, string[][]>();
  onViolation: (v: Violation) => void = () => {};

  constructor(
    private readonly store: MemoryStore,
    private readonly sink: SinkStore,
    private readonly where: () => { at: string; step: number },
  ) {
    store.onCommit((e) => this.onCommit(e));
    sink.onCommit = (batchId) => this.checkBatch(batchId);
  }

  batchIds(): string[] {
    const ids: string[] = [];
    for (const [path] of this.store.entries()) {
      const p = parse(path);
      if (p && !p.itemId) ids.push(p.batchId);
    }
    return ids;
  }

  private batch(batchId: string): BatchDoc | null {
    return (this.store.get(batchPath(batchId)).data as unknown as BatchDoc | undefined) ?? null;
  }

  private items(batchId: string): ItemDoc[] {
    const out: ItemDoc[] = [];
    for (const path of this.itemPaths.get(batchId) ?? []) {
      const d = this.store.get(path).data;
      if (d) out.push(d as unknown as ItemDoc);
    }
    return out;
  }

  private report(code: ViolationCode, batchId: string, itemId: string | undefined, message: string): void {
    const key = `${code}/${batchId}/${itemId ?? ""}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    const b = this.batch(batchId);
    const v: Violation = {
      code,
      batchId,
      itemId,
      message,
      batchStatus: b?.status ?? null,
      generation: b?.generation ?? null,
      reason: b?.reason ?? null,
      terminateAs: b?.terminateAs ?? null,
      ...this.where(),
    };
    this.violations.push(v);
    this.onViolation(v);
  }

  private onCommit(e: CommitEvent): void {
    const touched = new Set<string>();
    for (const c of e.changes) {
      const p = parse(c.path);
      if (!p) continue;
      touched.add(p.batchId);
      if (!p.itemId) continue;
      let paths = this.itemPaths.get(p.batchId);
      if (!paths) {
        paths = new Set();
        this.itemPaths.set(p.batchId, paths);
      }
      paths.add(c.path);
      this.checkItemChange(p.batchId, p.itemId, c.before, c.after);
    }
    for (const batchId of touched) this.checkBatch(batchId);
  }

  private checkItemChange(
    batchId: string,
    itemId: string,
    before: DocData | undefined,
    after: DocData | undefined,
  ) {
    const b = this.batch(batchId);
    const was = before as unknown as ItemDoc | undefined;
    const now = after as unknown as ItemDoc | undefined;
    if (!now) return;
    if (!was) {
      if (!b)
        return this.report(
          "created_when_closed",
          batchId,
          itemId,
          "item created for a batch that does not exist",
        );
      if (b.status === "finalizing" || isFinal(b.status))
        return this.report(
          "created_after_claim",
          batchId,
          itemId,
          `item created while the batch was ${b.status} (generation ${b.generation})`,
        );
      const open =
        (b.status === "submitting" || b.status === "blocked") &&
        b.terminateAs === null &&
        !b.submissionComplete &&
        b.generation === 1;
      if (!open)
        this.report(
          "created_when_closed",
          batchId,
          itemId,
          `item created while the batch was ${b.status}${b.terminateAs ? ` ending ${b.terminateAs}` : ""}${b.submissionComplete ? ", sealed" : ""}, generation ${b.generation}`,
        );
      return;
    }
    if (was.status === "succeeded" && (now.status !== "succeeded" || !deepEqual(was.result, now.result)))
      return this.report("terminal_changed", batchId, itemId, `a succeeded item became ${now.status}`);
    if (isTerminal(was.status) && isLive(now.status)) {
      if (!b) return;
      if (b.status === "finalizing" || isFinal(b.status))
        return this.report(
          "reset_after_claim",
          batchId,
          itemId,
          `item reset to ${now.status} (generation ${now.generation}) while the batch was ${b.status} at generation ${b.generation}`,
        );
      const retry =
        was.status === "failed" &&
        now.status === "pending" &&
        b.status === "submitting" &&
        b.terminateAs === null &&
        now.generation === b.generation &&
        was.generation < now.generation;
      if (!retry)
        this.report(
          "reset_when_closed",
          batchId,
          itemId,
          `${was.status} item became ${now.status} (generation ${was.generation} → ${now.generation}) while the batch was ${b.status} at generation ${b.generation}`,
        );
    }
  }

  /** Every rule for one batch, on the stored state as it is now. */
  checkBatch(batchId: string): void {
    const b = this.batch(batchId);
    if (!b) return;
    const claimed = b.status === "finalizing" || isFinal(b.status);
    if (!claimed) return;
    const items = this.items(batchId);
    for (const it of items)
      if (isLive(it.status))
        this.report(
          isFinal(b.status) ? "live_in_final" : "live_after_claim",
          batchId,
          it.itemId,
          `item ${it.status} (generation ${it.generation}) in a ${b.status} batch (generation ${b.generation})`,
        );
    if (!isFinal(b.status)) return;

    const total = items.length;
    const succeeded = items.filter((i) => i.status === "succeeded").length;
    const failed = items.filter((i) => i.status === "failed").length;
    const c = b.summary?.counts;
    if (
      !c ||
      c.total !== total ||
      c.succeeded !== succeeded ||
      c.failed !== failed ||
      c.pending + c.running !== 0
    )
      this.report(
        "summary_mismatch",
        batchId,
        undefined,
        `summary counts ${JSON.stringify(c ?? null)}, stored items: ${total} total, ${succeeded} succeeded, ${failed} failed`,
      );
    // The threshold rule, written out here rather than taken from core/outcome.ts.
    const outcome: BatchStatus =
      failed === 0 ? "succeeded" : failed / total <= b.failureThreshold ? "partial" : "failed";
    const expected = b.terminateAs ?? outcome;
    if (b.status !== expected)
      this.report(
        "outcome_mismatch",
        batchId,
        undefined,
        `status ${b.status}, expected ${expected} (${failed} of ${total} failed, threshold ${b.failureThreshold}${b.terminateAs ? `, ending ${b.terminateAs}` : ""})`,
      );

    const rows = this.sink.rowsOf(batchId);
    const rowsByItem = new Map<string, typeof rows>();
    for (const r of rows) rowsByItem.set(r.itemId, [...(rowsByItem.get(r.itemId) ?? []), r]);
    const byId = new Map(items.map((i) => [i.itemId, i]));
    for (const it of items) {
      if (it.status !== "succeeded") continue;
      const mine = rowsByItem.get(it.itemId) ?? [];
      if (mine.length === 0)
        this.report(
          "missing_row",
          batchId,
          it.itemId,
          `succeeded in generation ${it.generation}, no sink row`,
        );
      else if (mine.length > 1) this.report("duplicate_row", batchId, it.itemId, `${mine.length} sink rows`);
      else if (mine[0]!.generation !== it.generation || !deepEqual(mine[0]!.result, it.result))
        this.report(
          "row_mismatch",
          batchId,
          it.itemId,
          `row of generation ${mine[0]!.generation} = ${JSON.stringify(mine[0]!.result)}, item of generation ${it.generation} = ${JSON.stringify(it.result)}`,
        );
    }
    for (const r of rows) {
      const it = byId.get(r.itemId);
      if (!it || it.status !== "succeeded" || it.generation !== r.generation)
        this.report(
          "row_without_item",
          batchId,
          r.itemId,
          `sink row of generation ${r.generation}, item ${it ? `${it.status} in generation ${it.generation}` : "missing"}`,
        );
    }
    const ofGeneration = rows.filter((r) => r.generation === b.generation).length;
    if (b.summary && b.summary.exportedRows !== ofGeneration)
      this.report(
        "exported_rows_mismatch",
        batchId,
        undefined,
        `summary says ${b.summary.exportedRows} rows exported, the sink holds ${ofGeneration} of generation ${b.generation}`,
      );
    // One item per position (issue #15 item 10): rivals storing different items at one position
    // at once must leave one of them (the other withdrawn before it was ever published).
    const bySeq = new Map<number, string[]>();
    for (const it of items) bySeq.set(it.seq, [...(bySeq.get(it.seq) ?? []), it.itemId]);
    for (const [seq, ids] of bySeq)
      if (ids.length > 1)
        this.report(
          "shared_position",
          batchId,
          ids.join(","),
          `position ${seq} holds ${ids.length} items: ${ids.join(", ")}`,
        );
    const stored = [...items]
      .sort((x, y) => x.seq - y.seq)
      .map((i) => i.itemId)
      .join(",");
    for (const ids of this.acknowledgedIds.get(batchId) ?? [])
      if (ids.join(",") !== stored)
        this.report(
          "acknowledged_other_items",
          batchId,
          undefined,
          `a client was told its items [${ids.join(",")}] were stored; the batch holds [${stored}]`,
        );
    const told = this.acknowledged.get(batchId);
    if (told !== undefined && total !== told)
      this.report(
        "lost_items",
        batchId,
        undefined,
        `the client was told ${told} items were stored; the ledger holds ${total}`,
      );
  }

  /** At the end of a run: every rule on every batch, and every batch final. */
  checkAll(settled: boolean, describe: (batchId: string) => string): void {
    for (const batchId of this.batchIds()) {
      this.checkBatch(batchId);
      const b = this.batch(batchId);
      if (!settled && b && !isFinal(b.status))
        this.report(
          "not_settled",
          batchId,
          undefined,
          `not final at the end of the run: ${describe(batchId)}`,
        );
    }
  }
}
