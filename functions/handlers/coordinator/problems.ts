// Problems found in a submission, and the one error they become. Every problem is listed (up to a
// cap, so a million bad lines don't make a million-line answer). The status follows from what was
// found: 409 when stored items differ (a conflicting re-submission), 413 when only size caps were
// exceeded, 400 otherwise (a request that breaks both rules and caps must be fixed either way).
import { conflict, invalidArgument, type ProblemDetail, type TallyError, tooLarge } from "../../core/errors";

export type ProblemKind = "invalid" | "too_large" | "conflict";

export interface Problem extends ProblemDetail {
  kind: ProblemKind;
}

/** Problems listed in one answer; the rest are counted. */
export const maxListedProblems = 100;

export class ProblemList {
  readonly listed: Problem[] = [];
  total = 0;

  add(kind: ProblemKind, path: string, problem: string): void {
    this.total++;
    if (this.listed.length < maxListedProblems) this.listed.push({ kind, path, problem });
  }

  addAll(kind: ProblemKind, problems: ProblemDetail[]): void {
    for (const p of problems) this.add(kind, p.path, p.problem);
  }

  get empty(): boolean {
    return this.total === 0;
  }

  has(kind: ProblemKind): boolean {
    return this.listed.some((p) => p.kind === kind);
  }

  /** The error to answer with; `context` prefixes the message (e.g. what happened to the batch). */
  toError(context?: string): TallyError {
    const details: ProblemDetail[] = this.listed.map(({ path, problem }) => ({ path, problem }));
    if (this.total > this.listed.length)
      details.push({ path: "body", problem: `${this.total - this.listed.length} more problems not listed` });
    const what = this.total === 1 ? "1 problem" : `${this.total} problems`;
    const suffix = context ? `; ${context}` : "";
    if (this.has("conflict"))
      return conflict(`the submission conflicts with the stored batch (${what})${suffix}`, details);
    if (this.listed.every((p) => p.kind === "too_large"))
      return tooLarge(`the submission exceeds a size limit (${what})${suffix}`, details);
    return invalidArgument(`the submission is invalid (${what})${suffix}`, details);
  }
}
