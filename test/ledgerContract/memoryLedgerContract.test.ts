// The Ledger contract (ledgerContract.ts) against the simulator's MemoryLedger over its in-memory
// store: the same assertions FirestoreLedger passes on the emulator (firestoreLedgerContract.test.ts),
// so the simulator's model of the store cannot drift from Firestore unnoticed. Below the contract:
// what the `{ fence: false }` control variant gives up, which is what the simulator relies on to
// show that the fence matters.
import { describe, expect, it } from "vitest";
import { MemoryLedger } from "../simulation/memoryLedger";
import { fieldsOf, MemoryStore, StoreClient, type Write } from "../simulation/memoryStore";
import { runLedgerContract } from "./ledgerContract";
import { runStoreContract } from "./storeContract";

runLedgerContract("MemoryLedger over the in-memory store", async () => {
  const store = new MemoryStore();
  return { newLedger: () => new MemoryLedger(store) };
});

runStoreContract("the in-memory store", async () => {
  const store = new MemoryStore();
  const client = new StoreClient(store);
  return {
    async get(path) {
      const snap = await client.get(path);
      return {
        exists: snap.exists,
        data: snap.data as Record<string, unknown> | undefined,
        updateTime: snap.updateTime,
      };
    },
    async commit(writes) {
      const out: Write[] = writes.map((w) =>
        w.op === "create"
          ? { op: "create", path: w.path, data: w.data }
          : {
              op: "update",
              path: w.path,
              fields: fieldsOf(w.data),
              ...(w.lastUpdateTime !== undefined ? { lastUpdateTime: w.lastUpdateTime as number } : {}),
            },
      );
      return (await client.commit(out)).updateTimes;
    },
    async readModifyWrite(path, next) {
      let attempts = 0;
      await client.runTransaction(
        async (tx) => {
          attempts++;
          const snap = await tx.get(path);
          tx.update(path, next({ ...(snap.data ?? {}) }));
        },
        { maxAttempts: 25 },
      );
      return attempts;
    },
    async query(q) {
      return (await client.query(q)).map((d) => d.id);
    },
    async count(q) {
      return client.count(q);
    },
    sameTime: (a, b) => a === b,
  };
});

describe("MemoryLedger without the fence write (the simulator's control)", () => {
  const T0 = 1_700_000_000_000;
  const header = { pipeline: "demo", failureThreshold: 0.05, dependsOn: [], contentHash: "h", total: null };
  const items = (from: number, n: number) =>
    Array.from({ length: n }, (_, i) => ({ itemId: `i${from + i}`, payload: { n: from + i } }));

  it("stores a chunk whose cached batch read predates a termination by another process", async () => {
    const store = new MemoryStore();
    const coordinator = new MemoryLedger(store, { fence: false });
    const reconciler = new MemoryLedger(store);
    await coordinator.createBatch({ batchId: "b", ...header }, T0);
    await coordinator.appendItems("b", 0, items(0, 2), T0, { publishable: true, deferReceived: true });
    await reconciler.requestTermination("b", "failed", "incomplete_submission: paused", T0 + 1);
    await coordinator.appendItems("b", 2, items(2, 1), T0 + 2, { publishable: true, deferReceived: true });
    expect(await reconciler.getItem("b", "i2")).toMatchObject({ status: "pending" });
  });

  it("still decides on a fresh read: a chunk for a batch it sees terminated is refused", async () => {
    const store = new MemoryStore();
    const coordinator = new MemoryLedger(store, { fence: false });
    await coordinator.createBatch({ batchId: "b", ...header }, T0);
    await coordinator.requestTermination("b", "failed", "incomplete_submission: paused", T0 + 1);
    await expect(
      coordinator.appendItems("b", 0, items(0, 1), T0 + 2, { publishable: true, deferReceived: true }),
    ).rejects.toThrow(/accepts no more items/);
  });
});
