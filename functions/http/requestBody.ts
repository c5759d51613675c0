// Reading request bodies with size caps, whichever server is in front of the handler.
//
// What the Functions Framework (5.x, build/src/server.js) does before a handler runs: it installs
// body-parser's json, text, urlencoded and — last — `raw` with `type: '*/*'` and a limit of 1024 MB,
// so EVERY request body, whatever its content type (application/x-ndjson included), is read into
// memory before the handler is called: `req.rawBody` is the whole body as a Buffer, `req.body` the
// parsed object (JSON) or the same bytes (other types), and the request stream has ended. A body
// that is not valid JSON under `Content-Type: application/json` is refused by the framework itself
// (400, HTML) before the handler sees it. On Cloud Run an HTTP/1 request is capped at 32 MiB anyway.
//
// So bodies are taken from `req.rawBody` when the framework already read them, and read from the
// request stream otherwise (functions/http/streamingServer.ts serves handlers without a body
// parser: that is the bounded-memory path for large NDJSON submissions).
import { invalidArgument, tooLarge } from "../core/errors";
import type { HttpRequest } from "./httpTypes";

/** The body bytes when a server (the Functions Framework) has already read them; else undefined. */
export function bufferedBody(req: HttpRequest): Buffer | undefined {
  if (Buffer.isBuffer(req.rawBody)) return req.rawBody;
  if (Buffer.isBuffer(req.body)) return req.body;
  return undefined;
}

/** Media type without parameters, lower-cased (`application/json; charset=utf-8` → `application/json`). */
export function mediaType(req: HttpRequest): string {
  const header = req.headers["content-type"];
  return (header ?? "").split(";")[0]!.trim().toLowerCase();
}

/**
 * The JSON body as a value. 413 when it exceeds `maxBytes` (the rest of a streamed body is still
 * read and discarded, so the client gets the answer rather than a reset connection); 400 when it
 * is not JSON.
 */
export async function readJsonBody(req: HttpRequest, maxBytes: number): Promise<unknown> {
  const buffered = bufferedBody(req);
  let bytes: Buffer;
  if (buffered) {
    if (buffered.length > maxBytes) throw bodyTooLarge(buffered.length, maxBytes);
    // Already parsed by the framework's JSON parser: don't parse a second copy.
    if (req.body !== undefined && !Buffer.isBuffer(req.body) && typeof req.body !== "string") return req.body;
    bytes = buffered;
  } else {
    const parts: Buffer[] = [];
    let size = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size <= maxBytes) parts.push(chunk);
      else parts.length = 0; // over the cap: keep reading to the end, keep nothing
    }
    if (size > maxBytes) throw bodyTooLarge(size, maxBytes);
    bytes = Buffer.concat(parts, size);
  }
  if (bytes.length === 0)
    throw invalidArgument("the request body is empty", [{ path: "body", problem: "empty" }]);
  try {
    return JSON.parse(bytes.toString("utf8"));
  } catch (err) {
    throw invalidArgument("the request body is not valid JSON", [
      { path: "body", problem: (err as Error).message },
    ]);
  }
}

function bodyTooLarge(size: number, maxBytes: number) {
  return tooLarge(`the request body is ${size} bytes; the limit is ${maxBytes}`, [
    { path: "body", problem: `${size} bytes exceeds ${maxBytes}` },
  ]);
}

/**
 * Reads and discards what is left of a streamed request body, so an early answer (an error found
 * in an NDJSON header, a refused stream) reaches a client that is still sending. Memory stays flat.
 */
export async function drainRequest(req: HttpRequest): Promise<void> {
  if (bufferedBody(req) || req.readableEnded) return;
  try {
    for await (const _chunk of req as AsyncIterable<Buffer>) {
      // discard
    }
  } catch {
    // the client went away; nothing to answer
  }
}
