// Issue #15 item 6 (dependents crawl), end to end: a chain of 10 dependent batches (the fan-out of
// 50 is in dependentsFanOut.test.ts) with the reconciler's schedule at 60 s — here the test never ticks it, so every start is
// event-driven: the finalizer of a parent starts its dependents at once (handlers/finalizeDeps.ts →
// reconciler/startDependents.ts). Each link must start within seconds of its parent's
// finalization, and the whole chain must finish well under one tick per link. The figures are
// printed with console.log.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Batch } from "../../functions/core/model";
import { waitFor } from "../support/cloud";
import { items, type Lifecycle, startLifecycle } from "./support/lifecycleHarness";

const tickSeconds = 60;
let h: Lifecycle;
beforeAll(async () => {
  h = await startLifecycle();
});
afterAll(async () => {
  await h?.close();
});

async function submit(id: string, n: number, dependsOn: string[] = []) {
  const answer = await h.post("/v1/batches", { id, pipeline: "demo", dependsOn, items: items(0, n) });
  expect(answer.status, JSON.stringify(answer.body)).toBe(201);
  expect(answer.body.status).toBe(dependsOn.length > 0 ? "blocked" : "running");
}

async function finished(ids: string[], timeoutMs: number): Promise<Map<string, Batch>> {
  const out = new Map<string, Batch>();
  await waitFor(
    `${ids.length} batches succeeded`,
    async () => {
      for (const id of ids) {
        if (out.has(id)) continue;
        const b = await h.batch(id);
        if (b?.status === "succeeded") out.set(id, b);
      }
      return out.size === ids.length;
    },
    timeoutMs,
    100,
  );
  return out;
}

describe("dependent batches start event-driven (no reconcile tick)", () => {
  it("a chain of 10: each link starts within seconds of its parent's finalization; the chain takes well under a tick per link", async () => {
    const ids = Array.from({ length: 10 }, (_, i) => `chain-${i}`);
    h.hold(ids[0]!); // nothing runs until the whole chain is submitted
    for (const [i, id] of ids.entries()) await submit(id, 3, i === 0 ? [] : [ids[i - 1]!]);
    const t0 = Date.now();
    h.release(ids[0]!);
    const done = await finished(ids, tickSeconds * 1000);
    const wallMs = Math.max(...[...done.values()].map((b) => b.finishedAt!)) - t0;
    const links = ids.slice(1).map((id, i) => done.get(id)!.startedAt! - done.get(ids[i]!)!.finishedAt!);
    console.log(
      `chain of 10 (3 items each, no tick): ${wallMs} ms in all; parent finalized → child started per link (ms): ${links.join(", ")}`,
    );
    for (const ms of links) expect(ms).toBeGreaterThanOrEqual(0);
    expect(Math.max(...links)).toBeLessThan(5_000);
    expect(wallMs).toBeLessThan(tickSeconds * 1000);
    for (const id of ids)
      await h.assertInvariant(
        id,
        items(0, 3).map((i) => i.id),
      );
  });
});
