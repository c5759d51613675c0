// F11, F10: errors by kind, and the outcome by threshold. Permanent errors fail at once, never
// retried; transient ones are retried with backoff and recover; an item that keeps failing ends
// `attempts_exhausted`; deliveries that never reach the ledger (the chaos proxy refuses them, as a
// worker that crashes before leasing would) are dead-lettered by Pub/Sub after maxDeliveryAttempts
// and recorded as `dead_lettered`. The same mix ends `partial` under a 10% threshold and `failed`
// under 5%; without failures `succeeded`. Finally an item that crashes its worker on every attempt
// (crash: true) ends in a recorded failure after the maximum attempts, and its batch finalizes.
import { waitFor } from "../../../local/waitFor";
import {
  assertInvariant,
  check,
  checkNone,
  clamp,
  demoItems,
  eventuallyNone,
  finalDeadlineMs,
  itemsById,
  outcomeSummary,
  type Scenario,
  unexpectedItems,
  waitFinal,
} from "./scenario";

type Kind = "ok" | "permanent" | "transient" | "exhausted" | "deadLettered";

/** Per 100 items: 4 permanent, 4 transient (recover on attempt 3), 2 exhausted, 2 dead-lettered. */
function kindOf(n: number): Kind {
  const r = n % 100;
  if (r >= 10 && r < 14) return "permanent";
  if (r >= 20 && r < 24) return "transient";
  if (r >= 30 && r < 32) return "exhausted";
  if (r >= 40 && r < 42) return "deadLettered";
  return "ok";
}

const payloadFor: Record<Kind, (n: number) => Record<string, unknown>> = {
  ok: (n) => ({ value: n, sleepMs: n % 5 }),
  permanent: (n) => ({ value: n, permanent: true }),
  transient: (n) => ({ value: n, failTimes: 2 }),
  exhausted: (n) => ({ value: n, failTimes: 100 }),
  deadLettered: (n) => ({ value: n }),
};

export const errorKinds: Scenario = {
  id: "F11-error-kinds",
  title: "permanent vs transient errors, attempts exhausted, dead-lettered, outcome by threshold (F11, F10)",
  stack: "shared",
  async run(env, scale, say) {
    const n = clamp(scale.items / 20, 100, 1000);
    const { maxItemAttempts, maxDeliveryAttempts } = env.settings;
    const mixed = (name: string) => {
      const items = demoItems(`${name}-`, n, (i) => payloadFor[kindOf(i)](i));
      const kinds = new Map<Kind, string[]>();
      items.forEach((it, i) => {
        const k = kindOf(i + 1);
        kinds.set(k, [...(kinds.get(k) ?? []), it.id]);
      });
      return { items, kinds };
    };
    const partial = { id: env.batchId("kinds-partial"), threshold: 0.1, ...mixed("p") };
    const failed = { id: env.batchId("kinds-failed"), threshold: 0.05, ...mixed("f") };
    const clean = {
      id: env.batchId("kinds-clean"),
      threshold: 0,
      items: demoItems("c-", n, (i) => (i % 10 === 0 ? { value: i, failTimes: 1 } : { value: i })),
    };
    const failedFraction =
      [...partial.kinds].filter(([k]) => k !== "ok" && k !== "transient").flatMap(([, v]) => v).length / n;
    check(
      failedFraction > 0.05 && failedFraction <= 0.1,
      `the mix fails ${failedFraction}; it must sit between the two thresholds`,
    );

    for (const b of [partial, failed]) env.workProxy.refuseItems(b.id, b.kinds.get("deadLettered") ?? []);
    const started = Date.now();
    try {
      for (const b of [partial, failed, clean])
        await env.api.submit({ id: b.id, pipeline: "demo", failureThreshold: b.threshold, items: b.items });
      const finals = await Promise.all(
        [partial, failed, clean].map((b) => waitFinal(env, b.id, finalDeadlineMs(n, 60_000))),
      );
      for (const b of [partial, failed, clean])
        await assertInvariant(
          env,
          b.id,
          b.items.map((i) => i.id),
        );
      check(
        finals.map((f) => f.status).join(",") === "partial,failed,succeeded",
        `outcomes ${finals.map((f) => f.status).join(", ")}; expected partial (≤ 10%), failed (> 5%), succeeded`,
      );

      for (const b of [partial, failed]) {
        const byId = await itemsById(env, b.id);
        const ids = (k: Kind) => b.kinds.get(k) ?? [];
        checkNone(
          [
            // F11: a permanent error fails at once — the first attempt is the only one.
            ...unexpectedItems(byId, ids("permanent"), { status: "failed", kind: "permanent", attempt: 1 }),
            ...unexpectedItems(byId, ids("transient"), { status: "succeeded", attempt: 3 }),
            ...unexpectedItems(byId, ids("exhausted"), {
              status: "failed",
              kind: "attempts_exhausted",
              attempt: maxItemAttempts,
            }),
            // Never reached the ledger: no attempt was ever recorded.
            ...unexpectedItems(byId, ids("deadLettered"), {
              status: "failed",
              kind: "dead_lettered",
              attempt: 0,
            }),
            ...unexpectedItems(byId, ids("ok"), { status: "succeeded", attempt: 1 }),
          ],
          `item(s) of ${b.id} not in the state their error kind requires`,
        );
        // Pub/Sub made exactly maxDeliveryAttempts deliveries of each refused message, then dead-lettered it.
        const refused = new Map<string, number>();
        for (const d of env.workProxy.deliveries(b.id))
          if (d.action === "refuse") refused.set(d.itemId!, (refused.get(d.itemId!) ?? 0) + 1);
        checkNone(
          ids("deadLettered")
            .filter((id) => refused.get(id) !== maxDeliveryAttempts)
            .map((id) => `${id}: ${refused.get(id) ?? 0} deliveries before dead-lettering`),
          `dead-lettered item(s) not delivered exactly maxDeliveryAttempts (${maxDeliveryAttempts}) times`,
        );
        // The reconciler records the item (seen above), settles the batch, and only then answers: its
        // 2xx reaches the proxy a moment after the ledger shows the failure.
        await eventuallyNone(() => {
          const acked = new Set(
            env.deadLetterProxy
              .deliveries(b.id)
              .filter((d) => d.status !== null && d.status < 300)
              .map((d) => d.itemId),
          );
          return ids("deadLettered")
            .filter((id) => !acked.has(id))
            .map((id) => `${id}: its dead-lettered message was not acknowledged (2xx) by the reconciler`);
        }, "dead-letter deliveries acknowledged by the reconciler, one per refused item");
      }
      const mixedMs = Date.now() - started;
      say(`mixed batches final in ${mixedMs} ms: partial at 10%, failed at 5%, clean succeeded`);

      // crash: true — the worker process dies on every attempt.
      const crash = {
        id: env.batchId("kinds-crash"),
        items: demoItems("x-", 20, (i) => (i === 1 ? { value: i, crash: true } : { value: i, sleepMs: 5 })),
      };
      const restartsBefore = env.stack.workers.reduce((a, w) => a + w.restarts, 0);
      const crashStarted = Date.now();
      await env.api.submit({ id: crash.id, pipeline: "demo", failureThreshold: 0.05, items: crash.items });
      const crashBatch = await waitFinal(
        env,
        crash.id,
        finalDeadlineMs(20, maxItemAttempts * (env.settings.leaseSeconds + 10) * 1000),
      );
      await assertInvariant(
        env,
        crash.id,
        crash.items.map((i) => i.id),
      );
      const crashById = await itemsById(env, crash.id);
      const crashed = crashById.get("x-01");
      check(
        crashed?.status === "failed" &&
          ["attempts_exhausted", "dead_lettered"].includes(crashed.error?.kind ?? "") &&
          crashed.attempt === maxItemAttempts,
        `x-01 (crash: true): expected failed(attempts_exhausted or dead_lettered) at attempt ${maxItemAttempts}, found ${crashed?.status}(${crashed?.error?.kind}: ${crashed?.error?.message}) at attempt ${crashed?.attempt}`,
      );
      check(
        crashBatch.status === "partial",
        `the crash batch is ${crashBatch.status}; expected partial (1 of 20 ≤ 5%)`,
      );
      const restarts = await waitFor(
        "the crashed workers to be restarted",
        () => {
          const r = env.stack.workers.reduce((a, w) => a + w.restarts, 0) - restartsBefore;
          return r >= maxItemAttempts && env.stack.workers.every((w) => w.live) ? r : null;
        },
        60_000,
        100,
      );
      const crashMs = Date.now() - crashStarted;
      say(
        `crash: true ended ${crashed.error?.kind} after ${crashed.attempt} attempts and ${restarts} worker restarts, in ${crashMs} ms`,
      );
      return {
        items: 3 * n + 20,
        outcome: outcomeSummary([...finals.map((f) => f.status), crashBatch.status]),
        recoveryMs: crashMs,
        recovery: `crash-on-every-attempt item → recorded failure and batch final`,
        figures: {
          permanent: (partial.kinds.get("permanent") ?? []).length * 2,
          deadLettered: (partial.kinds.get("deadLettered") ?? []).length * 2,
          workerRestarts: restarts,
        },
      };
    } finally {
      for (const b of [partial, failed]) env.workProxy.clearRules(b.id);
    }
  },
};
