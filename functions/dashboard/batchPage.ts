// `GET /batches/{id}`: one batch's state breakdown, completion over time, failures grouped by kind
// with their messages, and links to its items in the JSON API.
import { itemStatuses } from "../core/model";
import { completionChart } from "./completionChart";
import { barCounts, legend, stackedBar, statusBadge, timeTag } from "./components";
import type { BatchDetail, FailureGroup } from "./dashboardData";
import { formatCount, formatDuration, formatPercent, formatRate } from "./format";
import { html, pathSegment, type SafeHtml } from "./html";

const maxMessageChars = 400;
const clip = (s: string) => (s.length > maxMessageChars ? `${s.slice(0, maxMessageChars)}…` : s);

function failureGroup(g: FailureGroup): SafeHtml {
  return html`<section class="failure-group" data-kind="${g.kind}" data-count="${g.count}">
  <div class="failure-head"><span class="kind">${g.kind}</span><strong>${formatCount(g.count)}</strong>
    <span class="muted">item${g.count === 1 ? "" : "s"}</span></div>
  <ul class="failure-messages">${g.messages.map(
    (m) => html`<li><div class="message">${clip(m.message)}</div>
      <div class="examples">${m.count}× in the sample · e.g. <span class="mono">${m.itemIds.join(", ")}</span></div></li>`,
  )}</ul>
</section>`;
}

function failuresCard(d: BatchDetail, itemsHref: string): SafeHtml {
  if (d.counts.failed === 0)
    return html`<div class="card failures"><h2>Failures</h2><p class="muted">No failed items${d.live ? " so far" : ""}.</p></div>`;
  const sampleNote =
    d.sampledFailures < d.counts.failed
      ? html`<p class="muted">Messages from the first ${formatCount(d.sampledFailures)} of ${formatCount(d.counts.failed)} failed items.</p>`
      : "";
  return html`<div class="card failures"><h2>Failures by kind</h2>
  ${d.failures.map(failureGroup)}
  ${sampleNote}
  <p><a href="${itemsHref}?status=failed&amp;limit=100">All failed items (JSON) →</a></p></div>`;
}

function detailsCard(d: BatchDetail, now: number): SafeHtml {
  const b = d.batch;
  const exported = b.summary?.exportId
    ? html`<span class="mono">${b.summary.exportId}</span> (${formatCount(b.summary.exportedRows)} rows)`
    : html`<span class="muted">–</span>`;
  return html`<div class="card"><h2>Details</h2><dl class="details">
  <dt>Pipeline</dt><dd class="mono">${b.pipeline}</dd>
  <dt>Created</dt><dd>${timeTag(b.createdAt, now)}</dd>
  <dt>Started</dt><dd>${timeTag(b.startedAt, now)}</dd>
  <dt>Finished</dt><dd>${timeTag(b.finishedAt, now)}</dd>
  <dt>Threshold</dt><dd>${formatPercent(b.failureThreshold, 1)} failed at most for “partial”</dd>
  <dt>Generation</dt><dd>${b.generation}</dd>
  ${b.dependsOn.length > 0 ? html`<dt>Depends on</dt><dd>${b.dependsOn.map((id, i) => html`${i > 0 ? ", " : ""}<a class="mono" href="/batches/${pathSegment(id)}">${id}</a>`)}</dd>` : ""}
  ${b.reason ? html`<dt>Reason</dt><dd>${b.reason}</dd>` : ""}
  <dt>Export</dt><dd>${exported}</dd>
</dl></div>`;
}

export function batchPage(d: BatchDetail, now: number): SafeHtml {
  const b = d.batch;
  const done = d.counts.succeeded + d.counts.failed;
  const itemsHref = `/v1/batches/${pathSegment(b.batchId)}/items`;
  const c = barCounts(d.counts, d.total);
  const chart = d.chart
    ? completionChart(d.chart, d.total)
    : html`<p class="muted">No item has finished yet.</p>`;
  return html`<main data-batch-id="${b.batchId}">
  <div class="crumbs"><a href="/">Batches</a> /</div>
  <div class="page-head"><div><div class="title"><h1 class="mono">${b.batchId}</h1>${statusBadge(b.status)}</div>
    <div class="sub">pipeline <span class="mono">${b.pipeline}</span> · created ${timeTag(b.createdAt, now, true)}</div></div>
    <div class="live-note">${d.live ? html`refreshing · updated ${timeTag(now, now)}` : html`final`}</div></div>
  <div class="card breakdown">
    <div class="stats">
      <div class="stat"><div class="v" data-stat="done">${formatCount(done)} <span class="muted">/ ${formatCount(d.total)}${b.total === null ? "+" : ""}</span></div><div class="k">finished · ${formatPercent(done, d.total)}</div></div>
      <div class="stat"><div class="v" data-stat="rate">${formatRate(d.ratePerSecond)}</div><div class="k">items per second</div></div>
      <div class="stat"><div class="v" data-stat="duration">${formatDuration(d.elapsedMs)}</div><div class="k">${d.live ? "elapsed" : "duration"}</div></div>
      ${b.summary ? html`<div class="stat"><div class="v" data-stat="outcome">${b.summary.outcome}</div><div class="k">outcome</div></div>` : ""}
    </div>
    ${stackedBar(d.counts, d.total, "large")}
    ${legend(d.counts, d.total)}
  </div>
  <div class="card"><h2>Completion over time</h2>
    ${d.chart ? html`<div class="chart-caption muted">finished items since ${timeTag(d.chart.start, now)} · bars: items finished per ${formatDuration(d.chart.bucketMs)}</div>` : ""}
    ${chart}</div>
  <div class="grid">
    ${failuresCard(d, itemsHref)}
    ${detailsCard(d, now)}
  </div>
  <div class="card"><h2>Items (JSON API)</h2><div class="links">
    <a href="${itemsHref}?limit=100">all</a>
    ${itemStatuses.map((s) => html`<a href="${itemsHref}?status=${s}&amp;limit=100">${s} (${formatCount(s === "pending" ? d.counts.pending : c[s])})</a>`)}
    <a href="/v1/batches/${pathSegment(b.batchId)}">batch</a>
  </div></div>
</main>`;
}
