// The progress rendering shared by `tally --watch` and the demo: bar widths proportional to the
// counts and always the requested width, every non-empty state visible, lines that fit the
// terminal, the plain and outcome lines, and the demo item mix being exact.
import { describe, expect, it } from "vitest";
import { demoItems, demoKindCounts } from "../../local/cli/demoItems";
import {
  LiveProgress,
  type ProgressSnapshot,
  RateMeter,
  renderOutcomeLine,
  renderPlainLine,
  renderStackedBar,
  renderSubmitLine,
  renderTtyLines,
  SubmitProgressView,
  segmentWidths,
  visibleWidth,
} from "../../local/cli/progressBar";

const snapshot: ProgressSnapshot = {
  label: "demo-7f3a",
  status: "running",
  total: 500,
  counts: { succeeded: 301, failed: 12, running: 8, pending: 179 },
  ratePerSecond: 45.24,
  etaSeconds: 4.1,
  elapsedMs: 6900,
};

describe("progress bar", () => {
  it("splits the width in proportion to the counts, summing to the width exactly", () => {
    expect(segmentWidths({ succeeded: 50, failed: 25, running: 0, pending: 25 }, 100, 40)).toEqual({
      succeeded: 20,
      failed: 10,
      running: 0,
      pending: 10,
    });
    for (const width of [10, 33, 57, 60]) {
      const w = segmentWidths(snapshot.counts, 500, width);
      expect(w.succeeded + w.failed + w.running + w.pending).toBe(width);
    }
    // Items not yet received count as pending.
    expect(segmentWidths({ succeeded: 10, failed: 0, running: 0, pending: 0 }, 40, 20)).toEqual({
      succeeded: 5,
      failed: 0,
      running: 0,
      pending: 15,
    });
  });

  it("keeps a handful of failures visible on a narrow bar", () => {
    const w = segmentWidths({ succeeded: 990, failed: 2, running: 0, pending: 8 }, 1000, 12);
    expect(w.failed).toBe(1);
    expect(w.pending).toBe(1);
    expect(w.succeeded + w.failed + w.running + w.pending).toBe(12);
    expect(renderStackedBar({ succeeded: 990, failed: 2, running: 0, pending: 8 }, 1000, 12, false)).toBe(
      `${"█".repeat(10)}X░`,
    );
  });

  it("fits the terminal and drops the least important parts first", () => {
    for (const columns of [50, 80, 120]) {
      const lines = renderTtyLines(snapshot, { columns, color: true });
      for (const line of lines) expect(visibleWidth(line)).toBeLessThan(columns);
      expect(lines[0]).toContain("313/500");
      expect(lines[1]).toContain("succeeded 301");
    }
    const wide = renderTtyLines(snapshot, { columns: 120, color: false });
    expect(wide[1]).toBe(
      "█ succeeded 301  X failed 12  ▒ running 8  ░ pending 179  45.2/s  ETA 4.1 s  6.9 s",
    );
    expect(renderTtyLines(snapshot, { columns: 80, color: false })[1]).toContain("ETA 4.1 s");
  });

  it("writes plain lines when not a terminal, only when something changed", () => {
    const written: string[] = [];
    const live = new LiveProgress({ write: (s) => written.push(s), isTTY: false }, { env: {} });
    live.update(snapshot);
    live.update(snapshot);
    live.update({ ...snapshot, counts: { ...snapshot.counts, succeeded: 302, pending: 178 } });
    live.finish();
    expect(written).toHaveLength(2);
    expect(written[0]).toMatch(
      /^\d\d:\d\d:\d\d batch demo-7f3a running: 313\/500 done \(62%\) — succeeded 301, failed 12, running 8, pending 179 — 45\.2 items\/s, ETA 4\.1 s\n$/,
    );
    expect(renderPlainLine({ ...snapshot, total: null })).toContain("313/500+ done");
  });

  it("redraws in place on a terminal", () => {
    const written: string[] = [];
    const live = new LiveProgress({ write: (s) => written.push(s), isTTY: true, columns: 100 }, { env: {} });
    live.update(snapshot);
    live.update(snapshot);
    live.finish();
    expect(written[0]).not.toContain("\x1b[1A");
    expect(written[1]!.startsWith("\r\x1b[1A\x1b[2K")).toBe(true);
    expect(written[2]).toBe("\n");
  });

  it("the outcome line names failures by kind", () => {
    expect(
      renderOutcomeLine({
        batchId: "b1",
        status: "partial",
        total: 500,
        succeeded: 488,
        failed: 12,
        failedByKind: { attempts_exhausted: 2, permanent: 10 },
        durationMs: 12_345,
      }),
    ).toBe(
      "batch b1: partial — total 500, succeeded 488, failed 12 (permanent 10, attempts_exhausted 2) in 12.3 s",
    );
  });

  it("measures the rate over a sliding window", () => {
    const m = new RateMeter(10_000);
    expect(m.rate()).toBeNull();
    m.add(0, 0);
    m.add(1000, 50);
    m.add(2000, 100);
    expect(m.rate()).toBe(50);
    expect(m.etaSeconds(200)).toBe(4);
    m.add(20_000, 100);
    expect(m.rate()).toBe(0);
    expect(m.etaSeconds(200)).toBeNull();
  });
});

describe("demo items", () => {
  it("holds exactly round(N × rate) items of each kind, spread through the batch", () => {
    const plan = { count: 1000, failRate: 0.05, permanentRate: 0.02, crashRate: 0.01 };
    expect(demoKindCounts(plan)).toEqual({ plain: 920, transient: 50, permanent: 20, crash: 10 });
    const items = [...demoItems(plan)];
    expect(items).toHaveLength(1000);
    expect(new Set(items.map((i) => i.id)).size).toBe(1000);
    expect(items[0]!.id).toBe("item-0001");
    const permanents = items.flatMap((it, i) => (it.payload.permanent ? [i] : []));
    expect(permanents).toHaveLength(20);
    // Evenly spread: one in every 50 positions.
    expect(permanents.every((p, k) => Math.floor(p / 50) === k)).toBe(true);
    const transient = items.filter((i) => i.payload.failTimes !== undefined);
    expect(transient).toHaveLength(50);
    expect(new Set(transient.map((i) => i.payload.failTimes))).toEqual(new Set([1, 2]));
    expect(items.filter((i) => i.payload.crash === 1)).toHaveLength(10);
  });
});

describe("the submission line", () => {
  it("says items stored, of how many, rate, bytes and time; a resumed run says where it started", () => {
    const base = {
      batchId: "b1",
      phase: "appending" as const,
      stored: 120_000,
      total: 1_000_000,
      startedAt: 0,
      bytesSent: 41.2 * 2 ** 20,
      itemsPerSecond: 3400,
      elapsedMs: 35_300,
    };
    expect(renderSubmitLine(base)).toBe(
      "submitting b1: 120,000/1,000,000 items stored (12%) — 3,400 items/s, 41.2 MiB sent, 35.3 s",
    );
    expect(renderSubmitLine({ ...base, total: null, startedAt: 50_000, itemsPerSecond: null })).toBe(
      "submitting b1: 120,000 items stored, resumed at 50,000 — – items/s, 41.2 MiB sent, 35.3 s",
    );
  });

  it("redraws in place on a terminal and erases itself when done; elsewhere stays quiet for a short run", () => {
    const writes: string[] = [];
    const tty = new SubmitProgressView(
      { write: (s: string) => writes.push(s), isTTY: true, columns: 120 },
      { env: {} },
    );
    const p = {
      batchId: "b1",
      phase: "appending" as const,
      stored: 10,
      total: 20,
      startedAt: 0,
      bytesSent: 0,
      itemsPerSecond: 5,
      elapsedMs: 2000,
    };
    tty.update(p);
    tty.update({ ...p, phase: "done" });
    expect(writes[0]?.startsWith("\r\x1b[2Ksubmitting b1: 10/20 items stored (50%)")).toBe(true);
    expect(writes[1]).toBe("\r\x1b[2K");
    const plain: string[] = [];
    const pipe = new SubmitProgressView(
      { write: (s: string) => plain.push(s) },
      { env: {}, plainEveryMs: 10_000 },
    );
    pipe.update(p);
    expect(plain).toEqual([]);
  });
});
