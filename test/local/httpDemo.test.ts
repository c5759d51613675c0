// `npm run demo:http` end to end (issue #17 §4): the demo's own runHttpDemo — the prediction service
// on 127.0.0.1, the local stack (real emulators, handler processes) with the HTTP pipeline declared,
// a 100-item batch — and the outcome the service's fixed pattern predicts: 96 succeeded (10 after a
// 429 waited out inside the step, so still attempt 1; 10 after a 500, so attempt 2), 4 failed
// permanently with the service's 400 message, one sink row per succeeded item holding the service's
// answer, and the ledger invariant.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  demoAnswerKind,
  demoHttpItems,
  demoPrediction,
  expectedDemoCounts,
} from "../../local/demoTargetService";
import { type HttpDemoResult, runHttpDemo } from "../../local/httpDemo";

describe("the service's pattern", () => {
  it("predicts the counts: every 25th refused, n ending in 3 busy once, in 7 failing once", () => {
    expect(expectedDemoCounts(100)).toEqual({
      total: 100,
      succeeded: 96,
      failed: 4,
      busyOnce: 10,
      errorOnce: 10,
    });
    expect(expectedDemoCounts(200)).toEqual({
      total: 200,
      succeeded: 192,
      failed: 8,
      busyOnce: 20,
      errorOnce: 20,
    });
    expect([3, 7, 25, 26].map(demoAnswerKind)).toEqual(["busy-once", "error-once", "invalid", "ok"]);
    // The refused items are the ones built without features.
    expect(
      demoHttpItems(50)
        .filter((i) => i.payload.features.length === 0)
        .map((i) => i.id),
    ).toEqual(["item-25", "item-50"]);
  });
});

describe("npm run demo:http", () => {
  let result: HttpDemoResult;
  let dir: string;
  let printed = "";
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "tally-http-demo-"));
    result = await runHttpDemo({
      items: 100,
      workers: 2,
      verbose: false,
      dataDir: join(dir, "data"),
      out: {
        write: (chunk: string) => {
          printed += chunk;
        },
      },
    });
  }, 120_000);
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("ends with the counts the pattern predicts, and the ledger invariant holds", () => {
    expect(result.report.violations).toEqual([]);
    expect(result.report.ok).toBe(true);
    expect(result.view.status).toBe("partial");
    expect(result.view.counts).toMatchObject({ succeeded: 96, failed: 4, running: 0, pending: 0 });
    expect(result.view.failedByKind).toEqual({ permanent: 4 });
    expect(result.countsAsExpected).toBe(true);
    expect(printed).toContain("expected succeeded 96, failed 4; got succeeded 96, failed 4: as predicted");
    expect(printed).toContain(`ledger invariant holds for batch ${result.batchId}`);
  });

  it("each item ends as its answer says: 429 costs no attempt, 500 one more, 400 fails with the service's message", () => {
    const items = demoHttpItems(100);
    const listed = new Map(result.items.map((i) => [i.itemId, i]));
    for (const { id, payload } of items) {
      const item = listed.get(id)!;
      const kind = demoAnswerKind(payload.n);
      if (kind === "invalid") {
        expect(item.status, id).toBe("failed");
        expect(item.error?.kind, id).toBe("permanent");
        expect(item.error?.message, id).toContain(
          `answered 400: item ${payload.n}: features must be a non-empty list of numbers`,
        );
      } else {
        expect(item.status, id).toBe("succeeded");
        expect(item.attempt, id).toBe(kind === "error-once" ? 2 : 1);
      }
    }
    expect(result.answeredByStatus).toEqual({ 200: 96, 400: 4, 429: 10, 500: 10 });
  });

  it("the sink holds one row per succeeded item: the service's answer", () => {
    const byId = new Map(demoHttpItems(100).map((i) => [i.id, i.payload]));
    const succeeded = result.items.filter((i) => i.status === "succeeded").map((i) => i.itemId);
    expect(result.rows.map((r) => r.itemId).sort()).toEqual(succeeded.sort());
    for (const r of result.rows) {
      const p = byId.get(r.itemId)!;
      expect(r.result, r.itemId).toEqual({ n: p.n, ...demoPrediction(p.features), model: "demo-v1" });
      expect(r.generation).toBe(1);
    }
  });
});
