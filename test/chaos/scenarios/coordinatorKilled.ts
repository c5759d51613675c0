// F4, F9: the coordinator is SIGKILLed in the middle of an NDJSON submission — some chunks of items
// stored, some doorbells published, the rest not. The client's request fails; it re-sends the same
// stream (same batch id, same content) once the coordinator is back: the stored items are
// recognised, the rest appended, every doorbell published, and every item is processed exactly once.
import http from "node:http";
import { waitFor } from "../../../local/waitFor";
import type { SubmitItem } from "../support/chaosApi";
import type { ChaosStack } from "../support/chaosStack";
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
  type ScenarioResult,
  unexpectedItems,
  waitFinal,
} from "./scenario";

export const coordinatorKilled: Scenario = {
  id: "F4-coordinator-killed",
  title: "coordinator SIGKILLed mid NDJSON submission, client re-sends (F4, F9)",
  stack: "shared",
  async run(env, scale, say) {
    const url = `${env.stack.urls.coordinator}/v1/batches`;
    // The kill must land while the coordinator is writing chunks (after the first is stored, before
    // the submission completes). Under the Functions Framework the coordinator sees the body only
    // once it has all arrived, so the window is its processing time; a batch that completes before
    // the kill lands is given up and a twice larger one tried.
    let n = clamp(scale.items / 4, 600, 20000);
    for (let attempt = 1; ; attempt++, n *= 2) {
      // Below ~4,000 items every chunk is stored in one concurrent wave (8 chunks of 500 in flight), so
      // the window between "first item visible" and the answer is a few milliseconds; from 4,800 on it
      // spans several waves.
      check(attempt <= 5, "five submissions in a row completed before the coordinator could be killed");
      const batchId = env.batchId("coordkill");
      const items = demoItems("s-", n, (i) => ({ value: i, sleepMs: i % 5 }));
      const lines = [
        JSON.stringify({ id: batchId, pipeline: "demo", failureThreshold: 0 }),
        ...items.map((i) => JSON.stringify(i)),
      ];
      const first = sendNdjson(url, lines);
      let answered = false;
      void first.then(() => {
        answered = true;
      });
      // Items are visible as soon as a chunk is stored (the batch's `received` only moves with its
      // once-a-second cursor write, so it is not what to watch).
      const stored = await waitFor(
        `the coordinator to store part of batch ${batchId}`,
        // One cheap read per look: GET /v1/batches/{id} counts every item by state (on the emulator
        // a scan of the batch per count, seconds at 10k items), so a look through it lasted longer
        // than the whole submission and the kill always came too late.
        async () => {
          if (answered) return { landed: false } as const;
          const some = await env.api.listItems(batchId, { limit: 1 }).catch(() => null);
          return some && some.items.length > 0 ? ({ landed: true } as const) : null;
        },
        120_000,
        10,
      );
      if (!stored.landed) {
        say(
          `batch ${batchId} (${n} items) was fully submitted before the kill could land; cancelled, trying ${n * 2} items`,
        );
        await env.api.cancel(batchId);
        await waitFinal(env, batchId, finalDeadlineMs(n));
        continue;
      }
      const pid = env.stack.coordinator.pid!;
      env.stack.coordinator.kill("SIGKILL");
      const killedAt = Date.now();
      const firstOutcome = await first;
      // Whatever the first request's fate, the stack gets its coordinator back before anything else
      // (the scenarios after this one share it).
      await env.stack.coordinator.waitForRestart(pid, 60_000);
      if (firstOutcome.kind === "response") {
        // The answer was on its way before the signal landed (the last chunk was stored between
        // our look and the kill): the kill hit an idle coordinator. Not the interleaving under
        // test; give this batch up like one that completed before the look.
        check(
          firstOutcome.status === 201,
          `the first submission answered ${JSON.stringify(firstOutcome).slice(0, 500)}; expected a failure or, had it completed before the kill, 201`,
        );
        say(
          `batch ${batchId} (${n} items) answered 201 before the kill landed; cancelled, trying ${n * 2} items`,
        );
        await env.api.cancel(batchId);
        await waitFinal(env, batchId, finalDeadlineMs(n));
        continue;
      }
      // What the killed coordinator left (nothing changes it until the client re-sends).
      const atKill = await env.api.getBatch(batchId);
      const storedAtKill = (await env.api.allItems(batchId)).length;
      say(
        `SIGKILL coordinator (pid ${pid}) with ${storedAtKill} of ${n} items stored, ${atKill.progress.cursor} published (cursor)`,
      );

      // The client re-sends the whole stream, unchanged.
      const second = await sendNdjson(url, lines);
      const acceptedAt = Date.now();
      check(
        second.kind === "response" && (second.status === 200 || second.status === 201),
        `the re-sent stream answered ${JSON.stringify(second).slice(0, 800)}; expected 200 (or 201)`,
      );
      return finish(env, batchId, items, {
        recoveryMs: acceptedAt - killedAt,
        storedAtKill,
        publishedAtKill: atKill.progress.cursor,
      });
    }
  },
};

async function finish(
  env: ChaosStack,
  batchId: string,
  items: SubmitItem[],
  kill: { recoveryMs: number; storedAtKill: number; publishedAtKill: number },
): Promise<ScenarioResult> {
  const n = items.length;
  const ids = items.map((i) => i.id);
  const batch = await waitFinal(env, batchId, finalDeadlineMs(n));
  await assertInvariant(env, batchId, ids);
  const byId = await itemsById(env, batchId);
  checkNone(
    unexpectedItems(byId, ids, { status: "succeeded", attempt: 1 }),
    "item(s) not processed exactly once",
  );
  await eventuallyNone(() => {
    const succeeded = env.logs.countByItem(batchId, "item.succeeded");
    return ids
      .filter((id) => succeeded.get(id) !== 1)
      .map((id) => `${id}: item.succeeded ×${succeeded.get(id) ?? 0}`);
  }, "item(s) not executed exactly once");
  return {
    items: n,
    outcome: batch.status,
    recoveryMs: kill.recoveryMs,
    recovery: "coordinator SIGKILL → re-sent stream accepted",
    figures: { storedAtKill: kill.storedAtKill, publishedAtKill: kill.publishedAtKill },
  };
}

type StreamOutcome = { kind: "response"; status: number; body: string } | { kind: "error"; message: string };

/** An NDJSON POST, streamed: the header line, then one item per line. */
function sendNdjson(url: string, lines: string[]): Promise<StreamOutcome> {
  return new Promise<StreamOutcome>((resolve) => {
    const req = http.request(url, {
      method: "POST",
      headers: { "content-type": "application/x-ndjson", "transfer-encoding": "chunked" },
    });
    req.on("response", (res) => {
      const parts: Buffer[] = [];
      res.on("data", (c: Buffer) => parts.push(c));
      res.on("end", () =>
        resolve({
          kind: "response",
          status: res.statusCode ?? 0,
          body: Buffer.concat(parts).toString("utf8"),
        }),
      );
      res.on("error", (err) => resolve({ kind: "error", message: err.message }));
    });
    req.on("error", (err) => resolve({ kind: "error", message: err.message }));
    for (let i = 0; i < lines.length; i += 500) req.write(`${lines.slice(i, i + 500).join("\n")}\n`);
    req.end();
  });
}
