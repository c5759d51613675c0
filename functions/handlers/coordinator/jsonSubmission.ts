// `POST /v1/batches` with a JSON body. The whole body is in memory already (the framework read it;
// it is capped at maxJsonBodyBytes), so every item is checked before anything is written: a
// refused request lists every problem and changes nothing. Then the batch is created and the items
// are written and published in chunks like a stream.
import { failedPrecondition, invalidArgument, tooLarge } from "../../core/errors";
import type { HttpRequest } from "../../http/httpTypes";
import { readJsonBody } from "../../http/requestBody";
import { batchView } from "./batchView";
import { checkItem } from "./itemChecks";
import { ProblemList } from "./problems";
import { checkHeader, createOrFindBatch } from "./submissionHeader";
import { type SubmissionResult, submissionResult } from "./submissionResult";
import { type ChunkItem, type SubmissionEnv, SubmissionWriter } from "./submissionWriter";

export async function submitJson(env: SubmissionEnv, req: HttpRequest): Promise<SubmissionResult> {
  const startedAt = env.deps.clock.now();
  const { settings } = env;
  const body = await readJsonBody(req, settings.maxJsonBodyBytes);
  if (body === null || typeof body !== "object" || Array.isArray(body))
    throw invalidArgument(
      "the request body must be a JSON object {id?, pipeline, items, failureThreshold?, dependsOn?}",
      [{ path: "body", problem: "not a JSON object" }],
    );
  const { items: rawItems, open, ...rawHeader } = body as Record<string, unknown>;
  const problems = new ProblemList();
  if (open !== undefined) return openBatch(env, rawHeader, open, rawItems, startedAt);
  if (Array.isArray(rawItems) && rawItems.length > settings.maxItemsPerBatch)
    throw tooLarge(`the batch has ${rawItems.length} items; the limit is ${settings.maxItemsPerBatch}`, [
      { path: "items", problem: `${rawItems.length} items exceeds ${settings.maxItemsPerBatch}` },
    ]);

  const { header, pipeline } = await checkHeader(env, rawHeader, problems);
  if (rawItems === undefined) problems.add("invalid", "items", "is required (an array of {id?, payload})");
  else if (!Array.isArray(rawItems)) problems.add("invalid", "items", "must be an array of {id?, payload}");

  const items: ChunkItem[] = [];
  if (Array.isArray(rawItems) && pipeline) {
    const firstUse = new Map<string, number>();
    rawItems.forEach((raw, position) => {
      const origin = { position, label: `items[${position}]` };
      const item = checkItem(raw, origin, { pipeline, maxPayloadBytes: settings.maxPayloadBytes }, problems);
      if (!item) return;
      const earlier = firstUse.get(item.itemId);
      if (earlier !== undefined)
        problems.add(
          "invalid",
          `items[${position}].id`,
          `duplicate item id "${item.itemId}" (also items[${earlier}])`,
        );
      else firstUse.set(item.itemId, position);
      items.push({ ...item, origin });
    });
  }
  if (!problems.empty || !header) throw problems.toError();

  const total = items.length;
  const { kind, batch } = await createOrFindBatch(env, header, total, "json");
  const writer = new SubmissionWriter(env, batch, kind);
  if (!writer.checkTotal(total, problems)) throw problems.toError();
  for (let at = 0; at < total; at += settings.chunkItems) {
    if (!(await writer.writeChunk(items.slice(at, at + settings.chunkItems), problems))) {
      await writer.stop();
      if (problems.empty) throw terminatedDuringSubmission(batch.batchId, writer.terminatedAs ?? undefined);
      throw problems.toError();
    }
  }
  const finished = await writer.finish(total, problems);
  if (!finished) throw problems.toError();
  if (finished.kind === "terminated") throw terminatedDuringSubmission(batch.batchId, finished.batch.status);
  return submissionResult(env, kind, finished.batch, writer, "json", total, startedAt);
}

/**
 * `{…header, "open": true}`: creates an open batch that takes its items through
 * `POST /v1/batches/{id}:append` and is sealed by `POST /v1/batches/{id}:seal` (appendItems.ts,
 * sealBatch.ts). 201 new; 200 when the batch exists with the same header (whatever it holds: the
 * answer's `progress.received` says where to go on); 409 with a different header.
 */
async function openBatch(
  env: SubmissionEnv,
  rawHeader: Record<string, unknown>,
  open: unknown,
  rawItems: unknown,
  startedAt: number,
): Promise<SubmissionResult> {
  const problems = new ProblemList();
  if (open !== true) problems.add("invalid", "open", "must be true (or left out, with items)");
  if (rawItems !== undefined)
    problems.add("invalid", "items", "an open batch takes its items through POST /v1/batches/{id}:append");
  const { header } = await checkHeader(env, rawHeader, problems);
  if (!problems.empty || !header) throw problems.toError();
  const { kind, batch } = await createOrFindBatch(env, header, null, "open");
  return {
    status: kind === "created" ? 201 : 200,
    body: {
      ...batchView(batch, batch.summary?.counts ?? null),
      submission: {
        format: "open",
        items: 0,
        stored: 0,
        published: 0,
        durationMs: env.deps.clock.now() - startedAt,
      },
    },
  };
}

export function terminatedDuringSubmission(batchId: string, status = "cancelled") {
  return failedPrecondition(
    `batch "${batchId}" was ${status === "failed" ? "failed" : "cancelled"} while it was being submitted`,
  );
}
