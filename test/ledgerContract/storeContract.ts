// The storage primitives the ledger is built on, as one suite run against the Firestore emulator
// (firestoreLedgerContract.test.ts) and the simulator's in-memory store (memoryLedgerContract.test.ts):
// the semantics test/simulation/memoryStore.ts models, checked where the ledger contract only sees
// them indirectly — above all that a write which changes nothing keeps the document's update time,
// which the batch fence (functions/core/batchFence.ts) depends on.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

export type Doc = Record<string, unknown>;
export interface PrimitiveWrite {
  op: "create" | "update";
  path: string;
  data: Doc;
  lastUpdateTime?: unknown;
}
export interface QueryShape {
  collection: string;
  parent?: string;
  group?: boolean;
  where?: Array<[string, "==" | "<" | ">=" | "in", unknown]>;
  orderBy?: Array<[string, "asc" | "desc"]>;
  startAfter?: unknown[];
  limit?: number;
}

export interface StoreUnderTest {
  get(path: string): Promise<{ exists: boolean; data: Doc | undefined; updateTime: unknown }>;
  /** One atomic commit; resolves with each write's update time. */
  commit(writes: PrimitiveWrite[]): Promise<unknown[]>;
  /** Reads `path`, then writes `next(data)` in one transaction; resolves with the attempts made. */
  readModifyWrite(path: string, next: (d: Doc) => Doc): Promise<number>;
  /** Ids of the matching documents, in order. */
  query(q: QueryShape): Promise<string[]>;
  count(q: QueryShape): Promise<number>;
  sameTime(a: unknown, b: unknown): boolean;
  close?(): Promise<void>;
}

const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => "ok",
    (err: { code?: unknown }) => err.code,
  );

export function runStoreContract(name: string, make: () => Promise<StoreUnderTest>): void {
  describe(`Store primitives: ${name}`, () => {
    let s: StoreUnderTest;
    const root = `prim-${randomUUID().slice(0, 8)}`;
    let n = 0;
    const path = () => `${root}/d${++n}`;
    beforeAll(async () => {
      s = await make();
    });
    afterAll(async () => {
      await s?.close?.();
    });

    it("create is create-only (ALREADY_EXISTS, code 6), update needs the document (NOT_FOUND, code 5)", async () => {
      const p = path();
      await s.commit([{ op: "create", path: p, data: { v: 1 } }]);
      expect(await codeOf(s.commit([{ op: "create", path: p, data: { v: 2 } }]))).toBe(6);
      expect((await s.get(p)).data).toEqual({ v: 1 });
      expect(await codeOf(s.commit([{ op: "update", path: path(), data: { v: 1 } }]))).toBe(5);
      expect((await s.get(path())).exists).toBe(false);
    });

    it("an update-time precondition fails with FAILED_PRECONDITION (code 9) once the document changed", async () => {
      const p = path();
      const [t1] = await s.commit([{ op: "create", path: p, data: { v: 1 } }]);
      expect(s.sameTime((await s.get(p)).updateTime, t1)).toBe(true);
      const [t2] = await s.commit([{ op: "update", path: p, data: { v: 2 }, lastUpdateTime: t1 }]);
      expect(s.sameTime(t2, t1)).toBe(false);
      expect(await codeOf(s.commit([{ op: "update", path: p, data: { v: 3 }, lastUpdateTime: t1 }]))).toBe(9);
      expect((await s.get(p)).data).toEqual({ v: 2 });
    });

    it("a write that changes nothing keeps the update time (the fence check), so it never fails a later one", async () => {
      const p = path();
      const [t1] = await s.commit([{ op: "create", path: p, data: { generation: 1, status: "submitting" } }]);
      // The fence: the same value, preconditioned on the read's update time — twice, as two chunks would.
      const [t2] = await s.commit([{ op: "update", path: p, data: { generation: 1 }, lastUpdateTime: t1 }]);
      expect(s.sameTime(t2, t1)).toBe(true);
      const [t3] = await s.commit([{ op: "update", path: p, data: { generation: 1 }, lastUpdateTime: t1 }]);
      expect(s.sameTime(t3, t1)).toBe(true);
      expect(s.sameTime((await s.get(p)).updateTime, t1)).toBe(true);
      // A real change moves it, and the old fence fails.
      await s.commit([{ op: "update", path: p, data: { status: "running" } }]);
      expect(
        await codeOf(s.commit([{ op: "update", path: p, data: { generation: 1 }, lastUpdateTime: t1 }])),
      ).toBe(9);
    });

    it("a commit is atomic: the first failing precondition fails every write of it", async () => {
      const fence = path();
      const [t1] = await s.commit([{ op: "create", path: fence, data: { generation: 1 } }]);
      await s.commit([{ op: "update", path: fence, data: { terminateAs: "failed" } }]);
      const item = path();
      expect(
        await codeOf(
          s.commit([
            { op: "update", path: fence, data: { generation: 1 }, lastUpdateTime: t1 },
            { op: "create", path: item, data: { status: "pending" } },
          ]),
        ),
      ).toBe(9);
      expect((await s.get(item)).exists).toBe(false);
      const other = path();
      await s.commit([{ op: "create", path: other, data: { v: 1 } }]);
      const target = path();
      await s.commit([{ op: "create", path: target, data: { v: 1 } }]);
      expect(
        await codeOf(
          s.commit([
            { op: "update", path: target, data: { v: 2 } },
            { op: "create", path: other, data: { v: 9 } },
          ]),
        ),
      ).toBe(6);
      expect((await s.get(target)).data).toEqual({ v: 1 });
    });

    it("transactions on one document serialize: concurrent read-modify-writes lose no update", async () => {
      const p = path();
      await s.commit([{ op: "create", path: p, data: { n: 0 } }]);
      await Promise.all(
        Array.from({ length: 5 }, () => s.readModifyWrite(p, (d) => ({ n: (d.n as number) + 1 }))),
      );
      expect((await s.get(p)).data).toEqual({ n: 5 });
    });

    it("queries: range filters match their own type only, orderBy drops documents without the field, startAfter skips a whole prefix", async () => {
      const parent = `${root}/q${++n}`;
      const docs: Array<[string, Doc]> = [
        ["a", { seq: 1, lease: 5, status: "pending", k: 1 }],
        ["b", { seq: 2, lease: null, status: "running", k: 1 }],
        ["c", { seq: 3, status: "failed", k: 2 }],
        ["d", { seq: 4, lease: 15, status: "running", k: 2 }],
        ["e", { lease: 2, status: "pending", k: 2 }],
      ];
      await s.commit(docs.map(([id, data]) => ({ op: "create", path: `${parent}/items/${id}`, data })));
      const items = { parent, collection: "items" };
      expect(await s.query({ ...items, where: [["lease", "<", 10]] })).toEqual(["e", "a"]);
      expect(await s.query({ ...items, where: [["status", "in", ["pending", "running"]]] })).toEqual([
        "a",
        "b",
        "d",
        "e",
      ]);
      expect(await s.query({ ...items, orderBy: [["seq", "desc"]], limit: 2 })).toEqual(["d", "c"]);
      expect(await s.query({ ...items, orderBy: [["seq", "asc"]], startAfter: [2] })).toEqual(["c", "d"]);
      // A cursor on a prefix of the order skips every document equal on it.
      expect(
        await s.query({
          ...items,
          where: [["k", ">=", 1]],
          orderBy: [
            ["k", "asc"],
            ["seq", "asc"],
          ],
          startAfter: [1],
        }),
      ).toEqual(["c", "d"]); // e has no seq: the second order leaves it out
      expect(await s.count({ ...items, where: [["status", "==", "running"]] })).toBe(2);
      const group = await s.query({ collection: "items", group: true, where: [["lease", ">=", 15]] });
      expect(group).toContain("d");
    });
  });
}
