// HTTP client for the coordinator's JSON API (DESIGN.md §3) and the reconciler. Errors keep the
// API's own words: `{"error": {code, message, details}}` becomes an ApiError printed as such; a
// refused connection becomes one line saying which service is not answering.

export interface ApiProblem {
  path?: string;
  problem?: string;
  [key: string]: unknown;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: ApiProblem[],
  ) {
    super(message);
    this.name = "ApiError";
  }

  /** `error 400 invalid_argument: message` then one line per detail. */
  format(): string {
    const lines = [`error ${this.status} ${this.code}: ${this.message}`];
    for (const d of this.details) {
      if (d.path !== undefined || d.problem !== undefined)
        lines.push(`  - ${d.path ?? "?"}: ${d.problem ?? ""}`);
      else lines.push(`  - ${JSON.stringify(d)}`);
    }
    return lines.join("\n");
  }
}

export class UnreachableError extends Error {
  constructor(
    readonly service: string,
    readonly url: string,
    cause: string,
  ) {
    const hint =
      service === "coordinator" ? "is `npm start` running?" : "is the local stack (`npm start`) running?";
    super(`cannot reach the ${service} at ${url}: ${hint} (${cause})`);
    this.name = "UnreachableError";
  }
}

/** Failures to connect at all, as opposed to a connection that broke mid-request. */
const unreachableCodes = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "UND_ERR_CONNECT_TIMEOUT",
]);

export interface ApiResponse<T> {
  status: number;
  body: T;
}

export interface RequestOptions {
  json?: unknown;
  /** A streamed body (NDJSON): pulled as the socket drains, so memory stays bounded. */
  stream?: AsyncIterable<Uint8Array>;
  contentType?: string;
  timeoutMs?: number;
}

export class HttpClient {
  constructor(
    readonly baseUrl: string,
    readonly service: "coordinator" | "reconciler",
  ) {}

  async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<ApiResponse<T>> {
    const url = `${this.baseUrl}${path}`;
    const headers: Record<string, string> = { accept: "application/json" };
    let body: unknown;
    if (opts.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(opts.json);
    } else if (opts.stream) {
      headers["content-type"] = opts.contentType ?? "application/x-ndjson";
      body = opts.stream;
    }
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers,
        body: body as BodyInit | undefined,
        // Node's fetch needs this to send an async-iterable body chunk by chunk.
        ...(opts.stream ? { duplex: "half" } : {}),
        signal: opts.stream ? undefined : AbortSignal.timeout(opts.timeoutMs ?? 120_000),
      } as RequestInit);
    } catch (err) {
      throw this.transportError(err);
    }
    const text = await res.text();
    let parsed: unknown;
    if (text.length > 0) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
    }
    if (!res.ok) throw toApiError(res.status, parsed, text);
    return { status: res.status, body: parsed as T };
  }

  private transportError(err: unknown): Error {
    const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
    if (e.name === "TimeoutError")
      return new Error(`the ${this.service} at ${this.baseUrl} did not answer in time`);
    const code = e.cause?.code;
    const detail = e.cause?.message ?? e.message ?? String(err);
    if (code && unreachableCodes.has(code)) return new UnreachableError(this.service, this.baseUrl, detail);
    return new Error(`request to the ${this.service} at ${this.baseUrl} failed: ${detail}`);
  }
}

function toApiError(status: number, parsed: unknown, text: string): ApiError {
  const error = (parsed as { error?: { code?: unknown; message?: unknown; details?: unknown } } | undefined)
    ?.error;
  if (error && typeof error === "object") {
    const details = Array.isArray(error.details) ? (error.details as ApiProblem[]) : [];
    return new ApiError(status, String(error.code ?? `http_${status}`), String(error.message ?? ""), details);
  }
  const snippet = text.trim().slice(0, 300) || "(empty response)";
  return new ApiError(status, `http_${status}`, snippet, []);
}
