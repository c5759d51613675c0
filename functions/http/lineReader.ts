// Splitting a request body into lines (NDJSON) with bounded memory: the body is consumed chunk by
// chunk from the request stream (backpressure: the next chunk is read only when the consumer asks),
// or sliced out of the framework's already-read buffer. A line longer than `maxLineBytes` is never
// accumulated: it is reported by length and skipped. Newline bytes never occur inside a UTF-8
// multi-byte sequence, so splitting bytes on '\n' before decoding is safe.

import type { HttpRequest } from "./httpTypes";
import { bufferedBody } from "./requestBody";

export type BodyLine =
  | { lineNo: number; text: string; bytes: number }
  /** The line exceeded the cap; its content was dropped. */
  | { lineNo: number; tooLongBytes: number };

/** Lines handed out per step when slicing an already-read buffer. */
const linesPerSlice = 1000;

/**
 * The body's non-empty lines, in groups (one group per received chunk), numbered from 1 (blank
 * lines count for numbering but are not returned; a trailing '\r' is dropped).
 */
export async function* readBodyLines(req: HttpRequest, maxLineBytes: number): AsyncGenerator<BodyLine[]> {
  const buffered = bufferedBody(req);
  const splitter = new LineSplitter(maxLineBytes);
  if (buffered) {
    // Slices of the framework's buffer: nothing is copied but each line's own text.
    for (let at = 0; at < buffered.length; ) {
      const end = Math.min(buffered.length, nthNewline(buffered, at, linesPerSlice));
      const lines = splitter.push(buffered.subarray(at, end));
      at = end;
      if (lines.length > 0) yield lines;
    }
  } else {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      const lines = splitter.push(chunk);
      if (lines.length > 0) yield lines;
    }
  }
  const last = splitter.end();
  if (last.length > 0) yield last;
}

/** Offset just past the n-th newline from `from` (or the buffer's end). */
function nthNewline(buf: Buffer, from: number, n: number): number {
  let at = from;
  for (let i = 0; i < n; i++) {
    const nl = buf.indexOf(10, at);
    if (nl === -1) return buf.length;
    at = nl + 1;
  }
  return at;
}

class LineSplitter {
  /** Pieces of a line that spans chunks (copied: a chunk may be a slice of a large buffer). */
  private parts: Buffer[] = [];
  private partBytes = 0;
  /** Bytes of the current line once it is known to exceed the cap (its content is dropped). */
  private overflowBytes = 0;
  private lineNo = 0;

  constructor(private readonly maxLineBytes: number) {}

  push(chunk: Buffer): BodyLine[] {
    const out: BodyLine[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(10, start);
      if (nl === -1) {
        this.keep(chunk.subarray(start));
        return out;
      }
      if (this.partBytes === 0 && this.overflowBytes === 0) {
        // The whole line is inside this chunk: decode it in place.
        this.lineNo++;
        this.emitLine(out, chunk.subarray(start, nl), nl - start);
      } else {
        this.keep(chunk.subarray(start, nl));
        this.flush(out);
      }
      start = nl + 1;
    }
  }

  end(): BodyLine[] {
    const out: BodyLine[] = [];
    if (this.partBytes > 0 || this.overflowBytes > 0) this.flush(out);
    return out;
  }

  private keep(piece: Buffer): void {
    if (piece.length === 0) return;
    if (this.overflowBytes > 0 || this.partBytes + piece.length > this.maxLineBytes) {
      this.overflowBytes += this.partBytes + piece.length;
      this.parts = [];
      this.partBytes = 0;
      return;
    }
    this.parts.push(Buffer.from(piece));
    this.partBytes += piece.length;
  }

  private flush(out: BodyLine[]): void {
    this.lineNo++;
    if (this.overflowBytes > 0) out.push({ lineNo: this.lineNo, tooLongBytes: this.overflowBytes });
    else this.emitLine(out, Buffer.concat(this.parts, this.partBytes), this.partBytes);
    this.parts = [];
    this.partBytes = 0;
    this.overflowBytes = 0;
  }

  private emitLine(out: BodyLine[], bytes: Buffer, length: number): void {
    if (length > this.maxLineBytes) {
      out.push({ lineNo: this.lineNo, tooLongBytes: length });
      return;
    }
    let text = bytes.toString("utf8");
    if (text.endsWith("\r")) text = text.slice(0, -1);
    if (text.trim().length > 0) out.push({ lineNo: this.lineNo, text, bytes: length });
  }
}
