// The coordinator's HTTP API as the chaos scenarios call it (DESIGN.md §3): plain fetch, the shapes
// the coordinator answers (functions/handlers/coordinator/batchView.ts), and an error that keeps the
// API's own words when a call answers an unexpected status.
import type { BatchView, itemView } from "../../../functions/handlers/coordinator/batchView";

export type ItemJson = ReturnType<typeof itemView> & { payload?: unknown; result?: unknown };
export type BatchJson = BatchView;

export interface SubmitItem {
  id: string;
  payload: Record<string, unknown>;
}

export interface SubmitBody {
  id: string;
  pipeline: string;
  items: SubmitItem[];
  failureThreshold?: number;
  dependsOn?: string[];
}

export class ApiCallError extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
    what: string,
  ) {
    super(`${what} answered ${status}: ${body.slice(0, 800)}`);
    this.name = "ApiCallError";
  }
}

export const finalBatchStatuses = ["succeeded", "partial", "failed", "cancelled"];

export class ChaosApi {
  constructor(readonly baseUrl: string) {}

  private batchUrl(id: string): string {
    return `${this.baseUrl}/v1/batches/${encodeURIComponent(id)}`;
  }

  private async call<T>(
    what: string,
    url: string,
    init: RequestInit = {},
    ok: number[] = [200],
  ): Promise<{ status: number; body: T }> {
    const res = await fetch(url, { signal: AbortSignal.timeout(120_000), ...init });
    const text = await res.text();
    if (!ok.includes(res.status)) throw new ApiCallError(res.status, text, what);
    return { status: res.status, body: (text ? JSON.parse(text) : null) as T };
  }

  /** JSON submission; 201 (new) or 200 (identical re-submission). */
  async submit(body: SubmitBody): Promise<{ status: number; body: unknown }> {
    return this.call(
      `POST /v1/batches (${body.id})`,
      `${this.baseUrl}/v1/batches`,
      {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      },
      [200, 201],
    );
  }

  async getBatch(id: string): Promise<BatchJson> {
    const { body } = await this.call<BatchJson | { batch: BatchJson }>(`GET batch ${id}`, this.batchUrl(id));
    return "batch" in body && body.batch ? body.batch : (body as BatchJson);
  }

  /** One page of items. */
  async listItems(
    id: string,
    opts: { status?: string; limit?: number; pageToken?: string; include?: string } = {},
  ): Promise<{ items: ItemJson[]; nextPageToken?: string }> {
    const q = new URLSearchParams({ limit: String(opts.limit ?? 1000) });
    if (opts.status) q.set("status", opts.status);
    if (opts.pageToken) q.set("pageToken", opts.pageToken);
    if (opts.include) q.set("include", opts.include);
    const { body } = await this.call<{ items?: ItemJson[]; nextPageToken?: string }>(
      `GET items of ${id}`,
      `${this.batchUrl(id)}/items?${q}`,
    );
    return { items: body.items ?? [], nextPageToken: body.nextPageToken || undefined };
  }

  /** Every item (paged), optionally of one status. */
  async allItems(id: string, opts: { status?: string; include?: string } = {}): Promise<ItemJson[]> {
    const out: ItemJson[] = [];
    let pageToken: string | undefined;
    do {
      const page = await this.listItems(id, { ...opts, limit: 1000, pageToken });
      out.push(...page.items);
      pageToken = page.nextPageToken;
    } while (pageToken);
    return out;
  }

  async cancel(id: string): Promise<BatchJson> {
    return (
      await this.call<BatchJson>(`POST ${id}:cancel`, `${this.batchUrl(id)}:cancel`, { method: "POST" })
    ).body;
  }

  /** A retry expected to be refused: its status and error message. */
  async retryRefused(id: string): Promise<{ status: number; message: string }> {
    const { status, body } = await this.call<{ error?: { message?: string } }>(
      `POST ${id}:retry`,
      `${this.batchUrl(id)}:retry`,
      { method: "POST" },
      [409, 422],
    );
    return { status, message: body?.error?.message ?? "" };
  }

  async retry(id: string): Promise<BatchJson> {
    return (await this.call<BatchJson>(`POST ${id}:retry`, `${this.batchUrl(id)}:retry`, { method: "POST" }))
      .body;
  }
}

/** The worker pid in a lease owner (`host/pid/delivery`), or null. */
export function leaseOwnerPid(item: Pick<ItemJson, "lease">): number | null {
  const owner = item.lease?.owner;
  if (!owner) return null;
  const parts = owner.split("/");
  const pid = Number(parts[parts.length - 2]);
  return Number.isInteger(pid) ? pid : null;
}
