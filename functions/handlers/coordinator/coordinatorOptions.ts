// Settings of the coordinator: caps from core/limits.ts, overridable per handler (tests use small
// caps) and, for the item cap, by the configuration (TALLY_MAX_ITEMS_PER_BATCH, functions/config.ts).
import { randomUUID } from "node:crypto";
import type { TallyEnv } from "../../config";
import { limits } from "../../core/limits";
import { assertCrashPointsAllowed, type CrashSwitch } from "../../faults";
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
  /** Items one `POST /v1/batches/{id}:append` may carry (413 beyond). Default appendLimits.maxItems. */
  maxAppendItems?: number;
  /** Bytes of one append request's body (413 beyond). Default appendLimits.maxBytes. */
  maxAppendBytes?: number;
  /**
   * Fault injection for tests (functions/faults.ts): the coordinator stops at a named crash point
   * when this says so. Refused in a deployment (NODE_ENV=production or K_SERVICE set).
   */
  crashAt?: CrashSwitch;
}

/**
 * Caps of one append request (docs/api.md, "Submissions of any size"). Cloud Run refuses an HTTP/1
 * request over 32 MiB and the Functions Framework buffers every body: 16 MiB leaves room for the
 * framework's copies, and 10,000 items keep one request's ledger work (20 chunk commits) short.
 */
export const appendLimits = { maxItems: 10_000, maxBytes: 16 * 1024 * 1024 } as const;

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
  maxAppendItems: number;
  maxAppendBytes: number;
  crashAt?: CrashSwitch;
}

export function resolveSettings(
  opts: CoordinatorOptions = {},
  env: Pick<TallyEnv, "TALLY_MAX_ITEMS_PER_BATCH"> = {},
): CoordinatorSettings {
  const maxItems = opts.maxItemsPerBatch ?? env.TALLY_MAX_ITEMS_PER_BATCH;
  if (opts.crashAt) assertCrashPointsAllowed();
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
    maxAppendItems: opts.maxAppendItems ?? appendLimits.maxItems,
    maxAppendBytes: opts.maxAppendBytes ?? appendLimits.maxBytes,
    crashAt: opts.crashAt,
  };
}
