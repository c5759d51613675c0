// `npm run bench -- [options]`: the full run by default, `--quick` for the scaled-down one; every
// size can be chosen. Unknown or malformed options are refused with the usage text.
import { type PhaseName, phaseNames } from "../report";
import type { DeliveryWindow } from "./deliveryWindow";

export interface BenchOptions {
  quick: boolean;
  /** Submission sizes (items). */
  sizes: number[];
  /** End-to-end worker counts. */
  workers: number[];
  e2eItems: number;
  kills: number;
  finalizeBatches: number;
  itemSleepMs: number;
  backlogs: number[];
  window: DeliveryWindow;
  peerItems: number;
  peerWorkers: number;
  bullmqConcurrency: number;
  peerDeadlineMs: number;
  /** Lease and reconciler tick of the stack used by recovery, peer and scaling (and end to end). */
  leaseSeconds: number;
  tickSeconds: number;
  costItems: number;
  phases: PhaseName[];
  /** Raw writes and publishes that warm the emulators up before the submission phase (not counted). */
  warmupItems: number;
  /** The submission phase's heap-capped coordinator run. */
  memoryExperiment: boolean;
  outDir: string;
}

export const benchUsage = `Usage: npm run bench -- [options]

  --quick                 scaled-down run (under 3 minutes on an idle 2-core machine)
  --sizes N,N             submission sizes (default 100000,1000000; quick 2000,20000)
  --workers N,N           end-to-end worker counts (default 1,2,4)
  --e2e-items N           items per end-to-end run (default 2000; quick 100)
  --kills N               SIGKILL trials (default 20; quick 5)
  --finalize-batches N    batches for the finalization latency (default 30; quick 8)
  --backlogs N,N          scaling backlogs (default 1000,100000; quick 1000,10000)
  --peer-items N          items in the BullMQ comparison (default 2000; quick 150)
  --lease N               lease seconds for recovery/peer/scaling stacks (default 3)
  --tick N                reconciler tick seconds (default 1)
  --only a,b              run only these phases (${phaseNames.join(", ")})
  --skip a,b              skip these phases
  --out DIR               report folder (default bench/results)
  --help                  this text

The 1,000,000-item submission takes about half an hour on a 2-core machine (the raw baseline writes
the same million documents twice more); choose --sizes to shorten it.`;

export class BenchUsageError extends Error {}

const ints = (flag: string, v: string | undefined): number[] => {
  const parts = (v ?? "").split(",").map((s) => Number(s.trim()));
  if (!v || parts.some((n) => !Number.isInteger(n) || n < 1))
    throw new BenchUsageError(`${flag} needs positive integers separated by commas (got ${v ?? "nothing"})`);
  return parts;
};
const int = (flag: string, v: string | undefined) => {
  const [n] = ints(flag, v);
  if (v?.includes(",")) throw new BenchUsageError(`${flag} takes one integer (got ${v})`);
  return n!;
};
const phases = (flag: string, v: string | undefined): PhaseName[] => {
  const list = (v ?? "").split(",").map((s) => s.trim()) as PhaseName[];
  const bad = list.filter((p) => !phaseNames.includes(p));
  if (!v || bad.length > 0)
    throw new BenchUsageError(
      `${flag}: unknown phase(s) ${bad.join(", ") || "(none given)"}; phases: ${phaseNames.join(", ")}`,
    );
  return list;
};

/** Returns null for --help. */
export function parseBenchArgs(argv: string[]): BenchOptions | null {
  const quick = argv.includes("--quick");
  const o: BenchOptions = quick
    ? {
        quick,
        sizes: [2_000, 20_000],
        warmupItems: 10_000,
        memoryExperiment: false, // keeps --quick under 3 minutes
        workers: [1, 2, 4],
        e2eItems: 100,
        kills: 5,
        finalizeBatches: 8,
        itemSleepMs: 600,
        backlogs: [1_000, 10_000],
        window: { skip: 20, seconds: 6 }, // four windows: keeps --quick under 3 minutes
        peerItems: 150,
        peerWorkers: 2,
        bullmqConcurrency: 16,
        peerDeadlineMs: 60_000,
        leaseSeconds: 3,
        tickSeconds: 1,
        costItems: 1_000_000,
        phases: [...phaseNames],
        // A quick run never overwrites the full run's report, which the docs quote.
        outDir: "bench/results/quick",
      }
    : {
        quick,
        sizes: [100_000, 1_000_000],
        warmupItems: 50_000,
        memoryExperiment: true,
        workers: [1, 2, 4],
        e2eItems: 2_000,
        kills: 20,
        finalizeBatches: 30,
        itemSleepMs: 1_000,
        backlogs: [1_000, 100_000],
        window: { skip: 50, seconds: 60 },
        peerItems: 2_000,
        peerWorkers: 2,
        bullmqConcurrency: 16,
        peerDeadlineMs: 180_000,
        leaseSeconds: 3,
        tickSeconds: 1,
        costItems: 1_000_000,
        phases: [...phaseNames],
        outDir: "bench/results",
      };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const next = () => argv[++i];
    switch (flag) {
      case "--quick":
        break;
      case "--help":
      case "-h":
        return null;
      case "--sizes":
        o.sizes = ints(flag, next());
        break;
      case "--workers":
        o.workers = ints(flag, next());
        break;
      case "--e2e-items":
        o.e2eItems = int(flag, next());
        break;
      case "--kills":
        o.kills = int(flag, next());
        break;
      case "--finalize-batches":
        o.finalizeBatches = int(flag, next());
        break;
      case "--backlogs":
        o.backlogs = ints(flag, next());
        break;
      case "--peer-items":
        o.peerItems = int(flag, next());
        break;
      case "--lease":
        o.leaseSeconds = int(flag, next());
        break;
      case "--tick":
        o.tickSeconds = int(flag, next());
        break;
      case "--only":
        o.phases = phases(flag, next());
        break;
      case "--skip": {
        const skip = phases(flag, next());
        o.phases = o.phases.filter((p) => !skip.includes(p));
        break;
      }
      case "--out": {
        const v = next();
        if (!v) throw new BenchUsageError("--out needs a folder");
        o.outDir = v;
        break;
      }
      default:
        throw new BenchUsageError(`unknown option ${flag}`);
    }
  }
  const smallest = Math.min(...o.backlogs);
  if (smallest <= o.window.skip * 2)
    throw new BenchUsageError(`--backlogs: the smallest backlog must exceed ${o.window.skip * 2} items`);
  return o;
}
