// `npm run chaos -- --items 20000`: the chaos scenarios as a soak, at a larger size. Starts each
// stack the selected scenarios need (the faults stack, then the shared stack), runs the scenarios
// one after the other, and prints a table of scenarios × (items, outcome, invariant held, recovery
// time). A failed scenario prints what was violated and the run carries on; exit 1 if any failed.
import { MissingToolError } from "../../local/emulators";
import { InvariantViolationError } from "../../local/invariant";
import { scenarios } from "./scenarios";
import type { Scenario, ScenarioResult, StackKind } from "./scenarios/scenario";
import type { ChaosStack } from "./support/chaosStack";
import { startStack } from "./support/stackProfiles";

interface SoakOptions {
  items: number;
  only: string[] | null;
  verbose: boolean;
}

const usage = `Usage: npm run chaos -- [--items N] [--only ID[,ID…]] [--verbose]

Runs the chaos scenarios against the local stack at a larger size and prints a table of
scenarios × (items, outcome, invariant held, recovery time).

  --items N     base size (default 20000): the SIGKILL scenario runs N items, the others a share of it
  --only IDS    comma-separated scenario ids (default: all): ${scenarios.map((s) => s.id).join(", ")}
  --verbose     print the stacks' supervisor and warning lines as they happen`;

class UsageError extends Error {}

export function parseSoakArgs(argv: string[]): SoakOptions | null {
  const opts: SoakOptions = { items: 20_000, only: null, verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined || v.startsWith("--")) throw new UsageError(`${flag} needs a value`);
      return v;
    };
    if (flag === "--help" || flag === "-h") return null;
    if (flag === "--items") {
      const v = value();
      if (!/^\d+$/.test(v) || Number(v) < 100 || Number(v) > 1_000_000)
        throw new UsageError(`--items must be a whole number in 100..1000000 (got "${v}")`);
      opts.items = Number(v);
    } else if (flag === "--only") {
      const ids = value()
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean);
      const unknown = ids.filter((id) => !scenarios.some((s) => s.id === id));
      if (unknown.length > 0)
        throw new UsageError(
          `--only: unknown scenario(s) ${unknown.join(", ")} (known: ${scenarios.map((s) => s.id).join(", ")})`,
        );
      opts.only = ids;
    } else if (flag === "--verbose") opts.verbose = true;
    else throw new UsageError(`unknown option ${flag} (see --help)`);
  }
  return opts;
}

interface Row {
  scenario: Scenario;
  result: ScenarioResult | null;
  held: "yes" | "NO" | "error";
  error: string | null;
  tookMs: number;
}

/** The stack running now, so an interrupted soak (Ctrl-C) still stops it and its emulators. */
let running: ChaosStack | null = null;

async function runSoak(opts: SoakOptions): Promise<Row[]> {
  const selected = scenarios.filter((s) => !opts.only || opts.only.includes(s.id));
  const rows: Row[] = [];
  const say = (line: string) => process.stdout.write(`${line}\n`);
  for (const kind of ["faults", "shared"] as StackKind[]) {
    const mine = selected.filter((s) => s.stack === kind);
    if (mine.length === 0) continue;
    say(`[chaos] starting the ${kind} stack…`);
    const started = Date.now();
    let env: ChaosStack | null = null;
    try {
      env = await startStack(kind, opts.verbose ? (l) => say(`  ${l}`) : undefined);
      running = env;
      say(`[chaos] ${kind} stack ready in ${Date.now() - started} ms`);
      for (const scenario of mine) {
        say(`[chaos] ${scenario.id}: ${scenario.title}`);
        const t0 = Date.now();
        try {
          const result = await scenario.run(env, { items: opts.items }, (l) => say(`  ${l}`));
          rows.push({ scenario, result, held: "yes", error: null, tookMs: Date.now() - t0 });
          say(
            `  ✓ ${result.items} items, ${result.outcome}, recovery ${fmtMs(result.recoveryMs)} (${result.recovery})`,
          );
        } catch (err) {
          const violated = err instanceof InvariantViolationError;
          const message = err instanceof Error ? err.message : String(err);
          rows.push({
            scenario,
            result: null,
            held: violated ? "NO" : "error",
            error: message,
            tookMs: Date.now() - t0,
          });
          say(`  ✗ ${message.split("\n").join("\n    ")}`);
        }
      }
    } finally {
      running = null;
      await env?.stop();
    }
  }
  return rows;
}

function fmtMs(ms: number | null): string {
  if (ms === null) return "—";
  return ms < 10_000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

export function renderTable(rows: Row[]): string {
  const header = ["scenario", "items", "outcome", "invariant held", "recovery", "took"];
  const body = rows.map((r) => [
    r.scenario.id,
    r.result ? String(r.result.items) : "—",
    r.result ? r.result.outcome : (r.error?.split("\n")[0]?.slice(0, 60) ?? "—"),
    r.held,
    r.result ? fmtMs(r.result.recoveryMs) : "—",
    fmtMs(r.tookMs),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
  const out = [line(header), widths.map((w) => "─".repeat(w)).join("  "), ...body.map(line)];
  const recoveries = rows.filter((r) => r.result && r.result.recoveryMs !== null);
  if (recoveries.length > 0) {
    out.push("", "recovery measures:");
    for (const r of recoveries) out.push(`  ${r.scenario.id}: ${r.result!.recovery}`);
  }
  return out.join("\n");
}

async function main(): Promise<number> {
  let opts: SoakOptions | null;
  try {
    opts = parseSoakArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`npm run chaos: ${(err as Error).message}`);
    return 2;
  }
  if (!opts) {
    console.log(usage);
    return 0;
  }
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    console.error(`\n[chaos] ${signal}: stopping the stack`);
    void (running?.stop() ?? Promise.resolve()).finally(() => process.exit(130));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const started = Date.now();
  let rows: Row[];
  try {
    rows = await runSoak(opts);
  } catch (err) {
    if (err instanceof MissingToolError) console.error(`npm run chaos: ${err.message}`);
    else console.error(`npm run chaos: ${(err as Error).stack ?? err}`);
    return 1;
  }
  console.log(`\n${renderTable(rows)}\n`);
  const failed = rows.filter((r) => r.held !== "yes");
  console.log(
    `${rows.length - failed.length} of ${rows.length} scenarios held the invariant (--items ${opts.items}) in ${fmtMs(Date.now() - started)}`,
  );
  return failed.length === 0 ? 0 : 1;
}

if (require.main === module)
  main().then(
    (code) => process.exit(code),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
