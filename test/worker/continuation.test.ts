// Items longer than a push request (issue #17 §3): continuations. The push subscription's ack deadline
// and the worker's request timeout are both 10 s; an HTTP pipeline of 4 steps, each a call to a real
// local HTTP server that answers after 8.5 s (34 s in all), is pushed by the Pub/Sub emulator to the
// worker. Each request runs one step, checkpoints it, finds the next would not fit in what is left
// of its 10 s (runItem.ts's rule) and hands the item to a fresh delivery as the same attempt. The
// item succeeds once, each step is called exactly once, and the ledger's attempt stays 1: the one
// attempt the first delivery took — every continuation gave its attempt back before the next
// delivery took it again, so no attempt was used up (the x-tally-attempt header is 1 on every call).
// And the pipeline's timeout bounds the whole run across continuations: the same steps under a
// 20-s timeout fail `timeout` in the third step, at about 20 s, though no request ran out.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FirestoreLedger } from "../../functions/adapters/firestoreLedger";
import { testFirestore, testPubSub, uniqueProjectId, waitFor } from "../support/cloud";
import {
  finalizedWithInvariant,
  serveWorkerStack,
  submit,
  TargetServer,
  type WorkerStack,
} from "./support/httpTarget";
import {
  type buildDeps,
  type PushTopology,
  type ServedWorker,
  setProcessEnv,
  tearDown,
  tempDataDir,
  testConfig,
} from "./support/workerHarness";

const projectId = uniqueProjectId("cont");
const db = testFirestore(projectId);
const pubsub = testPubSub(projectId);
const data = tempDataDir();
const target = new TargetServer();
const probe = new FirestoreLedger(db);
const stepMs = 8_500;
const stepNames = ["s1", "s2", "s3", "s4"];

let deps: Awaited<ReturnType<typeof buildDeps>>;
let worker: ServedWorker;
let coordinator: WorkerStack["coordinator"];
let topology: PushTopology;
let restoreEnv = () => {};

beforeAll(async () => {
  await target.start();
  const steps = (prefix: string) =>
    stepNames.map((name) => ({ name, url: target.url(`/${prefix}/${name}`) }));
  const json = JSON.stringify([
    // 60 s for the whole run, though one request has 10 s: continuations make up the difference.
    { name: "long-item", steps: steps("long"), timeoutSeconds: 60, maxAttempts: 2 },
    { name: "long-item-short-budget", steps: steps("short"), timeoutSeconds: 20, maxAttempts: 1 },
  ]);
  restoreEnv = setProcessEnv({ TALLY_HTTP_PIPELINES: json });
  for (const prefix of ["long", "short"])
    for (const name of stepNames)
      target.behaviours.set(`/${prefix}/${name}`, () => ({
        status: 200,
        body: { step: name },
        delayMs: stepMs,
      }));
  const config = testConfig(projectId, data.dir, {
    TALLY_HTTP_PIPELINES: json,
    TALLY_ACK_DEADLINE_SECONDS: "10",
    TALLY_WORKER_TIMEOUT_SECONDS: "10",
  });
  ({ deps, worker, coordinator, topology } = await serveWorkerStack(config, db, pubsub));
});

afterAll(async () => {
  await tearDown(
    [topology?.deadLetters, topology, worker, coordinator, { close: () => target.stop() }, deps],
    { pubsub, db, data },
  );
  restoreEnv();
});

const eventsOf = (batchId: string, event: string) =>
  deps.logs.filter((l) => l.batchId === batchId && l.event === event);

describe("continuations: a 4-step item of 34 s under a 10-s ack deadline", () => {
  it.concurrent("succeeds once, each step called exactly once, attempt 1 throughout", async () => {
    const batchId = `long-${Date.now().toString(36)}`;
    const started = Date.now();
    expect(
      (
        await submit(coordinator.url, {
          id: batchId,
          pipeline: "long-item",
          items: [{ id: "x", payload: { n: 1 } }],
        })
      ).status,
    ).toBe(201);
    const { batch, report } = await finalizedWithInvariant({
      ledger: probe,
      coordinatorUrl: coordinator.url,
      resultsPath: deps.config.env.TALLY_DUCKDB_PATH,
      batchId,
      itemIds: ["x"],
      timeoutMs: 90_000,
    });
    const elapsed = Date.now() - started;
    expect(batch.status).toBe("succeeded");
    expect(report.apiCounts.succeeded).toBe(1);

    const item = await probe.getItem(batchId, "x");
    expect(item).toMatchObject({ status: "succeeded", attempt: 1, result: { step: "s4" } });
    // Each step ran exactly once, in order, every call as attempt 1.
    const calls = target.requests.filter((r) => r.batchId === batchId);
    expect(calls.map((c) => c.step)).toEqual(stepNames);
    expect(calls.map((c) => c.attempt)).toEqual(["1", "1", "1", "1"]);
    // Four requests, one per step: three hand-overs, one success, nothing released or failed.
    expect(eventsOf(batchId, "item.continued").map((l) => l.nextStep)).toEqual(["s2", "s3", "s4"]);
    expect(eventsOf(batchId, "item.leased").map((l) => l.attempt)).toEqual([1, 1, 1, 1]);
    expect(eventsOf(batchId, "item.succeeded")).toHaveLength(1);
    expect(eventsOf(batchId, "item.released")).toEqual([]);
    // The run really outlived a request several times over.
    expect(calls.at(-1)!.at - calls[0]!.at).toBeGreaterThanOrEqual(3 * stepMs);
    console.log(`continuation test: 4 steps of ${stepMs} ms in ${elapsed} ms`);
  });

  it.concurrent("the pipeline's timeout bounds the whole run across continuations", async () => {
    const batchId = `short-${Date.now().toString(36)}`;
    expect(
      (
        await submit(coordinator.url, {
          id: batchId,
          pipeline: "long-item-short-budget",
          items: [{ id: "y", payload: { n: 2 } }],
        })
      ).status,
    ).toBe(201);
    const item = await waitFor(
      "item y failed",
      async () => {
        const it = await probe.getItem(batchId, "y");
        return it?.status === "failed" ? it : null;
      },
      60_000,
      200,
    );
    expect(item).toMatchObject({ attempt: 1, error: { kind: "timeout" } });
    expect(item.error!.message).toMatch(/timed out after 20 s \(its pipeline's timeout, for the whole run\)/);
    // Two steps fit in the 20 s with a hand-over between them; the third was cut off by the budget.
    expect(eventsOf(batchId, "item.continued").map((l) => l.nextStep)).toEqual(["s2", "s3"]);
    const calls = target.requests.filter((r) => r.batchId === batchId).map((c) => c.step);
    expect(calls).toEqual(["s1", "s2", "s3"]);
    // Not cut before its budget; how soon after it depends on the machine's load (a loaded run took
    // over 25 s), and that the run ended at the budget is what the calls and the error above say.
    expect(item.finishedAt! - item.runStartedAt!).toBeGreaterThanOrEqual(20_000);
  });
});
