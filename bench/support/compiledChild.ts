// A bench child compiled to plain JavaScript, as Cloud Run runs the handlers: functions/ built by
// the deploy bundle builder (infra/bundle/buildBundle.ts) and the child script transpiled beside
// it, so the child runs under plain `node` — no tsx loader, whose transform cache and hooks add
// ~40 MiB of RSS that a deployed coordinator does not carry. Used where the figure is memory.
import { mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { basename, join, relative } from "node:path";
import * as ts from "typescript";
import { buildBundle, repoRoot } from "../../infra/bundle/buildBundle";
import { dataMarker } from "../../local/localStack";

/**
 * Builds `<repo>/.tally/bench-build/`: `functions/` (the bundle's staging tree) and the child at the
 * same path relative to it as in the repository, so its `../../functions/...` imports resolve (and
 * npm packages resolve from the repository's node_modules). Returns the compiled child's path.
 */
export function compileBenchChild(script: string): string {
  const outDir = join(repoRoot, ".tally", "bench-build");
  rmSync(outDir, { recursive: true, force: true });
  const bundle = buildBundle({ outDir: join(outDir, "bundle") });
  // Inside the local stack's data folder: marked as a tool's, or `npm start` refuses the folder.
  writeFileSync(join(outDir, dataMarker), "Built by npm run bench; the local stack may wipe it.\n");
  symlinkSync(bundle.stagingDir, join(outDir, "functions"), "dir");
  const rel = relative(repoRoot, script);
  const target = join(outDir, rel.replace(/\.ts$/, ".js"));
  mkdirSync(join(target, ".."), { recursive: true });
  const out = ts.transpileModule(readFileSync(script, "utf8"), {
    compilerOptions: {
      module: ts.ModuleKind.CommonJS,
      target: ts.ScriptTarget.ES2022,
      esModuleInterop: true,
    },
    fileName: basename(script),
  });
  writeFileSync(target, out.outputText);
  return target;
}
