// Two requests of one batch id, same header, different items, in flight at once (issue #15 item
// 10): each compares with what was stored before either wrote, so both can store their own item at
// one position (create-only writes are keyed by item id). The coordinator counts the chunk's
// positions after its store and before its publish; these tests force the two interleavings that
// matter with gates in the ledger, not with timing:
//   1. both store before either counts → both see the collision, both withdraw, both answer 409;
//   2. one counts before the other stores → it goes on (201, published); the other withdraws (409).
// Either way no position holds two items and no withdrawn item was ever published.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Ledger } from "../../functions/core/ports";
import { type CoordinatorHarness, startCoordinatorHarness } from "./support/coordinatorHarness";

let h: CoordinatorHarness;
let real: Ledger;
beforeAll(async () => {
  h = await startCoordinatorHarness();
  real = h.deps.ledger;
});
afterAll(() => h?.close());

/** A promise with its resolver, for gates. */
function signal(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

/** The real ledger with hooks around the two calls whose order decides the outcome. */
function gatedLedger(hooks: {
  afterAppend?: (itemIds: string[]) => Promise<void>;
  beforeAppend?: (itemIds: string[]) => Promise<void>;
  beforeCount?: () => Promise<void>;
  afterCount?: () => void;
  afterCompare?: () => void;
  afterBeginAppend?: () => void;
}): Ledger {
  return new Proxy(real, {
    get(target, prop, receiver) {
      if (prop === "getItemsBySeq")
        return async (...args: Parameters<Ledger["getItemsBySeq"]>) => {
          const out = await target.getItemsBySeq(...args);
          hooks.afterCompare?.();
          return out;
        };
      if (prop === "appendItems")
        return async (...args: Parameters<Ledger["appendItems"]>) => {
          const ids = args[2].map((it) => it.itemId);
          await hooks.beforeAppend?.(ids);
          const out = await target.appendItems(...args);
          await hooks.afterAppend?.(ids);
          return out;
        };
      if (prop === "beginAppend")
        return async (...args: Parameters<Ledger["beginAppend"]>) => {
          const out = await target.beginAppend(...args);
          hooks.afterBeginAppend?.();
          return out;
        };
      if (prop === "countItemsAt")
        return async (...args: Parameters<Ledger["countItemsAt"]>) => {
          await hooks.beforeCount?.();
          const out = await target.countItemsAt(...args);
          hooks.afterCount?.();
          return out;
        };
      const value = Reflect.get(target, prop, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

const body = (id: string, prefix: string) => ({
  id,
  pipeline: "demo",
  items: [0, 1, 2].map((i) => ({ id: `${prefix}${i}`, payload: { value: `${prefix}${i}` } })),
});

/**
 * a first (it creates the batch), then b once the batch exists (b finds it and compares with what is
 * stored). The gates make a store only after b compared, so both compared before either stored.
 */
async function submitBoth(batchId: string) {
  const a = h.request("POST", "/v1/batches", { json: body(batchId, "a") });
  const b = (async () => {
    const deadline = Date.now() + 30_000;
    while (!(await real.getBatch(batchId))) {
      if (Date.now() > deadline) throw new Error(`batch ${batchId} was never created`);
      await new Promise((r) => setTimeout(r, 5));
    }
    return h.request("POST", "/v1/batches", { json: body(batchId, "b") });
  })();
  return Promise.all([a, b]);
}

async function positions(batchId: string): Promise<Array<[number, string]>> {
  const stored = await real.getItemsBySeq(batchId, 0, 10);
  return stored.map((it) => [it.seq, it.itemId]);
}

describe("two requests, one batch id, different items at once", () => {
  it("both stored before either counted: both withdraw and answer 409 naming the positions; nothing published; a re-send then stores one content", async () => {
    let appended = 0;
    const bCompared = signal();
    const bothStored = signal();
    h.deps.ledger = gatedLedger({
      afterCompare: () => bCompared.open(),
      beforeAppend: async (ids) => {
        if (ids[0]?.startsWith("a")) await bCompared.promise;
      },
      afterAppend: async () => {
        if (++appended === 2) bothStored.open();
      },
      beforeCount: () => bothStored.promise,
    });
    try {
      const [a, b] = await submitBoth("pc-both");
      expect(appended).toBe(2);
      for (const answer of [a, b]) {
        expect(answer.status).toBe(409);
        expect(answer.body.error.code).toBe("conflict");
        expect(answer.body.error.details).toHaveLength(3);
        expect(answer.body.error.details[0].problem).toMatch(
          /^position 0 also holds item "[ab]0", stored at the same time by another request of this batch with different items; item "[ab]0" was withdrawn/,
        );
      }
    } finally {
      h.deps.ledger = real;
    }
    expect(await positions("pc-both")).toEqual([]);
    expect((await real.getBatch("pc-both"))?.received).toBe(0);
    expect(await h.drainDoorbells(0)).toEqual([]);
    expect(h.events("batch.position_conflict", "pc-both")).toHaveLength(2);

    // The batch id is not spoiled: one content re-sent is stored, published and started.
    const again = await h.request("POST", "/v1/batches", { json: body("pc-both", "a") });
    expect(again.status).toBe(200);
    expect(await positions("pc-both")).toEqual([
      [0, "a0"],
      [1, "a1"],
      [2, "a2"],
    ]);
    expect((await h.drainDoorbells(3)).map((d) => d.itemId).sort()).toEqual(["a0", "a1", "a2"]);
    expect((await real.getBatch("pc-both"))?.status).toBe("running");
  });

  it("one counted before the other stored: the first goes on (published, running), the second withdraws and answers 409", async () => {
    const bCompared = signal();
    const aCounted = signal();
    h.deps.ledger = gatedLedger({
      afterCompare: () => bCompared.open(),
      // a stores once b has compared (b saw nothing stored); b stores once a has counted (a saw
      // only its own items).
      beforeAppend: async (ids) => {
        if (ids[0]?.startsWith("a")) await bCompared.promise;
        else await aCounted.promise;
      },
      afterCount: () => aCounted.open(),
    });
    let a: Awaited<ReturnType<CoordinatorHarness["request"]>>;
    let b: Awaited<ReturnType<CoordinatorHarness["request"]>>;
    try {
      [a, b] = await submitBoth("pc-order");
    } finally {
      h.deps.ledger = real;
    }
    expect(a.status).toBe(201);
    expect(b.status).toBe(409);
    expect(b.body.error.details.map((d: { path: string }) => d.path)).toEqual([
      "items[0]",
      "items[1]",
      "items[2]",
    ]);
    expect(await positions("pc-order")).toEqual([
      [0, "a0"],
      [1, "a1"],
      [2, "a2"],
    ]);
    expect((await h.drainDoorbells(3)).map((d) => d.itemId).sort()).toEqual(["a0", "a1", "a2"]);
    expect((await real.getBatch("pc-order"))?.status).toBe("running");
    expect(h.events("batch.position_conflict", "pc-order")).toHaveLength(1);
  });
});

// The same race through `:append` (open/append/seal): two appends at one offset with different
// items in flight at once. Appends store like a new batch (no per-chunk comparison), so without the
// in-flight count (core/concurrentAppends.ts) neither would check and a position would keep two
// items, both published.
const appendBody = (prefix: string) => ({
  offset: 0,
  items: [0, 1, 2].map((i) => ({ id: `${prefix}${i}`, payload: { value: `${prefix}${i}` } })),
});

/** Opens the batch, then appends a's items and — once a's append began — b's, at offset 0. */
async function appendBoth(batchId: string, aBegan: Promise<void>) {
  const opened = await h.request("POST", "/v1/batches", {
    json: { id: batchId, pipeline: "demo", open: true },
  });
  expect(opened.status).toBe(201);
  const a = h.request("POST", `/v1/batches/${batchId}:append`, { json: appendBody("a") });
  const b = aBegan.then(() => h.request("POST", `/v1/batches/${batchId}:append`, { json: appendBody("b") }));
  return Promise.all([a, b]);
}

describe("two appends at one offset with different items at once", () => {
  it("both stored before either counted: both withdraw and answer 409; nothing published; the batch takes one content after", async () => {
    const aBegan = signal();
    const bothCompared = signal();
    const bothStored = signal();
    let compares = 0;
    let appended = 0;
    h.deps.ledger = gatedLedger({
      afterBeginAppend: () => aBegan.open(),
      afterCompare: () => {
        if (++compares === 2) bothCompared.open();
      },
      beforeAppend: () => bothCompared.promise,
      afterAppend: async () => {
        if (++appended === 2) bothStored.open();
      },
      beforeCount: () => bothStored.promise,
    });
    let a: Awaited<ReturnType<CoordinatorHarness["request"]>>;
    let b: Awaited<ReturnType<CoordinatorHarness["request"]>>;
    try {
      [a, b] = await appendBoth("pa-both", aBegan.promise);
    } finally {
      h.deps.ledger = real;
    }
    expect(appended).toBe(2);
    for (const answer of [a, b]) {
      expect(answer.status).toBe(409);
      expect(answer.body.error.code).toBe("conflict");
      expect(answer.body.error.details).toHaveLength(3);
    }
    expect(await positions("pa-both")).toEqual([]);
    const batch = await real.getBatch("pa-both");
    expect(batch).toMatchObject({ received: 0, appendsInFlight: 0 });
    expect(await h.drainDoorbells(0)).toEqual([]);

    // One content appended again is stored and published.
    const again = await h.request("POST", "/v1/batches/pa-both:append", { json: appendBody("b") });
    expect(again.status).toBe(200);
    expect(await positions("pa-both")).toEqual([
      [0, "b0"],
      [1, "b1"],
      [2, "b2"],
    ]);
    expect((await h.drainDoorbells(3)).map((d) => d.itemId).sort()).toEqual(["b0", "b1", "b2"]);
  });

  it("the first counted and published before the second stored: the second (begun beside it) withdraws and answers 409", async () => {
    const aBegan = signal();
    const bothCompared = signal();
    const aCounted = signal();
    let compares = 0;
    h.deps.ledger = gatedLedger({
      afterBeginAppend: () => aBegan.open(),
      afterCompare: () => {
        if (++compares === 2) bothCompared.open();
      },
      // a stores once both compared (b saw nothing stored); b stores once a has counted (a saw only
      // its own items, so it goes on and publishes).
      beforeAppend: async (ids) => {
        if (ids[0]?.startsWith("a")) await bothCompared.promise;
        else await aCounted.promise;
      },
      afterCount: () => aCounted.open(),
    });
    let a: Awaited<ReturnType<CoordinatorHarness["request"]>>;
    let b: Awaited<ReturnType<CoordinatorHarness["request"]>>;
    try {
      [a, b] = await appendBoth("pa-order", aBegan.promise);
    } finally {
      h.deps.ledger = real;
    }
    expect(a.status).toBe(200);
    expect(b.status).toBe(409);
    expect(b.body.error.details).toHaveLength(3);
    expect(await positions("pa-order")).toEqual([
      [0, "a0"],
      [1, "a1"],
      [2, "a2"],
    ]);
    expect((await h.drainDoorbells(3)).map((d) => d.itemId).sort()).toEqual(["a0", "a1", "a2"]);
    // `received` is a lower bound (the withdrawal lowered it below b's positions); the seal checks
    // what is stored and finds a's three items.
    expect(await real.getBatch("pa-order")).toMatchObject({ appendsInFlight: 0 });
    const sealed = await h.request("POST", "/v1/batches/pa-order:seal", { json: { total: 3 } });
    expect(sealed.status).toBe(200);
    expect(await real.getBatch("pa-order")).toMatchObject({ status: "running", total: 3, received: 3 });
  });
});
