// Firestore's index rules as test/support/firestoreIndexServing.ts encodes them (sources cited
// there), on queries built with the real client library (their shapes are what it would send; no
// request is made). Each case is one documented rule, both the query it serves and the one it does not.
import { FieldPath, Filter, Firestore } from "@google-cloud/firestore";
import { afterAll, describe, expect, it } from "vitest";
import { firestoreIndexes } from "../../functions/adapters/firestoreIndexes";
import {
  type DeclaredIndex,
  declaredByProgram,
  describeShape,
  indexServing,
  type SingleFieldOverride,
  validateIndexDefinitions,
} from "../support/firestoreIndexServing";
import { shapeOfQuery } from "../support/firestoreQueryShapes";

const db = new Firestore({ projectId: "index-rules" });
afterAll(() => db.terminate());
const items = db.collection("batches").doc("b").collection("items");
const batches = db.collection("batches");

const composite = (collection: string, ...fields: string[]): DeclaredIndex => ({
  collection,
  queryScope: "COLLECTION",
  fields: fields.map((f) => {
    const [fieldPath, d] = f.split(" ");
    return { fieldPath: fieldPath!, order: d === "desc" ? "DESCENDING" : "ASCENDING" };
  }),
});

function serving(query: unknown, indexes: DeclaredIndex[] = [], overrides: SingleFieldOverride[] = []) {
  const s = indexServing(shapeOfQuery(query), indexes, overrides);
  return s.served ? s.by.description : `none: ${s.reason}`;
}

describe("automatic single-field indexes", () => {
  it("serve one equality filter, and several merged", () => {
    expect(serving(items.where("status", "==", "failed"))).toBe("automatic single-field status asc");
    expect(serving(items.where("status", "==", "failed").where("error.kind", "==", "timeout").count())).toBe(
      "automatic single-field error.kind asc + status asc, merged",
    );
    expect(serving(items.where("status", "in", ["pending", "running"]).limit(1).select())).toBe(
      "automatic single-field status asc",
    );
  });

  it("serve a range and an order on one field, not a range on one and an order on another", () => {
    expect(serving(items.where("seq", ">=", 3).orderBy("seq"))).toBe("automatic single-field seq asc");
    expect(serving(items.where("finishedAt", ">=", 3).where("finishedAt", "<", 9))).toBe(
      "automatic single-field finishedAt asc",
    );
    expect(serving(items.orderBy("seq", "desc"))).toBe("automatic single-field seq desc");
    expect(serving(items.where("finishedAt", ">", 3).orderBy("seq"))).toBe(
      "none: no declared index serves items where finishedAt range order by seq asc, finishedAt asc, __name__ asc; it needs the composite items [seq asc, finishedAt asc]",
    );
  });

  it("do not serve an equality filter with an order on another field, nor ranges on two fields", () => {
    expect(serving(items.where("status", "==", "pending").orderBy("seq"))).toBe(
      "none: no declared index serves items where status == order by seq asc, __name__ asc; it needs the composite items [status asc, seq asc]",
    );
    expect(
      serving(items.where("status", "==", "pending").orderBy("seq"), [composite("items", "status", "seq")]),
    ).toBe("composite items [status asc, seq asc]");
    // Inequality fields are ordered implicitly, lexicographically: the index Google's own example uses.
    expect(serving(items.where("salary", ">", 1).where("experience", ">", 0))).toContain(
      "it needs the composite items [experience asc, salary asc]",
    );
    expect(serving(items.where("status", "==", "failed").where("generation", "<", 2))).toContain(
      "it needs the composite items [status asc, generation asc]",
    );
  });

  it("do not serve array-contains together with another filter", () => {
    expect(serving(batches.where("dependsOn", "array-contains", "b1"))).toBe(
      "automatic single-field dependsOn contains",
    );
    expect(
      serving(batches.where("dependsOn", "array-contains", "b1").where("status", "==", "blocked")),
    ).toContain("array-contains with another filter needs a composite");
  });

  it("exist in collection scope only: a collection-group query needs a declared index", () => {
    const group = db.collectionGroup("items").where("status", "==", "running");
    expect(serving(group)).toBe(
      "none: no declared index serves items (collection group) where status == order by __name__ asc; the collection-group-scope ascending single-field index on items.status is not automatic (Firestore keeps only collection-scope single-field indexes by default)",
    );
    const enabled: SingleFieldOverride = {
      collection: "items",
      field: "status",
      indexes: [{ queryScope: "COLLECTION_GROUP", order: "ASCENDING" }],
    };
    expect(serving(group, [], [enabled])).toBe("automatic single-field status asc");
    // The override replaces the defaults: the collection-scope indexes are gone with it.
    expect(serving(items.where("status", "==", "running"), [], [enabled])).toContain(
      "is disabled by a single-field override",
    );
  });

  it("are removed by an exemption, and a map field's exemption covers its subfields", () => {
    const exempt = (field: string): SingleFieldOverride => ({
      collection: "items",
      field,
      indexes: [],
      source: `Field ${field}`,
    });
    expect(serving(items.where("expireAt", "<", 5), [], [exempt("expireAt")])).toBe(
      "none: no declared index serves items where expireAt range order by expireAt asc, __name__ asc; the collection-scope ascending single-field index on items.expireAt is disabled by a single-field override (Field expireAt: indexes [])",
    );
    expect(serving(items.where("error.kind", "==", "timeout"), [], [exempt("error")])).toContain(
      "items.error.kind is disabled by a single-field override (Field error",
    );
    expect(serving(items.where("status", "==", "failed"), [], [exempt("expireAt"), exempt("error")])).toBe(
      "automatic single-field status asc",
    );
    // Another collection's exemption changes nothing here.
    expect(serving(batches.where("expireAt", "<", 5), [], [exempt("expireAt")])).toBe(
      "automatic single-field expireAt asc",
    );
  });
});

describe("composite indexes", () => {
  const newestFirst = composite("batches", "createdAt desc", "batchId desc");

  it("serve exactly their order, __name__ last in the last field's direction", () => {
    const byCreated = batches.orderBy("createdAt", "desc");
    expect(serving(byCreated.orderBy("batchId", "desc"))).toContain(
      "it needs the composite batches [createdAt desc, batchId desc]",
    );
    expect(serving(byCreated.orderBy("batchId", "desc"), [newestFirst])).toBe(
      "composite batches [createdAt desc, batchId desc]",
    );
    expect(serving(byCreated.orderBy("batchId", "asc"), [newestFirst])).toContain(
      "it needs the composite batches [createdAt desc, batchId asc]",
    );
    // batchId holds the document id, but to Firestore it is a field like any other; __name__ is the
    // document id every index ends with, so ordering by it needs no composite…
    expect(serving(byCreated.orderBy(FieldPath.documentId(), "desc"))).toBe(
      "automatic single-field createdAt desc",
    );
    // …unless its direction differs from the last field's, and a composite never matches it then.
    expect(serving(byCreated.orderBy(FieldPath.documentId(), "asc"), [newestFirst])).toContain(
      "it needs the composite batches [createdAt desc, __name__ asc]",
    );
    expect(
      serving(byCreated.orderBy("batchId", "desc").orderBy(FieldPath.documentId(), "asc"), [newestFirst]),
    ).toContain("it needs the composite batches [createdAt desc, batchId desc, __name__ asc]");
  });

  it("take the equality fields first, in any order and direction, then the order", () => {
    const q = items.where("status", "==", "succeeded").where("generation", "==", 1).orderBy("seq");
    expect(serving(q, [composite("items", "generation desc", "status", "seq")])).toBe(
      "composite items [generation desc, status asc, seq asc]",
    );
    expect(serving(q, [composite("items", "status", "seq", "generation")])).toContain(
      "it needs the composite",
    );
    expect(
      serving(q, [{ ...composite("items", "status", "generation", "seq"), queryScope: "COLLECTION_GROUP" }]),
    ).toContain("it needs the composite");
  });

  it("serve an aggregation exactly as they serve its query", () => {
    const failedBefore = items.where("status", "==", "failed").where("generation", "<", 2);
    const index = composite("items", "status", "generation");
    expect(serving(failedBefore, [index])).toBe("composite items [status asc, generation asc]");
    expect(serving(failedBefore.count(), [index])).toBe("composite items [status asc, generation asc]");
    expect(serving(failedBefore.count())).toContain(
      "it needs the composite items [status asc, generation asc]",
    );
  });
});

describe("what cannot be checked is never passed", () => {
  it("OR filters and vector searches", () => {
    const either = items.where(Filter.or(Filter.where("a", "==", 1), Filter.where("b", "==", 2)));
    expect(serving(either)).toContain("cannot be checked: a OR filter");
    const nearest = items.findNearest({
      vectorField: "v",
      queryVector: [1, 2],
      limit: 3,
      distanceMeasure: "COSINE",
    });
    expect(describeShape(shapeOfQuery(nearest))).toContain("vector search");
    expect(serving(nearest)).toContain("cannot be checked");
  });
});

describe("index definitions", () => {
  it("refuses what Firestore refuses or could never use", () => {
    expect(validateIndexDefinitions(firestoreIndexes)).toEqual([]);
    expect(
      validateIndexDefinitions([
        composite("items", "status"),
        composite("items", "status", "seq"),
        composite("items", "status", "seq", "__name__"),
        {
          collection: "items",
          queryScope: "COLLECTION",
          fields: [
            { fieldPath: "__name__", order: "ASCENDING" },
            { fieldPath: "a", order: "ASCENDING" },
          ],
        },
        composite("items", "seq desc", "__name__ desc"),
        composite("batches/b/items", "a", "b"),
      ]),
    ).toEqual([
      "items [status asc]: a composite index needs at least two fields (one field is a single-field index)",
      "items [status asc, seq asc, __name__ asc]: declared twice (with the same fields and implicit __name__)",
      "items [__name__ asc, a asc]: __name__ can only be the last field",
      "items [seq desc, __name__ desc]: the same as the automatic single-field index on seq",
      "batches/b/items [a asc, b asc]: the collection must be a collection id, not a path",
    ]);
  });

  it("reads the program's indexes and single-field overrides from its resources", () => {
    const { indexes, overrides } = declaredByProgram([
      {
        type: "gcp:firestore/index:Index",
        name: "idx",
        props: {
          collection: "items",
          queryScope: "COLLECTION_GROUP",
          fields: [{ fieldPath: "a", order: "ASCENDING" }],
        },
      },
      {
        type: "gcp:firestore/field:Field",
        name: "ttl-only",
        props: { collection: "items", field: "expireAt", ttlConfig: {} },
      },
      {
        type: "gcp:firestore/field:Field",
        name: "exempt",
        props: { collection: "items", field: "blob", indexConfig: {} },
      },
      {
        type: "gcp:firestore/field:Field",
        name: "group",
        props: {
          collection: "items",
          field: "status",
          indexConfig: { indexes: [{ order: "ASCENDING", queryScope: "COLLECTION_GROUP" }] },
        },
      },
    ]);
    expect(indexes).toEqual([
      {
        collection: "items",
        queryScope: "COLLECTION_GROUP",
        fields: [{ fieldPath: "a", order: "ASCENDING" }],
        purpose: "idx",
      },
    ]);
    // A TTL policy alone keeps the field's automatic indexes; an empty indexConfig removes them.
    expect(overrides).toEqual([
      { collection: "items", field: "blob", indexes: [], source: "gcp.firestore.Field exempt" },
      {
        collection: "items",
        field: "status",
        indexes: [{ queryScope: "COLLECTION_GROUP", order: "ASCENDING" }],
        source: "gcp.firestore.Field group",
      },
    ]);
  });
});
