// Errors that cross the core's boundary. HTTP handlers map `TallyError.status` and `code` to the
// `{"error": {code, message, details}}` body of DESIGN.md §3.

export interface ProblemDetail {
  /** Field path, e.g. `items[3].payload.text`, or `body` for the request as a whole. */
  path: string;
  problem: string;
}

export class TallyError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: ProblemDetail[],
  ) {
    super(message);
    this.name = "TallyError";
  }
}

export const invalidArgument = (message: string, details?: ProblemDetail[]) =>
  new TallyError(400, "invalid_argument", message, details);
export const notFound = (message: string) => new TallyError(404, "not_found", message);
export const conflict = (message: string, details?: ProblemDetail[]) =>
  new TallyError(409, "conflict", message, details);
export const tooLarge = (message: string, details?: ProblemDetail[]) =>
  new TallyError(413, "too_large", message, details);
export const failedPrecondition = (message: string) => new TallyError(409, "failed_precondition", message);

/**
 * Thrown by pipeline code (or mapped by a pipeline's `classifyError`) for errors that retrying can
 * never fix (F11): the item fails at once with kind `permanent`.
 */
export class PermanentError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "PermanentError";
  }
}

/**
 * Thrown by pipeline code for a transient error whose cause said when to try again (a 429 or 503
 * with Retry-After): the attempt fails transiently and the item is not leased again before
 * `retryAfterMs` from now.
 */
export class RetryLaterError extends Error {
  constructor(
    message: string,
    readonly retryAfterMs: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "RetryLaterError";
  }
}

/**
 * A fenced write was refused: the batch no longer admits it (finalization claimed, sealed,
 * terminated, or another generation). Answered 409; nothing of the refused write was stored.
 */
export class BatchFencedError extends TallyError {
  constructor(
    readonly batchId: string,
    message: string,
  ) {
    super(409, "batch_closed", message);
    this.name = "BatchFencedError";
  }
}
