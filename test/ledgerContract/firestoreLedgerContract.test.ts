// The Ledger contract (ledgerContract.ts) and the store primitives it rests on (storeContract.ts)
// against Firestore on the emulator: the reference behaviour the simulator's in-memory store and
// ledger (memoryLedgerContract.test.ts) must match.
import { type Firestore, type Query, Timestamp, type WriteBatch } from "@google-cloud/firestore";
import { FirestoreLedger } from "../../functions/adapters/firestoreLedger";
import { testFirestore, uniqueProjectId } from "../support/cloud";
import { runLedgerContract } from "./ledgerContract";
import { type QueryShape, runStoreContract } from "./storeContract";

runLedgerContract("FirestoreLedger on the emulator", async () => {
  const db = testFirestore(uniqueProjectId("contract"));
  return {
    newLedger: () => new FirestoreLedger(db),
    close: () => db.terminate(),
  };
});

function queryOf(db: Firestore, q: QueryShape): Query {
  let query: Query = q.parent
    ? db.doc(q.parent).collection(q.collection)
    : q.group
      ? db.collectionGroup(q.collection)
      : db.collection(q.collection);
  for (const [field, op, value] of q.where ?? []) query = query.where(field, op, value);
  for (const [field, dir] of q.orderBy ?? []) query = query.orderBy(field, dir);
  if (q.startAfter) query = query.startAfter(...q.startAfter);
  if (q.limit !== undefined) query = query.limit(q.limit);
  return query;
}

runStoreContract("Firestore on the emulator", async () => {
  const db = testFirestore(uniqueProjectId("primitives"));
  return {
    async get(path) {
      const snap = await db.doc(path).get();
      return { exists: snap.exists, data: snap.data(), updateTime: snap.updateTime ?? null };
    },
    async commit(writes) {
      const wb: WriteBatch = db.batch();
      for (const w of writes) {
        if (w.op === "create") wb.create(db.doc(w.path), w.data);
        else if (w.lastUpdateTime !== undefined)
          wb.update(db.doc(w.path), w.data, { lastUpdateTime: w.lastUpdateTime as Timestamp });
        else wb.update(db.doc(w.path), w.data);
      }
      return (await wb.commit()).map((r) => r.writeTime);
    },
    async readModifyWrite(path, next) {
      let attempts = 0;
      await db.runTransaction(async (tx) => {
        attempts++;
        const snap = await tx.get(db.doc(path));
        tx.update(db.doc(path), next(snap.data() ?? {}));
      });
      return attempts;
    },
    async query(q) {
      return (await queryOf(db, q).get()).docs.map((d) => d.id);
    },
    async count(q) {
      return (await queryOf(db, q).count().get()).data().count;
    },
    sameTime: (a, b) => a instanceof Timestamp && b instanceof Timestamp && a.isEqual(b),
    close: () => db.terminate(),
  };
});
