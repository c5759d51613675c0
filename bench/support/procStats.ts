// Process figures read from /proc (Linux): peak resident memory (VmHWM, the kernel's own high-water
// mark, so no sample can miss a spike), current RSS, and CPU time consumed.
import { readFileSync } from "node:fs";

function statusField(pid: number, field: string): number | null {
  try {
    const text = readFileSync(`/proc/${pid}/status`, "utf8");
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** Peak resident set size in bytes since the process started (null once it has exited). */
export const peakRss = (pid: number) => statusField(pid, "VmHWM");
export const currentRss = (pid: number) => statusField(pid, "VmRSS");

/** User + system CPU seconds consumed by the process (its own threads, not its children). */
export function cpuSeconds(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may contain spaces) start after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    return (utime + stime) / 100; // USER_HZ is 100 on Linux
  } catch {
    return null;
  }
}

/**
 * Samples a process's peak RSS until stopped; keeps the last value seen (VmHWM is monotone, so
 * the last sample before exit is the peak).
 */
export function trackPeakRss(
  pid: number,
  intervalMs = 200,
): { stop(): number | null; peak(): number | null } {
  let last: number | null = peakRss(pid);
  const t = setInterval(() => {
    const v = peakRss(pid);
    if (v !== null) last = v;
  }, intervalMs);
  t.unref();
  return {
    peak: () => {
      const v = peakRss(pid);
      if (v !== null) last = v;
      return last;
    },
    stop: () => {
      clearInterval(t);
      const v = peakRss(pid);
      if (v !== null) last = v;
      return last;
    },
  };
}

/** Total CPU seconds used by the whole machine so far, and idle seconds (from /proc/stat). */
export function machineCpu(): { busy: number; idle: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  const total = v.reduce((a, b) => a + b, 0);
  return { busy: (total - idle) / 100, idle: idle / 100 };
}
