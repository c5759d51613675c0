// The GitHub workflows cannot run here (no GitHub, no cloud credentials), so this checks what can
// be checked: they parse, they run the same npm commands as the README and .ci/run before touching
// the cloud, authenticate through Workload Identity Federation, and run pulumi/actions with the
// policy pack — preview with a pull-request comment on pull requests, up on main — with the Google
// Cloud project taken from a repository variable through pulumi/actions' `config-map`, never from a
// committed stack file.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { repoRoot } from "../../infra/bundle/buildBundle";

interface Step {
  name?: string;
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

/**
 * The subset of GitHub's expression language the workflows use in `${{ }}`: `vars.X` / `secrets.X`
 * (unset: ''), 'literals', `&&` and `||` (which return an operand, '' being falsy), no parentheses.
 */
function substitute(text: string, vars: Record<string, string>): string {
  const operand = (o: string): string => {
    const t = o.trim();
    const lit = /^'((?:[^']|'')*)'$/.exec(t);
    if (lit) return lit[1]!.replace(/''/g, "'");
    const ref = /^(vars|secrets)\.([A-Za-z_][A-Za-z0-9_]*)$/.exec(t);
    if (ref) return ref[1] === "vars" ? (vars[ref[2]!] ?? "") : "";
    throw new Error(`unsupported expression operand ${JSON.stringify(t)}`);
  };
  const evaluate = (expr: string): string => {
    let result = "";
    for (const alternative of expr.split("||")) {
      let value = "";
      for (const term of alternative.split("&&")) {
        value = operand(term);
        if (value === "") break;
      }
      result = value;
      if (result !== "") break;
    }
    return result;
  };
  return text.replace(/\$\{\{(.*?)\}\}/g, (_, expr: string) => evaluate(expr));
}

/** `vars.X` and `secrets.X` named in a text. */
const settingsIn = (text: string) =>
  new Set([...text.matchAll(/\b((?:vars|secrets)\.[A-Z][A-Z0-9_]*)\b/g)].map((m) => m[1]!));

// biome-ignore lint/suspicious/noTemplateCurlyInString: a GitHub Actions expression, not a JS template.
const gcpProjectExpression = "${{ vars.GCP_PROJECT }}";

/** Placeholders people commit instead of a project id. */
const placeholder = /your|project[_-]?id|change[_-]?me|replace|todo|example|xxx|<|>|\{|\}/i;
const projectIdPattern = /^([a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$/;

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

      it("passes the Google Cloud project (and the region, when set) from repository variables via config-map", () => {
        const pulumi = uses(w, "pulumi/actions")[0]!;
        const configMap = pulumi.with!["config-map"];
        expect(typeof configMap).toBe("string");
        expect(configMap).toContain(gcpProjectExpression);
        // What pulumi/actions receives: a YAML map of {value, secret} per key (its README, `config-map`).
        expect(parse(substitute(configMap as string, { GCP_PROJECT: "acme-batch-prod" }))).toEqual({
          "gcp:project": { value: "acme-batch-prod", secret: false },
        });
        expect(
          parse(
            substitute(configMap as string, { GCP_PROJECT: "acme-batch-prod", GCP_REGION: "europe-west1" }),
          ),
        ).toEqual({
          "gcp:project": { value: "acme-batch-prod", secret: false },
          "gcp:region": { value: "europe-west1", secret: false },
        });
      });

      it("stops with a clear error before any cloud step when vars.GCP_PROJECT is not a project id", () => {
        const all = steps(w);
        const checkIndex = all.findIndex((s) => s.env?.GCP_PROJECT === gcpProjectExpression);
        const authIndex = all.findIndex((s) => s.uses?.startsWith("google-github-actions/auth@"));
        expect(checkIndex).toBeGreaterThan(-1);
        expect(checkIndex).toBeLessThan(authIndex);
        const script = all[checkIndex]!.run!;
        expect(script).toContain("exit 1");
        expect(script).toContain("::error::");
        // The script's pattern is the one this test applies to committed stack files.
        expect(script).toContain(`grep -Eq '${projectIdPattern.source}'`);
      });

      it("lists every repository variable and secret it reads in its header comment", () => {
        const text = read(`.github/workflows/${file}`);
        const header = text.slice(0, text.search(/^name:/m));
        const body = text.slice(header.length);
        expect([...settingsIn(header)].sort()).toEqual(
          [...settingsIn(body)].filter((s) => s !== "secrets.GITHUB_TOKEN").sort(),
        );
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

  it("no stack file commits a placeholder (or any non-id) as gcp:project, and Pulumi.yaml sets none", () => {
    const stackFiles = readdirSync(repoRoot).filter((f) => /^Pulumi\.[^.]+\.yaml$/.test(f));
    expect(stackFiles).toContain("Pulumi.dev.yaml");
    for (const f of stackFiles) {
      const config = ((parse(read(f)) ?? {}) as { config?: Record<string, unknown> | null }).config ?? {};
      const project = config["gcp:project"];
      if (project === undefined) continue;
      expect(typeof project, `${f}: gcp:project`).toBe("string");
      expect(project as string, `${f}: gcp:project`).toMatch(projectIdPattern);
      expect(project as string, `${f}: gcp:project`).not.toMatch(placeholder);
    }
    // The dev stack, the one the workflows run, takes its project from the CI environment only.
    expect(
      Object.keys((parse(read("Pulumi.dev.yaml")) as { config?: object | null }).config ?? {}),
    ).not.toContain("gcp:project");
    const project = parse(read("Pulumi.yaml")) as { config?: Record<string, unknown> };
    expect(Object.keys(project.config ?? {}).filter((k) => k.startsWith("gcp:"))).toEqual([]);
    // The check itself: the old committed value is refused.
    expect("YOUR_PROJECT_ID").not.toMatch(projectIdPattern);
    expect("your-project-id").toMatch(placeholder);
  });

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
