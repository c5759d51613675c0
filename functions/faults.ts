// Fault injection for the chaos suite (DESIGN.md §8), switched on by environment variables read at
// start. Refused outright in a deployment: with NODE_ENV=production, or on Cloud Run (K_SERVICE is
// set there), any TALLY_FAULT_* variable makes the handler fail to start rather than run faulty.
//
//   TALLY_FAULT_COMPLETE_FAIL_RATE  0..1  fraction of completion writes (result + succeeded) that
//                                         fail before reaching the ledger (F1)
//   TALLY_FAULT_COMPLETE_FAIL_AFTER_COMMIT_RATE
//                                   0..1  fraction of completion writes that commit and then
//                                         fail to the caller, as when the commit's answer is lost
//                                         (F1 after the commit)
//   TALLY_FAULT_SKIP_FINALIZE_RATE  0..1  fraction of "anything left?" checks that answer "yes"
//                                         without reading: this process never starts the
//                                         event-driven finalization, as when a worker dies right
//                                         after its last completion write (F3, F5). Set it for the
//                                         workers only; the reconciler's safety net must finalize.
//   TALLY_FAULT_COORDINATOR_KILL_TOKEN  path  a one-shot kill token (see coordinatorKillSwitchFromEnv):
//                                         while the file exists, the coordinator SIGKILLs itself
//                                         right after storing the named chunk of the named batch
//                                         (F4), deleting the file first so its restart does not
//                                         die again on the client's re-send.

import { readFileSync, unlinkSync } from "node:fs";
import { isAbsolute } from "node:path";

export interface Faults {
  /** Fraction of completion writes (result + succeeded) that fail before reaching the ledger (F1). */
  failCompletionRate: number;
  /** Fraction of completion writes that commit and then throw to the caller (F1 after the commit). */
  failAfterCompletionRate: number;
  /** Fraction of "anything left?" checks that answer "yes" without reading (F3, F5). */
  skipFinalizeRate: number;
}

export const noFaults: Faults = { failCompletionRate: 0, failAfterCompletionRate: 0, skipFinalizeRate: 0 };

const rateVariables = {
  failCompletionRate: "TALLY_FAULT_COMPLETE_FAIL_RATE",
  failAfterCompletionRate: "TALLY_FAULT_COMPLETE_FAIL_AFTER_COMMIT_RATE",
  skipFinalizeRate: "TALLY_FAULT_SKIP_FINALIZE_RATE",
} as const satisfies Record<keyof Faults, string>;

const killTokenVariable = "TALLY_FAULT_COORDINATOR_KILL_TOKEN";

export function faultsFromEnv(env: NodeJS.ProcessEnv): Faults {
  const names = Object.keys(env).filter(
    (k) => k.startsWith("TALLY_FAULT_") && env[k] !== "" && env[k] !== undefined,
  );
  if (names.length === 0) return noFaults;
  if (env.NODE_ENV === "production" || env.K_SERVICE)
    throw new Error(
      `fault injection (${names.join(", ")}) is refused in a deployment (NODE_ENV=production or Cloud Run): unset these variables`,
    );
  const known = new Set<string>([...Object.values(rateVariables), killTokenVariable]);
  const problems = names
    .filter((n) => !known.has(n))
    .map((n) => `${n} is not a fault this build knows (known: ${[...known].join(", ")})`);
  const faults: Faults = { ...noFaults };
  if (env[killTokenVariable] && !isAbsolute(env[killTokenVariable]!))
    problems.push(`${killTokenVariable} must be an absolute path (got ${env[killTokenVariable]})`);
  for (const [key, name] of Object.entries(rateVariables) as [keyof Faults, string][]) {
    const raw = env[name];
    if (raw === undefined || raw === "") continue;
    const rate = Number(raw);
    if (!(rate >= 0 && rate <= 1)) problems.push(`${name} must be in 0..1 (got ${raw})`);
    else faults[key] = rate;
  }
  if (problems.length > 0) throw new Error(`invalid fault injection: ${problems.join("; ")}`);
  return faults;
}

// --- crash points --------------------------------------------------------------------------------
// Named places where a test makes the coordinator stop as if its process had been killed there: the
// request fails (500) and writes nothing more. Armed only through CoordinatorOptions.crashAt, which
// only a test harness sets; refused in a deployment like the switches above.

/**
 * `beforeCursorWrite`: every item of the request is stored and its doorbell published, and the
 * batch is sealed when the request ends the submission, but the cursor write that records it
 * (`cursor`, `received`) and the start of the batch do not happen — `received` lags what is stored.
 */
/**
 * `afterExportBeforeFinish`: the finalizer's export committed (rows and marker in the sink) but the
 * outcome was not recorded — the batch stays `finalizing` under a claim nobody renews.
 * `afterCompletionCommit`: a worker's completion (result + succeeded) committed, then the process
 * "died": no settle, no answer but a 500.
 */
/**
 * `afterChunkStore`: a chunk's items are stored (pending, publishable) but nothing is published for
 * that chunk and the cursor does not move past it — the doorbells are lost with the process.
 * `afterPublish`: a chunk's items are stored and their doorbells published, but the cursor write
 * that would record it does not happen. Both are asked once per chunk, by the submission writer
 * (NDJSON, JSON, append); once one is reached the request writes nothing more.
 */
export const crashPoints = [
  "beforeCursorWrite",
  "afterExportBeforeFinish",
  "afterCompletionCommit",
  "afterChunkStore",
  "afterPublish",
] as const;
export type CrashPoint = (typeof crashPoints)[number];

/**
 * Says whether the process should "die" at `point` for this batch (the test counts its hits).
 * `points`: the opt-in points (below) this switch wants to be asked about.
 */
export type CrashSwitch = ((point: CrashPoint, batchId: string) => boolean) & {
  points?: readonly CrashPoint[];
};

/**
 * Points asked once per chunk, added after switches were written that answer true whatever the
 * point (they arm a batch, not a point): such a switch is asked about these only when it lists them
 * in `points`, so it keeps stopping where it stopped before. Build one with `crashSwitch`.
 */
export const optInCrashPoints: readonly CrashPoint[] = ["afterChunkStore", "afterPublish"];

/** Is `sw` asked about `point`? Every point but the opt-in ones, and those the switch lists. */
export function crashSwitchAsks(sw: CrashSwitch | undefined, point: CrashPoint): sw is CrashSwitch {
  if (!sw) return false;
  return !optInCrashPoints.includes(point) || (sw.points?.includes(point) ?? false);
}

/** A switch asked about `points` (opt-in ones included) and nothing else. */
export function crashSwitch(
  points: readonly CrashPoint[],
  decide: (point: CrashPoint, batchId: string) => boolean,
): CrashSwitch {
  const sw: CrashSwitch = (point, batchId) => points.includes(point) && decide(point, batchId);
  sw.points = points;
  return sw;
}

/** The error a crash point throws: nothing after it runs in this request. */
export class CrashPointReached extends Error {
  constructor(
    readonly point: CrashPoint,
    readonly batchId: string,
  ) {
    super(`crash point ${point} reached (batch ${batchId}): fault injection`);
    this.name = "CrashPointReached";
  }
}

/** Refuses crash points in a deployment (NODE_ENV=production or Cloud Run), as faultsFromEnv does. */
export function assertCrashPointsAllowed(env: NodeJS.ProcessEnv = process.env): void {
  if (env.NODE_ENV === "production" || env.K_SERVICE)
    throw new Error(
      "crash points (CoordinatorOptions.crashAt) are refused in a deployment (NODE_ENV=production or Cloud Run)",
    );
}

/** What a kill token file holds: the batch, and after how many stored chunks of it to die. */
export interface KillToken {
  batchId: string;
  /** The coordinator dies right after the `afterChunks`-th chunk of this batch is stored (≥ 1). */
  afterChunks: number;
}

function isKillToken(v: unknown): v is KillToken {
  const t = v as Partial<KillToken> | null;
  return (
    typeof t === "object" &&
    t !== null &&
    typeof t.batchId === "string" &&
    Number.isInteger(t.afterChunks) &&
    (t.afterChunks ?? 0) >= 1
  );
}

/**
 * The coordinator's crash switch from TALLY_FAULT_COORDINATOR_KILL_TOKEN, or undefined when unset.
 * A real SIGKILL of the process at a chosen place, instead of a test's signal racing the
 * submission: the chaos suite writes the token, sends the stream, and the coordinator kills itself
 * right after storing the chosen chunk (its doorbells not yet published; chunks stored before it
 * may or may not be). The token is deleted before the kill (an unlink succeeds once), so the
 * restarted process serves the client's re-send. A token of the wrong shape fails the request
 * with an error naming it, rather than killing at some other place or never. Validated by faultsFromEnv, which runtime.ts
 * calls first: refused in a deployment.
 */
export function coordinatorKillSwitchFromEnv(env: NodeJS.ProcessEnv): CrashSwitch | undefined {
  const path = env[killTokenVariable];
  if (!path) return undefined;
  const storedChunks = new Map<string, number>();
  return crashSwitch(["afterChunkStore"], (_point, batchId) => {
    let token: unknown;
    try {
      token = JSON.parse(readFileSync(path, "utf8"));
    } catch {
      return false; // no token (or one being written): no kill
    }
    if (!isKillToken(token))
      throw new Error(
        `${killTokenVariable}: ${path} must hold {"batchId": string, "afterChunks": integer ≥ 1}, got ${JSON.stringify(token).slice(0, 200)}`,
      );
    if (token.batchId !== batchId) return false;
    const stored = (storedChunks.get(batchId) ?? 0) + 1;
    storedChunks.set(batchId, stored);
    if (stored < token.afterChunks) return false;
    try {
      unlinkSync(path);
    } catch {
      return false; // another chunk of this request took the token already
    }
    process.kill(process.pid, "SIGKILL");
    return true; // not reached: the signal ends the process
  });
}
