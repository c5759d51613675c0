// Demo-pipeline items for `tally submit --demo N` (and the local demo): exactly round(N × rate)
// items of each failure kind, spread evenly through the batch (smooth weighted round-robin), made
// one at a time so a million-item batch never sits in memory. Payloads follow the demo pipeline's
// contract (functions/pipelines/demo.ts).

export interface DemoPlan {
  count: number;
  /** Fraction failing transiently 1–2 times, then succeeding. */
  failRate?: number;
  /** Fraction failing permanently. */
  permanentRate?: number;
  /** Fraction crashing their worker process on the first attempt (then succeeding). */
  crashRate?: number;
  /** Every item sleeps this long (ms), so a run is long enough to watch. */
  sleepMs?: number;
}

export type DemoKind = "plain" | "transient" | "permanent" | "crash";

export interface DemoItem {
  id: string;
  payload: {
    value: number;
    sleepMs?: number;
    failTimes?: number;
    permanent?: boolean;
    crash?: number;
  };
}

export function demoKindCounts(plan: DemoPlan): Record<DemoKind, number> {
  const n = plan.count;
  const permanent = Math.round(n * (plan.permanentRate ?? 0));
  const transient = Math.min(n - permanent, Math.round(n * (plan.failRate ?? 0)));
  const crash = Math.min(n - permanent - transient, Math.round(n * (plan.crashRate ?? 0)));
  return { plain: n - permanent - transient - crash, transient, permanent, crash };
}

export function* demoItems(plan: DemoPlan): Generator<DemoItem> {
  const counts = demoKindCounts(plan);
  const kinds = Object.keys(counts) as DemoKind[];
  const current: Record<DemoKind, number> = { plain: 0, transient: 0, permanent: 0, crash: 0 };
  const width = String(plan.count).length;
  let transients = 0;
  for (let i = 0; i < plan.count; i++) {
    // Smooth weighted round-robin: over `count` picks, each kind is picked exactly counts[kind] times.
    let pick: DemoKind | null = null;
    for (const k of kinds) {
      current[k] += counts[k];
      if (counts[k] > 0 && (pick === null || current[k] > current[pick])) pick = k;
    }
    if (pick === null) break;
    current[pick] -= plan.count;
    const payload: DemoItem["payload"] = { value: i + 1 };
    if (plan.sleepMs) payload.sleepMs = plan.sleepMs;
    if (pick === "transient") payload.failTimes = (transients++ % 2) + 1;
    else if (pick === "permanent") payload.permanent = true;
    else if (pick === "crash") payload.crash = 1;
    yield { id: `item-${String(i + 1).padStart(width, "0")}`, payload };
  }
}
