// A batch id used again after retention deleted its predecessor (issue #15 item 5): the new batch is
// exported on its own — its export id carries its incarnation (the batch's creation time), so the
// predecessor's export marker is not taken for its own — and the predecessor's rows stay as they were.
import { afterEach, describe, expect, it } from "vitest";
import { queryResults } from "../../functions/adapters/duckdbResultSink";
import { batchesCollection, itemsCollection } from "../../functions/adapters/firestoreIndexes";
import { waitFor } from "../support/cloud";
import { type ReconcilerHarness, startReconcilerHarness } from "./support/reconcilerHarness";

let h: ReconcilerHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

/** What Firestore's TTL policy does to an expired batch: its document and its items are gone. */
async function deleteAsRetentionWould(harness: ReconcilerHarness, batchId: string): Promise<void> {
  const { db } = harness;
  await db.recursiveDelete(db.collection(batchesCollection).doc(batchId));
  const left = await db.collectionGroup(itemsCollection).where("batchId", "==", batchId).get();
  await Promise.all(left.docs.map((d) => d.ref.delete()));
  expect(await harness.ledger.getBatch(batchId)).toBeNull();
}

async function runToFinal(harness: ReconcilerHarness, batchId: string) {
  await harness.finishItems(batchId);
  const tick = await harness.tick();
  expect(tick.status).toBe(200);
  return waitFor(`${batchId} final`, async () => {
    const b = await harness.ledger.getBatch(batchId);
    return b?.status === "succeeded" ? b : null;
  });
}

describe("a batch id reused after its predecessor was deleted", () => {
  it("is exported on its own, and the predecessor's rows stay as they were", async () => {
    h = await startReconcilerHarness();
    const first = await h.createBatch("reused", 4, { at: Date.now() - 60_000 });
    const firstFinal = await runToFinal(h, "reused");
    expect(firstFinal.summary).toMatchObject({ exportedRows: 4 });

    await deleteAsRetentionWould(h, "reused");
    const second = await h.createBatch("reused", 2);
    expect(second.createdAt).not.toBe(first.createdAt);
    const secondFinal = await runToFinal(h, "reused");

    // Its own export: a second marker, its two rows written (the old code found the predecessor's
    // marker under the same export id and exported nothing).
    expect(secondFinal.summary).toMatchObject({ exportedRows: 2 });
    expect(secondFinal.summary!.exportId).not.toBe(firstFinal.summary!.exportId);
    expect(await h.exportsInSink("reused")).toBe(2);
    expect(await h.sink.countRows("reused")).toBe(2); // the id's current incarnation
    const perIncarnation = await queryResults(
      h.duckdbPath,
      "SELECT epoch_ms(batch_created_at) AS created, count(*) AS n FROM item_results WHERE batch_id = $1 GROUP BY 1 ORDER BY 1",
      ["reused"],
    );
    expect(perIncarnation).toEqual([
      { created: first.createdAt, n: 4 },
      { created: second.createdAt, n: 2 },
    ]);
  });
});
