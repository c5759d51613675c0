// The GitHub workflows cannot run here (no GitHub, no cloud credentials), so this checks what can
// be checked: they parse, they run the same npm commands as the README and .ci/run before touching
// the cloud, authenticate through Workload Identity Federation, and run pulumi/actions with the
// policy pack — preview with a pull-request comment on pull requests, up on main.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { repoRoot } from "../../infra/bundle/buildBundle";

interface Step {
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
  env?: Record<string, string>;
}
interface Workflow {
  on: Record<string, { branches?: string[] }>;
  permissions: Record<string, string>;
  jobs: Record<string, { steps: Step[] }>;
}

const read = (file: string) => readFileSync(join(repoRoot, file), "utf8");
const workflow = (name: string) => parse(read(`.github/workflows/${name}`)) as Workflow;
const steps = (w: Workflow) => Object.values(w.jobs).flatMap((j) => j.steps);
const runs = (w: Workflow) => steps(w).flatMap((s) => (s.run ? s.run.split("\n").map((l) => l.trim()) : []));
const uses = (w: Workflow, action: string) => steps(w).filter((s) => s.uses?.startsWith(`${action}@`));

/** The npm commands the README and .ci/run name as the project's checks. */
function documentedChecks(): string[] {
  const text = `${read("README.md")}\n${existsSync(join(repoRoot, ".ci/run")) ? read(".ci/run") : ""}`;
  const found = new Set<string>();
  for (const m of text.matchAll(/\bnpm (ci|test|run (?:lint|typecheck))\b/g)) found.add(`npm ${m[1]}`);
  return [...found].sort();
}

describe("GitHub workflows", () => {
  it("the README and .ci/run name install, lint, typecheck and test", () => {
    expect(documentedChecks()).toEqual(["npm ci", "npm run lint", "npm run typecheck", "npm test"]);
  });

  for (const [file, trigger, command] of [
    ["preview.yml", "pull_request", "preview"],
    ["deploy.yml", "push", "up"],
  ] as const) {
    describe(file, () => {
      const w = workflow(file);

      it(`runs on ${trigger} to main`, () => {
        expect(Object.keys(w.on)).toEqual([trigger]);
        expect(w.on[trigger]!.branches).toEqual(["main"]);
      });

      it("runs the documented checks, in order, on Node 22 before any cloud step", () => {
        const commands = runs(w).filter((l) => l.startsWith("npm "));
        expect(commands).toEqual(["npm ci", "npm run lint", "npm run typecheck", "npm test"]);
        expect([...commands].sort()).toEqual(documentedChecks());
        expect(uses(w, "actions/checkout")).toHaveLength(1);
        expect(uses(w, "actions/setup-node")[0]!.with).toMatchObject({ "node-version": 22 });
        const all = steps(w);
        const testIndex = all.findIndex((s) => s.run === "npm test");
        const authIndex = all.findIndex((s) => s.uses?.startsWith("google-github-actions/auth@"));
        expect(testIndex).toBeGreaterThan(-1);
        expect(authIndex).toBeGreaterThan(testIndex);
      });

      it("provides the emulators the test suite starts", () => {
        expect(uses(w, "google-github-actions/setup-gcloud")[0]!.with!.install_components).toContain(
          "pubsub-emulator",
        );
        expect(uses(w, "google-github-actions/setup-gcloud")[0]!.with!.install_components).toContain(
          "cloud-firestore-emulator",
        );
        expect(runs(w).join("\n")).toContain("openjdk-17-jre-headless");
      });

      it("authenticates with Workload Identity Federation, never a key", () => {
        expect(w.permissions["id-token"]).toBe("write");
        const auth = uses(w, "google-github-actions/auth");
        expect(auth).toHaveLength(1);
        expect(auth[0]!.with).toHaveProperty("workload_identity_provider");
        expect(auth[0]!.with).toHaveProperty("service_account");
        expect(auth[0]!.with).not.toHaveProperty("credentials_json");
      });

      it(`runs pulumi/actions ${command} with the policy pack`, () => {
        const pulumi = uses(w, "pulumi/actions");
        expect(pulumi).toHaveLength(1);
        expect(pulumi[0]!.uses).toBe("pulumi/actions@v6");
        expect(pulumi[0]!.with).toMatchObject({ command, policyPacks: "infra/policy" });
        expect(pulumi[0]!.with!["stack-name"]).toBeTruthy();
        if (command === "preview") {
          expect(pulumi[0]!.with!["comment-on-pr"]).toBe(true);
          expect(w.permissions["pull-requests"]).toBe("write");
        }
        expect(existsSync(join(repoRoot, "infra/policy/PulumiPolicy.yaml"))).toBe(true);
      });
    });
  }

  it("Pulumi.yaml runs the TypeScript program at infra/index.ts", () => {
    const project = parse(read("Pulumi.yaml")) as { name: string; runtime: { name: string }; main: string };
    expect(project.name).toBe("tally");
    expect(project.runtime.name).toBe("nodejs");
    expect(project.main).toBe("infra/index.ts");
    expect(existsSync(join(repoRoot, project.main))).toBe(true);
    const policy = parse(read("infra/policy/PulumiPolicy.yaml")) as { runtime: string };
    expect(policy.runtime).toBe("nodejs");
    // @pulumi/policy reads the pack's version from the package.json beside it.
    expect(JSON.parse(read("infra/policy/package.json")).version).toMatch(/^\d+\.\d+\.\d+$/);
  });
});
