// F10: the responses of the final deliveries of a batch are lost (in the incident: the last 8 or 16
// results of every long job, stranded until a 22-minute idle cleanup). The chaos proxy lets the
// worker do the work and then cuts the connection instead of passing the 2xx on, for the last N
// items to arrive. A lost acknowledgement may only cause a redelivery, which finds the item terminal
// and acknowledges: the batch finalizes with exactly one result per item and nothing is stranded —
// every dropped message is eventually acknowledged.
import { waitFor } from "../../../local/waitFor";
import {
  assertInvariant,
  check,
  checkNone,
  clamp,
  demoItems,
  eventuallyNone,
  finalDeadlineMs,
  type Scenario,
  waitFinal,
} from "./scenario";

export const droppedResponses = 16;

export const lostAcknowledgements: Scenario = {
  id: "F10-lost-acks",
  title: `responses of the final ${droppedResponses} deliveries dropped (F10)`,
  stack: "shared",
  async run(env, scale, say) {
    const n = clamp(scale.items / 20, 40, 2000);
    const batchId = env.batchId("lostacks");
    const items = demoItems("a-", n, (i) => ({ value: i, sleepMs: 5 + (i % 10) }));
    const ids = items.map((i) => i.id);
    env.workProxy.dropFinalResponses(batchId, n, droppedResponses);
    try {
      await env.api.submit({ id: batchId, pipeline: "demo", items });
      const batch = await waitFinal(env, batchId, finalDeadlineMs(n));

      // The work of every dropped delivery was done (the worker answered 2xx, Pub/Sub never saw it):
      // the batch can be final before the last of those answers is cut, so wait for all of them.
      const droppedItems = await waitFor(
        `the responses of ${droppedResponses} completed deliveries to be dropped`,
        () => {
          const items = env.workProxy.droppedItems(batchId);
          return items.length >= droppedResponses ? items : null;
        },
        60_000,
        50,
      );
      const dropped = env.workProxy.deliveries(batchId).filter((d) => d.action === "drop_response");
      check(
        droppedItems.length === droppedResponses && dropped.length === droppedResponses,
        `the proxy dropped ${dropped.length} response(s) for ${droppedItems.length} item(s); expected ${droppedResponses}`,
      );
      checkNone(
        dropped.filter((d) => d.status !== 200).map((d) => `${d.itemId}: the worker answered ${d.status}`),
        "dropped response(s) that were not the worker's 200",
      );
      // …and each dropped message came back and was acknowledged: nothing stranded.
      const lastDrop = Math.max(...dropped.map((d) => d.answeredAt ?? d.at));
      const ackedAt = await waitFor(
        `every one of the ${droppedResponses} dropped messages to be redelivered and acknowledged`,
        () => {
          const acked = new Map<string, number>();
          for (const d of env.workProxy.deliveries(batchId))
            if (
              d.action === "forward" &&
              d.status !== null &&
              d.status < 300 &&
              droppedItems.includes(d.itemId!)
            )
              acked.set(d.itemId!, Math.max(acked.get(d.itemId!) ?? 0, d.answeredAt ?? d.at));
          return acked.size === droppedItems.length ? Math.max(...acked.values()) : null;
        },
        60_000,
        50,
      );
      const report = await assertInvariant(env, batchId, ids);
      check(report.status === "succeeded", `batch ${batchId} is ${report.status}; expected succeeded`);

      // The redeliveries were idempotent: each dropped item succeeded once and was skipped after.
      await eventuallyNone(() => {
        const succeeded = env.logs.countByItem(batchId, "item.succeeded");
        const skipped = env.logs.countByItem(batchId, "item.idempotent_skip");
        return droppedItems
          .filter((id) => succeeded.get(id) !== 1 || (skipped.get(id) ?? 0) < 1)
          .map(
            (id) =>
              `${id}: item.succeeded ×${succeeded.get(id) ?? 0}, item.idempotent_skip ×${skipped.get(id) ?? 0}; expected 1 and ≥ 1`,
          );
      }, "dropped item(s) not executed exactly once with an idempotent redelivery");
      say(
        `dropped the responses of ${dropped.length} completed deliveries; all redelivered and acknowledged ${ackedAt - lastDrop} ms after the last drop`,
      );
      return {
        items: n,
        outcome: batch.status,
        recoveryMs: ackedAt - lastDrop,
        recovery: "last dropped response → every dropped message acknowledged",
        figures: { droppedResponses: dropped.length },
      };
    } finally {
      env.workProxy.clearRules(batchId);
    }
  },
};
