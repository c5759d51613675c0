// F3: finalization must happen exactly once, from the strongly consistent ledger, however many
// finalizers race. On the faults stack the workers skip the event-driven finalization
// (TALLY_FAULT_SKIP_FINALIZE_RATE=1: as if each died right after its last completion write), so
// every batch is left to the reconcilers' safety net — and two reconciler processes tick at once
// while the scheduler loop ticks too, and every call is retried Scheduler-style (the first attempt
// gives up at its deadline while the server keeps working, and the retry arrives on top of it).
// Each batch: one `batch.finalized`, one export marker, the invariant; each call that does not give
// up at its deadline answers 200 with a complete summary and no failed action.

import { waitFor } from "../../../local/waitFor";
import { finalBatchStatuses } from "../support/chaosApi";
import {
  assertInvariant,
  check,
  checkNone,
  clamp,
  demoItems,
  epoch,
  eventuallyNone,
  exportMarkers,
  finalDeadlineMs,
  outcomeSummary,
  type Scenario,
  ScenarioAssertionError,
} from "./scenario";

/** The counters each sweep reports in a reconcile summary (functions/handlers/reconciler/reconcileTick.ts). */
const sweepCounters: Record<string, string[]> = {
  expiredLeases: ["found", "redriven", "exhausted", "skipped"],
  staleSubmissions: ["found", "resumed", "failed", "published"],
  stalePending: ["found", "republished"],
  dependencies: ["blocked", "started", "failed", "waiting", "published"],
  finalizations: ["running", "staleFinalizing", "itemsSwept"],
};

/** What is wrong with a reconcile answer's summary: missing or mistyped fields, failed actions. */
function summaryProblems(body: unknown): string[] {
  if (!body || typeof body !== "object" || Array.isArray(body)) return ["the body is not a JSON object"];
  const b = body as Record<string, unknown>;
  const count = (v: unknown) => typeof v === "number" && Number.isInteger(v) && v >= 0;
  const problems: string[] = [];
  for (const [sweep, counters] of Object.entries(sweepCounters)) {
    const s = b[sweep] as Record<string, unknown> | undefined;
    if (!s || typeof s !== "object") problems.push(`${sweep} is missing`);
    else
      for (const c of counters) if (!count(s[c])) problems.push(`${sweep}.${c} is ${JSON.stringify(s[c])}`);
  }
  const ids = b.finalizedBatchIds;
  if (!count(b.finalized)) problems.push(`finalized is ${JSON.stringify(b.finalized)}`);
  if (!Array.isArray(ids) || !ids.every((id) => typeof id === "string"))
    problems.push(`finalizedBatchIds is ${JSON.stringify(ids)}`);
  else if (count(b.finalized) && ids.length !== Math.min(b.finalized as number, 50))
    problems.push(`finalized is ${b.finalized} but finalizedBatchIds lists ${ids.length}`);
  if (typeof b.moreWork !== "boolean") problems.push(`moreWork is ${JSON.stringify(b.moreWork)}`);
  if (b.errors !== 0) problems.push(`errors is ${JSON.stringify(b.errors)}, expected 0`);
  if (!Array.isArray(b.errorSamples) || b.errorSamples.length > 0)
    problems.push(`errorSamples is ${JSON.stringify(b.errorSamples)}`);
  if (!count(b.durationMs)) problems.push(`durationMs is ${JSON.stringify(b.durationMs)}`);
  return problems;
}

export const concurrentReconcilers: Scenario = {
  id: "F3-concurrent-reconcilers",
  title: "two reconcilers ticking at once plus Scheduler retries: one finalization and one export (F3)",
  stack: "faults",
  async run(env, scale, say) {
    check(env.reconcileUrls.length >= 2, "this scenario needs the faults stack's second reconciler");
    const batchCount = clamp(scale.items / 300, 6, 60);
    const perBatch = 30;
    const batches = Array.from({ length: batchCount }, (_, b) => ({
      id: env.batchId(`reconcilers-${b + 1}`),
      items: demoItems(`c${b + 1}-`, perBatch, (i) => ({ value: i, sleepMs: i % 5 })),
    }));
    for (const b of batches)
      await env.api.submit({ id: b.id, pipeline: "demo", failureThreshold: 0.1, items: b.items });

    let calls = 0;
    let answered = 0;
    let gaveUp = 0;
    const finalizedByCalls = new Map<string, number>();
    /**
     * One reconcile call; false when it gave up at its deadline. Any answer must be a 200 with a
     * complete summary and no failed action: a 500 (or a body that is not a summary) is not
     * "answered", it fails the scenario.
     */
    const tick = async (url: string, deadlineMs: number | null): Promise<boolean> => {
      calls++;
      let status: number;
      let text: string;
      try {
        const res = await fetch(url, {
          method: "POST",
          headers: { "content-type": "application/json", "user-agent": "Google-Cloud-Scheduler (chaos)" },
          body: "{}",
          signal: AbortSignal.timeout(deadlineMs ?? 120_000),
        });
        status = res.status;
        text = await res.text();
      } catch (err) {
        if ((err as Error).name !== "TimeoutError") throw err;
        gaveUp++;
        return false;
      }
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        // reported below as not a summary
      }
      const problems = status === 200 ? summaryProblems(body) : [`status ${status}, expected 200`];
      if (problems.length > 0)
        throw new ScenarioAssertionError(
          `POST ${url} (call ${calls}): ${problems.join("; ")}\n  body: ${text.slice(0, 800)}`,
        );
      answered++;
      for (const id of (body as { finalizedBatchIds: string[] }).finalizedBatchIds)
        finalizedByCalls.set(id, (finalizedByCalls.get(id) ?? 0) + 1);
      return true;
    };

    // The reconcilers pile on once the batches near their end, so the finalizations happen under
    // the overlapping calls (and the bulk of the items is not slowed by them).
    const total = batchCount * perBatch;
    await waitFor(
      "half of the items to be terminal",
      async () => {
        let done = 0;
        for (const b of batches) {
          const c = (await env.api.getBatch(b.id)).counts;
          done += c ? c.succeeded + c.failed : 0;
        }
        return done >= total * 0.5;
      },
      finalDeadlineMs(total),
      250,
    );

    const pending = new Set(batches.map((b) => b.id));
    const deadline = Date.now() + finalDeadlineMs(batchCount * perBatch);
    const finishedAt = new Map<string, number>();
    while (pending.size > 0) {
      if (Date.now() > deadline)
        throw new ScenarioAssertionError(
          `batches not final within the deadline: ${[...pending].join(", ")}\n  recent:\n    ${env.recentOutput().slice(-15).join("\n    ")}`,
        );
      // One round: on each reconciler at once, an attempt that gives up at its deadline (the server
      // keeps working) and the Scheduler's immediate retry on top of it.
      await Promise.all(
        env.reconcileUrls.map(async (url) => {
          if (!(await tick(url, 50 + Math.floor(Math.random() * 250)))) await tick(url, null);
        }),
      );
      for (const id of [...pending]) {
        const b = await env.api.getBatch(id);
        if (finalBatchStatuses.includes(b.status)) {
          pending.delete(id);
          finishedAt.set(id, epoch(b.finishedAt) ?? Date.now());
        }
      }
    }

    const statuses: string[] = [];
    const failedByKind: Record<string, number> = {};
    const latencies: number[] = [];
    const problems: string[] = [];
    for (const b of batches) {
      const report = await assertInvariant(
        env,
        b.id,
        b.items.map((i) => i.id),
      );
      statuses.push(report.status);
      for (const [k, v] of Object.entries(report.failedByKind)) failedByKind[k] = (failedByKind[k] ?? 0) + v;
      const markers = await exportMarkers(env, b.id);
      if (markers.length !== 1) problems.push(`${b.id}: ${markers.length} export marker(s); expected 1`);
      if ((finalizedByCalls.get(b.id) ?? 0) > 1)
        problems.push(`${b.id}: reported finalized by ${finalizedByCalls.get(b.id)} reconcile calls`);
      // From its last item becoming terminal to final: the safety net's latency.
      const items = await env.api.allItems(b.id);
      const lastItem = Math.max(...items.map((i) => epoch(i.finishedAt) ?? 0));
      latencies.push((finishedAt.get(b.id) ?? lastItem) - lastItem);
    }
    checkNone(problems, "batch(es) not finalized exactly once");
    await eventuallyNone(
      () =>
        batches.flatMap((b) => {
          const finalized = env.logs.events({ batchId: b.id, event: "batch.finalized" });
          if (finalized.length !== 1)
            return [
              `${b.id}: batch.finalized ×${finalized.length} (by ${finalized.map((e) => e.source).join(", ")}); expected 1`,
            ];
          if (finalized[0]!.source.startsWith("worker"))
            return [`${b.id}: finalized by ${finalized[0]!.source}, but the workers skip finalization here`];
          return [];
        }),
      "batch(es) not finalized exactly once by a reconciler",
    );
    say(
      `${batchCount} batches finalized once each by the safety net; ${calls} reconcile calls (${gaveUp} gave up at their deadline and were retried, ${answered} answered); failed items by kind ${JSON.stringify(failedByKind)}`,
    );
    return {
      items: batchCount * perBatch,
      outcome: outcomeSummary(statuses),
      recoveryMs: Math.max(...latencies),
      recovery: "last item terminal → batch final, via reconcilers only (worst)",
      figures: { batches: batchCount, reconcileCalls: calls, gaveUpAndRetried: gaveUp },
    };
  },
};
