// Progress rendering for `tally ... --watch` and `npm run demo`: a stacked bar by item state with
// counts, rate and ETA, redrawn in place on a terminal, or one plain line per update otherwise
// (logs, CI, pipes). Pure string functions plus a small redrawing writer; no network here.

export const progressStates = ["succeeded", "failed", "running", "pending"] as const;
export type ProgressStateName = (typeof progressStates)[number];
export type StateCounts = Record<ProgressStateName, number>;

export interface ProgressSnapshot {
  /** The batch id. */
  label: string;
  status: string;
  /** The batch's total when known; while a stream is still being submitted, null. */
  total: number | null;
  counts: StateCounts;
  ratePerSecond: number | null;
  etaSeconds: number | null;
  elapsedMs: number;
}

const ansi = { succeeded: "32", failed: "31", running: "36", pending: "90" } as const;
const glyph: Record<ProgressStateName, string> = { succeeded: "█", failed: "█", running: "▓", pending: "░" };
/** Without colour the states still differ by glyph. */
const plainGlyph: Record<ProgressStateName, string> = {
  succeeded: "█",
  failed: "X",
  running: "▒",
  pending: "░",
};

const paint = (color: boolean, code: string, s: string) => (color && s ? `\x1b[${code}m${s}\x1b[0m` : s);
const ansiSequence = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, "g");
const stripAnsi = (s: string) => s.replace(ansiSequence, "");
export const visibleWidth = (s: string) => [...stripAnsi(s)].length;

export function finishedCount(c: StateCounts): number {
  return c.succeeded + c.failed;
}

/** The denominator: the known total, or what has been counted so far. */
export function effectiveTotal(total: number | null, c: StateCounts): number {
  const counted = c.succeeded + c.failed + c.running + c.pending;
  return Math.max(total ?? 0, counted);
}

/**
 * Character widths per state, proportional to the counts and summing to `width` exactly
 * (largest remainder), so the bar never jitters in length. Items not yet counted show as pending.
 */
export function segmentWidths(counts: StateCounts, total: number | null, width: number): StateCounts {
  const denom = effectiveTotal(total, counts);
  const out: StateCounts = { succeeded: 0, failed: 0, running: 0, pending: 0 };
  if (denom === 0 || width <= 0) return { ...out, pending: Math.max(0, width) };
  const counted = counts.succeeded + counts.failed + counts.running + counts.pending;
  const share: StateCounts = { ...counts, pending: counts.pending + (denom - counted) };
  const exact = progressStates.map((s) => ({ s, x: (share[s] / denom) * width }));
  let used = 0;
  for (const { s, x } of exact) {
    out[s] = Math.floor(x);
    used += out[s];
  }
  const byRemainder = [...exact].sort((a, b) => b.x - Math.floor(b.x) - (a.x - Math.floor(a.x)));
  for (let i = 0; used < width && i < byRemainder.length; i++, used++) out[byRemainder[i]!.s]++;
  // Any state with items gets at least one character: a handful of failures must stay visible.
  for (const s of progressStates) {
    if (share[s] > 0 && out[s] === 0) {
      const widest = progressStates.reduce((a, b) => (out[b] > out[a] ? b : a));
      if (out[widest] > 1) {
        out[widest]--;
        out[s] = 1;
      }
    }
  }
  return out;
}

export function renderStackedBar(
  counts: StateCounts,
  total: number | null,
  width: number,
  color: boolean,
): string {
  const w = segmentWidths(counts, total, width);
  const glyphs = color ? glyph : plainGlyph;
  return progressStates.map((s) => paint(color, ansi[s], glyphs[s].repeat(w[s]))).join("");
}

export function formatDuration(ms: number): string {
  const s = Math.max(0, ms) / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

export function formatRate(rate: number | null, unit = " items/s"): string {
  if (rate === null) return `–${unit}`;
  return `${rate >= 100 ? Math.round(rate).toLocaleString("en-US") : rate.toFixed(1)}${unit}`;
}

export function formatEta(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds)) return "ETA –";
  return `ETA ${formatDuration(seconds * 1000)}`;
}

function percent(done: number, denom: number): string {
  if (denom === 0) return "0%";
  const p = (done / denom) * 100;
  return `${done < denom ? Math.min(99, Math.floor(p)) : 100}%`;
}

/** Two lines for a terminal: the bar with the fraction done, then counts, rate and ETA. */
export function renderTtyLines(p: ProgressSnapshot, opts: { columns: number; color: boolean }): string[] {
  const { color } = opts;
  const columns = Math.max(40, opts.columns) - 1;
  const denom = effectiveTotal(p.total, p.counts);
  const done = finishedCount(p.counts);
  const totalText = p.total === null ? `${denom.toLocaleString("en-US")}+` : denom.toLocaleString("en-US");
  const head = `${p.label} ${paint(color, "1", p.status)} `;
  const tail = ` ${percent(done, denom).padStart(4)} ${done.toLocaleString("en-US")}/${totalText}`;
  let label = head;
  const room = columns - visibleWidth(tail);
  if (room - visibleWidth(label) < 10) label = ""; // a narrow terminal keeps the bar, drops the name
  const barWidth = Math.max(10, Math.min(60, room - visibleWidth(label)));
  const line1 = `${label}${renderStackedBar(p.counts, p.total, barWidth, color)}${tail}`;

  const parts = [
    ...progressStates.map(
      (s) =>
        `${paint(color, ansi[s], color ? glyph[s] : plainGlyph[s])} ${s} ${p.counts[s].toLocaleString("en-US")}`,
    ),
    formatRate(p.ratePerSecond, "/s"),
    formatEta(p.etaSeconds),
    formatDuration(p.elapsedMs),
  ];
  let line2 = "";
  for (const part of parts) {
    const next = line2 ? `${line2}  ${part}` : part;
    if (visibleWidth(next) > columns) break;
    line2 = next;
  }
  return [line1, line2];
}

/** One self-contained line per update, for logs and pipes. */
export function renderPlainLine(p: ProgressSnapshot, at: Date = new Date()): string {
  const denom = effectiveTotal(p.total, p.counts);
  const done = finishedCount(p.counts);
  const time = at.toISOString().slice(11, 19);
  const { succeeded, failed, running, pending } = p.counts;
  const of = p.total === null ? `${denom}+` : String(denom);
  return (
    `${time} batch ${p.label} ${p.status}: ${done}/${of} done (${percent(done, denom)}) — ` +
    `succeeded ${succeeded}, failed ${failed}, running ${running}, pending ${pending} — ` +
    `${formatRate(p.ratePerSecond)}, ${formatEta(p.etaSeconds)}`
  );
}

export interface FinalSummary {
  batchId: string;
  status: string;
  total: number;
  succeeded: number;
  failed: number;
  failedByKind: Record<string, number>;
  durationMs: number | null;
}

/** `batch ID: partial — total 500, succeeded 480, failed 20 (permanent 10, attempts_exhausted 10) in 12.3 s` */
export function renderOutcomeLine(s: FinalSummary): string {
  const kinds = Object.entries(s.failedByKind)
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k} ${n}`);
  const failed = kinds.length > 0 ? `failed ${s.failed} (${kinds.join(", ")})` : `failed ${s.failed}`;
  const took = s.durationMs === null ? "" : ` in ${(s.durationMs / 1000).toFixed(1)} s`;
  return `batch ${s.batchId}: ${s.status} — total ${s.total}, succeeded ${s.succeeded}, ${failed}${took}`;
}

/** Items finished per second over a sliding window of recent samples; ETA from it. */
export class RateMeter {
  private samples: Array<{ t: number; done: number }> = [];
  constructor(private readonly windowMs = 10_000) {}

  add(t: number, done: number): void {
    this.samples.push({ t, done });
    while (this.samples.length > 2 && t - this.samples[0]!.t > this.windowMs) this.samples.shift();
  }

  rate(): number | null {
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    if (!first || !last || last.t - first.t < 500) return null;
    return Math.max(0, (last.done - first.done) / ((last.t - first.t) / 1000));
  }

  etaSeconds(remaining: number): number | null {
    if (remaining <= 0) return 0;
    const r = this.rate();
    return r && r > 0 ? remaining / r : null;
  }
}

export interface ProgressStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

/**
 * Draws snapshots to a stream: redrawn in place on a terminal, otherwise one plain line whenever
 * something changed (and at least every `plainEveryMs`, so a log shows the run is alive).
 */
export class LiveProgress {
  private drawn = 0;
  private lastPlain = "";
  private lastPlainAt = 0;
  readonly tty: boolean;
  private readonly color: boolean;
  private readonly plainEveryMs: number;

  constructor(
    private readonly out: ProgressStream,
    opts: { env?: NodeJS.ProcessEnv; plainEveryMs?: number } = {},
  ) {
    const env = opts.env ?? process.env;
    this.tty = Boolean(out.isTTY) && env.TERM !== "dumb";
    this.color = this.tty && env.NO_COLOR === undefined;
    this.plainEveryMs = opts.plainEveryMs ?? 10_000;
  }

  update(p: ProgressSnapshot): void {
    if (this.tty) {
      const lines = renderTtyLines(p, { columns: this.out.columns ?? 80, color: this.color });
      const up = this.drawn > 1 ? `\x1b[${this.drawn - 1}A` : "";
      this.out.write(`${this.drawn > 0 ? `\r${up}` : ""}${lines.map((l) => `\x1b[2K${l}`).join("\n")}`);
      this.drawn = lines.length;
      return;
    }
    const key = `${p.status} ${p.counts.succeeded} ${p.counts.failed} ${p.counts.running} ${p.counts.pending} ${p.total}`;
    const now = Date.now();
    if (key === this.lastPlain && now - this.lastPlainAt < this.plainEveryMs) return;
    this.lastPlain = key;
    this.lastPlainAt = now;
    this.out.write(`${renderPlainLine(p)}\n`);
  }

  /** Leaves the last drawing on screen and moves below it. */
  finish(): void {
    if (this.tty && this.drawn > 0) this.out.write("\n");
    this.drawn = 0;
  }
}

/** What `tally submit` shows while it sends a batch (local/client/tallyClient.ts's SubmitProgress). */
export interface SubmitSnapshot {
  batchId: string;
  phase: "opening" | "appending" | "sealing" | "done";
  /** Items the coordinator acknowledged as stored. */
  stored: number;
  /** The batch size, when known (a .json file, --demo, or once the source is read). */
  total: number | null;
  startedAt: number;
  bytesSent: number;
  itemsPerSecond: number | null;
  elapsedMs: number;
}

/** `submitting b1: 120,000/1,000,000 items stored (12%) — 3,400 items/s, 41.2 MiB sent, 35.3 s` */
export function renderSubmitLine(p: SubmitSnapshot): string {
  const n = (x: number) => x.toLocaleString("en-US");
  const of = p.total === null ? "" : `/${n(p.total)}`;
  const pct = p.total ? ` (${percent(p.stored, p.total)})` : "";
  const resumed = p.startedAt > 0 ? `, resumed at ${n(p.startedAt)}` : "";
  const verb = p.phase === "sealing" ? "sealing" : "submitting";
  return (
    `${verb} ${p.batchId}: ${n(p.stored)}${of} items stored${pct}${resumed} — ` +
    `${formatRate(p.itemsPerSecond)}, ${(p.bytesSent / 2 ** 20).toFixed(1)} MiB sent, ${formatDuration(p.elapsedMs)}`
  );
}

/**
 * The submission's progress: redrawn in place on a terminal (and erased when done, so the answer
 * line follows cleanly); otherwise a plain line every `plainEveryMs`, the first only once the
 * submission has run that long (a small batch prints nothing).
 */
export class SubmitProgressView {
  private drawn = false;
  private lastPlainAt: number;
  private readonly plainEveryMs: number;
  readonly tty: boolean;

  constructor(
    private readonly out: ProgressStream,
    opts: { env?: NodeJS.ProcessEnv; plainEveryMs?: number } = {},
  ) {
    const env = opts.env ?? process.env;
    this.tty = Boolean(out.isTTY) && env.TERM !== "dumb";
    this.plainEveryMs = opts.plainEveryMs ?? 10_000;
    this.lastPlainAt = Date.now();
  }

  update(p: SubmitSnapshot): void {
    if (p.phase === "done") {
      this.finish();
      return;
    }
    if (this.tty) {
      const line = renderSubmitLine(p).slice(0, Math.max(40, (this.out.columns ?? 80) - 1));
      this.out.write(`\r\x1b[2K${line}`);
      this.drawn = true;
      return;
    }
    const now = Date.now();
    if (now - this.lastPlainAt < this.plainEveryMs) return;
    this.lastPlainAt = now;
    this.out.write(`${renderSubmitLine(p)}\n`);
  }

  finish(): void {
    if (this.tty && this.drawn) this.out.write("\r\x1b[2K");
    this.drawn = false;
  }
}
