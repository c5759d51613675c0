// The coordinator's JSON API as the CLI calls it (DESIGN.md §3); submissions go through the typed
// client (local/client/tallyClient.ts). Paths are built here only; ids are URL-encoded so any
// batch id round-trips.
import { HttpClient } from "./apiClient";
import { type BatchView, toBatchView } from "./batchView";

export interface ItemsPage {
  items: Record<string, unknown>[];
  nextPageToken?: string;
}

const batchPath = (id: string) => `/v1/batches/${encodeURIComponent(id)}`;

export class CoordinatorApi {
  private readonly http: HttpClient;
  constructor(readonly baseUrl: string) {
    this.http = new HttpClient(baseUrl, "coordinator");
  }

  async getBatchRaw(id: string): Promise<unknown> {
    return (await this.http.request("GET", batchPath(id))).body;
  }

  async getBatch(id: string): Promise<BatchView> {
    return toBatchView(await this.getBatchRaw(id));
  }

  async listItems(
    id: string,
    opts: { status?: string; limit: number; pageToken?: string },
  ): Promise<ItemsPage> {
    const q = new URLSearchParams({ limit: String(opts.limit) });
    if (opts.status) q.set("status", opts.status);
    if (opts.pageToken) q.set("pageToken", opts.pageToken);
    const body = (await this.http.request("GET", `${batchPath(id)}/items?${q}`)).body as Record<
      string,
      unknown
    >;
    const items = Array.isArray(body?.items) ? (body.items as Record<string, unknown>[]) : [];
    const next =
      typeof body?.nextPageToken === "string" && body.nextPageToken ? body.nextPageToken : undefined;
    return { items, nextPageToken: next };
  }

  async action(id: string, action: "cancel" | "retry"): Promise<{ batch: BatchView; raw: unknown }> {
    const body = (await this.http.request("POST", `${batchPath(id)}:${action}`)).body;
    return { batch: toBatchView(body), raw: body };
  }
}
