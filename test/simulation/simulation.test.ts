// The deterministic simulation of the batch lifecycle (simulator.ts): thousands of seeds, each a
// different interleaving of submissions, deliveries, crashes, sweeps, cancels, retries and failed
// exports, must hold the ledger invariant at every commit and settle with every batch final. A
// failing seed prints itself, its violations and the trace up to the first one; it replays exactly
// with `npm run simulate -- --seed N`.
//
// The fence is shown to matter: without it (MemoryLedger's `{ fence: false }`) the simulator finds
// issue #15's interleavings — a paused stream's chunk stored after its batch was ended as
// incomplete and finalized (item 1), a slow retry's page reset after the reconciler took the retry
// for dead and the batch was finalized (item 2), and the same with a cancel mid-retry — and with it
// the same seeds hold. Likewise without the position count (MemoryLedger's `{ countPositions: false }`)
// it finds two clients of one batch id leaving two items at one position (item 10: rival
// submissions and appends at one offset), and with it the same seed holds.
//
// Submissions go through the shorthand or through open / append / seal (the handlers' own
// appendToBatch and sealBatch), some with a rival client; those shapes come from a generator of
// their own, so the kept seeds below run with them off exactly as when they were found.
import { describe, expect, it } from "vitest";
import { formatResult, type SimResult, simulate } from "./simulator";

/** Seeds per `npm test` run (about 4 ms each on an idle core). */
const seeds = Number(process.env.TALLY_SIM_SEEDS ?? 3000);

/** Seeds found by `npm run simulate -- --find <item>`, kept as regression tests. */
const kept = { item1: 21, item2: 65, item2Cancel: 133 } as const;
/** Found with appends and rivals on (`npm run simulate -- --find item10`). */
const keptItem10 = 437;
/**
 * The known gap of item 10 (docs/api.md): a request that stored its items beside a rival's and died
 * between its count and its withdrawal leaves two items at one position. Runs whose only violation
 * is that are reported, not failed, up to this share of the runs with a rival; seed 2860 is one.
 */
const knownGapSeed = 2860;
const knownGapShare = 0.01;
const onlyKnownGap = (r: SimResult) =>
  r.violations.length > 0 && r.violations.every((v) => v.code === "shared_position") && r.shapes.rivals > 0;
/** If a change of the code under test moves a kept seed's interleaving, a new one is searched for here. */
const searchLimit = 2000;

describe("deterministic simulation of the batch lifecycle", () => {
  it(`holds the invariant and settles every batch, over ${seeds} seeds`, async () => {
    const failures: SimResult[] = [];
    const started = Date.now();
    let steps = 0;
    const shapes = { appends: 0, rivals: 0 };
    const knownGap: number[] = [];
    let withRivals = 0;
    for (let seed = 1; seed <= seeds; seed++) {
      const r = await simulate({ seed });
      steps += r.steps;
      shapes.appends += r.shapes.appends;
      shapes.rivals += r.shapes.rivals;
      if (r.shapes.rivals > 0) withRivals++;
      if (onlyKnownGap(r)) knownGap.push(seed);
      else if (r.violations.length > 0 || r.ended !== "settled") failures.push(r);
      if (failures.length >= 3) break;
    }
    for (const f of failures) console.error(`${formatResult(f)}\n`);
    console.log(
      `simulation: ${seeds} seeds, ${steps} steps, ${Date.now() - started} ms; ${shapes.appends} batches by open/append/seal, ${shapes.rivals} with a rival client`,
    );
    if (knownGap.length > 0)
      console.warn(
        `known gap of issue #15 item 10 (two items left at one position by a request that died between its count and its withdrawal): seeds ${knownGap.join(", ")} of ${withRivals} runs with a rival`,
      );
    expect(knownGap.length).toBeLessThanOrEqual(Math.ceil(withRivals * knownGapShare));
    expect(shapes.appends).toBeGreaterThan(seeds / 10);
    expect(shapes.rivals).toBeGreaterThan(seeds / 20);
    expect(
      failures.map((f) => `seed ${f.seed}: ${f.ended}, ${f.violations.map((v) => v.code).join(", ")}`),
    ).toEqual([]);
  }, 240_000);

  it("replays a seed exactly", async () => {
    for (const seed of [7, kept.item1, kept.item2]) {
      const a = await simulate({ seed, fence: false, stopAtFirstViolation: false });
      const b = await simulate({ seed, fence: false, stopAtFirstViolation: false });
      expect({ steps: b.steps, hash: b.hash, violations: b.violations }).toEqual({
        steps: a.steps,
        hash: a.hash,
        violations: a.violations,
      });
    }
  });

  // Two bugs the simulator found in the fenced code, fixed, kept as regression seeds (the sweep above
  // runs with the same faults: processes frozen for minutes, dependent batches).
  //
  // Seed 5142: `Ledger.finishBatch` was conditioned only on the batch being `finalizing`, not on the
  // caller's claim or generation. A reconciler re-ran a stale generation-1 claim, exported and
  // verified, then froze for minutes before finishBatch; meanwhile its claim was taken over,
  // generation 1 finalized, an operator retried (generation 2), and generation 2's claim was
  // released after a failed export (`finalizing`, backing off). The frozen finalizer woke and
  // finished generation 2 with generation 1's summary (seed 8786: a cancelled retry whose generation
  // had no export at all). Now finishBatch takes the claim and generation (batchFence.mayFinishBatch).
  //
  // Seed 13: SubmissionWriter.writeChunk started the cursor write even when the batch was not being
  // published (blocked on a dependency): the cursor moved over stored items whose publish was
  // skipped, and once the batch was unblocked publishFromCursor started past them; stored
  // unpublishable (pendingSince null), the stale-pending sweep never found them either, and the
  // batch stayed `running` for ever. Now only a publishing writer moves the cursor.
  //
  // Seed 199 (found once the sweep ran with these faults): a blocked batch's coordinator died after
  // storing items; the batch was started; the client's re-submission published the stored items,
  // one doorbell was lost, and the item, stored unpublishable (pendingSince null), was never found by
  // the stale-pending sweep. Now a re-submission marks the items it publishes but did not store.
  for (const [seed, what] of [
    [5142, "a frozen generation-1 finalizer cannot finish generation 2"],
    [8786, "a frozen finalizer cannot finish a cancelled retry that was never exported"],
    [13, "a blocked stream's cursor stays behind its unpublished items, which run once unblocked"],
    [199, "a re-submission's publish of items stored while blocked survives a lost doorbell"],
  ] as const) {
    it(`seed ${seed}: ${what}`, async () => {
      const r = await simulate({ seed, appendsAndRivals: false });
      expect(r.violations.map((v) => v.code)).toEqual([]);
      expect(r.ended).toBe("settled");
    });
  }

  for (const item of ["item1", "item2", "item2Cancel"] as const) {
    it(`finds issue #15 ${item} without the fence (seed ${kept[item]}); the fenced run of that seed holds`, async () => {
      let found: SimResult | null = null;
      for (const seed of [kept[item], ...Array.from({ length: searchLimit }, (_, i) => i + 1)]) {
        const r = await simulate({
          seed,
          fence: false,
          appendsAndRivals: false,
          stopAtFirstViolation: false,
        });
        if (r.issue15[item]) {
          found = r;
          break;
        }
      }
      expect(
        found,
        `no seed up to ${searchLimit} reproduces issue #15 ${item} without the fence`,
      ).not.toBeNull();
      if (found!.seed !== kept[item])
        console.warn(
          `issue #15 ${item}: seed ${kept[item]} no longer reproduces it; seed ${found!.seed} does`,
        );
      const codes = new Set(found!.violations.map((v) => v.code));
      expect(codes.has(item === "item1" ? "created_after_claim" : "reset_after_claim")).toBe(true);
      expect(codes.has("missing_row") || codes.has("live_in_final")).toBe(true);
      const fenced = await simulate({ seed: found!.seed, fence: true, appendsAndRivals: false });
      if (fenced.violations.length > 0) console.error(formatResult(fenced));
      expect(fenced.violations).toEqual([]);
      expect(fenced.ended).toBe("settled");
    }, 120_000);
  }

  it(`finds issue #15 item 10 without the position count (seed ${keptItem10}); the counted run of that seed holds`, async () => {
    let found: SimResult | null = null;
    for (const seed of [keptItem10, ...Array.from({ length: searchLimit }, (_, i) => i + 1)]) {
      const r = await simulate({ seed, countPositions: false, stopAtFirstViolation: false });
      if (r.issue15.item10) {
        found = r;
        break;
      }
    }
    expect(found, `no seed up to ${searchLimit} leaves two items at one position`).not.toBeNull();
    if (found!.seed !== keptItem10)
      console.warn(`issue #15 item10: seed ${keptItem10} no longer reproduces it; seed ${found!.seed} does`);
    expect(found!.shapes.rivals).toBeGreaterThan(0);
    const counted = await simulate({ seed: found!.seed });
    if (counted.violations.length > 0) console.error(formatResult(counted));
    expect(counted.violations).toEqual([]);
    expect(counted.ended).toBe("settled");
  }, 120_000);

  it(`seed ${knownGapSeed} shows the known gap of item 10 as documented, and nothing else`, async () => {
    const r = await simulate({ seed: knownGapSeed, stopAtFirstViolation: false });
    // If this fails because the run now holds, the gap is closed: drop the allowance above.
    expect(r.violations.map((v) => v.code)).toEqual(["shared_position"]);
    const trace = r.trace.join("\n");
    expect(trace).toMatch(/rival-coordinator-b0#\d+ count batches\/b0\/items/);
    expect(trace).toMatch(/rival-coordinator-b0#\d+ CRASHED/);
    // Neither item ever ran: the batch failed as an incomplete submission, both items cancelled.
    expect(r.violations[0]!.batchStatus).toBe("failed");
  });
});
