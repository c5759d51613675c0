// Read side of the API: one batch (with counts derived from item states), the batch listing
// (newest first) and a batch's items (in submission order), both paged with opaque tokens.

import type { z } from "zod";
import { InvalidPageTokenError } from "../../adapters/firestoreLedger";
import { invalidArgument, notFound } from "../../core/errors";
import type { Ledger } from "../../core/ports";
import { batchView, itemView } from "./batchView";
import {
  defaultPageSize,
  listBatchesQuerySchema,
  listItemsQuerySchema,
  queryObject,
  zodProblems,
} from "./validation";

export async function getBatchView(ledger: Ledger, batchId: string) {
  const batch = await ledger.getBatch(batchId);
  if (!batch) throw notFound(`no batch "${batchId}"`);
  // Four count() aggregations: exact now, and no hot counter for workers to write (DESIGN.md §2.1).
  const counts = await ledger.countItems(batchId);
  return batchView(batch, counts);
}

/**
 * Listing entries carry the stored summary counts of final batches; live counts cost four
 * aggregations per batch and are on `GET /v1/batches/{id}` — a page of 1,000 stays one query.
 */
export async function listBatchesView(ledger: Ledger, params: URLSearchParams) {
  const q = parseQuery(listBatchesQuerySchema, params);
  const page = await withPageToken(() =>
    ledger.listBatches({ status: q.status, limit: q.limit ?? defaultPageSize, pageToken: q.pageToken }),
  );
  return {
    batches: page.entries.map((b) => batchView(b, b.summary?.counts ?? null)),
    nextPageToken: page.nextPageToken ?? null,
  };
}

export async function listItemsView(ledger: Ledger, batchId: string, params: URLSearchParams) {
  const q = parseQuery(listItemsQuerySchema, params);
  const batch = await ledger.getBatch(batchId);
  if (!batch) throw notFound(`no batch "${batchId}"`);
  const page = await withPageToken(() =>
    ledger.listItems(batchId, {
      status: q.status,
      limit: q.limit ?? defaultPageSize,
      pageToken: q.pageToken,
    }),
  );
  return {
    batchId,
    items: page.entries.map((it) => itemView(it, q.include ?? [])),
    nextPageToken: page.nextPageToken ?? null,
  };
}

function parseQuery<S extends z.ZodType>(schema: S, params: URLSearchParams): z.infer<S> {
  const { values, repeated } = queryObject(params);
  const parsed = schema.safeParse(values);
  const problems = parsed.success ? [] : zodProblems(parsed.error);
  for (const k of repeated) problems.push({ path: k, problem: "given more than once" });
  if (problems.length > 0) throw invalidArgument("invalid query parameters", problems);
  return parsed.data as z.infer<S>;
}

async function withPageToken<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof InvalidPageTokenError)
      throw invalidArgument("pageToken is not valid: pass the nextPageToken of the previous page unchanged", [
        { path: "pageToken", problem: "not a token this listing issued" },
      ]);
    throw err;
  }
}
