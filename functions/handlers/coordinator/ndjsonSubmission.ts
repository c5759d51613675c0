// `POST /v1/batches` with `Content-Type: application/x-ndjson`: line 1 is the header
// ({id?, pipeline, failureThreshold?, dependsOn?}), then one item ({id?, payload}) per line.
//
// Each line is checked as it arrives and items are written in chunks, so memory stays bounded
// whatever the batch size. The batch is created only once the first full chunk has passed every
// check (a stream shorter than one chunk with a bad line writes nothing at all). When a later line
// is bad, writing stops, the rest of the stream is still read and checked so the answer lists
// every problem (400/413/409), and the batch keeps the items stored so far in `submitting`: the
// client can re-send the corrected stream with the same id (the stored items are compared, the
// rest appended), or the reconciler fails it as `incomplete_submission` after
// staleSubmissionSeconds. The answer names the batch id (also when it was generated).
import { invalidArgument, type TallyError } from "../../core/errors";
import type { HttpRequest } from "../../http/httpTypes";
import { readBodyLines } from "../../http/lineReader";
import type { PipelineDefinition } from "../../pipelines/definePipeline";
import { checkItem } from "./itemChecks";
import { terminatedDuringSubmission } from "./jsonSubmission";
import { ProblemList } from "./problems";
import { ClientGone, PartiallyStoredSubmission } from "./submissionErrors";
import { checkHeader, createOrFindBatch, type ResolvedHeader } from "./submissionHeader";
import { type SubmissionResult, submissionResult } from "./submissionResult";
import { type ChunkItem, type SubmissionEnv, SubmissionWriter } from "./submissionWriter";

export async function submitNdjson(env: SubmissionEnv, req: HttpRequest): Promise<SubmissionResult> {
  const startedAt = env.deps.clock.now();
  const { settings, log } = env;
  const problems = new ProblemList();
  let headerSeen = false;
  let header: ResolvedHeader | null = null;
  let pipeline: PipelineDefinition<unknown> | null = null;
  let writer: SubmissionWriter | null = null;
  let kind: "created" | "exists" = "created";
  let chunk: ChunkItem[] = [];
  const chunkIds = new Map<string, number>();
  let position = 0;
  /** False once anything is wrong: the rest is only checked, never written. */
  let writing = true;
  let terminated = false;

  const flush = async () => {
    if (!writer) {
      const found = await createOrFindBatch(env, header!, null, "ndjson");
      writer = new SubmissionWriter(env, found.batch, found.kind);
      kind = found.kind;
    }
    const ok = await writer.writeChunk(chunk, problems);
    chunk = [];
    chunkIds.clear();
    if (!ok) {
      writing = false;
      await writer.stop();
      if (problems.empty) terminated = true;
    }
  };

  try {
    for await (const lines of readBodyLines(req, settings.maxLineBytes)) {
      for (const line of lines) {
        const label = `line ${line.lineNo}`;
        if (!headerSeen) {
          headerSeen = true;
          const raw = parseLine(line, label, problems, settings.maxLineBytes);
          if (raw === undefined) {
            writing = false;
            continue;
          }
          if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
            problems.add(
              "invalid",
              label,
              "the first line must be the batch header {id?, pipeline, failureThreshold?, dependsOn?}",
            );
            writing = false;
            continue;
          }
          const { items, ...rest } = raw as Record<string, unknown>;
          if (items !== undefined)
            problems.add(
              "invalid",
              `${label}: items`,
              "items go on their own lines after the header, one per line",
            );
          const checked = await checkHeader(env, rest, problems);
          pipeline = checked.pipeline;
          header = problems.empty ? checked.header : null;
          if (!header) writing = false;
          continue;
        }

        const at = position++;
        if (at >= settings.maxItemsPerBatch) {
          if (at === settings.maxItemsPerBatch)
            problems.add(
              "too_large",
              label,
              `the batch has more than ${settings.maxItemsPerBatch} items (the limit)`,
            );
          writing = false;
          continue;
        }
        if (!pipeline) continue; // nothing to check items against
        const raw = parseLine(line, label, problems, settings.maxLineBytes);
        if (raw === undefined) {
          writing = false;
          continue;
        }
        const origin = { position: at, label, sourceBytes: "bytes" in line ? line.bytes : undefined };
        const item = checkItem(
          raw,
          origin,
          { pipeline: pipeline!, maxPayloadBytes: settings.maxPayloadBytes },
          problems,
        );
        if (!item) {
          writing = false;
          continue;
        }
        // Repeated ids are found within a chunk here (bounded memory), across chunks by the
        // ledger's create-only writes (submissionWriter.ts).
        const earlier = chunkIds.get(item.itemId);
        if (earlier !== undefined) {
          problems.add(
            "invalid",
            `${label}: id`,
            `duplicate item id "${item.itemId}" (also line ${earlier})`,
          );
          writing = false;
          continue;
        }
        if (chunkIds.size >= settings.chunkItems) chunkIds.clear();
        chunkIds.set(item.itemId, line.lineNo);
        if (!writing) continue;
        chunk.push({ ...item, origin });
        if (chunk.length >= settings.chunkItems) await flush();
      }
    }
  } catch (err) {
    // The client went away (not a ledger or queue failure, which is a 500 like anywhere else).
    const code = (err as { code?: unknown }).code;
    if (req.readableAborted || code === "ECONNRESET" || code === "ERR_STREAM_PREMATURE_CLOSE") {
      const w = writer as SubmissionWriter | null;
      if (w) await w.stop();
      log.warn("batch.submission_aborted", "the client closed the stream before its end", {
        batchId: w?.batchId ?? header?.batchId ?? null,
        itemsRead: position,
        stored: w?.stored ?? 0,
        published: w?.published ?? 0,
      });
      throw new ClientGone(w?.batchId ?? null);
    }
    throw err;
  }

  if (!headerSeen)
    throw invalidArgument("the stream is empty: the first line must be the batch header", [
      { path: "line 1", problem: "missing header" },
    ]);
  const total = position;
  if (writing && problems.empty) {
    if (chunk.length > 0 || !writer) await flush();
    const w = writer as SubmissionWriter | null;
    if (writing && w) {
      const finished = await w.finish(total, problems);
      if (finished?.kind === "terminated") throw terminatedDuringSubmission(w.batchId, finished.batch.status);
      if (finished) return submissionResult(env, kind, finished.batch, w, "ndjson", total, startedAt);
    }
  }
  const w = writer as SubmissionWriter | null;
  if (terminated && w) throw terminatedDuringSubmission(w.batchId, w.terminatedAs ?? undefined);
  if (!w) throw problems.toError();
  // Part of the batch is stored: say which batch keeps it and how to finish it.
  const stored = (await env.deps.ledger.getBatch(w.batchId)) ?? w.storedBatch;
  const staleSeconds = env.deps.config.topology.reconcile.staleSubmissionSeconds;
  const context = problems.has("conflict")
    ? `the stored batch "${stored.batchId}" (${stored.status}, ${stored.received} items) was not changed by the conflicting items`
    : stored.status === "submitting" || stored.status === "blocked"
      ? `batch "${stored.batchId}" keeps the ${stored.received} items stored before the problem (status ${stored.status}): re-send the corrected stream with "id": "${stored.batchId}" to complete it, or it fails as incomplete_submission after ${staleSeconds} s`
      : `batch "${stored.batchId}" is ${stored.status}`;
  const error = problems.toError(context);
  log.info(
    "batch.submission_rejected",
    `batch ${stored.batchId}: stream refused (${problems.total} problems)`,
    {
      batchId: stored.batchId,
      status: error.status,
      problems: problems.total,
      received: stored.received,
      cursor: stored.cursor,
    },
  );
  throw new PartiallyStoredSubmission(error as TallyError, {
    id: stored.batchId,
    status: stored.status,
    received: stored.received,
    cursor: stored.cursor,
  });
}

/** The line as JSON, or undefined with the problem recorded. */
function parseLine(
  line: { lineNo: number; text: string } | { lineNo: number; tooLongBytes: number },
  label: string,
  problems: ProblemList,
  maxLineBytes: number,
): unknown {
  if ("tooLongBytes" in line) {
    problems.add("too_large", label, `${line.tooLongBytes} bytes exceeds the line limit of ${maxLineBytes}`);
    return undefined;
  }
  try {
    return JSON.parse(line.text);
  } catch (err) {
    problems.add("invalid", label, `not valid JSON: ${(err as Error).message}`);
    return undefined;
  }
}
