// The functions bundle: reproducible (same source → same bytes → same object name), holding only
// what the handlers load at run time, refusing imports that would break in the cloud, and — once
// functions/index.ts exists — serving each Functions Framework target from the unzipped archive.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Bundle,
  BundleError,
  buildBundle,
  functionTargets,
  repoRoot,
} from "../../infra/bundle/buildBundle";
import { freePort } from "../../local/emulators";
import { emulatorHosts, uniqueProjectId, waitFor } from "../support/cloud";

const scratch = mkdtempSync(join(tmpdir(), "tally-bundle-test-"));
const entryExists = existsSync(join(repoRoot, "functions", "index.ts"));
const rootPackage = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as {
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};
/** `unzip` reads the archive as Cloud Functions will: an independent check of the zip writer. */
function unzip(...args: string[]): string {
  try {
    return execFileSync("unzip", args, { encoding: "utf8" });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT")
      throw new Error("the bundle test needs the unzip command (Debian: apt-get install unzip)");
    throw err;
  }
}
const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

let first: Bundle;
beforeAll(() => {
  first = buildBundle({ outDir: join(scratch, "a"), requireEntry: false });
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("the functions bundle", () => {
  it("is reproducible: the same source gives the same bytes and the same object name", () => {
    const second = buildBundle({ outDir: join(scratch, "b"), requireEntry: false });
    expect(second.objectName).toBe(first.objectName);
    expect(second.contentHash).toBe(first.contentHash);
    expect(sha256(second.zipPath)).toBe(sha256(first.zipPath));
    expect(first.objectName).toBe(`functions-${first.contentHash.slice(0, 24)}.zip`);
  });

  it("a code change gives a new object name; a comment-only change does not", () => {
    const source = join(scratch, "src");
    mkdirSync(join(source, "core"), { recursive: true });
    writeFileSync(
      join(source, "index.ts"),
      'import { answer } from "./core/answer";\nexport const value = answer();\n',
    );
    writeFileSync(join(source, "core", "answer.ts"), "export function answer(): number {\n  return 42;\n}\n");
    const build = () => buildBundle({ sourceDir: source, outDir: join(scratch, "c") });
    const original = build();
    expect(original.files).toEqual(["core/answer.js", "index.js", "package.json"]);
    appendFileSync(join(source, "core", "answer.ts"), "// a comment changes nothing that runs\n");
    expect(build().objectName).toBe(original.objectName);
    appendFileSync(join(source, "core", "answer.ts"), "export const probe = 1;\n");
    const changed = build();
    expect(changed.objectName).not.toBe(original.objectName);
    // The previous archive is removed; only the current one is left to upload.
    expect(existsSync(original.zipPath)).toBe(false);
    expect(existsSync(changed.zipPath)).toBe(true);
  });

  it("contains only the handlers' compiled code and a package.json of runtime dependencies", () => {
    expect(first.files).toContain("package.json");
    expect(first.files).toContain("topology.js");
    for (const f of first.files) {
      expect(f, f).not.toMatch(/\.ts$/);
      expect(f, f).not.toMatch(/\.(test|spec)\./);
      expect(f, f).not.toMatch(/^(infra|local|test|bench|node_modules)\//);
      if (f.endsWith(".js"))
        expect(existsSync(join(repoRoot, "functions", f.replace(/\.js$/, ".ts"))), f).toBe(true);
    }
    const manifest = JSON.parse(readFileSync(join(first.stagingDir, "package.json"), "utf8"));
    expect(manifest.main).toBe("index.js");
    expect(manifest.devDependencies).toBeUndefined();
    expect(manifest.scripts).toBeUndefined();
    const deps = Object.keys(manifest.dependencies);
    expect(deps).toContain("@google-cloud/functions-framework");
    expect(deps).toContain("@google-cloud/firestore");
    for (const d of deps) expect(rootPackage.dependencies, d).toHaveProperty(d);
    for (const d of deps) expect(d).not.toMatch(/^@pulumi\//);
    // Pinned to exact installed versions, not ranges.
    for (const v of Object.values(manifest.dependencies)) expect(v).toMatch(/^\d+\.\d+\.\d+/);
    expect(first.dependencies).toEqual(manifest.dependencies);
  });

  it("is a valid zip holding exactly the staged files", () => {
    const listed = unzip("-Z1", first.zipPath).trim().split("\n").sort();
    expect(listed).toEqual(first.files);
    const out = join(scratch, "unzipped");
    unzip("-q", first.zipPath, "-d", out);
    for (const f of first.files)
      expect(readFileSync(join(out, f)).equals(readFileSync(join(first.stagingDir, f))), f).toBe(true);
  });

  it("refuses imports that would not resolve in the deployed bundle", () => {
    const bad = join(scratch, "bad");
    mkdirSync(bad, { recursive: true });
    writeFileSync(
      join(bad, "index.ts"),
      'import { describe } from "vitest";\nimport { waitFor } from "../local/waitFor";\nimport { nothing } from "./missing";\nexport const x = [describe, waitFor, nothing];\n',
    );
    let error: unknown;
    try {
      buildBundle({ sourceDir: bad, outDir: join(scratch, "bad-out") });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(BundleError);
    const problems = (error as BundleError).problems;
    expect(problems).toEqual([
      'index.ts imports vitest, which is a devDependency in package.json; runtime packages must be listed under "dependencies"',
      expect.stringContaining("index.ts imports ../local/waitFor, which is not inside"),
      expect.stringContaining("index.ts imports ./missing, which is not inside"),
    ]);
  });

  it("refuses to build without the Functions Framework entry", () => {
    const empty = join(scratch, "no-entry");
    mkdirSync(empty, { recursive: true });
    writeFileSync(join(empty, "topology.ts"), "export const a = 1;\n");
    expect(() => buildBundle({ sourceDir: empty, outDir: join(scratch, "no-entry-out") })).toThrow(
      /index\.ts is missing: it is the bundle's entry, registering the Functions Framework targets coordinator, worker, reconciler/,
    );
  });
});

describe("the built bundle under the Functions Framework", () => {
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const child of children)
      if (child.pid && child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
  });

  it.skipIf(!entryExists)(
    "starts each target from the unzipped archive and answers (skipped while functions/index.ts does not exist)",
    async () => {
      // With the entry present, the bundle built above is exactly what `pulumi up` uploads.
      const dir = join(scratch, "served-unzipped");
      unzip("-q", first.zipPath, "-d", dir);
      const { pubsubHost, firestoreHost } = emulatorHosts();
      const frameworkMain = join(
        repoRoot,
        "node_modules",
        "@google-cloud",
        "functions-framework",
        "build",
        "src",
        "main.js",
      );
      const project = uniqueProjectId("bundle");

      const start = async (target: (typeof functionTargets)[number]) => {
        const port = await freePort();
        const output: string[] = [];
        const child = spawn(
          process.execPath,
          [frameworkMain, `--target=${target}`, `--source=${dir}`, `--port=${port}`],
          {
            detached: true,
            stdio: ["ignore", "pipe", "pipe"],
            env: {
              PATH: process.env.PATH,
              // The archive carries no node_modules (Cloud Build installs them from its package.json);
              // here they resolve from the repository's.
              NODE_PATH: join(repoRoot, "node_modules"),
              FUNCTION_TARGET: target,
              GOOGLE_CLOUD_PROJECT: project,
              PUBSUB_EMULATOR_HOST: pubsubHost,
              FIRESTORE_EMULATOR_HOST: firestoreHost,
              METADATA_SERVER_DETECTION: "none",
              TALLY_PREFIX: "bundle",
              TALLY_SINK: "duckdb",
              TALLY_DUCKDB_PATH: join(scratch, `${target}.duckdb`),
            },
          },
        );
        children.push(child);
        child.stdout?.on("data", (d) => output.push(String(d)));
        child.stderr?.on("data", (d) => output.push(String(d)));
        const base = `http://127.0.0.1:${port}`;
        await waitFor(
          `${target} listening from the bundle`,
          async () => {
            if (child.exitCode !== null)
              throw new Error(`${target} exited ${child.exitCode}: ${output.join("")}`);
            return (await fetch(`${base}/healthz`).catch(() => undefined)) !== undefined;
          },
          60_000,
          100,
        );
        return { base, output };
      };

      const [coordinator, worker, reconciler] = await Promise.all(functionTargets.map(start));

      const health = await fetch(`${coordinator!.base}/healthz`);
      expect(health.status, `${await health.text()}\n${coordinator!.output.join("")}`).toBe(200);

      // A push envelope with no message: the worker answers with JSON, and never a 5xx (which
      // would make Pub/Sub redeliver a message that can never succeed).
      const push = await fetch(`${worker!.base}/`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ subscription: "projects/p/subscriptions/s" }),
      });
      expect(push.status, worker!.output.join("")).toBeLessThan(500);
      expect(push.headers.get("content-type")).toContain("application/json");
      await push.json();

      const deadLetter = await fetch(`${reconciler!.base}/dead-letter`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{}",
      });
      expect(deadLetter.status, reconciler!.output.join("")).toBeLessThan(500);
      expect(deadLetter.headers.get("content-type")).toContain("application/json");
      await deadLetter.json();
    },
  );
});
