// The completion-over-time chart of the batch page, as inline SVG (no external assets, so it works
// offline): the cumulative number of finished items (area) over the batch's lifetime, with the
// items finished per bucket as faint bars underneath.
import type { CompletionSeries } from "./dashboardData";
import { formatCount, formatDuration, formatTime } from "./format";
import { html, type SafeHtml } from "./html";

// Drawn at about the size it is shown (the batch page's content is ~1100 px wide), so text stays
// at its intended size.
const W = 1080;
const H = 260;
const M = { left: 52, right: 16, top: 14, bottom: 30 };
const plotW = W - M.left - M.right;
const plotH = H - M.top - M.bottom;

const f = (n: number) => n.toFixed(1);

export function completionChart(series: CompletionSeries, total: number): SafeHtml {
  const finished = series.buckets.reduce((a, b) => a + b, 0);
  const yMax = Math.max(total, finished, 1);
  const span = series.end - series.start;
  const x = (t: number) => M.left + ((t - series.start) / span) * plotW;
  const y = (v: number) => M.top + plotH - (v / yMax) * plotH;

  let cumulative = 0;
  const points: Array<[number, number]> = [[x(series.start), y(0)]];
  series.buckets.forEach((n, i) => {
    cumulative += n;
    points.push([x(series.start + (i + 1) * series.bucketMs), y(cumulative)]);
  });
  const line = points.map(([px, py], i) => `${i === 0 ? "M" : "L"}${f(px)},${f(py)}`).join(" ");
  const area = `${line} L${f(points[points.length - 1]![0])},${f(y(0))} Z`;

  const maxBucket = Math.max(...series.buckets, 1);
  const barW = plotW / series.buckets.length;
  const bars = series.buckets.map((n, i) => {
    if (n === 0) return html``;
    const h = (n / maxBucket) * plotH * 0.35;
    const from = series.start + i * series.bucketMs;
    const tip = `${formatTime(from)} +${formatDuration(series.bucketMs)}: ${formatCount(n)} finished`;
    return html`<rect class="chart-rate" x="${f(M.left + i * barW + 1)}" y="${f(M.top + plotH - h)}" width="${f(Math.max(1, barW - 2))}" height="${f(h)}"><title>${tip}</title></rect>`;
  });

  const gridValues = [0, 0.25, 0.5, 0.75, 1].map((p) => Math.round(p * yMax));
  const grid = gridValues.map(
    (v) =>
      html`<line class="chart-grid" x1="${M.left}" x2="${W - M.right}" y1="${f(y(v))}" y2="${f(y(v))}"></line>
      <text class="chart-label" x="${M.left - 8}" y="${f(y(v) + 4)}" text-anchor="end">${formatCount(v)}</text>`,
  );
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((p) => {
    const anchor = p === 0 ? "start" : p === 1 ? "end" : "middle";
    return html`<text class="chart-label" x="${f(M.left + p * plotW)}" y="${H - 10}" text-anchor="${anchor}">${p === 0 ? "0 s" : `+${formatDuration(p * span)}`}</text>`;
  });

  const description = `${formatCount(finished)} of ${formatCount(total)} items finished between ${formatTime(series.start)} and ${formatTime(series.end)}`;
  return html`<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="${description}" data-finished="${finished}" data-total="${total}" preserveAspectRatio="xMidYMid meet">
    <title>${description}</title>
    ${grid}
    <path class="chart-area" d="${area}"></path>
    ${bars}
    <path class="chart-line" d="${line}"></path>
    ${total > 0 ? html`<line class="chart-total" x1="${M.left}" x2="${W - M.right}" y1="${f(y(total))}" y2="${f(y(total))}"></line>` : ""}
    ${ticks}
  </svg>`;
}
