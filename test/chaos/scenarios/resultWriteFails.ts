// F1: a worker's result write fails. The faults stack runs its workers with
// TALLY_FAULT_COMPLETE_FAIL_RATE, so a share of completion writes (result + succeeded, one
// transaction) fail before reaching the ledger. No item may count as succeeded without its result:
// the failed write leaves the item running, the worker releases it and answers 5xx, and the item is
// retried until it succeeds — with the result of the attempt that succeeded — or fails with a
// recorded reason when its attempts run out.
import {
  assertInvariant,
  check,
  checkNone,
  clamp,
  demoItems,
  finalDeadlineMs,
  itemsById,
  type Scenario,
  waitDone,
  waitFinal,
} from "./scenario";

export const completeFailRate = 0.3;

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

    const injected = env.logs
      .events({ batchId, event: "item.released" })
      .filter((e) => e.message.includes("completion write failed"));
    check(
      injected.length > 0,
      `no completion write failed in batch ${batchId}: is TALLY_FAULT_COMPLETE_FAIL_RATE set for the workers?`,
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
    const retried = [...byId.values()].filter((i) => i.status === "succeeded" && i.attempt > 1).length;
    check(retried > 0, "no succeeded item needed a second attempt, yet completion writes failed");

    const lastFault = Math.max(...injected.map((e) => e.at));
    const finishedAt = Date.parse(batch.finishedAt ?? "") || Date.now();
    const lastItemAt = Math.max(...[...byId.values()].map((i) => Date.parse(i.finishedAt ?? "") || 0));
    say(
      `${injected.length} completion writes failed (rate ${completeFailRate}); ${retried} items succeeded on a later attempt; ${report.apiCounts.failed} exhausted; final ${finishedAt - lastItemAt} ms after the last item`,
    );
    return {
      items: n,
      outcome: batch.status,
      recoveryMs: Math.max(0, finishedAt - lastFault),
      recovery: "last failed completion write → batch final",
      figures: {
        lastItemToFinalMs: finishedAt - lastItemAt,
        completionWritesFailed: injected.length,
        succeededAfterRetry: retried,
        exhausted: report.apiCounts.failed,
      },
    };
  },
};
