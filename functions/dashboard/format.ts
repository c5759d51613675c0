// Number, time and duration formats shared by the dashboard's pages.

export const formatCount = (n: number) => n.toLocaleString("en-US");

export function formatDuration(ms: number): string {
  const s = Math.max(0, ms) / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

export function formatRate(perSecond: number | null): string {
  if (perSecond === null) return "–";
  if (perSecond >= 100) return `${formatCount(Math.round(perSecond))}/s`;
  return `${perSecond.toFixed(1)}/s`;
}

export function formatPercent(part: number, whole: number): string {
  if (whole === 0) return "0%";
  const p = (part / whole) * 100;
  if (p > 0 && p < 0.1) return "<0.1%";
  return `${p >= 10 || Number.isInteger(p) ? Math.round(p) : p.toFixed(1)}%`;
}

/** UTC on the server; the page's script rewrites `<time>` elements into the viewer's local time. */
export function formatTime(epochMs: number): string {
  return `${new Date(epochMs).toISOString().replace("T", " ").slice(0, 19)} UTC`;
}

export function formatAge(epochMs: number, now: number): string {
  const s = Math.max(0, Math.round((now - epochMs) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86_400)}d ago`;
}
