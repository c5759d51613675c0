// `POST /v1/batches/{id}:append`: items of an open batch at a given offset (docs/api.md, "Submissions
// of any size"). A batch of any size goes to the deployed coordinator in requests that fit Cloud
// Run's 32 MiB cap and the Functions Framework's buffering: open, append, append, …, seal.
//
//   JSON    {"offset": N, "items": [{id?, payload}, …]}
//   NDJSON  ?offset=N, one {id?, payload} per line (no header line)
//
// Each request is checked whole before anything is written (same per-item rules as a submission;
// a refused request stores nothing), then:
//   1. the stored prefix is derived from what is stored (functions/handlers/storedPrefix.ts), not
//      from `received`, which a coordinator that died before its cursor write leaves behind;
//      an offset past the prefix is a gap: 409 naming the offset expected (`error.batch.received`);
//   2. items at positions already stored are compared (id + canonical payload): the same content is
//      a no-op, a difference a 409 naming the position — so re-sending an acknowledged range, or one
//      whose answer was lost, is safe;
//   3. doorbells that an earlier request stored but never published (its coordinator died between
//      the two) are published from the cursor;
//   4. the rest is stored create-only, in chunks, and published as it is stored (SubmissionWriter);
//      every commit carries the batch fence, so once the batch is sealed or terminated nothing more
//      is stored (409 naming the batch's state);
//   5. the cursor and `received` are written once at the end (and about once a second on the way),
//      which also records progress: an active client is not taken for a dead one.

import { mayCreateItems } from "../../core/batchFence";
import { appendInFlightMaxMs } from "../../core/concurrentAppends";
import { conflict, invalidArgument, notFound, TallyError, tooLarge } from "../../core/errors";
import type { Batch, Item } from "../../core/model";
import { CrashPointReached } from "../../faults";
import type { HttpRequest } from "../../http/httpTypes";
import { readBodyLines } from "../../http/lineReader";
import { bufferedBody, mediaType, readJsonBody } from "../../http/requestBody";
import { getPipeline } from "../../pipelines/registry";
import { storedPrefix } from "../storedPrefix";
import { batchView } from "./batchView";
import { sameContent } from "./contentHash";
import { checkItem, type ItemOrigin } from "./itemChecks";
import { ProblemList } from "./problems";
import { PartiallyStoredSubmission } from "./submissionErrors";
import { ndjsonMediaTypes } from "./submissionRoute";
import { type ChunkItem, type SubmissionEnv, SubmissionWriter } from "./submissionWriter";

export interface AppendAnswer extends ReturnType<typeof batchView> {
  append: {
    offset: number;
    items: number;
    /** Items this request stored. */
    stored: number;
    /** Items of this request that were already stored with the same content. */
    matched: number;
    /** Doorbells this request published. */
    published: number;
    /** The stored prefix after this request: the next append's offset. */
    received: number;
    durationMs: number;
  };
}

/** A refusal that names the batch and its stored prefix (`error.batch`). */
export function refusalFor(
  err: TallyError,
  batch: Batch,
  received = batch.received,
): PartiallyStoredSubmission {
  return new PartiallyStoredSubmission(err, {
    id: batch.batchId,
    status: batch.status,
    received,
    cursor: batch.cursor,
  });
}

interface ParsedAppend {
  offset: number;
  items: ChunkItem[];
  problems: ProblemList;
}

export async function appendToBatch(
  env: SubmissionEnv,
  batchId: string,
  req: HttpRequest,
  query: URLSearchParams,
): Promise<AppendAnswer> {
  const startedAt = env.deps.clock.now();
  const { ledger } = env.deps;
  const batch = await ledger.getBatch(batchId);
  if (!batch) {
    throw notFound(
      `no batch "${batchId}": open it first with POST /v1/batches {"id": "${batchId}", "open": true, …}`,
    );
  }
  const parsed = await parseAppend(env, batch, req, query);
  if (!parsed.problems.empty)
    throw refusalFor(parsed.problems.toError(`nothing of this append was stored`), batch);
  const end = parsed.offset + parsed.items.length;

  // Counted in flight before anything is compared, when this append may store
  // (core/concurrentAppends.ts): an append beside another checks each chunk's positions.
  const now = env.deps.clock.now();
  const join =
    mayCreateItems(batch).ok && end > batch.received
      ? await ledger.beginAppend(batchId, now, now + appendInFlightMaxMs)
      : null;
  let killed = false;
  try {
    return await storeAppend(env, batch, parsed, startedAt, join ?? undefined);
  } catch (err) {
    killed = err instanceof CrashPointReached; // a "killed" request ends nothing
    throw err;
  } finally {
    if (join && !killed)
      await ledger.endAppend(batchId, env.deps.clock.now()).catch((err: unknown) =>
        env.log.warn("batch.append_end_failed", `batch ${batchId}: could not record the append's end`, {
          batchId,
          error: err instanceof Error ? err.message : String(err),
        }),
      );
  }
}

async function storeAppend(
  env: SubmissionEnv,
  batch: Batch,
  parsed: ParsedAppend,
  startedAt: number,
  appendJoin: { joinedWriters: number; othersInFlight: boolean } | undefined,
): Promise<AppendAnswer> {
  const { ledger } = env.deps;
  const { batchId } = batch;
  const { offset, items } = parsed;
  const end = offset + items.length;
  const log = env.log;

  // 1. Where the stored prefix ends, if the offset is past `received`.
  if (offset > batch.received) {
    const { prefix } = await storedPrefix(ledger, batch, { upTo: offset });
    if (prefix < offset)
      throw refusalFor(
        conflict(
          `batch "${batchId}" holds ${prefix} items from offset 0: the next append must start at offset ${prefix}, not ${offset}`,
          [{ path: "offset", problem: `${offset} is past the stored prefix: expected ${prefix}` }],
        ),
        batch,
        prefix,
      );
  }

  // 2. Compare what is already stored at these positions (stops at the first missing one).
  const problems = new ProblemList();
  let storedUpTo = offset;
  let matched = 0;
  const page = env.settings.chunkItems;
  while (storedUpTo < end) {
    const count = Math.min(page, end - storedUpTo);
    const stored = await ledger.getItemsBySeq(batchId, storedUpTo, count);
    let next = storedUpTo;
    for (const s of stored) {
      if (s.seq !== next) break;
      compareStored(items[s.seq - offset]!, s, problems);
      next++;
    }
    matched += next - storedUpTo;
    const full = next - storedUpTo === count;
    storedUpTo = next;
    if (!full) break;
  }
  if (!problems.empty)
    throw refusalFor(
      problems.toError(`batch "${batchId}" was not changed`),
      batch,
      Math.max(batch.received, storedUpTo),
    );

  // Anything left to store must be admitted by the batch (the ledger's fence says the same at commit).
  if (storedUpTo < end) {
    const decision = mayCreateItems(batch);
    if (!decision.ok)
      throw refusalFor(
        new TallyError(
          409,
          "batch_closed",
          `${decision.reason}; the items from offset ${storedUpTo} were not stored`,
        ),
        batch,
        storedUpTo,
      );
    if (batch.total !== null && end > batch.total)
      throw refusalFor(
        conflict(`batch "${batchId}" was submitted with ${batch.total} items; this append ends at ${end}`, [
          {
            path: "items",
            problem: `positions ${Math.max(offset, batch.total)}..${end - 1} are past the batch's total`,
          },
        ]),
        batch,
        storedUpTo,
      );
    if (end > env.settings.maxItemsPerBatch)
      throw tooLarge(`the batch would hold ${end} items; the limit is ${env.settings.maxItemsPerBatch}`, [
        { path: "items", problem: `${end} items exceeds ${env.settings.maxItemsPerBatch}` },
      ]);
  }

  // 3. Doorbells of stored items an earlier request did not publish (it died before its cursor write).
  const accepting = mayCreateItems(batch).ok;
  const publishing = accepting && batch.status === "submitting";
  let published = 0;
  let cursor = batch.cursor;
  if (publishing && cursor < storedUpTo) {
    while (cursor < storedUpTo) {
      const refs = await ledger.readItemRefs(batchId, cursor, Math.min(page, storedUpTo - cursor));
      if (refs.length === 0) break;
      await env.deps.queue.publish(batch.pipeline, refs);
      cursor += refs.length;
      published += refs.length;
    }
  }
  // Record what step 1-3 found (a lagging `received` or cursor), before storing more.
  const recorded = accepting && (cursor > batch.cursor || storedUpTo > batch.received);
  if (recorded) await ledger.advanceCursor(batchId, cursor, env.deps.clock.now(), storedUpTo);

  // 4. Store and publish the rest.
  let stored = 0;
  let current: Batch = { ...batch, cursor };
  if (storedUpTo < end) {
    const writer = new SubmissionWriter(env, current, "append", { startAt: storedUpTo, appendJoin });
    const rest = items.slice(storedUpTo - offset);
    let terminated: Batch | null = null;
    try {
      for (let at = 0; at < rest.length; at += page) {
        if (!(await writer.writeChunk(rest.slice(at, at + page), problems))) break;
      }
      if (problems.empty) terminated = await writer.flush();
    } catch (err) {
      if (err instanceof CrashPointReached) throw err; // "killed": nothing more is written
      await writer.stop();
      if (err instanceof TallyError && err.status === 409)
        throw refusalFor(err, (await ledger.getBatch(batchId)) ?? batch);
      throw err;
    }
    if (!problems.empty) {
      await writer.stop();
      throw refusalFor(
        problems.toError(`batch "${batchId}" keeps the items stored before the problem`),
        (await ledger.getBatch(batchId)) ?? batch,
      );
    }
    if (terminated)
      throw refusalFor(
        new TallyError(
          409,
          "batch_closed",
          `batch "${batchId}" is ${terminated.status}, ending ${terminated.terminateAs ?? terminated.status}${terminated.reason ? ` (${terminated.reason})` : ""}: it was terminated during the append and accepts no more items`,
        ),
        terminated,
      );
    stored = writer.stored;
    matched += writer.matched;
    published += writer.published;
    current = (await ledger.getBatch(batchId)) ?? current;
  } else if (recorded) {
    current = (await ledger.getBatch(batchId)) ?? current;
  } else if (publishing) {
    // Nothing new: a re-sent range. The client is alive; say so (only progressAt moves).
    await ledger.recordProgress(batchId, env.deps.clock.now());
  }

  const received = Math.max(current.received, end);
  const durationMs = env.deps.clock.now() - startedAt;
  log.info(
    "batch.appended",
    `batch ${batchId}: ${items.length} items at offset ${offset} (${stored} stored)`,
    {
      batchId,
      offset,
      items: items.length,
      stored,
      matched,
      published,
      received,
      durationMs,
    },
  );
  const view = batchView(current, current.summary?.counts ?? null);
  return {
    ...view,
    progress: { ...view.progress, received },
    append: { offset, items: items.length, stored, matched, published, received, durationMs },
  };
}

function compareStored(item: ChunkItem, stored: Item, problems: ProblemList): void {
  const label = item.origin.label;
  const path = (field: string) => (label.startsWith("line ") ? `${label}: ${field}` : `${label}.${field}`);
  if (stored.itemId !== item.itemId)
    problems.add(
      "conflict",
      path("id"),
      `position ${stored.seq} is stored as item "${stored.itemId}", not "${item.itemId}"`,
    );
  else if (!sameContent(stored.payload, item.payload))
    problems.add(
      "conflict",
      path("payload"),
      `position ${stored.seq}: differs from the stored payload of item "${item.itemId}"`,
    );
}

/** The request's offset and items, every item checked; problems listed, nothing read from the ledger. */
async function parseAppend(
  env: SubmissionEnv,
  batch: Batch,
  req: HttpRequest,
  query: URLSearchParams,
): Promise<ParsedAppend> {
  const { settings } = env;
  const problems = new ProblemList();
  const pipeline = getPipeline(batch.pipeline);
  if (!pipeline)
    throw new TallyError(
      404,
      "not_found",
      `batch "${batch.batchId}" names an unknown pipeline "${batch.pipeline}"`,
    );
  const checks = { pipeline, maxPayloadBytes: settings.maxPayloadBytes };
  const items: ChunkItem[] = [];
  const firstUse = new Map<string, string>();
  let offset = 0;
  const take = (raw: unknown, origin: ItemOrigin) => {
    const item = checkItem(raw, origin, checks, problems);
    if (!item) return;
    const earlier = firstUse.get(item.itemId);
    const idPath = origin.label.startsWith("line ") ? `${origin.label}: id` : `${origin.label}.id`;
    if (earlier !== undefined)
      problems.add("invalid", idPath, `duplicate item id "${item.itemId}" (also ${earlier})`);
    else firstUse.set(item.itemId, origin.label);
    items.push({ ...item, origin });
  };
  const tooMany = (n: number) =>
    tooLarge(`an append carries at most ${settings.maxAppendItems} items; this one has ${n}`, [
      { path: "items", problem: `${n} items exceeds ${settings.maxAppendItems} per request: split it` },
    ]);

  const type = mediaType(req);
  if (ndjsonMediaTypes.includes(type)) {
    const raw = query.get("offset");
    offset = parseOffset(raw, "offset (query parameter)", problems);
    const buffered = bufferedBody(req);
    if (buffered && buffered.length > settings.maxAppendBytes)
      throw bodyTooLarge(buffered.length, settings.maxAppendBytes);
    let bytes = 0;
    let position = 0;
    let over = false;
    for await (const lines of readBodyLines(req, settings.maxLineBytes)) {
      for (const line of lines) {
        bytes += "bytes" in line ? line.bytes : line.tooLongBytes;
        if (bytes > settings.maxAppendBytes) over = true;
        const at = position++;
        if (over || at >= settings.maxAppendItems) continue; // read to the end, keep nothing more
        const label = `line ${line.lineNo}`;
        if ("tooLongBytes" in line) {
          problems.add(
            "too_large",
            label,
            `${line.tooLongBytes} bytes exceeds the line limit of ${settings.maxLineBytes}`,
          );
          continue;
        }
        let value: unknown;
        try {
          value = JSON.parse(line.text);
        } catch (err) {
          problems.add("invalid", label, `not valid JSON: ${(err as Error).message}`);
          continue;
        }
        take(value, { position: offset + at, label, sourceBytes: line.bytes });
      }
    }
    if (over) throw bodyTooLarge(bytes, settings.maxAppendBytes);
    if (position > settings.maxAppendItems) throw tooMany(position);
    return { offset, items, problems };
  }
  if (type !== "application/json" && type !== "")
    throw new TallyError(
      415,
      "unsupported_media_type",
      `Content-Type "${type}" is not accepted: send application/json or application/x-ndjson`,
      [{ path: "Content-Type", problem: `"${type}" is not application/json or application/x-ndjson` }],
    );

  const body = await readJsonBody(req, settings.maxAppendBytes);
  if (body === null || typeof body !== "object" || Array.isArray(body))
    throw invalidArgument('the request body must be a JSON object {"offset": N, "items": [...]}', [
      { path: "body", problem: "not a JSON object" },
    ]);
  const { offset: rawOffset, items: rawItems, ...rest } = body as Record<string, unknown>;
  for (const key of Object.keys(rest))
    problems.add("invalid", key, "unknown field (an append takes offset and items)");
  if (query.has("offset"))
    problems.add("invalid", "offset (query parameter)", "a JSON append carries its offset in the body");
  offset = parseOffset(rawOffset, "offset", problems);
  if (!Array.isArray(rawItems)) {
    problems.add(
      "invalid",
      "items",
      rawItems === undefined
        ? "is required (an array of {id?, payload})"
        : "must be an array of {id?, payload}",
    );
    return { offset, items, problems };
  }
  if (rawItems.length > settings.maxAppendItems) throw tooMany(rawItems.length);
  rawItems.forEach((raw, i) => {
    take(raw, { position: offset + i, label: `items[${i}]` });
  });
  return { offset, items, problems };
}

function parseOffset(raw: unknown, path: string, problems: ProblemList): number {
  const n = typeof raw === "string" && /^\d+$/.test(raw) ? Number(raw) : raw;
  if (raw === undefined || raw === null) {
    problems.add("invalid", path, "is required: the position of the first item (the batch's stored prefix)");
    return 0;
  }
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 0) {
    problems.add("invalid", path, "must be an integer ≥ 0");
    return 0;
  }
  return n;
}

function bodyTooLarge(size: number, max: number) {
  return tooLarge(`the append body is ${size} bytes or more; the limit is ${max}: split it`, [
    { path: "body", problem: `${size} bytes exceeds ${max} per append request` },
  ]);
}
