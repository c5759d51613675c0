// Small numeric helpers shared by the phases: distributions, rates, ratios, rounding for the report.

export interface Distribution {
  n: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export function distribution(values: number[]): Distribution {
  if (values.length === 0) return { n: 0, min: NaN, p50: NaN, p90: NaN, p99: NaN, max: NaN, mean: NaN };
  const s = [...values].sort((a, b) => a - b);
  // Nearest-rank percentiles: with few samples every reported figure is one that was observed.
  const at = (p: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
  return {
    n: s.length,
    min: s[0]!,
    p50: at(50),
    p90: at(90),
    p99: at(99),
    max: s[s.length - 1]!,
    mean: s.reduce((a, b) => a + b, 0) / s.length,
  };
}

export function perSecond(count: number, ms: number): number {
  return ms > 0 ? (count * 1000) / ms : 0;
}

export function ratio(a: number, b: number): number {
  return b > 0 ? a / b : NaN;
}

export function round(v: number, digits = 2): number {
  if (!Number.isFinite(v)) return v;
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

/** Formats for the table: thousands separators, fixed decimals. */
export function fmt(v: number | null | undefined, digits = 0): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "—";
  return v.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function fmtDist(d: Distribution, unit = "ms"): string {
  if (d.n === 0) return "—";
  return `p50 ${fmt(d.p50)} / p90 ${fmt(d.p90)} / max ${fmt(d.max)} ${unit} (n=${d.n})`;
}
