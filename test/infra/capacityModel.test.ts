// The capacity model of bench/capacityModel.ts (issue #16): from the declared layout, no ceiling per
// batch or system-wide falls below 5,000 items/s; from the old layout (no shard prefix, sequential
// document ids, no exemptions) the same model finds the 500/s ceilings the issue describes.
import { describe, expect, it } from "vitest";
import { buildCapacityModel, rampOpsPerSecond, secondsFromCold } from "../../bench/capacityModel";
import { itemFieldWrites } from "../../functions/adapters/firestore/layout";

const asc = (fieldPath: string) => ({ fieldPath, order: "ASCENDING" as const });

describe("capacity model (issue #16)", () => {
  it("the declared layout has no ceiling below 5,000 items/s, per batch or system-wide", () => {
    const m = buildCapacityModel();
    expect(m.belowFloor).toEqual([]);
    for (const s of Object.values(m.summary)) {
      expect(s.perBatch).toBeGreaterThanOrEqual(5_000);
      expect(s.system).toBeGreaterThanOrEqual(5_000);
    }
    // A shared warm collection finishes a million items in minutes; per-batch collections ramp.
    const million = m.fromCold.find((c) => c.items === 1_000_000)!;
    expect(million.sharedWarmCollectionSeconds).toBeLessThan(million.perBatchCollectionsSeconds);
  });

  it("the old layout is capped at 500 items/s", () => {
    const { shard: _shard, ...rest } = itemFieldWrites;
    const m = buildCapacityModel({
      composites: [
        { collection: "items", queryScope: "COLLECTION_GROUP", fields: [asc("status"), asc("leaseUntil")] },
        { collection: "items", queryScope: "COLLECTION_GROUP", fields: [asc("status"), asc("pendingSince")] },
        { collection: "items", queryScope: "COLLECTION", fields: [asc("status"), asc("seq")] },
      ],
      overrides: [{ collection: "items", field: "expireAt", indexes: [] }],
      writes: {
        ...rest,
        __name__: { values: "sequential", rate: "per-item", writes: "document id = item id" },
      },
    });
    expect(m.summary.submitted).toEqual({ perBatch: 500, system: 500 });
    expect(m.summary.leased.system).toBe(500);
    expect(m.belowFloor.length).toBeGreaterThan(0);
  });

  it("ramps 500 ops/s by half every five minutes", () => {
    expect(rampOpsPerSecond(0)).toBe(500);
    expect(rampOpsPerSecond(299)).toBe(500);
    expect(rampOpsPerSecond(300)).toBe(750);
    expect(rampOpsPerSecond(600)).toBe(1_125);
    // 500 ops/s at 5 ops an item: 100 items/s for the first five minutes.
    expect(secondsFromCold(30_000, 5, Number.POSITIVE_INFINITY)).toBe(300);
    expect(secondsFromCold(8_000, 1, 8_000, false)).toBe(1);
  });
});
