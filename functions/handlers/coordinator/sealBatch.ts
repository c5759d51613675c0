// `POST /v1/batches/{id}:seal` with `{"total": N}`: the client has appended every item of an open
// batch (docs/api.md, "Submissions of any size"). Idempotent: sealing a sealed batch with the same
// total answers it again (and finishes a seal whose coordinator died half-way).
//
//   1. The stored prefix is derived from what is stored (storedPrefix.ts): fewer than N → 409 naming
//      the missing offset (`error.batch.received`); an item stored at N or beyond → 409.
//   2. The seal: `total` and `submissionComplete` are written on the batch. From this write on the
//      ledger's fence refuses every item-creating commit (core/batchFence.ts mayCreateItems), and the
//      batch carries its total, so a coordinator that dies after it leaves a batch the reconciler
//      finishes alone (stale-submission sweep: every item stored → publish from the cursor, start).
//      An append that raced the seal past N was either committed before it (found by the check
//      after the seal: the batch then fails, the client contradicted itself) or is refused.
//   3. Doorbells from the cursor to N are published (what the appends' coordinators did not record
//      as published), the batch moves to `running` (markSubmitted) and settles at once when every
//      item already finished (or it is empty). A blocked batch only records its total: the
//      reconciler starts it when its dependencies finish.
import { mayCreateItems } from "../../core/batchFence";
import { conflict, invalidArgument, notFound, TallyError, tooLarge } from "../../core/errors";
import type { Batch } from "../../core/model";
import { CrashPointReached } from "../../faults";
import type { HttpRequest } from "../../http/httpTypes";
import { readJsonBody } from "../../http/requestBody";
import { settleAfterRequest } from "../finalizeDeps";
import { storedPrefix } from "../storedPrefix";
import { refusalFor } from "./appendItems";
import { batchView } from "./batchView";
import type { SubmissionEnv } from "./submissionWriter";

export async function sealBatch(env: SubmissionEnv, batchId: string, req: HttpRequest) {
  const { ledger, clock } = env.deps;
  const body = await readJsonBody(req, 64 * 1024);
  const { total, ...rest } = (body ?? {}) as Record<string, unknown>;
  const problems = Object.keys(rest).map((k) => ({ path: k, problem: "unknown field (a seal takes total)" }));
  if (body === null || typeof body !== "object" || Array.isArray(body))
    problems.push({ path: "body", problem: 'must be a JSON object {"total": N}' });
  else if (typeof total !== "number" || !Number.isSafeInteger(total) || total < 0)
    problems.push({
      path: "total",
      problem: total === undefined ? "is required: the number of items appended" : "must be an integer ≥ 0",
    });
  if (problems.length > 0) throw invalidArgument("the seal request is invalid", problems);
  const n = total as number;
  if (n > env.settings.maxItemsPerBatch)
    throw tooLarge(`a batch holds at most ${env.settings.maxItemsPerBatch} items`, [
      { path: "total", problem: `${n} exceeds ${env.settings.maxItemsPerBatch}` },
    ]);

  const batch = await ledger.getBatch(batchId);
  if (!batch) throw notFound(`no batch "${batchId}"`);

  if (batch.submissionComplete) {
    if (batch.total !== n)
      throw refusalFor(
        conflict(`batch "${batchId}" was sealed with ${batch.total} items, not ${n}`, [
          { path: "total", problem: `the stored batch has ${batch.total} items` },
        ]),
        batch,
      );
    return answer(env, await startSealed(env, batch, n));
  }
  const admitted = mayCreateItems(batch);
  if (!admitted.ok)
    throw refusalFor(new TallyError(409, "batch_closed", `${admitted.reason}; it cannot be sealed`), batch);

  const { prefix } = await storedPrefix(ledger, batch, { upTo: n });
  if (prefix < n)
    throw refusalFor(
      conflict(
        `batch "${batchId}" holds ${prefix} items from offset 0; append the items from offset ${prefix} before sealing it with ${n}`,
        [{ path: "total", problem: `the item at offset ${prefix} is missing` }],
      ),
      batch,
      prefix,
    );
  const beyond = async () => (await ledger.getItemsBySeq(batchId, n, 1)).length > 0;
  if (await beyond())
    throw refusalFor(
      conflict(`batch "${batchId}" holds more than ${n} items: seal it with its full count`, [
        { path: "total", problem: `an item is stored at offset ${n}` },
      ]),
      batch,
      prefix,
    );

  // 2. The seal (closes the fence), then whether an append slipped in between the check and it.
  await ledger.recordTotal(batchId, n, clock.now());
  env.log.info("batch.sealed", `batch ${batchId} sealed with ${n} items`, { batchId, total: n });
  if (await beyond()) {
    const reason = `sealed with ${n} items while an append stored more: submit the batch again under a new id`;
    const ended = await ledger.requestTermination(batchId, "failed", reason, clock.now());
    if (ended) await sweepAndSettle(env, ended);
    throw refusalFor(
      conflict(`batch "${batchId}" ${reason}`, [
        { path: "total", problem: `an item is stored at offset ${n}` },
      ]),
      (await ledger.getBatch(batchId)) ?? batch,
    );
  }
  if (env.settings.crashAt?.("beforeCursorWrite", batchId))
    throw new CrashPointReached("beforeCursorWrite", batchId);
  return answer(env, await startSealed(env, { ...batch, total: n, submissionComplete: true }, n));
}

/** Publishes from the cursor and starts a sealed batch (a no-op for one that already started). */
async function startSealed(env: SubmissionEnv, sealed: Batch, total: number): Promise<Batch> {
  const { ledger, queue, clock } = env.deps;
  let current = (await ledger.getBatch(sealed.batchId)) ?? sealed;
  if (current.status !== "submitting") return current; // blocked (the reconciler starts it), running or final
  if (current.terminateAs) throw terminated(await sweepAndSettle(env, current));
  const page = env.settings.chunkItems;
  let cursor = current.cursor;
  while (cursor < total) {
    const refs = await ledger.readItemRefs(current.batchId, cursor, Math.min(page, total - cursor));
    if (refs.length === 0) break;
    await ledger.touchPending(refs, clock.now());
    await queue.publish(current.pipeline, refs);
    cursor += refs.length;
    await ledger.advanceCursor(current.batchId, cursor, clock.now(), cursor);
  }
  const started = await ledger.markSubmitted(current.batchId, total, clock.now());
  current = (await ledger.getBatch(current.batchId)) ?? current;
  if (current.terminateAs && !started) throw terminated(await sweepAndSettle(env, current));
  // Every item may have finished while the batch was open (their workers could not finalize it):
  // the last item tells (while it is live the batch cannot be finished, and whoever ends it after
  // the start finalizes the batch); an empty batch is finalized here.
  const last = total > 0 ? (await ledger.getItemsBySeq(current.batchId, total - 1, 1))[0] : undefined;
  if (!last || last.status === "succeeded" || last.status === "failed") {
    await settleAfterRequest(finalizeDeps(env), current.batchId);
    current = (await ledger.getBatch(current.batchId)) ?? current;
  }
  return current;
}

/** Pending items of a cancelled batch fail `cancelled`; then the batch is finalized if nothing runs. */
async function sweepAndSettle(env: SubmissionEnv, batch: Batch): Promise<Batch> {
  const { ledger, clock } = env.deps;
  if (batch.terminateAs === "cancelled" || batch.terminateAs === "failed") {
    const reason = batch.reason ?? `batch ${batch.terminateAs}`;
    while (
      (await ledger.cancelPendingItems(batch.batchId, reason, env.settings.operatorPageSize, clock.now())) > 0
    ) {
      // next page
    }
  }
  await settleAfterRequest(finalizeDeps(env), batch.batchId);
  return (await ledger.getBatch(batch.batchId)) ?? batch;
}

function terminated(batch: Batch) {
  return refusalFor(
    new TallyError(
      409,
      "batch_closed",
      `batch "${batch.batchId}" is ${batch.status}${batch.terminateAs ? `, ending ${batch.terminateAs}` : ""}${batch.reason ? ` (${batch.reason})` : ""}: it cannot be sealed`,
    ),
    batch,
  );
}

function answer(env: SubmissionEnv, batch: Batch) {
  env.log.info("batch.seal_answered", `batch ${batch.batchId}: ${batch.status}`, {
    batchId: batch.batchId,
    status: batch.status,
    total: batch.total,
  });
  return batchView(batch, batch.summary?.counts ?? null);
}

function finalizeDeps(env: SubmissionEnv) {
  const { deps, log } = env;
  return {
    ledger: deps.ledger,
    sink: deps.sink,
    clock: deps.clock,
    log,
    staleFinalizingMs: deps.config.topology.reconcile.staleFinalizingSeconds * 1000,
  };
}
