// F1: a worker's result write fails, in two ways. The faults stack runs its workers with
// - TALLY_FAULT_COMPLETE_FAIL_RATE: a share of completion writes (result + succeeded, one write)
//   fail before reaching the ledger. No item may count as succeeded without its result: the failed
//   write leaves the item running, the worker releases it and answers 5xx, and the item is retried
//   until it succeeds — with the result of the attempt that succeeded — or fails with a recorded
//   reason when its attempts run out;
// - TALLY_FAULT_COMPLETE_FAIL_AFTER_COMMIT_RATE: a share of completion writes commit and then fail
//   to the worker, as when the commit's answer is lost. The worker takes it for a failed write
//   (releases, answers 5xx), but the item is already succeeded: the release and the redelivery
//   find it terminal, nothing runs again, and the item keeps the committed result — the one of the
//   attempt whose answer was lost — with exactly one sink row.
import {
  assertInvariant,
  check,
  checkNone,
  clamp,
  demoItems,
  eventuallyNone,
  finalDeadlineMs,
  itemsById,
  type Scenario,
  sinkRows,
  waitDone,
  waitFinal,
} from "./scenario";

export const completeFailRate = 0.3;
export const completeFailAfterCommitRate = 0.15;

/** The faults' own words (functions/adapters/firestoreLedger.ts), as the worker logs them on release. */
const beforeWriteFault = "(TALLY_FAULT_COMPLETE_FAIL_RATE)";
const afterCommitFault = "(TALLY_FAULT_COMPLETE_FAIL_AFTER_COMMIT_RATE)";

export const resultWriteFails: Scenario = {
  id: "F1-result-write-fails",
  title: "result write fails (F1): no item succeeded without its result",
  stack: "faults",
  async run(env, scale, say) {
    const n = clamp(scale.items / 20, 50, 5000);
    const batchId = env.batchId("f1");
    const items = demoItems("r-", n, (i) => ({ value: i, sleepMs: i % 5 }));
    await env.api.submit({ id: batchId, pipeline: "demo", failureThreshold: 0.05, items });

    // Mid-run: whatever the API already counts as succeeded carries its result.
    await waitDone(env, batchId, Math.floor(n / 3), finalDeadlineMs(n));
    const early = await env.api.allItems(batchId, { status: "succeeded", include: "result" });
    checkNone(
      early
        .filter((i) => i.result === null || i.result === undefined)
        .map((i) => `${i.id}: succeeded, result ${i.result}`),
      "item(s) counted succeeded without a result while the batch ran",
    );

    const batch = await waitFinal(env, batchId, finalDeadlineMs(n));
    const report = await assertInvariant(
      env,
      batchId,
      items.map((i) => i.id),
    );

    const released = env.logs.events({ batchId, event: "item.released" });
    const injected = released.filter((e) => e.message.includes(beforeWriteFault));
    check(
      injected.length > 0,
      `no completion write failed in batch ${batchId}: is TALLY_FAULT_COMPLETE_FAIL_RATE set for the workers?`,
    );
    const lostAnswers = released.filter((e) => e.message.includes(afterCommitFault));
    check(
      lostAnswers.length > 0,
      `no completion committed and then failed in batch ${batchId}: is TALLY_FAULT_COMPLETE_FAIL_AFTER_COMMIT_RATE set for the workers?`,
    );
    const byId = await itemsById(env, batchId);
    const wrongResult: string[] = [];
    const wrongFailure: string[] = [];
    for (const it of byId.values()) {
      if (it.status === "succeeded") {
        const r = it.result as { attempt?: number; value?: unknown } | null;
        // The stored result is the one the succeeding attempt produced.
        if (!r || r.attempt !== it.attempt || r.value !== Number(it.id.slice(2)))
          wrongResult.push(
            `${it.id}: expected result {value ${Number(it.id.slice(2))}, attempt ${it.attempt}}, found ${JSON.stringify(it.result)}`,
          );
      } else if (
        it.error?.kind !== "attempts_exhausted" ||
        !it.error.message.includes("completion write failed")
      )
        wrongFailure.push(
          `${it.id}: expected failed(attempts_exhausted) after failed completion writes, found ${it.status}(${it.error?.kind}: ${it.error?.message})`,
        );
    }
    checkNone(wrongResult, "succeeded item(s) whose result is not the succeeding attempt's");
    checkNone(wrongFailure, "failed item(s) without the completion-write reason");

    // Committed, then the answer lost: the item keeps the result of the attempt that committed (it
    // never ran again), and the worker's release of it did nothing.
    const notCommitted: string[] = [];
    for (const e of lostAnswers) {
      const it = byId.get(e.itemId ?? "");
      const attempt = Number(e.fields.attempt);
      const r = it?.result as { attempt?: number } | null | undefined;
      if (!it || it.status !== "succeeded" || it.attempt !== attempt || r?.attempt !== attempt)
        notCommitted.push(
          `${e.itemId}: its completion at attempt ${attempt} committed before the error, found ${it?.status} at attempt ${it?.attempt} with result ${JSON.stringify(it?.result)}`,
        );
      else if (e.fields.released !== false)
        notCommitted.push(`${e.itemId}: released back to pending after its completion committed`);
    }
    checkNone(notCommitted, "item(s) whose committed completion did not stand");
    // The 5xx made Pub/Sub redeliver; the redelivery found the item terminal and was acknowledged.
    const lostIds = [...new Set(lostAnswers.map((e) => e.itemId ?? ""))];
    await eventuallyNone(
      () =>
        lostIds.filter(
          (id) =>
            !env.logs
              .events({ batchId, itemId: id, event: "item.idempotent_skip" })
              .some((e) => e.fields.reason === "terminal"),
        ),
      "item(s) whose completion's answer was lost and whose redelivery was not skipped as terminal",
      30_000,
    );
    // One row per succeeded item, none twice (the invariant compares each row with its item).
    const rows = await sinkRows(env, batchId);
    const rowCount = new Map<string, number>();
    for (const r of rows) rowCount.set(r.item_id, (rowCount.get(r.item_id) ?? 0) + 1);
    checkNone(
      [...byId.values()]
        .filter((i) => i.status === "succeeded" && rowCount.get(i.id) !== 1)
        .map((i) => `${i.id}: ${rowCount.get(i.id) ?? 0} sink row(s)`),
      "succeeded item(s) without exactly one sink row",
    );
    const retried = [...byId.values()].filter((i) => i.status === "succeeded" && i.attempt > 1).length;
    check(retried > 0, "no succeeded item needed a second attempt, yet completion writes failed");

    const lastFault = Math.max(...injected.map((e) => e.at));
    const finishedAt = Date.parse(batch.finishedAt ?? "") || Date.now();
    const lastItemAt = Math.max(...[...byId.values()].map((i) => Date.parse(i.finishedAt ?? "") || 0));
    say(
      `${injected.length} completion writes failed (rate ${completeFailRate}), ${lostAnswers.length} committed and then failed (rate ${completeFailAfterCommitRate}); ${retried} items succeeded on a later attempt; ${report.apiCounts.failed} exhausted; final ${finishedAt - lastItemAt} ms after the last item`,
    );
    return {
      items: n,
      outcome: batch.status,
      recoveryMs: Math.max(0, finishedAt - lastFault),
      recovery: "last failed completion write → batch final",
      figures: {
        lastItemToFinalMs: finishedAt - lastItemAt,
        completionWritesFailed: injected.length,
        committedThenFailed: lostAnswers.length,
        succeededAfterRetry: retried,
        exhausted: report.apiCounts.failed,
      },
    };
  },
};
