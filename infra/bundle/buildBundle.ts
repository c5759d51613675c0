// Builds the handler bundle the three Cloud Run functions deploy from: the TypeScript under
// functions/ transpiled to CommonJS, a package.json listing only the npm packages that code
// requires at run time (pinned to the versions installed here), zipped deterministically.
//
// The object name is a hash of the bundle's contents, so a code change uploads a new object and
// redeploys the functions, and an unchanged tree keeps the same name and deploys nothing.
//
// Type checking is not repeated here (that is `npm run typecheck`, which CI runs first); each file is
// transpiled on its own, which is fast and does not depend on other files' types.
//
// CLI: `npm run build:functions [-- --out <dir>]` prints what it built.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { isBuiltin } from "node:module";
import { dirname, join, posix, relative, resolve, sep } from "node:path";
import * as ts from "typescript";
import { createZip } from "./zip";

export const repoRoot = resolve(__dirname, "..", "..");

/** Functions Framework targets the entry module registers (functions/index.ts). */
export const functionTargets = ["coordinator", "worker", "reconciler"] as const;

export interface BundleOptions {
  /** Directory holding the handler sources (default: <repo>/functions). */
  sourceDir?: string;
  /** Where the staging tree and the zip are written (default: <repo>/.tally/bundle). */
  outDir?: string;
  /** package.json whose `dependencies` the runtime packages must come from (default: the repo's). */
  packageJsonPath?: string;
  /** Fail when the Functions Framework entry (index.ts) is missing (default true). */
  requireEntry?: boolean;
}

export interface Bundle {
  /** Content-hashed object name, e.g. `functions-3f2a….zip`. */
  objectName: string;
  /** sha256 over every bundled path and its bytes. */
  contentHash: string;
  zipPath: string;
  zipBytes: number;
  /** The unzipped tree (what the zip holds), for inspection and tests. */
  stagingDir: string;
  /** Bundled paths, sorted. */
  files: string[];
  /** Runtime npm dependencies and their pinned versions. */
  dependencies: Record<string, string>;
}

export class BundleError extends Error {
  constructor(readonly problems: string[]) {
    super(`cannot build the functions bundle:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "BundleError";
  }
}

const compilerOptions: ts.CompilerOptions = {
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.CommonJS,
  esModuleInterop: true,
  sourceMap: false,
  removeComments: true,
};

/** Sources that never run in a handler. */
function isExcluded(path: string): boolean {
  return /\.(test|spec)\.ts$/.test(path) || path.endsWith(".d.ts") || /(^|\/)\./.test(path);
}

function listFiles(dir: string, base = dir): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listFiles(full, base));
    else if (entry.isFile()) out.push(relative(base, full).split(sep).join("/"));
  }
  return out;
}

/** `@scope/name/sub` → `@scope/name`; `name/sub` → `name`. */
function packageName(specifier: string): string {
  const parts = specifier.split("/");
  return specifier.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]!;
}

const requirePattern = /\brequire\(\s*["']([^"']+)["']\s*\)|\bimport\(\s*["']([^"']+)["']\s*\)/g;

function installedVersion(name: string, from: string): string | undefined {
  try {
    const pkg = require.resolve(`${name}/package.json`, { paths: [from] });
    return JSON.parse(readFileSync(pkg, "utf8")).version as string;
  } catch {
    // Packages whose `exports` hide package.json: find it on disk.
    const candidate = join(from, "node_modules", ...name.split("/"), "package.json");
    return existsSync(candidate)
      ? (JSON.parse(readFileSync(candidate, "utf8")).version as string)
      : undefined;
  }
}

export function buildBundle(options: BundleOptions = {}): Bundle {
  const sourceDir = resolve(options.sourceDir ?? join(repoRoot, "functions"));
  const outDir = resolve(options.outDir ?? join(repoRoot, ".tally", "bundle"));
  const packageJsonPath = resolve(options.packageJsonPath ?? join(repoRoot, "package.json"));
  const rootPackage = JSON.parse(readFileSync(packageJsonPath, "utf8")) as {
    version?: string;
    dependencies?: Record<string, string>;
    devDependencies?: Record<string, string>;
  };
  const problems: string[] = [];

  if (!existsSync(sourceDir)) throw new BundleError([`source directory ${sourceDir} does not exist`]);
  if ((options.requireEntry ?? true) && !existsSync(join(sourceDir, "index.ts")))
    throw new BundleError([
      `${relative(repoRoot, join(sourceDir, "index.ts"))} is missing: it is the bundle's entry, registering the Functions Framework targets ${functionTargets.join(", ")}`,
    ]);

  // 1. Transpile every source file; copy other assets (HTML, JSON, …) as they are.
  const output = new Map<string, Buffer>();
  for (const file of listFiles(sourceDir).sort()) {
    if (isExcluded(file)) continue;
    const source = readFileSync(join(sourceDir, file));
    if (file.endsWith(".ts")) {
      const result = ts.transpileModule(source.toString("utf8"), {
        compilerOptions,
        fileName: file,
        reportDiagnostics: true,
      });
      for (const d of result.diagnostics ?? [])
        problems.push(`${file}: ${ts.flattenDiagnosticMessageText(d.messageText, "\n")}`);
      output.set(file.replace(/\.ts$/, ".js"), Buffer.from(result.outputText, "utf8"));
    } else output.set(file, source);
  }

  // 2. Every require must resolve inside the bundle or to a runtime dependency.
  const runtimeDeps = rootPackage.dependencies ?? {};
  const dependencies: Record<string, string> = {};
  const resolvesInBundle = (target: string) =>
    [target, `${target}.js`, `${target}.json`, `${target}/index.js`].some((c) => output.has(c));
  for (const [file, data] of output) {
    if (!file.endsWith(".js")) continue;
    for (const match of data.toString("utf8").matchAll(requirePattern)) {
      const spec = (match[1] ?? match[2])!;
      if (spec.startsWith(".")) {
        const target = posix.normalize(posix.join(posix.dirname(file), spec));
        if (target.startsWith("..") || !resolvesInBundle(target))
          problems.push(
            `${file.replace(/\.js$/, ".ts")} imports ${spec}, which is not inside ${relative(repoRoot, sourceDir)}/: handlers may only import their own code and runtime dependencies`,
          );
      } else if (!isBuiltin(spec)) {
        const name = packageName(spec);
        if (!(name in runtimeDeps)) {
          const where = rootPackage.devDependencies?.[name] ? "a devDependency" : "not a dependency";
          problems.push(
            `${file.replace(/\.js$/, ".ts")} imports ${name}, which is ${where} in package.json; runtime packages must be listed under "dependencies"`,
          );
          continue;
        }
        const version = installedVersion(name, dirname(packageJsonPath));
        if (!version) problems.push(`${name} is not installed (run npm ci)`);
        else dependencies[name] = version;
      }
    }
  }
  if (problems.length > 0) throw new BundleError(problems);

  // 3. package.json with only what the handlers load. The Functions Framework serves the targets.
  const ffName = "@google-cloud/functions-framework";
  const ffVersion = installedVersion(ffName, dirname(packageJsonPath));
  if (ffVersion) dependencies[ffName] = ffVersion;
  const sortedDeps = Object.fromEntries(Object.entries(dependencies).sort(([a], [b]) => a.localeCompare(b)));
  const manifest = {
    name: "tally-functions",
    version: rootPackage.version ?? "0.0.0",
    private: true,
    description: "Tally handlers (coordinator, worker, reconciler), built by infra/bundle/buildBundle.ts",
    main: "index.js",
    dependencies: sortedDeps,
  };
  output.set("package.json", Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`, "utf8"));

  // 4. Hash and zip in path order.
  const files = [...output.keys()].sort();
  const hash = createHash("sha256");
  for (const f of files) {
    const data = output.get(f)!;
    hash.update(`${f}\0${data.length}\0`);
    hash.update(data);
  }
  const contentHash = hash.digest("hex");
  const objectName = `functions-${contentHash.slice(0, 24)}.zip`;
  const zip = createZip(files.map((path) => ({ path, data: output.get(path)! })));

  const stagingDir = join(outDir, "staging");
  rmSync(stagingDir, { recursive: true, force: true });
  for (const f of files) {
    const target = join(stagingDir, ...f.split("/"));
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, output.get(f)!);
  }
  const zipPath = join(outDir, objectName);
  mkdirSync(outDir, { recursive: true });
  // Earlier builds' archives are never read again: the stack uploads the one named by this build.
  for (const old of readdirSync(outDir))
    if (/^functions-[0-9a-f]+\.zip$/.test(old) && old !== objectName) rmSync(join(outDir, old));
  writeFileSync(zipPath, zip);

  return {
    objectName,
    contentHash,
    zipPath,
    zipBytes: zip.length,
    stagingDir,
    files,
    dependencies: sortedDeps,
  };
}

function main(argv: string[]): void {
  const outIndex = argv.indexOf("--out");
  const outDir = outIndex >= 0 ? argv[outIndex + 1] : undefined;
  try {
    const b = buildBundle({ outDir });
    console.log(`built ${b.objectName} (${b.files.length} files, ${b.zipBytes} bytes)`);
    console.log(`  zip:     ${b.zipPath}`);
    console.log(`  staging: ${b.stagingDir}`);
    console.log(
      `  runtime dependencies: ${Object.entries(b.dependencies)
        .map(([n, v]) => `${n}@${v}`)
        .join(", ")}`,
    );
  } catch (err) {
    console.error(err instanceof Error ? err.message : String(err));
    process.exitCode = 1;
  }
}

if (require.main === module) main(process.argv.slice(2));
