// Every query the Firestore ledger sends is served by an index the Pulumi program declares, or by
// Firestore's automatic single-field indexes minus the program's exemptions. The emulator runs any
// query without an index (DESIGN.md §5), so a missing composite shows only in production, as
// FAILED_PRECONDITION "The query requires an index" — issue #14 item 6: GET /v1/batches without
// ?status= ordered by createdAt desc, batchId desc with no index for it.
//
// How: the ledger's every query site (found in its source, test/support/firestoreQueryShapes.ts
// querySites) is driven against the emulator while the client library records the shape of each
// query it sends; the program runs under mocks for what it declares (gcp.firestore.Index,
// gcp.firestore.Field); test/support/firestoreIndexServing.ts says, by Firestore's documented rules
// (cited there), which index serves each shape. Set TALLY_QUERY_SHAPES=1 to print the table.
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Firestore, Transaction } from "@google-cloud/firestore";
import { beforeAll, describe, expect, it } from "vitest";
import {
  firestoreIndexExemptions,
  firestoreIndexes,
  firestoreTtlFields,
} from "../../functions/adapters/firestoreIndexes";
import { FirestoreLedger } from "../../functions/adapters/firestoreLedger";
import type { BatchSummary, NewBatch } from "../../functions/core/model";
import type { ItemRef } from "../../functions/core/ports";
import type { Bundle } from "../../infra/bundle/buildBundle";
import { testFirestore, uniqueProjectId } from "../support/cloud";
import {
  type DeclaredIndex,
  declaredByProgram,
  describeIndex,
  describeShape,
  indexServing,
  type SingleFieldOverride,
  shapeKey,
  shapeOfStructuredQuery,
  validateIndexDefinitions,
} from "../support/firestoreIndexServing";
import {
  type QuerySite,
  querySites,
  type RecordedQuery,
  recordQueryShapes,
  shapeOfQuery,
} from "../support/firestoreQueryShapes";
import { runStack } from "./support/pulumiMocks";

const functionsDir = resolve(__dirname, "../../functions");
const ledgerSource = join(functionsDir, "adapters", "firestoreLedger.ts");
/** The ledger's queries and counts (firestoreLedger.ts delegates to it). */
const querySource = join(functionsDir, "adapters", "firestore", "queries.ts");
/** Every deployed source that talks to Firestore: a query added anywhere in functions/ has to be driven here. */
const firestoreSources = (readdirSync(functionsDir, { recursive: true }) as string[])
  .filter((f) => f.endsWith(".ts"))
  .map((f) => join(functionsDir, f))
  .filter((f) => readFileSync(f, "utf8").includes("@google-cloud/firestore"));
const sites: QuerySite[] = firestoreSources.flatMap((f) => querySites(f));
const owners = new Set(sites.map((s) => s.owner));

let declared: { indexes: DeclaredIndex[]; overrides: SingleFieldOverride[] };
let recorded: RecordedQuery[] = [];

beforeAll(async () => {
  // What the program declares; the functions bundle plays no part in it (a stand-in saves building it).
  const bundle: Bundle = {
    objectName: "functions-stand-in.zip",
    contentHash: "stand-in",
    zipPath: ledgerSource,
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

  const db = testFirestore(uniqueProjectId("queries"));
  const recorder = recordQueryShapes({ sources: firestoreSources, owners });
  try {
    await exerciseEveryQuery(new FirestoreLedger(db));
  } finally {
    recorder.restore();
    await db.terminate();
  }
  recorded = recorder.queries;
  if (process.env.TALLY_QUERY_SHAPES) console.log(shapeTable(recorded, declared.indexes, declared.overrides));
});

/** One of each query the ledger can send: every query site, both sides of every optional filter. */
async function exerciseEveryQuery(ledger: FirestoreLedger): Promise<void> {
  const T0 = 1_700_000_000_000;
  const batch = (batchId: string, over: Partial<NewBatch> = {}): NewBatch => ({
    batchId,
    pipeline: "demo",
    failureThreshold: 0.9,
    dependsOn: [],
    contentHash: "h",
    total: null,
    ...over,
  });
  const items = (n: number) => Array.from({ length: n }, (_, i) => ({ itemId: `i${i}`, payload: { n: i } }));
  const ref = (itemId: string, generation = 1): ItemRef => ({ batchId: "b1", itemId, generation });

  // Submission: b1 runs to its outcome, b2 stays pending, b3 waits for b1.
  await ledger.createBatch(batch("b1"), T0);
  await ledger.appendItems("b1", 0, items(4), T0, { publishable: true });
  expect(await ledger.getItemsBySeq("b1", 0, 4)).toHaveLength(4);
  expect(await ledger.countItemsAt("b1", 0, 4)).toBe(4);
  expect(await ledger.readItemRefs("b1", 0, 4)).toHaveLength(4);
  await ledger.advanceCursor("b1", 4, T0 + 1);
  expect(await ledger.markSubmitted("b1", 4, T0 + 1)).toBe(true);
  await ledger.createBatch(batch("b2"), T0 + 2);
  await ledger.appendItems("b2", 0, items(3), T0 + 2, { publishable: true });
  await ledger.createBatch(batch("b3", { dependsOn: ["b1"] }), T0 + 3);
  expect((await ledger.findDependents("b1", 10)).map((b) => b.batchId)).toEqual(["b3"]);

  // The API and the dashboard: every batch, and by status, page after page; items likewise.
  const everyBatch = await ledger.listBatches({ limit: 2 });
  expect(everyBatch.entries.map((b) => b.batchId)).toEqual(["b3", "b2"]);
  expect((await ledger.listBatches({ limit: 2, pageToken: everyBatch.nextPageToken })).entries).toHaveLength(
    1,
  );
  expect((await ledger.listBatches({ status: "running", limit: 5 })).entries).toHaveLength(1);
  const itemPage = await ledger.listItems("b1", { limit: 2 });
  expect(
    (await ledger.listItems("b1", { limit: 2, pageToken: itemPage.nextPageToken })).entries,
  ).toHaveLength(2);
  expect((await ledger.listItems("b1", { status: "pending", limit: 5 })).entries).toHaveLength(4);

  // Reconciler sweeps over batches: blocked ones (dependencies), stale submissions.
  expect((await ledger.findBatches({ status: "blocked", limit: 10 })).entries).toHaveLength(1);
  expect(
    (await ledger.findBatches({ status: "submitting", progressBefore: T0 + 60_000, limit: 1 })).entries,
  ).toHaveLength(1);
  // A page after a (progressAt, batchId) position: the shape a persisted sweep cursor sends.
  const afterB1 = Buffer.from(JSON.stringify([T0 + 1, "b1"])).toString("base64url");
  const nextPage = await ledger.findBatches({ status: "submitting", limit: 1, pageToken: afterB1 });
  expect(nextPage.entries.map((b) => b.batchId)).toEqual(["b2"]);
  // The reconciler's sweeps list oldest first.
  expect(
    (await ledger.listBatches({ status: "blocked", limit: 5, oldestFirst: true })).entries.map(
      (b) => b.batchId,
    ),
  ).toEqual(["b3"]);

  // Workers: i0 succeeds, i1 fails, i2's worker vanishes and its lease lapses, i3 is never taken.
  expect((await ledger.leaseItem(ref("i0"), "w", 60_000, 5, T0 + 10)).kind).toBe("leased");
  expect((await ledger.completeItem(ref("i0"), "w", { ok: 1 }, T0 + 11)).kind).toBe("done");
  await ledger.failItem(ref("i1"), { kind: "permanent", message: "bad input" }, T0 + 12);
  expect((await ledger.leaseItem(ref("i2"), "gone", 1, 5, T0 + 13)).kind).toBe("leased");
  const expired = await ledger.findExpiredLeases(T0 + 1_000, 10);
  expect(expired.map((r) => r.itemId)).toEqual(["i2"]);
  expect(await ledger.redriveItem(expired[0]!, 5, T0 + 1_000)).toBe("redriven");
  const stale = await ledger.findStalePending(T0 + 60_000, 10);
  expect(stale.length).toBeGreaterThanOrEqual(2);
  await ledger.touchPending(stale, T0 + 60_000);
  await ledger.failItem(ref("i2"), { kind: "timeout", message: "lease lapsed" }, T0 + 60_001);
  await ledger.failItem(ref("i3"), { kind: "permanent", message: "bad input" }, T0 + 60_002);

  // Progress (count() aggregations) and finalization.
  expect(await ledger.countItems("b1")).toMatchObject({ succeeded: 1, failed: 3, pending: 0 });
  expect(await ledger.countFailedByKind("b1")).toEqual({ permanent: 2, timeout: 1 });
  expect(await ledger.countFinishedBetween("b1", [T0, T0 + 100, T0 + 100_000])).toEqual([2, 2]);
  expect(await ledger.countSucceeded("b1", 1)).toBe(1);
  expect(await ledger.hasLiveItems("b1")).toBe(false);
  const claim = await ledger.beginFinalizing("b1", T0 + 70_000, 60_000);
  expect(claim?.status).toBe("finalizing");
  let rows = 0;
  for await (const page of ledger.streamResults("b1", 1, 1)) rows += page.length; // pages of one: a cursor
  expect(rows).toBe(1);
  const summary: BatchSummary = {
    outcome: "partial",
    counts: { total: 4, pending: 0, running: 0, succeeded: 1, failed: 3 },
    failedByKind: { permanent: 2, timeout: 1 },
    exportId: null,
    exportedRows: 1,
    durationMs: 70_000,
  };
  expect((await ledger.finishBatch("b1", claim!, summary, T0 + 70_001))?.status).toBe("partial");

  // Operator actions: retry b1's failed items, cancel b2's pending ones.
  expect((await ledger.beginRetry("b1", T0 + 80_000)).generation).toBe(2);
  expect(await ledger.resetFailedItems("b1", 2, 10, T0 + 80_001)).toHaveLength(3);
  expect(await ledger.markRetrySubmitted("b1", T0 + 80_002)).toBe(true);
  expect(await ledger.cancelPendingItems("b2", "operator", 10, T0 + 90_000)).toBe(3);
}

interface Unserved {
  site: string;
  shape: string;
  reason: string;
}

/** Every distinct (site, shape) recorded that no index serves. */
function unserved(
  queries: RecordedQuery[],
  indexes: DeclaredIndex[],
  overrides: SingleFieldOverride[],
): Unserved[] {
  const seen = new Set<string>();
  const out: Unserved[] = [];
  for (const q of queries) {
    const site = q.sites.join(" + ") || "(unknown site)";
    const key = `${site}|${shapeKey(q.shape)}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const serving = indexServing(q.shape, indexes, overrides);
    if (!serving.served) out.push({ site, shape: describeShape(q.shape), reason: serving.reason });
  }
  return out;
}

function shapeTable(queries: RecordedQuery[], indexes: DeclaredIndex[], overrides: SingleFieldOverride[]) {
  const lines = new Set<string>();
  for (const q of queries) {
    const serving = indexServing(q.shape, indexes, overrides);
    lines.add(
      `| ${q.sites.join(" + ")} | ${describeShape(q.shape)} | ${serving.served ? serving.by.description : `NONE: ${serving.reason}`} |`,
    );
  }
  return ["| site | shape | served by |", "|---|---|---|", ...[...lines].sort()].join("\n");
}

const shapesAt = (site: string) =>
  new Set(recorded.filter((q) => q.sites.includes(site)).map((q) => shapeKey(q.shape)));

describe("the ledger's queries against the program's indexes", () => {
  it("the program declares exactly the indexes of functions/adapters/firestoreIndexes.ts, each one Firestore accepts", () => {
    const normalized = (list: DeclaredIndex[]) =>
      list
        .map((i) => describeIndex({ collection: i.collection, queryScope: i.queryScope, fields: i.fields }))
        .sort();
    expect(normalized(declared.indexes)).toEqual(normalized(firestoreIndexes));
    expect(validateIndexDefinitions(declared.indexes)).toEqual([]);
    // The TTL fields and every field no query needs are exempt from single-field indexing (issue #16).
    expect(
      declared.overrides.map((o) => `${o.collection}.${o.field} ${JSON.stringify(o.indexes)}`).sort(),
    ).toEqual(
      [...firestoreIndexExemptions, ...firestoreTtlFields].map((f) => `${f.collection}.${f.field} []`).sort(),
    );
  });

  it("finds the ledger's query sites in its source", () => {
    expect(firestoreSources).toContain(querySource);
    expect(sites.length).toBeGreaterThanOrEqual(15);
    expect(owners).toContain("FirestoreLedgerQueries.listBatches");
    expect(owners).toContain("FirestoreLedgerQueries.findExpiredLeases");
  });

  it("drives every query site of the ledger, and both sides of every optional filter", () => {
    const missing = sites
      .map((s) => ({ s, shapes: shapesAt(s.owner).size, needed: 2 ** s.conditionalShapeCalls }))
      .filter(({ shapes, needed }) => shapes < needed)
      .map(
        ({ s, shapes, needed }) =>
          `${s.owner} (${s.calls.join(", ")}): ${shapes} distinct shape(s) recorded, ${needed} expected — drive it from exerciseEveryQuery`,
      );
    expect(missing).toEqual([]);
  });

  it("knows where every query it recorded came from", () => {
    expect(recorded.length).toBeGreaterThan(20);
    expect(recorded.filter((q) => q.sites.length === 0).map((q) => describeShape(q.shape))).toEqual([]);
    expect(new Set(recorded.map((q) => q.rpc))).toEqual(new Set(["runQuery", "runAggregationQuery"]));
  });

  it("every query the ledger sends is served by a declared index or an automatic single-field index", () => {
    expect(unserved(recorded, declared.indexes, declared.overrides)).toEqual([]);
  });

  it("every declared composite index serves at least one query the ledger sends", () => {
    const used = new Set<string>();
    for (const q of recorded) {
      const serving = indexServing(q.shape, declared.indexes, declared.overrides);
      if (serving.served && serving.by.kind === "composite") used.add(describeIndex(serving.by.index));
    }
    expect(declared.indexes.map(describeIndex).filter((i) => !used.has(i))).toEqual([]);
  });

  it("fails, naming the query, without the index of the unfiltered batch list (issue #14 item 6)", () => {
    const without = declared.indexes.filter(
      (i) => !(i.collection === "batches" && i.fields.map((f) => f.fieldPath).join() === "createdAt,batchId"),
    );
    expect(without).toHaveLength(declared.indexes.length - 1);
    const failures = unserved(recorded, without, declared.overrides);
    expect(failures).toEqual([
      {
        site: expect.stringContaining("FirestoreLedgerQueries.listBatches"),
        shape: "batches order by createdAt desc, batchId desc, __name__ desc",
        reason: expect.stringContaining("it needs the composite batches [createdAt desc, batchId desc]"),
      },
    ]);
  });

  it("fails a made-up query with a range on one field and an order on another", () => {
    const shape = shapeOfStructuredQuery({
      from: [{ collectionId: "items" }],
      where: { fieldFilter: { field: { fieldPath: "finishedAt" }, op: "GREATER_THAN" } },
      orderBy: [{ field: { fieldPath: "seq" }, direction: "ASCENDING" }],
    });
    const madeUp: RecordedQuery = { rpc: "runQuery", shape, sites: ["madeUp"], inTransaction: false };
    expect(unserved([madeUp], declared.indexes, declared.overrides)).toEqual([
      {
        site: "madeUp",
        shape: "items where finishedAt range order by seq asc, finishedAt asc, __name__ asc",
        reason: expect.stringContaining("it needs the composite items [seq asc, finishedAt asc]"),
      },
    ]);
  });

  it("fails a query that would need the automatic index of a field the program exempts", () => {
    const shape = shapeOfStructuredQuery({
      from: [{ collectionId: "items", allDescendants: true }],
      where: { fieldFilter: { field: { fieldPath: "expireAt" }, op: "LESS_THAN" } },
    });
    const serving = indexServing(shape, declared.indexes, declared.overrides);
    expect(serving.served).toBe(false);
    const collectionScoped = indexServing(
      { ...shape, scope: "COLLECTION" },
      declared.indexes,
      declared.overrides,
    );
    expect(collectionScoped.served).toBe(false);
    if (!collectionScoped.served)
      expect(collectionScoped.reason).toContain(
        "the collection-scope ascending single-field index on items.expireAt is disabled by a single-field override (gcp.firestore.Field tally-dev-ttl-items-expireAt",
      );
  });
});

// --- the recorder itself ------------------------------------------------------------------------

async function queriesOfEveryKind(db: Firestore): Promise<void> {
  const things = db.collection("things");
  await things.doc("t1").set({ a: 1, b: 2, c: 3 });
  await things.where("a", "==", 1).get();
  await new Promise<void>((ok, fail) => {
    things
      .orderBy("b")
      .stream()
      .on("data", () => {})
      .on("end", ok)
      .on("error", fail);
  });
  await things.where("a", "==", 1).count().get();
  await db.runTransaction(readsInTransaction(db));
  await db.collectionGroup("things").where("a", "==", 1).get();
}

/** The transaction's reads, from a named function (the recorder names sites after stack frames). */
function readsInTransaction(db: Firestore) {
  return async function readsInTransaction(tx: Transaction): Promise<void> {
    const things = db.collection("things");
    await tx.get(things.where("c", ">", 1));
    await tx.get(things.count());
  };
}

describe("the query shape recorder", () => {
  it("records get, stream, count().get, transaction reads and collection-group queries, with the function that built them", async () => {
    const db = testFirestore(uniqueProjectId("recorder"));
    const recorder = recordQueryShapes({ sources: [__filename] });
    try {
      await queriesOfEveryKind(db);
    } finally {
      recorder.restore();
      await db.terminate();
    }
    expect(
      recorder.queries.map((q) => [q.rpc, q.inTransaction, q.sites.join(), describeShape(q.shape)]),
    ).toEqual([
      ["runQuery", false, "queriesOfEveryKind", "things where a == order by __name__ asc"],
      ["runQuery", false, "queriesOfEveryKind", "things order by b asc, __name__ asc"],
      ["runAggregationQuery", false, "queriesOfEveryKind", "things where a == order by __name__ asc [count]"],
      ["runQuery", true, "readsInTransaction", "things where c range order by c asc, __name__ asc"],
      ["runAggregationQuery", true, "readsInTransaction", "things order by __name__ asc [count]"],
      ["runQuery", false, "queriesOfEveryKind", "things (collection group) where a == order by __name__ asc"],
    ]);
  });

  it("takes the shape from what the client sends: cursors, limits and projections change no index", async () => {
    const db = testFirestore(uniqueProjectId("shapes"));
    const q = db.collection("things").where("a", "==", 1).orderBy("b", "desc");
    const plain = shapeOfQuery(q);
    expect(describeShape(plain)).toBe("things where a == order by b desc, __name__ desc");
    for (const variant of [q.limit(5), q.select("x"), q.startAfter(3), q.offset(2)])
      expect(shapeKey(shapeOfQuery(variant))).toBe(shapeKey(plain));
    // limitToLast is sent as the reversed query: that is the index it needs.
    expect(describeShape(shapeOfQuery(q.limitToLast(3)))).toBe(
      "things where a == order by b asc, __name__ asc",
    );
    await db.terminate();
  });
});
