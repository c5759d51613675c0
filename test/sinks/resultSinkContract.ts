// The contract every ResultSink honours (DESIGN.md §2.4, F2/F3), run against each adapter: DuckDB
// always, BigQuery when a real project is configured. Each test uses its own batch ids, so one sink
// instance (one file, one dataset) serves the whole suite.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ResultRow } from "../../functions/core/model";
import type { ResultSink } from "../../functions/core/ports";
import { exportTarget } from "../support/exportTarget";
import { pages, resultRows } from "./support/resultRows";

export { pages, resultRows };

export interface SinkUnderTest {
  sink: ResultSink;
  /** The rows the sink holds for a batch, read back through the adapter's own storage. */
  readRows(batchId: string): Promise<ResultRow[]>;
  dispose?(): Promise<void>;
}

const byItem = (a: ResultRow, b: ResultRow) => a.itemId.localeCompare(b.itemId);

/** With `skip`, the suite is reported as skipped and the reason is part of its name in the output. */
export function runResultSinkContract(
  name: string,
  makeSink: () => Promise<SinkUnderTest>,
  opts: { skip?: string } = {},
): void {
  const title = opts.skip
    ? `ResultSink contract: ${name} (skipped: ${opts.skip})`
    : `ResultSink contract: ${name}`;
  describe.skipIf(Boolean(opts.skip))(title, () => {
    let t: SinkUnderTest;
    const batch = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;

    beforeAll(async () => {
      t = await makeSink();
    });
    afterAll(async () => {
      await t?.sink.close();
      await t?.dispose?.();
    });

    it("running the same export twice leaves exactly one row per item", async () => {
      const b = batch("twice");
      const rows = resultRows(b, 1, 250);
      const first = await t.sink.exportBatch(exportTarget(b, 1), pages(rows));
      const second = await t.sink.exportBatch(exportTarget(b, 1), pages(rows));
      expect(first).toEqual({ exportId: expect.any(String), rows: 250 });
      expect(second.exportId).toBe(first.exportId);
      expect(second.rows).toBe(250);
      expect(await t.sink.countRows(b)).toBe(250);
      const stored = await t.readRows(b);
      expect(new Set(stored.map((r) => r.itemId)).size).toBe(250);
    });

    it("exports of two generations keep the rows of both, each once", async () => {
      const b = batch("gens");
      // Generation 2 is an operator retry of the items that failed in generation 1.
      const gen1 = resultRows(b, 1, 30);
      const gen2 = resultRows(b, 2, 10, 30);
      const e1 = await t.sink.exportBatch(exportTarget(b, 1), pages(gen1, 7));
      const e2 = await t.sink.exportBatch(exportTarget(b, 2), pages(gen2, 7));
      await t.sink.exportBatch(exportTarget(b, 2), pages(gen2, 7));
      await t.sink.exportBatch(exportTarget(b, 1), pages(gen1, 7));
      expect(e1.exportId).not.toBe(e2.exportId);
      expect(await t.sink.countRows(b)).toBe(40);
      const stored = (await t.readRows(b)).sort(byItem);
      expect(stored).toEqual([...gen1, ...gen2].sort(byItem));
    });

    it("an empty export writes no rows and still returns a valid export id", async () => {
      const b = batch("empty");
      const e = await t.sink.exportBatch(exportTarget(b, 1), pages([]));
      expect(e.rows).toBe(0);
      expect(e.exportId).toMatch(/^[A-Za-z0-9_-]{1,1024}$/);
      expect(await t.sink.countRows(b)).toBe(0);
      expect(await t.sink.exportBatch(exportTarget(b, 1), pages([]))).toEqual(e);
    });

    it("rows round-trip: result JSON, attempts and finish time as given", async () => {
      const b = batch("roundtrip");
      const rows = resultRows(b, 1, 5);
      rows[1]!.result = null;
      rows[2]!.result = "plain string";
      rows[3]!.result = [1, 2.5, { deep: { deeper: ["x", true] } }];
      rows[4]!.result = { quote: 'it\'s "quoted"', newline: "a\nb", emoji: "🎉" };
      await t.sink.exportBatch(exportTarget(b, 1), pages(rows, 2));
      expect((await t.readRows(b)).sort(byItem)).toEqual(rows);
    });

    it("counts rows per batch, never across batches", async () => {
      const a = batch("count-a");
      const c = batch("count-b");
      await t.sink.exportBatch(exportTarget(a, 1), pages(resultRows(a, 1, 12)));
      await t.sink.exportBatch(exportTarget(c, 1), pages(resultRows(c, 1, 3)));
      expect(await t.sink.countRows(a)).toBe(12);
      expect(await t.sink.countRows(c)).toBe(3);
      expect(await t.sink.countRows(batch("never-exported"))).toBe(0);
    });

    it("a batch that reuses a deleted predecessor's id is exported on its own: the incarnation is part of the export id", async () => {
      const b = batch("reused");
      const before = resultRows(b, 1, 5);
      const after = resultRows(b, 1, 3, 100);
      const first = await t.sink.exportBatch(exportTarget(b, 1, Date.UTC(2026, 0, 1)), pages(before));
      // The predecessor was deleted by retention; a new batch took its id and ran generation 1.
      const second = await t.sink.exportBatch(exportTarget(b, 1, Date.UTC(2026, 5, 1)), pages(after));
      expect(second.exportId).not.toBe(first.exportId);
      expect(second.rows).toBe(3); // written, not taken for the predecessor's export
      expect(await t.readRows(b)).toEqual(expect.arrayContaining(after));
      // Each incarnation's export is still recognised when re-run.
      expect(await t.sink.exportBatch(exportTarget(b, 1, Date.UTC(2026, 5, 1)), pages(after))).toEqual(
        second,
      );
    });

    it("the export id is deterministic in (batch incarnation, generation) and a valid BigQuery job id", async () => {
      const b = batch("weird id/with spaces:and.dots");
      const e1 = await t.sink.exportBatch(exportTarget(b, 3), pages(resultRows(b, 3, 2)));
      const e2 = await t.sink.exportBatch(exportTarget(b, 3), pages(resultRows(b, 3, 2)));
      expect(e1.exportId).toBe(e2.exportId);
      expect(e1.exportId).toMatch(/^[A-Za-z0-9_-]{1,1024}$/);
    });

    it("counts a constant number of sink operations per export, whatever the row count", async () => {
      const small = batch("ops-small");
      const large = batch("ops-large");
      const before = t.sink.operations;
      await t.sink.exportBatch(exportTarget(small, 1), pages(resultRows(small, 1, 1)));
      const perSmall = t.sink.operations - before;
      const mid = t.sink.operations;
      await t.sink.exportBatch(exportTarget(large, 1), pages(resultRows(large, 1, 2_000), 500));
      const perLarge = t.sink.operations - mid;
      expect(perSmall).toBeGreaterThanOrEqual(1);
      expect(perLarge).toBe(perSmall);
    });

    it("rejects rows of another batch or generation and writes nothing", async () => {
      const b = batch("mixed");
      const rows = [...resultRows(b, 1, 3), ...resultRows(`${b}-other`, 1, 1)];
      await expect(t.sink.exportBatch(exportTarget(b, 1), pages(rows))).rejects.toThrow(/given a row of/);
      expect(await t.sink.countRows(b)).toBe(0);
      // The failed export left no marker: a correct re-run exports.
      expect((await t.sink.exportBatch(exportTarget(b, 1), pages(resultRows(b, 1, 3)))).rows).toBe(3);
    });
  });
}
