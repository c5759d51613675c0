// Fault injection for the chaos suite (DESIGN.md §8), switched on by environment variables read at
// start. Refused outright in a deployment: with NODE_ENV=production, or on Cloud Run (K_SERVICE is
// set there), any TALLY_FAULT_* variable makes the handler fail to start rather than run faulty.
//
//   TALLY_FAULT_COMPLETE_FAIL_RATE  0..1  fraction of completion writes (result + succeeded) that
//                                         fail before reaching the ledger (F1)
//   TALLY_FAULT_SKIP_FINALIZE_RATE  0..1  fraction of "anything left?" checks that answer "yes"
//                                         without reading: this process never starts the
//                                         event-driven finalization, as when a worker dies right
//                                         after its last completion write (F3, F5). Set it for the
//                                         workers only; the reconciler's safety net must finalize.

export interface Faults {
  /** Fraction of completion writes (result + succeeded) that fail before reaching the ledger (F1). */
  failCompletionRate: number;
  /** Fraction of "anything left?" checks that answer "yes" without reading (F3, F5). */
  skipFinalizeRate: number;
}

export const noFaults: Faults = { failCompletionRate: 0, skipFinalizeRate: 0 };

const rateVariables = {
  failCompletionRate: "TALLY_FAULT_COMPLETE_FAIL_RATE",
  skipFinalizeRate: "TALLY_FAULT_SKIP_FINALIZE_RATE",
} as const satisfies Record<keyof Faults, string>;

export function faultsFromEnv(env: NodeJS.ProcessEnv): Faults {
  const names = Object.keys(env).filter(
    (k) => k.startsWith("TALLY_FAULT_") && env[k] !== "" && env[k] !== undefined,
  );
  if (names.length === 0) return noFaults;
  if (env.NODE_ENV === "production" || env.K_SERVICE)
    throw new Error(
      `fault injection (${names.join(", ")}) is refused in a deployment (NODE_ENV=production or Cloud Run): unset these variables`,
    );
  const known = new Set<string>(Object.values(rateVariables));
  const problems = names
    .filter((n) => !known.has(n))
    .map((n) => `${n} is not a fault this build knows (known: ${[...known].join(", ")})`);
  const faults: Faults = { ...noFaults };
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
