// Item document ids and shards spread evenly whatever ids clients choose (issue #16): the shard is
// the first hex digit of the id's hash, and each shard is one tail of every sharded index, so an
// uneven digit makes one tail take more than its share of the 500 writes/s a sequential range gets.
// The bound: 16,000 ids, each shard within 1,000 ± 5σ (σ ≈ 30.6 for a uniform hash). The control
// shows the check fails on the layout before (FNV-1a's first digit, unfinalized).
import { describe, expect, it } from "vitest";
import { itemKey, itemShards } from "../../functions/adapters/firestore/layout";

const ids = 16_000;
const mean = ids / itemShards;
const sigma = Math.sqrt(ids * (1 / itemShards) * (1 - 1 / itemShards));
const idStyles: Record<string, (i: number) => string> = {
  positions: (i) => String(i),
  "k1, k2, …": (i) => `k${i}`,
  "zero-padded": (i) => `item-${String(i).padStart(6, "0")}`,
  uuids: (i) =>
    `${i.toString(16).padStart(8, "0")}-6f1c-4b7a-9d2e-${(i * 7919).toString(16).padStart(12, "0")}`,
};

/** Shards whose count is outside mean ± 5σ, as "shard k: n". */
function unevenShards(shardOf: (itemId: string) => number, idOf: (i: number) => string): string[] {
  const counts = new Array<number>(itemShards).fill(0);
  for (let i = 0; i < ids; i++) counts[shardOf(idOf(i))]!++;
  return counts.flatMap((n, k) => (Math.abs(n - mean) > 5 * sigma ? [`shard ${k}: ${n}`] : []));
}

describe("item keys spread over the shards (firestore/layout.ts itemKey)", () => {
  for (const [style, idOf] of Object.entries(idStyles))
    it(`ids as ${style}: every shard within ${mean} ± 5σ`, () => {
      expect(unevenShards((id) => itemKey("batch-7", id).shard, idOf)).toEqual([]);
    });

  it("the shard is the document id's first hex digit, and ids stay unique", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const { docId, shard } = itemKey("batch-7", String(i));
      expect(docId).toMatch(/^[0-9a-f]{8}-/);
      expect(Number.parseInt(docId[0]!, 16)).toBe(shard);
      seen.add(docId);
    }
    expect(seen.size).toBe(2000);
  });

  it("control: the check fails on FNV-1a's first digit, the layout before", () => {
    const fnv1a = (text: string) => {
      let h = 0x811c9dc5;
      for (let i = 0; i < text.length; i++) {
        h ^= text.charCodeAt(i);
        h = Math.imul(h, 0x01000193);
      }
      return h >>> 0;
    };
    const oldShard = (id: string) => fnv1a(`batch-7\u0000${id}`) >>> 28;
    expect(unevenShards(oldShard, idStyles.positions!).length).toBeGreaterThan(0);
  });
});
