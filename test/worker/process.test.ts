// Workers in their own processes (Functions Framework CLI, as deployed) that die or are told to
// stop mid-item (F9): a multi-step item killed after step 2 resumes at step 3 without re-running
// steps 1–2; SIGTERM mid-step releases the lease, answers non-2xx and the item is completed by
// another worker within the retry backoff plus a few seconds.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FirestoreLedger } from "../../functions/adapters/firestoreLedger";
import type { Item } from "../../functions/core/model";
import { testFirestore, testPubSub, uniqueProjectId, waitFor } from "../support/cloud";
import { type ChildWorker, startChildWorker } from "./support/childWorker";
import { Switchboard } from "./support/switchboard";
import { testPipelineLookup } from "./support/testPipelines";
import {
  buildDeps,
  type PushTopology,
  provisionPush,
  type ServedWorker,
  serveWorker,
  submitBatch,
  tempDataDir,
  testConfig,
  workerEnv,
} from "./support/workerHarness";

const projectId = uniqueProjectId("wproc");
const db = testFirestore(projectId);
const pubsub = testPubSub(projectId);
const data = tempDataDir();
const config = testConfig(projectId, data.dir);
const probe = new FirestoreLedger(db);

let deps: Awaited<ReturnType<typeof buildDeps>>;
let survivor: ServedWorker;
let switchboard: Switchboard;
let topology: PushTopology;
const children: ChildWorker[] = [];

beforeAll(async () => {
  deps = await buildDeps(config, db, pubsub);
  survivor = await serveWorker(deps, { pipelines: testPipelineLookup, instanceId: "survivor" });
  switchboard = new Switchboard();
  await switchboard.start();
  topology = await provisionPush(pubsub, config, switchboard.url);
});

afterAll(async () => {
  for (const c of children)
    if (c.process.exitCode === null && c.process.signalCode === null) c.kill("SIGKILL");
  await topology?.close();
  await survivor?.close();
  await switchboard?.close();
  await deps?.close();
  await pubsub.close();
  await db.terminate();
  data.remove();
});

async function child(over: Record<string, string> = {}): Promise<ChildWorker> {
  const c = await startChildWorker(workerEnv(projectId, data.dir, over));
  children.push(c);
  return c;
}
const item = async (batchId: string, itemId: string): Promise<Item> =>
  (await probe.getItem(batchId, itemId))!;

describe("a worker process that dies", () => {
  it("resumes a multi-step item killed after step 2 at step 3, without re-running steps 1–2", async () => {
    const doomed = await child({ TALLY_LEASE_SECONDS: "2" });
    switchboard.target = doomed.url;
    const { batchId, refs } = await submitBatch(deps, "demo", [
      { itemId: "resumable", payload: { steps: 3, crash: 1, value: "r" } },
    ]);
    expect(await doomed.exited).toBe(1); // process.exit(1) in step 3 of attempt 1
    switchboard.target = survivor.url;
    const afterCrash = await item(batchId, "resumable");
    expect(afterCrash).toMatchObject({ status: "running", attempt: 1 });
    expect(Object.keys(afterCrash.steps).sort()).toEqual(["step-1", "step-2"]);

    // Its lease runs out (nobody heartbeats it); then the reconciler's redrive republishes it. A
    // Pub/Sub redelivery that arrives after the expiry may take it first — either way, attempt 2.
    await waitFor(
      "the dead worker's lease to expire",
      async () => (await item(batchId, "resumable")).lease!.until < Date.now(),
    );
    await deps.ledger.redriveItem(refs[0]!, config.topology.delivery.maxItemAttempts, Date.now());
    await deps.queue.publish("demo", refs);

    const done = await waitFor("resumed and succeeded", async () => {
      const i = await item(batchId, "resumable");
      return i.status === "succeeded" ? i : null;
    });
    expect(done).toMatchObject({ attempt: 2, result: { value: "r", attempt: 2, steps: 3 } });
    // Steps 1–2 kept their checkpoints (same finishedAt); only step 3 ran on the second attempt.
    expect(done.steps).toEqual(afterCrash.steps);
    const succeeded = deps.logs.find((l) => l.event === "item.succeeded" && l.itemId === "resumable");
    expect(succeeded).toMatchObject({ attempt: 2, stepsRun: ["step-3"] });
  });
});

describe("SIGTERM mid-step", () => {
  it("releases the lease at once, answers non-2xx, and another worker completes the item within the backoff + 5 s", async () => {
    const leaving = await child({ TALLY_TEST_SLOW: "1" });
    switchboard.target = leaving.url;
    const { batchId } = await submitBatch(deps, "test-slow-first", [
      { itemId: "handover", payload: { firstAttemptMs: 60_000 } },
    ]);
    await waitFor(
      "running in the leaving worker",
      async () => (await item(batchId, "handover")).status === "running",
    );
    switchboard.target = survivor.url;

    const sigtermAt = Date.now();
    leaving.kill("SIGTERM");
    expect(await leaving.exited).toBe(0);
    const exitMs = Date.now() - sigtermAt;
    const done = await waitFor("completed by the survivor", async () => {
      const i = await item(batchId, "handover");
      return i.status === "succeeded" ? i : null;
    });
    const handoverMs = done.finishedAt! - sigtermAt;
    console.log(`SIGTERM → process exit ${exitMs} ms; SIGTERM → item completed elsewhere ${handoverMs} ms`);

    // The interrupted delivery was answered 503 (not dropped) and the lease released with a reason.
    const first = switchboard.deliveriesOf("handover")[0]!;
    expect(first.status).toBe(503);
    expect(done.lastError?.message).toContain("the worker shut down");
    // The shutdown release gave the attempt back (issue #15 item 8): the survivor ran attempt 1 again.
    expect(done).toMatchObject({ attempt: 1, result: { attempt: 1, pid: process.pid } });
    // Cloud Run kills 10 s after SIGTERM; redelivery comes after the retry policy's backoff.
    expect(exitMs).toBeLessThan(10_000);
    expect(handoverMs).toBeLessThan(config.topology.delivery.maximumBackoffSeconds * 1000 + 5000);
    expect(leaving.output.join("\n")).toContain("item.released");
  });
});
