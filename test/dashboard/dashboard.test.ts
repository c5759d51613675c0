// The dashboard in a real headless Chromium (Debian's chromium driven by playwright-core) against
// batches made through the Ledger port on the Firestore emulator: the numbers on the page are the
// ledger's, the stacked bars' segment widths match the counts, the batch page groups failures by
// kind with their messages and charts completion, a live page refreshes itself, user strings are
// escaped (XSS), and screenshots are written to test/artifacts/.
import { mkdirSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FirestoreLedger } from "../../functions/adapters/firestoreLedger";
import { createLogger } from "../../functions/core/logger";
import { systemClock } from "../../functions/core/ports";
import { createDashboard } from "../../functions/dashboard";
import { testFirestore, uniqueProjectId, waitFor } from "../support/cloud";
import { chromiumPath, ensureChromium } from "./ensureChromium";
import { type BatchSpec, LedgerFixture, type MadeBatch } from "./ledgerFixture";

const availability = ensureChromium();
const artifacts = join(__dirname, "..", "artifacts");

interface Served {
  url: string;
  fixture: LedgerFixture;
  close(): Promise<void>;
}

async function serveDashboard(projectId: string): Promise<Served> {
  const ledger = new FirestoreLedger(testFirestore(projectId));
  const log = createLogger({ component: "dashboard-test", sink: () => {} });
  const handler = createDashboard({ ledger, clock: systemClock, log });
  const server: Server = createServer((req, res) => {
    handler(req, res).catch((err) => {
      res.statusCode = 500;
      res.end(String(err));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const fixture = new LedgerFixture(ledger);
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    fixture,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await fixture.close();
    },
  };
}

const specs: BatchSpec[] = [
  { batchId: "warmup-demo", items: 40, succeed: 40, ageMs: 9 * 60_000, spanMs: 8_000 },
  {
    batchId: "thumbnails-q3",
    pipeline: "text-stats",
    items: 30,
    succeed: 21,
    failures: [{ kind: "permanent", message: "image is not decodable: truncated JPEG stream", count: 9 }],
    ageMs: 7 * 60_000,
    spanMs: 12_000,
  },
  {
    batchId: "reindex-catalog",
    items: 100,
    succeed: 92,
    failures: [
      {
        kind: "permanent",
        message: 'invalid SKU "AB-00-" (expected two letters, a dash and six digits)',
        count: 3,
      },
      { kind: "permanent", message: "price must not be negative", count: 2 },
      { kind: "attempts_exhausted", message: "upstream catalog API: 503 Service Unavailable", count: 2 },
      {
        kind: "dead_lettered",
        message: "delivery dead-lettered after 5 attempts (worker crashed)",
        count: 1,
      },
    ],
    failureThreshold: 0.1,
    ageMs: 4 * 60_000,
    spanMs: 24_000,
  },
  {
    batchId: "ingest-events",
    items: 120,
    succeed: 52,
    failures: [{ kind: "timeout", message: "step fetch exceeded its 30 s timeout", count: 2 }],
    running: 6,
    finalize: false,
    ageMs: 70_000,
    spanMs: 60_000,
  },
];

interface SegmentReading {
  state: string;
  count: number;
  width: number;
}

/** The bar's width and each segment's rendered width, as the browser laid them out. */
async function readBar(
  page: Page,
  barSelector: string,
): Promise<{ width: number; total: number; segments: SegmentReading[] }> {
  return page.$eval(barSelector, (bar) => ({
    width: bar.getBoundingClientRect().width,
    total: Number(bar.getAttribute("data-total")),
    segments: Array.from(bar.querySelectorAll(".seg")).map((s) => ({
      state: s.getAttribute("data-state") ?? "",
      count: Number(s.getAttribute("data-count")),
      width: s.getBoundingClientRect().width,
    })),
  }));
}

function expectBarMatches(reading: { width: number; segments: SegmentReading[] }, made: MadeBatch): void {
  const c = made.counts;
  const total = made.spec.items;
  const expected: Record<string, number> = {
    succeeded: c.succeeded,
    failed: c.failed,
    running: c.running,
    pending: total - c.succeeded - c.failed - c.running,
  };
  expect(reading.segments.map((s) => s.state)).toEqual(["succeeded", "failed", "running", "pending"]);
  for (const seg of reading.segments) {
    expect(seg.count, `${made.spec.batchId} ${seg.state} count`).toBe(expected[seg.state]);
    expect(Math.abs(seg.width - (expected[seg.state]! / total) * reading.width)).toBeLessThan(0.75);
  }
  expect(reading.segments.reduce((a, s) => a + s.width, 0)).toBeCloseTo(reading.width, 0);
}

describe.skipIf(!availability.ok)("dashboard in headless Chromium", () => {
  let browser: Browser;
  let served: Served;
  let made: MadeBatch[];

  beforeAll(async () => {
    mkdirSync(artifacts, { recursive: true });
    served = await serveDashboard(uniqueProjectId("dash"));
    made = [];
    for (const spec of specs) made.push(await served.fixture.make(spec));
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
  });

  afterAll(async () => {
    await browser?.close();
    await served?.close();
  });

  async function openPage(path: string): Promise<{ page: Page; errors: string[] }> {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(m.text());
    });
    const res = await page.goto(`${served.url}${path}`);
    expect(res?.status()).toBe(200);
    return { page, errors };
  }

  it("the batch list shows every batch newest first with the ledger's numbers and proportional bars", async () => {
    expect(made.map((m) => m.batch.status)).toEqual(["succeeded", "failed", "partial", "running"]);
    const { page, errors } = await openPage("/");
    const ids = await page.$$eval("tr[data-batch-id]", (rows) =>
      rows.map((r) => r.getAttribute("data-batch-id")),
    );
    expect(ids).toEqual(["ingest-events", "reindex-catalog", "thumbnails-q3", "warmup-demo"]);
    for (const m of made) {
      const row = `tr[data-batch-id="${m.spec.batchId}"]`;
      expect(await page.getAttribute(row, "data-status")).toBe(m.batch.status);
      expect(await page.textContent(`${row} [data-col=succeeded]`)).toBe(String(m.counts.succeeded));
      expect(await page.textContent(`${row} [data-col=failed]`)).toBe(String(m.counts.failed));
      expect(await page.getAttribute(`${row} .done`, "data-done")).toBe(
        String(m.counts.succeeded + m.counts.failed),
      );
      expect(await page.textContent(`${row} .total`)).toBe(String(m.spec.items));
      expectBarMatches(await readBar(page, `${row} .bar`), m);
    }
    // A live batch on the page: the page re-fetches itself.
    expect(await page.getAttribute("body", "data-live")).toBe("true");
    await page.screenshot({ path: join(artifacts, "dashboard.png"), fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
  });

  it("the batch page shows the breakdown, completion chart and failures grouped by kind", async () => {
    const m = made.find((x) => x.spec.batchId === "reindex-catalog")!;
    const { page, errors } = await openPage("/batches/reindex-catalog");
    expect(await page.textContent("h1")).toBe("reindex-catalog");
    expect(await page.getAttribute("[data-status]", "data-status")).toBe("partial");
    expect(await page.textContent("[data-stat=outcome]")).toBe("partial");
    expectBarMatches(await readBar(page, ".breakdown .bar"), m);
    const legend = await page.$$eval(".legend li", (lis) =>
      lis.map((li) => [
        li.getAttribute("data-state"),
        Number(li.querySelector(".legend-count")?.getAttribute("data-count")),
      ]),
    );
    expect(legend).toEqual([
      ["succeeded", 92],
      ["failed", 8],
      ["running", 0],
      ["pending", 0],
    ]);

    // Every finished item falls in one chart bucket.
    expect(await page.getAttribute("svg.chart", "data-finished")).toBe("100");
    expect(await page.getAttribute("svg.chart", "data-total")).toBe("100");

    const groups = await page.$$eval(".failure-group", (els) =>
      els.map((g) => ({
        kind: g.getAttribute("data-kind"),
        count: Number(g.getAttribute("data-count")),
        messages: Array.from(g.querySelectorAll(".message")).map((e) => e.textContent),
      })),
    );
    expect(groups).toEqual([
      {
        kind: "permanent",
        count: 5,
        messages: [
          'invalid SKU "AB-00-" (expected two letters, a dash and six digits)',
          "price must not be negative",
        ],
      },
      { kind: "attempts_exhausted", count: 2, messages: ["upstream catalog API: 503 Service Unavailable"] },
      {
        kind: "dead_lettered",
        count: 1,
        messages: ["delivery dead-lettered after 5 attempts (worker crashed)"],
      },
    ]);
    const failedLink = await page.getAttribute('a[href*="status=failed"]', "href");
    expect(failedLink).toBe("/v1/batches/reindex-catalog/items?status=failed&limit=100");
    // A final batch's page does not refresh.
    expect(await page.getAttribute("body", "data-live")).toBe("false");
    await page.screenshot({ path: join(artifacts, "dashboard-batch.png"), fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
  });

  it("a live batch's page refreshes itself without a reload", async () => {
    const live = made.find((x) => x.spec.batchId === "ingest-events")!;
    const { page, errors } = await openPage("/batches/ingest-events");
    const doneBefore = live.counts.succeeded + live.counts.failed;
    expect(await page.textContent("[data-stat=done]")).toContain(`${doneBefore} / 120`);
    await page.evaluate(() => {
      (window as unknown as { __sameDocument: boolean }).__sameDocument = true;
    });
    // The next pending item (after the finished and the running ones) completes in the ledger.
    await served.fixture.completeOne("ingest-events", doneBefore + (live.spec.running ?? 0));
    await waitFor(
      "the live page to show the new count",
      async () => ((await page.textContent("[data-stat=done]")) ?? "").includes(`${doneBefore + 1} / 120`),
      20_000,
      200,
    );
    expect(
      await page.evaluate(() => (window as unknown as { __sameDocument?: boolean }).__sameDocument),
    ).toBe(true);
    expect(errors).toEqual([]);
    await page.close();
  });

  it("answers unknown batches with 404 and other methods with 405, with a strict CSP", async () => {
    const missing = await fetch(`${served.url}/batches/no-such-batch`);
    expect(missing.status).toBe(404);
    expect(await missing.text()).toContain('No batch <span class="mono">no-such-batch</span>');
    const post = await fetch(`${served.url}/`, { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
    const home = await fetch(`${served.url}/`);
    expect(home.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(home.headers.get("content-security-policy")).toMatch(/script-src 'nonce-[^']+'/);
  });
});

describe.skipIf(!availability.ok)("dashboard escaping (XSS)", () => {
  const hostileId = `x"><img src=x onerror="window.__xss=1">`;
  const hostilePipeline = "<script>window.__xss=2</script>";
  const hostileMessage = `<img src=x onerror=window.__xss=3></script><script>window.__xss=4</script>`;
  let browser: Browser;
  let served: Served;

  beforeAll(async () => {
    served = await serveDashboard(uniqueProjectId("dashxss"));
    await served.fixture.make({
      batchId: hostileId,
      pipeline: hostilePipeline,
      items: 4,
      succeed: 2,
      failures: [{ kind: "permanent", message: hostileMessage, count: 2 }],
      failureThreshold: 0.5,
      ageMs: 60_000,
      spanMs: 5_000,
    });
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ["--headless", "--no-sandbox", "--disable-gpu"],
    });
  });

  afterAll(async () => {
    await browser?.close();
    await served?.close();
  });

  for (const path of ["/", `/batches/${encodeURIComponent(hostileId)}`]) {
    it(`shows hostile strings as text on ${path === "/" ? "the list" : "the batch page"}`, async () => {
      const page = await browser.newPage();
      // Even the CSP aside, nothing injected may run: the strings must arrive as text.
      const res = await page.goto(`${served.url}${path}`);
      expect(res?.status()).toBe(200);
      expect(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
      expect(await page.locator("img").count()).toBe(0);
      expect(await page.locator("script").count()).toBe(1);
      const text = (await page.textContent("main")) ?? "";
      expect(text).toContain(hostileId);
      expect(text).toContain(hostilePipeline);
      if (path !== "/") expect(await page.textContent(".failure-group .message")).toBe(hostileMessage);
      else
        expect(await page.getAttribute("tr[data-batch-id] a", "href")).toBe(
          `/batches/${encodeURIComponent(hostileId)}`,
        );
      await page.close();
    });
  }
});
