// The BullMQ side of the peer comparison (bench/peerBullmq.ts): one Flow whose parent waits for N
// no-op children, consumed by W worker processes (bench/children/bullmqWorker.ts) against a private
// redis-server. Optionally the same fault as on Tally: one worker SIGKILLed mid-batch, then a new
// worker started; after a deadline every child is accounted for from Redis itself.
import { join } from "node:path";
import { FlowProducer, Queue } from "bullmq";
import IORedis from "ioredis";
import { waitFor } from "../../local/waitFor";
import { perSecond } from "../support/stats";
import { spawnTs, type TsChild } from "../support/tsChild";

export interface BullmqSettings {
  /** Per worker process. */
  concurrency: number;
  /** BullMQ's lease: an active job whose lock is not renewed for this long is "stalled". */
  lockDurationMs: number;
  /** How often workers look for stalled jobs (Tally's equivalent: the reconciler tick). */
  stalledIntervalMs: number;
}

export interface FanOutRun {
  items: number;
  workers: number;
  /** First submit (flow add) → parent completed; null when the deadline passed first. */
  ms: number | null;
  itemsPerSecond: number | null;
}

/** What became of each item after the deadline (both systems report the same fields). */
export interface FaultAccounting {
  items: number;
  completed: number;
  failed: number;
  /** Submitted but found nowhere in the system. */
  lost: number;
  /** Still waiting/active/pending/running at the deadline (neither completed nor failed). */
  unaccounted: number;
  /** Items whose processing ran more than once (at-least-once after a kill: expected, if idempotent). */
  reExecuted: number;
  /** Items with more than one recorded result (a duplicate result downstream). */
  duplicateResults: number;
  /** Did the batch/parent itself finish? */
  batchFinished: boolean;
  /** Kill → everything finished (or null). */
  recoveryMs: number | null;
  killedWorkerPid: number;
  completedAtKill: number;
  /** Items the killed worker held (running/active) when it was killed, as far as could be seen. */
  inFlightAtKill: number;
}

export interface BullmqFaultRun extends FaultAccounting {
  system: "bullmq";
  ms: number | null;
}

interface Ctx {
  connection: IORedis;
  prefix: string;
  childrenQueue: string;
  parentsQueue: string;
  workerEnv: Record<string, string>;
}

function context(
  redis: { host: string; port: number },
  settings: BullmqSettings,
  countExecutions: boolean,
): Ctx {
  const prefix = `bench${Date.now().toString(36)}`;
  const childrenQueue = "items";
  const parentsQueue = "batches";
  return {
    connection: new IORedis({ host: redis.host, port: redis.port, maxRetriesPerRequest: null }),
    prefix,
    childrenQueue,
    parentsQueue,
    workerEnv: {
      BENCH_REDIS_HOST: redis.host,
      BENCH_REDIS_PORT: String(redis.port),
      BENCH_BULLMQ_PREFIX: prefix,
      BENCH_BULLMQ_CHILDREN: childrenQueue,
      BENCH_BULLMQ_PARENTS: parentsQueue,
      BENCH_BULLMQ_CONCURRENCY: String(settings.concurrency),
      BENCH_BULLMQ_LOCK_MS: String(settings.lockDurationMs),
      BENCH_BULLMQ_STALLED_MS: String(settings.stalledIntervalMs),
      BENCH_BULLMQ_COUNT_EXEC: countExecutions ? "1" : "0",
    },
  };
}

const startWorker = (ctx: Ctx) =>
  spawnTs(join(__dirname, "../children/bullmqWorker.ts"), { env: ctx.workerEnv });

async function addFlow(ctx: Ctx, n: number): Promise<string> {
  const producer = new FlowProducer({ connection: ctx.connection, prefix: ctx.prefix });
  try {
    const tree = await producer.add({
      name: "batch",
      queueName: ctx.parentsQueue,
      data: {},
      children: Array.from({ length: n }, (_, i) => ({
        name: "item",
        queueName: ctx.childrenQueue,
        data: {},
        opts: { jobId: `item-${i}` },
      })),
    });
    return tree.job.id!;
  } finally {
    await producer.close();
  }
}

export async function bullmqFanOut(opts: {
  redis: { host: string; port: number };
  items: number;
  workers: number;
  settings: BullmqSettings;
  deadlineMs: number;
  progress: (m: string) => void;
}): Promise<FanOutRun> {
  const ctx = context(opts.redis, opts.settings, false);
  const workers: TsChild[] = [];
  const parents = new Queue(ctx.parentsQueue, { connection: ctx.connection, prefix: ctx.prefix });
  try {
    workers.push(...(await Promise.all(Array.from({ length: opts.workers }, () => startWorker(ctx)))));
    const t0 = performance.now();
    const parentId = await addFlow(ctx, opts.items);
    let ms: number | null = null;
    try {
      await waitFor(
        "BullMQ parent completed",
        async () => (await parents.getJobState(parentId)) === "completed",
        opts.deadlineMs,
        20,
      );
      ms = performance.now() - t0;
    } catch {
      /* deadline: reported as null */
    }
    opts.progress(
      `BullMQ flow, ${opts.workers} worker(s) × concurrency ${opts.settings.concurrency}: ${opts.items} children ${ms === null ? "did not finish before the deadline" : `in ${Math.round(ms)} ms (${Math.round(perSecond(opts.items, ms))}/s)`}`,
    );
    return {
      items: opts.items,
      workers: opts.workers,
      ms,
      itemsPerSecond: ms === null ? null : perSecond(opts.items, ms),
    };
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
    await parents.close();
    await ctx.connection.flushdb();
    ctx.connection.disconnect();
  }
}

export async function bullmqFault(opts: {
  redis: { host: string; port: number };
  items: number;
  workers: number;
  settings: BullmqSettings;
  /** Kill one worker once this fraction of the children completed. */
  killAfterFraction: number;
  /** After the kill, how long both systems get to finish. */
  deadlineMs: number;
  progress: (m: string) => void;
}): Promise<BullmqFaultRun> {
  const ctx = context(opts.redis, opts.settings, true);
  const workers: TsChild[] = [];
  const children = new Queue(ctx.childrenQueue, { connection: ctx.connection, prefix: ctx.prefix });
  const parents = new Queue(ctx.parentsQueue, { connection: ctx.connection, prefix: ctx.prefix });
  try {
    workers.push(...(await Promise.all(Array.from({ length: opts.workers }, () => startWorker(ctx)))));
    const t0 = performance.now();
    const parentId = await addFlow(ctx, opts.items);
    const killAt = Math.max(1, Math.floor(opts.items * opts.killAfterFraction));
    const completedNow = async () => (await children.getJobCounts("completed")).completed ?? 0;
    const completedAtKill = await waitFor(
      `${killAt} BullMQ children completed`,
      async () => {
        const c = await completedNow();
        return c >= killAt ? c : null;
      },
      opts.deadlineMs,
      5,
    );
    const victim = workers[0]!;
    // Active jobs whose lock the victim holds: its concurrency slots in use (an upper bound when
    // several workers share the queue, since BullMQ does not name the lock holder in the count).
    const activeAtKill = (await children.getJobCounts("active")).active ?? 0;
    victim.kill("SIGKILL");
    const killedAt = performance.now();
    await victim.exited;
    opts.progress(
      `BullMQ: SIGKILLed worker pid ${victim.pid} at ${completedAtKill}/${opts.items} completed; starting a new worker`,
    );
    workers.push(await startWorker(ctx));
    let ms: number | null = null;
    let recoveryMs: number | null = null;
    try {
      await waitFor(
        "BullMQ parent completed after the kill",
        async () => (await parents.getJobState(parentId)) === "completed",
        opts.deadlineMs,
        20,
      );
      ms = performance.now() - t0;
      recoveryMs = performance.now() - killedAt;
    } catch {
      /* deadline passed: account for what is there */
    }
    const counts = await children.getJobCounts(
      "completed",
      "failed",
      "active",
      "wait",
      "waiting",
      "delayed",
      "prioritized",
      "paused",
      "waiting-children",
    );
    const completed = counts.completed ?? 0;
    const failed = counts.failed ?? 0;
    const present = Object.values(counts).reduce((a, b) => a + (b ?? 0), 0);
    const executions = await ctx.connection.hvals(`${ctx.prefix}:bench:executions`);
    const reExecuted = executions.filter((v) => Number(v) > 1).length;
    const parentState = await parents.getJobState(parentId);
    const result: BullmqFaultRun = {
      system: "bullmq",
      items: opts.items,
      completed,
      failed,
      lost: Math.max(0, opts.items - present),
      unaccounted: Math.max(0, present - completed - failed),
      reExecuted,
      // A BullMQ job completes at most once (the lock token guards it); its return value is one.
      duplicateResults: 0,
      batchFinished: parentState === "completed",
      recoveryMs,
      killedWorkerPid: victim.pid,
      completedAtKill,
      inFlightAtKill: activeAtKill,
      ms,
    };
    opts.progress(
      `BullMQ after the kill: completed ${completed}, failed ${failed}, lost ${result.lost}, unaccounted ${result.unaccounted}, re-executed ${reExecuted}, parent ${parentState}`,
    );
    return result;
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
    await children.close();
    await parents.close();
    await ctx.connection.flushdb();
    ctx.connection.disconnect();
  }
}
