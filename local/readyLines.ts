// The lines `npm start` prints once every process answers, in a fixed form so tools can read them
// (the chaos suite and benchmarks may run `npm start` as a subprocess and parse its output):
//   coordinator: http://127.0.0.1:PORT
//   dashboard: http://127.0.0.1:PORT/
//   worker 1 (demo): http://127.0.0.1:PORT pid PID      (one per worker, with its pipeline)
//   reconciler: http://127.0.0.1:PORT pid PID
//   results: PATH-TO-DUCKDB-FILE
//   ready
// Lines before them (emulators, front door) are informational.

export interface ReadyInfo {
  coordinator: string;
  dashboard: string;
  /** Numbered across every pipeline's group; `pipeline` is the one the worker serves. */
  workers: Array<{ url: string; pid: number; pipeline?: string }>;
  reconciler: { url: string; pid: number };
  results: string;
}

export function formatReadyLines(info: ReadyInfo): string[] {
  return [
    `coordinator: ${info.coordinator}`,
    `dashboard: ${info.dashboard}`,
    ...info.workers.map(
      (w, i) => `worker ${i + 1}${w.pipeline ? ` (${w.pipeline})` : ""}: ${w.url} pid ${w.pid}`,
    ),
    `reconciler: ${info.reconciler.url} pid ${info.reconciler.pid}`,
    `results: ${info.results}`,
    "ready",
  ];
}

/** Reads the ready block back from `npm start` output; null until the `ready` line has appeared. */
export function parseReadyLines(output: string): ReadyInfo | null {
  const lines = output.split("\n").map((l) => l.replace(/\r$/, ""));
  if (!lines.includes("ready")) return null;
  const info: Partial<ReadyInfo> & { workers: ReadyInfo["workers"] } = { workers: [] };
  for (const line of lines) {
    const worker = /^worker (\d+)(?: \(([a-z][a-z0-9-]*)\))?: (http:\/\/\S+) pid (\d+)$/.exec(line);
    const reconciler = /^reconciler: (http:\/\/\S+) pid (\d+)$/.exec(line);
    const plain = /^(coordinator|dashboard|results): (\S.*)$/.exec(line);
    if (worker)
      info.workers[Number(worker[1]) - 1] = {
        url: worker[3]!,
        pid: Number(worker[4]),
        ...(worker[2] ? { pipeline: worker[2] } : {}),
      };
    else if (reconciler) info.reconciler = { url: reconciler[1]!, pid: Number(reconciler[2]) };
    else if (plain) info[plain[1] as "coordinator" | "dashboard" | "results"] = plain[2]!;
  }
  if (!info.coordinator || !info.dashboard || !info.reconciler || !info.results) return null;
  return info as ReadyInfo;
}
