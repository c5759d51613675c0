// Fault injection (functions/faults.ts) is real configuration of the handlers, and impossible to
// switch on in a deployment: with NODE_ENV=production or on Cloud Run (K_SERVICE set) any
// TALLY_FAULT_* variable is refused, and so is an unknown one or a rate outside 0..1. The ledger
// honours each fault; off by default.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { FirestoreLedger } from "../../functions/adapters/firestoreLedger";
import { coordinatorKillSwitchFromEnv, faultsFromEnv, noFaults } from "../../functions/faults";
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

describe("the coordinator's one-shot kill token (chaos F4)", () => {
  it("is refused in a deployment and must be an absolute path", () => {
    expect(() =>
      faultsFromEnv({ K_SERVICE: "tally-coordinator", TALLY_FAULT_COORDINATOR_KILL_TOKEN: "/tmp/t" }),
    ).toThrow(/TALLY_FAULT_COORDINATOR_KILL_TOKEN\) is refused in a deployment/);
    expect(() => faultsFromEnv({ TALLY_FAULT_COORDINATOR_KILL_TOKEN: "token.json" })).toThrow(
      /TALLY_FAULT_COORDINATOR_KILL_TOKEN must be an absolute path \(got token\.json\)/,
    );
    expect(faultsFromEnv({ TALLY_FAULT_COORDINATOR_KILL_TOKEN: "/tmp/t" })).toEqual(noFaults);
    expect(coordinatorKillSwitchFromEnv({})).toBeUndefined();
  });

  it("asks only after a chunk store, and without a token (or for another batch) never kills", () => {
    const token = join(mkdtempSync(join(tmpdir(), "tally-kill-")), "token.json");
    const sw = coordinatorKillSwitchFromEnv({ TALLY_FAULT_COORDINATOR_KILL_TOKEN: token })!;
    expect(sw.points).toEqual(["afterChunkStore"]);
    expect(sw("afterChunkStore", "b1")).toBe(false);
    writeFileSync(token, JSON.stringify({ batchId: "b2", afterChunks: 1 }));
    expect(sw("afterChunkStore", "b1")).toBe(false);
    expect(sw("afterPublish", "b2")).toBe(false);
    expect(existsSync(token)).toBe(true);
  });

  it("refuses a token of the wrong shape, naming it, and kills nothing", () => {
    const token = join(mkdtempSync(join(tmpdir(), "tally-kill-")), "token.json");
    const sw = coordinatorKillSwitchFromEnv({ TALLY_FAULT_COORDINATOR_KILL_TOKEN: token })!;
    for (const bad of [
      { batchId: "b1" },
      { batchId: "b1", afterChunks: 0 },
      { batchId: 7, afterChunks: 1 },
      [1],
    ]) {
      writeFileSync(token, JSON.stringify(bad));
      expect(() => sw("afterChunkStore", "b1")).toThrow(
        /TALLY_FAULT_COORDINATOR_KILL_TOKEN: .*token\.json must hold \{"batchId": string, "afterChunks": integer ≥ 1\}, got /,
      );
      expect(existsSync(token)).toBe(true);
    }
  });

  it("SIGKILLs the process at the chosen chunk of the chosen batch, taking the token once", () => {
    const token = join(mkdtempSync(join(tmpdir(), "tally-kill-")), "token.json");
    writeFileSync(token, JSON.stringify({ batchId: "b1", afterChunks: 3 }));
    // A child process plays the coordinator: it reports each chunk before asking the switch.
    const script = `
      const { coordinatorKillSwitchFromEnv } = require(${JSON.stringify(join(__dirname, "..", "..", "functions", "faults.ts"))});
      const sw = coordinatorKillSwitchFromEnv(process.env);
      for (let chunk = 1; chunk <= 5; chunk++) {
        process.stdout.write("chunk " + chunk + "\\n");
        sw("afterChunkStore", "b1");
      }
      process.stdout.write("survived\\n");`;
    const run = () =>
      spawnSync(process.execPath, ["--import", "tsx", "-e", script], {
        env: { ...process.env, TALLY_FAULT_COORDINATOR_KILL_TOKEN: token },
        encoding: "utf8",
      });
    const killed = run();
    expect(killed.signal).toBe("SIGKILL");
    expect(killed.stdout.trim().split("\n")).toEqual(["chunk 1", "chunk 2", "chunk 3"]);
    expect(existsSync(token)).toBe(false);
    // The restarted process finds no token: the client's re-send is served.
    const restarted = run();
    expect(restarted.signal).toBeNull();
    expect(restarted.stdout).toContain("survived");
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
