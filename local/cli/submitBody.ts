// Builds the body of `POST /v1/batches` for `tally submit`: a .json file is sent as JSON; a
// .ndjson file and `--demo N` are streamed as NDJSON (a header line, then one item per line), so
// the client's memory stays bounded whatever the batch size. Flags (--id, --pipeline,
// --threshold, --depends-on) fill in or override the file's own header.
import { createReadStream } from "node:fs";
import { readFile } from "node:fs/promises";
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

export type SubmitRequest =
  | { kind: "json"; header: BatchHeader; body: BatchHeader & { items: unknown[] } }
  | { kind: "ndjson"; header: BatchHeader; stream: AsyncIterable<Uint8Array> };

const chunkBytes = 64 * 1024;

function applyFlags(fileHeader: BatchHeader, flags: SubmitFlags, source: string): BatchHeader {
  const header: BatchHeader = { ...fileHeader };
  if (flags.id !== undefined) header.id = flags.id;
  if (flags.pipeline !== undefined) header.pipeline = flags.pipeline;
  if (flags.threshold !== undefined) header.failureThreshold = flags.threshold;
  if (flags.dependsOn.length > 0) header.dependsOn = flags.dependsOn;
  if (header.pipeline === undefined)
    throw new UsageError(`--pipeline is required (${source} names no pipeline)`);
  return header;
}

/** Lines joined into ~64 KiB chunks: few writes, bounded buffering. */
async function* ndjsonChunks(header: BatchHeader, lines: AsyncIterable<string> | Iterable<string>) {
  const encoder = new TextEncoder();
  let buf = `${JSON.stringify(header)}\n`;
  for await (const line of lines) {
    buf += `${line}\n`;
    if (buf.length >= chunkBytes) {
      yield encoder.encode(buf);
      buf = "";
    }
  }
  if (buf) yield encoder.encode(buf);
}

export function demoRequest(
  plan: { count: number; failRate: number; permanentRate: number },
  flags: SubmitFlags,
): SubmitRequest {
  const header = applyFlags({}, flags, "--demo");
  const lines = (function* () {
    for (const item of demoItems(plan)) yield JSON.stringify(item);
  })();
  return { kind: "ndjson", header, stream: ndjsonChunks(header, lines) };
}

async function jsonFileRequest(path: string, flags: SubmitFlags): Promise<SubmitRequest> {
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
  return { kind: "json", header, body: { ...header, items } };
}

/** Reads the first line to see whether it is a header (no `payload` field); the rest is sent byte for byte. */
async function ndjsonFileRequest(path: string, flags: SubmitFlags): Promise<SubmitRequest> {
  const file = createReadStream(path);
  const chunks = file[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let head = Buffer.alloc(0);
  let newline = -1;
  try {
    while (newline < 0) {
      const next = await chunks.next();
      if (next.done) break;
      head = Buffer.concat([head, next.value]);
      newline = head.indexOf(0x0a);
    }
  } catch (err) {
    file.destroy();
    throw new UsageError(`cannot read --file ${path}: ${(err as Error).message}`);
  }
  const firstLine = (newline < 0 ? head : head.subarray(0, newline)).toString("utf8").trim();
  let fileHeader: BatchHeader = {};
  let rest = head;
  if (firstLine !== "") {
    let first: unknown;
    try {
      first = JSON.parse(firstLine);
    } catch {
      file.destroy();
      throw new UsageError(`--file ${path}: line 1 is not JSON`);
    }
    if (first && typeof first === "object" && !Array.isArray(first) && !("payload" in first)) {
      fileHeader = first as BatchHeader;
      rest = newline < 0 ? Buffer.alloc(0) : head.subarray(newline + 1);
    }
  }
  const header = applyFlags(fileHeader, flags, path);
  async function* stream(): AsyncGenerator<Uint8Array> {
    yield new TextEncoder().encode(`${JSON.stringify(header)}\n`);
    if (rest.length > 0) yield rest;
    for (;;) {
      const next = await chunks.next();
      if (next.done) return;
      yield next.value;
    }
  }
  return { kind: "ndjson", header, stream: stream() };
}

export function fileRequest(
  path: string,
  format: "json" | "ndjson",
  flags: SubmitFlags,
): Promise<SubmitRequest> {
  return format === "json" ? jsonFileRequest(path, flags) : ndjsonFileRequest(path, flags);
}
