// Result rows for the sink tests: varied JSON (nesting, nulls, non-ASCII), distinct finish times
// and attempts, yielded in pages like the ledger's streamResults. No vitest import, so child
// processes can use it too.
import type { ResultRow } from "../../../functions/core/model";

export function resultRows(batchId: string, generation: number, count: number, from = 0): ResultRow[] {
  return Array.from({ length: count }, (_, k) => {
    const i = from + k;
    return {
      batchId,
      itemId: `item-${String(i).padStart(6, "0")}`,
      generation,
      result: { index: i, text: `result ${i}`, nested: { ok: i % 2 === 0, list: [i, null, "ü"] } },
      finishedAt: 1_700_000_000_000 + i * 1_000 + generation,
      attempts: 1 + (i % 3),
    };
  });
}

/** Yields the rows in pages, the way the ledger's streamResults does. */
export async function* pages(rows: ResultRow[], pageSize = 100): AsyncIterable<ResultRow[]> {
  for (let i = 0; i < rows.length; i += pageSize) yield rows.slice(i, i + pageSize);
}
