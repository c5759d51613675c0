// JSON answers for requests that fail before a Tally handler runs (DESIGN.md §3: every error is
// `{"error": {"code", "message", "details"?}}`; no response ever carries a stack trace).
//
// What the Functions Framework does (5.x, build/src/server.js): `getServer` builds an Express 5 app
// whose middleware reads every body before the registered function is called — body-parser's json
// (application/json and application/cloudevents+json), text, urlencoded and raw (`*/*`), limit
// 1024 MB — and then routes everything to the function with `app.all('/{*splat}')`. It registers no
// error-handling middleware and offers no way to add one: the app is created inside `getServer`,
// which returns only the http.Server (main.js, the CLI Cloud Run runs, never exposes either). So a
// body the parsers refuse — malformed JSON (SyntaxError), a charset or Content-Encoding they do not
// support (415), a body over the limit (413), a body shorter than its Content-Length (400) — or a
// path the router cannot decode (400) ends in Express's default final handler, `finalhandler`,
// which answers an HTML page (`<!DOCTYPE html>… SyntaxError: … at …`), stack trace included
// unless NODE_ENV=production.
//
// Options considered: an error-handling middleware (no hook to register one); making the framework
// not parse bodies (its parsers run before any user code, for every content type); wrapping the
// handler (the error happens before the handler is called). What is left, and works for both
// `functions-framework --target=…` (Cloud Run) and `getTestServer` (the local stack and tests):
// Express's `app.handle(req, res, callback)` uses `callback` as the final handler when one is
// given and `finalhandler` only otherwise, and `express()` copies `application.handle` onto each
// app it creates. `answerFrameworkErrorsWithJson()` wraps `application.handle` of the very express
// module the framework resolves, so every app created afterwards ends in `jsonFinalHandler` below
// instead. The framework creates its app after loading the user's module (main.js: load the
// source, then `getServer`), so calling this from functions/index.ts at load is early enough;
// tests that serve handlers through `getTestServer` call it before doing so.
//
// Not covered (framework internals, not Tally's handlers): `/favicon.ico` and `/robots.txt`, which
// the framework answers itself with an empty 404; an exception thrown asynchronously outside any
// promise a handler returns (the framework's domain handler answers it as a crash).

import { STATUS_CODES } from "node:http";
import { createRequire } from "node:module";
import { invalidArgument, notFound, type ProblemDetail, TallyError, tooLarge } from "../core/errors";
import { createLogger, type Logger } from "../core/logger";
import type { HttpRequest, HttpResponse } from "./httpTypes";
import { sendError } from "./responses";

type FinalHandler = (err?: unknown) => void;
interface ExpressApplication {
  handle(this: unknown, req: HttpRequest, res: HttpResponse, callback?: FinalHandler): void;
  [wrapped]?: true;
}
const wrapped = Symbol.for("tally.http.jsonFinalHandler");

/** The `express` module the Functions Framework itself loads (its own dependency, not ours). */
function frameworkExpress(): { application: ExpressApplication } {
  const frameworkRequire = createRequire(require.resolve("@google-cloud/functions-framework"));
  return frameworkRequire("express") as { application: ExpressApplication };
}

/**
 * Makes every Express app the Functions Framework creates from now on answer its own errors (body
 * parsing, undecodable paths) and unmatched requests with Tally's JSON error body. Idempotent.
 */
export function answerFrameworkErrorsWithJson(log: Logger = createLogger({ component: "http" })): void {
  const application = frameworkExpress().application;
  if (application[wrapped]) return;
  const original = application.handle;
  if (typeof original !== "function")
    throw new Error(
      "the Functions Framework's express has no application.handle: cannot install the JSON error handler",
    );
  application.handle = function handle(req, res, callback) {
    return original.call(this, req, res, callback ?? jsonFinalHandler(req, res, log));
  };
  application[wrapped] = true;
}

/**
 * Express's final handler, in JSON: an error passed down the middleware chain is answered with its
 * status and Tally's error body; nothing left to handle the request is a 404. The request body is
 * drained first (as `finalhandler` does), so a client still sending gets the answer.
 */
export function jsonFinalHandler(req: HttpRequest, res: HttpResponse, log: Logger): FinalHandler {
  return (err) => {
    if (res.headersSent) {
      // Too late to answer: cut the connection rather than leave a half response looking whole.
      if (err !== undefined) res.destroy();
      else if (!res.writableEnded) res.end();
      return;
    }
    const answer =
      err === undefined ? notFound(`no route for ${req.method} ${pathOf(req)}`) : asTallyError(err, req);
    if (answer instanceof TallyError)
      log.info("http.request_refused", `${req.method} ${pathOf(req)}: ${answer.status} ${answer.code}`, {
        status: answer.status,
        code: answer.code,
        ...(errorType(err) ? { errorType: errorType(err) } : {}),
      });
    afterRequestBody(req, () => sendError(res, answer, log));
  };
}

/** Body-parser and router errors (http-errors) as the TallyErrors Tally's handlers answer; others unchanged. */
function asTallyError(err: unknown, req: HttpRequest): unknown {
  const e = (err ?? {}) as {
    status?: unknown;
    statusCode?: unknown;
    type?: unknown;
    expose?: unknown;
    message?: unknown;
    limit?: unknown;
    length?: unknown;
    charset?: unknown;
    encoding?: unknown;
  };
  const message = typeof e.message === "string" ? e.message : "";
  switch (e.type) {
    case "entity.parse.failed":
      return invalidArgument(
        /json/i.test(req.headers["content-type"] ?? "")
          ? "the request body is not valid JSON"
          : "the request body could not be parsed",
        [{ path: "body", problem: message }],
      );
    case "entity.too.large":
      return tooLarge(`the request body is over the limit of ${String(e.limit)} bytes`, [
        { path: "body", problem: `${String(e.length ?? "more")} bytes exceeds ${String(e.limit)}` },
      ]);
    case "charset.unsupported":
      return unsupported("Content-Type", `the charset ${String(e.charset)} is not supported`);
    case "encoding.unsupported":
      return unsupported("Content-Encoding", `the content encoding ${String(e.encoding)} is not supported`);
    case "request.aborted":
      return invalidArgument("the request body was cut off", [{ path: "body", problem: "aborted" }]);
    case "request.size.invalid":
      return invalidArgument("the request body does not match its Content-Length", [
        { path: "Content-Length", problem: message },
      ]);
  }
  // The router decodes the path's parameters; `%E0%A4%A` is no valid percent-encoding.
  if (err instanceof URIError)
    return invalidArgument("the request path is not valid percent-encoding", [
      { path: "path", problem: message },
    ]);
  const status =
    typeof e.status === "number" ? e.status : typeof e.statusCode === "number" ? e.statusCode : 0;
  // Other client errors the parsers raise. Their messages are meant for the client when marked
  // `expose` (http-errors); otherwise the answer carries the status name only.
  if (status >= 400 && status < 500) {
    const code = statusCodes[status] ?? snake(STATUS_CODES[status] ?? "client error");
    const text = e.expose === true && message ? message : (STATUS_CODES[status] ?? "client error");
    return new TallyError(status, code, text);
  }
  // 5xx or not an HTTP error: sendError logs it with its stack and answers a generic 500.
  return err;
}

/** The codes Tally's handlers use for these statuses (DESIGN.md §3); others are named after the status. */
const statusCodes: Record<number, string> = {
  400: "invalid_argument",
  404: "not_found",
  405: "method_not_allowed",
  413: "too_large",
  415: "unsupported_media_type",
};

const unsupported = (path: string, problem: string) =>
  new TallyError(415, "unsupported_media_type", problem, [{ path, problem } satisfies ProblemDetail]);

const snake = (s: string) =>
  s
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "_")
    .replace(/^_|_$/g, "");

const errorType = (err: unknown): string | undefined => {
  const type = (err as { type?: unknown } | undefined)?.type;
  return typeof type === "string" ? type : undefined;
};

function pathOf(req: HttpRequest): string {
  return (req.url ?? "/").split("?")[0]!;
}

/** Runs `write` once the request body has been read to its end (or the request is gone). */
function afterRequestBody(req: HttpRequest, write: () => void): void {
  if (req.complete || req.readableEnded || req.destroyed) {
    write();
    return;
  }
  let written = false;
  const once = () => {
    if (written) return;
    written = true;
    write();
  };
  req.unpipe();
  req.once("end", once);
  req.once("close", once);
  req.resume();
}
