// HTTP pipelines (issue #17 §4): a pipeline declared in configuration, no code, that fans items out
// to a service the team already runs. Declarations come from TALLY_HTTP_PIPELINES (a JSON array;
// `tally:httpPipelines` in the stack, `npm start -- --http-pipelines FILE` locally) and are listed
// by the registry next to the code pipelines.
//
// Declaration: {name, url | steps: [{name, url, timeoutSeconds?}], timeoutSeconds, headers?,
// secretHeaders?, auth?, audience?, cloudRunService?, concurrency?, ratePerSecond?, burst?,
// maxAttempts?, description?}.
//   - `url` is shorthand for one step named "call".
//   - timeoutSeconds: the item's timeout across all its steps, and each call's unless the step sets
//     its own. The worker still caps the item at its request budget (workerTimeoutSeconds).
//   - headers: sent as declared. secretHeaders: header name → the name of an environment variable
//     of the worker holding the value (how Cloud Run mounts Secret Manager secrets); the value is
//     read at call time and never logged. A missing variable fails the call transiently (a
//     deployment can fix it) with a message naming the variable.
//   - auth: "none" (default) or "oidc": the call carries `Authorization: Bearer <identity token>`
//     for `audience` (default: the step URL's origin, which is what a Cloud Run service expects),
//     fetched from the metadata server (functions/auth/identityToken.ts). The default is "none"
//     everywhere — one rule, no guessing from the environment — so local runs and tests never
//     reach for a metadata server; declare "oidc" for a target behind Cloud Run IAM.
//   - cloudRunService: {name, location?, project?}, the Cloud Run service the calls go to. Only with
//     auth "oidc". The stack then grants this pipeline's worker account roles/run.invoker on exactly
//     that service (infra/httpTargets.ts); location and project default to the stack's. The worker
//     itself ignores it. When a step URL is a run.app URL, one of them must be that service's.
//   - concurrency / ratePerSecond / burst: the worker's admission (rateLimiter.ts): concurrency per
//     instance, ratePerSecond and burst for the whole pipeline, split across the worker's instances.
//
// Per item per step: POST {url} with the JSON body — the payload for the first step; for a later
// step {payload, outputs} (outputs: the earlier steps' outputs by step name) — and headers
// x-tally-batch-id, x-tally-item-id, x-tally-step and x-tally-attempt, so the service can make the
// call idempotent (a step may be called again after a crash before its checkpoint). The answer:
//   2xx       → the parsed JSON body is the step's output (an empty body is null); the last step's
//               output is the item's result; earlier outputs are checkpointed by the step runner, so
//               a redelivery never calls a finished step again.
//   429       → transient. A Retry-After (seconds or an HTTP date) of at most 10 s is waited out
//               inside the step (the sleep stops when the step's signal fires), up to 3 times per
//               call, without using an attempt. A longer one fails the attempt transiently with a
//               RetryLaterError: the worker records "not before now + Retry-After" on the item, and
//               no delivery leases it sooner (createWorkerHandler.ts). A missing one fails the attempt
//               transiently; the redelivery comes after the subscription's backoff.
//   5xx, connection errors, timeouts → transient (timeouts end as kind `timeout` after the last
//               attempt, as for every pipeline).
//   3xx       → permanent (redirects are not followed: a POST would turn into a GET; declare the
//               final URL).
//   other 4xx → permanent, with the response's message (JSON error.message, error or message,
//               else its text), truncated.
//   a body over limits.maxResultBytes, or a 2xx body that is not JSON → permanent, saying so.
// Requests use the global fetch with the step's AbortSignal, which fires on the step's timeout, the
// item's timeout, the worker's shutdown and a lost lease.
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { createIdentityTokenSource, type IdentityTokenSource } from "../auth/identityToken";
import { PermanentError, RetryLaterError } from "../core/errors";
import { limits } from "../core/limits";
import {
  definePipeline,
  type PipelineDefinition,
  type StepContext,
  type StepDefinition,
} from "./definePipeline";

export const pipelineNamePattern = /^[a-z][a-z0-9-]{0,62}$/;
const headerNamePattern = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;
/** Headers Tally sets itself; a declaration may not override them. */
const reservedHeaders = [
  "content-type",
  "content-length",
  "host",
  "x-tally-batch-id",
  "x-tally-item-id",
  "x-tally-step",
  "x-tally-attempt",
];

function isHttpUrl(v: string): boolean {
  try {
    const u = new URL(v);
    return (u.protocol === "http:" || u.protocol === "https:") && u.username === "" && u.password === "";
  } catch {
    return false;
  }
}

const httpUrl = z.string().refine(isHttpUrl, "must be an http:// or https:// URL without credentials");
const headerName = z.string().regex(headerNamePattern, "must be an HTTP header name");

/** Cloud Run service names: a letter first, lowercase letters, digits and -, not ending with -, at most 49. */
const cloudRunServiceName = /^[a-z](?:[a-z0-9-]{0,47}[a-z0-9])?$/;

const cloudRunServiceDeclaration = z.strictObject({
  name: z
    .string()
    .regex(cloudRunServiceName, "must be a Cloud Run service name ([a-z][a-z0-9-]*, at most 49 characters)"),
  location: z
    .string()
    .regex(/^[a-z]+-[a-z]+\d+$/, 'must be a Google Cloud region such as "europe-west1"')
    .optional(),
  project: z
    .string()
    .regex(/^[a-z][a-z0-9-]{4,28}[a-z0-9]$/, "must be a Google Cloud project id")
    .optional(),
});

/**
 * The service (and region, when the URL shows it) of a Cloud Run URL: the deterministic
 * `<service>-<project number>.<region>.run.app` or the older `<service>-<hash>-<region code>.a.run.app`.
 * Null for any other host (custom domains, load balancers, other services).
 */
export function cloudRunServiceOfUrl(url: string): { name: string; region?: string } | null {
  const host = new URL(url).hostname;
  const deterministic = /^([a-z][a-z0-9-]*)-\d+\.([a-z]+-[a-z]+\d+)\.run\.app$/.exec(host);
  if (deterministic) return { name: deterministic[1]!, region: deterministic[2]! };
  const legacy = /^([a-z][a-z0-9-]*)-[a-z0-9]+-[a-z]{2,4}\.a\.run\.app$/.exec(host);
  return legacy ? { name: legacy[1]! } : null;
}

const stepDeclaration = z.strictObject({
  name: z.string().regex(pipelineNamePattern, "must match [a-z][a-z0-9-]* (at most 63 characters)"),
  url: httpUrl,
  timeoutSeconds: z.number().int().min(1).max(3600).optional(),
});

export const httpPipelineDeclaration = z
  .strictObject({
    name: z.string().regex(pipelineNamePattern, "must match [a-z][a-z0-9-]* (at most 63 characters)"),
    description: z.string().max(500).optional(),
    url: httpUrl.optional(),
    steps: z.array(stepDeclaration).min(1).max(20).optional(),
    timeoutSeconds: z.number().int().min(1).max(3600),
    headers: z.record(headerName, z.string().max(8192)).optional(),
    secretHeaders: z
      .record(
        headerName,
        z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be an environment variable name"),
      )
      .optional(),
    auth: z.enum(["none", "oidc"]).default("none"),
    audience: z.string().min(1).optional(),
    cloudRunService: cloudRunServiceDeclaration.optional(),
    concurrency: z.number().int().min(1).max(1000).optional(),
    ratePerSecond: z.number().positive().max(100_000).optional(),
    burst: z.number().int().min(1).max(10_000).optional(),
    maxAttempts: z.number().int().min(1).max(100).optional(),
  })
  .superRefine((d, ctx) => {
    if ((d.url === undefined) === (d.steps === undefined))
      ctx.addIssue({ code: "custom", path: ["url"], message: "declare exactly one of url or steps" });
    const seen = new Set<string>();
    for (const [i, s] of (d.steps ?? []).entries()) {
      if (seen.has(s.name))
        ctx.addIssue({
          code: "custom",
          path: ["steps", i, "name"],
          message: `step "${s.name}" is declared twice`,
        });
      seen.add(s.name);
    }
    const declared = new Set<string>();
    for (const [field, record] of [
      ["headers", d.headers],
      ["secretHeaders", d.secretHeaders],
    ] as const) {
      for (const h of Object.keys(record ?? {})) {
        const lower = h.toLowerCase();
        if (reservedHeaders.includes(lower))
          ctx.addIssue({
            code: "custom",
            path: [field, h],
            message: "is set by Tally and cannot be declared",
          });
        if (lower === "authorization" && d.auth === "oidc")
          ctx.addIssue({
            code: "custom",
            path: [field, h],
            message: 'conflicts with auth "oidc", which sets it',
          });
        if (declared.has(lower))
          ctx.addIssue({
            code: "custom",
            path: [field, h],
            message: "is declared in both headers and secretHeaders",
          });
        declared.add(lower);
      }
    }
    if (d.audience !== undefined && d.auth !== "oidc")
      ctx.addIssue({ code: "custom", path: ["audience"], message: 'only applies with auth "oidc"' });
    if (d.cloudRunService !== undefined) {
      // Cloud Run IAM refuses a call without an identity token: the grant would be unused and every
      // call a 403, which fails items permanently.
      if (d.auth !== "oidc")
        ctx.addIssue({
          code: "custom",
          path: ["cloudRunService"],
          message: 'only applies with auth "oidc" (Cloud Run IAM needs the identity token)',
        });
      // A run.app URL shows which service it is; a grant on another one would leave every call a 403.
      const target = d.cloudRunService;
      const seen = (d.steps?.map((s) => s.url) ?? (d.url ? [d.url] : []))
        .filter(isHttpUrl)
        .map(cloudRunServiceOfUrl)
        .filter((x) => x !== null);
      const matches = (x: { name: string; region?: string }) =>
        x.name === target.name &&
        (target.location === undefined || x.region === undefined || x.region === target.location);
      if (cloudRunServiceName.test(target.name) && seen.length > 0 && !seen.some(matches))
        ctx.addIssue({
          code: "custom",
          path: ["cloudRunService", "name"],
          message: `no step URL is this service's run.app URL (the URLs name ${seen
            .map((x) => (x.region ? `${x.name} in ${x.region}` : x.name))
            .join(", ")})`,
        });
    }
    if (d.burst !== undefined && d.ratePerSecond === undefined)
      ctx.addIssue({ code: "custom", path: ["burst"], message: "only applies with ratePerSecond" });
  });

export type HttpPipelineDeclaration = z.infer<typeof httpPipelineDeclaration>;

const declarationList = z.array(httpPipelineDeclaration).superRefine((list, ctx) => {
  const seen = new Set<string>();
  for (const [i, d] of list.entries()) {
    if (seen.has(d.name))
      ctx.addIssue({ code: "custom", path: [i, "name"], message: `pipeline "${d.name}" is declared twice` });
    seen.add(d.name);
  }
});

function formatPath(source: string, path: PropertyKey[]): string {
  let out = source;
  for (const p of path) out += typeof p === "number" ? `[${p}]` : `.${String(p)}`;
  return out;
}

export type DeclarationsParse =
  | { ok: true; declarations: HttpPipelineDeclaration[] }
  | { ok: false; problems: string[] };

/**
 * Parses and validates HTTP pipeline declarations: a JSON text (the environment variable) or the
 * value itself (a stack's structured config). Every problem names its field, e.g.
 * `TALLY_HTTP_PIPELINES[0].steps[1].url: must be an http:// or https:// URL …`. Names that collide
 * with `reservedNames` (the code pipelines) are refused.
 */
export function parseHttpPipelineDeclarations(
  raw: unknown,
  source: string,
  reservedNames: readonly string[] = [],
): DeclarationsParse {
  let value = raw;
  if (raw === undefined || raw === null || (typeof raw === "string" && raw.trim() === ""))
    return { ok: true, declarations: [] };
  if (typeof raw === "string") {
    try {
      value = JSON.parse(raw);
    } catch (err) {
      return { ok: false, problems: [`${source}: not valid JSON (${(err as Error).message})`] };
    }
  }
  const parsed = declarationList.safeParse(value);
  if (!parsed.success)
    return {
      ok: false,
      problems: parsed.error.issues.map((i) => {
        // An unknown key is reported on the object; name the key itself.
        const keys = (i as { keys?: string[] }).keys;
        const path = i.code === "unrecognized_keys" && keys?.length === 1 ? [...i.path, keys[0]!] : i.path;
        return `${formatPath(source, path)}: ${i.message}`;
      }),
    };
  const problems = parsed.data.flatMap((d, i) =>
    reservedNames.includes(d.name)
      ? [`${formatPath(source, [i, "name"])}: "${d.name}" is already a code pipeline; choose another name`]
      : [],
  );
  if (problems.length > 0) return { ok: false, problems };
  return { ok: true, declarations: parsed.data };
}

export interface HttpPipelineOptions {
  /** Identity tokens for auth "oidc" (default: the metadata server, one source per process). */
  identityToken?: IdentityTokenSource;
  /** Where secretHeaders' variables are read (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** The longest Retry-After waited out inside a step (default 10 s). */
  maxRetryAfterWaitMs?: number;
  /** Retry-After waits per call before the attempt fails transiently (default 3). */
  maxRetryAfterWaits?: number;
}

let sharedTokenSource: IdentityTokenSource | undefined;
const defaultTokenSource: IdentityTokenSource = (audience, signal) => {
  sharedTokenSource ??= createIdentityTokenSource();
  return sharedTokenSource(audience, signal);
};

const maxMessageChars = 300;
const maxErrorBodyBytes = 16 * 1024;

/** Retry-After in milliseconds (delta-seconds or an HTTP date), or null when absent or unreadable. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | null {
  if (value === null) return null;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

class BodyTooLarge extends Error {}

/** Reads at most `cap` bytes of the body; throws BodyTooLarge past that (the rest is not read). */
async function readCapped(res: Response, cap: number): Promise<string> {
  const declared = Number(res.headers.get("content-length"));
  if (Number.isFinite(declared) && declared > cap) {
    await res.body?.cancel().catch(() => {});
    throw new BodyTooLarge(`${declared} bytes`);
  }
  if (!res.body) return "";
  const reader = res.body.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > cap) {
      await reader.cancel().catch(() => {});
      throw new BodyTooLarge(`more than ${cap} bytes`);
    }
    parts.push(value);
  }
  return Buffer.concat(parts).toString("utf8");
}

/** The message of an error answer: JSON error.message, error or message; else the text. Truncated. */
export function responseMessage(text: string): string {
  let message = text.trim();
  try {
    const body = JSON.parse(text) as Record<string, unknown>;
    const err = body?.error;
    const pick =
      (err && typeof err === "object" && typeof (err as { message?: unknown }).message === "string"
        ? (err as { message: string }).message
        : undefined) ??
      (typeof err === "string" ? err : undefined) ??
      (typeof body?.message === "string" ? body.message : undefined);
    if (pick !== undefined) message = pick;
  } catch {
    // not JSON: the text itself
  }
  message = message.replace(/\s+/g, " ");
  return message.length > maxMessageChars
    ? `${message.slice(0, maxMessageChars)}…`
    : message || "(empty body)";
}

function connectionProblem(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  if (cause?.code) return `${cause.code}${cause.message ? ` (${cause.message})` : ""}`;
  return cause?.message ?? (err as Error).message ?? String(err);
}

interface StepCall {
  declaration: HttpPipelineDeclaration;
  step: { name: string; url: string };
  body: unknown;
  ctx: StepContext;
  opts: Required<Omit<HttpPipelineOptions, "env">> & { env: NodeJS.ProcessEnv };
}

async function callStep(c: StepCall): Promise<unknown> {
  const { declaration: d, step, ctx } = c;
  const where = `POST ${step.url}`;
  const headers: Record<string, string> = { ...d.headers };
  for (const [header, variable] of Object.entries(d.secretHeaders ?? {})) {
    const value = c.opts.env[variable];
    if (value === undefined || value === "")
      throw new Error(
        `secret header ${header}: the environment variable ${variable} is not set in this worker`,
      );
    headers[header] = value;
  }
  if (d.auth === "oidc") {
    const audience = d.audience ?? new URL(step.url).origin;
    headers.authorization = `Bearer ${await c.opts.identityToken(audience, ctx.signal)}`;
  }
  Object.assign(headers, {
    "content-type": "application/json",
    accept: "application/json",
    "x-tally-batch-id": ctx.batchId,
    "x-tally-item-id": ctx.itemId,
    "x-tally-step": step.name,
    "x-tally-attempt": String(ctx.attempt),
  });
  const body = JSON.stringify(c.body ?? null);

  for (let waits = 0; ; waits++) {
    let res: Response;
    try {
      res = await fetch(step.url, { method: "POST", headers, body, redirect: "manual", signal: ctx.signal });
    } catch (err) {
      // A fired signal is the runner's to explain (timeout, shutdown, lost lease).
      if (ctx.signal.aborted) throw ctx.signal.reason;
      throw new Error(`${where} failed: ${connectionProblem(err)}`);
    }
    const status = res.status;
    if (status >= 200 && status < 300) {
      let text: string;
      try {
        text = await readCapped(res, limits.maxResultBytes);
      } catch (err) {
        if (err instanceof BodyTooLarge)
          throw new PermanentError(
            `${where} answered ${status} with a body of ${err.message}; an item's result may hold at most ${limits.maxResultBytes} bytes`,
          );
        if (ctx.signal.aborted) throw ctx.signal.reason;
        throw new Error(`${where}: the answer was cut off: ${connectionProblem(err)}`);
      }
      if (text.trim() === "") return null;
      try {
        return JSON.parse(text);
      } catch {
        throw new PermanentError(
          `${where} answered ${status} with a body that is not JSON: ${responseMessage(text)}`,
        );
      }
    }
    let text = "";
    try {
      text = await readCapped(res, maxErrorBodyBytes);
    } catch (err) {
      if (!(err instanceof BodyTooLarge) && ctx.signal.aborted) throw ctx.signal.reason;
      text = "(body not read)";
    }
    const message = responseMessage(text);
    if (status === 429) {
      const retryAfter = parseRetryAfter(res.headers.get("retry-after"));
      if (
        retryAfter !== null &&
        retryAfter <= c.opts.maxRetryAfterWaitMs &&
        waits < c.opts.maxRetryAfterWaits
      ) {
        ctx.log.info(
          "http.retry_after",
          `${where} answered 429: waiting ${retryAfter} ms as Retry-After asks`,
          {
            retryAfterMs: retryAfter,
          },
        );
        try {
          await sleep(retryAfter, undefined, { signal: ctx.signal });
        } catch {
          throw ctx.signal.reason;
        }
        continue;
      }
      if (retryAfter === null) throw new Error(`${where} answered 429 (no Retry-After): ${message}`);
      throw new RetryLaterError(
        `${where} answered 429 (Retry-After ${Math.ceil(retryAfter / 1000)} s): ${message}`,
        retryAfter,
      );
    }
    if (status >= 500) throw new Error(`${where} answered ${status}: ${message}`);
    if (status >= 300 && status < 400)
      throw new PermanentError(
        `${where} answered a redirect (${status}${res.headers.get("location") ? ` to ${res.headers.get("location")}` : ""}); redirects are not followed: declare the final URL`,
      );
    throw new PermanentError(`${where} answered ${status}: ${message}`);
  }
}

/** The pipeline a declaration describes. */
export function buildHttpPipeline(
  declaration: HttpPipelineDeclaration,
  options: HttpPipelineOptions = {},
): PipelineDefinition<unknown> {
  const d = declaration;
  const opts = {
    identityToken: options.identityToken ?? defaultTokenSource,
    env: options.env ?? process.env,
    maxRetryAfterWaitMs: options.maxRetryAfterWaitMs ?? 10_000,
    maxRetryAfterWaits: options.maxRetryAfterWaits ?? 3,
  };
  const declaredSteps = d.steps ?? [{ name: "call", url: d.url!, timeoutSeconds: undefined }];
  const steps: StepDefinition<unknown>[] = declaredSteps.map((s, index) => ({
    name: s.name,
    // The runner fires the step's signal when this elapses; the fetch is aborted by that signal.
    timeoutSeconds: s.timeoutSeconds ?? d.timeoutSeconds,
    run: (payload, outputs, ctx) =>
      callStep({
        declaration: d,
        step: { name: s.name, url: s.url },
        body: index === 0 ? payload : { payload, outputs },
        ctx,
        opts,
      }),
  }));
  return definePipeline<unknown>({
    name: d.name,
    description: d.description ?? `HTTP pipeline: ${declaredSteps.map((s) => s.url).join(" → ")}`,
    steps,
    timeoutSeconds: d.timeoutSeconds,
    maxAttempts: d.maxAttempts,
    concurrency: d.concurrency,
    ratePerSecond: d.ratePerSecond,
    burst: d.burst,
  });
}
