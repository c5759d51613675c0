// F9: a worker gets SIGTERM mid-item (a deploy, a scale-in, Cloud Run's shutdown). It must not leave
// its items to lease expiry: it aborts their steps, releases their leases and answers their
// deliveries with a non-2xx, so Pub/Sub redelivers them after its backoff — well under the lease.
// What is asserted is causal, not a timing: every held item is leased again before the lease it held
// at the signal would have expired (its `until` as read just before the SIGTERM; heartbeats only
// move it later), and no reconciler redrove it — so only the release can have brought it back.
// (Typical figures are a few hundred milliseconds to two seconds: the release, then Pub/Sub's
// backoff; the lease keeper keeps at least two thirds of the lease ahead.)
import { waitFor } from "../../../local/waitFor";
import { leaseOwnerPid } from "../support/chaosApi";
import { pushConcurrency } from "../support/chaosStack";
import {
  assertInvariant,
  checkNone,
  clamp,
  demoItems,
  finalDeadlineMs,
  itemHistory,
  itemsById,
  type Scenario,
  unexpectedItems,
  waitFinal,
} from "./scenario";

export const workerTerminated: Scenario = {
  id: "F9-worker-sigterm",
  title: "worker SIGTERM mid-item: in-flight items redelivered well under the lease (F9)",
  stack: "shared",
  async run(env, scale, say) {
    // No more items than the relay pushes at once: a released item must find a free push slot at
    // once (as on Cloud Run, whose push concurrency grows with the endpoint), not wait behind the
    // other worker's 4-second items — that wait would measure the relay's cap, not the release.
    const n = Math.min(clamp(scale.items / 100, 10, 400), pushConcurrency);
    const batchId = env.batchId("sigterm");
    // Long enough that the SIGTERM lands mid-step; heartbeats keep the leases alive meanwhile.
    const items = demoItems("t-", n, (i) => ({ value: i, sleepMs: 4000 }));
    const ids = items.map((i) => i.id);
    await env.api.submit({ id: batchId, pipeline: "demo", items });

    const target = await waitFor(
      "a worker holding at least 2 items",
      async () => {
        const running = await env.api.allItems(batchId, { status: "running" });
        const pids = env.stack.pids.workers;
        for (const [i, p] of pids.entries()) {
          if (p === null || !env.stack.workers[i]!.live) continue;
          const mine = running.filter((it) => leaseOwnerPid(it) === p);
          if (mine.length >= 2)
            return {
              worker: i + 1,
              pid: p,
              held: mine.map((it) => it.id),
              // No `until` read proves nothing: -∞ makes the check below fail for that item.
              leaseUntil: new Map(
                mine.map((it) => [
                  it.id,
                  it.lease?.until ? Date.parse(it.lease.until) : Number.NEGATIVE_INFINITY,
                ]),
              ),
            };
        }
        return null;
      },
      60_000,
      50,
    );
    const signalledAt = Date.now();
    env.stack.killWorker(target.worker, "SIGTERM");
    const held = target.held;
    // Whatever happens below, the next scenario gets both workers back.
    const restarted = env.stack.waitForWorkerRestart(target.worker, target.pid, 60_000);
    let worstRelease = 0;
    let worstRedelivery = 0;
    try {
      // Released by the shutting-down worker, then leased again by a live one (still attempt 1).
      const releasedAt = new Map<string, number>();
      const redeliveredAt = new Map<string, number>();
      await waitFor(
        `the ${held.length} item(s) of worker ${target.worker} to be leased again`,
        () => {
          for (const id of held) {
            const events = env.logs.events({ batchId, itemId: id });
            const released = events.find(
              (e) =>
                e.event === "item.released" && e.fields.reason === "shutdown" && e.fields.released === true,
            );
            if (released && !releasedAt.has(id)) releasedAt.set(id, released.at);
            // The shutdown release gives the attempt back (issue #15 item 8), so the lease that
            // follows it carries the same attempt number: it is told apart by coming after it.
            const again = released && events.find((e) => e.event === "item.leased" && e.at >= released.at);
            if (again && !redeliveredAt.has(id)) redeliveredAt.set(id, again.at);
          }
          return redeliveredAt.size === held.length;
        },
        60_000,
        20,
      );
      const releaseMs = held.map((id) => (releasedAt.get(id) ?? Number.NaN) - signalledAt);
      const redeliveryMs = held.map((id) => redeliveredAt.get(id)! - signalledAt);
      worstRelease = Math.max(...releaseMs);
      worstRedelivery = Math.max(...redeliveryMs);
      say(
        `SIGTERM worker ${target.worker} holding ${held.length} item(s): released within ${worstRelease} ms, leased again within ${worstRedelivery} ms (lease ${env.settings.leaseSeconds} s)`,
      );
      checkNone(
        held
          .filter((id) => !releasedAt.has(id))
          .map(
            (id) => `${id}: no item.released (shutdown) event: ${itemHistory(env, batchId, id, signalledAt)}`,
          ),
        "held item(s) not released by the shutting-down worker (they would wait for lease expiry)",
      );
      await restarted;
      checkNone(
        held
          .filter((id) => redeliveredAt.get(id)! >= target.leaseUntil.get(id)!)
          .map(
            (id) =>
              `${id}: leased again ${redeliveredAt.get(id)! - signalledAt} ms after the signal, not before its lease (until ${target.leaseUntil.get(id)! - signalledAt} ms after the signal) would have expired: ${itemHistory(env, batchId, id, signalledAt)}`,
          ),
        "held item(s) that came back no sooner than a lease-expiry redrive could bring them",
      );
      checkNone(
        held
          .filter((id) => env.logs.events({ batchId, itemId: id }).some((e) => e.event === "item.redriven"))
          .map((id) => `${id}: redriven by the reconciler: ${itemHistory(env, batchId, id, signalledAt)}`),
        "held item(s) redriven by lease expiry instead of released",
      );
    } finally {
      await restarted.catch(() => undefined);
    }
    const batch = await waitFinal(env, batchId, finalDeadlineMs(n, 60_000));
    await assertInvariant(env, batchId, ids);
    const byId = await itemsById(env, batchId);
    checkNone(unexpectedItems(byId, ids, { status: "succeeded" }), "item(s) not succeeded");
    checkNone(
      unexpectedItems(byId, held, { status: "succeeded", attempt: 1 }),
      "item(s) held at SIGTERM not finished with the interrupted attempt given back (attempt 1)",
    );
    return {
      items: n,
      outcome: batch.status,
      recoveryMs: worstRedelivery,
      recovery: "SIGTERM → the worker's items leased again (worst)",
      figures: { held: held.length, worstReleaseMs: worstRelease, leaseMs: env.settings.leaseSeconds * 1000 },
    };
  },
};
