// The page shell: inline CSS, the header, and the small inline script that turns UTC times into
// the viewer's local time and re-fetches the page while something is live (swapping <main>, so
// the page does not flash or lose its scroll position). No external assets: it works offline.
import { html, raw, type SafeHtml } from "./html";

const css = `
:root{--bg:#f4f5f7;--card:#fff;--border:#e2e5ea;--line:#eef0f3;--text:#18212f;--muted:#687386;
--succeeded:#1f9d55;--failed:#e5484d;--running:#3b82f6;--pending:#dde1e7;--accent:#4f46e5}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
background:var(--bg);color:var(--text);-webkit-font-smoothing:antialiased}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
.top{background:#111827;color:#e5e7eb;padding:0 28px;height:52px;display:flex;align-items:center;gap:18px}
.brand{color:#fff;font-weight:650;font-size:16px;display:flex;align-items:center;gap:9px}
.brand:hover{text-decoration:none}
.logo{display:inline-flex;gap:2px;align-items:flex-end;height:16px}
.logo i{display:block;width:4px;border-radius:1px}
.logo i:nth-child(1){height:8px;background:var(--succeeded)}.logo i:nth-child(2){height:12px;background:var(--running)}
.logo i:nth-child(3){height:16px;background:#a5b4fc}
.top .where{color:#9ca3af;font-size:13px;margin-left:auto}
main{max-width:1180px;margin:26px auto 40px;padding:0 28px}
h1{font-size:21px;line-height:1.3;margin:0;font-weight:650;word-break:break-all}
h2{font-size:13px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);margin:0 0 14px;font-weight:600}
h3{font-size:14px;margin:0}
.page-head{display:flex;align-items:flex-end;justify-content:space-between;gap:16px;margin-bottom:18px}
.page-head .title{display:flex;align-items:center;gap:12px;flex-wrap:wrap}
.sub{color:var(--muted);margin-top:4px}
.muted{color:var(--muted)}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace}
.card{background:var(--card);border:1px solid var(--border);border-radius:12px;padding:18px 20px;margin-bottom:18px;
box-shadow:0 1px 2px rgba(16,24,40,.04)}
.card.flush{padding:4px 0}
.grid{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:18px;margin-bottom:18px;align-items:start}
.grid>.card{margin-bottom:0}
@media (max-width:900px){.grid{grid-template-columns:1fr}}
table{width:100%;border-collapse:collapse}
th{text-align:left;font-weight:600;color:var(--muted);font-size:11.5px;text-transform:uppercase;letter-spacing:.05em;
padding:10px 14px;border-bottom:1px solid var(--border);white-space:nowrap}
td{padding:12px 14px;border-bottom:1px solid var(--line);vertical-align:middle}
tbody tr:last-child td{border-bottom:0}
tbody tr:hover{background:#fafbfc}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.batch-id{font-weight:600;word-break:break-all}
.progress-cell{min-width:220px;width:30%}
.progress-text{font-size:12px;color:var(--muted);margin-top:5px;font-variant-numeric:tabular-nums}
.bar{display:flex;width:100%;overflow:hidden;border-radius:999px;background:var(--pending)}
.bar-small{height:8px}.bar-large{height:16px;margin:14px 0 16px}
.seg{display:block;height:100%;flex:none}
.seg-succeeded{background:var(--succeeded)}.seg-failed{background:var(--failed)}
.seg-running{background:var(--running)}.seg-pending{background:var(--pending)}
.badge{display:inline-flex;align-items:center;gap:6px;padding:2px 10px;border-radius:999px;font-size:12px;font-weight:600;
white-space:nowrap;border:1px solid transparent}
.badge-good{background:#e7f6ed;color:#17703d;border-color:#c5e8d3}.badge-warn{background:#fff4e0;color:#9a5b00;border-color:#f6dcae}
.badge-bad{background:#fdecec;color:#b42328;border-color:#f6c9ca}.badge-live{background:#e8f0fe;color:#1d4fc4;border-color:#c9dafc}
.badge-idle{background:#f0f1f4;color:#4b5563;border-color:#e0e3e8}
.pulse{width:7px;height:7px;border-radius:50%;background:currentColor;animation:pulse 1.4s ease-in-out infinite}
@keyframes pulse{50%{opacity:.25}}
.stats{display:flex;gap:36px;flex-wrap:wrap}
.stat .v{font-size:24px;font-weight:650;font-variant-numeric:tabular-nums;line-height:1.2}
.stat .k{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.05em}
.legend{list-style:none;margin:0;padding:0;display:flex;gap:26px;flex-wrap:wrap}
.legend li{display:flex;align-items:center;gap:7px}
.legend-label{color:var(--muted)}
.dot{width:10px;height:10px;border-radius:3px;display:inline-block}
.chart{width:100%;height:auto;display:block}
.chart-caption{font-size:12px;margin:-8px 0 8px}
.chart-grid{stroke:#edf0f3;stroke-width:1}
.chart-total{stroke:#9aa3b2;stroke-dasharray:4 4;stroke-width:1}
.chart-area{fill:rgba(31,157,85,.13)}
.chart-line{fill:none;stroke:var(--succeeded);stroke-width:2;stroke-linejoin:round}
.chart-rate{fill:rgba(59,130,246,.28)}
.chart-label{font-size:12px;fill:#7b8494;font-family:inherit}
dl.details{display:grid;grid-template-columns:max-content 1fr;gap:8px 18px;margin:0}
dl.details dt{color:var(--muted)}dl.details dd{margin:0;word-break:break-word}
.failure-group{border-top:1px solid var(--line);padding:14px 0}
.failure-group:first-of-type{border-top:0;padding-top:2px}
.failure-head{display:flex;align-items:center;gap:10px;margin-bottom:8px}
.kind{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;background:#fdecec;color:#b42328;
padding:1px 8px;border-radius:6px}
.failure-messages{list-style:none;margin:0;padding:0}
.failure-messages li{padding:6px 0 6px 12px;border-left:3px solid #f3d3d4;margin:6px 0}
.message{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;white-space:pre-wrap;word-break:break-word}
.examples{font-size:12px;color:var(--muted);margin-top:2px}
.empty{text-align:center;padding:44px 20px;color:var(--muted)}
.empty code,.cmd{background:#f0f1f4;border-radius:6px;padding:3px 8px;color:var(--text)}
.links{display:flex;gap:18px;flex-wrap:wrap}
.pager{display:flex;justify-content:flex-end;gap:16px}
.live-note{font-size:12px;color:var(--muted);white-space:nowrap}
.crumbs{font-size:13px;color:var(--muted);margin-bottom:6px}
`;

const script = `(function(){
function localize(root){root.querySelectorAll("time[datetime]").forEach(function(el){
if(el.hasAttribute("data-relative"))return;var d=new Date(el.getAttribute("datetime"));
if(!isNaN(d.getTime()))el.textContent=d.toLocaleString();});}
localize(document);
function delay(){return Number(document.body.getAttribute("data-refresh-ms"))||0;}
function tick(){if(!delay())return;
fetch(location.href,{headers:{accept:"text/html"},cache:"no-store"}).then(function(r){return r.text();}).then(function(text){
var doc=new DOMParser().parseFromString(text,"text/html");var next=doc.querySelector("main");
if(next){localize(next);document.querySelector("main").replaceWith(document.adoptNode(next));document.title=doc.title;}
document.body.setAttribute("data-live",doc.body.getAttribute("data-live")||"false");
document.body.setAttribute("data-refresh-ms",doc.body.getAttribute("data-refresh-ms")||"0");
if(delay())setTimeout(tick,delay());}).catch(function(){setTimeout(tick,Math.max(delay(),2000)*3);});}
if(delay())setTimeout(tick,delay());
})();`;

export interface PageOptions {
  title: string;
  /** Something on the page is still changing. */
  live: boolean;
  /** Re-fetch the page this often (ms); 0: never. */
  refreshMs: number;
  nonce: string;
  body: SafeHtml;
}

export function page(opts: PageOptions): string {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${opts.title}</title>
<link rel="icon" href="data:,">
${opts.refreshMs > 0 ? html`<noscript><meta http-equiv="refresh" content="${Math.max(2, Math.round(opts.refreshMs / 1000))}"></noscript>` : ""}
<style>${raw(css)}</style>
</head>
<body data-live="${opts.live ? "true" : "false"}" data-refresh-ms="${opts.refreshMs}">
<header class="top"><a class="brand" href="/"><span class="logo"><i></i><i></i><i></i></span>Tally</a>
<span class="where">batch fan-out · ledger view</span></header>
${opts.body}
<script nonce="${opts.nonce}">${raw(script)}</script>
</body>
</html>
`.value;
}

export function contentSecurityPolicy(nonce: string): string {
  return [
    "default-src 'none'",
    "style-src 'unsafe-inline'",
    `script-src 'nonce-${nonce}'`,
    "connect-src 'self'",
    "img-src data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
}
