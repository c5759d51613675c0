// `tally` end to end as a real child process against a real stack in this process: the coordinator
// (with the dashboard mounted) on a streaming server, the worker behind a real Pub/Sub push
// subscription on the emulator, the reconciler, Firestore as the ledger and DuckDB as the sink.
// Checks exit codes by outcome, the progress and outcome lines, the API's errors as the API words
// them, file submissions (JSON and NDJSON, sent with open/append/seal by the typed client),
// idempotent re-submission, --resume, cancel, retry and reconcile.
import { writeFileSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { http } from "@google-cloud/functions-framework";
import { getTestServer } from "@google-cloud/functions-framework/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDashboard } from "../../functions/dashboard";
import { createCoordinatorHandler } from "../../functions/handlers/coordinator";
import { createReconcilerHandler } from "../../functions/handlers/reconciler/reconcilerHandler";
import { type StreamingServer, startStreamingServer } from "../../functions/http/streamingServer";
import { testFirestore, testPubSub, uniqueProjectId } from "../support/cloud";
import {
  buildDeps,
  type PushTopology,
  provisionPush,
  type ServedWorker,
  serveWorker,
  tempDataDir,
  testConfig,
} from "../worker/support/workerHarness";
import { lastLine, runTally } from "./cliRunner";

const projectId = uniqueProjectId("cli");
const db = testFirestore(projectId);
const pubsub = testPubSub(projectId);
const data = tempDataDir();
const config = testConfig(projectId, data.dir);

let deps: Awaited<ReturnType<typeof buildDeps>>;
let worker: ServedWorker;
let topology: PushTopology;
let coordinator: StreamingServer;
let reconciler: { url: string; close(): Promise<void> };
let env: Record<string, string>;

beforeAll(async () => {
  deps = await buildDeps(config, db, pubsub);
  worker = await serveWorker(deps);
  topology = await provisionPush(pubsub, config, worker.url);
  coordinator = await startStreamingServer(
    createCoordinatorHandler(deps, { dashboard: createDashboard(deps), cursorIntervalMs: 100 }),
  );
  const name = `cli-test-reconciler-${process.pid}`;
  http(name, createReconcilerHandler(deps));
  const server: Server = getTestServer(name);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  reconciler = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  env = { TALLY_URL: coordinator.url, TALLY_RECONCILER_URL: reconciler.url };
});

afterAll(async () => {
  await reconciler?.close();
  await coordinator?.close();
  await worker?.close();
  await topology?.close();
  await deps?.close();
  data.remove();
});

const tally = (...args: string[]) => runTally(args, env);

describe("tally against a running stack", () => {
  it("submit --demo --watch ends partial with exit 2, showing progress and the outcome line", async () => {
    // 20 items: 4 fail transiently (1-2 times, then succeed), 2 fail permanently; 10% ≤ 20%.
    const r = await tally(
      "submit",
      "--demo",
      "20",
      "--fail-rate",
      "0.2",
      "--permanent-rate",
      "0.1",
      "--threshold",
      "0.2",
      "--id",
      "cli-partial",
      "--watch",
      "--interval",
      "0.2",
    );
    expect(r.stderr).toBe("");
    expect(r.code).toBe(2);
    const lines = r.stdout.trim().split("\n");
    expect(lines[0]).toMatch(
      /^batch cli-partial created: pipeline demo, 20 items, (running|finalizing|partial)$/,
    );
    // Not a terminal: plain progress lines, then the outcome.
    expect(
      lines.some((l) =>
        / batch cli-partial running: \d+\/20 done \(\d+%\) — succeeded \d+, failed \d+/.test(l),
      ),
    ).toBe(true);
    expect(lastLine(r.stdout)).toMatch(
      /^batch cli-partial: partial — total 20, succeeded 18, failed 2 \(permanent 2\) in \d+\.\d s$/,
    );
    const counts = await deps.ledger.countItems("cli-partial");
    expect(counts).toEqual({ total: 20, pending: 0, running: 0, succeeded: 18, failed: 2 });
  });

  it("a batch that succeeds exits 0; one above its threshold exits 3", async () => {
    const ok = await tally("submit", "--demo", "12", "--id", "cli-ok", "--watch", "--interval", "0.2");
    expect(ok.code).toBe(0);
    expect(lastLine(ok.stdout)).toMatch(/^batch cli-ok: succeeded — total 12, succeeded 12, failed 0 in /);

    const bad = await tally(
      "submit",
      "--demo",
      "10",
      "--permanent-rate",
      "0.5",
      "--id",
      "cli-failed",
      "--watch",
    );
    expect(bad.code).toBe(3);
    expect(lastLine(bad.stdout)).toMatch(
      /^batch cli-failed: failed — total 10, succeeded 5, failed 5 \(permanent 5\)/,
    );
  });

  it("status reports the batch and exits by its outcome", async () => {
    const r = await tally("status", "cli-partial");
    expect(r.code).toBe(2);
    expect(r.stdout).toContain("batch cli-partial");
    expect(r.stdout).toContain("status     partial");
    expect(r.stdout).toContain("items      20: succeeded 18, failed 2, running 0, pending 0");
    expect(r.stdout).toContain("failures   permanent 2");
    expect(r.stdout).toContain("threshold  0.2");

    const json = await tally("status", "cli-ok", "--json");
    expect(json.code).toBe(0);
    const body = JSON.parse(json.stdout);
    expect(body).toMatchObject({ id: "cli-ok", status: "succeeded", counts: { succeeded: 12, failed: 0 } });

    const watched = await tally("status", "cli-failed", "--watch");
    expect(watched.code).toBe(3);
    expect(lastLine(watched.stdout)).toMatch(/^batch cli-failed: failed — total 10/);
  });

  it("items lists a batch's items with their errors, paged up to --limit", async () => {
    const failed = await tally("items", "cli-partial", "--status", "failed");
    expect(failed.code).toBe(0);
    const rows = failed.stdout.trim().split("\n");
    expect(rows[0]).toMatch(/^ITEM\s+STATUS\s+ATTEMPT\s+TOOK\s+ERROR$/);
    expect(rows).toHaveLength(3);
    for (const row of rows.slice(1))
      expect(row).toMatch(
        /^item-\d\d\s+failed\s+1\s+[\d.]+ s\s+permanent: .*demo: permanent failure requested by the payload$/,
      );

    const some = await tally("items", "cli-partial", "--limit", "5");
    expect(some.stdout.trim().split("\n")).toHaveLength(1 + 5 + 1);
    expect(lastLine(some.stdout)).toBe("… more items: raise --limit (now 5)");

    const json = await tally("items", "cli-ok", "--json", "--limit", "20");
    const parsed = JSON.parse(json.stdout);
    expect(parsed.items).toHaveLength(12);
    expect(parsed.nextPageToken ?? null).toBeNull();
  });

  it("shows the API's errors as the API words them, with exit 1", async () => {
    const missing = await tally("status", "no-such-batch");
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim()).toBe('error 404 not_found: no batch "no-such-batch"');

    const unknownPipeline = join(data.dir, "unknown-pipeline.json");
    writeFileSync(unknownPipeline, JSON.stringify({ pipeline: "nope", items: [{ payload: {} }] }));
    const nope = await tally("submit", "--file", unknownPipeline);
    expect(nope.code).toBe(1);
    expect(nope.stderr).toMatch(/^error 404 not_found: unknown pipeline "nope"/);
    expect(nope.stderr).toContain("  - pipeline: no pipeline with this name");

    const invalid = join(data.dir, "invalid.json");
    writeFileSync(invalid, JSON.stringify([{ payload: { bogus: 1 } }, { payload: { failTimes: -3 } }]));
    const bad = await tally("submit", "--file", invalid, "--pipeline", "demo", "--id", "cli-invalid");
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^error 400 invalid_argument: /);
    expect(bad.stderr).toMatch(/ {2}- items\[0\]\.payload[^\n]*bogus/);
    expect(bad.stderr).toMatch(/ {2}- items\[1\]\.payload\.failTimes: /);
    // Sent as open/append/seal: the batch was opened, the refused append stored nothing, and the
    // answer says how to go on.
    expect(bad.stderr).toContain(
      "  - batch: cli-invalid is submitting and holds 0 items: fix the source and run again with --id cli-invalid --resume",
    );
    expect(await deps.ledger.getBatch("cli-invalid")).toMatchObject({ status: "submitting", received: 0 });
    expect(await deps.ledger.countItems("cli-invalid")).toMatchObject({ total: 0 });
  });

  it("submits .json and .ndjson files, and a re-submission of the same content is recognised", async () => {
    const jsonFile = join(data.dir, "items.json");
    writeFileSync(
      jsonFile,
      JSON.stringify({
        items: [
          { id: "a", payload: { value: 1 } },
          { id: "b", payload: {} },
        ],
      }),
    );
    const json = await tally(
      "submit",
      "--file",
      jsonFile,
      "--pipeline",
      "demo",
      "--id",
      "cli-json",
      "--watch",
    );
    expect(json.code).toBe(0);
    // Live workers may finish two items before the answer is written: running, finalizing or done.
    expect(json.stdout.split("\n")[0]).toMatch(
      /^batch cli-json created: pipeline demo, 2 items, (running|finalizing|succeeded)$/,
    );

    // An NDJSON file with its own header line: the flags override it.
    const ndjsonFile = join(data.dir, "items.ndjson");
    const lines = [
      JSON.stringify({ pipeline: "demo", id: "from-the-file", failureThreshold: 0.5 }),
      ...Array.from({ length: 30 }, (_, i) => JSON.stringify({ id: `n${i}`, payload: { value: i } })),
    ];
    writeFileSync(ndjsonFile, `${lines.join("\n")}\n`);
    const nd = await tally(
      "submit",
      "--file",
      ndjsonFile,
      "--id",
      "cli-ndjson",
      "--watch",
      "--interval",
      "0.2",
    );
    expect(nd.code).toBe(0);
    expect(lastLine(nd.stdout)).toMatch(/^batch cli-ndjson: succeeded — total 30, succeeded 30, failed 0/);
    expect((await deps.ledger.getBatch("cli-ndjson"))?.failureThreshold).toBe(0.5);

    const again = await tally("submit", "--file", ndjsonFile, "--id", "cli-ndjson");
    expect(again.code).toBe(0);
    expect(again.stdout.split("\n")[0]).toBe(
      "batch cli-ndjson already exists with the same content: succeeded",
    );

    const conflicting = await tally("submit", "--demo", "3", "--id", "cli-ndjson");
    expect(conflicting.code).toBe(1);
    expect(conflicting.stderr).toMatch(/^error 409 conflict: /);
  });

  it("--resume goes on from the items an interrupted submit stored, and the batch runs to its end", async () => {
    const file = join(data.dir, "resume.ndjson");
    const rows = Array.from({ length: 30 }, (_, i) => JSON.stringify({ id: `r${i}`, payload: { value: i } }));
    writeFileSync(file, `${rows.join("\n")}\n`);
    // An earlier run opened the batch and got 12 items stored before it was interrupted.
    const post = (path: string, body: string, type = "application/json") =>
      fetch(`${coordinator.url}${path}`, { method: "POST", headers: { "content-type": type }, body });
    expect(
      (await post("/v1/batches", JSON.stringify({ id: "cli-resume", pipeline: "demo", open: true }))).status,
    ).toBe(201);
    const first = await post(
      "/v1/batches/cli-resume:append?offset=0",
      `${rows.slice(0, 12).join("\n")}\n`,
      "application/x-ndjson",
    );
    expect(first.status).toBe(200);

    const r = await tally(
      "submit",
      "--file",
      file,
      "--pipeline",
      "demo",
      "--id",
      "cli-resume",
      "--resume",
      "--watch",
      "--interval",
      "0.2",
    );
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n")[0]).toMatch(
      /^batch cli-resume resumed at item 12: pipeline demo, 30 items, (running|finalizing|succeeded)$/,
    );
    expect(lastLine(r.stdout)).toMatch(/^batch cli-resume: succeeded — total 30, succeeded 30, failed 0/);
    const { entries } = await deps.ledger.listItems("cli-resume", { limit: 100 });
    expect(entries.map((it) => it.itemId)).toEqual(rows.map((_, i) => `r${i}`));

    // Sealed and finished: a further --resume has nothing to send.
    const again = await tally(
      "submit",
      "--file",
      file,
      "--pipeline",
      "demo",
      "--id",
      "cli-resume",
      "--resume",
    );
    expect(again.code).toBe(0);
    expect(again.stdout.split("\n")[0]).toBe(
      "batch cli-resume resumed at item 30: pipeline demo, 30 items, succeeded",
    );
  });

  it("cancel ends a live batch as cancelled (exit 3 once final)", async () => {
    const slow = join(data.dir, "slow.json");
    writeFileSync(
      slow,
      JSON.stringify(Array.from({ length: 8 }, (_, i) => ({ id: `s${i}`, payload: { sleepMs: 1500 } }))),
    );
    const sub = await tally("submit", "--file", slow, "--pipeline", "demo", "--id", "cli-cancel");
    expect(sub.code).toBe(0);
    expect(sub.stdout).toContain("follow it: tally status cli-cancel --watch");

    const cancel = await tally("cancel", "cli-cancel");
    expect(cancel.stderr).toBe("");
    expect(cancel.code).toBe(0);
    expect(cancel.stdout).toMatch(
      /^batch cli-cancel: cancel requested \(\w+\); pending items fail as "cancelled"/,
    );

    const watched = await tally("status", "cli-cancel", "--watch", "--interval", "0.2");
    expect(watched.code).toBe(3);
    expect(lastLine(watched.stdout)).toMatch(/^batch cli-cancel: cancelled — total 8, /);

    const again = await tally("cancel", "cli-cancel");
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^error 409 failed_precondition: batch "cli-cancel" is already cancelled/);
  });

  it("retry re-runs the failed items in a new generation and watches them", async () => {
    const r = await tally("retry", "cli-partial", "--watch", "--interval", "0.2");
    expect(r.stderr).toBe("");
    // The permanent failures fail again: still partial.
    expect(r.code).toBe(2);
    expect(r.stdout.split("\n")[0]).toMatch(
      /^batch cli-partial: retrying its failed items \(generation 2\): /,
    );
    expect(lastLine(r.stdout)).toMatch(
      /^batch cli-partial: partial — total 20, succeeded 18, failed 2 \(permanent 2\)/,
    );
    expect((await deps.ledger.getBatch("cli-partial"))?.generation).toBe(2);
  });

  it("reconcile runs one reconciler pass and prints its summary", async () => {
    const r = await tally("reconcile");
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.stdout);
    expect(typeof summary).toBe("object");
    expect(summary).not.toBeNull();
  });

  it("the coordinator serves the dashboard with the CLI's batches", async () => {
    const res = await fetch(`${coordinator.url}/`);
    expect(res.status).toBe(200);
    const page = await res.text();
    for (const id of ["cli-partial", "cli-ok", "cli-failed", "cli-ndjson", "cli-cancel"])
      expect(page).toContain(`data-batch-id="${id}"`);
    const batchPage = await fetch(`${coordinator.url}/batches/cli-partial`);
    expect(batchPage.status).toBe(200);
    expect(await batchPage.text()).toContain('data-kind="permanent" data-count="2"');
  });
});
