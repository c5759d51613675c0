// A small typed client for Tally's coordinator (docs/api.md): submits a batch of any size with the
// open / append / seal protocol, so it works against the deployed coordinator (Cloud Run caps an
// HTTP/1 request at 32 MiB and the Functions Framework buffers every body) with bounded memory on
// both sides, and resumes after an interruption.
//
//   const client = new TallyClient({ baseUrl: "https://coordinator-…run.app", headers: idToken });
//   const { batch } = await client.submit({ id: "b-1", pipeline: "demo" }, items, { onProgress });
//
// How `submit` works:
//   1. `POST /v1/batches {…header, "open": true}` (201 new, 200 when the id exists with this header);
//   2. from offset 0 — or, with `resume`, from the stored prefix the batch reports
//      (`GET /v1/batches/{id}` → progress.received) — the items are read from the source one at a
//      time and sent as NDJSON appends (`POST /v1/batches/{id}:append?offset=N`) of at most
//      `maxItemsPerRequest` items / `maxBytesPerRequest` bytes; one request is in flight while the
//      next is assembled, so at most two requests' worth of items are held;
//   3. `POST /v1/batches/{id}:seal {"total": N}` once the source is exhausted.
// Every request is idempotent (an append is keyed by its offset, re-sending a stored range is a
// no-op), so a failed or unanswered request is simply sent again (network errors, 408, 429, 5xx;
// with backoff). A client that dies is resumed by calling `submit` again with `resume: true`: the
// source is read again from the start, the stored prefix is skipped without being sent.
//
// No Google imports: plain fetch. In the cloud, pass `headers` returning an identity token
// (`Authorization: Bearer …`) for the coordinator's Cloud Run IAM.
import { randomUUID } from "node:crypto";

/** One item: `{id?, payload}`, or its JSON text (an NDJSON line, sent as it is). */
export type ItemInput = { id?: string; payload: unknown } | string;
export type ItemSource = Iterable<ItemInput> | AsyncIterable<ItemInput>;

export interface BatchHeader {
  /** Needed to resume; generated (a UUID) when left out. */
  id?: string;
  pipeline: string;
  failureThreshold?: number;
  dependsOn?: string[];
}

/** The coordinator's batch resource (the fields this client reads; the rest is passed through). */
export interface BatchJson {
  id: string;
  pipeline: string;
  status: string;
  total: number | null;
  progress: { received: number; cursor: number; submissionComplete: boolean };
  [key: string]: unknown;
}

export interface AppendAnswer extends BatchJson {
  append: {
    offset: number;
    items: number;
    stored: number;
    matched: number;
    published: number;
    received: number;
    durationMs: number;
  };
}

export interface SubmitProgress {
  batchId: string;
  phase: "opening" | "appending" | "sealing" | "done";
  /** Items the coordinator has acknowledged as stored (the stored prefix). */
  stored: number;
  /** Items read from the source so far (including those skipped by a resume). */
  read: number;
  /** Where this run started (the stored prefix when resuming, else 0). */
  startedAt: number;
  /** The total, once the source is exhausted. */
  total: number | null;
  requests: number;
  bytesSent: number;
  elapsedMs: number;
  /** Items acknowledged by this run per second. */
  itemsPerSecond: number | null;
}

export interface SubmitOptions {
  /** Go on from the batch's stored prefix instead of re-sending (and so re-checking) every item. */
  resume?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: SubmitProgress) => void;
}

export interface SubmitResult {
  batch: BatchJson;
  /** This call created the batch. */
  created: boolean;
  /** The stored prefix this call started from (0 unless resuming). */
  resumedAt: number;
  items: number;
  requests: number;
  ms: number;
}

export interface TallyClientOptions {
  /** The coordinator, e.g. http://127.0.0.1:8080 or the Cloud Run URL. */
  baseUrl: string;
  /** Extra headers per request (e.g. an identity token); may be async. */
  headers?: () => Record<string, string> | Promise<Record<string, string>>;
  /** Items per append (the coordinator accepts up to 10,000). */
  maxItemsPerRequest?: number;
  /** Body bytes per append (the coordinator accepts up to 16 MiB; Cloud Run's cap is 32 MiB). */
  maxBytesPerRequest?: number;
  /** Attempts per request for transient failures (network errors, 408, 429, 5xx). */
  attempts?: number;
  /** First retry delay; doubles per attempt, at most 30 s. */
  retryDelayMs?: number;
  /** Per-request timeout. */
  timeoutMs?: number;
  fetch?: typeof fetch;
}

/** An answer from the coordinator that is not a success: its `{"error": …}` body, kept whole. */
export class TallyApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Array<{ path?: string; problem?: string }>,
    /** The batch a refusal names (`error.batch`): its status and stored prefix (`received`). */
    readonly batch: { id: string; status: string; received: number; cursor: number } | null,
  ) {
    super(message);
    this.name = "TallyApiError";
  }
}

export const clientDefaults = {
  maxItemsPerRequest: 10_000,
  maxBytesPerRequest: 8 * 1024 * 1024,
  attempts: 6,
  retryDelayMs: 500,
  timeoutMs: 300_000,
} as const;

const batchPath = (id: string) => `/v1/batches/${encodeURIComponent(id)}`;
const transient = (status: number) => status === 408 || status === 429 || status >= 500;

export class TallyClient {
  readonly baseUrl: string;
  private readonly o: Required<Omit<TallyClientOptions, "headers" | "fetch">> &
    Pick<TallyClientOptions, "headers">;
  private readonly fetchFn: typeof fetch;

  constructor(opts: TallyClientOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/+$/, "");
    this.fetchFn = opts.fetch ?? fetch;
    this.o = {
      baseUrl: this.baseUrl,
      headers: opts.headers,
      maxItemsPerRequest: opts.maxItemsPerRequest ?? clientDefaults.maxItemsPerRequest,
      maxBytesPerRequest: opts.maxBytesPerRequest ?? clientDefaults.maxBytesPerRequest,
      attempts: opts.attempts ?? clientDefaults.attempts,
      retryDelayMs: opts.retryDelayMs ?? clientDefaults.retryDelayMs,
      timeoutMs: opts.timeoutMs ?? clientDefaults.timeoutMs,
    };
  }

  /** Opens the batch (or finds it, same header): `created` says which. */
  async open(header: BatchHeader, signal?: AbortSignal): Promise<{ created: boolean; batch: BatchJson }> {
    const res = await this.call<BatchJson>("POST", "/v1/batches", {
      json: { ...header, open: true },
      signal,
    });
    return { created: res.status === 201, batch: res.body };
  }

  /** Appends items (NDJSON lines or objects) at `offset`; the answer's `append.received` is the new stored prefix. */
  async append(
    batchId: string,
    offset: number,
    items: ItemInput[],
    signal?: AbortSignal,
  ): Promise<AppendAnswer> {
    const body = items.map((it) => (typeof it === "string" ? it : JSON.stringify(it))).join("\n");
    return this.appendBody(batchId, offset, `${body}\n`, signal);
  }

  async seal(batchId: string, total: number, signal?: AbortSignal): Promise<BatchJson> {
    return (await this.call<BatchJson>("POST", `${batchPath(batchId)}:seal`, { json: { total }, signal }))
      .body;
  }

  async getBatch(batchId: string, signal?: AbortSignal): Promise<BatchJson> {
    return (await this.call<BatchJson>("GET", batchPath(batchId), { signal })).body;
  }

  /** Submits `items` as batch `header` with open/append/seal (see the top of this file). */
  async submit(header: BatchHeader, items: ItemSource, opts: SubmitOptions = {}): Promise<SubmitResult> {
    const t0 = Date.now();
    const id = header.id ?? randomUUID();
    const { signal } = opts;
    let requests = 0;
    let bytesSent = 0;
    let stored = 0;
    let read = 0;
    let total: number | null = null;
    let startAt = 0;
    const progress = (phase: SubmitProgress["phase"]) => {
      const elapsedMs = Date.now() - t0;
      opts.onProgress?.({
        batchId: id,
        phase,
        stored,
        read,
        startedAt: startAt,
        total,
        requests,
        bytesSent,
        elapsedMs,
        itemsPerSecond: elapsedMs > 0 ? ((stored - startAt) * 1000) / elapsedMs : null,
      });
    };

    progress("opening");
    const opened = await this.open({ ...header, id }, signal);
    requests++;
    if (opts.resume && !opened.created) {
      const now = await this.getBatch(id, signal);
      requests++;
      startAt = now.progress.received;
      if (now.progress.submissionComplete && now.total !== null) {
        // Sealed already (perhaps by the run being resumed): make sure it started, and answer it.
        stored = startAt;
        total = now.total;
        const batch = await this.seal(id, now.total, signal);
        requests++;
        progress("done");
        return { batch, created: false, resumedAt: startAt, items: now.total, requests, ms: Date.now() - t0 };
      }
    }
    stored = startAt;

    // Appends: one in flight while the next is assembled.
    let inFlight: Promise<void> | null = null;
    let failure: unknown = null;
    const send = (offset: number, body: string, count: number) => {
      const p = (async () => {
        const answer = await this.appendBody(id, offset, body, signal);
        requests++;
        bytesSent += Buffer.byteLength(body);
        const expected = offset + count;
        if (answer.append.received < expected)
          throw new Error(
            `batch ${id}: the append at offset ${offset} of ${count} items was answered with a stored prefix of ${answer.append.received}`,
          );
        stored = Math.max(stored, answer.append.received);
        progress("appending");
      })();
      p.catch((err) => {
        failure ??= err;
      });
      return p;
    };
    let lines: string[] = [];
    let bytes = 0;
    let bufferOffset = startAt;
    const dispatch = async () => {
      if (inFlight) await inFlight;
      if (failure) throw failure;
      const body = `${lines.join("\n")}\n`;
      inFlight = send(bufferOffset, body, lines.length);
      bufferOffset += lines.length;
      lines = [];
      bytes = 0;
    };
    for await (const item of items as AsyncIterable<ItemInput>) {
      signal?.throwIfAborted();
      if (typeof item === "string" && item.trim().length === 0) continue; // a blank line is not an item
      const position = read++;
      if (position < startAt) continue;
      const line = typeof item === "string" ? item.trim() : JSON.stringify(item);
      const size = Buffer.byteLength(line) + 1;
      if (
        lines.length > 0 &&
        (lines.length >= this.o.maxItemsPerRequest || bytes + size > this.o.maxBytesPerRequest)
      )
        await dispatch();
      lines.push(line);
      bytes += size;
    }
    if (read < startAt)
      throw new Error(
        `batch ${id} already holds ${startAt} items but the source has only ${read}: it is not the source of this batch`,
      );
    if (lines.length > 0) await dispatch();
    if (inFlight) await inFlight;
    if (failure) throw failure;

    total = read;
    progress("sealing");
    const batch = await this.seal(id, total, signal);
    requests++;
    stored = total;
    progress("done");
    return {
      batch,
      created: opened.created,
      resumedAt: startAt,
      items: total,
      requests,
      ms: Date.now() - t0,
    };
  }

  private async appendBody(
    batchId: string,
    offset: number,
    body: string,
    signal?: AbortSignal,
  ): Promise<AppendAnswer> {
    try {
      const res = await this.call<AppendAnswer>("POST", `${batchPath(batchId)}:append?offset=${offset}`, {
        body,
        contentType: "application/x-ndjson",
        signal,
      });
      return res.body;
    } catch (err) {
      if (!(err instanceof TallyApiError)) throw err;
      // The coordinator names lines of this request (`line 3: payload.text`); the caller thinks in
      // items of the batch: `items[offset + 2].payload.text` (blank lines are never sent).
      const details = err.details.map((d) => {
        const m = d.path === undefined ? null : /^line (\d+)(?:: (.*))?$/.exec(d.path);
        if (!m) return d;
        const at = `items[${offset + Number(m[1]) - 1}]`;
        const rest = m[2];
        return { ...d, path: rest === undefined ? at : `${at}${rest.startsWith("[") ? "" : "."}${rest}` };
      });
      throw new TallyApiError(
        err.status,
        err.code,
        `${err.message} (append at offset ${offset})`,
        details,
        err.batch,
      );
    }
  }

  /** One request, retried on transient failures with backoff; a refusal becomes a TallyApiError. */
  private async call<T>(
    method: string,
    path: string,
    init: { json?: unknown; body?: string; contentType?: string; signal?: AbortSignal },
  ): Promise<{ status: number; body: T }> {
    const url = `${this.baseUrl}${path}`;
    const body = init.json !== undefined ? JSON.stringify(init.json) : init.body;
    const contentType = init.json !== undefined ? "application/json" : init.contentType;
    let delay = this.o.retryDelayMs;
    for (let attempt = 1; ; attempt++) {
      init.signal?.throwIfAborted();
      const extra = this.o.headers ? await this.o.headers() : {};
      const headers: Record<string, string> = { accept: "application/json", ...extra };
      if (contentType) headers["content-type"] = contentType;
      let res: Response;
      try {
        const timeout = AbortSignal.timeout(this.o.timeoutMs);
        res = await this.fetchFn(url, {
          method,
          headers,
          body,
          signal: init.signal ? AbortSignal.any([init.signal, timeout]) : timeout,
        });
      } catch (err) {
        if (init.signal?.aborted) throw init.signal.reason ?? err;
        if (attempt >= this.o.attempts)
          throw new Error(`${method} ${url} failed after ${attempt} attempts: ${describe(err)}`, {
            cause: err,
          });
        await sleep(delay, init.signal);
        delay = Math.min(delay * 2, 30_000);
        continue;
      }
      const text = await res.text().catch(() => "");
      let parsed: unknown;
      try {
        parsed = text ? JSON.parse(text) : undefined;
      } catch {
        parsed = undefined;
      }
      if (res.ok) return { status: res.status, body: parsed as T };
      if (transient(res.status) && attempt < this.o.attempts) {
        const retryAfter = Number(res.headers.get("retry-after"));
        await sleep(Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : delay, init.signal);
        delay = Math.min(delay * 2, 30_000);
        continue;
      }
      throw apiError(res.status, parsed, text);
    }
  }
}

function apiError(status: number, parsed: unknown, text: string): TallyApiError {
  const e = (parsed as { error?: Record<string, unknown> } | undefined)?.error;
  if (e && typeof e === "object") {
    const details = Array.isArray(e.details) ? (e.details as TallyApiError["details"]) : [];
    const b = e.batch as TallyApiError["batch"] | undefined;
    return new TallyApiError(
      status,
      String(e.code ?? `http_${status}`),
      String(e.message ?? ""),
      details,
      b ?? null,
    );
  }
  const hint = status === 413 ? " (a front end refused the request's size: lower maxBytesPerRequest)" : "";
  return new TallyApiError(
    status,
    `http_${status}`,
    `${text.trim().slice(0, 300) || "(empty response)"}${hint}`,
    [],
    null,
  );
}

function describe(err: unknown): string {
  const e = err as { message?: string; cause?: { code?: string; message?: string } };
  return e.cause?.message ?? e.cause?.code ?? e.message ?? String(err);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
