// A streaming NDJSON client for `POST /v1/batches`: the header line, then one item per line,
// generated as the socket drains, so the bench's own memory stays flat at any batch size.
import http from "node:http";
import { itemIdFor } from "../baselines/itemDocShape";

export interface SubmitResult {
  status: number;
  body: unknown;
  ms: number;
}

export async function submitNdjson(opts: {
  coordinatorUrl: string;
  batchId: string;
  pipeline?: string;
  items: number;
  payload?: (i: number) => unknown;
}): Promise<SubmitResult> {
  const url = new URL("/v1/batches", opts.coordinatorUrl);
  const payload = opts.payload ?? (() => ({}));
  const t0 = performance.now();
  return new Promise<SubmitResult>((resolve, reject) => {
    const req = http.request(url, {
      method: "POST",
      headers: { "content-type": "application/x-ndjson" },
      // One long request: no agent pooling, no timeouts.
      agent: false,
    });
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString();
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          /* keep the text */
        }
        resolve({ status: res.statusCode ?? 0, body, ms: performance.now() - t0 });
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    req.write(`${JSON.stringify({ id: opts.batchId, pipeline: opts.pipeline ?? "demo" })}\n`);
    let i = 0;
    const pump = () => {
      while (i < opts.items) {
        // ~64 KiB per write keeps syscalls few without buffering much.
        let block = "";
        for (let k = 0; k < 1000 && i < opts.items; k++, i++)
          block += `${JSON.stringify({ id: itemIdFor(i), payload: payload(i) })}\n`;
        if (!req.write(block)) {
          req.once("drain", pump);
          return;
        }
      }
      req.end();
    };
    pump();
  });
}

/** GET a coordinator JSON resource. */
export async function getJson<T>(coordinatorUrl: string, path: string): Promise<T> {
  const res = await fetch(new URL(path, coordinatorUrl));
  const text = await res.text();
  if (!res.ok) throw new Error(`GET ${path} answered ${res.status}: ${text}`);
  return JSON.parse(text) as T;
}
