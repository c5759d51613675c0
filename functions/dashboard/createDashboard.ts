// The dashboard the coordinator serves at `GET /` and `GET /batches/{id}` (DESIGN.md §3): plain
// server-rendered HTML read through the Ledger port, with a strict Content-Security-Policy (only
// the page's own nonce'd script runs) on top of escaping every user-provided string.
import { randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Logger } from "../core/logger";
import type { Clock, Ledger } from "../core/ports";
import { batchListPage } from "./batchListPage";
import { batchPage } from "./batchPage";
import { loadBatchDetail, loadBatchList } from "./dashboardData";
import { html, type SafeHtml } from "./html";
import { contentSecurityPolicy, page } from "./layout";

export interface DashboardDeps {
  ledger: Ledger;
  clock: Clock;
  log: Logger;
}

export type DashboardHandler = (req: IncomingMessage, res: ServerResponse) => Promise<void>;

const listPageSize = 25;
const liveRefreshMs = 2000;
const idleListRefreshMs = 5000;

function messagePage(title: string, message: SafeHtml): SafeHtml {
  return html`<main><div class="crumbs"><a href="/">Batches</a> /</div>
  <div class="card empty"><h3>${title}</h3><p>${message}</p></div></main>`;
}

/** The ledger adapter's error for a page token it did not issue (matched by name: the dashboard knows only the port). */
const isBadPageToken = (err: unknown) =>
  (err as Error | undefined)?.constructor?.name === "InvalidPageTokenError";

export function createDashboard(deps: DashboardDeps): DashboardHandler {
  const { ledger, clock, log } = deps;

  return async (req, res) => {
    const nonce = randomBytes(16).toString("base64");
    const send = (status: number, title: string, body: SafeHtml, live = false, refreshMs = 0) => {
      res.statusCode = status;
      res.setHeader("content-type", "text/html; charset=utf-8");
      res.setHeader("cache-control", "no-store");
      res.setHeader("content-security-policy", contentSecurityPolicy(nonce));
      res.setHeader("x-content-type-options", "nosniff");
      res.setHeader("referrer-policy", "no-referrer");
      res.end(req.method === "HEAD" ? undefined : page({ title, live, refreshMs, nonce, body }));
    };

    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("allow", "GET, HEAD");
      send(
        405,
        "Method not allowed",
        messagePage("Method not allowed", html`The dashboard only answers GET.`),
      );
      return;
    }
    const url = new URL(req.url ?? "/", "http://dashboard.local");
    const path = url.pathname.replace(/\/+$/, "") || "/";
    const now = clock.now();
    try {
      if (path === "/" || path === "/batches") {
        const pageToken = url.searchParams.get("pageToken") ?? undefined;
        let list: Awaited<ReturnType<typeof loadBatchList>>;
        try {
          list = await loadBatchList(ledger, now, { limit: listPageSize, pageToken });
        } catch (err) {
          if (!isBadPageToken(err)) throw err;
          send(
            400,
            "Invalid page link",
            messagePage("Invalid page link", html`This page link is not valid. <a href="/">Start over</a>.`),
          );
          return;
        }
        const live = list.rows.some((r) => r.live);
        const title = live ? `Tally · ${list.rows.filter((r) => r.live).length} live` : "Tally · batches";
        send(
          200,
          title,
          batchListPage(list.rows, now, list.nextPageToken),
          live,
          live ? liveRefreshMs : idleListRefreshMs,
        );
        return;
      }
      const match = /^\/batches\/([^/]+)$/.exec(path);
      if (match) {
        let batchId: string;
        try {
          batchId = decodeURIComponent(match[1]!);
        } catch {
          send(
            400,
            "Invalid batch id",
            messagePage("Invalid batch id", html`The address does not hold a valid batch id.`),
          );
          return;
        }
        const detail = await loadBatchDetail(ledger, batchId, now);
        if (!detail) {
          send(
            404,
            "Batch not found",
            messagePage(
              "Batch not found",
              html`No batch <span class="mono">${batchId}</span> in the ledger.`,
            ),
          );
          return;
        }
        send(
          200,
          `${batchId} · ${detail.batch.status} · Tally`,
          batchPage(detail, now),
          detail.live,
          detail.live ? liveRefreshMs : 0,
        );
        return;
      }
      send(
        404,
        "Not found",
        messagePage("Not found", html`Nothing at <span class="mono">${url.pathname}</span>.`),
      );
    } catch (err) {
      log.error("dashboard.error", `dashboard failed to render ${url.pathname}: ${(err as Error).message}`, {
        path: url.pathname,
        error: (err as Error).stack ?? String(err),
      });
      send(
        500,
        "Dashboard error",
        messagePage("The dashboard could not read the ledger", html`${(err as Error).message}`),
      );
    }
  };
}
