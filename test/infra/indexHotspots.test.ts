// No index the stack leaves active takes sequential values at the item rate without a spread prefix
// (issue #16). Every index Firestore would maintain is listed — the declared composites and the
// automatic single-field indexes of every field the ledger writes, minus the program's exemptions —
// and each is walked key by key against how the ledger writes those fields
// (functions/adapters/firestore/layout.ts). The rule and its sources: test/support/indexHotspots.ts.
import { beforeAll, describe, expect, it } from "vitest";
import {
  batchFieldWrites,
  type FieldWrites,
  itemFieldWrites,
} from "../../functions/adapters/firestore/layout";
import { batchesCollection, itemsCollection } from "../../functions/adapters/firestoreIndexes";
import type { Bundle } from "../../infra/bundle/buildBundle";
import { MemoryLedger } from "../simulation/memoryLedger";
import { MemoryStore } from "../simulation/memoryStore";
import {
  type DeclaredIndex,
  declaredByProgram,
  type SingleFieldOverride,
} from "../support/firestoreIndexServing";
import { activeIndexes, describeActiveIndex, hotspots } from "../support/indexHotspots";
import { runStack } from "./support/pulumiMocks";

let declared: { indexes: DeclaredIndex[]; overrides: SingleFieldOverride[] };

beforeAll(async () => {
  const bundle: Bundle = {
    objectName: "functions-stand-in.zip",
    contentHash: "stand-in",
    zipPath: __filename,
    zipBytes: 0,
    stagingDir: "",
    files: [],
    dependencies: {},
  };
  const run = await runStack(
    { alertEmail: "ops@example.com", coordinatorInvokers: '["user:ana@example.com"]' },
    { bundle: () => bundle },
  );
  declared = declaredByProgram(run.resources);
});

const asc = (fieldPath: string) => ({ fieldPath, order: "ASCENDING" as const });
const desc = (fieldPath: string) => ({ fieldPath, order: "DESCENDING" as const });

/** The layout before issue #16 (commit c2739ec): its composites, exemptions and document ids. */
const oldLayout = {
  indexes: [
    { collection: "items", queryScope: "COLLECTION_GROUP", fields: [asc("status"), asc("leaseUntil")] },
    { collection: "items", queryScope: "COLLECTION_GROUP", fields: [asc("status"), asc("pendingSince")] },
    { collection: "items", queryScope: "COLLECTION", fields: [asc("status"), asc("seq")] },
    { collection: "items", queryScope: "COLLECTION", fields: [asc("status"), asc("generation"), asc("seq")] },
    { collection: "items", queryScope: "COLLECTION", fields: [asc("status"), asc("generation")] },
    { collection: "batches", queryScope: "COLLECTION", fields: [desc("createdAt"), desc("batchId")] },
    {
      collection: "batches",
      queryScope: "COLLECTION",
      fields: [asc("status"), desc("createdAt"), desc("batchId")],
    },
    { collection: "batches", queryScope: "COLLECTION", fields: [asc("status"), asc("progressAt")] },
  ] satisfies DeclaredIndex[],
  overrides: [
    { collection: "items", field: "expireAt", indexes: [] },
    { collection: "batches", field: "expireAt", indexes: [] },
  ] satisfies SingleFieldOverride[],
  itemFieldWrites: (() => {
    const { shard: _shard, ...rest } = itemFieldWrites;
    return {
      ...rest,
      __name__: {
        values: "sequential",
        rate: "per-item",
        writes: "appendItems: document id = the item id (positions 0, 1, … or client ids k1, k2, …)",
      },
    } satisfies Record<string, FieldWrites>;
  })(),
};

describe("index hotspots (issue #16)", () => {
  it("lists every index the stack leaves active on items", () => {
    const items = activeIndexes(itemsCollection, itemFieldWrites, declared.indexes, declared.overrides);
    expect(items.map(describeActiveIndex).sort()).toEqual(
      [
        "items (collection group) composite [status asc, shard asc, leaseUntil asc, __name__ asc]",
        "items (collection group) composite [status asc, shard asc, pendingSince asc, __name__ asc]",
        "items composite [shard asc, seq asc, __name__ asc]",
        "items composite [status asc, shard asc, seq asc, __name__ asc]",
        "items composite [status asc, generation asc, shard asc, seq asc, __name__ asc]",
        "items composite [shard asc, finishedAt asc, __name__ asc]",
        "items composite [status asc, generation asc, __name__ asc]",
        "items single-field [generation asc, __name__ asc]",
        "items single-field [generation desc, __name__ desc]",
        "items single-field [generation contains, __name__ asc]",
        "items single-field [status asc, __name__ asc]",
        "items single-field [status desc, __name__ desc]",
        "items single-field [status contains, __name__ asc]",
        "items single-field [error.kind asc, __name__ asc]",
        "items single-field [error.kind desc, __name__ desc]",
        "items single-field [error.kind contains, __name__ asc]",
      ].sort(),
    );
  });

  it("no index on items or batches takes sequential values at the item rate without a spread prefix", () => {
    const items = activeIndexes(itemsCollection, itemFieldWrites, declared.indexes, declared.overrides);
    expect(hotspots(itemsCollection, items, itemFieldWrites).map((h) => h.message)).toEqual([]);
    const batches = activeIndexes(batchesCollection, batchFieldWrites, declared.indexes, declared.overrides);
    expect(hotspots(batchesCollection, batches, batchFieldWrites).map((h) => h.message)).toEqual([]);
    // What stays on batches is ordered by per-batch values only (the capacity model bounds those).
    expect(batches.map(describeActiveIndex).sort()).toEqual(
      [
        "batches composite [createdAt desc, batchId desc, __name__ desc]",
        "batches composite [status asc, createdAt desc, batchId desc, __name__ desc]",
        "batches composite [status asc, createdAt asc, batchId asc, __name__ asc]",
        "batches composite [status asc, progressAt asc, __name__ asc]",
        "batches single-field [status asc, __name__ asc]",
        "batches single-field [status desc, __name__ desc]",
        "batches single-field [status contains, __name__ asc]",
        "batches single-field [dependsOn asc, __name__ asc]",
        "batches single-field [dependsOn desc, __name__ desc]",
        "batches single-field [dependsOn contains, __name__ asc]",
      ].sort(),
    );
  });

  it("fails on the old layout, naming each field and the write that makes it sequential", () => {
    const items = activeIndexes(
      itemsCollection,
      oldLayout.itemFieldWrites,
      oldLayout.indexes,
      oldLayout.overrides,
    );
    const found = hotspots(itemsCollection, items, oldLayout.itemFieldWrites);
    const byIndex = new Map(found.map((h) => [h.index, h]));
    // The reconciler's sweeps: one tail across all batches.
    expect(
      byIndex.get("items (collection group) composite [status asc, leaseUntil asc, __name__ asc]"),
    ).toMatchObject({
      field: "leaseUntil",
      writes: "leaseItem and heartbeat: now + leaseMs; release/complete: null",
      ranges: 1,
    });
    expect(
      byIndex.get("items (collection group) composite [status asc, pendingSince asc, __name__ asc]")?.message,
    ).toBe(
      "items (collection group) composite [status asc, pendingSince asc, __name__ asc]: items.pendingSince takes sequential values (appendItems (publishable), releaseItem, redriveItem, touchPending, resets: now) with no spread prefix: every write lands on one tail, ≤ 500 writes/s (across all batches)",
    );
    // Positions and timestamps indexed by default, and the document ids under every index.
    const fields = new Set(found.map((h) => h.field));
    for (const f of ["seq", "createdAt", "updatedAt", "finishedAt", "heartbeatAt", "itemId", "__name__"])
      expect(fields).toContain(f);
    expect(byIndex.get("items single-field [status asc, __name__ asc]")?.message).toContain(
      "the document id takes sequential values (appendItems: document id = the item id",
    );
    expect(byIndex.get("items composite [status asc, seq asc, __name__ asc]")?.field).toBe("seq");
  });

  it("fails a spread prefix with too few ranges, and a field nobody classified", () => {
    const fewShards = { ...itemFieldWrites, shard: { ...itemFieldWrites.shard!, ranges: 4 } };
    const items = activeIndexes(itemsCollection, fewShards, declared.indexes, declared.overrides);
    expect(hotspots(itemsCollection, items, fewShards).map((h) => h.message)).toContain(
      "items (collection group) composite [status asc, shard asc, leaseUntil asc, __name__ asc]: items.leaseUntil takes sequential values (leaseItem and heartbeat: now + leaseMs; release/complete: null) spread over only 4 ranges: every write lands on 4 tails, ≤ 2000 writes/s (across all batches)",
    );
    const { seq: _seq, ...unclassified } = itemFieldWrites;
    const again = activeIndexes(itemsCollection, unclassified, declared.indexes, declared.overrides);
    expect(hotspots(itemsCollection, again, unclassified).map((h) => h.message)).toContain(
      "items composite [shard asc, seq asc, __name__ asc]: items.seq is not classified in the ledger's field-write table",
    );
  });

  it("classifies every field the ledger writes on items and batches", async () => {
    // Drive every kind of write through the ledger's mirror (same documents as FirestoreLedger) and
    // collect the field paths stored.
    const store = new MemoryStore();
    const ledger = new MemoryLedger(store);
    const T0 = 1_700_000_000_000;
    const nb = { pipeline: "demo", failureThreshold: 0.5, dependsOn: [], contentHash: "h", total: null };
    await ledger.createBatch({ batchId: "b", ...nb }, T0);
    await ledger.appendItems(
      "b",
      0,
      [0, 1, 2, 3].map((i) => ({ itemId: `i${i}`, payload: { n: i } })),
      T0,
      {
        publishable: true,
      },
    );
    await ledger.markSubmitted("b", 4, T0 + 1);
    const ref = (itemId: string) => ({ batchId: "b", itemId, generation: 1 });
    await ledger.leaseItem(ref("i0"), "w", 60_000, 5, T0 + 2);
    await ledger.heartbeat(ref("i0"), "w", 60_000, T0 + 3);
    await ledger.checkpointStep(ref("i0"), "w", "s1", { ok: true }, T0 + 4);
    await ledger.completeItem(ref("i0"), "w", { r: 1 }, T0 + 5);
    await ledger.leaseItem(ref("i1"), "w", 60_000, 5, T0 + 2);
    await ledger.releaseItem(ref("i1"), "w", { kind: "transient", message: "again" }, T0 + 6);
    await ledger.failItem(ref("i1"), { kind: "permanent", message: "no" }, T0 + 7);
    await ledger.failItem(ref("i2"), { kind: "permanent", message: "no" }, T0 + 7);
    await ledger.failItem(ref("i3"), { kind: "permanent", message: "no" }, T0 + 7);
    const claim = await ledger.beginFinalizing("b", T0 + 10, 60_000);
    await ledger.recordExportFailure("b", claim!.finalizingAt!, "boom", T0 + 11, 1);
    await ledger.reExport("b", T0 + 12);
    const again = await ledger.beginFinalizing("b", T0 + 100_000, 60_000);
    const counts = { total: 4, pending: 0, running: 0, succeeded: 1, failed: 3 };
    await ledger.finishBatch(
      "b",
      { finalizingAt: again!.finalizingAt!, generation: 1 },
      { outcome: "failed", counts, failedByKind: {}, exportId: null, exportedRows: 1, durationMs: 1 },
      T0 + 100_001,
    );
    await ledger.beginRetry("b", T0 + 100_002);
    await ledger.resetFailedItems("b", 2, 10, T0 + 100_003);
    await ledger.requestTermination("b", "cancelled", "operator", T0 + 100_004);
    await ledger.cancelPendingItems("b", "operator", 10, T0 + 100_005);
    const paths = (data: Record<string, unknown>, prefix = ""): string[] =>
      Object.entries(data).flatMap(([k, v]) =>
        v && typeof v === "object" && !Array.isArray(v) && prefix === "" && (k === "error" || k === "summary")
          ? paths(v as Record<string, unknown>, `${k}.`)
          : [`${prefix}${k}`],
      );
    const itemFields = new Set<string>();
    const batchFields = new Set<string>();
    for (const [path, data] of store.entries())
      for (const f of paths(data as Record<string, unknown>))
        (path.includes("/items/") ? itemFields : batchFields).add(f);
    // A map field (error) is classified through its subfields; a null map has none to index.
    const classified = (table: Record<string, FieldWrites>, f: string) =>
      f in table || f.split(".")[0]! in table || Object.keys(table).some((k) => k.startsWith(`${f}.`));
    expect([...itemFields].filter((f) => !classified(itemFieldWrites, f))).toEqual([]);
    expect([...batchFields].filter((f) => !classified(batchFieldWrites, f))).toEqual([]);
    expect(itemFields).toContain("error.kind");
    expect(itemFields).toContain("shard");
  });
});
