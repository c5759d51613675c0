// Capacity model (issue #16): what production Firestore would allow the declared layout, from the
// layout itself and Firestore's published limits — a model, not a measurement (the emulator has no
// indexes, tablets or hotspots). Inputs: the composite indexes and single-field exemptions the stack
// declares (functions/adapters/firestoreIndexes.ts), how the ledger writes each item field
// (functions/adapters/firestore/layout.ts), and the Firestore operations per item the bench measures.
//
// Published limits used (read 2026-12-05):
// - 500 writes/s to a collection whose indexed field increases sequentially (one index range's tail);
//   "Sharded timestamps", https://firebase.google.com/docs/firestore/solutions/shard-timestamp, and
//   best practices, https://cloud.google.com/firestore/docs/best-practices ("Indexes", "Hotspots").
// - Ramp-up: at most 500 operations/s to a new collection, then +50% every 5 minutes (the "500/50/5"
//   rule), best practices, "Ramping up traffic"; lexicographically close documents likewise.
// - No monotonically increasing document ids (best practices, "Document IDs").
// - Per database (Standard edition): no fixed write ceiling is published; Firestore scales
//   automatically as long as the traffic is spread (quotas page, https://cloud.google.com/firestore/quotas,
//   lists per-request limits: 500 writes per commit, 10 MiB per request). The model takes none.
import { type FieldWrites, itemFieldWrites, itemShards } from "../functions/adapters/firestore/layout";
import {
  firestoreIndexExemptions,
  firestoreIndexes,
  firestoreTtlFields,
  itemsCollection,
} from "../functions/adapters/firestoreIndexes";
import type { DeclaredIndex, SingleFieldOverride } from "../test/support/firestoreIndexServing";
import {
  activeIndexes,
  describeActiveIndex,
  indexWrites,
  minimumItemsPerSecond,
  sequentialRangeWritesPerSecond,
} from "../test/support/indexHotspots";

export const firestoreLimits = {
  sequentialRangeWritesPerSecond,
  rampStartOpsPerSecond: 500,
  rampGrowth: 1.5,
  rampStepSeconds: 300,
  readDate: "2026-12-05",
} as const;

export type Phase = "submitted" | "leased" | "completed";

/** The item fields each phase gives a new value (the index entries that move). */
export const phaseWrites: Record<Phase, string[]> = {
  // Creation: every field gets its first entry in every index.
  submitted: Object.keys(itemFieldWrites),
  leased: ["status", "attempt", "leaseOwner", "leaseUntil", "startedAt", "pendingSince", "updatedAt"],
  completed: ["status", "result", "finishedAt", "leaseOwner", "leaseUntil", "updatedAt", "steps"],
};

export interface Ceiling {
  phase: Phase;
  /** per-batch: one batch's items collection; system: every batch at once (collection-group index). */
  scope: "per-batch" | "system";
  itemsPerSecond: number;
  /** The index and field that set it. */
  limitedBy: string;
}

export interface CapacityModel {
  layout: string;
  shards: number;
  opsPerItem: number;
  ceilings: Ceiling[];
  /** The lowest ceiling per phase and scope (Infinity: the layout sets none). */
  summary: Record<Phase, { perBatch: number; system: number }>;
  /** Seconds to submit and finish a batch of n items from cold, per collection choice. */
  fromCold: Array<{ items: number; perBatchCollectionsSeconds: number; sharedWarmCollectionSeconds: number }>;
  belowFloor: string[];
}

/** The overrides the stack declares: the exemptions and the TTL fields (both with an empty indexConfig). */
export function declaredOverrides(): SingleFieldOverride[] {
  return [...firestoreIndexExemptions, ...firestoreTtlFields].map((f) => ({
    collection: f.collection,
    field: f.field,
    indexes: [],
  }));
}

/**
 * Ceilings from the layout: for every active index on items with a per-item sequential field, each
 * phase that moves one of its entries is capped at 500 writes/s × the ranges its spread prefix gives.
 * A collection-group index caps the whole system; a collection-scope one, each batch's collection.
 */
export function layoutCeilings(
  composites: DeclaredIndex[],
  overrides: SingleFieldOverride[],
  writes: Record<string, FieldWrites> = itemFieldWrites,
): Ceiling[] {
  const out: Ceiling[] = [];
  for (const index of activeIndexes(itemsCollection, writes, composites, overrides)) {
    const w = indexWrites(index, writes);
    if (!w.sequential || w.sequential.rate !== "per-item") continue;
    const fields = index.fields.map((f) => f.field);
    for (const phase of Object.keys(phaseWrites) as Phase[]) {
      const moved = phaseWrites[phase].some((f) => fields.includes(f)) || phase === "submitted";
      if (!moved) continue;
      out.push({
        phase,
        scope: index.scope === "COLLECTION_GROUP" ? "system" : "per-batch",
        itemsPerSecond: w.ranges * sequentialRangeWritesPerSecond,
        limitedBy: `${describeActiveIndex(index)} (${w.sequential.field}: ${w.sequential.writes})`,
      });
    }
  }
  return out;
}

/** Ops/s a new key range sustains t seconds after traffic starts (500, then +50% every 5 minutes). */
export function rampOpsPerSecond(t: number): number {
  const l = firestoreLimits;
  return l.rampStartOpsPerSecond * l.rampGrowth ** Math.floor(t / l.rampStepSeconds);
}

/** Seconds to push `items` through at min(ramp / opsPerItem, ceiling) items/s from t = 0. */
export function secondsFromCold(items: number, opsPerItem: number, ceiling: number, ramp = true): number {
  let done = 0;
  let t = 0;
  const step = 1;
  while (done < items) {
    const rate = Math.min(ramp ? rampOpsPerSecond(t) / opsPerItem : Number.POSITIVE_INFINITY, ceiling);
    done += rate * step;
    t += step;
    if (t > 365 * 86_400) return Number.POSITIVE_INFINITY;
  }
  return t;
}

export function buildCapacityModel(
  opts: {
    composites?: DeclaredIndex[];
    overrides?: SingleFieldOverride[];
    writes?: Record<string, FieldWrites>;
    /** Firestore operations (reads + writes) per item, from the ops phase (README: 3 + 3). */
    opsPerItem?: number;
    sizes?: number[];
    layout?: string;
  } = {},
): CapacityModel {
  const composites = opts.composites ?? firestoreIndexes;
  const overrides = opts.overrides ?? declaredOverrides();
  const opsPerItem = opts.opsPerItem ?? 6;
  const ceilings = layoutCeilings(composites, overrides, opts.writes);
  const lowest = (phase: Phase, scope: Ceiling["scope"]) =>
    Math.min(
      Number.POSITIVE_INFINITY,
      ...ceilings
        .filter((c) => c.phase === phase && (c.scope === scope || scope === "per-batch"))
        .map((c) => c.itemsPerSecond),
    );
  const summary = Object.fromEntries(
    (Object.keys(phaseWrites) as Phase[]).map((p) => [
      p,
      { perBatch: lowest(p, "per-batch"), system: lowest(p, "system") },
    ]),
  ) as CapacityModel["summary"];
  // An item is done when all three phases are; the slowest phase paces a batch.
  const batchCeiling = Math.min(...Object.values(summary).map((s) => s.perBatch));
  const fromCold = (opts.sizes ?? [100_000, 1_000_000, 10_000_000]).map((items) => ({
    items,
    // Per-batch subcollections: every batch's items are a new collection (new key range): it ramps.
    perBatchCollectionsSeconds: secondsFromCold(items, opsPerItem, batchCeiling, true),
    // One shared items collection with spread keys, already warm: only the layout's ceiling.
    sharedWarmCollectionSeconds: secondsFromCold(items, opsPerItem, batchCeiling, false),
  }));
  const belowFloor = (Object.keys(summary) as Phase[]).flatMap((p) =>
    (["perBatch", "system"] as const)
      .filter((s) => summary[p][s] < minimumItemsPerSecond)
      .map((s) => `${p} ${s}: ${summary[p][s]} items/s < ${minimumItemsPerSecond}`),
  );
  return {
    layout:
      opts.layout ??
      `declared (shard prefix of ${itemShards} on every time/position index; hashed document ids)`,
    shards: itemShards,
    opsPerItem,
    ceilings,
    summary,
    fromCold,
    belowFloor,
  };
}

const fmt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "no ceiling");
const dur = (s: number) =>
  !Number.isFinite(s)
    ? "never"
    : s < 120
      ? `${Math.round(s)} s`
      : s < 7_200
        ? `${(s / 60).toFixed(1)} min`
        : `${(s / 3_600).toFixed(1)} h`;

/** Markdown: ceilings by phase and scope, then the from-cold times. */
export function renderCapacityModel(m: CapacityModel): string {
  const out = [
    `Capacity model (a MODEL from the declared layout and Firestore's published limits, read ${firestoreLimits.readDate}; not a measurement): ${m.layout}; ${m.opsPerItem} Firestore operations per item.`,
    "",
    "| Phase | Ceiling per batch (items/s) | Ceiling system-wide (items/s) |",
    "|---|---|---|",
    ...(Object.keys(m.summary) as Phase[]).map(
      (p) => `| ${p} | ${fmt(m.summary[p].perBatch)} | ${fmt(m.summary[p].system)} |`,
    ),
    "",
    "| Batch size | Submit + finish from cold, per-batch subcollections (ramp 500/50/5 per batch) | For comparison (not chosen): document keys of one warm shared collection |",
    "|---|---|---|",
    ...m.fromCold.map(
      (c) =>
        `| ${fmt(c.items)} | ${dur(c.perBatchCollectionsSeconds)} | ${dur(c.sharedWarmCollectionSeconds)} |`,
    ),
  ];
  if (m.belowFloor.length > 0)
    out.push("", `Below ${minimumItemsPerSecond} items/s: ${m.belowFloor.join("; ")}`);
  return out.join("\n");
}

if (process.argv[1]?.endsWith("capacityModel.ts"))
  process.stdout.write(`${renderCapacityModel(buildCapacityModel())}\n`);
