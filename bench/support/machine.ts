// Facts about the machine a report was produced on, and how busy it was before the bench started
// (other processes on a shared machine skew every figure; the report says so).
import { spawnSync } from "node:child_process";
import { cpus, loadavg, totalmem } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { machineCpu } from "./procStats";

export interface MachineFacts {
  cores: number;
  cpuModel: string;
  memoryGiB: number;
  node: string;
  platform: string;
  javaVersion: string | null;
  gcloudVersion: string | null;
  date: string;
  command: string;
  /** Fraction of all cores busy during a short sample taken before anything was started. */
  backgroundBusyBefore: number;
  loadAverageAtStart: number[];
  loadAverageAtEnd?: number[];
  emulatorNote: string;
}

/** First non-empty line a command prints (java -version prints on stderr), or null. */
function tryRun(cmd: string, args: string[]): string | null {
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 20_000 });
  if (r.error) return null;
  const line = `${r.stdout ?? ""}\n${r.stderr ?? ""}`
    .split("\n")
    .map((l) => l.trim())
    // The JVM announces JAVA_TOOL_OPTIONS (set by bench/run.ts) before its version.
    .find((l) => l.length > 0 && !l.startsWith("Picked up "));
  return line ?? null;
}

export async function sampleBackgroundBusy(ms = 2000): Promise<number> {
  const a = machineCpu();
  await sleep(ms);
  const b = machineCpu();
  const busy = b.busy - a.busy;
  const idle = b.idle - a.idle;
  return busy + idle > 0 ? busy / (busy + idle) : 0;
}

export async function machineFacts(command: string): Promise<MachineFacts> {
  const c = cpus();
  return {
    cores: c.length,
    cpuModel: c[0]?.model ?? "unknown",
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    javaVersion: tryRun("java", ["-version"]),
    gcloudVersion: tryRun("gcloud", ["version", '--format=value("Google Cloud SDK")']),
    date: new Date().toISOString(),
    command,
    backgroundBusyBefore: await sampleBackgroundBusy(),
    loadAverageAtStart: loadavg().map((v) => Math.round(v * 100) / 100),
    emulatorNote:
      "emulators are not production Pub/Sub/Firestore: figures are ratios against baselines measured on the same emulators in the same run, not cloud throughput",
  };
}
