// NDJSON line splitting, from a stream (chunks split anywhere, even inside a multi-byte character)
// and from an already-read buffer (the Functions Framework's rawBody): numbering, blank lines,
// CRLF, a last line without a newline, and over-long lines reported without being kept.
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import type { HttpRequest } from "../../functions/http/httpTypes";
import { type BodyLine, readBodyLines } from "../../functions/http/lineReader";

const text = '{"a":1}\r\n\n{"é":"ü€"}\n   \n' + "x".repeat(50) + '\n{"last":true}';
const expected: BodyLine[] = [
  { lineNo: 1, text: '{"a":1}', bytes: 8 },
  { lineNo: 3, text: '{"é":"ü€"}', bytes: 14 },
  { lineNo: 5, tooLongBytes: 50 },
  { lineNo: 6, text: '{"last":true}', bytes: 13 },
];

async function collect(req: HttpRequest, max = 20): Promise<BodyLine[]> {
  const out: BodyLine[] = [];
  for await (const group of readBodyLines(req, max)) out.push(...group);
  return out;
}

describe("readBodyLines", () => {
  it("splits a stream cut into 1..7-byte chunks the same way", async () => {
    const bytes = Buffer.from(text);
    for (const size of [1, 2, 3, 7]) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size));
      const req = Readable.from(chunks) as unknown as HttpRequest;
      expect(await collect(req), `chunk size ${size}`).toEqual(expected);
    }
  });

  it("slices the framework's already-read body", async () => {
    const req = Object.assign(Readable.from([]), { rawBody: Buffer.from(text) }) as unknown as HttpRequest;
    expect(await collect(req)).toEqual(expected);
  });

  it("hands out a large buffered body in bounded groups", async () => {
    const body = Buffer.from(Array.from({ length: 2500 }, (_, i) => `{"i":${i}}`).join("\n"));
    const req = Object.assign(Readable.from([]), { rawBody: body }) as unknown as HttpRequest;
    const sizes: number[] = [];
    for await (const group of readBodyLines(req, 100)) sizes.push(group.length);
    expect(sizes).toEqual([1000, 1000, 499, 1]); // the last line has no newline: it comes at the end
  });
});
