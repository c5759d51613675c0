// Small pieces shared by both pages: the stacked progress bar, status badges, legend, times.
import type { BatchCounts, BatchStatus } from "../core/model";
import { formatAge, formatCount, formatPercent, formatTime } from "./format";
import { html, type SafeHtml } from "./html";

export const barStates = ["succeeded", "failed", "running", "pending"] as const;
export type BarState = (typeof barStates)[number];

/** Per-state counts for the bar; items announced but not yet received count as pending. */
export function barCounts(counts: BatchCounts, total: number): Record<BarState, number> {
  const counted = counts.succeeded + counts.failed + counts.running + counts.pending;
  return {
    succeeded: counts.succeeded,
    failed: counts.failed,
    running: counts.running,
    pending: counts.pending + Math.max(0, total - counted),
  };
}

/** Segment widths are exact percentages of the total, so they can be checked against the counts. */
export function stackedBar(counts: BatchCounts, total: number, size: "small" | "large" = "small"): SafeHtml {
  const c = barCounts(counts, total);
  const title = barStates.map((s) => `${s} ${formatCount(c[s])}`).join(", ");
  const segments = barStates.map((s) => {
    const width = total > 0 ? (c[s] / total) * 100 : 0;
    return html`<span class="seg seg-${s}" data-state="${s}" data-count="${c[s]}" style="width:${width.toFixed(4)}%"></span>`;
  });
  return html`<div class="bar bar-${size}" role="img" aria-label="${title}" title="${title}" data-total="${total}">${segments}</div>`;
}

export function legend(counts: BatchCounts, total: number): SafeHtml {
  const c = barCounts(counts, total);
  return html`<ul class="legend">${barStates.map(
    (s) =>
      html`<li data-state="${s}"><span class="dot seg-${s}"></span><span class="legend-label">${s}</span>
        <strong class="legend-count" data-count="${c[s]}">${formatCount(c[s])}</strong>
        <span class="muted">${formatPercent(c[s], total)}</span></li>`,
  )}</ul>`;
}

const badgeTone: Record<BatchStatus, string> = {
  blocked: "idle",
  submitting: "live",
  running: "live",
  finalizing: "live",
  succeeded: "good",
  partial: "warn",
  failed: "bad",
  cancelled: "idle",
};

export function statusBadge(status: BatchStatus): SafeHtml {
  const tone = badgeTone[status] ?? "idle";
  return html`<span class="badge badge-${tone}" data-status="${status}">${tone === "live" ? html`<span class="pulse"></span>` : ""}${status}</span>`;
}

export function timeTag(epochMs: number | null, now: number, relative = false): SafeHtml {
  if (epochMs === null) return html`<span class="muted">–</span>`;
  const iso = new Date(epochMs).toISOString();
  return html`<time datetime="${iso}" title="${formatTime(epochMs)}"${relative ? html` data-relative` : ""}>${relative ? formatAge(epochMs, now) : formatTime(epochMs)}</time>`;
}
