// Fault injection for the chaos suite (DESIGN.md §8), switched on by environment variables read at
// start. Refused outright in a deployment: with NODE_ENV=production, or on Cloud Run (K_SERVICE is
// set there), any TALLY_FAULT_* variable makes the handler fail to start rather than run faulty.

export interface Faults {
  /** Fraction of completion writes (result + succeeded) that fail before reaching the ledger (F1). */
  failCompletionRate: number;
}

export const noFaults: Faults = { failCompletionRate: 0 };

export function faultsFromEnv(env: NodeJS.ProcessEnv): Faults {
  const names = Object.keys(env).filter(
    (k) => k.startsWith("TALLY_FAULT_") && env[k] !== "" && env[k] !== undefined,
  );
  if (names.length === 0) return noFaults;
  if (env.NODE_ENV === "production" || env.K_SERVICE)
    throw new Error(
      `fault injection (${names.join(", ")}) is refused in a deployment (NODE_ENV=production or Cloud Run): unset these variables`,
    );
  const rate = Number(env.TALLY_FAULT_COMPLETE_FAIL_RATE ?? 0);
  if (!(rate >= 0 && rate <= 1))
    throw new Error(
      `TALLY_FAULT_COMPLETE_FAIL_RATE must be in 0..1 (got ${env.TALLY_FAULT_COMPLETE_FAIL_RATE})`,
    );
  return { failCompletionRate: rate };
}
