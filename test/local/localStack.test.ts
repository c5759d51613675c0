// The local stack end to end, started programmatically as the chaos suite and the benchmarks do:
// real emulators, the three handlers as separate processes, the front door, the scheduler loop.
// A batch submitted over HTTP finishes with the ledger invariant holding; a SIGKILLed worker is
// restarted and its item is back in play within lease + one tick; stop leaves no process behind.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DuckDBInstance } from "@duckdb/node-api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  assertLedgerInvariant,
  checkLedgerInvariant,
  fetchAllItems,
  formatInvariantReport,
  InvariantViolationError,
} from "../../local/invariant";
import { type LocalStack, startLocalStack } from "../../local/localStack";
import { waitFor } from "../../local/waitFor";

const leaseSeconds = 4;
const tickSeconds = 1;

async function submit(
  stack: LocalStack,
  body: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${stack.urls.coordinator}/v1/batches`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

async function batchStatus(stack: LocalStack, id: string): Promise<string> {
  const res = await fetch(`${stack.urls.coordinator}/v1/batches/${id}`);
  return String(((await res.json()) as { status: string }).status);
}

const final = ["succeeded", "partial", "failed", "cancelled"];

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Processes whose process group is one of `pgids` (the emulators' Java children included). */
function membersOfGroups(pgids: number[]): string[] {
  const out = execFileSync("ps", ["-eo", "pid=,pgid=,args="], { encoding: "utf8" });
  return out
    .split("\n")
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 2 && pgids.includes(Number(f[1])))
    .map((f) => f.join(" "));
}

describe("local stack", () => {
  let stack: LocalStack;
  let dataDir: string;
  const logs: string[] = [];
  /** Every pid the stack ever ran, restarted processes included. */
  const seenPids = new Set<number>();
  const reconcilerEvents = () =>
    logs
      .filter((l) => l.startsWith("[reconciler] {"))
      .map(
        (l) =>
          JSON.parse(l.slice("[reconciler] ".length)) as {
            event?: string;
            itemId?: string;
            time: string;
            durationMs?: number;
          },
      );
  const remember = () => {
    const p = stack.pids;
    for (const pid of [p.coordinator, p.reconciler, ...p.workers, ...p.emulators]) if (pid) seenPids.add(pid);
  };

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "tally-stack-"));
    const started = Date.now();
    stack = await startLocalStack({
      port: 0,
      workers: 2,
      tickSeconds,
      dataDir: join(dataDir, "data"),
      delivery: { leaseSeconds, minimumBackoffSeconds: 1, maximumBackoffSeconds: 5, ackDeadlineSeconds: 60 },
      quiet: true,
      output: (line) => logs.push(line),
      onLog: (source, line) => logs.push(`[${source}] ${line}`),
    });
    console.log(`local stack ready in ${Date.now() - started} ms`);
    remember();
  });

  afterAll(async () => {
    await stack?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("prints the ready block in the documented form", () => {
    const lines = stack.readyLines;
    expect(lines[0]).toBe(`coordinator: ${stack.urls.coordinator}`);
    expect(lines[1]).toBe(`dashboard: ${stack.urls.coordinator}/`);
    // Two workers per pipeline, numbered across the groups, each line naming its pipeline.
    expect(lines[2]).toMatch(/^worker 1 \(demo\): http:\/\/127\.0\.0\.1:\d+ pid \d+$/);
    expect(lines[3]).toMatch(/^worker 2 \(demo\): http:\/\/127\.0\.0\.1:\d+ pid \d+$/);
    expect(lines[4]).toMatch(/^worker 3 \(text-stats\): http:\/\/127\.0\.0\.1:\d+ pid \d+$/);
    expect(lines[5]).toMatch(/^worker 4 \(text-stats\): http:\/\/127\.0\.0\.1:\d+ pid \d+$/);
    expect(lines[6]).toMatch(/^reconciler: http:\/\/127\.0\.0\.1:\d+ pid \d+$/);
    expect(lines[7]).toBe(`results: ${stack.resultsPath}`);
    expect(lines[8]).toBe("ready");
  });

  it("finishes a 200-item batch submitted over HTTP, the invariant holds, the demo front door used both demo workers", async () => {
    const items = Array.from({ length: 200 }, (_, i) => {
      const n = i + 1;
      const payload: Record<string, unknown> = { value: n };
      if (n % 50 === 0) payload.permanent = true;
      else if (n % 20 === 0) payload.failTimes = 1;
      return { id: `i-${String(n).padStart(3, "0")}`, payload };
    });
    const started = Date.now();
    const res = await submit(stack, { id: "stack-200", pipeline: "demo", failureThreshold: 0.05, items });
    expect(res.status).toBe(201);
    await waitFor(
      "batch stack-200 to be final",
      async () => final.includes(await batchStatus(stack, "stack-200")),
      90_000,
      250,
    );
    console.log(`200 items final in ${Date.now() - started} ms`);

    const report = await assertLedgerInvariant({
      coordinatorUrl: stack.urls.coordinator,
      batchId: "stack-200",
      resultsPath: stack.resultsPath,
      submittedItemIds: items.map((i) => i.id),
    });
    // 4 permanent failures of 200 = 2% ≤ 5%: partial; the transient ones recovered.
    expect(report.status).toBe("partial");
    expect(report.apiCounts).toEqual({ pending: 0, running: 0, succeeded: 196, failed: 4 });
    expect(report.failedByKind).toEqual({ permanent: 4 });
    expect(report.sinkRows).toBe(196);

    const demo = stack.pipeline("demo");
    const stats = demo.frontDoor.stats();
    console.log(
      `demo front door: ${JSON.stringify(stats)}; push relay: ${JSON.stringify(demo.pushRelay?.stats())}`,
    );
    // Only demo's group: the text-stats workers (3, 4) are behind another front door.
    expect(Object.keys(stats.forwarded).sort()).toEqual(["worker 1", "worker 2"]);
    expect(stats.forwarded["worker 1"]).toBeGreaterThan(20);
    expect(stats.forwarded["worker 2"]).toBeGreaterThan(20);
    expect(stats.responses["worker 1"]?.["2xx"]).toBeGreaterThan(0);
    expect(stats.responses["worker 2"]?.["2xx"]).toBeGreaterThan(0);
  });

  it("the invariant checker names each violation: a corrupted copy of the results file", async () => {
    // Corrupt a copy (the stack keeps writing to the real file): drop a row, change a result, add a
    // row for a failed item; and claim an item was submitted that never was. Checks the reading
    // side (the API and the DuckDB file); the rules themselves are tested in invariant.test.ts.
    const copy = join(dataDir, "tampered.duckdb");
    copyFileSync(stack.resultsPath, copy);
    const db = await DuckDBInstance.create(copy);
    const conn = await db.connect();
    await conn.run("DELETE FROM item_results WHERE batch_id = 'stack-200' AND item_id = 'i-001'");
    await conn.run(
      `UPDATE item_results SET result = '{"value":0}'::JSON WHERE batch_id = 'stack-200' AND item_id = 'i-002'`,
    );
    await conn.run(
      "INSERT INTO item_results SELECT batch_id, 'i-050', generation, result, finished_at, attempts, export_id, exported_at, batch_created_at FROM item_results WHERE batch_id = 'stack-200' AND item_id = 'i-003'",
    );
    conn.closeSync();
    db.closeSync();

    const submitted = [
      ...Array.from({ length: 200 }, (_, i) => `i-${String(i + 1).padStart(3, "0")}`),
      "i-999",
    ];
    const report = await checkLedgerInvariant({
      coordinatorUrl: stack.urls.coordinator,
      batchId: "stack-200",
      resultsPath: copy,
      submittedItemIds: submitted,
    });
    expect(report.ok).toBe(false);
    const byRule = Object.fromEntries(report.violations.map((v) => [v.rule, v]));
    // One rule per defect (test/local/invariant.test.ts shows each rule firing alone).
    expect(Object.keys(byRule).sort()).toEqual(
      ["item_missing", "sink_result_mismatch", "sink_row_missing", "sink_row_unexpected"].sort(),
    );
    expect(byRule.item_missing?.examples).toEqual(["i-999"]);
    expect(byRule.sink_row_missing?.examples).toEqual(["i-001"]);
    expect(byRule.sink_result_mismatch?.examples?.[0]).toMatch(
      /^i-002: ledger \{.*"value":2.*\} vs sink \{"value":0\}$/,
    );
    expect(byRule.sink_row_unexpected?.examples).toEqual(["i-050: 1 row(s), item failed"]);
    const text = formatInvariantReport(report);
    expect(text).toContain("ledger invariant VIOLATED for batch stack-200 (4 rule(s))");
    expect(() => {
      throw new InvariantViolationError(report);
    }).toThrow(/sink_row_missing: 1 succeeded item\(s\) have no row in the sink/);
  });

  it("restarts a SIGKILLed worker and redrives its item within lease + one tick", async () => {
    const res = await submit(stack, {
      id: "stack-kill",
      pipeline: "demo",
      items: [{ id: "slow", payload: { sleepMs: 5000, value: "slow" } }],
    });
    expect(res.status).toBe(201);
    const running = await waitFor(
      "the slow item to be leased",
      async () => {
        const [item] = await fetchAllItems(stack.urls.coordinator, "stack-kill");
        return item?.status === "running" ? item : null;
      },
      30_000,
      50,
    );
    // Lease owners name the worker process: host/pid/…
    const owner = running.leaseOwner ?? "";
    const n =
      stack.pids.workers.findIndex((pid) => pid !== null && owner.split("/").includes(String(pid))) + 1;
    expect(
      n,
      `lease owner ${owner} is one of the worker pids ${stack.pids.workers.join(", ")}`,
    ).toBeGreaterThan(0);

    const killedPid = stack.killWorker(n, "SIGKILL");
    const killedAt = Date.now();
    expect(owner.split("/")).toContain(String(killedPid));

    const newPid = await stack.waitForWorkerRestart(n, killedPid, 30_000);
    remember();
    expect(newPid).not.toBe(killedPid);
    expect(processExists(killedPid)).toBe(false);
    expect(stack.workers[n - 1]!.restarts).toBe(1);
    expect(
      logs.some((l) => l.includes(`worker ${n} (pid ${killedPid}) exited with SIGKILL; restarting`)),
    ).toBe(true);

    // Back in play: the reconciler redrives it once the lease lapsed; its log line says when.
    const redriven = await waitFor(
      "the reconciler to redrive the killed worker's item",
      () => reconcilerEvents().find((e) => e.event === "item.redriven" && e.itemId === "slow"),
      30_000,
      100,
    );
    const redriveMs = Date.parse(redriven.time) - killedAt;
    const ticks = reconcilerEvents().filter(
      (e) => e.event === "reconcile.summary" && Date.parse(e.time) >= killedAt - 2_000,
    );
    console.log(
      `worker ${n} restarted as pid ${newPid}; item redriven ${redriveMs} ms after the SIGKILL ` +
        `(lease ${leaseSeconds} s, until ${running.leaseUntil ? Date.parse(running.leaseUntil) - killedAt : "?"} ms after the kill; ` +
        `tick ${tickSeconds} s; reconcile calls took ${ticks.map((t) => t.durationMs).join(", ")} ms)`,
    );
    // The bound of DESIGN.md §5/§8: lease + one tick, plus the reconcile call's own time.
    expect(redriveMs).toBeLessThanOrEqual((leaseSeconds + tickSeconds) * 1000 + 2_000);

    await waitFor(
      "batch stack-kill to be final",
      async () => final.includes(await batchStatus(stack, "stack-kill")),
      60_000,
      250,
    );
    const report = await assertLedgerInvariant({
      coordinatorUrl: stack.urls.coordinator,
      batchId: "stack-kill",
      resultsPath: stack.resultsPath,
      submittedItemIds: ["slow"],
    });
    expect(report.status).toBe("succeeded");
    const [done] = await fetchAllItems(stack.urls.coordinator, "stack-kill");
    expect(done?.attempt).toBe(2);
    expect(done?.result).toEqual({ value: "slow", attempt: 2, steps: 1 });
  });

  it("stops everything: none of the processes it ran is left", async () => {
    remember();
    const emulatorGroups = stack.pids.emulators;
    const t0 = Date.now();
    await stack.stop();
    console.log(`stopped in ${Date.now() - t0} ms; checked pids ${[...seenPids].join(", ")}`);
    const alive = [...seenPids].filter(processExists);
    expect(alive).toEqual([]);
    expect(membersOfGroups(emulatorGroups)).toEqual([]);
  });
});
