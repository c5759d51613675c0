// Duplicate deliveries: Pub/Sub delivers at least once, and a doorbell may be published more than
// once. Here every doorbell of a batch exists three times — the coordinator's, plus two copies
// published straight into the emulator's work topic. A copy that finds the item leased by a live
// holder, or terminal, is acknowledged without work: one execution and one result per item.
import { waitFor } from "../../../local/waitFor";
import {
  assertInvariant,
  checkNone,
  clamp,
  demoItems,
  eventuallyNone,
  finalDeadlineMs,
  itemsById,
  type Scenario,
  unexpectedItems,
  waitFinal,
} from "./scenario";

export const copiesPerDoorbell = 3;

export const duplicateDeliveries: Scenario = {
  id: "duplicate-deliveries",
  title: `every doorbell published ${copiesPerDoorbell} times: one execution result per item`,
  stack: "shared",
  async run(env, scale, say) {
    const n = clamp(scale.items / 20, 20, 2000);
    const batchId = env.batchId("dupes");
    const items = demoItems("d-", n, (i) => ({ value: i, sleepMs: 20 + (i % 30) }));
    const ids = items.map((i) => i.id);
    await env.api.submit({ id: batchId, pipeline: "demo", items });

    // The extra copies, exactly as the coordinator publishes doorbells (attributes, no data).
    const topic = env.pubsub.topic(env.stack.pipeline("demo").topology.workTopic, {
      batching: { maxMessages: 1000, maxMilliseconds: 10 },
    });
    await Promise.all(
      ids.flatMap((itemId) =>
        Array.from({ length: copiesPerDoorbell - 1 }, () =>
          topic.publishMessage({ data: Buffer.alloc(0), attributes: { batchId, itemId, generation: "1" } }),
        ),
      ),
    );

    const batch = await waitFinal(env, batchId, finalDeadlineMs(n));
    await assertInvariant(env, batchId, ids);
    const byId = await itemsById(env, batchId);
    // A duplicate never ran a second attempt: neither stole a live lease nor re-ran a finished item.
    checkNone(unexpectedItems(byId, ids, { status: "succeeded", attempt: 1 }), "item(s) run more than once");
    checkNone(
      ids
        .filter((id) => (byId.get(id)?.result as { attempt?: number } | undefined)?.attempt !== 1)
        .map((id) => `${id}: result ${JSON.stringify(byId.get(id)?.result)}`),
      "item(s) whose result is not the first attempt's",
    );

    // Every copy was delivered and acknowledged; exactly one delivery per item did the work.
    const acked = await waitFor(
      `all ${n * copiesPerDoorbell} copies to be acknowledged`,
      () => {
        const perItem = new Map<string, number>();
        for (const d of env.workProxy.deliveries(batchId))
          if (d.status !== null && d.status < 300) perItem.set(d.itemId!, (perItem.get(d.itemId!) ?? 0) + 1);
        return ids.every((id) => (perItem.get(id) ?? 0) >= copiesPerDoorbell) ? perItem : null;
      },
      120_000,
      100,
    );
    await eventuallyNone(() => {
      const succeeded = env.logs.countByItem(batchId, "item.succeeded");
      const skips = env.logs.events({ batchId, event: "item.idempotent_skip" }).length;
      return [
        ...ids
          .filter((id) => succeeded.get(id) !== 1)
          .map((id) => `${id}: item.succeeded ×${succeeded.get(id) ?? 0}`),
        ...(skips >= n * (copiesPerDoorbell - 1)
          ? []
          : [
              `${skips} idempotent skips; expected at least ${n * (copiesPerDoorbell - 1)} (one per extra copy)`,
            ]),
      ];
    }, "item(s) not executed exactly once, or extra copies not skipped");
    const skips = env.logs.events({ batchId, event: "item.idempotent_skip" }).length;
    const deliveries = [...acked.values()].reduce((a, b) => a + b, 0);
    say(`${deliveries} deliveries acknowledged for ${n} items; ${skips} idempotent skips; 1 execution each`);
    return {
      items: n,
      outcome: batch.status,
      recoveryMs: null,
      recovery: "—",
      figures: { deliveries, idempotentSkips: skips },
    };
  },
};
