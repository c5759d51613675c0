// HTTP pipeline declarations (issue #17 §4) as configuration: parsed and validated with every bad
// field named (TALLY_HTTP_PIPELINES, loadConfig, the registry); the token bucket's documented bound;
// the identity token source against a fake metadata server on 127.0.0.1 (real HTTP); Retry-After.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createIdentityTokenSource } from "../../functions/auth/identityToken";
import { loadConfig } from "../../functions/config";
import { parseHttpPipelineDeclarations, parseRetryAfter } from "../../functions/pipelines/httpPipeline";
import { instanceShare, PipelineGate, startsBound, TokenBucket } from "../../functions/pipelines/rateLimiter";
import { getPipeline, pipelineNames } from "../../functions/pipelines/registry";
import { parseStartArgs } from "../../local/stackOptions";

const ok = { name: "predict", url: "https://predict.example.com/v1", timeoutSeconds: 30 };
const problems = (value: unknown) => {
  const r = parseHttpPipelineDeclarations(value, "TALLY_HTTP_PIPELINES", ["demo", "text-stats"]);
  return r.ok ? [] : r.problems;
};

describe("declarations", () => {
  it("accepts a minimal and a full declaration; auth defaults to none", () => {
    const r = parseHttpPipelineDeclarations(
      JSON.stringify([
        ok,
        {
          name: "llm",
          steps: [
            { name: "prompt", url: "http://127.0.0.1:9000/prompt", timeoutSeconds: 120 },
            { name: "judge", url: "http://127.0.0.1:9000/judge" },
          ],
          timeoutSeconds: 300,
          headers: { "x-team": "a" },
          secretHeaders: { "x-api-key": "LLM_KEY" },
          auth: "oidc",
          audience: "https://llm.example.com",
          concurrency: 4,
          ratePerSecond: 2.5,
          burst: 3,
          maxAttempts: 4,
        },
      ]),
      "TALLY_HTTP_PIPELINES",
    );
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.declarations[0]!.auth).toBe("none");
    expect(parseHttpPipelineDeclarations(undefined, "X")).toEqual({ ok: true, declarations: [] });
  });

  it("names each bad field, all at once", () => {
    expect(
      problems([
        {
          name: "Bad Name",
          url: "ftp://x",
          timeoutSeconds: 0,
          concurrency: 1.5,
          ratePerSecond: -1,
          extra: 1,
        },
        {
          name: "two",
          timeoutSeconds: 10,
          steps: [
            { name: "a", url: "nope" },
            { name: "a", url: "http://x" },
          ],
        },
        { name: "three", url: "http://x", timeoutSeconds: 10, headers: { "x-tally-item-id": "1" }, burst: 2 },
        {
          name: "four",
          url: "http://x",
          timeoutSeconds: 10,
          secretHeaders: { "x-key": "not a var" },
          audience: "a",
        },
      ]),
    ).toEqual([
      "TALLY_HTTP_PIPELINES[0].name: must match [a-z][a-z0-9-]* (at most 63 characters)",
      "TALLY_HTTP_PIPELINES[0].url: must be an http:// or https:// URL without credentials",
      "TALLY_HTTP_PIPELINES[0].timeoutSeconds: Too small: expected number to be >=1",
      "TALLY_HTTP_PIPELINES[0].concurrency: Invalid input: expected int, received number",
      "TALLY_HTTP_PIPELINES[0].ratePerSecond: Too small: expected number to be >0",
      'TALLY_HTTP_PIPELINES[0].extra: Unrecognized key: "extra"',
      "TALLY_HTTP_PIPELINES[1].steps[0].url: must be an http:// or https:// URL without credentials",
      'TALLY_HTTP_PIPELINES[1].steps[1].name: step "a" is declared twice',
      "TALLY_HTTP_PIPELINES[2].headers.x-tally-item-id: is set by Tally and cannot be declared",
      "TALLY_HTTP_PIPELINES[2].burst: only applies with ratePerSecond",
      "TALLY_HTTP_PIPELINES[3].secretHeaders.x-key: must be an environment variable name",
      'TALLY_HTTP_PIPELINES[3].audience: only applies with auth "oidc"',
    ]);
  });

  it("refuses url and steps together or neither, duplicate step and pipeline names, code pipeline names, bad JSON", () => {
    expect(problems([{ name: "x", timeoutSeconds: 1 }])).toEqual([
      "TALLY_HTTP_PIPELINES[0].url: declare exactly one of url or steps",
    ]);
    expect(
      problems([{ name: "x", timeoutSeconds: 1, url: "http://a", steps: [{ name: "s", url: "http://a" }] }]),
    ).toEqual(["TALLY_HTTP_PIPELINES[0].url: declare exactly one of url or steps"]);
    expect(
      problems([
        {
          name: "x",
          timeoutSeconds: 1,
          steps: [
            { name: "s", url: "http://a" },
            { name: "s", url: "http://b" },
          ],
        },
      ]),
    ).toEqual(['TALLY_HTTP_PIPELINES[0].steps[1].name: step "s" is declared twice']);
    expect(problems([ok, ok])).toEqual([
      'TALLY_HTTP_PIPELINES[1].name: pipeline "predict" is declared twice',
    ]);
    expect(problems([{ ...ok, name: "demo" }])).toEqual([
      'TALLY_HTTP_PIPELINES[0].name: "demo" is already a code pipeline; choose another name',
    ]);
    expect(problems("[{")[0]).toMatch(/^TALLY_HTTP_PIPELINES: not valid JSON/);
    expect(problems({ name: "x" })).toEqual([
      "TALLY_HTTP_PIPELINES: Invalid input: expected array, received object",
    ]);
  });

  it("cloudRunService: a service name, optional region and project, only with auth oidc, and the service a run.app URL shows", () => {
    const run = (host: string) => `https://${host}/v1/predict`;
    const target = { ...ok, auth: "oidc", url: run("predict-123456789012.europe-west1.run.app") };
    expect(problems([{ ...target, cloudRunService: { name: "predict" } }])).toEqual([]);
    expect(
      problems([
        { ...target, cloudRunService: { name: "predict", location: "europe-west1", project: "ml-prod-42" } },
      ]),
    ).toEqual([]);
    // The older run.app form and a custom domain (which shows no service) are accepted.
    expect(
      problems([
        { ...target, url: run("predict-abc123xyz-ew.a.run.app"), cloudRunService: { name: "predict" } },
      ]),
    ).toEqual([]);
    expect(problems([{ ...ok, auth: "oidc", cloudRunService: { name: "predict" } }])).toEqual([]);
    // Steps on two services: the named one is among them.
    expect(
      problems([
        {
          name: "two",
          timeoutSeconds: 10,
          auth: "oidc",
          steps: [
            { name: "embed", url: run("embed-1.europe-west1.run.app") },
            { name: "score", url: run("predict-1.europe-west1.run.app") },
          ],
          cloudRunService: { name: "predict" },
        },
      ]),
    ).toEqual([]);
    expect(
      problems([
        { ...target, cloudRunService: { name: "predict-api" } },
        { ...target, name: "b", cloudRunService: { name: "predict", location: "us-central1" } },
        { ...target, name: "c", auth: "none", cloudRunService: { name: "predict" } },
        {
          ...target,
          name: "d",
          cloudRunService: { name: "Predict_", location: "eu", project: "x", zone: "a" },
        },
        { ...target, name: "e", cloudRunService: {} },
      ]),
    ).toEqual([
      "TALLY_HTTP_PIPELINES[0].cloudRunService.name: no step URL is this service's run.app URL (the URLs name predict in europe-west1)",
      "TALLY_HTTP_PIPELINES[1].cloudRunService.name: no step URL is this service's run.app URL (the URLs name predict in europe-west1)",
      'TALLY_HTTP_PIPELINES[2].cloudRunService: only applies with auth "oidc" (Cloud Run IAM needs the identity token)',
      "TALLY_HTTP_PIPELINES[3].cloudRunService.name: must be a Cloud Run service name ([a-z][a-z0-9-]*, at most 49 characters)",
      'TALLY_HTTP_PIPELINES[3].cloudRunService.location: must be a Google Cloud region such as "europe-west1"',
      "TALLY_HTTP_PIPELINES[3].cloudRunService.project: must be a Google Cloud project id",
      'TALLY_HTTP_PIPELINES[3].cloudRunService.zone: Unrecognized key: "zone"',
      "TALLY_HTTP_PIPELINES[4].cloudRunService.name: Invalid input: expected string, received undefined",
    ]);
  });

  it("loadConfig fails at start naming the field; a good declaration is returned parsed", () => {
    expect(() =>
      loadConfig({ TALLY_HTTP_PIPELINES: JSON.stringify([{ ...ok, timeoutSeconds: "30" }]) }),
    ).toThrow(
      "invalid Tally configuration: TALLY_HTTP_PIPELINES[0].timeoutSeconds: Invalid input: expected number, received string",
    );
    expect(() =>
      loadConfig({ TALLY_HTTP_PIPELINES: JSON.stringify([{ ...ok, name: "text-stats" }]) }),
    ).toThrow('TALLY_HTTP_PIPELINES[0].name: "text-stats" is already a code pipeline');
    expect(loadConfig({ TALLY_HTTP_PIPELINES: JSON.stringify([ok]) }).httpPipelines).toEqual([
      { ...ok, auth: "none" },
    ]);
    expect(loadConfig({}).httpPipelines).toEqual([]);
  });

  it("the registry lists declared HTTP pipelines next to the code pipelines, and throws on a bad declaration", () => {
    const saved = process.env.TALLY_HTTP_PIPELINES;
    try {
      process.env.TALLY_HTTP_PIPELINES = JSON.stringify([
        ok,
        { ...ok, name: "rated", ratePerSecond: 5, concurrency: 2 },
      ]);
      expect(pipelineNames()).toEqual(["demo", "text-stats", "predict", "rated"]);
      expect(getPipeline("predict")).toMatchObject({ name: "predict", timeoutSeconds: 30 });
      expect(getPipeline("predict")!.steps.map((s) => s.name)).toEqual(["call"]);
      expect(getPipeline("rated")).toMatchObject({ ratePerSecond: 5, concurrency: 2 });
      process.env.TALLY_HTTP_PIPELINES = JSON.stringify([{ ...ok, url: "nope" }]);
      expect(() => getPipeline("predict")).toThrow("TALLY_HTTP_PIPELINES[0].url");
    } finally {
      if (saved === undefined) delete process.env.TALLY_HTTP_PIPELINES;
      else process.env.TALLY_HTTP_PIPELINES = saved;
    }
    expect(getPipeline("demo")).toBeDefined();
  });
});

describe("npm start -- --http-pipelines FILE", () => {
  it("passes the file's declarations to every handler; a bad file is a usage error naming the field", () => {
    const dir = mkdtempSync(join(tmpdir(), "tally-http-"));
    try {
      const good = join(dir, "good.json");
      writeFileSync(good, JSON.stringify([ok]));
      expect(JSON.parse(parseStartArgs(["--http-pipelines", good])!.env!.TALLY_HTTP_PIPELINES!)).toEqual([
        { ...ok, auth: "none" },
      ]);
      const bad = join(dir, "bad.json");
      writeFileSync(bad, JSON.stringify([{ ...ok, timeoutSeconds: -1 }]));
      expect(() => parseStartArgs(["--http-pipelines", bad])).toThrow(
        `--http-pipelines: ${bad}[0].timeoutSeconds: Too small: expected number to be >=1`,
      );
      expect(() => parseStartArgs(["--http-pipelines", join(dir, "missing.json")])).toThrow(
        "--http-pipelines: cannot read",
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("rate limiter", () => {
  it("token bucket: starts in any interval T are at most burst + rate × T", () => {
    let now = 0;
    const bucket = new TokenBucket(5, 1, () => now);
    const starts: number[] = [];
    for (now = 0; now <= 3000; now += 7) if (bucket.tryTake()) starts.push(now);
    const maxInWindow = Math.max(...starts.map((t) => starts.filter((s) => s >= t && s < t + 1000).length));
    expect(maxInWindow).toBeLessThanOrEqual(6);
    expect(starts.length).toBeGreaterThanOrEqual(15);
    // A burst of 3 after an idle spell: three at once, then the rate.
    const b3 = new TokenBucket(5, 3, () => now);
    now = 100_000;
    expect([b3.tryTake(), b3.tryTake(), b3.tryTake(), b3.tryTake()]).toEqual([true, true, true, false]);
    expect(b3.msUntilToken()).toBe(200);
  });

  it("the rate is the pipeline's: N instances each take 1/N, and together stay under rate × T + max(burst, N)", () => {
    expect(instanceShare({ ratePerSecond: 5 }, 2)).toEqual({
      ratePerSecond: 2.5,
      burst: 1,
      concurrency: undefined,
    });
    expect(instanceShare({ ratePerSecond: 10, burst: 8, concurrency: 3 }, 4)).toEqual({
      ratePerSecond: 2.5,
      burst: 2,
      concurrency: 3,
    });
    expect(() => instanceShare({ ratePerSecond: 5 }, 0)).toThrow(/instances must be a whole number/);
    for (const [rate, burst, n] of [
      [5, 1, 2],
      [5, 1, 3],
      [20, 10, 4],
      [1, 1, 7],
    ] as const) {
      let now = 0;
      const share = instanceShare({ ratePerSecond: rate, burst }, n);
      const buckets = Array.from(
        { length: n },
        () => new TokenBucket(share.ratePerSecond!, share.burst!, () => now),
      );
      // Every instance takes a token as soon as it can (the worst case for the pipeline's rate).
      const starts: number[] = [];
      for (now = 0; now <= 10_000; now += 5) for (const b of buckets) if (b.tryTake()) starts.push(now);
      const maxInWindow = Math.max(...starts.map((t) => starts.filter((s) => s >= t && s < t + 1000).length));
      expect(maxInWindow, `${rate}/s burst ${burst} over ${n} instances`).toBeLessThanOrEqual(
        startsBound({ ratePerSecond: rate, burst }, n, 1),
      );
      // …and the pipeline as a whole still runs at its rate when every instance is busy.
      expect(starts.length).toBeGreaterThanOrEqual(rate * 10);
    }
  });

  it("gate: concurrency slots are FIFO, a waiter past its wait is refused (null), a release admits the next", async () => {
    const gate = new PipelineGate({ concurrency: 1 });
    const first = await gate.acquire(1000);
    expect(first).not.toBeNull();
    const refused = await gate.acquire(20);
    expect(refused).toBeNull();
    const second = gate.acquire(5000);
    const third = gate.acquire(5000);
    expect(gate.waiting).toBe(2);
    first!();
    first!(); // idempotent
    const r2 = await second;
    expect(r2).not.toBeNull();
    expect(gate.inFlight).toBe(1);
    r2!();
    const r3 = await third;
    expect(r3).not.toBeNull();
    r3!();
    expect(gate.inFlight).toBe(0);
    const aborted = new AbortController();
    const blocker = await gate.acquire(10);
    const waiting = gate.acquire(60_000, aborted.signal);
    aborted.abort();
    expect(await waiting).toBeNull();
    blocker!();
  });
});

describe("identity tokens from the metadata server", () => {
  let server: Server;
  const calls: Array<{ url: string; flavor: unknown }> = [];
  let lifetimeSeconds = 3600;
  let status = 200;
  beforeAll(async () => {
    server = createServer((req, res) => {
      calls.push({ url: req.url ?? "", flavor: req.headers["metadata-flavor"] });
      const audience = new URL(req.url ?? "/", "http://x").searchParams.get("audience");
      const part = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
      res.writeHead(status);
      res.end(
        status === 200
          ? `${part({ alg: "RS256" })}.${part({ aud: audience, exp: Math.floor(Date.now() / 1000) + lifetimeSeconds })}.sig`
          : "denied",
      );
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it("fetches per audience with Metadata-Flavor: Google, caches until near expiry, refreshes after", async () => {
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const source = createIdentityTokenSource({ baseUrl: base });
    const [a, a2] = await Promise.all([source("https://a.run.app"), source("https://a.run.app")]);
    expect(a).toBe(a2);
    await source("https://a.run.app");
    await source("https://b.run.app");
    expect(calls).toEqual([
      {
        url: "/computeMetadata/v1/instance/service-accounts/default/identity?audience=https%3A%2F%2Fa.run.app",
        flavor: "Google",
      },
      {
        url: "/computeMetadata/v1/instance/service-accounts/default/identity?audience=https%3A%2F%2Fb.run.app",
        flavor: "Google",
      },
    ]);
    // A token expiring within the refresh margin is fetched again on every use.
    lifetimeSeconds = 60;
    const short = createIdentityTokenSource({ baseUrl: base });
    await short("https://c.run.app");
    await short("https://c.run.app");
    expect(calls.filter((c) => c.url.includes("c.run.app"))).toHaveLength(2);
    status = 403;
    await expect(createIdentityTokenSource({ baseUrl: base })("https://d.run.app")).rejects.toThrow(
      "the metadata server answered 403 for an identity token (audience https://d.run.app): denied",
    );
    status = 200;
  });
});

describe("Retry-After", () => {
  it("reads delta-seconds and HTTP dates", () => {
    expect(parseRetryAfter("3")).toBe(3000);
    expect(parseRetryAfter(null)).toBeNull();
    expect(parseRetryAfter("soon")).toBeNull();
    const now = Date.parse("2026-12-05T10:00:00Z");
    expect(parseRetryAfter("Sat, 05 Dec 2026 10:00:05 GMT", now)).toBe(5000);
  });
});
