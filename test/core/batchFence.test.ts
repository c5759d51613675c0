// The fence's second fact (functions/core/batchFence.ts): no single batch snapshot admits both an
// item-creating or item-resetting write and a finalization claim. Checked over every combination of
// the fields the decisions read, so a new state or a loosened rule that overlaps fails here.
import { describe, expect, it } from "vitest";
import {
  mayBeginRetry,
  mayClaimFinalization,
  mayCreateItems,
  mayRequestTermination,
  mayResetItems,
} from "../../functions/core/batchFence";
import { type Batch, batchStatuses } from "../../functions/core/model";

const base: Batch = {
  batchId: "b",
  pipeline: "demo",
  status: "submitting",
  total: null,
  received: 0,
  cursor: 0,
  submissionComplete: false,
  failureThreshold: 0.05,
  dependsOn: [],
  contentHash: "h",
  generation: 1,
  reason: null,
  terminateAs: null,
  createdAt: 0,
  updatedAt: 0,
  progressAt: 0,
  startedAt: null,
  finalizingAt: null,
  finishedAt: null,
  summary: null,
};

function* snapshots(): Generator<Batch> {
  for (const status of batchStatuses)
    for (const terminateAs of [null, "cancelled", "failed"] as const)
      for (const submissionComplete of [false, true])
        for (const generation of [1, 2, 3])
          for (const finalizingAt of [null, 0, 1_000, 1_000_000])
            for (const exportFailedAt of [null, 5])
              for (const nextExportAt of [null, 2_000_000])
                yield {
                  ...base,
                  status,
                  terminateAs,
                  submissionComplete,
                  generation,
                  finalizingAt,
                  exportFailedAt,
                  nextExportAt,
                };
}

describe("batch fence decisions", () => {
  it("no snapshot admits both a fenced write and a finalization claim", () => {
    let checked = 0;
    const overlaps: string[] = [];
    for (const b of snapshots()) {
      for (const now of [0, 1_000_000, 10_000_000]) {
        const claim = mayClaimFinalization(b, now, 60_000).ok;
        const create = mayCreateItems(b).ok;
        const reset = [1, 2, 3].some((g) => mayResetItems(b, g).ok);
        if (claim && (create || reset)) overlaps.push(JSON.stringify(b));
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(5_000);
    expect(overlaps).toEqual([]);
  });

  it("admits item creation only while the first generation is open", () => {
    expect(mayCreateItems(base)).toEqual({ ok: true });
    expect(mayCreateItems({ ...base, status: "blocked" })).toEqual({ ok: true });
    expect(mayCreateItems({ ...base, submissionComplete: true, total: 3 })).toMatchObject({ ok: false });
    expect(mayCreateItems({ ...base, terminateAs: "failed", reason: "incomplete_submission" })).toMatchObject(
      {
        ok: false,
        reason: expect.stringContaining("incomplete_submission"),
      },
    );
    for (const status of ["running", "finalizing", "succeeded", "partial", "failed", "cancelled"] as const)
      expect(mayCreateItems({ ...base, status }).ok).toBe(false);
    expect(mayCreateItems({ ...base, generation: 2 }).ok).toBe(false);
  });

  it("admits resets only into the retry generation while it is submitting", () => {
    const retrying = { ...base, generation: 2, submissionComplete: true };
    expect(mayResetItems(retrying, 2)).toEqual({ ok: true });
    expect(mayResetItems(retrying, 3).ok).toBe(false);
    expect(mayResetItems({ ...retrying, status: "running" }, 2).ok).toBe(false);
    expect(mayResetItems({ ...retrying, terminateAs: "cancelled" }, 2).ok).toBe(false);
    expect(mayResetItems(base, 1).ok).toBe(false);
  });

  it("claims: running, terminated before start, or a stale claim not given up after failed exports", () => {
    expect(mayClaimFinalization({ ...base, status: "running" }, 0, 60_000).ok).toBe(true);
    expect(mayClaimFinalization(base, 0, 60_000).ok).toBe(false);
    expect(mayClaimFinalization({ ...base, terminateAs: "cancelled" }, 0, 60_000).ok).toBe(true);
    const finalizing = { ...base, status: "finalizing" as const, finalizingAt: 100_000 };
    expect(mayClaimFinalization(finalizing, 150_000, 60_000).ok).toBe(false);
    expect(mayClaimFinalization(finalizing, 160_001, 60_000).ok).toBe(true);
    expect(
      mayClaimFinalization({ ...finalizing, finalizingAt: 0, nextExportAt: 200_000 }, 199_999, 60_000).ok,
    ).toBe(false);
    expect(
      mayClaimFinalization({ ...finalizing, finalizingAt: 0, nextExportAt: 200_000 }, 200_000, 60_000).ok,
    ).toBe(true);
    expect(mayClaimFinalization({ ...finalizing, finalizingAt: 0, exportFailedAt: 1 }, 9e12, 60_000).ok).toBe(
      false,
    );
  });

  it("termination is refused once finalization was claimed or the batch is final", () => {
    expect(mayRequestTermination(base).ok).toBe(true);
    expect(mayRequestTermination({ ...base, status: "running" }).ok).toBe(true);
    expect(mayRequestTermination({ ...base, status: "finalizing" })).toMatchObject({
      ok: false,
      reason: expect.stringContaining("finalizing"),
    });
    for (const status of ["succeeded", "partial", "failed", "cancelled"] as const)
      expect(mayRequestTermination({ ...base, status }).ok).toBe(false);
  });

  it("retry only for a batch that ran to an outcome with failures", () => {
    const counts = { total: 2, pending: 0, running: 0, succeeded: 1, failed: 1 };
    const summary = {
      outcome: "failed" as const,
      counts,
      failedByKind: {},
      exportId: null,
      exportedRows: 1,
      durationMs: 1,
    };
    expect(mayBeginRetry({ ...base, status: "failed", summary }).ok).toBe(true);
    expect(mayBeginRetry({ ...base, status: "running", summary }).ok).toBe(false);
    expect(mayBeginRetry({ ...base, status: "cancelled", terminateAs: "cancelled", summary }).ok).toBe(false);
    expect(
      mayBeginRetry({
        ...base,
        status: "failed",
        terminateAs: "failed",
        reason: "dependency failed",
        summary,
      }).ok,
    ).toBe(false);
    expect(
      mayBeginRetry({
        ...base,
        status: "succeeded",
        summary: { ...summary, counts: { ...counts, failed: 0 } },
      }).ok,
    ).toBe(false);
  });
});
