// Operator actions mid-run: cancel a running batch (pending items → failed(cancelled), running ones
// finish); a retry of the cancelled batch is refused and changes nothing (issue #15 item 10). And
// retry a partial batch whose failures are permanent (they fail again, generation 2). Through all of
// it the sink keeps exactly one row per succeeded item, and generation-1 rows stay as exported.
import {
  assertInvariant,
  check,
  checkNone,
  clamp,
  demoItems,
  epoch,
  exportMarkers,
  finalDeadlineMs,
  itemsById,
  type Scenario,
  sinkRows,
  unexpectedItems,
  waitDone,
  waitFinal,
} from "./scenario";

export const cancelAndRetry: Scenario = {
  id: "cancel-and-retry",
  title: "cancel mid-run, retry of failed items: one sink row per succeeded item",
  stack: "shared",
  async run(env, scale, say) {
    const n = clamp(scale.items / 20, 50, 2000);
    const cancelled = {
      id: env.batchId("cancel"),
      items: demoItems("n-", n, (i) => ({ value: i, sleepMs: 50 + (i % 50) })),
    };
    const permanent = {
      id: env.batchId("retry-partial"),
      items: demoItems("m-", 40, (i) => (i % 20 === 0 ? { value: i, permanent: true } : { value: i })),
    };
    const cancelledIds = cancelled.items.map((i) => i.id);
    const permanentIds = permanent.items.map((i) => i.id);
    await env.api.submit({ id: cancelled.id, pipeline: "demo", items: cancelled.items });
    await env.api.submit({
      id: permanent.id,
      pipeline: "demo",
      failureThreshold: 0.1,
      items: permanent.items,
    });

    // Cancel once about a third is done.
    await waitDone(env, cancelled.id, Math.floor(n / 3), finalDeadlineMs(n));
    const cancelAt = Date.now();
    await env.api.cancel(cancelled.id);
    const afterCancel = await waitFinal(env, cancelled.id, finalDeadlineMs(n));
    const cancelMs = (epoch(afterCancel.finishedAt) ?? Date.now()) - cancelAt;
    check(
      afterCancel.status === "cancelled",
      `batch ${cancelled.id} is ${afterCancel.status}; expected cancelled`,
    );
    const cancelReport = await assertInvariant(env, cancelled.id, cancelledIds);
    const gen1 = await itemsById(env, cancelled.id);
    const succeededInGen1 = cancelledIds.filter((id) => gen1.get(id)?.status === "succeeded");
    const cancelledItems = cancelledIds.filter((id) => gen1.get(id)?.status === "failed");
    checkNone(
      unexpectedItems(gen1, cancelledItems, { status: "failed", kind: "cancelled" }),
      "failed item(s) of the cancelled batch not failed(cancelled)",
    );
    check(
      succeededInGen1.length > 0 && cancelledItems.length > 0,
      `the cancel landed at an edge: ${succeededInGen1.length} succeeded, ${cancelledItems.length} cancelled`,
    );
    await waitFinal(env, permanent.id, finalDeadlineMs(40));
    await assertInvariant(env, permanent.id, permanentIds);

    // A cancelled batch is not retried (issue #15 item 10): the operator ended it, a retry would
    // revive it behind its dependents' backs. The refusal changes nothing.
    const refused = await env.api.retryRefused(cancelled.id);
    check(
      refused.status === 409 && /submit it again/.test(refused.message),
      () =>
        `retry of the cancelled batch answered ${refused.status} ${refused.message}; expected 409 naming how to go on`,
    );
    await env.api.retry(permanent.id);
    const retriedPartial = await waitFinal(env, permanent.id, finalDeadlineMs(40));
    const stillCancelled = await waitFinal(env, cancelled.id, finalDeadlineMs(n));
    check(
      stillCancelled.status === "cancelled" && stillCancelled.generation === 1,
      `after the refused retry the cancelled batch is ${stillCancelled.status} generation ${stillCancelled.generation}; expected cancelled, generation 1`,
    );
    if (retriedPartial.status !== "partial") {
      // Say what the ledger holds: the two permanently failing items, and the batch's summary.
      const byId = await itemsById(env, permanent.id);
      const states = ["m-20", "m-40"]
        .map((id) => byId.get(id))
        .map(
          (it) =>
            `${it?.id} ${it?.status} gen ${it?.generation} attempt ${it?.attempt} ${JSON.stringify(it?.error)}`,
        );
      check(
        false,
        `the retried partial batch is ${retriedPartial.status}; expected partial. Summary ${JSON.stringify(retriedPartial.summary)}; items ${states.join("; ")}`,
      );
    }
    check(
      retriedPartial.generation === 2,
      `the retried batch has generation ${retriedPartial.generation}; expected 2`,
    );
    await assertInvariant(env, cancelled.id, cancelledIds);
    await assertInvariant(env, permanent.id, permanentIds);

    // One row per succeeded item: the cancelled batch's generation-1 rows only, the partial
    // batch's rows untouched by its retry (whose two items failed again).
    const rows = await sinkRows(env, cancelled.id);
    const rowsById = new Map(rows.map((r) => [r.item_id, r]));
    const problems: string[] = [];
    if (rows.length !== succeededInGen1.length)
      problems.push(
        `the sink has ${rows.length} rows for ${cancelled.id}; expected ${succeededInGen1.length} (its succeeded items)`,
      );
    for (const id of succeededInGen1)
      if (rowsById.get(id)?.generation !== 1)
        problems.push(
          `${id}: succeeded in generation 1, sink row generation ${rowsById.get(id)?.generation}`,
        );
    for (const id of cancelledItems)
      if (rowsById.has(id)) problems.push(`${id}: cancelled, yet the sink has a row for it`);
    const partialRows = await sinkRows(env, permanent.id);
    if (partialRows.length !== 38 || partialRows.some((r) => r.generation !== 1))
      problems.push(
        `${permanent.id}: ${partialRows.length} rows (generations ${[...new Set(partialRows.map((r) => r.generation))].join(", ")}); expected 38 from generation 1`,
      );
    for (const [id, expected] of [
      [cancelled.id, "1"],
      [permanent.id, "1,2"],
    ] as const) {
      const markers = await exportMarkers(env, id);
      if (markers.map((m) => m.generation).join(",") !== expected)
        problems.push(
          `${id}: export markers for generations ${markers.map((m) => m.generation).join(",")}; expected ${expected}`,
        );
    }
    checkNone(problems, "sink problem(s) after cancel and retry");
    say(
      `cancelled with ${succeededInGen1.length} succeeded / ${cancelledItems.length} cancelled (final ${cancelMs} ms after the request); its retry refused (409); partial batch retried: still 38 rows`,
    );
    return {
      items: n + 40,
      outcome: `cancelled (retry refused); partial → ${retriedPartial.status}`,
      recoveryMs: cancelMs,
      recovery: "cancel request → batch final (cancelled)",
      figures: {
        succeededBeforeCancel: succeededInGen1.length,
        cancelledItems: cancelledItems.length,
        cancelReportFailed: cancelReport.apiCounts.failed,
      },
    };
  },
};
