// `--watch`: polls the batch until it is final, drawing progress (a live bar on a terminal, plain
// lines otherwise). A coordinator that stops answering mid-watch (restarted by the local stack)
// is waited for, up to a minute, before giving up.
import { setTimeout as sleep } from "node:timers/promises";
import { UnreachableError } from "./apiClient";
import { type BatchView, isFinal } from "./batchView";
import { println } from "./cliIo";
import type { CoordinatorApi } from "./coordinatorApi";
import { finishedCount, LiveProgress, type ProgressStream, RateMeter } from "./progressBar";

export interface WatchIo {
  out: ProgressStream;
  err: { write(chunk: string): unknown };
  env: NodeJS.ProcessEnv;
}

const unreachableGraceMs = 60_000;

export async function watchBatch(
  api: CoordinatorApi,
  batchId: string,
  intervalMs: number,
  io: WatchIo,
): Promise<BatchView> {
  const progress = new LiveProgress(io.out, { env: io.env });
  const meter = new RateMeter();
  const watchStart = Date.now();
  let unreachableSince: number | null = null;
  let seen = false;
  for (;;) {
    let view: BatchView;
    try {
      view = await api.getBatch(batchId);
      unreachableSince = null;
      seen = true;
    } catch (err) {
      // Unreachable from the start: not a restart, just nothing running.
      if (!(err instanceof UnreachableError) || !seen) throw err;
      const now = Date.now();
      if (unreachableSince === null) {
        unreachableSince = now;
        progress.finish();
        println(io.err, `${err.message}; retrying for up to ${unreachableGraceMs / 1000} s`);
      } else if (now - unreachableSince > unreachableGraceMs) throw err;
      await sleep(intervalMs);
      continue;
    }
    const now = Date.now();
    const done = finishedCount(view.counts);
    meter.add(now, done);
    const total = view.total;
    const known =
      total ?? view.counts.succeeded + view.counts.failed + view.counts.running + view.counts.pending;
    progress.update({
      label: view.batchId,
      status: view.status,
      total,
      counts: view.counts,
      ratePerSecond: meter.rate(),
      etaSeconds: total === null ? null : meter.etaSeconds(known - done),
      elapsedMs: (view.finishedAt ?? now) - (view.createdAt ?? watchStart),
    });
    if (isFinal(view)) {
      progress.finish();
      return view;
    }
    await sleep(intervalMs);
  }
}
