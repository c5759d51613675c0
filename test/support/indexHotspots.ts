// Sequential-write hotspots in the indexes a Firestore layout leaves active (issue #16). Pure
// functions: the composite indexes and single-field overrides the program declares, and how the
// ledger writes each field (functions/adapters/firestore/layout.ts itemFieldWrites/batchFieldWrites)
// go in; every active index, and where each takes its writes, comes out.
//
// The rule (Firestore best practices, read 2026-12-05, https://firebase.google.com/docs/firestore/best-practices
// "Index write rate limits" / "Hotspots"; the same text in docs/performance.md): an index whose
// entries are ordered by a value that increases sequentially between the documents of a collection
// takes every new entry at the tail of one key range, which caps writes to that collection at 500 per
// second. A spread value before it in the index (a shard, a hash) splits that tail into as many
// ranges as it has values; a value from a handful (a status) does not spread the writes, it only
// partitions them. The document name (__name__) ends every index (firestoreIndexServing.ts R3),
// so an index over constant or few-valued fields is ordered by document id: sequential ids hotspot it.
import type { FieldWrites } from "../../functions/adapters/firestore/layout";
import {
  type DeclaredIndex,
  documentName,
  type QueryScope,
  type SingleFieldOverride,
  singleFieldModes,
} from "./firestoreIndexServing";

/** Firestore's ceiling on writes to one sequential index range, per second. */
export const sequentialRangeWritesPerSecond = 500;
/** The floor issue #16 sets on every ceiling the layout imposes, items per second. */
export const minimumItemsPerSecond = 5_000;

export interface ActiveIndex {
  collection: string;
  scope: QueryScope;
  kind: "composite" | "single-field";
  /** Key fields in order, __name__ last. */
  fields: Array<{ field: string; mode: "ASCENDING" | "DESCENDING" | "CONTAINS" }>;
}

export function describeActiveIndex(i: ActiveIndex): string {
  const scope = i.scope === "COLLECTION_GROUP" ? " (collection group)" : "";
  const fields = i.fields.map(
    (f) => `${f.field} ${f.mode === "CONTAINS" ? "contains" : f.mode === "ASCENDING" ? "asc" : "desc"}`,
  );
  return `${i.collection}${scope} ${i.kind} [${fields.join(", ")}]`;
}

/**
 * Every index Firestore maintains for a collection: the declared composites (with their trailing
 * __name__) and the automatic single-field indexes of every field the ledger writes, minus the
 * program's exemptions (single-field overrides).
 */
export function activeIndexes(
  collection: string,
  fieldWrites: Record<string, FieldWrites>,
  composites: DeclaredIndex[],
  overrides: SingleFieldOverride[],
): ActiveIndex[] {
  const out: ActiveIndex[] = [];
  for (const c of composites.filter((i) => i.collection === collection)) {
    const fields = c.fields.map((f) => ({
      field: f.fieldPath,
      mode: f.arrayConfig ? ("CONTAINS" as const) : (f.order ?? "ASCENDING"),
    }));
    const last = fields[fields.length - 1]!;
    if (last.field !== documentName)
      fields.push({ field: documentName, mode: last.mode === "DESCENDING" ? "DESCENDING" : "ASCENDING" });
    out.push({ collection, scope: c.queryScope, kind: "composite", fields });
  }
  for (const field of Object.keys(fieldWrites)) {
    if (field === documentName) continue;
    for (const scope of ["COLLECTION", "COLLECTION_GROUP"] as const)
      for (const mode of singleFieldModes(collection, field, scope, overrides).modes)
        out.push({
          collection,
          scope,
          kind: "single-field",
          fields: [
            { field, mode },
            { field: documentName, mode: mode === "DESCENDING" ? "DESCENDING" : "ASCENDING" },
          ],
        });
  }
  return out;
}

export interface IndexWrites {
  index: ActiveIndex;
  /** The first key field that takes sequential values, if any before a fully spread one. */
  sequential?: { field: string; writes: string; rate: FieldWrites["rate"] };
  /** The tails a sequential field's writes are spread over (the product of the spread prefixes' ranges). */
  ranges: number;
  /** Fields of the index nobody classified (the check fails on them). */
  unclassified: string[];
}

/** Where an index takes its writes: walk its key in order until a spread or a sequential field. */
export function indexWrites(index: ActiveIndex, fieldWrites: Record<string, FieldWrites>): IndexWrites {
  let ranges = 1;
  const unclassified: string[] = [];
  for (const { field } of index.fields) {
    const w = fieldWrites[field] ?? fieldWrites[field.split(".")[0]!];
    if (!w) {
      unclassified.push(field);
      continue;
    }
    if (w.values === "spread") {
      if (w.ranges === undefined) return { index, ranges: Number.POSITIVE_INFINITY, unclassified };
      ranges *= w.ranges;
      continue;
    }
    if (w.values === "few") continue;
    return { index, sequential: { field, writes: w.writes, rate: w.rate }, ranges, unclassified };
  }
  return { index, ranges, unclassified };
}

export interface Hotspot {
  index: string;
  field: string;
  writes: string;
  ranges: number;
  message: string;
}

/**
 * Indexes that cap item throughput below the floor: a per-item sequential field with no spread
 * prefix (one tail, 500 writes/s), or one spread over too few ranges to reach `minimumItemsPerSecond`.
 * Per-batch fields (written per chunk or lifecycle step) are bounded by the batch rate, not the item
 * rate; bench/capacityModel.ts reports their ceilings.
 */
export function hotspots(
  collection: string,
  indexes: ActiveIndex[],
  fieldWrites: Record<string, FieldWrites>,
): Hotspot[] {
  const out: Hotspot[] = [];
  for (const index of indexes) {
    const w = indexWrites(index, fieldWrites);
    const name = describeActiveIndex(index);
    for (const field of w.unclassified)
      out.push({
        index: name,
        field,
        writes: "?",
        ranges: 1,
        message: `${name}: ${collection}.${field} is not classified in the ledger's field-write table`,
      });
    if (!w.sequential || w.sequential.rate !== "per-item") continue;
    const ceiling = w.ranges * sequentialRangeWritesPerSecond;
    if (ceiling >= minimumItemsPerSecond) continue;
    const what =
      w.sequential.field === documentName ? "the document id" : `${collection}.${w.sequential.field}`;
    out.push({
      index: name,
      field: w.sequential.field,
      writes: w.sequential.writes,
      ranges: w.ranges,
      message:
        `${name}: ${what} takes sequential values (${w.sequential.writes}) ` +
        (w.ranges === 1 ? "with no spread prefix" : `spread over only ${w.ranges} ranges`) +
        `: every write lands on ${w.ranges === 1 ? "one tail" : `${w.ranges} tails`}, ≤ ${ceiling} writes/s ` +
        `(${index.scope === "COLLECTION_GROUP" ? "across all batches" : "per collection"})`,
    });
  }
  return out;
}
