// Settings of the coordinator: caps from core/limits.ts, overridable per handler (tests use small
// caps) and, for the item cap, by the configuration (TALLY_MAX_ITEMS_PER_BATCH, functions/config.ts).
import { randomUUID } from "node:crypto";
import type { TallyEnv } from "../../config";
import { limits } from "../../core/limits";
import type { HttpHandler } from "../../http/httpTypes";

export interface CoordinatorOptions {
  /**
   * The dashboard (functions/dashboard/, owned by the local stack): serves `GET /` and
   * `GET /batches/...`. Without it those paths are 404.
   */
  dashboard?: HttpHandler;
  /** Items one batch may hold (413 beyond). Default: the configuration's TALLY_MAX_ITEMS_PER_BATCH, else limits.maxItemsPerBatch. */
  maxItemsPerBatch?: number;
  maxJsonBodyBytes?: number;
  maxLineBytes?: number;
  maxPayloadBytes?: number;
  /** Items written and published per step. */
  chunkItems?: number;
  /** The submission cursor is written at most this often (plus once at the end). */
  cursorIntervalMs?: number;
  /** Chunks of a new batch stored (and published) at once. */
  chunksInFlight?: number;
  /** Pending items swept / failed items reset per page by cancel and retry. */
  operatorPageSize?: number;
  newBatchId?: () => string;
}

export interface CoordinatorSettings {
  dashboard?: HttpHandler;
  maxItemsPerBatch: number;
  maxJsonBodyBytes: number;
  maxLineBytes: number;
  maxPayloadBytes: number;
  chunkItems: number;
  cursorIntervalMs: number;
  chunksInFlight: number;
  operatorPageSize: number;
  newBatchId: () => string;
}

export function resolveSettings(
  opts: CoordinatorOptions = {},
  env: Pick<TallyEnv, "TALLY_MAX_ITEMS_PER_BATCH"> = {},
): CoordinatorSettings {
  const maxItems = opts.maxItemsPerBatch ?? env.TALLY_MAX_ITEMS_PER_BATCH;
  return {
    dashboard: opts.dashboard,
    maxItemsPerBatch: maxItems ?? limits.maxItemsPerBatch,
    maxJsonBodyBytes: opts.maxJsonBodyBytes ?? limits.maxJsonBodyBytes,
    maxLineBytes: opts.maxLineBytes ?? limits.maxLineBytes,
    maxPayloadBytes: opts.maxPayloadBytes ?? limits.maxPayloadBytes,
    chunkItems: opts.chunkItems ?? limits.submitChunkItems,
    cursorIntervalMs: opts.cursorIntervalMs ?? 1000,
    // Measured on the emulator (bench/submission.ts, 20k items): 8 chunk commits in flight were
    // ~10% faster than 4 (the raw baseline's WriteBatch pass uses 8 too); memory is 8 × 500 items.
    chunksInFlight: opts.chunksInFlight ?? 8,
    operatorPageSize: opts.operatorPageSize ?? 500,
    newBatchId: opts.newBatchId ?? (() => randomUUID()),
  };
}
