// Batch dependencies (F7): a chain of 10 runs in order, one parent starts 50 dependents together,
// and a failed parent fails its dependents (and theirs) with the reason. Dependents start when their
// parent is finalized (event-driven, reconciler/startDependents.ts), not on a later tick: here the
// tick finalizes each parent, and the dependency sweep itself finds nothing left to start.
import { afterEach, describe, expect, it } from "vitest";
import { type ReconcilerHarness, startReconcilerHarness } from "./support/reconcilerHarness";

let h: ReconcilerHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe("dependencies", () => {
  it("a chain of 10 batches runs in order, each link started by its parent's finalization", async () => {
    h = await startReconcilerHarness();
    const depth = 10;
    const ids = Array.from({ length: depth }, (_, k) => `chain-${k}`);
    await h.createBatch(ids[0]!, 2);
    for (let k = 1; k < depth; k++) await h.createBatch(ids[k]!, 2, { dependsOn: [ids[k - 1]!] });

    for (let k = 0; k < depth; k++) {
      // Link k runs (its doorbells are out), the rest wait.
      const statuses = (await h.ledger.getBatches(ids)).map((b) => b?.status);
      expect(statuses.slice(0, k).every((s) => s === "succeeded")).toBe(true);
      expect(statuses[k], `link ${k}`).toBe("running");
      expect(statuses.slice(k + 1).every((s) => s === "blocked")).toBe(true);
      if (k > 0) await h.waitForDoorbells(ids[k]!, ["i0", "i1"]);
      // No doorbell for a link that still waits.
      await h.doorbellsSettled();
      expect(h.doorbells.filter((d) => ids.slice(k + 1).includes(d.batchId))).toEqual([]);
      // Its workers finish; the tick finalizes it, which starts the next link at once.
      expect(await h.finishItems(ids[k]!)).toBe(2);
      const tick = await h.tick();
      expect(tick.status).toBe(200);
      expect(tick.body.finalizedBatchIds).toEqual([ids[k]]);
      expect(tick.body.dependencies.started).toBe(0);
      if (k < depth - 1) expect((await h.ledger.getBatch(ids[k + 1]!))?.status).toBe("running");
    }
    const batches = await h.ledger.getBatches(ids);
    expect(batches.every((b) => b?.status === "succeeded")).toBe(true);
    // Each link started only after the one before it finished.
    for (let k = 1; k < depth; k++)
      expect(batches[k]!.startedAt!).toBeGreaterThanOrEqual(batches[k - 1]!.finishedAt!);
  });

  it("one parent → 50 dependents: all start when the parent is finalized", async () => {
    h = await startReconcilerHarness();
    const fanOut = 50;
    await h.createBatch("parent", 3);
    const children = Array.from({ length: fanOut }, (_, k) => `child-${k}`);
    for (const c of children) await h.createBatch(c, 2, { dependsOn: ["parent"] });

    const waiting = await h.tick();
    expect(waiting.status).toBe(200);
    expect(waiting.body.dependencies).toMatchObject({ blocked: fanOut, waiting: fanOut, started: 0 });
    await h.doorbellsSettled();
    expect(h.doorbells.filter((d) => d.batchId.startsWith("child-"))).toHaveLength(0);

    await h.finishItems("parent");
    const tick = await h.tick();
    expect(tick.status).toBe(200);
    expect(tick.body.finalizedBatchIds).toContain("parent");
    console.log(`1 → ${fanOut} fan-out: the tick took ${tick.body.durationMs} ms`);
    // Started by the parent's finalization, before the tick's dependency sweep ran.
    expect(tick.body.dependencies).toMatchObject({ blocked: 0, started: 0, failed: 0 });
    const started = await h.ledger.getBatches(children);
    expect(started.filter((b) => b?.status === "running")).toHaveLength(fanOut);
    for (const c of children) await h.waitForDoorbells(c, ["i0", "i1"]);
    await h.doorbellsSettled();
    const childDoorbells = () => h!.doorbells.filter((d) => d.batchId.startsWith("child-")).length;
    const published = childDoorbells();
    // Started exactly once: an extra tick starts nothing and publishes nothing.
    const after = await h.tick();
    expect(after.status).toBe(200);
    expect(after.body.dependencies).toMatchObject({ blocked: 0, started: 0 });
    await h.doorbellsSettled();
    expect(childDoorbells()).toBe(published);
  });

  it("a failed parent fails its dependents and theirs, with the reason, items failed, batches final", async () => {
    h = await startReconcilerHarness();
    await h.createBatch("p", 2, { failureThreshold: 0 });
    await h.createBatch("d1", 3, { dependsOn: ["p"] });
    await h.createBatch("d2", 2, { dependsOn: ["p", "other"] });
    await h.createBatch("other", 1);
    await h.createBatch("g", 2, { dependsOn: ["d1"] });
    await h.finishItems("p", (id) => id === "i0"); // 1 of 2 failed, threshold 0 → failed
    await h.finishItems("other");

    const first = await h.tick();
    expect(first.status).toBe(200);
    expect((await h.ledger.getBatch("p"))?.status).toBe("failed");
    // Failed by the parent's finalization, and the grandchild by its parent's, in the same tick.
    expect(first.body.dependencies).toMatchObject({ blocked: 0, failed: 0 });
    for (const id of ["d1", "d2"]) {
      const b = await h.ledger.getBatch(id);
      expect(b?.status, id).toBe("failed");
      expect(b?.reason).toMatch(/^dependency p ended failed/);
      const { entries } = await h.ledger.listItems(id, { limit: 10 });
      expect(entries.every((it) => it.status === "failed" && it.error?.kind === "cancelled")).toBe(true);
      expect(entries[0]?.error?.message).toBe(b?.reason);
      expect(b?.summary?.counts.failed).toBe(entries.length);
    }
    // The grandchild failed too, naming the chain.
    const g = await h.ledger.getBatch("g");
    expect(g?.status).toBe("failed");
    expect(g?.reason).toMatch(/^dependency d1 ended failed \(dependency p ended failed/);
    await h.doorbellsSettled();
    expect(h.doorbells.filter((d) => ["d1", "d2", "g"].includes(d.batchId))).toHaveLength(0);
  });
});
