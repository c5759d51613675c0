// Pulumi.yaml and every Pulumi.<stack>.yaml in the repository root, checked against the rules the
// Pulumi CLI applies when it loads them (support/pulumiProjectFiles.ts, mirrored from pulumi/pulumi's
// Go sources with the vendored project schema), plus Tally's own rules for them:
//   - every `tally:` key, declared or set, is a key the program reads (infra/config.ts `configKeys`);
//   - every declared `tally:` key has a type (so Pulumi checks stack values), a description, and a
//     default (a declared key without one is required from every stack), equal to the program's;
//   - stack values pass the program's own validation (parseInfraConfig), so a committed stack file
//     never fails `pulumi preview` on its configuration;
//   - configuration namespaces are tally, gcp or pulumi (any other is a typo Pulumi would ignore).
// The old Pulumi.yaml, which no `pulumi` command could load, is among the negative cases.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../../infra/bundle/buildBundle";
import { type ConfigKey, configKeys, configNamespace, parseInfraConfig } from "../../infra/config";
import {
  checkStack,
  configKeyIsNamespacedByProject,
  type LoadedProject,
  loadProject,
  stackConfig,
} from "./support/pulumiProjectFiles";

const read = (file: string) => readFileSync(join(repoRoot, file), "utf8");
const stackFiles = readdirSync(repoRoot)
  .filter((f) => /^Pulumi\.[^.]+\.yaml$/.test(f))
  .sort();
const allowedNamespaces = [configNamespace, "gcp", "pulumi"];

function mustLoad(text: string): LoadedProject {
  const result = loadProject(text);
  expect(result.problems).toEqual([]);
  return result.project!;
}

const qualified = (project: LoadedProject, key: string) =>
  key.includes(":") ? key : `${project.name}:${key}`;
const programKey = (key: string) => key.slice(configNamespace.length + 1);
const isProgramKey = (name: string): name is ConfigKey => Object.hasOwn(configKeys, name);

/** Tally's rules for Pulumi.yaml, on top of Pulumi's. */
function tallyProjectProblems(project: LoadedProject): string[] {
  const problems: string[] = [];
  if (project.name !== configNamespace)
    problems.push(
      `project name must be ${configNamespace} (the program reads the ${configNamespace}: namespace)`,
    );
  for (const [written, c] of Object.entries(project.config)) {
    const key = qualified(project, written);
    const namespace = key.split(":")[0]!;
    if (!allowedNamespaces.includes(namespace))
      problems.push(`${key}: namespace ${namespace} is none of ${allowedNamespaces.join(", ")}`);
    if (!configKeyIsNamespacedByProject(project.name, written)) continue;
    if (!isProgramKey(programKey(key)))
      problems.push(`${key} is declared but the program never reads it (infra/config.ts configKeys)`);
    if (c.type === undefined)
      problems.push(`${key} declares no type: Pulumi would not check stack values against it`);
    if (!c.description) problems.push(`${key} declares no description`);
    if (c.default === undefined || c.default === null)
      problems.push(`${key} declares no default: Pulumi would require every stack to set it`);
  }
  return problems;
}

/** Tally's rules for a stack file, on top of Pulumi's. */
function tallyStackProblems(project: LoadedProject, text: string, stack = "dev"): string[] {
  const problems: string[] = [];
  const config = stackConfig(project, text);
  for (const key of config.keys()) {
    const [namespace, name] = key.split(":") as [string, string];
    if (!allowedNamespaces.includes(namespace))
      problems.push(`${key}: namespace ${namespace} is none of ${allowedNamespaces.join(", ")}`);
    if (namespace === configNamespace && !isProgramKey(name))
      problems.push(`${key} is set but the program never reads it (infra/config.ts configKeys)`);
  }
  if (problems.length > 0) return problems;
  // The values the program would see: the stack's, else the project's defaults (Pulumi merges them).
  try {
    parseInfraConfig((k) => config.get(`${configNamespace}:${k}`)?.text ?? projectDefault(project, k), {
      stack,
      providerRegion: config.get("gcp:region")?.text,
    });
  } catch (err) {
    problems.push(String(err));
  }
  return problems;
}

function projectDefault(project: LoadedProject, key: ConfigKey): string | undefined {
  const c = project.config[`${configNamespace}:${key}`] ?? project.config[key];
  if (c?.default === undefined || c.default === null) return undefined;
  return typeof c.default === "string" ? c.default : JSON.stringify(c.default);
}

describe("Pulumi.yaml", () => {
  const project = mustLoad(read("Pulumi.yaml"));

  it("loads under Pulumi's rules (project schema, shorthand rewrite, Project.Validate)", () => {
    expect(loadProject(read("Pulumi.yaml")).problems).toEqual([]);
  });

  it("declares only tally: keys the program reads, each with a type, a description and a default", () => {
    expect(tallyProjectProblems(project)).toEqual([]);
    expect(Object.keys(project.config).length).toBeGreaterThan(0);
  });

  it("declares the program's own defaults", () => {
    const none = parseInfraConfig(() => undefined, { stack: "dev" });
    const declared = parseInfraConfig((k) => projectDefault(project, k), { stack: "dev" });
    expect(declared).toEqual(none);
  });

  it("leaves undeclared exactly the keys whose default is derived or means 'off'", () => {
    const declared = new Set(Object.keys(project.config).map((k) => programKey(qualified(project, k))));
    const undeclared = Object.keys(configKeys).filter((k) => !declared.has(k));
    expect(undeclared.sort()).toEqual(
      ["alertEmail", "coordinatorInvokers", "logSinkDataset", "prefix", "region", "resultsDataset"].sort(),
    );
  });
});

describe("stack files", () => {
  const project = mustLoad(read("Pulumi.yaml"));

  it("the repository has a stack file for the stack the workflows use", () => {
    expect(stackFiles).toContain("Pulumi.dev.yaml");
  });

  for (const file of stackFiles) {
    const stack = file.slice("Pulumi.".length, -".yaml".length);
    describe(file, () => {
      it("passes Pulumi's stack checks (keys, empty values, required and typed keys)", () => {
        expect(checkStack(project, stack, read(file))).toEqual([]);
      });

      it("sets only keys of known namespaces, and only tally: keys the program reads, with valid values", () => {
        expect(tallyStackProblems(project, read(file), stack)).toEqual([]);
      });
    });
  }
});

describe("the checks refuse what the Pulumi CLI refuses", () => {
  const withConfig = (config: string, name = "tally") =>
    `name: ${name}\nruntime: nodejs\nmain: infra/index.ts\nconfig:\n${config
      .split("\n")
      .map((l) => `  ${l}`)
      .join("\n")}\n`;

  it("the old Pulumi.yaml (gcp: keys with only a description) fails, naming the key", () => {
    const old = `name: tally
description: Loss-free batch fan-out on Google Cloud (Pub/Sub, Cloud Run functions, Firestore, BigQuery)
runtime:
  name: nodejs
  options:
    typescript: true
main: infra/index.ts
config:
  gcp:project:
    description: Google Cloud project to deploy into
  gcp:region:
    description: Default region (tally:region overrides it for Tally's resources)
`;
    const { problems } = loadProject(old);
    expect(problems).toContain(
      "Configuration key 'gcp:project' is namespaced and must provide an attribute 'value'",
    );
    expect(problems).toContain(
      "Configuration key 'gcp:region' is namespaced and must provide an attribute 'value'",
    );
    expect(loadProject(withConfig("gcp:project:\n  description: x")).problems).toEqual([
      "Configuration key 'gcp:project' is namespaced and must provide an attribute 'value'",
    ]);
  });

  it("a key of another namespace loads with a value (long or shorthand), never with a type or default", () => {
    expect(loadProject(withConfig("gcp:project:\n  value: my-project\n  description: x")).problems).toEqual(
      [],
    );
    expect(loadProject(withConfig("gcp:region: europe-west1")).problems).toEqual([]);
    expect(loadProject(withConfig("gcp:region:\n  type: string\n  value: europe-west1")).problems).toEqual([
      "Configuration key 'gcp:region' is not namespaced by the project and should not define a type",
    ]);
    expect(loadProject(withConfig("gcp:region:\n  default: europe-west1")).problems[0]).toMatch(
      /^Configuration key 'gcp:region' is not namespaced by the project and should not define a default value\. Did you mean to use the 'value' attribute/,
    );
  });

  it("a type-less declaration of a tally: key fails (Tally's rule: Pulumi accepts it and then requires it)", () => {
    const typeless = withConfig("tally:workerMemory:\n  description: worker memory");
    // Pulumi's own project rules let it through …
    const project = mustLoad(typeless);
    // … but then every stack must set it, and nothing checks its type.
    expect(checkStack(project, "dev", "config: {}\n")).toEqual([
      "Stack 'dev' is missing configuration value 'tally:workerMemory'",
    ]);
    expect(tallyProjectProblems(project)).toEqual([
      "tally:workerMemory declares no type: Pulumi would not check stack values against it",
      "tally:workerMemory declares no default: Pulumi would require every stack to set it",
    ]);
    // A declaration that is not even a type declaration fails the schema.
    expect(loadProject(withConfig("tally:workerMemory:\n  typ: string")).problems.join("\n")).toMatch(
      /#\/config\/tally:workerMemory: must NOT have additional properties \{"additionalProperty":"typ"\}/,
    );
  });

  it("refuses unknown types, arrays without items, defaults of the wrong type and default-plus-value", () => {
    expect(
      loadProject(withConfig("tally:worker5xxRatio:\n  type: number\n  default: 0.2")).problems.join("\n"),
    ).toMatch(/#\/config\/tally:worker5xxRatio\/type: must be equal to one of the allowed values/);
    expect(loadProject(withConfig("tally:coordinatorInvokers:\n  type: array")).problems).toEqual([
      "The configuration key 'tally:coordinatorInvokers' declares an array but does not specify the underlying type via the 'items' attribute",
    ]);
    expect(loadProject(withConfig("tally:leaseSeconds:\n  type: integer\n  default: soon")).problems).toEqual(
      [
        "The default value specified for configuration key 'tally:leaseSeconds' is not of the expected type 'integer'",
      ],
    );
    expect(
      loadProject(
        withConfig("tally:coordinatorInvokers:\n  type: array\n  items: {type: string}\n  default: [1]"),
      ).problems,
    ).toEqual([
      "The default value specified for configuration key 'tally:coordinatorInvokers' is not of the expected type 'array<string>'",
    ]);
    expect(loadProject(withConfig("tally:leaseSeconds:\n  default: 1\n  value: 2")).problems).toEqual([
      "project config 'tally:leaseSeconds' cannot have both a 'default' and 'value' attribute",
    ]);
    // Shorthand: a project key's bare value is its default, checked like one.
    expect(loadProject(withConfig("leaseSeconds: 120")).project?.config.leaseSeconds).toEqual({
      default: 120,
    });
  });

  it("refuses a project without a name, and config as a path together with stackConfigDir", () => {
    expect(loadProject("runtime: nodejs\n").problems).toEqual(["project is missing a 'name' attribute"]);
    expect(loadProject("name: ''\nruntime: nodejs\n").problems).toEqual([
      "project is missing a non-empty string 'name' attribute",
    ]);
    expect(
      loadProject("name: tally\nruntime: nodejs\nconfig: cfg\nstackConfigDir: cfg\n").problems[0],
    ).toMatch(/^Should not use both config and stackConfigDir/);
    expect(loadProject("name: tally\nruntime: nodejs\nconfig: {}\nconfig: {}\n").problems[0]).toMatch(
      /could not unmarshal/,
    );
  });

  it("refuses stack files Pulumi refuses or warns about", () => {
    const project = mustLoad(read("Pulumi.yaml"));
    expect(checkStack(project, "dev", "config:\n  gcp:project:\n")).toEqual([
      expect.stringMatching(/^No value for configuration key "gcp:project"\./),
    ]);
    expect(checkStack(project, "dev", "config:\n  a:b:c: x\n")).toEqual([
      "could not unmarshal map: could not parse a:b:c as a configuration key (configuration keys should be of the form `<namespace>:<name>`)",
    ]);
    expect(checkStack(project, "dev", "config:\n  tally:leaseSeconds: soon\n")).toEqual([
      "Stack 'dev' with configuration key 'tally:leaseSeconds' must be of type 'integer'",
    ]);
    expect(checkStack(project, "dev", "config:\n  tally:manageFirestoreDatabase: maybe\n")).toEqual([
      "Stack 'dev' with configuration key 'tally:manageFirestoreDatabase' must be of type 'boolean'",
    ]);
    // What Pulumi accepts: numbers and booleans as YAML scalars or strings, un-namespaced project keys.
    expect(
      checkStack(
        project,
        "dev",
        'config:\n  tally:leaseSeconds: 300\n  workerConcurrency: "8"\n  tally:manageFirestoreDatabase: false\n  gcp:project: my-project\n',
      ),
    ).toEqual([]);
    const secret = mustLoad(withConfig("tally:alertEmail:\n  type: string\n  secret: true\n  default: x"));
    expect(checkStack(secret, "dev", "config:\n  tally:alertEmail: ops@example.com\n")).toEqual([
      "Stack 'dev' with configuration key 'tally:alertEmail' must be encrypted as it's secret",
    ]);
  });

  it("refuses stack files that set keys the program does not read, or values it refuses", () => {
    const project = mustLoad(read("Pulumi.yaml"));
    expect(tallyStackProblems(project, "config:\n  tally:ackDeadline: 600\n")).toEqual([
      "tally:ackDeadline is set but the program never reads it (infra/config.ts configKeys)",
    ]);
    expect(tallyStackProblems(project, "config:\n  taly:prefix: x\n")).toEqual([
      "taly:prefix: namespace taly is none of tally, gcp, pulumi",
    ]);
    expect(tallyStackProblems(project, "config:\n  tally:ackDeadlineSeconds: 900\n").join("\n")).toMatch(
      /tally:ackDeadlineSeconds must be an integer in 10\.\.600/,
    );
    expect(
      tallyStackProblems(project, "config:\n  tally:coordinatorInvokers:\n    - user:ana@example.com\n"),
    ).toEqual([]);
  });
});
