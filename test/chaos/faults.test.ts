// Fault injection (functions/faults.ts) is real configuration of the handlers, and impossible to
// switch on in a deployment: with NODE_ENV=production or on Cloud Run (K_SERVICE set) any
// TALLY_FAULT_* variable is refused, and so is an unknown one or a rate outside 0..1. The ledger
// honours each fault; off by default.
import { describe, expect, it } from "vitest";
import { FirestoreLedger } from "../../functions/adapters/firestoreLedger";
import { faultsFromEnv, noFaults } from "../../functions/faults";
import { testFirestore, uniqueProjectId } from "../support/cloud";

describe("fault injection configuration", () => {
  it("is off without TALLY_FAULT_* variables (empty ones included)", () => {
    expect(faultsFromEnv({})).toEqual(noFaults);
    expect(faultsFromEnv({ TALLY_FAULT_COMPLETE_FAIL_RATE: "", NODE_ENV: "production" })).toEqual(noFaults);
  });

  it("reads each fault's rate", () => {
    expect(
      faultsFromEnv({
        TALLY_FAULT_COMPLETE_FAIL_RATE: "0.3",
        TALLY_FAULT_COMPLETE_FAIL_AFTER_COMMIT_RATE: "0.2",
        TALLY_FAULT_SKIP_FINALIZE_RATE: "1",
      }),
    ).toEqual({ failCompletionRate: 0.3, failAfterCompletionRate: 0.2, skipFinalizeRate: 1 });
  });

  it.each([
    ["NODE_ENV=production", { NODE_ENV: "production" }],
    ["Cloud Run (K_SERVICE)", { K_SERVICE: "tally-worker" }],
  ])("refuses every fault in a deployment: %s", (_name, deployment) => {
    for (const name of [
      "TALLY_FAULT_COMPLETE_FAIL_RATE",
      "TALLY_FAULT_COMPLETE_FAIL_AFTER_COMMIT_RATE",
      "TALLY_FAULT_SKIP_FINALIZE_RATE",
    ])
      expect(() => faultsFromEnv({ ...deployment, [name]: "0.5" })).toThrow(
        new RegExp(`fault injection \\(${name}\\) is refused in a deployment`),
      );
  });

  it("refuses an unknown fault and a rate outside 0..1, naming each", () => {
    expect(() =>
      faultsFromEnv({
        TALLY_FAULT_COMPLETE_FAIL_RATE: "1.5",
        TALLY_FAULT_SKIP_FINALIZE_RATE: "often",
        TALLY_FAULT_TYPO: "1",
      }),
    ).toThrow(
      /TALLY_FAULT_TYPO is not a fault this build knows.*TALLY_FAULT_COMPLETE_FAIL_RATE must be in 0\.\.1 \(got 1\.5\).*TALLY_FAULT_SKIP_FINALIZE_RATE must be in 0\.\.1 \(got often\)/,
    );
  });
});

describe("faults in the ledger adapter", () => {
  const db = testFirestore(uniqueProjectId("faults"));
  const batch = {
    pipeline: "demo",
    failureThreshold: 0.05,
    dependsOn: [],
    contentHash: "h",
    total: 1,
  };

  async function oneRunningItem(ledger: FirestoreLedger, batchId: string) {
    const now = Date.now();
    await ledger.createBatch({ ...batch, batchId }, now);
    await ledger.appendItems(batchId, 0, [{ itemId: "i1", payload: {} }], now, { publishable: true });
    await ledger.markSubmitted(batchId, 1, now);
    const ref = { batchId, itemId: "i1", generation: 1 };
    const lease = await ledger.leaseItem(ref, "owner", 60_000, 5, now);
    expect(lease.kind).toBe("leased");
    return ref;
  }

  it("fails completion writes at TALLY_FAULT_COMPLETE_FAIL_RATE, leaving the item running without a result", async () => {
    const ledger = new FirestoreLedger(db, { failCompletionRate: 1 });
    const ref = await oneRunningItem(ledger, "complete-fault");
    await expect(ledger.completeItem(ref, "owner", { ok: true }, Date.now())).rejects.toThrow(
      /injected fault: completion write failed/,
    );
    const item = await ledger.getItem(ref.batchId, ref.itemId);
    expect(item?.status).toBe("running");
    expect(item?.result ?? null).toBeNull();
  });

  it("commits completions and then fails them at TALLY_FAULT_COMPLETE_FAIL_AFTER_COMMIT_RATE: the item succeeded with the result, the caller saw an error", async () => {
    const ledger = new FirestoreLedger(db, { failAfterCompletionRate: 1 });
    const ref = await oneRunningItem(ledger, "complete-after-commit-fault");
    await expect(ledger.completeItem(ref, "owner", { ok: true }, Date.now())).rejects.toThrow(
      /injected fault: the completion committed, then its answer was lost/,
    );
    const item = await ledger.getItem(ref.batchId, ref.itemId);
    expect(item).toMatchObject({ status: "succeeded", result: { ok: true }, lease: null });
    // Only a completion that committed fails: a late duplicate's is skipped, and answered as such.
    expect(await ledger.completeItem(ref, "owner", { ok: false }, Date.now())).toMatchObject({
      kind: "skip",
      reason: "terminal",
    });
    expect((await ledger.getItem(ref.batchId, ref.itemId))?.result).toEqual({ ok: true });
  });

  it("answers 'anything left?' with yes at TALLY_FAULT_SKIP_FINALIZE_RATE; off by default", async () => {
    const faulty = new FirestoreLedger(db, { skipFinalizeRate: 1 });
    const plain = new FirestoreLedger(db);
    const ref = await oneRunningItem(plain, "finalize-fault");
    expect((await plain.completeItem(ref, "owner", { ok: true }, Date.now())).kind).toBe("done");
    expect(await plain.hasLiveItems(ref.batchId)).toBe(false);
    expect(await faulty.hasLiveItems(ref.batchId)).toBe(true);
  });
});
