// What `tally submit` sends: the batch header and its items, as a source the typed client
// (local/client/tallyClient.ts) reads one item at a time and submits with open/append/seal. A .json
// file is parsed (it is in memory anyway); a .ndjson file is read line by line and each line is sent
// as it is (never parsed here), and `--demo N` generates its items — so memory stays bounded
// whatever the batch size. Flags (--id, --pipeline, --threshold, --depends-on) fill in or override
// the file's own header. Files are opened before any request, so a missing one is a usage error.
import { createReadStream } from "node:fs";
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import type { ItemInput } from "../client/tallyClient";
import { UsageError } from "./args";
import { demoItems } from "./demoItems";

export interface BatchHeader {
  id?: string;
  pipeline?: string;
  failureThreshold?: number;
  dependsOn?: string[];
  [key: string]: unknown;
}

export interface SubmitFlags {
  pipeline: string | undefined;
  id: string | undefined;
  threshold: number | undefined;
  dependsOn: string[];
}

export interface SubmitSource {
  header: BatchHeader & { pipeline: string };
  /** Items (objects, or NDJSON lines sent as they are); read again from the start on every call. */
  items: () => AsyncIterable<ItemInput> | Iterable<ItemInput>;
  /** The number of items when known up front (a .json file, --demo). */
  count: number | null;
}

function applyFlags(fileHeader: BatchHeader, flags: SubmitFlags, source: string): SubmitSource["header"] {
  const header: BatchHeader = { ...fileHeader };
  if (flags.id !== undefined) header.id = flags.id;
  if (flags.pipeline !== undefined) header.pipeline = flags.pipeline;
  if (flags.threshold !== undefined) header.failureThreshold = flags.threshold;
  if (flags.dependsOn.length > 0) header.dependsOn = flags.dependsOn;
  if (header.pipeline === undefined)
    throw new UsageError(`--pipeline is required (${source} names no pipeline)`);
  return header as SubmitSource["header"];
}

export function demoSource(
  plan: { count: number; failRate: number; permanentRate: number },
  flags: SubmitFlags,
): SubmitSource {
  const header = applyFlags({}, flags, "--demo");
  return { header, items: () => demoItems(plan), count: plan.count };
}

async function jsonFileSource(path: string, flags: SubmitFlags): Promise<SubmitSource> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, "utf8"));
  } catch (err) {
    throw new UsageError(`cannot read --file ${path}: ${(err as Error).message}`);
  }
  let fileHeader: BatchHeader;
  let items: unknown[];
  if (Array.isArray(parsed)) {
    fileHeader = {};
    items = parsed;
  } else if (parsed && typeof parsed === "object" && Array.isArray((parsed as { items?: unknown }).items)) {
    const { items: fileItems, ...rest } = parsed as BatchHeader & { items: unknown[] };
    fileHeader = rest;
    items = fileItems;
  } else {
    throw new UsageError(`--file ${path} must hold an array of items or an object with an "items" array`);
  }
  const header = applyFlags(fileHeader, flags, path);
  // Items go as the file wrote them (an invalid one is refused by the coordinator, with its path).
  return { header, items: () => items.map((it) => JSON.stringify(it)), count: items.length };
}

/** The lines of a file, without their line ends. */
async function* fileLines(path: string): AsyncGenerator<string> {
  const lines = createInterface({ input: createReadStream(path), crlfDelay: Number.POSITIVE_INFINITY });
  try {
    for await (const line of lines) yield line;
  } finally {
    lines.close();
  }
}

/** The first non-blank line decides whether the file has a header (an object without `payload`). */
async function ndjsonFileSource(path: string, flags: SubmitFlags): Promise<SubmitSource> {
  let first: string | null = null;
  try {
    for await (const line of fileLines(path)) {
      if (line.trim() === "") continue;
      first = line;
      break;
    }
  } catch (err) {
    throw new UsageError(`cannot read --file ${path}: ${(err as Error).message}`);
  }
  let fileHeader: BatchHeader = {};
  let hasHeader = false;
  if (first !== null) {
    let value: unknown;
    try {
      value = JSON.parse(first);
    } catch {
      throw new UsageError(`--file ${path}: line 1 is not JSON`);
    }
    if (value && typeof value === "object" && !Array.isArray(value) && !("payload" in value)) {
      fileHeader = value as BatchHeader;
      hasHeader = true;
    }
  }
  const header = applyFlags(fileHeader, flags, path);
  async function* items(): AsyncGenerator<string> {
    let skipHeader = hasHeader;
    for await (const line of fileLines(path)) {
      if (line.trim() === "") continue;
      if (skipHeader) {
        skipHeader = false;
        continue;
      }
      yield line;
    }
  }
  return { header, items, count: null };
}

export function fileSource(
  path: string,
  format: "json" | "ndjson",
  flags: SubmitFlags,
): Promise<SubmitSource> {
  return format === "json" ? jsonFileSource(path, flags) : ndjsonFileSource(path, flags);
}
