// `npm start` flags: each maps onto the programmatic options, a bad one is a message naming the
// flag (and exit code 1 from the command itself); the ready block round-trips through its parser;
// log lines are compacted and per-item noise is filtered.
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { formatLogLine } from "../../local/logLines";
import { formatReadyLines, parseReadyLines } from "../../local/readyLines";
import { parseStartArgs, resolveDelivery, UsageError } from "../../local/stackOptions";

describe("npm start flags", () => {
  it("maps flags onto options", () => {
    const opts = parseStartArgs([
      "--port",
      "0",
      "--workers=3",
      "--tick",
      "0.5",
      "--lease-seconds",
      "10",
      "--ack-deadline",
      "60",
      "--data",
      "/tmp/x",
      "--persist",
      "--env",
      "TALLY_FAULT_COMPLETE_FAIL_RATE=0.1",
      "--push-concurrency",
      "8",
    ]);
    expect(opts).toMatchObject({
      port: 0,
      workers: 3,
      tickSeconds: 0.5,
      delivery: { leaseSeconds: 10, ackDeadlineSeconds: 60 },
      dataDir: "/tmp/x",
      persist: true,
      env: { TALLY_FAULT_COMPLETE_FAIL_RATE: "0.1" },
      pushConcurrency: 8,
    });
    // The worker timeout follows a shorter ack deadline unless given.
    expect(resolveDelivery(opts!).workerTimeoutSeconds).toBe(60);
    expect(parseStartArgs(["--help"])).toBeNull();
  });

  it.each([
    [["--workers", "x"], '--workers must be a whole number (got "x")'],
    [["--workers", "0"], "--workers must be 1..16 (got 0)"],
    [["--tick", "-1"], '--tick must be a positive number of seconds (got "-1")'],
    [["--tick", "abc"], '--tick must be a positive number of seconds (got "abc")'],
    [["--bogus"], "unknown option --bogus"],
    [["--port"], "--port needs a value"],
    [["--persist=yes"], '--persist takes no value (got "yes")'],
    [["--env", "NOEQUALS"], '--env must be KEY=VALUE (got "NOEQUALS")'],
    [
      ["--max-delivery-attempts", "3"],
      "--max-delivery-attempts: maxDeliveryAttempts must be an integer in 5..100 (got 3)",
    ],
    [
      ["--ack-deadline", "30", "--worker-timeout", "40"],
      "--worker-timeout: workerTimeoutSeconds (40) must fit inside ackDeadlineSeconds (30)",
    ],
    [["--verbose", "--quiet"], "--verbose and --quiet exclude each other"],
  ])("refuses %j naming the flag", (argv, message) => {
    expect(() => parseStartArgs(argv as string[])).toThrow(UsageError);
    expect(() => parseStartArgs(argv as string[])).toThrow(message);
  });

  it("exits 1 with one line naming the flag, starting nothing", async () => {
    const run = promisify(execFile);
    const err = await run(
      process.execPath,
      ["--import", "tsx", join(__dirname, "../../local/start.ts"), "--workers", "many"],
      {
        cwd: join(__dirname, "../.."),
      },
    ).then(
      () => null,
      (e: { code: number; stderr: string; stdout: string }) => e,
    );
    expect(err?.code).toBe(1);
    expect(err?.stderr.trim()).toBe('npm start: --workers must be a whole number (got "many")');
    expect(err?.stdout).toBe("");
  });

  it("reports a missing Java in one line and exits 1", async () => {
    // A PATH with a shell but no java: the prerequisite check fails before anything starts.
    const bin = mkdtempSync(join(tmpdir(), "tally-nojava-"));
    symlinkSync(execFileSync("sh", ["-c", "command -v sh"], { encoding: "utf8" }).trim(), join(bin, "sh"));
    const run = promisify(execFile);
    const err = await run(
      process.execPath,
      ["--import", "tsx", join(__dirname, "../../local/start.ts"), "--port", "0"],
      {
        cwd: join(__dirname, "../.."),
        env: { ...process.env, PATH: bin },
      },
    ).then(
      () => null,
      (e: { code: number; stderr: string; stdout: string }) => e,
    );
    rmSync(bin, { recursive: true, force: true });
    expect(err?.code).toBe(1);
    expect(err?.stderr.trim().split("\n")).toEqual([
      "npm start: Java 17+ is required by the Google Cloud emulators: install it (Debian: apt-get install openjdk-17-jre-headless).",
    ]);
  });
});

describe("ready lines", () => {
  it("round-trip through the parser tools use", () => {
    const info = {
      coordinator: "http://127.0.0.1:8080",
      dashboard: "http://127.0.0.1:8080/",
      workers: [
        { url: "http://127.0.0.1:40001", pid: 11, pipeline: "demo" },
        { url: "http://127.0.0.1:40002", pid: 12, pipeline: "text-stats" },
      ],
      reconciler: { url: "http://127.0.0.1:40003", pid: 13 },
      results: "/tmp/data/results.duckdb",
    };
    const lines = formatReadyLines(info);
    expect(lines).toEqual([
      "coordinator: http://127.0.0.1:8080",
      "dashboard: http://127.0.0.1:8080/",
      "worker 1 (demo): http://127.0.0.1:40001 pid 11",
      "worker 2 (text-stats): http://127.0.0.1:40002 pid 12",
      "reconciler: http://127.0.0.1:40003 pid 13",
      "results: /tmp/data/results.duckdb",
      "ready",
    ]);
    expect(parseReadyLines(`[stack] emulators: …\n${lines.join("\n")}\n[worker 1] …`)).toEqual(info);
    expect(parseReadyLines(lines.slice(0, -1).join("\n"))).toBeNull();
  });
});

describe("log lines", () => {
  const json = (o: Record<string, unknown>) =>
    JSON.stringify({ time: "2026-01-01T00:00:00Z", component: "worker", ...o });

  it("compacts a JSON log line, prefixed by process", () => {
    expect(
      formatLogLine(
        "worker 1",
        json({
          severity: "WARNING",
          event: "item.redriven",
          message: "lease expired",
          batchId: "b",
          itemId: "i",
          extra: 1,
        }),
        { verbose: false },
      ),
    ).toBe("[worker 1] WARNING item.redriven: lease expired (batchId=b itemId=i)");
    expect(formatLogLine("coordinator", "plain text", { verbose: false })).toBe("[coordinator] plain text");
  });

  it("shows per-item INFO events and idle reconcile ticks only when verbose", () => {
    const succeeded = json({
      severity: "INFO",
      event: "item.succeeded",
      message: "item succeeded",
      itemId: "i",
    });
    expect(formatLogLine("worker 1", succeeded, { verbose: false })).toBeNull();
    expect(formatLogLine("worker 1", succeeded, { verbose: true })).toContain("item.succeeded");
    const idle = json({
      severity: "INFO",
      event: "reconcile.summary",
      message: "…",
      expiredLeases: { found: 0 },
      finalized: 0,
      errors: 0,
    });
    const busy = json({
      severity: "INFO",
      event: "reconcile.summary",
      message: "…",
      expiredLeases: { found: 2 },
      finalized: 0,
      errors: 0,
    });
    expect(formatLogLine("reconciler", idle, { verbose: false })).toBeNull();
    expect(formatLogLine("reconciler", busy, { verbose: false })).toContain("reconcile.summary");
    expect(
      formatLogLine("worker 1", json({ severity: "DEBUG", event: "x", message: "m" }), { verbose: false }),
    ).toBeNull();
  });
});
