// F9: worker processes are SIGKILLed mid-item, several times during one batch. A killed process
// releases nothing: its items stay `running` under a lease nobody renews. The reconciler finds each
// lapsed lease and redrives the item. Asserted causally, not as a timing: no reconcile tick that
// started after a held item's lease expired ended without that item back in play (redriven, or
// leased by another worker) — the first sweep that could redrive it did. The time from the SIGKILL
// to the ledger showing the items back is reported (typically lease + one tick; the restart of the
// killed worker runs beside it and is not part of it); meanwhile no item is lost, and at the end
// every item succeeded exactly once.
import { checkNoItemLost } from "../../../local/invariant";
import { waitFor } from "../../../local/waitFor";
import { finalBatchStatuses, leaseOwnerPid } from "../support/chaosApi";
import {
  assertInvariant,
  check,
  checkNone,
  demoItems,
  finalDeadlineMs,
  itemHistory,
  type Scenario,
  ScenarioAssertionError,
  unexpectedItems,
  waitDone,
  waitFinal,
} from "./scenario";

/** Slack over leaseSeconds + one tick in the deadline of the wait (a hang guard, not the assertion). */
export const redriveSlackMs = 8_000;

/** Every `baitEvery`-th item sleeps `baitSleepMs` (20 items of 2,000: about 15 s more in all). */
const baitEvery = 100;
const baitSleepMs = 1_500;
const isBait = (id: string) => Number(id.slice("k-".length)) % baitEvery === baitEvery / 2;

export const workerKilled: Scenario = {
  id: "F9-worker-sigkill",
  title: "worker SIGKILLed mid-item, 4 times in one batch (F9)",
  stack: "shared",
  async run(env, scale, say) {
    const n = scale.items;
    const batchId = env.batchId("sigkill");
    // Small sleeps, plus a long one every `baitEvery` items: an item of 20–60 ms can finish between
    // the look-up that finds its worker and the SIGKILL, a bait item (freshly leased) cannot.
    const items = demoItems("k-", n, (i) => ({
      value: i,
      sleepMs: i % baitEvery === baitEvery / 2 ? baitSleepMs : 20 + (i % 40),
    }));
    const ids = items.map((i) => i.id);
    await env.api.submit({ id: batchId, pipeline: "demo", items });

    const { leaseSeconds, tickSeconds } = env.settings;
    // lease + one tick, where a tick is the interval plus the reconcile call itself (on a loaded
    // machine a call can take seconds; the longest one during the wait counts).
    const baseBoundMs = (leaseSeconds + tickSeconds) * 1000 + redriveSlackMs;
    const killAt = [0.15, 0.35, 0.55, 0.75];
    const redriveMs: number[] = [];
    const heldByKilled = new Set<string>();
    let kills = 0;
    const leaseUntil = new Map<string, number>();
    for (const [k, fraction] of killAt.entries()) {
      const progress = await waitDone(env, batchId, Math.floor(n * fraction), finalDeadlineMs(n));
      if (finalBatchStatuses.includes(progress.status)) break; // a small batch can finish first
      // Kill a worker that holds items right now; the items still running under its lease after
      // the kill are the ones it died holding. Try again if a kill landed between items.
      let landed: {
        worker: number;
        pid: number;
        held: string[];
        killedAt: number;
        restarted: Promise<number>;
      } | null = null;
      let finished = false;
      for (let tries = 0; !landed && !finished && tries < 5; tries++) {
        const lookingSince = Date.now();
        const target = await waitFor(
          "a worker holding items mid-step",
          async () => {
            if (finalBatchStatuses.includes((await env.api.getBatch(batchId)).status))
              return { final: true } as const;
            const running = await env.api.allItems(batchId, { status: "running" });
            const pids = env.stack.pids.workers;
            // First choice: a bait item whose lease is young, so the kill lands mid-sleep.
            const now = Date.now();
            for (const it of running) {
              const p = leaseOwnerPid(it);
              const i = pids.indexOf(p ?? -1);
              const leasedAgoMs = it.lease?.until
                ? now - (Date.parse(it.lease.until) - leaseSeconds * 1000)
                : Infinity;
              if (
                i >= 0 &&
                p !== null &&
                env.stack.workers[i]!.live &&
                isBait(it.id) &&
                leasedAgoMs < baitSleepMs / 2
              )
                return { worker: i + 1, pid: p, final: false };
            }
            // Otherwise, after a while without one, any worker holding items.
            if (now - lookingSince < baitSleepMs * 4) return null;
            const order = pids.map((_, i) => ((k + tries) % 2 === 0 ? i : pids.length - 1 - i));
            for (const i of order) {
              const p = pids[i];
              if (p === null || p === undefined || !env.stack.workers[i]!.live) continue;
              if (running.some((it) => leaseOwnerPid(it) === p))
                return { worker: i + 1, pid: p, final: false };
            }
            return null;
          },
          60_000,
          20,
        );
        if (target.final) {
          finished = true;
          break;
        }
        env.stack.killWorker(target.worker, "SIGKILL");
        const killedAt = Date.now();
        kills++;
        const heldItems = (await env.api.allItems(batchId, { status: "running" })).filter(
          (it) => leaseOwnerPid(it) === target.pid,
        );
        const held = heldItems.map((it) => it.id);
        // When each lease runs out (nobody renews it now); no `until` read proves nothing: -∞ makes
        // every later tick count as one that should have redriven it.
        for (const it of heldItems)
          leaseUntil.set(it.id, it.lease?.until ? Date.parse(it.lease.until) : Number.NEGATIVE_INFINITY);
        // The restart runs beside the redrive measurement below, which must not wait for it: the
        // dead worker's items are back in play through the reconciler and the live worker alone.
        const restarted = env.stack
          .waitForWorkerRestart(target.worker, target.pid, 60_000)
          .then(() => Date.now());
        restarted.catch(() => {}); // awaited below; a failure is reported there
        if (held.length > 0) landed = { worker: target.worker, pid: target.pid, held, killedAt, restarted };
        else {
          say(`a SIGKILL of worker ${target.worker} landed between items; killing again`);
          await restarted;
        }
      }
      if (finished) break;
      check(landed, `5 SIGKILLs in a row landed between items (kill ${k + 1})`);
      const { worker, pid, held, killedAt, restarted } = landed;
      for (const id of held) heldByKilled.add(id);

      // Back in play, by the ledger: each held item pending again, leased by another worker, or
      // already finished by one — no longer running under the dead process's lease. Measured from
      // the SIGKILL to the poll that first sees the last of them back, while the restart goes on.
      const heldSet = new Set(held);
      const stillHeld = async () =>
        (await env.api.allItems(batchId, { status: "running" })).filter(
          (it) => heldSet.has(it.id) && leaseOwnerPid(it) === pid,
        );
      const backAt = await waitFor(
        `the ${held.length} item(s) worker ${worker} (pid ${pid}) held to be redriven`,
        async () => ((await stillHeld()).length === 0 ? Date.now() : null),
        baseBoundMs + 60_000,
        100,
      ).catch(async (err: Error) => {
        const stuck = await stillHeld().catch(() => []);
        throw new ScenarioAssertionError(
          `${err.message}\n  still running under the dead lease: ${stuck
            .map(
              (it) =>
                `${it.id} attempt ${it.attempt} lease ${it.lease?.owner} until ${it.lease?.until}: ${itemHistory(env, batchId, it.id, killedAt)}`,
            )
            .join("\n    ")}\n  supervisor: ${env
            .recentOutput()
            .filter((l) => l.startsWith("[supervisor]"))
            .slice(-6)
            .join("\n    ")}\n  recent reconcile ticks:\n    ${env.logs
            .recentTicks()
            .map((e) => `${new Date(e.at).toISOString()} ${e.message}`)
            .join("\n    ")}`,
        );
      });
      const took = backAt - killedAt;
      const restartMs = (await restarted) - killedAt;
      redriveMs.push(took);
      say(
        `kill ${k + 1}: SIGKILL worker ${worker} (pid ${pid}) holding ${held.length} item(s); back in play after ${took} ms (the worker was restarted after ${restartMs} ms)`,
      );
      // The first sweep that could redrive each item did: no tick that began after the item's lease
      // expired ended before the item was back (a tick's start is its summary's time minus its
      // duration; the expired-lease sweep looks for leases that ran out before the tick began).
      const ticks = env.logs
        .recentTicks()
        .map((t) => ({ start: t.at - (Number(t.fields.durationMs) || 0), end: t.at }));
      checkNone(
        held.flatMap((id) => {
          const until = leaseUntil.get(id)!;
          const back =
            env.logs
              .events({ batchId, itemId: id })
              .find((e) => e.at >= killedAt && (e.event === "item.redriven" || e.event === "item.leased"))
              ?.at ?? backAt;
          return ticks
            .filter((t) => t.start > until && t.end < back)
            .map(
              (t) =>
                `${id}: a tick began ${t.start - until} ms after its lease expired and ended ${back - t.end} ms before the item was back: ${itemHistory(env, batchId, id, killedAt)}`,
            );
        }),
        `item(s) of SIGKILLed worker ${worker} left running by a sweep that should have redriven them`,
      );
      if (k === 0) {
        // Before finalization: no item is lost — each is listed once, pending, running or terminal.
        const lost = await checkNoItemLost(env.stack.urls.coordinator, batchId, ids);
        checkNone(lost, "item(s) lost while the batch ran");
      }
    }

    check(
      redriveMs.length >= 2,
      `only ${redriveMs.length} SIGKILL(s) landed mid-item before the batch finished; expected at least 2 (use more items)`,
    );
    const batch = await waitFinal(env, batchId, finalDeadlineMs(n));
    await assertInvariant(env, batchId, ids);
    const all = await env.api.allItems(batchId);
    const byId = new Map(all.map((i) => [i.id, i]));
    checkNone(unexpectedItems(byId, ids, { status: "succeeded" }), "item(s) not succeeded after the kills");
    // Every item a killed worker died holding was run again (its first attempt never finished).
    checkNone(
      unexpectedItems(byId, [...heldByKilled], { status: "succeeded", attempt: (a) => a >= 2 }),
      "item(s) held by a killed worker that were not run again",
    );
    const redriven = all.filter((i) => i.attempt > 1).length;
    return {
      items: n,
      outcome: batch.status,
      recoveryMs: Math.max(...redriveMs),
      recovery: `SIGKILL → the dead worker's items back in play (worst of ${redriveMs.length})`,
      figures: {
        killsMidItem: redriveMs.length,
        signals: kills,
        itemsHeldByKilled: heldByKilled.size,
        itemsRedriven: redriven,
      },
    };
  },
};
