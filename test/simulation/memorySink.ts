// A result sink in memory for the simulator and the contract suite: one export per export id
// (functions/adapters/resultExportId.ts, as the DuckDB and BigQuery sinks key theirs), so running the
// same export again writes nothing and answers the first export's row count. Rows are kept as
// exported — never merged — so a duplicate row would show. Failures can be injected before the
// export commits (nothing written) or after it (written, but the caller sees an error, as when a
// load job succeeds and its answer is lost).
import { exportIdFor } from "../../functions/adapters/resultExportId";
import type { ResultRow } from "../../functions/core/model";
import type { ExportResult, ExportTarget, ResultSink } from "../../functions/core/ports";
import type { Gate } from "./memoryStore";

export type ExportFault = "before_commit" | "after_commit" | null;

export interface StoredExport {
  exportId: string;
  batchId: string;
  generation: number;
  rows: ResultRow[];
}

/** The sink's storage, shared by every process's view of it. */
export class SinkStore {
  readonly exports = new Map<string, StoredExport>();
  operations = 0;
  /** Decides, per export attempt, whether (and where) it fails. */
  fault: (batchId: string, generation: number) => ExportFault = () => null;
  /** Called synchronously when an export commits (the simulator's invariant checker). */
  onCommit: (batchId: string) => void = () => {};

  rowsOf(batchId: string): ResultRow[] {
    const out: ResultRow[] = [];
    for (const e of this.exports.values()) if (e.batchId === batchId) out.push(...e.rows);
    return out;
  }
}

export class MemoryResultSink implements ResultSink {
  constructor(
    readonly store: SinkStore = new SinkStore(),
    private readonly gate: Gate = () => Promise.resolve(),
  ) {}

  get operations(): number {
    return this.store.operations;
  }

  async exportBatch(target: ExportTarget, rows: AsyncIterable<ResultRow[]>): Promise<ExportResult> {
    const { batchId, generation } = target;
    const exportId = exportIdFor(target);
    // Stage every row first (the ledger's pages), then commit the export in one step.
    const staged = new Map<string, ResultRow>();
    for await (const page of rows) for (const r of page) staged.set(r.itemId, r);
    const rowCount = staged.size;
    await this.gate("sink.export", () => `${exportId} (${rowCount} rows)`);
    this.store.operations++;
    const fault = this.store.fault(batchId, generation);
    if (fault === "before_commit") throw new Error(`injected export failure: ${exportId} was not written`);
    const existing = this.store.exports.get(exportId);
    if (existing) return { exportId, rows: existing.rows.length };
    this.store.exports.set(exportId, { exportId, batchId, generation, rows: [...staged.values()] });
    this.store.onCommit(batchId);
    if (fault === "after_commit")
      throw new Error(`injected export failure: ${exportId} was written but its answer was lost`);
    return { exportId, rows: staged.size };
  }

  async countRows(batchId: string): Promise<number> {
    await this.gate("sink.count", () => batchId);
    this.store.operations++;
    return this.store.rowsOf(batchId).length;
  }

  async close(): Promise<void> {}
}
