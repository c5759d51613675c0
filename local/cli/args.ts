// Command-line parsing for `tally`: node's util.parseArgs for the syntax, then per-command checks
// that name the offending flag. Nothing here touches the network, so every usage error is caught
// before a request is made.
import { parseArgs } from "node:util";
import { limits } from "../../functions/core/limits";
import { type ItemStatus, itemStatuses } from "../../functions/core/model";
import { defaultCoordinatorUrl, defaultReconcilerUrl } from "./usage";

export class UsageError extends Error {
  /** Unknown command or flag: the full usage follows the message. */
  constructor(
    message: string,
    readonly showUsage = false,
  ) {
    super(message);
    this.name = "UsageError";
  }
}

export type SubmitSource =
  | { kind: "file"; path: string; format: "json" | "ndjson" }
  | { kind: "demo"; count: number; failRate: number; permanentRate: number };

export interface WatchOptions {
  watch: boolean;
  intervalMs: number;
}

export type Command =
  | { kind: "help" }
  | ({
      kind: "submit";
      url: string;
      pipeline: string | undefined;
      source: SubmitSource;
      id: string | undefined;
      threshold: number | undefined;
      dependsOn: string[];
      /** Go on from the batch's stored prefix (needs --id). */
      resume: boolean;
    } & WatchOptions)
  | ({ kind: "status"; url: string; batchId: string; json: boolean } & WatchOptions)
  | {
      kind: "items";
      url: string;
      batchId: string;
      status: ItemStatus | undefined;
      limit: number;
      json: boolean;
    }
  | { kind: "cancel"; url: string; batchId: string }
  | ({ kind: "retry"; url: string; batchId: string } & WatchOptions)
  | { kind: "reconcile"; reconcilerUrl: string };

const options = {
  url: { type: "string" },
  "reconciler-url": { type: "string" },
  pipeline: { type: "string" },
  file: { type: "string" },
  demo: { type: "string" },
  "fail-rate": { type: "string" },
  "permanent-rate": { type: "string" },
  id: { type: "string" },
  threshold: { type: "string" },
  "depends-on": { type: "string", multiple: true },
  resume: { type: "boolean" },
  watch: { type: "boolean" },
  interval: { type: "string" },
  status: { type: "string" },
  limit: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;
type OptionName = keyof typeof options;

const commandOptions: Record<Exclude<Command["kind"], "help">, OptionName[]> = {
  submit: [
    "url",
    "pipeline",
    "file",
    "demo",
    "fail-rate",
    "permanent-rate",
    "id",
    "threshold",
    "depends-on",
    "resume",
    "watch",
    "interval",
  ],
  status: ["url", "watch", "interval", "json"],
  items: ["url", "status", "limit", "json"],
  cancel: ["url"],
  retry: ["url", "watch", "interval"],
  reconcile: ["reconciler-url"],
};

/** Turns parseArgs' messages into ones that name the flag plainly. */
function rephraseParseError(err: unknown): UsageError {
  const e = err as { code?: string; message?: string };
  const message = e.message ?? String(err);
  const quoted = /'(-{1,2}[^' ]+)/.exec(message)?.[1];
  if (e.code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") return new UsageError(`unknown option ${quoted}`, true);
  if (e.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
    if (/argument missing/.test(message)) return new UsageError(`${quoted} needs a value`);
    if (/ambiguous/.test(message))
      return new UsageError(`${quoted} needs a value (write ${quoted}=VALUE for a value starting with "-")`);
    return new UsageError(`${quoted} takes no value`);
  }
  return new UsageError(message, true);
}

function numberIn(flag: string, raw: string, min: number, max: number, what: string): number {
  const n = raw.trim() === "" ? Number.NaN : Number(raw);
  if (!Number.isFinite(n) || n < min || n > max) throw new UsageError(`--${flag} must be ${what}`);
  return n;
}

function integerIn(flag: string, raw: string, min: number, max: number): number {
  const n = numberIn(flag, raw, min, max, `an integer in ${min}..${max}`);
  if (!Number.isInteger(n)) throw new UsageError(`--${flag} must be an integer in ${min}..${max}`);
  return n;
}

function httpUrl(source: string, raw: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new UsageError(`${source} must be an http(s) URL, got ${JSON.stringify(raw)}`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:")
    throw new UsageError(`${source} must be an http(s) URL, got ${JSON.stringify(raw)}`);
  return raw.replace(/\/+$/, "");
}

export function parseCommand(argv: string[], env: NodeJS.ProcessEnv = process.env): Command {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof options; allowPositionals: true; strict: true }>>;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw rephraseParseError(err);
  }
  const { values: v, positionals } = parsed;
  const [name, ...rest] = positionals;
  if (v.help) return { kind: "help" };
  if (!name) throw new UsageError("no command given", true);
  if (!(name in commandOptions)) throw new UsageError(`unknown command ${JSON.stringify(name)}`, true);
  const kind = name as keyof typeof commandOptions;

  const allowed = commandOptions[kind];
  for (const opt of Object.keys(v) as OptionName[]) {
    if (opt !== "help" && !allowed.includes(opt))
      throw new UsageError(`--${opt} is not an option of \`tally ${kind}\``, true);
  }

  const url = httpUrl(
    v.url !== undefined ? "--url" : "TALLY_URL",
    v.url ?? (env.TALLY_URL || defaultCoordinatorUrl), // an empty variable counts as unset
  );
  const watch = {
    watch: v.watch ?? false,
    intervalMs:
      v.interval === undefined
        ? 1000
        : numberIn("interval", v.interval, 0.05, 60, "a number of seconds in 0.05..60") * 1000,
  };
  const batchId = (): string => {
    if (rest.length === 0) throw new UsageError(`\`tally ${kind}\` needs a batch ID`);
    if (rest.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(rest[1])}`, true);
    return rest[0]!;
  };

  switch (kind) {
    case "submit": {
      if (rest.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(rest[0])}`, true);
      return { kind, url, ...watch, ...parseSubmit(v) };
    }
    case "status":
      return { kind, url, batchId: batchId(), json: v.json ?? false, ...watch };
    case "items": {
      const status = v.status;
      if (status !== undefined && !(itemStatuses as readonly string[]).includes(status))
        throw new UsageError(`--status must be one of ${itemStatuses.join(", ")}`);
      const limit = v.limit === undefined ? 50 : integerIn("limit", v.limit, 1, 100_000);
      return {
        kind,
        url,
        batchId: batchId(),
        status: status as ItemStatus | undefined,
        limit,
        json: v.json ?? false,
      };
    }
    case "cancel":
      return { kind, url, batchId: batchId() };
    case "retry":
      return { kind, url, batchId: batchId(), ...watch };
    case "reconcile": {
      if (rest.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(rest[0])}`, true);
      const source = v["reconciler-url"] !== undefined ? "--reconciler-url" : "TALLY_RECONCILER_URL";
      return {
        kind,
        reconcilerUrl: httpUrl(
          source,
          v["reconciler-url"] ?? (env.TALLY_RECONCILER_URL || defaultReconcilerUrl),
        ),
      };
    }
  }
}

type Values = {
  [K in OptionName]?: K extends "depends-on"
    ? string[]
    : K extends "watch" | "json" | "help" | "resume"
      ? boolean
      : string;
};

function parseSubmit(
  v: Values,
): Omit<Extract<Command, { kind: "submit" }>, "kind" | "url" | keyof WatchOptions> {
  if (v.file !== undefined && v.demo !== undefined)
    throw new UsageError("--file and --demo cannot be used together");
  if (v.file === undefined && v.demo === undefined)
    throw new UsageError("`tally submit` needs --file or --demo");
  if (v.demo === undefined) {
    if (v["fail-rate"] !== undefined) throw new UsageError("--fail-rate only applies to --demo");
    if (v["permanent-rate"] !== undefined) throw new UsageError("--permanent-rate only applies to --demo");
  }
  let source: SubmitSource;
  if (v.file !== undefined) {
    const path = v.file;
    const format =
      path.endsWith(".ndjson") || path.endsWith(".jsonl") ? "ndjson" : path.endsWith(".json") ? "json" : null;
    if (!format) throw new UsageError("--file must name a .json or .ndjson file");
    source = { kind: "file", path, format };
  } else {
    const count = integerIn("demo", v.demo!, 1, limits.maxItemsPerBatch);
    const failRate =
      v["fail-rate"] === undefined ? 0 : numberIn("fail-rate", v["fail-rate"], 0, 1, "a number in 0..1");
    const permanentRate =
      v["permanent-rate"] === undefined
        ? 0
        : numberIn("permanent-rate", v["permanent-rate"], 0, 1, "a number in 0..1");
    if (failRate + permanentRate > 1)
      throw new UsageError("--fail-rate plus --permanent-rate must be at most 1");
    if (v.pipeline !== undefined && v.pipeline !== "demo")
      throw new UsageError(
        `--demo builds items for the demo pipeline; --pipeline must be demo, not ${JSON.stringify(v.pipeline)}`,
      );
    source = { kind: "demo", count, failRate, permanentRate };
  }
  if (v.pipeline !== undefined && v.pipeline.trim() === "")
    throw new UsageError("--pipeline must not be empty");
  if (v.id !== undefined && v.id.trim() === "") throw new UsageError("--id must not be empty");
  const threshold =
    v.threshold === undefined ? undefined : numberIn("threshold", v.threshold, 0, 1, "a number in 0..1");
  // `--depends-on a --depends-on b` or `--depends-on a,b`.
  const dependsOn = (v["depends-on"] ?? []).flatMap((s) => s.split(",")).map((s) => s.trim());
  if (dependsOn.some((d) => d === "")) throw new UsageError("--depends-on must name a batch ID");
  if (v.resume && v.id === undefined)
    throw new UsageError("--resume needs --id: the batch to go on with (the ID the interrupted run printed)");
  return {
    resume: v.resume ?? false,
    pipeline: v.pipeline ?? (source.kind === "demo" ? "demo" : undefined),
    source,
    id: v.id,
    threshold,
    dependsOn,
  };
}
