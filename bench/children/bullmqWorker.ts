// A BullMQ worker process for the peer comparison (bench/peerBullmq.ts): consumes the children
// queue (no-op items) and the parents queue (no-op parent that runs once every child is done).
// It runs as its own process so the bench can SIGKILL it mid-batch, as it does Tally's workers.
// Settings come from the environment so both systems run with the same lease and check interval.
import { Worker } from "bullmq";
import IORedis from "ioredis";

const env = (k: string, d?: string) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is required`);
  return v;
};

const connection = new IORedis({
  host: env("BENCH_REDIS_HOST", "127.0.0.1"),
  port: Number(env("BENCH_REDIS_PORT")),
  maxRetriesPerRequest: null,
});
const prefix = env("BENCH_BULLMQ_PREFIX");
const childrenQueue = env("BENCH_BULLMQ_CHILDREN");
const parentsQueue = env("BENCH_BULLMQ_PARENTS");
const concurrency = Number(env("BENCH_BULLMQ_CONCURRENCY", "16"));
const lockDuration = Number(env("BENCH_BULLMQ_LOCK_MS", "30000"));
const stalledInterval = Number(env("BENCH_BULLMQ_STALLED_MS", "30000"));
// Count executions only in the fault run: it adds one redis command per item.
const countExecutions = env("BENCH_BULLMQ_COUNT_EXEC", "0") === "1";
const execKey = `${prefix}:bench:executions`;

const common = { connection, prefix, lockDuration, stalledInterval, maxStalledCount: 1 };
const children = new Worker(
  childrenQueue,
  async (job) => {
    if (countExecutions) await connection.hincrby(execKey, job.id!, 1);
    return null;
  },
  { ...common, concurrency },
);
const parents = new Worker(parentsQueue, async () => null, { ...common, concurrency: 1 });

for (const w of [children, parents])
  w.on("error", (err) => process.stderr.write(`worker error: ${err.message}\n`));
Promise.all([children.waitUntilReady(), parents.waitUntilReady()]).then(() =>
  process.stdout.write("ready\n"),
);

async function shutdown() {
  await Promise.allSettled([children.close(), parents.close()]);
  connection.disconnect();
  process.exit(0);
}
process.on("SIGTERM", () => void shutdown());
process.on("SIGINT", () => void shutdown());
