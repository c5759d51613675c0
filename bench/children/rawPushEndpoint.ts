// The raw op-mix endpoint (the end-to-end baseline, DESIGN.md §9): a bare Pub/Sub push endpoint
// that, per delivery, does the same Firestore work a Tally worker does per item — reads of the item
// document, read+write transactions on it, writes to it (each conditional on the last update time
// seen, as the ledger's optimistic writes are) and existence queries — with none of Tally's logic
// (no validation, pipeline, leases, errors, logging). The counts come from the environment (set
// from the operations the worker was measured to do per item). It reports its completed deliveries on stdout as
// "done N" lines so the bench can tell when all items are through.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Firestore, type Timestamp } from "@google-cloud/firestore";

const projectId = process.env.GOOGLE_CLOUD_PROJECT!;
const transactions = Number(process.env.BENCH_RAW_TRANSACTIONS ?? 0);
const queries = Number(process.env.BENCH_RAW_QUERIES ?? 1);
const plainReads = Number(process.env.BENCH_RAW_READS ?? 1);
const plainWrites = Number(process.env.BENCH_RAW_WRITES ?? 2);
const db = new Firestore({ projectId, ignoreUndefinedProperties: true, preferRest: false });

let done = 0;
let reported = -1;
setInterval(() => {
  if (done !== reported) {
    reported = done;
    process.stdout.write(`done ${done}\n`);
  }
}, 100).unref();

async function handle(attrs: Record<string, string>): Promise<void> {
  const batch = db.collection("batches").doc(attrs.batchId!);
  const item = batch.collection("items").doc(attrs.itemId!);
  let updateTime: Timestamp | undefined;
  let attempt = 0;
  for (let i = 0; i < plainReads; i++) {
    const snap = await item.get();
    updateTime = snap.updateTime;
    attempt = snap.get("attempt") ?? 0;
  }
  for (let t = 0; t < transactions; t++) {
    await db.runTransaction(
      async (tx) => {
        const snap = await tx.get(item);
        const now = Date.now();
        tx.update(item, {
          attempt: (snap.get("attempt") ?? 0) + 1,
          leaseUntil: now + 60_000,
          updatedAt: now,
        });
      },
      { maxAttempts: 25 },
    );
  }
  for (let w = 0; w < plainWrites; w++) {
    const now = Date.now();
    const last = w === plainWrites - 1;
    const patch = last
      ? {
          status: "succeeded",
          result: { value: null, attempt: attempt + 1, steps: 1 },
          finishedAt: now,
          updatedAt: now,
        }
      : { status: "running", attempt: attempt + 1, leaseUntil: now + 60_000, updatedAt: now };
    const res = updateTime
      ? await item.update(patch, { lastUpdateTime: updateTime })
      : await item.update(patch);
    updateTime = res.writeTime;
  }
  for (let q = 0; q < queries; q++)
    await batch.collection("items").where("status", "in", ["pending", "running"]).limit(1).select().get();
}

const server = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", () => {
    let attrs: Record<string, string>;
    try {
      attrs = JSON.parse(Buffer.concat(chunks).toString()).message.attributes;
    } catch {
      res.writeHead(204).end();
      return;
    }
    handle(attrs).then(
      () => {
        done++;
        res.writeHead(204).end();
      },
      () => res.writeHead(500).end(),
    );
  });
});
server.keepAliveTimeout = 30_000;
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`listening ${(server.address() as AddressInfo).port}\n`);
});
process.on("SIGTERM", () => {
  server.close();
  void db.terminate().finally(() => process.exit(0));
});
