// npm run simulate -- --seed N [--no-fence] [--no-position-count] [--no-freezes] [--no-appends]
//                     [--trace-size 5000] [--all]
//   Replays one seed exactly and prints its violations and trace (the line a failing test prints).
// npm run simulate -- --from N --count K [--no-fence] [--no-freezes]
//   Runs seeds N … N+K-1 and prints the failing ones.
// npm run simulate -- --find item1|item2|item2Cancel|item10 [--from N] [--count K]
//   Searches seeds without the fence (item10: without the position count) until one reproduces
//   issue #15 item 1, 2 or 10, then checks that the protected run of that seed holds the invariant.
import { formatResult, simulate } from "./simulator";

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const flag = (name: string) => process.argv.includes(`--${name}`);

async function main(): Promise<number> {
  const fence = !flag("no-fence");
  const freezesAndDependencies = !flag("no-freezes");
  const countPositions = !flag("no-position-count");
  const appendsAndRivals = !flag("no-appends");
  const traceSize = Number(arg("trace-size") ?? 200);
  const seed = arg("seed");
  if (seed !== undefined) {
    const r = await simulate({
      seed: Number(seed),
      fence,
      traceSize,
      freezesAndDependencies,
      countPositions,
      appendsAndRivals,
      stopAtFirstViolation: !flag("all"),
    });
    console.log(formatResult(r));
    if (!fence || !countPositions) console.log(`issue #15 reproduced: ${JSON.stringify(r.issue15)}`);
    return r.violations.length > 0 ? 1 : 0;
  }
  const from = Number(arg("from") ?? 1);
  const count = Number(arg("count") ?? 1000);
  const find = arg("find") as "item1" | "item2" | "item2Cancel" | "item10" | undefined;
  const started = Date.now();
  let failing = 0;
  for (let s = from; s < from + count; s++) {
    if (find) {
      const control = find === "item10" ? { countPositions: false } : { fence: false };
      const r = await simulate({ seed: s, ...control, stopAtFirstViolation: false });
      if (!r.issue15[find]) continue;
      const fenced = await simulate({ seed: s });
      console.log(formatResult(r));
      console.log(
        `\nissue #15 ${find}: seed ${s} reproduces it without the ${find === "item10" ? "position count" : "fence"} (after ${s - from + 1} seeds, ${Date.now() - started} ms); with the fence: ${fenced.violations.length === 0 ? "invariant holds" : `${fenced.violations.length} violation(s)`}`,
      );
      return fenced.violations.length === 0 ? 0 : 1;
    }
    const r = await simulate({ seed: s, fence, freezesAndDependencies, countPositions, appendsAndRivals });
    if (r.violations.length > 0) {
      failing++;
      console.log(formatResult(r));
      console.log("");
    }
  }
  if (find) {
    console.log(`issue #15 ${find}: not reproduced in seeds ${from}…${from + count - 1}`);
    return 1;
  }
  console.log(
    `${count} seeds from ${from}${fence ? "" : " (no fence)"}: ${failing} failing, ${Date.now() - started} ms`,
  );
  return failing > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(2);
  },
);
