// `tally` usage handling, no server needed: --help, unknown commands and flags (usage shown), bad
// values (the flag named), and an unreachable coordinator or reconciler (exit 1 with the hint to
// run `npm start`). The launcher's exit codes are checked as a real child process; the table of
// bad flags runs the same entry point in-process (a child process per case costs seconds on a
// busy machine).
import { describe, expect, it } from "vitest";
import { runCli } from "../../local/cli/main";
import { freePort } from "../../local/emulators";
import { runTally } from "./cliRunner";

async function runInProcess(args: string[]) {
  let stdout = "";
  let stderr = "";
  const code = await runCli(args, {
    out: { write: (s: string) => (stdout += s) },
    err: { write: (s: string) => (stderr += s) },
    env: {},
  });
  return { code, stdout, stderr };
}

describe("tally usage", () => {
  it("--help prints the usage and exits 0", async () => {
    const r = await runTally(["--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("Usage:");
    expect(r.stdout).toContain("tally submit --pipeline P");
    expect(r.stderr).toBe("");
  });

  const cases: Array<{ args: string[]; message: string; usage: boolean }> = [
    { args: [], message: "tally: no command given", usage: true },
    { args: ["frob"], message: 'tally: unknown command "frob"', usage: true },
    { args: ["status", "b1", "--bogus"], message: "tally: unknown option --bogus", usage: true },
    {
      args: ["cancel", "b1", "--watch"],
      message: "tally: --watch is not an option of `tally cancel`",
      usage: true,
    },
    { args: ["status", "b1", "extra"], message: 'tally: unexpected argument "extra"', usage: true },
    {
      args: ["submit", "--demo", "5", "--threshold", "2"],
      message: "tally: --threshold must be a number in 0..1",
      usage: false,
    },
    {
      args: ["submit", "--demo", "5", "--threshold", "x"],
      message: "tally: --threshold must be a number in 0..1",
      usage: false,
    },
    {
      args: ["submit", "--demo", "abc"],
      message: "tally: --demo must be an integer in 1..2000000",
      usage: false,
    },
    {
      args: ["submit", "--demo", "2.5"],
      message: "tally: --demo must be an integer in 1..2000000",
      usage: false,
    },
    {
      args: ["submit", "--demo", "5", "--fail-rate", "0.7", "--permanent-rate", "0.5"],
      message: "tally: --fail-rate plus --permanent-rate must be at most 1",
      usage: false,
    },
    {
      args: ["submit", "--demo", "5", "--fail-rate=-1"],
      message: "tally: --fail-rate must be a number in 0..1",
      usage: false,
    },
    {
      args: ["submit", "--demo", "5", "--fail-rate", "-1"],
      message: 'tally: --fail-rate needs a value (write --fail-rate=VALUE for a value starting with "-")',
      usage: false,
    },
    {
      args: ["submit", "--file", "a.json", "--fail-rate", "0.1"],
      message: "tally: --fail-rate only applies to --demo",
      usage: false,
    },
    {
      args: ["submit", "--pipeline", "demo"],
      message: "tally: `tally submit` needs --file or --demo",
      usage: false,
    },
    {
      args: ["submit", "--file", "a.json", "--demo", "3"],
      message: "tally: --file and --demo cannot be used together",
      usage: false,
    },
    {
      args: ["submit", "--file", "items.txt"],
      message: "tally: --file must name a .json or .ndjson file",
      usage: false,
    },
    {
      args: ["submit", "--file", "/nonexistent/items.json", "--pipeline", "demo"],
      message: "tally: cannot read --file /nonexistent/items.json: ENOENT",
      usage: false,
    },
    {
      args: ["submit", "--demo", "3", "--pipeline", "text-stats"],
      message: "--pipeline must be demo",
      usage: false,
    },
    { args: ["submit", "--pipeline"], message: "tally: --pipeline needs a value", usage: false },
    {
      args: ["submit", "--demo", "3", "--resume"],
      message: "tally: --resume needs --id: the batch to go on with (the ID the interrupted run printed)",
      usage: false,
    },
    {
      args: ["items", "b1", "--status", "done"],
      message: "tally: --status must be one of pending, running, succeeded, failed",
      usage: false,
    },
    {
      args: ["items", "b1", "--limit", "0"],
      message: "tally: --limit must be an integer in 1..100000",
      usage: false,
    },
    { args: ["status"], message: "tally: `tally status` needs a batch ID", usage: false },
    {
      args: ["status", "b1", "--interval", "0"],
      message: "tally: --interval must be a number of seconds in 0.05..60",
      usage: false,
    },
    {
      args: ["status", "b1", "--url", "ftp://example"],
      message: 'tally: --url must be an http(s) URL, got "ftp://example"',
      usage: false,
    },
  ];

  it("a child process exits 1 with the message and the usage for an unknown command or flag", async () => {
    const unknown = await runTally(["frob"]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('tally: unknown command "frob"');
    expect(unknown.stderr).toContain("Usage:");
    const badValue = await runTally(["submit", "--demo", "5", "--threshold", "2"]);
    expect(badValue.code).toBe(1);
    expect(badValue.stderr).toBe(
      "tally: --threshold must be a number in 0..1\nrun `tally --help` for usage\n",
    );
  });

  it.each(cases)("tally $args → exit 1: $message", async ({ args, message, usage }) => {
    const r = await runInProcess(args);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(message);
    if (usage) expect(r.stderr).toContain("Usage:");
    else expect(r.stderr).toContain("run `tally --help` for usage");
  });

  it("a bad TALLY_URL is named", async () => {
    const r = await runTally(["status", "b1"], { TALLY_URL: "not a url" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('tally: TALLY_URL must be an http(s) URL, got "not a url"');
  });

  it("an unreachable coordinator is exit 1 with the hint to start the stack", async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    for (const args of [
      ["status", "b1"],
      ["status", "b1", "--watch"],
      ["submit", "--demo", "3"],
    ]) {
      const r = await runTally([...args, "--url", url]);
      expect(r.code, args.join(" ")).toBe(1);
      expect(r.stderr).toContain(`cannot reach the coordinator at ${url}: is \`npm start\` running?`);
      expect(r.stderr).toContain("ECONNREFUSED");
    }
    const viaEnv = await runTally(["items", "b1"], { TALLY_URL: url });
    expect(viaEnv.code).toBe(1);
    expect(viaEnv.stderr).toContain(`cannot reach the coordinator at ${url}`);
  });

  it("an unreachable reconciler is named as such", async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const r = await runTally(["reconcile", "--reconciler-url", url]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot reach the reconciler at ${url}`);
  });
});
