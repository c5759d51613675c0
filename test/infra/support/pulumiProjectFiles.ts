// What the Pulumi CLI checks when it loads `Pulumi.yaml` and a `Pulumi.<stack>.yaml`, re-implemented
// offline (the CLI cannot be installed here), so a project or stack file that the CLI would refuse
// fails the test suite instead of every `pulumi` command and both GitHub workflows.
//
// Source: pulumi/pulumi at commit 1b5949891b3cefcb9974752b24a5ecef0acc86c8 (sdk v3.259.0 era; see
// ./README.md). Each rule cites the Go function it mirrors; error texts are the CLI's own.
//
//   Project (sdk/go/common/workspace/loaders.go `LoadProjectBytes`, in this order):
//     1. `ValidateProject` (project.go): a non-empty string `name`, then the JSON schema project.json
//        (vendored as ./pulumiProjectSchema.json, validated here with Ajv's draft 2020-12 validator).
//     2. `RewriteConfigPathIntoStackConfigDir` (project.go): `config: <string>` is the old spelling of
//        `stackConfigDir`; both at once is refused.
//     3. `RewriteShorthandConfigValues` (project.go): `key: <string|int|bool|array>` becomes
//        `{default: …}` for a key of the project's namespace and `{value: …}` for any other namespace.
//     4. `Project.Validate` (project.go): the per-key rules below.
//   Stack (loaders.go `LoadProjectStackBytes`, resource/config map.go `Map.UnmarshalYAML`, and
//   pkg/workspace/config.go `mergeConfig` / `validateStackConfigValues`, run by preview/up/destroy…):
//     - un-namespaced keys get the project's namespace (`stackConfigNamespacedWithProject`);
//     - every key parses as `<namespace>:<name>` (config/key.go `ParseKey`);
//     - a key without a value draws a warning (`checkForEmptyConfig`) — treated as a problem here;
//     - a project key declared without `default` or `value` must be set by the stack (`mergeConfig`);
//     - a declared `secret` key must be encrypted, and a typed key's value must be of its type
//       (`validateStackConfigValue` → project.go `ValidateConfigValue`).
// Not modelled: values supplied by Pulumi ESC environments (a stack file with `environment:` skips
// the required-key check), and decryption of secrets (their type is not checked).
import Ajv2020 from "ajv/dist/2020";
import { parseDocument } from "yaml";
import projectSchema from "./pulumiProjectSchema.json";

export interface ConfigItemsType {
  type: string;
  items?: ConfigItemsType;
}

/** `ProjectConfigType` (project.go) after the shorthand rewrite. */
export interface ProjectConfigType {
  type?: string;
  description?: string;
  items?: ConfigItemsType;
  default?: unknown;
  value?: unknown;
  secret?: boolean;
}

export interface LoadedProject {
  name: string;
  /** As written in the file (keys may or may not carry the project's namespace). */
  config: Record<string, ProjectConfigType>;
  raw: Record<string, unknown>;
}

export type ProjectResult =
  | { project: LoadedProject; problems: [] }
  | { project?: undefined; problems: string[] };

const ajv = new Ajv2020({ allErrors: true, strict: false });
const validateSchema = ajv.compile(projectSchema);

function parseYaml(text: string): { value?: unknown; problems: string[] } {
  // Go's yaml.v3 refuses duplicate keys as well; the `yaml` package reports them as errors.
  const doc = parseDocument(text);
  if (doc.errors.length > 0) return { problems: doc.errors.map((e) => `could not unmarshal: ${e.message}`) };
  return { value: doc.toJS(), problems: [] };
}

const isMap = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);
/** project.go `isPrimitiveValue`: Go decodes YAML integers as int and non-integers as float64. */
const isPrimitiveValue = (v: unknown) =>
  typeof v === "string" || typeof v === "boolean" || (typeof v === "number" && Number.isInteger(v));
const present = (v: unknown) => v !== undefined && v !== null;

/** project.go `configKeyIsNamespacedByProject`. */
export function configKeyIsNamespacedByProject(projectName: string, key: string): boolean {
  return !key.includes(":") || key.startsWith(`${projectName}:`);
}

/** project.go `InferFullTypeName`. */
function inferFullTypeName(typeName: string, items?: ConfigItemsType): string {
  return items ? `array<${inferFullTypeName(items.type, items.items)}>` : typeName;
}

/** project.go `ValidateConfigValue`. */
export function validateConfigValue(
  typeName: string,
  items: ConfigItemsType | undefined,
  value: unknown,
): boolean {
  switch (typeName) {
    case "string":
      return typeof value === "string";
    case "integer":
      // Whole numbers, and strings that strconv.Atoi accepts.
      if (typeof value === "number") return Number.isInteger(value);
      return typeof value === "string" && /^[+-]?\d+$/.test(value);
    case "boolean":
      return typeof value === "boolean" || value === "true" || value === "false";
    case "object":
      return isMap(value);
  }
  if (!Array.isArray(value) || items === undefined) return false;
  return value.every((item) => validateConfigValue(items.type, items.items, item));
}

/** loaders.go `LoadProjectBytes`: what `pulumi` does with Pulumi.yaml before anything else. */
export function loadProject(text: string): ProjectResult {
  const parsed = parseYaml(text);
  if (parsed.problems.length > 0) return { problems: parsed.problems };
  const raw = parsed.value;
  // project.go SimplifyMarshalledProject
  if (!isMap(raw)) return { problems: [`expected project to be an object, was '${typeof raw}'`] };

  // project.go ValidateProject
  if (!("name" in raw)) return { problems: ["project is missing a 'name' attribute"] };
  if (typeof raw.name !== "string" || raw.name === "")
    return { problems: ["project is missing a non-empty string 'name' attribute"] };
  if (!validateSchema(raw))
    return {
      problems: (validateSchema.errors ?? []).map(
        (e) => `#${e.instancePath}: ${e.message}${e.params ? ` ${JSON.stringify(e.params)}` : ""}`,
      ),
    };

  // project.go RewriteConfigPathIntoStackConfigDir
  const project: Record<string, unknown> = structuredClone(raw);
  if (typeof project.config === "string") {
    if ("stackConfigDir" in project)
      return {
        problems: [
          "Should not use both config and stackConfigDir to define the stack directory. Use only stackConfigDir instead.",
        ],
      };
    project.stackConfigDir = project.config;
    project.config = null;
  }

  // project.go RewriteShorthandConfigValues
  const name = raw.name;
  const config: Record<string, ProjectConfigType> = {};
  if (isMap(project.config))
    for (const [key, value] of Object.entries(project.config)) {
      if (isPrimitiveValue(value) || Array.isArray(value))
        config[key] = configKeyIsNamespacedByProject(name, key) ? { default: value } : { value };
      else config[key] = value as ProjectConfigType;
    }

  // project.go (*Project).Validate — it returns the first problem (map order); all are listed here.
  const problems: string[] = [];
  for (const [key, c] of Object.entries(config)) {
    if (present(c.default) && present(c.value)) {
      problems.push(`project config '${key}' cannot have both a 'default' and 'value' attribute`);
      continue;
    }
    if (configKeyIsNamespacedByProject(name, key)) {
      if (c.type === "array" && c.items === undefined)
        problems.push(
          `The configuration key '${key}' declares an array but does not specify the underlying type via the 'items' attribute`,
        );
      else if (c.type !== undefined && present(c.default) && !validateConfigValue(c.type, c.items, c.default))
        problems.push(
          `The default value specified for configuration key '${key}' is not of the expected type '${inferFullTypeName(c.type, c.items)}'`,
        );
    } else if (c.type !== undefined)
      problems.push(
        `Configuration key '${key}' is not namespaced by the project and should not define a type`,
      );
    else if (present(c.default))
      problems.push(
        `Configuration key '${key}' is not namespaced by the project and should not define a default value. Did you mean to use the 'value' attribute instead of 'default'?`,
      );
    else if (!present(c.value))
      problems.push(`Configuration key '${key}' is namespaced and must provide an attribute 'value'`);
  }
  if (problems.length > 0) return { problems };
  return { project: { name, config, raw }, problems: [] };
}

/** A stack config value as Pulumi holds it (resource/config object.go `MarshalString`). */
export interface StackValue {
  text: string;
  secure: boolean;
  object: boolean;
}

export interface LoadedStack {
  /** Fully namespaced keys. */
  config: Map<string, StackValue>;
  raw: Record<string, unknown>;
}

/** resource/config key.go `ParseKey`: `<namespace>:<name>`, or the old `<namespace>:config:<name>`. */
export function parseKey(key: string): { namespace: string; name: string } | undefined {
  const parts = key.split(":");
  if (parts.length === 2) return { namespace: parts[0]!, name: parts[1]! };
  if (parts.length === 3 && parts[1] === "config" && parts[0] !== "" && parts[2] !== "")
    return { namespace: parts[0]!, name: parts[2]! };
  return undefined;
}

function toStackValue(v: unknown): StackValue {
  if (typeof v === "string") return { text: v, secure: false, object: false };
  if (typeof v === "number" || typeof v === "boolean")
    return { text: JSON.stringify(v), secure: false, object: false };
  if (isMap(v) && Object.keys(v).length === 1 && typeof v.secure === "string")
    return { text: v.secure, secure: true, object: false };
  return { text: JSON.stringify(v), secure: false, object: true };
}

/**
 * loaders.go `LoadProjectStackBytes` and config map.go `Map.UnmarshalYAML`, then the checks
 * pkg/workspace/config.go `ValidateStackConfigAndApplyProjectConfig` runs before preview and up.
 */
export function checkStack(project: LoadedProject, stackName: string, text: string): string[] {
  const parsed = parseYaml(text);
  if (parsed.problems.length > 0) return parsed.problems;
  if (parsed.value === null || parsed.value === undefined) return []; // an empty stack file is allowed
  if (!isMap(parsed.value)) return [`expected project to be an object, was '${typeof parsed.value}'`];
  const raw = parsed.value;
  const problems: string[] = [];

  const config = new Map<string, StackValue>();
  const rawConfig = raw.config ?? {};
  if (!isMap(rawConfig))
    return [`could not unmarshal map: config must be a mapping (got ${JSON.stringify(rawConfig)})`];
  const empty: string[] = [];
  for (const [written, value] of Object.entries(rawConfig)) {
    const key = written.includes(":") ? written : `${project.name}:${written}`; // stackConfigNamespacedWithProject
    if (value === null || value === undefined) empty.push(key); // checkForEmptyConfig (after namespacing)
    if (parseKey(key) === undefined) {
      problems.push(
        `could not unmarshal map: could not parse ${key} as a configuration key (configuration keys should be of the form \`<namespace>:<name>\`)`,
      );
      continue;
    }
    config.set(key, toStackValue(value ?? ""));
  }
  if (empty.length > 0)
    problems.push(
      `No value for configuration key${empty.length > 1 ? "s" : ""} ${empty.map((k) => `"${k}"`).join(empty.length === 2 ? " and " : ", ")}. This is currently treated as an empty string \`""\`, but will be treated as \`null\` in a future version of pulumi.\nSet the value${empty.length > 1 ? "s" : ""} to \`""\` to avoid this warning.`,
    );
  if (problems.length > 0) return problems;

  // mergeConfig: project keys without default or value are required from the stack.
  const declared = Object.entries(project.config)
    .map(([written, type]) => ({
      written,
      key: written.includes(":") ? written : `${project.name}:${written}`,
      type,
    }))
    .sort((a, b) => (a.written < b.written ? -1 : 1));
  const missing = declared
    .filter(({ key, type }) => {
      const namespace = parseKey(key)?.namespace;
      return !config.has(key) && !present(type.value) && !present(type.default) && namespace === project.name;
    })
    .map(({ written }) => written);
  if (missing.length > 0 && raw.environment === undefined)
    return [
      `Stack '${stackName}' is missing configuration value${missing.length > 1 ? "s" : ""} ${formatMissingKeys(missing)}`,
    ];

  // validateStackConfigValues / validateStackConfigValue, over the merged configuration.
  for (const { written, key, type } of declared) {
    if (type.type === undefined) continue;
    const stackValue =
      config.get(key) ??
      (present(type.default)
        ? toStackValue(isPrimitiveValue(type.default) ? String(type.default) : type.default)
        : undefined);
    if (stackValue === undefined) continue;
    if (type.secret && !stackValue.secure) {
      problems.push(
        `Stack '${stackName}' with configuration key '${written}' must be encrypted as it's secret`,
      );
      continue;
    }
    if (stackValue.secure) continue; // would need the stack's decrypter
    const content: unknown = stackValue.object ? JSON.parse(stackValue.text) : stackValue.text;
    if (!validateConfigValue(type.type, type.items, content))
      problems.push(
        `Stack '${stackName}' with configuration key '${written}' must be of type '${inferFullTypeName(type.type, type.items)}'`,
      );
  }
  return problems;
}

/** The stack's configuration as the program would see it (namespaced keys, values as text). */
export function stackConfig(project: LoadedProject, text: string): Map<string, StackValue> {
  const raw = parseYaml(text).value;
  const config = new Map<string, StackValue>();
  if (isMap(raw) && isMap(raw.config))
    for (const [written, value] of Object.entries(raw.config))
      config.set(written.includes(":") ? written : `${project.name}:${written}`, toStackValue(value ?? ""));
  return config;
}

/** pkg/workspace/config.go `formatMissingKeys`. */
function formatMissingKeys(keys: string[]): string {
  if (keys.length === 1) return `'${keys[0]}'`;
  const sorted = [...keys].sort();
  return sorted
    .map((k, i) =>
      i === sorted.length - 1 ? `and '${k}'` : i === sorted.length - 2 ? `'${k}' ` : `'${k}', `,
    )
    .join("");
}
