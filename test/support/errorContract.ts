// The error contract of every handler (DESIGN.md §3), as tests check it on an answer: status aside,
// the body is `{"error": {"code", "message", "details"?}}` served as `application/json`, and no
// answer is ever the Functions Framework's HTML error page or carries a stack trace.
import { expect } from "vitest";

export interface Answer {
  status: number;
  headers: Headers | Record<string, string | string[] | undefined>;
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are asserted field by field
  body: any;
}

/** fetch, keeping the body as parsed JSON when it is JSON and as text otherwise. */
export async function fetchAnswer(url: string, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(url, init);
  const text = await res.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: the assertions say so
  }
  return { status: res.status, headers: res.headers, body };
}

/** Fields the error object may carry besides code, message and details (the coordinator's `batch`). */
const extraErrorFields = ["batch"];

export function expectJsonError(res: Answer, status?: number, code?: string): void {
  const header = (name: string) =>
    res.headers instanceof Headers ? res.headers.get(name) : (res.headers[name] as string | undefined);
  const text = typeof res.body === "string" ? res.body : JSON.stringify(res.body);
  if (status !== undefined) expect(res.status, text).toBe(status);
  expect(header("content-type"), text).toMatch(/^application\/json/);
  expect(typeof res.body, text).toBe("object");
  expect(Object.keys(res.body ?? {}), text).toEqual(["error"]);
  const error = res.body.error;
  expect(
    Object.keys(error).filter((k) => !["code", "message", "details", ...extraErrorFields].includes(k)),
    text,
  ).toEqual([]);
  expect(typeof error.code, text).toBe("string");
  if (code !== undefined) expect(error.code, text).toBe(code);
  expect(typeof error.message, text).toBe("string");
  if (error.details !== undefined) {
    expect(Array.isArray(error.details), text).toBe(true);
    for (const d of error.details) {
      expect(typeof d.path, text).toBe("string");
      expect(typeof d.problem, text).toBe("string");
    }
  }
  expect(text).not.toMatch(/<!DOCTYPE|<html/i);
  // A stack frame: "at fn (/path/file.js:12:34)", "at node:internal/…:1:2".
  expect(text).not.toMatch(/\bat .*(\.[cm]?[jt]sx?|node:[\w/]+):\d+:\d+/);
  expect(text).not.toMatch(/\\n\s+at /);
}
