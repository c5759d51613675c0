// The ledger-invariant checker's self-test (local/invariant.ts, DESIGN.md §8). The checker judges
// evidence (the batch and its items as the API answers them, and the sink's rows) with a pure
// function, so each rule is shown here to fire on its own: one consistent world — a batch retried
// once, so the sink holds rows of two generations — and, per rule, one defect that breaks exactly
// that rule and no other. The reading side (HTTP and the DuckDB file) is exercised against a live
// stack in test/local/localStack.test.ts.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  evaluateLedgerInvariant,
  expectedOutcome,
  type InvariantEvidence,
  type ItemSnapshot,
  type Violation,
} from "../../local/invariant";

const item = (
  itemId: string,
  generation: number,
  status: string,
  over: Partial<ItemSnapshot> = {},
): ItemSnapshot => ({
  itemId,
  status,
  generation,
  attempt: 1,
  error: null,
  result: status === "succeeded" ? { value: itemId } : null,
  leaseOwner: null,
  leaseUntil: null,
  ...over,
});

/**
 * A partial batch of 5 after one operator retry: a1, a2 succeeded in generation 1 (their rows stay
 * from that export), a3, a4 succeeded in generation 2, a5 failed permanently in generation 2 —
 * 1 of 5 failed is 20%, at or below the 25% threshold.
 */
function world(): InvariantEvidence {
  const counts = { total: 5, pending: 0, running: 0, succeeded: 4, failed: 1 };
  const items = [
    item("a1", 1, "succeeded"),
    item("a2", 1, "succeeded"),
    item("a3", 2, "succeeded", { attempt: 2 }),
    item("a4", 2, "succeeded"),
    item("a5", 2, "failed", { error: { kind: "permanent", message: "boom" } }),
  ];
  return {
    batchId: "b",
    batch: {
      id: "b",
      status: "partial",
      total: 5,
      counts: { ...counts },
      failureThreshold: 0.25,
      generation: 2,
      terminateAs: null,
      summary: { outcome: "partial", counts: { ...counts }, failedByKind: { permanent: 1 }, durationMs: 10 },
      export: { exportId: "b-2", rows: 2 },
    },
    items,
    rows: items
      .filter((i) => i.status === "succeeded")
      .map((i) => ({ itemId: i.itemId, generation: i.generation!, result: { value: i.itemId } })),
    submittedItemIds: items.map((i) => i.itemId),
  };
}

// biome-ignore lint/suspicious/noExplicitAny: the cases edit the API's JSON field by field
type Batch = Record<string, any>;
const batchOf = (e: InvariantEvidence) => e.batch as Batch;
const rules = (e: InvariantEvidence) => evaluateLedgerInvariant(e).violations.map((v) => v.rule);
/** The violation of `rule`, as its message and examples read. */
const described = (e: InvariantEvidence, rule: Violation["rule"]) => {
  const v = evaluateLedgerInvariant(e).violations.find((x) => x.rule === rule);
  return v ? [v.message, ...(v.examples ?? [])].join("\n") : "";
};
const withItem = (e: InvariantEvidence, id: string, over: Partial<ItemSnapshot>) => {
  e.items = e.items.map((i) => (i.itemId === id ? { ...i, ...over } : i));
};

describe("the ledger invariant checker", () => {
  it("holds for the consistent world", () => {
    const report = evaluateLedgerInvariant(world());
    expect(report.violations).toEqual([]);
    expect(report).toMatchObject({
      ok: true,
      status: "partial",
      total: 5,
      apiCounts: { pending: 0, running: 0, succeeded: 4, failed: 1 },
      listedCounts: { succeeded: 4, failed: 1 },
      failedByKind: { permanent: 1 },
      sinkRows: 4,
    });
  });

  // One defect per rule; each must trip that rule and nothing else.
  const cases: Array<[Violation["rule"], string, (e: InvariantEvidence) => void, RegExp]> = [
    [
      "field_missing",
      "the summary reports no failedByKind",
      (e) => delete batchOf(e).summary.failedByKind,
      /does not report summary\.failedByKind/,
    ],
    ["field_missing", "no export row count", (e) => delete batchOf(e).export, /export\.rows/],
    ["field_missing", "no counts", (e) => (batchOf(e).counts = null), /does not report counts\b/],
    ["field_missing", "a count left out", (e) => delete batchOf(e).counts.running, /counts\.running/],
    ["field_missing", "no total", (e) => delete batchOf(e).total, /does not report total/],
    ["field_missing", "no failureThreshold", (e) => delete batchOf(e).failureThreshold, /failureThreshold/],
    ["field_missing", "no generation", (e) => delete batchOf(e).generation, /does not report generation/],
    ["field_missing", "no terminateAs", (e) => delete batchOf(e).terminateAs, /terminateAs/],
    ["field_missing", "no summary", (e) => (batchOf(e).summary = null), /does not report summary/],
    [
      "field_missing",
      "no outcome in the summary",
      (e) => delete batchOf(e).summary.outcome,
      /summary\.outcome/,
    ],
    [
      "field_missing",
      "an item without its generation",
      (e) => withItem(e, "a3", { generation: null }),
      /generation of 1 item\(s\) \(a3\)/,
    ],
    ["batch_not_final", "still finalizing", (e) => (batchOf(e).status = "finalizing"), /is "finalizing"/],
    [
      "item_missing",
      "a submitted item the ledger does not have",
      (e) => e.submittedItemIds!.push("a9"),
      /1 submitted item\(s\) are not in the ledger/,
    ],
    [
      "item_unexpected",
      "a listed item nobody submitted",
      (e) => (e.submittedItemIds = e.submittedItemIds!.filter((id) => id !== "a5")),
      /1 listed item\(s\) were never submitted/,
    ],
    [
      "item_duplicated",
      "an item listed twice",
      (e) => e.items.push({ ...e.items[1]! }),
      /1 item\(s\) are listed more than once/,
    ],
    [
      "item_not_terminal",
      "an item still running (counts, summary and export consistent with it)",
      (e) => {
        withItem(e, "a4", { status: "running", result: null });
        e.rows = e.rows.filter((r) => r.itemId !== "a4");
        const counts = { total: 5, pending: 0, running: 1, succeeded: 3, failed: 1 };
        batchOf(e).counts = { ...counts };
        batchOf(e).summary.counts = { ...counts };
        batchOf(e).export.rows = 1;
      },
      /1 item\(s\) are not succeeded or failed/,
    ],
    [
      "failed_without_reason",
      "a failure without a message",
      (e) => withItem(e, "a5", { error: { kind: "permanent", message: "" } }),
      /1 failed item\(s\) have no error kind and message/,
    ],
    [
      "counts_mismatch",
      "the API counts one failure too many",
      (e) => (batchOf(e).counts.failed = 2),
      /the API's counts say failed 2; the listed items: failed 1/,
    ],
    [
      "counts_mismatch",
      "the summary's counts differ",
      (e) => (batchOf(e).summary.counts.succeeded = 3),
      /the summary's counts say succeeded 3/,
    ],
    [
      "counts_mismatch",
      "a total that is not the number of items",
      (e) => (batchOf(e).total = 6),
      /total is 6, but 5 distinct item\(s\) are listed/,
    ],
    [
      "failed_by_kind_mismatch",
      "a failure counted under the wrong kind",
      (e) => (batchOf(e).summary.failedByKind = { transient: 1 }),
      /permanent: summary 0, listed 1/,
    ],
    [
      "sink_row_missing",
      "a succeeded item without a row",
      (e) => (e.rows = e.rows.filter((r) => r.itemId !== "a3")),
      /1 succeeded item\(s\) have no row/,
    ],
    ["sink_row_duplicated", "a row exported twice", (e) => e.rows.push({ ...e.rows[0]! }), /a1: 2 rows/],
    [
      "sink_row_unexpected",
      "a row for the failed item",
      (e) => e.rows.push({ itemId: "a5", generation: 2, result: { value: "a5" } }),
      /a5: 1 row\(s\), item failed/,
    ],
    [
      "sink_row_unexpected",
      "a row for an item the batch does not have",
      (e) => e.rows.push({ itemId: "zz", generation: 2, result: null }),
      /zz: 1 row\(s\), item not listed/,
    ],
    [
      "sink_result_mismatch",
      "a row that is not the item's result",
      (e) => (e.rows[1]!.result = { value: 0 }),
      /a2: ledger \{"value":"a2"\} vs sink \{"value":0\}/,
    ],
    [
      "sink_result_mismatch",
      "a row of another generation than the item's",
      (e) => (e.rows[2]!.generation = 1),
      /a3: item of generation 2, sink row of generation 1/,
    ],
    [
      "sink_count_mismatch",
      "the export counted every row of the batch, not the final generation's",
      (e) => (batchOf(e).export.rows = 4),
      /export wrote 4 row\(s\); it has 2 succeeded item\(s\) of generation 2/,
    ],
    [
      "outcome_mismatch",
      "succeeded with a failure",
      (e) => (batchOf(e).status = "succeeded"),
      /status is "succeeded", but failed 1 of 5 \(20\.00%\) with failureThreshold 0\.25 means "partial"/,
    ],
    [
      "outcome_mismatch",
      "the summary's outcome is not the threshold rule's",
      (e) => (batchOf(e).summary.outcome = "failed"),
      /the summary's outcome is "failed"/,
    ],
    [
      "outcome_mismatch",
      "partial above the threshold",
      (e) => (batchOf(e).failureThreshold = 0.19),
      /status is "partial", but .* means "failed"/,
    ],
    [
      "outcome_mismatch",
      "a cancelled batch that ended by the threshold rule",
      (e) => (batchOf(e).terminateAs = "cancelled"),
      /status is "partial", but the batch was terminated as "cancelled"/,
    ],
  ];

  it.each(cases)("%s alone: %s", (rule, _defect, breakIt, message) => {
    const e = world();
    breakIt(e);
    expect(rules(e)).toEqual([rule]);
    expect(described(e, rule)).toMatch(message);
    expect(evaluateLedgerInvariant(e).ok).toBe(false);
  });

  it("has a case for every rule", () => {
    const source = readFileSync(join(__dirname, "../../local/invariant.ts"), "utf8");
    const declared = [
      ...source.slice(source.indexOf("rule:"), source.indexOf("message: string;")).matchAll(/"(\w+)"/g),
    ].map((m) => m[1]);
    expect(declared.length).toBeGreaterThan(10);
    expect([...new Set(cases.map((c) => c[0]))].sort()).toEqual([...declared].sort());
  });

  it("a terminated batch takes its terminal status whatever the threshold says; its summary keeps the threshold's outcome", () => {
    for (const as of ["cancelled", "failed"]) {
      const e = world();
      batchOf(e).terminateAs = as;
      batchOf(e).status = as;
      expect(rules(e), as).toEqual([]);
    }
    const e = world();
    batchOf(e).terminateAs = "cancelled";
    batchOf(e).status = "cancelled";
    batchOf(e).summary.outcome = "cancelled";
    expect(rules(e)).toEqual(["outcome_mismatch"]);
  });

  it("computes the outcome from the threshold rule itself, not from the code under test", () => {
    expect(expectedOutcome(5, 0, 0)).toBe("succeeded");
    expect(expectedOutcome(0, 0, 0.05)).toBe("succeeded");
    expect(expectedOutcome(20, 1, 0.05)).toBe("partial"); // exactly at the threshold
    expect(expectedOutcome(19, 1, 0.05)).toBe("failed"); // just above it
    expect(expectedOutcome(5, 5, 1)).toBe("partial");
    expect(expectedOutcome(5, 1, 0)).toBe("failed");
    const source = readFileSync(join(__dirname, "../../local/invariant.ts"), "utf8");
    expect(source).not.toMatch(/from "\.\.\/functions\/core/);
  });
});
