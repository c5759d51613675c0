// `GET /`: batches newest first, each with a stacked progress bar by item state, outcome and rate.
import { stackedBar, statusBadge, timeTag } from "./components";
import type { BatchRow } from "./dashboardData";
import { formatCount, formatDuration, formatPercent, formatRate } from "./format";
import { html, pathSegment, type SafeHtml } from "./html";

function batchRow(r: BatchRow, now: number): SafeHtml {
  const b = r.batch;
  const done = r.counts.succeeded + r.counts.failed;
  const href = `/batches/${pathSegment(b.batchId)}`;
  return html`<tr data-batch-id="${b.batchId}" data-status="${b.status}">
  <td><a class="batch-id mono" href="${href}">${b.batchId}</a><div class="muted">${b.pipeline}${b.dependsOn.length > 0 ? ` · after ${b.dependsOn.length} batch${b.dependsOn.length === 1 ? "" : "es"}` : ""}</div></td>
  <td>${statusBadge(b.status)}</td>
  <td class="progress-cell">${stackedBar(r.counts, r.total)}
    <div class="progress-text"><span class="done" data-done="${done}">${formatCount(done)}</span> / <span class="total">${formatCount(r.total)}</span>${b.total === null ? "+" : ""} · ${formatPercent(done, r.total)}</div></td>
  <td class="num" data-col="succeeded">${formatCount(r.counts.succeeded)}</td>
  <td class="num" data-col="failed">${formatCount(r.counts.failed)}</td>
  <td class="num" data-col="rate">${formatRate(r.ratePerSecond)}</td>
  <td class="num">${formatDuration(r.elapsedMs)}</td>
  <td class="num">${timeTag(b.createdAt, now, true)}</td>
</tr>`;
}

export function batchListPage(rows: BatchRow[], now: number, nextPageToken: string | undefined): SafeHtml {
  const live = rows.filter((r) => r.live).length;
  const table =
    rows.length === 0
      ? html`<div class="card empty"><h3>No batches yet</h3>
          <p>Submit one from a second terminal:</p>
          <p><code>npx tally submit --pipeline demo --demo 500 --watch</code></p></div>`
      : html`<div class="card flush"><table class="batches">
          <thead><tr><th>Batch</th><th>Status</th><th>Progress</th><th class="num">Succeeded</th><th class="num">Failed</th>
          <th class="num">Rate</th><th class="num">Duration</th><th class="num">Created</th></tr></thead>
          <tbody>${rows.map((r) => batchRow(r, now))}</tbody></table></div>`;
  return html`<main>
  <div class="page-head"><div><h1>Batches</h1>
    <div class="sub">newest first · ${rows.length} shown${live > 0 ? ` · ${live} live` : ""}</div></div>
    <div class="live-note">updated ${timeTag(now, now)}</div></div>
  ${table}
  ${nextPageToken ? html`<div class="pager"><a href="/?pageToken=${encodeURIComponent(nextPageToken)}">Older batches →</a></div>` : ""}
</main>`;
}
