// `npm ci` refuses a lockfile that misses any platform's optional package ("missing from lock
// file"), and both workflows and .ci/run install with `npm ci`. A lockfile written by an npm that
// drops other platforms' optional packages would pass every local check and still stop CI at
// install; this checks the class: every optional dependency declared by a locked package is locked
// itself, at a path Node's resolution would find from its dependent.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../../infra/bundle/buildBundle";

interface LockedPackage {
  version?: string;
  optionalDependencies?: Record<string, string>;
  dependencies?: Record<string, string>;
}
interface Lockfile {
  lockfileVersion: number;
  packages: Record<string, LockedPackage>;
}

const lock = JSON.parse(readFileSync(join(repoRoot, "package-lock.json"), "utf8")) as Lockfile;

/** The lock paths Node would try for `name` required from the package at `from` (nearest first). */
function resolutionPaths(from: string, name: string): string[] {
  const paths: string[] = [];
  let dir = from;
  for (;;) {
    paths.push(dir === "" ? `node_modules/${name}` : `${dir}/node_modules/${name}`);
    if (dir === "") return paths;
    const cut = dir.lastIndexOf("/node_modules/");
    dir = cut < 0 ? "" : dir.slice(0, cut);
  }
}

/** Optional dependencies of locked packages that have no entry of their own in the lockfile. */
function missingOptionalPackages(lockfile: Lockfile): string[] {
  const missing: string[] = [];
  for (const [path, pkg] of Object.entries(lockfile.packages)) {
    for (const name of Object.keys(pkg.optionalDependencies ?? {})) {
      if (!resolutionPaths(path, name).some((p) => p in lockfile.packages))
        missing.push(`${path || "(root)"} → ${name}`);
    }
  }
  return missing.sort();
}

describe("package-lock.json", () => {
  it("is a v3 lockfile", () => {
    expect(lock.lockfileVersion).toBe(3);
  });

  it("locks every platform's optional packages, so `npm ci` accepts it on any machine", () => {
    expect(missingOptionalPackages(lock)).toEqual([]);
    // The three families that were missing once, each with more than this machine's platform.
    for (const family of ["@biomejs/cli-", "@duckdb/node-bindings-", "@msgpackr-extract/msgpackr-extract-"]) {
      const locked = Object.keys(lock.packages).filter((p) => p.startsWith(`node_modules/${family}`));
      expect(locked.length, family).toBeGreaterThan(2);
    }
  });

  it("the check fails on a lockfile that dropped other platforms' packages", () => {
    const pruned: Lockfile = {
      ...lock,
      packages: Object.fromEntries(
        Object.entries(lock.packages).filter(([p]) => !p.startsWith("node_modules/@biomejs/cli-darwin")),
      ),
    };
    expect(missingOptionalPackages(pruned)).toEqual(
      expect.arrayContaining(["node_modules/@biomejs/biome → @biomejs/cli-darwin-arm64"]),
    );
  });

  it("matches package.json's dependencies", () => {
    const manifest = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as {
      dependencies: Record<string, string>;
      devDependencies: Record<string, string>;
    };
    const root = lock.packages[""]!;
    expect(root.dependencies).toEqual(manifest.dependencies);
    expect((root as { devDependencies?: Record<string, string> }).devDependencies).toEqual(
      manifest.devDependencies,
    );
  });
});
