// A submission over 32 MiB through the deployed path (issue #15 item 9): the coordinator served by
// the Functions Framework (which buffers every body), behind a front that refuses requests over
// 32 MiB with 413 as Cloud Run does, a worker behind a real push subscription, the DuckDB sink.
// As one request the batch is refused by the front; with the typed client (open / append / seal)
// it goes through — interrupted by the client half-way (its in-flight request aborted) and resumed
// from the stored prefix: every item stored once, the batch finalized, succeeded = total, one sink
// row per item. Payloads are ~28 KB so the batch is > 32 MiB with few items (the test stays fast).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testFirestore, testPubSub, uniqueProjectId, waitFor } from "../support/cloud";
import {
  buildDeps,
  type PushTopology,
  provisionPush,
  type ServedWorker,
  serveWorker,
  tempDataDir,
  testConfig,
} from "../worker/support/workerHarness";
import {
  expectRefusedAsOneRequest,
  serveCoordinatorBehindFront,
  submitInterruptedThenResumed,
} from "./support/bigSubmission";

const projectId = uniqueProjectId("big");
const db = testFirestore(projectId);
const pubsub = testPubSub(projectId);
const data = tempDataDir();
const config = testConfig(projectId, data.dir);

let deps: Awaited<ReturnType<typeof buildDeps>>;
let worker: ServedWorker;
let topology: PushTopology;
let coordinator: Awaited<ReturnType<typeof serveCoordinatorBehindFront>>;
const front = () => coordinator.front;

beforeAll(async () => {
  deps = await buildDeps(config, db, pubsub);
  worker = await serveWorker(deps);
  topology = await provisionPush(pubsub, config, worker.url);
  // Deployed settings, except 100-item chunks: the Firestore emulator takes no request over 4 MiB
  // (its gRPC message cap; a larger commit hangs), and 500 items of ~28 KB are ~14 MB. Firestore
  // itself takes 10 MiB, which the ledger's commit groups (≤ ~8 MiB) respect.
  coordinator = await serveCoordinatorBehindFront(deps, { chunkItems: 100 });
});

afterAll(async () => {
  await coordinator?.close();
  await worker?.close();
  await topology?.close();
  await deps?.close();
  await Promise.allSettled([pubsub.close(), db.terminate()]);
  data.remove();
});

const n = 1_300;
const filler = "x".repeat(28_000);
/** The source, generated one item at a time (the client never holds the batch). */
function* source() {
  for (let i = 0; i < n; i++) yield { payload: { value: `${filler}-${i}` } };
}
const header = { id: "over-32mib", pipeline: "demo" };

describe("a submission over 32 MiB against the deployed path", () => {
  it("is refused as one request; goes through open/append/seal, interrupted half-way and resumed", {
    // The deadline of a hang, not a timing: the emulator pushes two messages at a time, so running
    // 1,300 items of 28 KB takes about 100 s on a loaded 2-core machine after a 25-s submission.
    timeout: 330_000,
  }, async () => {
    const started = Date.now();
    // As one request: the front refuses it before the coordinator sees it.
    await expectRefusedAsOneRequest(front(), deps.ledger, { ...header, items: [...source()] });

    // The client, stopped half-way (the append in flight when it stops is aborted), then resumed
    // from the stored prefix.
    const { half, resumed } = await submitInterruptedThenResumed({
      frontUrl: front().url,
      ledger: deps.ledger,
      header,
      source,
      n,
      client: { maxBytesPerRequest: 4 * 1024 * 1024 },
    });
    expect(front().stats.refused).toBe(1);
    expect(front().stats.largestForwardedBytes).toBeLessThanOrEqual(4 * 1024 * 1024 + 64 * 1024);
    const bytes = n * Buffer.byteLength(JSON.stringify({ payload: { value: `${filler}-${n}` } }));
    console.log(
      `submitted ${n} items (${(bytes / 2 ** 20).toFixed(1)} MiB) in ${front().stats.forwarded} requests through the front; resumed at ${resumed.resumedAt}; ${Date.now() - started} ms`,
    );

    // The workers run every item; the batch finalizes with one row per item.
    await waitFor(
      "the batch finalized",
      async () =>
        ["succeeded", "partial", "failed"].includes((await deps.ledger.getBatch(header.id))?.status ?? ""),
      270_000,
    );
    const batch = await deps.ledger.getBatch(header.id);
    expect(batch).toMatchObject({ status: "succeeded", total: n });
    expect(batch?.summary?.counts).toEqual({ total: n, pending: 0, running: 0, succeeded: n, failed: 0 });
    expect(await deps.ledger.countItems(header.id)).toEqual({
      total: n,
      pending: 0,
      running: 0,
      succeeded: n,
      failed: 0,
    });
    expect(await deps.sink.countRows(header.id)).toBe(n);
    // Each item once, at its position, with its own payload.
    for (const i of [0, Math.floor(n / 2), half - 1, half, n - 1]) {
      const it = await deps.ledger.getItem(header.id, String(i));
      expect(it).toMatchObject({ seq: i, status: "succeeded", payload: { value: `${filler}-${i}` } });
    }
    console.log(`finalized ${Date.now() - started} ms after the start`);
  });
});
