// What a submission answers with: the batch (with derived counts) and what this request did.
import type { Batch } from "../../core/model";
import { batchView } from "./batchView";
import type { SubmissionEnv, SubmissionWriter } from "./submissionWriter";

export interface SubmissionResult {
  status: 200 | 201;
  body: ReturnType<typeof batchView> & {
    submission: {
      /** `open`: the batch was opened for appends (items: 0). */
      format: "json" | "ndjson" | "open";
      items: number;
      /** Items this request stored (the rest were already stored by an earlier attempt). */
      stored: number;
      /** Doorbells this request published. */
      published: number;
      durationMs: number;
    };
  };
}

export async function submissionResult(
  env: SubmissionEnv,
  kind: "created" | "exists",
  batch: Batch,
  writer: SubmissionWriter,
  format: "json" | "ndjson",
  items: number,
  startedAt: number,
): Promise<SubmissionResult> {
  const durationMs = env.deps.clock.now() - startedAt;
  env.log.info("batch.submitted", `batch ${batch.batchId}: ${items} items submitted (${batch.status})`, {
    batchId: batch.batchId,
    status: batch.status,
    format,
    items,
    stored: writer.stored,
    matched: writer.matched,
    published: writer.published,
    durationMs,
    itemsPerSecond: durationMs > 0 ? Math.round((items * 1000) / durationMs) : null,
    resubmission: kind === "exists",
    ...writer.timings,
  });
  return {
    status: kind === "created" ? 201 : 200,
    body: {
      // No live counts here: they are four count() aggregations over the batch's items (about
      // 1,000 index entries read per aggregation at 1M items, and seconds of latency) — `GET` the
      // batch for them. A final batch (an empty one, a repeated submission) carries its summary's.
      ...batchView(batch, batch.summary?.counts ?? null),
      submission: { format, items, stored: writer.stored, published: writer.published, durationMs },
    },
  };
}
