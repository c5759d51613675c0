// Turns the handlers' structured JSON log lines (Cloud Logging format, functions/core/logger.ts) into
// one compact, prefixed terminal line each, and decides which are worth showing: per-item INFO
// events (a 2,000-item batch writes thousands) only with --verbose; warnings and errors always.

export interface LogFilter {
  verbose: boolean;
}

interface Parsed {
  severity?: string;
  event?: string;
  message?: string;
  [key: string]: unknown;
}

const hiddenKeys = new Set(["severity", "message", "time", "event", "component", "timestamp"]);
const shownFields = ["batchId", "itemId", "attempt", "status", "outcome", "kind", "error", "reason"];

function parse(line: string): Parsed | null {
  if (!line.startsWith("{")) return null;
  try {
    const v = JSON.parse(line);
    return v && typeof v === "object" ? (v as Parsed) : null;
  } catch {
    return null;
  }
}

/** Events that happen once per item or per delivery. */
function isPerItem(event: string | undefined): boolean {
  return !!event && /^(item|step|delivery|pipeline)\./.test(event);
}

/** A scheduler tick that found nothing to do: one every few seconds, so only shown with --verbose. */
function isIdleReconcile(p: Parsed): boolean {
  if (p.event !== "reconcile.summary") return false;
  const n = (path: string[]) => {
    let v: unknown = p;
    for (const k of path) v = v && typeof v === "object" ? (v as Record<string, unknown>)[k] : undefined;
    return typeof v === "number" ? v : 0;
  };
  return (
    n(["expiredLeases", "found"]) +
      n(["staleSubmissions", "found"]) +
      n(["stalePending", "republished"]) +
      n(["dependencies", "started"]) +
      n(["dependencies", "failed"]) +
      n(["finalized"]) +
      n(["errors"]) ===
    0
  );
}

/** The line to print for a process's output line, or null when it is filtered out. */
export function formatLogLine(source: string, line: string, filter: LogFilter): string | null {
  const p = parse(line);
  if (!p) return `[${source}] ${line}`;
  const severity = String(p.severity ?? "DEFAULT");
  const loud = severity === "WARNING" || severity === "ERROR" || severity === "CRITICAL";
  if (!filter.verbose) {
    if (severity === "DEBUG") return null;
    if (!loud && (isPerItem(p.event) || isIdleReconcile(p))) return null;
  }
  const fields: string[] = [];
  for (const key of shownFields) {
    const v = p[key];
    if (v === undefined || v === null) continue;
    fields.push(`${key}=${compact(v)}`);
  }
  if (filter.verbose)
    for (const [key, v] of Object.entries(p))
      if (!hiddenKeys.has(key) && !shownFields.includes(key) && !key.startsWith("logging.googleapis.com"))
        fields.push(`${key}=${compact(v)}`);
  const head = severity === "INFO" ? "" : `${severity} `;
  const event = p.event ? `${p.event}: ` : "";
  const tail = fields.length > 0 ? ` (${fields.join(" ")})` : "";
  return `[${source}] ${head}${event}${p.message ?? ""}${tail}`;
}

function compact(v: unknown): string {
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s.length > 160 ? `${s.slice(0, 157)}...` : s;
}

/** Splits a byte stream into lines, calling `onLine` for each complete one. */
export function lineSplitter(onLine: (line: string) => void): {
  push(chunk: Buffer | string): void;
  end(): void;
} {
  let rest = "";
  return {
    push(chunk) {
      rest += chunk.toString();
      let nl = rest.indexOf("\n");
      while (nl >= 0) {
        const line = rest.slice(0, nl).replace(/\r$/, "");
        rest = rest.slice(nl + 1);
        if (line) onLine(line);
        nl = rest.indexOf("\n");
      }
    },
    end() {
      if (rest) onLine(rest);
      rest = "";
    },
  };
}
